"""Signed, encrypted tree changes: the records an object tree is made of.

Wire form (all canonical msgpack arrays, see docs/replica.md)::

    raw    = pack([body, signature])                  # make_signed(author, "tree-change", body)
    body   = pack([header, payload])                  # header kept as raw bytes: it is the AAD
    header = pack([1, space_id, tree_id|None, prev_ids, acl_head, read_key_id,
                   snapshot, author, timestamp_ms])
    payload = ReadKey.encrypt(plaintext, aad=PAYLOAD_AAD_PREFIX + header)

The id of a change is ``content_id(raw)`` of the exact bytes received; a tree's id is the id of
its root change (``tree_id`` None, no parents). Parsing and signature checks never need the read
key, so a backup peer can verify everything it stores. The payload AAD is the exact header bytes,
so ciphertext cannot be moved to another change (or another tree, space, author or position).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from p2psync.codec import ID_SIZE, Reader, content_id, pack, unpack
from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import SigningKey, verify
from p2psync.crypto.signed import make_signed, open_signed
from p2psync.errors import DecodeError, IdMismatch, InvalidChange

CHANGE_DOMAIN = "tree-change"
PAYLOAD_AAD_PREFIX = b"p2psync/tree-change-payload\0"
FORMAT_VERSION = 1
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
    snapshot: bool
    author: bytes
    timestamp: int  #: milliseconds since the epoch, as claimed by the author (informative only)
    payload: bytes = field(repr=False)  #: ciphertext
    header: bytes = field(repr=False)  #: exact header bytes (the payload's associated data)
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)

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
        """Decrypt the payload; :class:`DecryptionFailed` if wrong key or moved ciphertext."""
        return key.decrypt(self.payload, PAYLOAD_AAD_PREFIX + self.header)


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
    h.version([FORMAT_VERSION])
    space_id = h.text("space_id", max_len=MAX_SPACE_ID_LEN)
    tree_id = h.optional_blob("tree_id", size=ID_SIZE)
    prev = h.blob_list("prev_ids", size=ID_SIZE, max_items=MAX_PREV_IDS)
    acl_head = h.blob("acl_head", size=ID_SIZE)
    read_key_id = h.blob("read_key_id", size=ID_SIZE)
    snapshot = h.boolean("snapshot")
    author = h.blob("author", size=32)
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
) -> Change:
    """Encrypt ``plaintext`` bound to a fresh header, sign it, and return the parsed change."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    header = pack([FORMAT_VERSION, space_id, tree_id, sorted(prev_ids), acl_head, read_key_id,
                   snapshot, author.public, ts])
    payload = key.encrypt(plaintext, PAYLOAD_AAD_PREFIX + header)
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise InvalidChange(
            f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_SIZE}; flush edits more often"
        )
    body = pack([header, payload])
    return parse_change(make_signed(author, CHANGE_DOMAIN, body))
