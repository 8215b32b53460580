"""Sync wire messages: dataclasses with strict, total encode/decode.

Every message travels in one envelope, a canonical msgpack array
``[protocol_version, message_type, request_id, body]`` where ``body`` is an array with the
message's fields in a fixed order (see docs/sync-protocol.md). Decoding never trusts the peer:
every field is type- and size-checked, unknown versions raise
:class:`~p2psync.errors.UnsupportedVersion`, unknown types raise
:class:`~p2psync.errors.UnknownMessageType`, anything else malformed raises
:class:`~p2psync.errors.DecodeError`, and nothing else ever escapes :func:`decode`.

Tree changes, ACL records and space headers are opaque raw bytes here: they are self-verifying
signed records (id = content_id(raw)) checked by the replica, not by the sync layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, TypeAlias

from p2psync import codec as c
from p2psync.codec import pack, read_array_header, read_int, unpack_schema
from p2psync.errors import (
    AccessDenied,
    DecodeError,
    MessageTooLarge,
    P2PSyncError,
    ProtocolError,
    QuotaExceeded,
    RateLimited,
    UnknownMessageType,
    UnknownSpace,
    UnsupportedVersion,
)

# --- protocol version and caps ------------------------------------------------------------------
PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)

MAX_MESSAGE_SIZE = 8 * 1024 * 1024  #: whole encoded envelope
MAX_REQUEST_ID = 2**32 - 1
ID_SIZE = 32  #: object ids, change ids, record ids, heads hashes, range hashes
MAX_SPACE_ID_LEN = 128  #: "<base32 content id>.<base36 replication key>" is ~66 chars
NONCE_SIZE = 32
TOKEN_SIZE = 16
#: A token list is always padded to one of these sizes, so its length leaks only a bucket.
TOKEN_BUCKETS: tuple[int, ...] = (16, 64, 256, 1024, 4096)
MAX_TOKENS = TOKEN_BUCKETS[-1]
MAX_RANGES = 256  #: ranges per head-sync request / results per response
MAX_RANGE_ELEMENTS = 256  #: enumerated elements per range result
MAX_RANGE_BITS = 64  #: deepest prefix a range may name (prefix fits in a uint64)
MAX_RANGE_COUNT = 2**40  #: elements a range may claim to hold
MAX_HEADS = 256  #: heads of one tree or ACL
MAX_SNAPSHOT_PATH = 64
MAX_CHANGE_SIZE = 1024 * 1024  #: one raw tree change
MAX_ACL_RECORD_SIZE = 256 * 1024  #: one raw ACL record
MAX_HEADER_SIZE = 4 * 1024  #: one raw space header
MAX_BATCH_BYTES = 4 * 1024 * 1024  #: sum of raw changes/records in one message
MAX_BATCH_ITEMS = 4096
MAX_OBJECT_PAGE = 16384  #: object ids per bootstrap page
MAX_PROOF_SIZE = 4 * 1024  #: opaque invite proof in a bootstrap request
MAX_ERROR_TEXT = 256


class MsgType(IntEnum):
    """Numeric message types on the wire; new types need a new protocol version."""

    SPACE_HELLO = 1
    SPACE_TOKENS = 2
    HEAD_SYNC_REQUEST = 10
    HEAD_SYNC_RESPONSE = 11
    HEAD_UPDATE = 20
    FULL_SYNC_REQUEST = 21
    FULL_SYNC_RESPONSE = 22
    ACL_HEAD_UPDATE = 30
    ACL_SYNC_REQUEST = 31
    ACL_SYNC_RESPONSE = 32
    BOOTSTRAP_REQUEST = 40
    BOOTSTRAP_RESPONSE = 41
    SPACE_OFFER = 50  #: backup peers (docs/backup.md); peers without them answer type 5
    RECEIPT_REQUEST = 51
    RECEIPT_RESPONSE = 52
    STORAGE_REFUSED = 53
    CHUNK_REQUEST = 60  #: encrypted file chunks (docs/files.md); a v1 extension
    CHUNK_RESPONSE = 61
    CHUNK_OFFER = 62  #: "I hold these chunks of this file": a replicator pulls what it lacks
    ERROR = 63
    CHUNK_KEEP = 64  #: "at these heads the file needs only these chunks": a replicator's GC
    CHUNK_KEEP_PART = 65  #: one part of a keep statement too large for one message


class ErrorCode(IntEnum):
    """Typed error codes carried by :class:`ErrorMessage`."""

    UNKNOWN_SPACE = 1  #: also the answer to non-members, so existence never leaks
    ACCESS_DENIED = 2  #: a known member lacks the right (e.g. a reader pushing changes)
    TOO_LARGE = 3
    RATE_LIMITED = 4
    UNKNOWN_MESSAGE_TYPE = 5
    MALFORMED = 6
    UNSUPPORTED_VERSION = 7
    INTERNAL = 8  #: our fault; the peer may retry later
    QUOTA_EXCEEDED = 9  #: a backup refused to store a batch (its per-space/account quota)


# --- field schemas and helpers -----------------------------------------------------------------
# Each message class has a SCHEMA (its body as a fixed-length array, every field bounded) and a
# ``from_body`` that runs the checks a schema cannot express (cross-field ones, batch totals).
_SPACE_ID = c.text(min_len=1, max_len=MAX_SPACE_ID_LEN)
_ID = c.blob(size=ID_SIZE)
_HEADS = c.array(_ID, max_items=MAX_HEADS)
_MAX_BYTES = c.integer(0, MAX_BATCH_BYTES)
_CODE = c.integer(0, 255)
_ERROR_TEXT = c.text(max_len=MAX_ERROR_TEXT)


def _batch(max_item: int) -> Any:
    return c.array(c.blob(max_len=max_item), max_items=MAX_BATCH_ITEMS)


def _check_batch_bytes(items: Sequence[bytes], what: str) -> None:
    total = sum(len(x) for x in items)
    if total > MAX_BATCH_BYTES:
        raise DecodeError(f"{what}: {total} bytes exceeds the {MAX_BATCH_BYTES}-byte batch cap")


def _code(raw: int, what: str) -> ErrorCode:
    try:
        return ErrorCode(raw)
    except ValueError:
        raise DecodeError(f"{what}.code: unknown error code {raw}") from None


def _check_prefix(bits: int, prefix: int, what: str) -> None:
    if prefix >= 1 << bits:
        raise DecodeError(f"{what}: prefix {prefix} does not fit in {bits} bits")


# --- space exchange -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceHello:
    """Opens a space exchange: a fresh random nonce from the sender."""

    TYPE: ClassVar[MsgType] = MsgType.SPACE_HELLO
    nonce: bytes

    def fields(self) -> list[Any]:
        return [self.nonce]

    SCHEMA: ClassVar[Any] = c.fields(c.blob(size=NONCE_SIZE))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> SpaceHello:
        return cls(b[0])


@dataclass(frozen=True)
class SpaceTokens:
    """The sender's shuffled space tokens, padded with random tokens to a bucket size."""

    TYPE: ClassVar[MsgType] = MsgType.SPACE_TOKENS
    tokens: tuple[bytes, ...]

    def fields(self) -> list[Any]:
        return [list(self.tokens)]

    SCHEMA: ClassVar[Any] = c.fields(c.array(c.blob(size=TOKEN_SIZE), max_items=MAX_TOKENS))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> SpaceTokens:
        tokens = b[0]
        if len(tokens) not in TOKEN_BUCKETS:
            raise DecodeError(f"space_tokens.tokens: {len(tokens)} is not a padding bucket size")
        return cls(tuple(tokens))


