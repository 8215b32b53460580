/** Platform-neutral entry point (browsers and Node); Node-only carriers live in ./node/. */
export * from "./errors.js";
export * from "./codec.js";
export * from "./crypto/index.js";
