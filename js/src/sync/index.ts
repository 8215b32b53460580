/** The sync half of the JS peer: messages, head sync, space exchange, the sans-IO core, the
 * async shell over a Connection, the in-memory replicas, and bootstrap by invite code. */
export * from "./errors.js";
export * from "./messages.js";
export * from "./ldiff.js";
export * from "./spacex.js";
export * from "./replica.js";
export * from "./core.js";
export * from "./engine.js";
export * from "./receipt.js";
export * from "../bootstrap.js";
export * from "./join.js";
export * from "./driver.js";
