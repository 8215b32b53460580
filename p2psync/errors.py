"""Typed errors for p2psync.

Every error raised on bad input (from the network, from disk, from a user) is a subclass of
:class:`P2PSyncError`, so callers can catch one family and show its message to a user.
"""

from __future__ import annotations


class P2PSyncError(Exception):
    """Base of every error p2psync raises on purpose."""


# --- encoding ---------------------------------------------------------------------------------
class DecodeError(P2PSyncError):
    """Bytes are not a well-formed record: bad msgpack, wrong types, trailing bytes, too big."""


class UnsupportedVersion(DecodeError):
    """A record or message carries a format version this build does not understand."""


# --- crypto & identity -----------------------------------------------------------------------
class CryptoError(P2PSyncError):
    """A cryptographic check failed."""


class BadSignature(CryptoError):
    """A signature does not verify against the claimed key."""


class BadId(CryptoError):
    """A printable id is malformed or its checksum does not match."""


class DecryptionFailed(CryptoError):
    """Ciphertext did not authenticate under the given key (wrong key or tampered bytes)."""


class BadCertificate(CryptoError):
    """A device certificate is malformed, expired, or not signed by the claimed account."""


class BadRecoveryPhrase(P2PSyncError):
    """A BIP39 recovery phrase has an unknown word or a wrong checksum."""


class KeystoreError(P2PSyncError):
    """The keystore file is missing, corrupt, or unreadable."""


class WrongPassphrase(KeystoreError):
    """The keystore passphrase is wrong (the keystore is left untouched)."""


# --- replica ----------------------------------------------------------------------------------
class ReplicaError(P2PSyncError):
    """A space, ACL record or tree change was rejected."""


class BadSpaceHeader(ReplicaError):
    """A space header is malformed, badly signed, or does not match its space id."""


class IdMismatch(ReplicaError):
    """A record's content id does not match the hash of its bytes."""


class WrongTree(ReplicaError):
    """A change belongs to another tree or space than the one it was offered to."""


class UnknownReadKey(ReplicaError):
    """A change is encrypted under a read key this replica does not know."""


class AccessDenied(ReplicaError):
    """The author is not allowed to do this at the ACL state the record names."""


class InvalidChange(ReplicaError):
    """A tree change is structurally invalid (e.g. bad parents, ACL head moving backwards)."""


class InvalidAclRecord(ReplicaError):
    """An ACL record is structurally invalid or not allowed at its position."""


class StoreError(ReplicaError):
    """The local store cannot be used (corrupt, locked, disk full)."""


class SchemaTooNew(StoreError):
    """The store was written by a newer p2psync; upgrade before opening it."""


class DocumentError(ReplicaError):
    """An Automerge document operation failed (bad path, bad value, corrupt change bytes)."""


# --- transport & sync -------------------------------------------------------------------------
class TransportError(P2PSyncError):
    """A connection failed or was closed because of what the peer sent."""


class HandshakeError(TransportError):
    """The Noise handshake failed (bad message, wrong key, bad certificate, bad version)."""


class IncompatibleVersion(HandshakeError):
    """The peer speaks a protocol version we cannot talk to."""


class FrameError(TransportError):
    """A frame is malformed, oversized, or failed authentication."""


class PeerTimeout(TransportError):
    """The peer went silent past the keepalive / idle limit."""


class ProtocolError(P2PSyncError):
    """A sync protocol message is malformed, unexpected, or unknown."""


class RateLimited(ProtocolError):
    """The peer exceeded a per-peer rate or size limit."""


# --- sync protocol (appended by the sync layer) ------------------------------------------------
class UnknownMessageType(ProtocolError):
    """A sync message has a type this build does not know; it is refused, never guessed at."""


class MessageTooLarge(ProtocolError):
    """A sync message or batch exceeds its size cap."""


class UnknownSpace(ProtocolError):
    """The peer asked about a space we do not share with it (also said to non-members)."""


# --- transport details (appended by the transport layer) -------------------------------------
class PeerCertificateInvalid(HandshakeError):
    """The peer's device certificate does not verify or does not match its Noise static key."""


class UnexpectedPeer(HandshakeError):
    """The peer authenticated fine but is not the device we meant to reach."""


class RefusedByPeer(HandshakeError):
    """The peer refused our handshake; the message carries the reason it gave."""


class ConnectionClosed(TransportError):
    """The connection is closed (by us, by the peer, or after an error); see the reason."""


class EndOfStream(TransportError):
    """The peer finished sending on this stream: a clean end, not a failure."""