# --- head sync ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RangeQuery:
    """One id-prefix range: all ids whose first ``bits`` bits equal ``prefix``, with the
    requester's own (hash, count) of it so the responder can skip ranges that already match."""

    bits: int
    prefix: int
    hash: bytes
    count: int

    def fields(self) -> list[Any]:
        return [self.bits, self.prefix, self.hash, self.count]

    SCHEMA: ClassVar[Any] = c.fields(
        c.integer(0, MAX_RANGE_BITS), c.integer(0, 2**MAX_RANGE_BITS - 1), _ID,
        c.integer(0, MAX_RANGE_COUNT))

    @classmethod
    def from_body(cls, b: tuple[Any, ...], what: str = "range") -> RangeQuery:
        _check_prefix(b[0], b[1], what)
        return cls(*b)


@dataclass(frozen=True)
class RangeResult:
    """The responder's (hash, count) of a range that differs from the query, and its elements
    ``(object id, heads hash)`` when it holds at most the requested threshold of them."""

    bits: int
    prefix: int
    hash: bytes
    count: int
    elements: tuple[tuple[bytes, bytes], ...] | None

    def fields(self) -> list[Any]:
        els = None if self.elements is None else [[a, b] for a, b in self.elements]
        return [self.bits, self.prefix, self.hash, self.count, els]

    SCHEMA: ClassVar[Any] = c.fields(
        c.integer(0, MAX_RANGE_BITS), c.integer(0, 2**MAX_RANGE_BITS - 1), _ID,
        c.integer(0, MAX_RANGE_COUNT),
        c.optional(c.array(c.fields(_ID, _ID), max_items=MAX_RANGE_ELEMENTS)))

    @classmethod
    def from_body(cls, b: tuple[Any, ...], what: str = "range result") -> RangeResult:
        bits, prefix, h, count, raw_elements = b
        _check_prefix(bits, prefix, what)
        elements = None
        if raw_elements is not None:
            elements = tuple(raw_elements)
            if len(elements) != count:
                raise DecodeError(f"{what}: {len(elements)} elements but count {count}")
        return cls(bits, prefix, h, count, elements)


