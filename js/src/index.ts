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
// The sync half (messages, head sync, space exchange, SyncCore + PeerSync, bootstrap by invite):
// as a namespace (its wire constants share names with the record modules), plus the classes an
// app builder starts from.
export * as sync from "./sync/index.js";
export { InviteCode } from "./bootstrap.js";
export { PeerSync } from "./sync/engine.js";
export { SyncReplicas, SyncSpace } from "./sync/replica.js";
export { SyncCore } from "./sync/core.js";
export * from "./docs/payload.js";
export * from "./docs/document.js";
export * from "./storage/types.js";
export * from "./storage/memory.js";
export * from "./storage/idb.js";
export * from "./storage/conformance.js";
export * from "./docs/replicas.js";
export * from "./repo.js";
