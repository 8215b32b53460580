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

from p2psync.codec import Reader, pack, unpack
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
    ERROR = 63


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


# --- field helpers ------------------------------------------------------------------------------
def _space_id(r: Reader) -> str:
    s = r.text("space_id", max_len=MAX_SPACE_ID_LEN)
    if not s:
        raise DecodeError(f"{r.what}.space_id: empty")
    return s


def _raw_batch(r: Reader, name: str, max_item: int) -> list[bytes]:
    items = r.blob_list(name, max_items=MAX_BATCH_ITEMS, max_len=max_item)
    _check_batch_bytes(items, f"{r.what}.{name}")
    return items


def _check_batch_bytes(items: Sequence[bytes], what: str) -> None:
    total = sum(len(x) for x in items)
    if total > MAX_BATCH_BYTES:
        raise DecodeError(f"{what}: {total} bytes exceeds the {MAX_BATCH_BYTES}-byte batch cap")


def _pairs(value: Any, what: str, max_items: int) -> list[tuple[bytes, bytes]]:
    """A list of ``[id(32), hash(32)]`` pairs."""
    if not isinstance(value, list):
        raise DecodeError(f"{what}: expected array, got {type(value).__name__}")
    if len(value) > max_items:
        raise DecodeError(f"{what}: {len(value)} items exceeds {max_items}")
    out: list[tuple[bytes, bytes]] = []
    for i, item in enumerate(value):
        p = Reader(item, f"{what}[{i}]")
        a = p.blob("id", size=ID_SIZE)
        b = p.blob("hash", size=ID_SIZE)
        p.end()
        out.append((a, b))
    return out


def _max_bytes(r: Reader) -> int:
    return r.integer("max_bytes", min_value=0, max_value=MAX_BATCH_BYTES)


# --- space exchange -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceHello:
    """Opens a space exchange: a fresh random nonce from the sender."""

    TYPE: ClassVar[MsgType] = MsgType.SPACE_HELLO
    nonce: bytes

    def fields(self) -> list[Any]:
        return [self.nonce]

    @classmethod
    def read(cls, r: Reader) -> SpaceHello:
        return cls(r.blob("nonce", size=NONCE_SIZE))


@dataclass(frozen=True)
class SpaceTokens:
    """The sender's shuffled space tokens, padded with random tokens to a bucket size."""

    TYPE: ClassVar[MsgType] = MsgType.SPACE_TOKENS
    tokens: tuple[bytes, ...]

    def fields(self) -> list[Any]:
        return [list(self.tokens)]

    @classmethod
    def read(cls, r: Reader) -> SpaceTokens:
        tokens = r.blob_list("tokens", size=TOKEN_SIZE, max_items=MAX_TOKENS)
        if len(tokens) not in TOKEN_BUCKETS:
            raise DecodeError(f"{r.what}.tokens: {len(tokens)} is not a padding bucket size")
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

    @classmethod
    def read(cls, r: Reader) -> RangeQuery:
        bits = r.integer("bits", min_value=0, max_value=MAX_RANGE_BITS)
        prefix = r.integer("prefix", min_value=0, max_value=(1 << bits) - 1)
        h = r.blob("hash", size=ID_SIZE)
        count = r.integer("count", min_value=0, max_value=MAX_RANGE_COUNT)
        r.end()
        return cls(bits, prefix, h, count)


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

    @classmethod
    def read(cls, r: Reader) -> RangeResult:
        bits = r.integer("bits", min_value=0, max_value=MAX_RANGE_BITS)
        prefix = r.integer("prefix", min_value=0, max_value=(1 << bits) - 1)
        h = r.blob("hash", size=ID_SIZE)
        count = r.integer("count", min_value=0, max_value=MAX_RANGE_COUNT)
        raw_elements = r.value("elements")
        elements = None
        if raw_elements is not None:
            elements = tuple(_pairs(raw_elements, f"{r.what}.elements", MAX_RANGE_ELEMENTS))
            if len(elements) != count:
                raise DecodeError(f"{r.what}: {len(elements)} elements but count {count}")
        r.end()
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

    @classmethod
    def read(cls, r: Reader) -> HeadSyncRequest:
        space = _space_id(r)
        threshold = r.integer("threshold", min_value=0, max_value=MAX_RANGE_ELEMENTS)
        items = r.array("ranges", max_items=MAX_RANGES)
        ranges = tuple(
            RangeQuery.read(Reader(x, f"{r.what}.ranges[{i}]")) for i, x in enumerate(items)
        )
        return cls(space, threshold, ranges)