@dataclass(frozen=True)
class HeadSyncRequest:
    """Asks the responder to compare these ranges of a space's (object id, heads hash) set;
    ranges holding at most ``threshold`` elements are answered with their elements."""

    TYPE: ClassVar[MsgType] = MsgType.HEAD_SYNC_REQUEST
    space_id: str
    threshold: int
    ranges: tuple[RangeQuery, ...]

    def fields(self) -> list[Any]:
        return [self.space_id, self.threshold, [q.fields() for q in self.ranges]]

    SCHEMA: ClassVar[Any] = c.fields(
        _SPACE_ID, c.integer(0, MAX_RANGE_ELEMENTS),
        c.array(RangeQuery.SCHEMA, max_items=MAX_RANGES))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> HeadSyncRequest:
        ranges = tuple(RangeQuery.from_body(x, f"head_sync_request.ranges[{i}]")
                       for i, x in enumerate(b[2]))
        return cls(b[0], b[1], ranges)


@dataclass(frozen=True)
class HeadSyncResponse:
    """Results for the queried ranges that differ on the responder's side (equal ones are
    omitted)."""

    TYPE: ClassVar[MsgType] = MsgType.HEAD_SYNC_RESPONSE
    space_id: str
    results: tuple[RangeResult, ...]

    def fields(self) -> list[Any]:
        return [self.space_id, [x.fields() for x in self.results]]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, c.array(RangeResult.SCHEMA, max_items=MAX_RANGES))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> HeadSyncResponse:
        results = tuple(RangeResult.from_body(x, f"head_sync_response.results[{i}]")
                        for i, x in enumerate(b[1]))
        return cls(b[0], results)


# --- tree sync ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadUpdate:
    """Pushed right after a local edit: the tree's new heads and the raw changes that made
    them (possibly none, when only announcing heads)."""

    TYPE: ClassVar[MsgType] = MsgType.HEAD_UPDATE
    space_id: str
    object_id: bytes
    heads: tuple[bytes, ...]
    changes: tuple[bytes, ...]

    def fields(self) -> list[Any]:
        return [self.space_id, self.object_id, list(self.heads), list(self.changes)]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, _ID, _HEADS, _batch(MAX_CHANGE_SIZE))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> HeadUpdate:
        _check_batch_bytes(b[3], "head_update.changes")
        return cls(b[0], b[1], tuple(b[2]), tuple(b[3]))


@dataclass(frozen=True)
class FullSyncRequest:
    """Asks for the changes of one tree that we lack, given our heads (empty = we have nothing:
    send the whole tree, or only from the latest snapshot when ``from_snapshot``). ``changes``
    may carry changes we believe the peer lacks, making the exchange bidirectional; the
    response batch holds at most ``max_bytes`` of raw changes."""

    TYPE: ClassVar[MsgType] = MsgType.FULL_SYNC_REQUEST
    space_id: str
    object_id: bytes
    heads: tuple[bytes, ...]
    snapshot_path: tuple[bytes, ...]
    changes: tuple[bytes, ...]
    max_bytes: int
    from_snapshot: bool = False

    def fields(self) -> list[Any]:
        return [
            self.space_id, self.object_id, list(self.heads), list(self.snapshot_path),
            list(self.changes), self.max_bytes, self.from_snapshot,
        ]

    SCHEMA: ClassVar[Any] = c.fields(
        _SPACE_ID, _ID, _HEADS, c.array(_ID, max_items=MAX_SNAPSHOT_PATH),
        _batch(MAX_CHANGE_SIZE), _MAX_BYTES, c.BOOLEAN)

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> FullSyncRequest:
        space, obj, heads, path, changes, max_bytes, from_snapshot = b
        _check_batch_bytes(changes, "full_sync_request.changes")
        return cls(space, obj, tuple(heads), tuple(path), tuple(changes), max_bytes, from_snapshot)


