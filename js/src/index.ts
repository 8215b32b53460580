/** Platform-neutral entry point (browsers and Node); Node-only carriers live in ./node/. */
export * from "./errors.js";
export * from "./codec.js";
export * from "./crypto/index.js";
export * from "./transport/noise.js";
export * from "./transport/framing.js";
export * from "./transport/handshake.js";
export * from "./transport/session.js";
export * from "./transport/connection.js";
export * from "./hashes.js";
export * from "./transport/websocket.js";
export * from "./replica/header.js";
export * from "./replica/change.js";
export * from "./replica/tree.js";
export * from "./replica/aclRecords.js";
export * from "./replica/acl.js";
export * from "./docs/payload.js";
export * from "./docs/document.js";