@dataclass(frozen=True)
class HeadSyncResponse:
    """Results for the queried ranges that differ on the responder's side (equal ones are
    omitted)."""

    TYPE: ClassVar[MsgType] = MsgType.HEAD_SYNC_RESPONSE
    space_id: str
    results: tuple[RangeResult, ...]

    def fields(self) -> list[Any]:
        return [self.space_id, [x.fields() for x in self.results]]

    @classmethod
    def read(cls, r: Reader) -> HeadSyncResponse:
        space = _space_id(r)
        items = r.array("results", max_items=MAX_RANGES)
        results = tuple(
            RangeResult.read(Reader(x, f"{r.what}.results[{i}]")) for i, x in enumerate(items)
        )
        return cls(space, results)


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

    @classmethod
    def read(cls, r: Reader) -> HeadUpdate:
        space = _space_id(r)
        obj = r.blob("object_id", size=ID_SIZE)
        heads = r.blob_list("heads", size=ID_SIZE, max_items=MAX_HEADS)
        changes = _raw_batch(r, "changes", MAX_CHANGE_SIZE)
        return cls(space, obj, tuple(heads), tuple(changes))


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

    @classmethod
    def read(cls, r: Reader) -> FullSyncRequest:
        space = _space_id(r)
        obj = r.blob("object_id", size=ID_SIZE)
        heads = r.blob_list("heads", size=ID_SIZE, max_items=MAX_HEADS)
        path = r.blob_list("snapshot_path", size=ID_SIZE, max_items=MAX_SNAPSHOT_PATH)
        changes = _raw_batch(r, "changes", MAX_CHANGE_SIZE)
        max_bytes = _max_bytes(r)
        from_snapshot = r.boolean("from_snapshot")
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

    @classmethod
    def read(cls, r: Reader) -> FullSyncResponse:
        space = _space_id(r)
        obj = r.blob("object_id", size=ID_SIZE)
        heads = r.blob_list("heads", size=ID_SIZE, max_items=MAX_HEADS)
        changes = _raw_batch(r, "changes", MAX_CHANGE_SIZE)
        more = r.boolean("more")
        return cls(space, obj, tuple(heads), tuple(changes), more)


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

    @classmethod
    def read(cls, r: Reader) -> AclHeadUpdate:
        space = _space_id(r)
        heads = r.blob_list("heads", size=ID_SIZE, max_items=MAX_HEADS)
        records = _raw_batch(r, "records", MAX_ACL_RECORD_SIZE)
        return cls(space, tuple(heads), tuple(records))


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

    @classmethod
    def read(cls, r: Reader) -> AclSyncRequest:
        space = _space_id(r)
        heads = r.blob_list("heads", size=ID_SIZE, max_items=MAX_HEADS)
        records = _raw_batch(r, "records", MAX_ACL_RECORD_SIZE)
        return cls(space, tuple(heads), tuple(records), _max_bytes(r))


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

    @classmethod
    def read(cls, r: Reader) -> AclSyncResponse:
        space = _space_id(r)
        heads = r.blob_list("heads", size=ID_SIZE, max_items=MAX_HEADS)
        records = _raw_batch(r, "records", MAX_ACL_RECORD_SIZE)
        return cls(space, tuple(heads), tuple(records), r.boolean("more"))


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

    @classmethod
    def read(cls, r: Reader) -> BootstrapRequest:
        space = _space_id(r)
        proof = r.optional_blob("proof", max_len=MAX_PROOF_SIZE)
        after = r.optional_blob("after", size=ID_SIZE)
        max_objects = r.integer("max_objects", min_value=0, max_value=MAX_OBJECT_PAGE)
        return cls(space, proof, after, max_objects)


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

    @classmethod
    def read(cls, r: Reader) -> BootstrapResponse:
        space = _space_id(r)
        header = r.optional_blob("header", max_len=MAX_HEADER_SIZE)
        records = _raw_batch(r, "acl_records", MAX_ACL_RECORD_SIZE)
        objects = r.blob_list("object_ids", size=ID_SIZE, max_items=MAX_OBJECT_PAGE)
        next_after = r.optional_blob("next_after", size=ID_SIZE)
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

    @classmethod
    def read(cls, r: Reader) -> SpaceOffer:
        return cls(_space_id(r))


