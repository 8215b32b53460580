/**
 * Typed errors, named and nested like p2psync/errors.py so a caller can branch on the same
 * kinds on both sides (DecodeError for malformed input, HandshakeError for refused peers, …).
 */

export class P2PSyncError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Malformed, non-canonical-shaped, oversize or otherwise undecodable input. */
export class DecodeError extends P2PSyncError {}
/** A record's format version is not one this build knows. */
export class UnsupportedVersion extends DecodeError {}

export class CryptoError extends P2PSyncError {}
export class BadSignature extends CryptoError {}
export class BadId extends CryptoError {}
export class DecryptionFailed extends CryptoError {}
export class BadCertificate extends CryptoError {}
export class BadRecoveryPhrase extends P2PSyncError {}

export class TransportError extends P2PSyncError {}
export class HandshakeError extends TransportError {}
export class IncompatibleVersion extends HandshakeError {}
export class PeerCertificateInvalid extends HandshakeError {}
export class UnexpectedPeer extends HandshakeError {}
export class RefusedByPeer extends HandshakeError {}
export class FrameError extends TransportError {}
export class FlowControlError extends FrameError {}
export class PeerTimeout extends TransportError {}
export class ConnectionClosed extends TransportError {}
export class EndOfStream extends TransportError {}
export class StreamReset extends TransportError {}
export class StreamLimitExceeded extends TransportError {}
export class BudgetExceeded extends TransportError {}
export class StrangerRefused extends HandshakeError {}
/** We closed a peer that shared no space with us when its grace period ran out (JS only: Python
 * raises a plain ConnectionClosed with the same text). */
export class StrangerGraceOver extends ConnectionClosed {}
/** We closed a peer for breaking the sync protocol: too many strikes, or one violation (JS only:
 * Python closes with a plain ConnectionClosed "protocol violation"). */
export class PeerMisbehaved extends ConnectionClosed {}
/** A listener refused or dropped a connection to protect itself: too many half-open or
 * established connections from that source address or in total (Python's AdmissionRefused). */
export class AdmissionRefused extends TransportError {}
