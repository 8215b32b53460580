export * from "./keys.js";
export * from "./ids.js";
export * from "./box.js";
export * from "./signed.js";
export * from "./cert.js";