@dataclass(frozen=True)
class ReceiptRequest:
    """Asks a backup which heads of a space it holds; ``nonce`` makes the answer fresh."""

    TYPE: ClassVar[MsgType] = MsgType.RECEIPT_REQUEST
    space_id: str
    nonce: bytes

    def fields(self) -> list[Any]:
        return [self.space_id, self.nonce]

    @classmethod
    def read(cls, r: Reader) -> ReceiptRequest:
        return cls(_space_id(r), r.blob("nonce", size=NONCE_SIZE))


@dataclass(frozen=True)
class ReceiptResponse:
    """A storage receipt signed by the backup's device key (opaque here; see
    p2psync.backup.receipt)."""

    TYPE: ClassVar[MsgType] = MsgType.RECEIPT_RESPONSE
    receipt: bytes

    def fields(self) -> list[Any]:
        return [self.receipt]

    @classmethod
    def read(cls, r: Reader) -> ReceiptResponse:
        return cls(r.blob("receipt", max_len=MAX_RECEIPT_SIZE))


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

    @classmethod
    def read(cls, r: Reader) -> StorageRefused:
        space = _space_id(r)
        obj = r.blob("object_id", size=ID_SIZE)
        raw_code = r.integer("code", min_value=0, max_value=255)
        try:
            code = ErrorCode(raw_code)
        except ValueError:
            raise DecodeError(f"{r.what}.code: unknown error code {raw_code}") from None
        return cls(space, obj, code, r.text("message", max_len=MAX_ERROR_TEXT))


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

    @classmethod
    def read(cls, r: Reader) -> ErrorMessage:
        raw_code = r.integer("code", min_value=0, max_value=255)
        try:
            code = ErrorCode(raw_code)
        except ValueError:
            raise DecodeError(f"{r.what}.code: unknown error code {raw_code}") from None
        message = r.text("message", max_len=MAX_ERROR_TEXT)
        retry = r.value("retry_after_ms")
        if retry is not None and (
            not isinstance(retry, int) or isinstance(retry, bool) or not 0 <= retry < 2**32
        ):
            raise DecodeError(f"{r.what}.retry_after_ms: expected null or a uint32")
        return cls(code, message, retry)

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


# --- envelope -----------------------------------------------------------------------------------
Message: TypeAlias = (
    SpaceHello | SpaceTokens | HeadSyncRequest | HeadSyncResponse | HeadUpdate
    | FullSyncRequest | FullSyncResponse | AclHeadUpdate | AclSyncRequest | AclSyncResponse
    | BootstrapRequest | BootstrapResponse | ErrorMessage
    | SpaceOffer | ReceiptRequest | ReceiptResponse | StorageRefused
)

_READERS: dict[int, Callable[[Reader], Message]] = {
    int(cls.TYPE): cls.read
    for cls in (
        SpaceHello, SpaceTokens, HeadSyncRequest, HeadSyncResponse, HeadUpdate,
        FullSyncRequest, FullSyncResponse, AclHeadUpdate, AclSyncRequest, AclSyncResponse,
        BootstrapRequest, BootstrapResponse, ErrorMessage,
        SpaceOffer, ReceiptRequest, ReceiptResponse, StorageRefused,
    )
}


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


def decode(raw: bytes) -> Envelope:
    """Decode and check one envelope. Raises only typed errors: DecodeError (malformed, incl.
    UnsupportedVersion), UnknownMessageType, MessageTooLarge."""
    if isinstance(raw, (bytes, bytearray, memoryview)) and len(raw) > MAX_MESSAGE_SIZE:
        raise MessageTooLarge(f"message is {len(raw)} bytes (cap {MAX_MESSAGE_SIZE})")
    r = Reader(unpack(raw, max_size=MAX_MESSAGE_SIZE, what="sync message"), "sync message")
    r.version(SUPPORTED_VERSIONS)
    mtype = r.integer("type", min_value=0, max_value=2**16)
    request_id = r.integer("request_id", min_value=0, max_value=MAX_REQUEST_ID)
    body = r.value("body")
    r.end()
    reader = _READERS.get(mtype)
    if reader is None:
        raise UnknownMessageType(f"message type {mtype} is not known to this build")
    name = MsgType(mtype).name.lower()
    br = Reader(body, name)
    message = reader(br)
    br.end()
    return Envelope(request_id, message)


def peek_request_id(raw: bytes) -> int | None:
    """The request id of a message we could not decode, so the error can name it (or None)."""
    try:
        value = unpack(raw, max_size=MAX_MESSAGE_SIZE, what="sync message")
    except DecodeError:
        return None
    if isinstance(value, list) and len(value) >= 3:
        rid = value[2]
        if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= MAX_REQUEST_ID:
            return rid
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