@dataclass(frozen=True)
class FullSyncResponse:
    """One batch of raw changes (parents before children) and the responder's heads; ``more``
    says another request with our updated heads will return further changes."""

    TYPE: ClassVar[MsgType] = MsgType.FULL_SYNC_RESPONSE
    space_id: str
    object_id: bytes
    heads: tuple[bytes, ...]
    changes: tuple[bytes, ...]
    more: bool

    def fields(self) -> list[Any]:
        return [self.space_id, self.object_id, list(self.heads), list(self.changes), self.more]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, _ID, _HEADS, _batch(MAX_CHANGE_SIZE), c.BOOLEAN)

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> FullSyncResponse:
        _check_batch_bytes(b[3], "full_sync_response.changes")
        return cls(b[0], b[1], tuple(b[2]), tuple(b[3]), b[4])


# --- ACL sync (same shape as tree sync, one ACL per space) ---------------------------------------
@dataclass(frozen=True)
class AclHeadUpdate:
    """Pushed right after a local ACL change: new ACL heads and the raw records."""

    TYPE: ClassVar[MsgType] = MsgType.ACL_HEAD_UPDATE
    space_id: str
    heads: tuple[bytes, ...]
    records: tuple[bytes, ...]

    def fields(self) -> list[Any]:
        return [self.space_id, list(self.heads), list(self.records)]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, _HEADS, _batch(MAX_ACL_RECORD_SIZE))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> AclHeadUpdate:
        _check_batch_bytes(b[2], "acl_head_update.records")
        return cls(b[0], tuple(b[1]), tuple(b[2]))


@dataclass(frozen=True)
class AclSyncRequest:
    """Asks for the ACL records we lack given our ACL heads; may push records the other way."""

    TYPE: ClassVar[MsgType] = MsgType.ACL_SYNC_REQUEST
    space_id: str
    heads: tuple[bytes, ...]
    records: tuple[bytes, ...]
    max_bytes: int

    def fields(self) -> list[Any]:
        return [self.space_id, list(self.heads), list(self.records), self.max_bytes]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, _HEADS, _batch(MAX_ACL_RECORD_SIZE), _MAX_BYTES)

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> AclSyncRequest:
        _check_batch_bytes(b[2], "acl_sync_request.records")
        return cls(b[0], tuple(b[1]), tuple(b[2]), b[3])


@dataclass(frozen=True)
class AclSyncResponse:
    """One batch of raw ACL records (causal order) and the responder's ACL heads."""

    TYPE: ClassVar[MsgType] = MsgType.ACL_SYNC_RESPONSE
    space_id: str
    heads: tuple[bytes, ...]
    records: tuple[bytes, ...]
    more: bool

    def fields(self) -> list[Any]:
        return [self.space_id, list(self.heads), list(self.records), self.more]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, _HEADS, _batch(MAX_ACL_RECORD_SIZE), c.BOOLEAN)

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> AclSyncResponse:
        _check_batch_bytes(b[2], "acl_sync_response.records")
        return cls(b[0], tuple(b[1]), tuple(b[2]), b[3])


# --- bootstrap ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BootstrapRequest:
    """A joiner asks for a space by id: header, ACL and object list, one page of objects after
    ``after``. ``proof`` is opaque to the sync layer (an invite proof the ACL checks)."""

    TYPE: ClassVar[MsgType] = MsgType.BOOTSTRAP_REQUEST
    space_id: str
    proof: bytes | None
    after: bytes | None
    max_objects: int

    def fields(self) -> list[Any]:
        return [self.space_id, self.proof, self.after, self.max_objects]

    SCHEMA: ClassVar[Any] = c.fields(
        _SPACE_ID, c.optional(c.blob(max_len=MAX_PROOF_SIZE)), c.optional(_ID),
        c.integer(0, MAX_OBJECT_PAGE))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> BootstrapRequest:
        return cls(*b)


