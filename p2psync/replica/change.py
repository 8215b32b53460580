"""Signed, encrypted tree changes: the records an object tree is made of.

Wire form, format 2 (all canonical msgpack arrays, see docs/replica.md)::

    raw    = pack([body, signature])                  # make_signed(author, "tree-change", body)
    body   = pack([header, payload])                  # header kept as raw bytes: it is the AAD
    header = pack([2, space_id, tree_id|None, prev_ids, acl_head, read_key_id, author])
    payload = ReadKey.encrypt(pack([timestamp_ms, snapshot, plaintext]),
                              aad=PAYLOAD_AAD_PREFIX + header)

The clear header holds only what a keyless peer (a backup, a relaying member without the
current key) needs to verify, place and sync a change: the space, the tree, the parents, the
ACL position (head and read key), the author. The author's claimed time and the snapshot flag
are not needed for any of that, so format 2 seals them with the content (issue 20 item 6;
docs/threat-model.md lists what each party learns). Format 1 (the same header with
``snapshot, author, timestamp_ms`` at its end, the payload holding the bare plaintext) is still
read, never written by the app.

The id of a change is ``content_id(raw)`` of the exact bytes received; a tree's id is the id of
its root change (``tree_id`` None, no parents). Parsing and signature checks never need the read
key, so a backup peer can verify everything it stores. The payload AAD is the exact header bytes,
so ciphertext cannot be moved to another change (or another tree, space, author or position).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from p2psync.codec import ID_SIZE, Reader, content_id, pack, unpack
from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import SigningKey, verify
from p2psync.crypto.signed import make_signed, open_signed
from p2psync.errors import DecodeError, IdMismatch, InvalidChange

CHANGE_DOMAIN = "tree-change"
PAYLOAD_AAD_PREFIX = b"p2psync/tree-change-payload\0"
#: The format written; :data:`READ_VERSIONS` are the formats read.
FORMAT_VERSION = 2
#: Format 1 had the author's timestamp and the snapshot flag in the clear header.
LEGACY_VERSION = 1
READ_VERSIONS = (LEGACY_VERSION, FORMAT_VERSION)
#: Most parents a change may name (merges of more concurrent heads need several changes).
MAX_PREV_IDS = 64
#: Largest whole signed change: what one sync message carries per change
#: (``p2psync.sync.messages.MAX_CHANGE_SIZE``, 1 MiB). A bigger change could be made but never
#: synced, and would earn its pusher a strike; ``Document.flush`` splits pending edits instead.
MAX_CHANGE_SIZE = 1024 * 1024
#: Largest encrypted payload: the change minus generous room for the header (64 parents) and
#: the signed envelope.
MAX_PAYLOAD_SIZE = MAX_CHANGE_SIZE - 16 * 1024
MAX_SPACE_ID_LEN = 128


#: Bytes the sealed wrapper ``pack([timestamp_ms, snapshot, plaintext])`` adds at most (array
#: header 1, int64 9, bool 1, bin32 header 5) to the plaintext, before encryption.
SEAL_OVERHEAD = 16


@dataclass(frozen=True)
class Sealed:
    """What only a holder of the read key learns of a change (format 2): the content and the
    fields that are not needed to verify it."""

    timestamp: int  #: milliseconds since the epoch, as claimed by the author (informative only)
    snapshot: bool  #: the plaintext is a whole-document snapshot, not an increment
    plaintext: bytes = field(repr=False)


@dataclass(frozen=True)
class Change:
    """A parsed tree change. ``raw`` is the exact received envelope; ``id`` its content id."""

    id: bytes
    raw: bytes = field(repr=False)
    space_id: str
    tree_id: bytes | None  #: None for the root change (the tree's id is then ``id``)
    prev_ids: tuple[bytes, ...]
    acl_head: bytes
    read_key_id: bytes
    #: Format 1 only (clear header); None in format 2, where it is sealed: see :meth:`open`.
    snapshot: bool | None
    author: bytes
    #: Format 1 only: milliseconds since the epoch as claimed by the author (informative
    #: only); None in format 2, where it is sealed: see :meth:`open`.
    timestamp: int | None
    payload: bytes = field(repr=False)  #: ciphertext
    header: bytes = field(repr=False)  #: exact header bytes (the payload's associated data)
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    version: int = FORMAT_VERSION  #: the change's format (1: legacy, clear timestamp)

    if not TYPE_CHECKING:  # hidden from mypy: it would make every attribute name valid
        def __getattr__(self, name: str) -> Any:
            """Fill in a change loaded lazily from the store on first use of a field it
            was loaded without (``ObjectTree.from_trusted``, issue 13: open reads only the
            id, the parents, the tree and the space; docs/replica.md). Raises what the
            strict parser raises if the stored bytes do not parse."""
            d = self.__dict__
            if name in _LAZY_FIELDS and "raw" in d and complete_stored is not None:
                complete_stored(self)
                return d[name]
            raise AttributeError(f"'Change' object has no attribute {name!r}")

    @property
    def is_root(self) -> bool:
        return self.tree_id is None

    @property
    def tree(self) -> bytes:
        """The id of the tree this change belongs to (its own id for a root change)."""
        return self.id if self.tree_id is None else self.tree_id

    def verify_signature(self) -> None:
        """Check the author's signature over the body; raises :class:`BadSignature`."""
        verify(self.author, CHANGE_DOMAIN, self.body, self.signature)

    def decrypt(self, key: ReadKey) -> bytes:
        """Decrypt the payload's plaintext; :class:`DecryptionFailed` if wrong key or moved
        ciphertext, :class:`DecodeError` if a format-2 sealed part is malformed."""
        return self.open(key).plaintext

    def open(self, key: ReadKey) -> Sealed:
        """Decrypt the payload: the plaintext with the claimed time and snapshot flag (from
        the clear header for format 1). Raises as :meth:`decrypt`."""
        inner = key.decrypt(self.payload, PAYLOAD_AAD_PREFIX + self.header)
        if self.version == LEGACY_VERSION:
            assert self.timestamp is not None and self.snapshot is not None
            return Sealed(self.timestamp, self.snapshot, inner)
        r = Reader(unpack(inner, max_size=MAX_PAYLOAD_SIZE, what="tree change sealed part"),
                   "tree change sealed part")
        timestamp = r.integer("timestamp", min_value=0, max_value=2**63 - 1)
        snapshot = r.boolean("snapshot")
        plaintext = r.blob("plaintext", max_len=MAX_PAYLOAD_SIZE)
        r.end()
        return Sealed(timestamp, snapshot, plaintext)