class StreamReset(TransportError):
    """The peer (or we) aborted this stream; other streams of the connection are unaffected."""


class StreamLimitExceeded(TransportError):
    """The peer opened more concurrent streams than we allow."""


class FlowControlError(FrameError):
    """The peer sent more data than the credit we granted it."""


# --- discovery --------------------------------------------------------------------------------
class DiscoveryError(P2PSyncError):
    """A peer address, static-peer entry or mDNS advertisement is malformed or unusable."""


# --- sync engine (appended by the engine) -------------------------------------------------------
class PeerRefused(ProtocolError):
    """The peer answered one of our requests with an error message (code and retry hint kept)."""

    def __init__(self, message: str, code: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class JoinError(P2PSyncError):
    """Joining a space failed: no reachable peer holds it, or the invite is unknown or revoked."""


# --- backup peers (appended by the backup) --------------------------------------------------------
class QuotaExceeded(P2PSyncError):
    """A backup refused to store a batch: it would exceed a per-space or per-account quota.
    Nothing of the batch was stored; free space (delete objects) or raise the quota."""


class ObjectDeleted(ReplicaError):
    """The object (or its whole space) was deleted by a signed tombstone; changes to it are
    refused and its history is dropped."""


# --- declared seams (appended by the seams work; docs/seams.md) -------------------------------
class UnknownTransport(TransportError, ValueError):
    """No carrier is registered under that name (``transport="ws"`` or a ``ws:host:port`` hint
    without the WebSocket carrier installed); the message lists the available ones."""


class UnknownStore(StoreError, ValueError):
    """``open_store`` was given a URL scheme no store implementation is registered for."""


class UnknownSpaceType(ReplicaError):
    """A space header names a ``space_type`` no document type is registered for: this device
    can still replicate the space (ciphertext) but cannot open its documents."""
# --- transport hardening (appended by the transport helper, issue 11.8 / 12) --------------------
class AioquicLayoutChanged(TransportError):
    """The installed aioquic moved an internal p2psync reads (TLS secrets for channel binding,
    flow-control limits): install the aioquic version pinned in pyproject.toml."""


class BudgetExceeded(TransportError):
    """A peer's data would exceed this connection's (or the process's) receive buffer budget:
    the stream it was on is reset, or the connection closed if it keeps trying."""


class AdmissionRefused(TransportError):
    """A listener refused or dropped a connection to protect itself: too many half-open or
    established connections from that source address or in total (see TransportConfig)."""


class StrangerRefused(HandshakeError):
    """This device refused an authenticated peer its account certificate (and the connection):
    the peer is not known, shares no space and presented no invite (issue 12.6)."""
# --- documents: poisoned content (appended by replica, issue 12.5) --------------------------------
class AutomergePanic(DocumentError):
    """The Automerge binding panicked (a Rust panic, raised by pyo3 as a BaseException) and the
    call was contained; the document may lack the content that caused it."""


class UnsupportedContent(DocumentError):
    """Automerge content this build cannot apply or render safely (e.g. native counters, which
    panic in automerge 1.0.0rc1): refused on the writing side, quarantined on the reading side.
    Use ``Editor.make_counter`` / ``Editor.increment`` for counters."""


class RemovedAuthor(AccessDenied):
    """A tree change by an author who was removed (or left) at or after the ACL head it names,
    refused because the space's removal policy is "strict" (docs/acl.md). Not a protocol
    violation by the peer that relayed it: do not strike."""
# --- local API and CLI input (appended by the API) ------------------------------------------------
class ApiRequestError(P2PSyncError):
    """A local API request (or the CLI command behind it) does not fit its declared schema; it is
    answered with the subclass's name as the error type and the connection stays open."""


class InvalidRequest(ApiRequestError):
    """The request line is not JSON, too long, or not ``{"id": ..., "op": "...", "params": {}}``."""


class UnknownOperation(ApiRequestError):
    """The request names an operation the agent does not have."""


class InvalidParams(ApiRequestError):
    """The parameters do not fit the operation's schema: missing, unknown, wrong type, out of
    range; the message names the field."""


class InvalidPath(DocumentError):
    """A document path does not fit the document: a list index past the end or not a number,
    a key into a scalar, an empty path where one is needed."""


class HeadSyncViolation(ProtocolError):
    """A head-sync answer broke a rule every honest responder keeps (docs/sync-protocol.md §3,
    "What an answer must satisfy"): the session ends, everything it claimed is discarded and
    the engine disconnects the peer (a head-sync ``ProtocolError`` is a violation there).
    ``rule`` names the rule broken: ``unasked``, ``space``, ``range``, ``enumerate``,
    ``claim``, ``sum``, ``depth``, ``ranges`` or ``listed``."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"head sync rule '{rule}': {detail}")
        self.rule = rule
# --- local HTTP API (appended by the http helper, issue 17; docs/http.md) -------------------------
class HttpRequestError(ApiRequestError):
    """A request to the local HTTP API was refused before any operation ran."""


class Unauthorized(HttpRequestError):
    """The request carries no API key, or a wrong one (``X-API-Key`` or ``Authorization:
    Bearer``; the key is in ``<home>/http-api-key``). Answered 401."""


class OriginRefused(HttpRequestError):
    """The request came from a browser page of another origin, or named a ``Host`` that is not
    an IP literal, ``localhost`` or a configured origin (DNS rebinding). Answered 403."""


class MethodNotAllowed(HttpRequestError):
    """The endpoint exists but not for this HTTP method (an op that changes state is POST
    only). Answered 405."""
class MemberLimitExceeded(QuotaExceeded):
    """An ordinary device refused a batch from a member: it would pass a per-author or
    per-space limit on documents, changes or bytes (``p2psync.sync.memberlimits``). Nothing of
    the batch was stored; the pusher is told with ``STORAGE_REFUSED`` and it is no strike."""
# --- joins that explain themselves (issue 14) ----------------------------------------------------
class JoinPending(JoinError):
    """A join through an approval-required invite is still waiting for an admin to accept the
    request. Not a failure: the request stays pending and the agent completes the join when it
    is accepted; ``p2psync space leave`` cancels it."""


class JoinRefused(JoinError):
    """A pending join request was declined, or its invite revoked or expired: it can never be
    accepted. The local copy of the space's header and ACL is dropped."""


class WrongType(DocumentError):
    """A document edit does not fit what is at its path: splicing into something that is not
    text, incrementing something that is not a counter, inserting into a map, a path through a
    plain value. Answered as a typed error; nothing is changed."""
class OpError(P2PSyncError):
    """A request cannot be done as asked (bad argument, nothing matches, not allowed).

    Defined here rather than in :mod:`p2psync.agent.ops` (which re-exports it) so the CLI's thin
    path can raise and name it without importing the sync stack."""


# --- encrypted files (issue 18) ------------------------------------------------------------------
class FileError(ReplicaError):
    """Something about an encrypted file of a space (docs/files.md)."""


class ManifestInvalid(FileError, DecodeError):
    """A file manifest is malformed, out of bounds, or its signature does not verify."""


class FileChunkInvalid(FileError, CryptoError):
    """A chunk does not match its address, its length or its authentication tag: it was
    tampered with or substituted. It is never used nor stored."""


class FileIncomplete(FileError):
    """Some chunks of a file are not held locally yet: the file is not complete and nothing was
    written to the output."""

    def __init__(self, missing: int, total: int) -> None:
        super().__init__(f"{missing} of {total} chunks of this file are not here yet")
        self.missing = missing
        self.total = total


class FileNotFound(FileError):
    """No live file with this id in the space (never added, or deleted)."""


class FileTooLarge(FileError):
    """A file has more chunks than a manifest can list, paged or not (MAX_FILE_CHUNKS)."""


class ChangeTooLarge(DocumentError):
    """One local edit makes an Automerge change bigger than a tree change may carry (the sync
    layer's 1 MiB per change): refused at edit time and rolled back, nothing signed. Big blobs
    belong in files (encrypted file storage), not in a document."""


class ClusterIdentityError(KeystoreError):
    """A backup cluster's shared identity cannot be set up or used: the database belongs to
    another backup, holds no identity to join, or the passphrase does not open its keystore
    (docs/backup-cluster.md)."""
class PairingError(P2PSyncError):
    """Pairing a new device of the account failed (unreachable host, bad code format, ...)."""


class PairingRefused(PairingError):
    """The pairing was refused: wrong code, a garbled or replayed message, too many attempts."""


class DiskFull(FileError):
    """The disk filled up while a file was written out: the transfer was aborted, the partial
    temp file removed, and whatever was at the target before is untouched."""


class ManifestPageInvalid(ManifestInvalid):
    """A page of a paged file manifest is wrong: it does not match its address, is over a
    chunk's size, fails authentication under the file key, is malformed or truncated, holds
    another number of entries than the signed manifest says, or the pages' entries do not
    hash to the manifest's list hash. None of its entries is used (docs/files.md "bigfile")."""