@dataclass(frozen=True)
class BootstrapResponse:
    """Header (first page only), as many ACL records as fit the batch cap (the rest come by
    ACL sync), and a page of object ids in ascending order; ``next_after`` continues it."""

    TYPE: ClassVar[MsgType] = MsgType.BOOTSTRAP_RESPONSE
    space_id: str
    header: bytes | None
    acl_records: tuple[bytes, ...]
    object_ids: tuple[bytes, ...]
    next_after: bytes | None

    def fields(self) -> list[Any]:
        return [
            self.space_id, self.header, list(self.acl_records), list(self.object_ids),
            self.next_after,
        ]

    SCHEMA: ClassVar[Any] = c.fields(
        _SPACE_ID, c.optional(c.blob(max_len=MAX_HEADER_SIZE)), _batch(MAX_ACL_RECORD_SIZE),
        c.array(_ID, max_items=MAX_OBJECT_PAGE), c.optional(_ID))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> BootstrapResponse:
        space, header, records, objects, next_after = b
        _check_batch_bytes(records, "bootstrap_response.acl_records")
        return cls(space, header, tuple(records), tuple(objects), next_after)


# --- backup peers (docs/backup.md) ----------------------------------------------------------------
MAX_RECEIPT_SIZE = 1024 * 1024  #: one signed storage receipt


@dataclass(frozen=True)
class SpaceOffer:
    """Pushed by a member to a peer its ACL names as the space's replicator when the space
    exchange did not list the space there: "fetch it from me" (the peer bootstraps it)."""

    TYPE: ClassVar[MsgType] = MsgType.SPACE_OFFER
    space_id: str

    def fields(self) -> list[Any]:
        return [self.space_id]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID)

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> SpaceOffer:
        return cls(b[0])


@dataclass(frozen=True)
class ReceiptRequest:
    """Asks a backup which heads of a space it holds; ``nonce`` makes the answer fresh."""

    TYPE: ClassVar[MsgType] = MsgType.RECEIPT_REQUEST
    space_id: str
    nonce: bytes

    def fields(self) -> list[Any]:
        return [self.space_id, self.nonce]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, c.blob(size=NONCE_SIZE))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> ReceiptRequest:
        return cls(*b)


@dataclass(frozen=True)
class ReceiptResponse:
    """A storage receipt signed by the backup's device key (opaque here; see
    p2psync.backup.receipt)."""

    TYPE: ClassVar[MsgType] = MsgType.RECEIPT_RESPONSE
    receipt: bytes

    def fields(self) -> list[Any]:
        return [self.receipt]

    SCHEMA: ClassVar[Any] = c.fields(c.blob(max_len=MAX_RECEIPT_SIZE))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> ReceiptResponse:
        return cls(b[0])


@dataclass(frozen=True)
class StorageRefused:
    """Pushed by a backup that refused to store a batch of changes (nothing of it stored)."""

    TYPE: ClassVar[MsgType] = MsgType.STORAGE_REFUSED
    space_id: str
    object_id: bytes
    code: ErrorCode
    message: str

    def fields(self) -> list[Any]:
        return [self.space_id, self.object_id, int(self.code), self.message]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, _ID, _CODE, _ERROR_TEXT)

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> StorageRefused:
        return cls(b[0], b[1], _code(b[2], "storage_refused"), b[3])