#: Fields a change loaded lazily from the store may lack until first use.
_LAZY_FIELDS = frozenset(f for f in Change.__dataclass_fields__
                         if f not in ("id", "raw", "space_id", "tree_id", "prev_ids"))
#: Fills in every field of a lazily loaded change from its raw bytes, or raises what the
#: strict parser raises: set by :mod:`p2psync.replica.tree`, the only maker of such changes.
complete_stored: Callable[[Change], None] | None = None


def parse_change(raw: bytes, *, expected_id: bytes | None = None) -> Change:
    """Strictly decode a change envelope (no signature check). :class:`DecodeError` if malformed.

    With ``expected_id`` the recomputed id must match (:class:`IdMismatch` otherwise).
    """
    raw = bytes(raw)
    if len(raw) > MAX_CHANGE_SIZE:
        raise DecodeError(f"tree change: {len(raw)} bytes exceeds the {MAX_CHANGE_SIZE} limit")
    cid = content_id(raw)
    if expected_id is not None and cid != expected_id:
        raise IdMismatch(
            f"tree change bytes hash to {cid.hex()[:16]}…, expected {expected_id.hex()[:16]}…"
        )
    body, sig = open_signed(raw, "tree change", MAX_CHANGE_SIZE)
    b = Reader(unpack(body, max_size=MAX_CHANGE_SIZE, what="tree change body"),
               "tree change body")
    header = b.blob("header", max_len=8 * 1024)
    payload = b.blob("payload", max_len=MAX_PAYLOAD_SIZE)
    b.end()
    h = Reader(unpack(header, what="tree change header"), "tree change header")
    version = h.version(READ_VERSIONS)
    space_id = h.text("space_id", max_len=MAX_SPACE_ID_LEN)
    tree_id = h.optional_blob("tree_id", size=ID_SIZE)
    prev = h.blob_list("prev_ids", size=ID_SIZE, max_items=MAX_PREV_IDS)
    acl_head = h.blob("acl_head", size=ID_SIZE)
    read_key_id = h.blob("read_key_id", size=ID_SIZE)
    snapshot: bool | None = None
    timestamp: int | None = None
    if version == LEGACY_VERSION:
        snapshot = h.boolean("snapshot")
    author = h.blob("author", size=32)
    if version == LEGACY_VERSION:
        timestamp = h.integer("timestamp", min_value=0, max_value=2**63 - 1)
    h.end()
    if tree_id is None and prev:
        raise InvalidChange("a root change (no tree id) cannot have parents")
    if tree_id is not None and not prev:
        raise InvalidChange("a non-root change must name at least one parent")
    if len(set(prev)) != len(prev):
        raise InvalidChange("a change names the same parent twice")
    return Change(
        id=cid, raw=raw, space_id=space_id, tree_id=tree_id, prev_ids=tuple(prev),
        acl_head=acl_head, read_key_id=read_key_id, snapshot=snapshot, author=author,
        timestamp=timestamp, payload=payload, header=header, body=body, signature=sig,
        version=version,
    )


def verify_change(raw: bytes, *, expected_id: bytes | None = None) -> Change:
    """Parse and check the signature: everything verifiable without the read key."""
    change = parse_change(raw, expected_id=expected_id)
    change.verify_signature()
    return change


def build_change(
    author: SigningKey, key: ReadKey, plaintext: bytes, *, space_id: str,
    tree_id: bytes | None, prev_ids: list[bytes] | tuple[bytes, ...], acl_head: bytes,
    read_key_id: bytes, snapshot: bool = False, timestamp: int | None = None,
    version: int = FORMAT_VERSION,
) -> Change:
    """Encrypt ``plaintext`` (with the claimed time and the snapshot flag, in format 2) bound
    to a fresh header, sign it, and return the parsed change. ``version=1`` writes the legacy
    format (clear time and flag): for tests and vectors of old data only."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    prev = sorted(prev_ids)
    if version == LEGACY_VERSION:
        header = pack([LEGACY_VERSION, space_id, tree_id, prev, acl_head, read_key_id,
                       snapshot, author.public, ts])
        inner = plaintext
    elif version == FORMAT_VERSION:
        header = pack([FORMAT_VERSION, space_id, tree_id, prev, acl_head, read_key_id,
                       author.public])
        inner = pack([ts, snapshot, plaintext])
    else:
        raise ValueError(f"cannot write tree change format {version}")
    payload = key.encrypt(inner, PAYLOAD_AAD_PREFIX + header)
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise InvalidChange(
            f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_SIZE}; flush edits more often"
        )
    body = pack([header, payload])
    return parse_change(make_signed(author, CHANGE_DOMAIN, body))
