/**
 * Typed errors of the sync layer, named and nested like p2psync/errors.py (ProtocolError and
 * its kinds, HeadSyncViolation with its rule, PeerRefused with the peer's error code, JoinError).
 */
import { P2PSyncError } from "../errors.js";

/** The peer broke the sync protocol (or a request could not be served). */
export class ProtocolError extends P2PSyncError {}
export class RateLimited extends ProtocolError {}
export class UnknownMessageType extends ProtocolError {}
export class MessageTooLarge extends ProtocolError {}
/** Also the answer for spaces the peer may not access, so existence never leaks. */
export class UnknownSpace extends ProtocolError {}

/** A head-sync answer broke one of the rules of docs/sync-protocol.md section 3. */
export class HeadSyncViolation extends ProtocolError {
  constructor(readonly rule: string, message: string) {
    super(`head sync rule '${rule}': ${message}`);
  }
}

/** The peer answered our request with an ERROR message. */
export class PeerRefused extends ProtocolError {
  constructor(message: string, readonly code: number, readonly retryAfter: number | null = null) {
    super(message);
  }
}

/** Joining a space by invite failed (the invite is gone, nobody offers the space, …). */
export class JoinError extends P2PSyncError {}
/** A backup refused to store a batch (its quota). */
export class QuotaExceeded extends P2PSyncError {}