# --- errors -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ErrorMessage:
    """A typed refusal of the request with the same request id."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    code: ErrorCode
    message: str = ""
    retry_after_ms: int | None = None

    def fields(self) -> list[Any]:
        return [int(self.code), self.message, self.retry_after_ms]

    SCHEMA: ClassVar[Any] = c.fields(_CODE, _ERROR_TEXT, c.optional(c.integer(0, 2**32 - 1)))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> ErrorMessage:
        return cls(_code(b[0], "error"), b[1], b[2])

    def to_exception(self) -> ProtocolError:
        """The typed local error matching this remote refusal."""
        text = f"peer refused: {self.code.name.lower()}" + (f" ({self.message})" if self.message
                                                            else "")
        if self.code == ErrorCode.UNKNOWN_SPACE:
            return UnknownSpace(text)
        if self.code == ErrorCode.RATE_LIMITED:
            return RateLimited(text)
        if self.code == ErrorCode.TOO_LARGE:
            return MessageTooLarge(text)
        return ProtocolError(text)


def error_for(exc: BaseException, *, retry_after_ms: int | None = None) -> ErrorMessage:
    """Map a local exception raised while handling a request to the error to send back.

    Messages for unexpected exceptions are generic so internals never leak to the peer."""
    code: ErrorCode
    if isinstance(exc, UnsupportedVersion):
        code = ErrorCode.UNSUPPORTED_VERSION
    elif isinstance(exc, UnknownMessageType):
        code = ErrorCode.UNKNOWN_MESSAGE_TYPE
    elif isinstance(exc, MessageTooLarge):
        code = ErrorCode.TOO_LARGE
    elif isinstance(exc, DecodeError):
        code = ErrorCode.MALFORMED
    elif isinstance(exc, RateLimited):
        code = ErrorCode.RATE_LIMITED
    elif isinstance(exc, UnknownSpace):
        code = ErrorCode.UNKNOWN_SPACE
    elif isinstance(exc, AccessDenied):
        code = ErrorCode.ACCESS_DENIED
    elif isinstance(exc, QuotaExceeded):
        code = ErrorCode.QUOTA_EXCEEDED
    else:
        code = ErrorCode.INTERNAL
    text = str(exc)[:MAX_ERROR_TEXT] if isinstance(exc, P2PSyncError) else ""
    if code == ErrorCode.INTERNAL:
        text = ""
    return ErrorMessage(code, text, retry_after_ms)


# --- encrypted file chunks (docs/files.md; v1 extension: peers without them answer type 5) ----
MAX_CHUNK_ADDRESSES = 16  #: addresses per chunk request (and chunks per response)
MAX_CHUNK_DATA = 256 * 1024 + 40  #: one chunk's ciphertext: max plaintext + nonce + tag
_CHUNK_ADDR = c.blob(size=ID_SIZE)


@dataclass(frozen=True)
class ChunkRequest:
    """Asks a peer for chunks of one file of a space (addresses from the file's manifest).
    Scoped to the file so a responder serves only what it holds *of that file*."""

    TYPE: ClassVar[MsgType] = MsgType.CHUNK_REQUEST
    space_id: str
    file_id: bytes
    addresses: tuple[bytes, ...]

    def fields(self) -> list[Any]:
        return [self.space_id, self.file_id, list(self.addresses)]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, c.blob(size=ID_SIZE),
                                     c.array(_CHUNK_ADDR, max_items=MAX_CHUNK_ADDRESSES))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> ChunkRequest:
        return cls(b[0], b[1], tuple(b[2]))


@dataclass(frozen=True)
class ChunkResponse:
    """The requested chunks the responder holds (ciphertext, verified by the receiver against
    the address) and the addresses it does not hold (ask someone else)."""

    TYPE: ClassVar[MsgType] = MsgType.CHUNK_RESPONSE
    space_id: str
    file_id: bytes
    chunks: tuple[tuple[bytes, bytes], ...]
    missing: tuple[bytes, ...]

    def fields(self) -> list[Any]:
        return [self.space_id, self.file_id, [[a, d] for a, d in self.chunks],
                list(self.missing)]

    SCHEMA: ClassVar[Any] = c.fields(
        _SPACE_ID, c.blob(size=ID_SIZE),
        c.array(c.fields(_CHUNK_ADDR, c.blob(max_len=MAX_CHUNK_DATA)),
                max_items=MAX_CHUNK_ADDRESSES),
        c.array(_CHUNK_ADDR, max_items=MAX_CHUNK_ADDRESSES))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> ChunkResponse:
        return cls(b[0], b[1], tuple((a, d) for a, d in b[2]), tuple(b[3]))


MAX_OFFER_ADDRESSES = 4096  #: addresses per chunk offer (128 KiB of addresses)


@dataclass(frozen=True)
class ChunkOffer:
    """Tells a replicator (backup) of the space which chunks of one file the sender holds, so
    it can pull those it lacks with chunk requests (it cannot read manifests). Answered with an
    empty :class:`ChunkResponse` (noted) or an error; a peer that is no replicator ignores it."""

    TYPE: ClassVar[MsgType] = MsgType.CHUNK_OFFER
    space_id: str
    file_id: bytes
    addresses: tuple[bytes, ...]

    def fields(self) -> list[Any]:
        return [self.space_id, self.file_id, list(self.addresses)]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, c.blob(size=ID_SIZE),
                                     c.array(_CHUNK_ADDR, max_items=MAX_OFFER_ADDRESSES))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> ChunkOffer:
        return cls(b[0], b[1], tuple(b[2]))


#: addresses in one CHUNK_KEEP (~840 KB, under the transport's 1 MiB message limit; a manifest
#: holds at most ~23 000 chunks, see replica/files.py MAX_MANIFEST_BYTES)
MAX_KEEP_ADDRESSES = 24_576


@dataclass(frozen=True)
class ChunkKeep:
    """Tells a replicator (backup) of the space which chunks one file needs **at the given heads
    of its document**: every chunk named by the manifest at any of those heads (docs/files.md
    "Backup GC"). A replicator whose own heads of that document are exactly ``heads`` deletes
    its other chunks of the file; a peer that is no replicator ignores it. Answered like an
    offer (an empty :class:`ChunkResponse`, or an error)."""

    TYPE: ClassVar[MsgType] = MsgType.CHUNK_KEEP
    space_id: str
    file_id: bytes
    heads: tuple[bytes, ...]
    addresses: tuple[bytes, ...]

    def fields(self) -> list[Any]:
        return [self.space_id, self.file_id, list(self.heads), list(self.addresses)]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, c.blob(size=ID_SIZE), _HEADS,
                                     c.array(_CHUNK_ADDR, max_items=MAX_KEEP_ADDRESSES))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> ChunkKeep:
        return cls(b[0], b[1], tuple(b[2]), tuple(b[3]))


#: parts of one paged keep statement (16 × 24 576 ≥ a paged file's 2^18 chunks + its pages)
MAX_KEEP_PARTS = 16


@dataclass(frozen=True)
class ChunkKeepPart(ChunkKeep):
    """Part ``part`` (0-based) of ``parts`` of a keep statement whose addresses do not fit in
    one :class:`ChunkKeep` (a paged file: docs/files.md "bigfile"). A replicator gathers the
    parts of one file and heads and acts only once it holds all of them, on their union,
    exactly as on one statement; an incomplete set deletes nothing. A :class:`ChunkKeep`
    for the type-matching (``isinstance``) paths: gate, access check, ``on_offer``."""

    TYPE: ClassVar[MsgType] = MsgType.CHUNK_KEEP_PART
    part: int = 0
    parts: int = 2

    def fields(self) -> list[Any]:
        return [self.space_id, self.file_id, list(self.heads), self.part, self.parts,
                list(self.addresses)]

    SCHEMA: ClassVar[Any] = c.fields(_SPACE_ID, c.blob(size=ID_SIZE), _HEADS,
                                     c.integer(0, MAX_KEEP_PARTS - 1),
                                     c.integer(2, MAX_KEEP_PARTS),
                                     c.array(_CHUNK_ADDR, max_items=MAX_KEEP_ADDRESSES))

    @classmethod
    def from_body(cls, b: tuple[Any, ...]) -> ChunkKeepPart:
        if b[3] >= b[4]:
            raise DecodeError("chunk_keep_part: part index beyond its part count")
        return cls(b[0], b[1], tuple(b[2]), tuple(b[5]), b[3], b[4])


# --- envelope -----------------------------------------------------------------------------------
Message: TypeAlias = (
    SpaceHello | SpaceTokens | HeadSyncRequest | HeadSyncResponse | HeadUpdate
    | FullSyncRequest | FullSyncResponse | AclHeadUpdate | AclSyncRequest | AclSyncResponse
    | BootstrapRequest | BootstrapResponse | ErrorMessage
    | SpaceOffer | ReceiptRequest | ReceiptResponse | StorageRefused
    | ChunkRequest | ChunkResponse | ChunkOffer | ChunkKeep | ChunkKeepPart
)

_CLASSES: tuple[type[Any], ...] = (
    SpaceHello, SpaceTokens, HeadSyncRequest, HeadSyncResponse, HeadUpdate,
    FullSyncRequest, FullSyncResponse, AclHeadUpdate, AclSyncRequest, AclSyncResponse,
    BootstrapRequest, BootstrapResponse, ErrorMessage,
    SpaceOffer, ReceiptRequest, ReceiptResponse, StorageRefused,
    ChunkRequest, ChunkResponse, ChunkOffer, ChunkKeep, ChunkKeepPart,
)
#: message type -> (body schema, constructor from the decoded body)
_READERS: dict[int, tuple[Any, Callable[[tuple[Any, ...]], Message]]] = {
    int(cls.TYPE): (cls.SCHEMA, cls.from_body) for cls in _CLASSES
}
for _schema, _ in _READERS.values():  # build every decoder now: a bad schema fails at import
    c.unpack_schema(pack(None), c.optional(_schema))


@dataclass(frozen=True)
class Envelope:
    """A decoded message and the request id it belongs to."""

    request_id: int
    message: Message


def encode(message: Message, request_id: int = 0) -> bytes:
    """Encode ``message`` in a version-1 envelope; refuses what the peer would refuse."""
    if not 0 <= request_id <= MAX_REQUEST_ID:
        raise ValueError(f"request id {request_id} out of range")
    raw = pack([PROTOCOL_VERSION, int(message.TYPE), request_id, message.fields()])
    if len(raw) > MAX_MESSAGE_SIZE:
        raise MessageTooLarge(f"{message.TYPE.name} is {len(raw)} bytes (cap {MAX_MESSAGE_SIZE})")
    return raw


def _header(raw: bytes | bytearray | memoryview) -> tuple[int, int, int | None, int]:
    """``(version, type, request id or None when out of range, body offset)`` of an envelope,
    read without touching the body (O(1) whatever the body holds)."""
    what = "sync message"
    n, pos = read_array_header(raw, 0, what)
    if n != 4:
        raise DecodeError(f"{what}: {n} envelope fields, expected 4")
    version, pos = read_int(raw, pos, what)
    mtype, pos = read_int(raw, pos, what)
    rid, pos = read_int(raw, pos, what)
    return version, mtype, (rid if 0 <= rid <= MAX_REQUEST_ID else None), pos


def request_id_of(exc: BaseException) -> int | None:
    """The request id a decode error from :func:`decode` belongs to, when the envelope named a
    valid one (so the error reply can name it without decoding the message again)."""
    rid = getattr(exc, "request_id", None)
    return rid if isinstance(rid, int) else None


def decode(raw: bytes) -> Envelope:
    """Decode and check one envelope, parsing it exactly once.

    The header (version, type, request id) is read by hand in O(1); the body is then decoded
    against its type's SCHEMA, so its work and memory are bounded by the schema, not by the
    message size (an 8 MiB array of empty arrays is refused at its first length prefix).
    Raises only typed errors: DecodeError (malformed, incl. UnsupportedVersion),
    UnknownMessageType, MessageTooLarge; each carries the envelope's request id, when it had
    a valid one, as ``request_id`` (read it with :func:`request_id_of`)."""
    if isinstance(raw, (bytes, bytearray, memoryview)) and len(raw) > MAX_MESSAGE_SIZE:
        raise MessageTooLarge(f"message is {len(raw)} bytes (cap {MAX_MESSAGE_SIZE})")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise DecodeError(f"sync message: expected bytes, got {type(raw).__name__}")
    version, mtype, request_id, pos = _header(raw)
    try:
        if version not in SUPPORTED_VERSIONS:
            raise UnsupportedVersion(f"sync message: format version {version} is not supported")
        if request_id is None:
            raise DecodeError(f"sync message.request_id: out of range [0, {MAX_REQUEST_ID}]")
        entry = _READERS.get(mtype)
        if entry is None:
            raise UnknownMessageType(f"message type {mtype} is not known to this build")
        schema, build = entry
        name = MsgType(mtype).name.lower()
        body = unpack_schema(memoryview(raw)[pos:], schema, max_size=MAX_MESSAGE_SIZE, what=name)
        return Envelope(request_id, build(body))
    except P2PSyncError as exc:
        exc.request_id = request_id  # type: ignore[attr-defined]  # see request_id_of
        raise


def peek_request_id(raw: bytes) -> int | None:
    """The request id of a message we could not decode, so the error can name it (or None).

    Reads only the envelope header (O(1)); prefer :func:`request_id_of` on the error."""
    try:
        return _header(raw)[2]
    except (DecodeError, TypeError):
        return None


def take_batch(items: Sequence[bytes], max_bytes: int,
               max_items: int = MAX_BATCH_ITEMS) -> tuple[list[bytes], bool]:
    """The longest prefix of ``items`` within ``max_bytes`` / ``max_items`` (at least one item
    when the first fits the hard per-batch cap, so progress is always possible), and whether
    items were left over."""
    cap = min(max_bytes, MAX_BATCH_BYTES)
    out: list[bytes] = []
    total = 0
    for raw in items:
        if len(out) >= max_items:
            break
        if out and total + len(raw) > cap:
            break
        if not out and len(raw) > MAX_BATCH_BYTES:
            raise MessageTooLarge(f"one item is {len(raw)} bytes (batch cap {MAX_BATCH_BYTES})")
        out.append(raw)
        total += len(raw)
    return out, len(out) < len(items)
