"""The object tree: a sans-IO, in-memory DAG of signed tree changes.

A change is *attached* once its id and signature verify, all its parents are attached, its ACL
head is known to the :class:`~p2psync.replica.acl_gate.AclGate`, and the gate allows it. Until
then it *waits* (in memory only) and attaches as soon as the missing piece arrives. The tree never
decrypts: that is the document's job, so replicators can hold and serve trees they cannot read.

Every :meth:`ObjectTree.add` is all-or-nothing for the changes it was given: a bad one raises a
typed error and leaves the tree as it was. A ``persist`` hook runs before the result is final
(the store writes the attached changes and new heads in one transaction there); if it raises, the
tree rolls back too, so memory and disk never disagree.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from p2psync.codec import ID_SIZE, content_id, pack
from p2psync.crypto.keys import SigningKey
from p2psync.errors import (
    IdMismatch,
    InvalidChange,
    ReplicaError,
    UnknownReadKey,
    WrongTree,
)
from p2psync.replica import change as _change_mod
from p2psync.replica.acl_gate import AclGate
from p2psync.replica.change import (
    FORMAT_VERSION,
    LEGACY_VERSION,
    MAX_CHANGE_SIZE,
    MAX_PAYLOAD_SIZE,
    MAX_PREV_IDS,
    MAX_SPACE_ID_LEN,
    READ_VERSIONS,
    Change,
    build_change,
    parse_change,
    verify_change,
)

#: Batches at least this large verify their signatures on several cores (below, the thread
#: hand-off costs more than it saves: one Ed25519 verification is ~45-80 µs here).
PARALLEL_VERIFY_MIN = 16
#: Threads that verify (PyNaCl's cffi calls release the GIL, so verification scales with
#: cores; a Raspberry Pi has 4). The calling thread verifies one share itself.
VERIFY_WORKERS = max(1, min(4, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None


def _verify_share(changes: Sequence[Change]) -> None:
    for ch in changes:
        ch.verify_signature()


def verify_signatures(changes: Sequence[Change]) -> None:
    """Check every change's signature against its author's key; raise the first
    :class:`~p2psync.errors.BadSignature`. Large batches are split over
    :data:`VERIFY_WORKERS` threads (initial sync verifies ~100 000 signatures: its floor)."""
    global _pool
    n = len(changes)
    if n < PARALLEL_VERIFY_MIN or VERIFY_WORKERS < 2:
        _verify_share(changes)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(VERIFY_WORKERS - 1, thread_name_prefix="p2psync-verify")
    shares = [changes[i::VERIFY_WORKERS] for i in range(VERIFY_WORKERS)]
    futures = [_pool.submit(_verify_share, share) for share in shares[1:]]
    error: BaseException | None = None
    try:
        _verify_share(shares[0])
    except BaseException as exc:  # wait for the others first: they read `changes`
        error = exc
    for f in futures:
        exc2 = f.exception()
        if error is None and exc2 is not None:
            error = exc2
    if error is not None:
        raise error


#: Values many stored changes repeat (space id, author, ACL head, read-key id), shared between
#: the changes of loaded trees instead of one copy per change (~260 bytes per change).
_shared: dict[Any, Any] = {}
_SHARED_MAX = 4096


#: Whether a :class:`Change` can be made by filling its ``__dict__`` (a frozen dataclass's
#: ``__init__`` sets each of its fields through ``object.__setattr__``: ~3 µs, most of a
#: stored change's parse). If the class ever gains slots or fields this module does not fill,
#: or a format this module does not know, :func:`parse_stored_change` is the strict parser.
_CHANGE_FIELDS = ("id", "raw", "space_id", "tree_id", "prev_ids", "acl_head", "read_key_id",
                  "snapshot", "author", "timestamp", "payload", "header", "body", "signature",
                  "version")
_FAST = ("__slots__" not in Change.__dict__
         and tuple(f.name for f in fields(Change)) == _CHANGE_FIELDS
         and set(READ_VERSIONS) == {LEGACY_VERSION, FORMAT_VERSION} == {1, 2})
_set_dict = object.__setattr__


def parse_stored_change(raw: bytes, expected_id: bytes | None) -> Change:
    """:func:`~p2psync.replica.change.parse_change` for bytes this device stored itself.

    The id is always recomputed (:class:`IdMismatch` if the bytes changed), and every field
    gets the same type, size and rule checks as the strict parser, but through three plain C
    msgpack decodes instead of the strict reader (which also re-encodes each layer to check
    it is canonical: these bytes passed that check before they were stored). Anything the
    fast path does not accept goes through the strict parser, so a damaged row raises the
    same typed error as before. ~3-4× faster than the strict parser: opening a document
    rebuilds its tree from the store (issue 13, "store open")."""
    raw = bytes(raw)
    if not _FAST or len(raw) > MAX_CHANGE_SIZE:
        return parse_change(raw, expected_id=expected_id)
    cid = content_id(raw)
    if expected_id is not None and cid != expected_id:
        raise IdMismatch(f"tree change bytes hash to {cid.hex()[:16]}…, expected "
                         f"{expected_id.hex()[:16]}…")
    values = _stored_values(raw, cid)
    if values is None:  # any other shape: the strict parser names what is wrong
        return parse_change(raw, expected_id=expected_id)
    ch: Change = object.__new__(Change)
    _set_dict(ch, "__dict__", values)
    return ch


def _stored_values(raw: bytes, cid: bytes) -> dict[str, Any] | None:
    """The fields of the change ``raw`` whose id ``cid`` is known, checked as
    :func:`parse_stored_change` says, or None if they are not all well formed."""
    try:
        # msgpack's defaults bound every length by the input's; types are checked below
        body, sig = msgpack.unpackb(raw)
        header, payload = msgpack.unpackb(body)
        h = msgpack.unpackb(header)
        if h[0] == FORMAT_VERSION:
            version, space_id, tree_id, prev, acl_head, read_key_id, author = h
            snapshot: Any = None
            timestamp: Any = None
        else:
            (version, space_id, tree_id, prev, acl_head, read_key_id, snapshot, author,
             timestamp) = h
            if not (version == LEGACY_VERSION and type(snapshot) is bool
                    and type(timestamp) is int and 0 <= timestamp <= 2**63 - 1):
                return None
    except Exception:
        return None
    if not (type(body) is bytes and type(sig) is bytes and len(sig) == 64
            and type(header) is bytes and len(header) <= 8 * 1024
            and type(payload) is bytes and len(payload) <= MAX_PAYLOAD_SIZE
            and type(version) is int
            and type(space_id) is str and len(space_id) <= MAX_SPACE_ID_LEN
            and (tree_id is None or (type(tree_id) is bytes and len(tree_id) == ID_SIZE))
            and type(prev) is list and len(prev) <= MAX_PREV_IDS
            and (not prev) == (tree_id is None)
            and type(acl_head) is bytes and len(acl_head) == ID_SIZE
            and type(read_key_id) is bytes and len(read_key_id) == ID_SIZE
            and type(author) is bytes and len(author) == 32):
        return None
    for p in prev:
        if type(p) is not bytes or len(p) != ID_SIZE:
            return None
    if len(prev) > 1 and len(set(prev)) != len(prev):
        return None
    sh = _shared
    if len(sh) >= _SHARED_MAX:
        sh.clear()
    return {"id": cid, "raw": raw, "space_id": sh.setdefault(space_id, space_id),
            "tree_id": tree_id if tree_id is None else sh.setdefault(tree_id, tree_id),
            "prev_ids": tuple(prev), "acl_head": sh.setdefault(acl_head, acl_head),
            "read_key_id": sh.setdefault(read_key_id, read_key_id), "snapshot": snapshot,
            "author": sh.setdefault(author, author), "timestamp": timestamp,
            "payload": payload, "header": header, "body": body, "signature": sig,
            "version": version}


#: Whether :meth:`ObjectTree.from_trusted` may load changes lazily: a format-2 change is then
#: made with its id, raw bytes, space, tree and parents only, and :class:`Change` fills in the
#: rest from the raw bytes on first use (:func:`_complete_stored`).
_LAZY = (_FAST and "__getattr__" in Change.__dict__ and Change.version == FORMAT_VERSION
         and set(_CHANGE_FIELDS) - {"id", "raw", "space_id", "tree_id", "prev_ids"}
         == _change_mod._LAZY_FIELDS)
#: Where a change's header can start: after ``[body, signature]``'s and ``body = [header,
#: payload]``'s array and bin length prefixes, 6 (bin 8 and bin 8) to 10 bytes (bin 32, bin 16).
_HEADER_AT = (6, 10)
_BIN32 = b"\xc4\x20"  #: a 32-byte id's msgpack prefix


def _stored_parents(raw: bytes, at: int, skip: int) -> tuple[bytes, ...] | None:
    """The 2-15 parents of a stored change whose header starts at ``at`` with ``skip`` bytes
    already known (its version, space and tree), or None (another shape: the parser reads it)."""
    if at < 0:
        return None
    k = at + skip
    n = raw[k] - 0x90 if k < len(raw) else 0
    if not 1 < n < 16:
        return None
    prev = tuple(raw[i + 2:i + 34] for i in range(k + 1, k + 1 + 34 * n, 34)
                 if raw.startswith(_BIN32, i))
    return prev if len(set(prev)) == n and all(len(p) == ID_SIZE for p in prev) else None


def _complete_stored(ch: Change) -> None:
    """Fill in every field of a change :meth:`ObjectTree.from_trusted` loaded lazily, with
    :func:`parse_stored_change`'s checks (the id was checked at open); what it reads must be
    what open read. Raises :class:`~p2psync.errors.DecodeError` / ``InvalidChange`` as the
    strict parser would."""
    d = ch.__dict__
    full = _stored_values(d["raw"], d["id"])
    if full is None:
        full = parse_change(d["raw"]).__dict__  # raises what is wrong
    if (full["prev_ids"] != d["prev_ids"] or full["tree_id"] != d["tree_id"]
            or full["space_id"] != d["space_id"] or full["version"] != FORMAT_VERSION):
        raise InvalidChange("stored change: its header does not say what the store open read")
    d.update(full)


_change_mod.complete_stored = _complete_stored


@dataclass
class AddResult:
    """What one :meth:`ObjectTree.add` did."""

    attached: list[Change] = field(default_factory=list)  #: newly attached, causal order
    waiting: list[bytes] = field(default_factory=list)  #: ids now waiting (parents / ACL head)
    duplicates: list[bytes] = field(default_factory=list)  #: ids already attached or waiting
    #: earlier-waiting changes dropped because the gate refused them once they could attach
    rejected: list[tuple[bytes, ReplicaError]] = field(default_factory=list)
    heads: tuple[bytes, ...] = ()  #: heads after the add
    #: oldest waiting changes dropped to keep the waiting set bounded (sync re-fetches gaps)
    evicted: list[bytes] = field(default_factory=list)
    #: the shallow base this add attached (:meth:`ObjectTree.attach_base`): the store records
    #: it with the changes, so store open accepts exactly its missing parents
    base: bytes | None = None


Persist = Callable[["ObjectTree", AddResult], None]


#: Changes a tree keeps waiting for parents / ACL heads; past it the oldest are dropped, so a
#: peer sending orphans forever costs bounded memory (honest gaps are re-fetched by sync).
MAX_WAITING = 10_000


class ObjectTree:
    """A verified change DAG for one tree (document) of one space."""

    max_waiting: int = MAX_WAITING

    def __init__(self, space_id: str, gate: AclGate, root: Change) -> None:
        """Start a tree from its root change, which must already be verified by the caller."""
        if not root.is_root:
            raise InvalidChange("a tree starts from a root change (one without a tree id)")
        if root.space_id != space_id:
            raise WrongTree(f"root change belongs to space {root.space_id!r}, not {space_id!r}")
        self.space_id = space_id
        self.gate = gate
        self.root = root
        self._changes: dict[bytes, Change] = {root.id: root}
        self._index: dict[bytes, int] = {root.id: 0}  #: attach position, a topological order
        self._order: list[Change] = [root]
        self._heads: set[bytes] = {root.id}
        self._waiting: dict[bytes, Change] = {}
        self._blocked_on: dict[bytes, list[bytes]] = {}  #: missing parent id -> waiting ids
        self._acl_blocked: dict[bytes, list[bytes]] = {}  #: unknown ACL head -> waiting ids
        self._replay_cache: list[Change] | None = None
        #: shallow trees (docs/replica.md "Shallow trees"): ids of the base snapshots, and the
        #: ids known to be in their past but not held (their parents): those count as present
        #: for attaching, are never attached themselves, and are never walked into
        self.bases: set[bytes] = set()
        self._shallow: set[bytes] = set()

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_root(cls, space_id: str, gate: AclGate, raw_root: bytes) -> ObjectTree:
        """Verify a received root change (signature + ACL) and start a tree from it."""
        root = verify_change(raw_root)
        if not root.is_root:
            raise InvalidChange("expected a root change")
        cls._check_root_acl(gate, root)
        return cls(space_id, gate, root)

    @classmethod
    def create(
        cls, space_id: str, gate: AclGate, author: SigningKey, plaintext: bytes,
        *, timestamp: int | None = None,
    ) -> ObjectTree:
        """Create a new tree whose root change carries ``plaintext`` (encrypted)."""
        acl_head, rk_id = gate.write_position(author.public)
        key = gate.read_key(rk_id)
        if key is None:
            raise UnknownReadKey("cannot create a tree: this replica holds no current read key")
        root = build_change(author, key, plaintext, space_id=space_id, tree_id=None, prev_ids=(),
                            acl_head=acl_head, read_key_id=rk_id, timestamp=timestamp)
        cls._check_root_acl(gate, root)
        return cls(space_id, gate, root)

    @classmethod
    def from_trusted(
        cls, space_id: str, gate: AclGate, raws: Iterable[tuple[bytes | None, bytes]],
        *, verify_signatures: bool = False, tree_id: bytes | None = None,
        bases: Collection[bytes] = (),
    ) -> ObjectTree:
        """Rebuild a tree from ``(id, raw)`` pairs in a stored topological order (root first).

        Every id is computed from the bytes; a stored id given next to them must match it
        (``None``: no stored id, the bytes are checked through the DAG, see docs/replica.md
        "Store open"), and the root's must be ``tree_id`` when given. Signatures and ACL checks
        are skipped unless ``verify_signatures``: these bytes were verified before they were
        stored. Without it, a format-2 change is loaded lazily: its id, parents, space and
        tree are read here, the rest of it on first use (``Change.__getattr__``).
        ``bases``: the shallow bases the store recorded: exactly those changes may name
        parents that are not held (their parents then count as present for later changes).
        """
        it = iter(raws)
        try:
            rid, rraw = next(it)
        except StopIteration:
            raise InvalidChange("stored tree has no changes") from None
        check = verify_change if verify_signatures else parse_stored_change
        tree = cls(space_id, gate, check(rraw, expected_id=rid or tree_id))
        if tree_id is not None and tree.id != tree_id:
            raise IdMismatch("stored tree's root change is not the tree")
        # _structural_check and _attach, inlined: this loop runs once per stored change
        tid, changes, index, order, heads = (tree.id, tree._changes, tree._index, tree._order,
                                             tree._heads)
        lazy = _LAZY and not verify_signatures
        # a format-2 change of this tree: its header starts [2, space, tree, [parents...
        prefix = b"\x97\x02" + pack(space_id) + _BIN32 + tid
        one = prefix + b"\x91" + _BIN32  # ... with one parent (most changes): at 6-10 bytes
        end, endo = _HEADER_AT[1] + len(prefix), _HEADER_AT[1] + len(one)  # into the envelope
        at7 = 7 + len(one)  # after a header at 7: a body of 256 B-64 KiB, a header < 256 B
        blake2b, new, set_dict = hashlib.blake2b, object.__new__, _set_dict
        for cid, raw in it:
            if lazy and type(raw) is bytes and len(raw) <= MAX_CHANGE_SIZE:
                if raw[7:at7] == one:  # most changes (a slice compare: ~4x a find's speed)
                    k = at7
                else:
                    k = raw.find(one, _HEADER_AT[0], endo)
                    k = k + len(one) if k > 0 else 0
                p = raw[k:k + ID_SIZE] if k else b""
                if k and p in changes:  # one parent held: the common case, inlined
                    h = blake2b(raw, digest_size=ID_SIZE).digest()
                    if cid is not None and h != cid:
                        raise IdMismatch(f"tree change bytes hash to {h.hex()[:16]}…, "
                                         f"expected {cid.hex()[:16]}…")
                    if h in changes:
                        continue
                    ch: Change = new(Change)
                    set_dict(ch, "__dict__", {"id": h, "raw": raw, "space_id": space_id,
                                              "tree_id": tid, "prev_ids": (p,)})
                    changes[h] = ch
                    index[h] = len(order)
                    order.append(ch)
                    heads.discard(p)
                    heads.add(h)
                    continue
                prev = _stored_parents(raw, raw.find(prefix, _HEADER_AT[0], end), len(prefix))
            else:
                prev = None
            if prev is not None:  # 2-15 parents
                h = blake2b(raw, digest_size=ID_SIZE).digest()
                if cid is not None and h != cid:
                    raise IdMismatch(f"tree change bytes hash to {h.hex()[:16]}…, expected "
                                     f"{cid.hex()[:16]}…")
                ch = new(Change)
                set_dict(ch, "__dict__", {"id": h, "raw": raw, "space_id": space_id,
                                          "tree_id": tid, "prev_ids": prev})
            else:
                ch = check(raw, expected_id=cid)
                if ch.space_id != space_id or ch.tree_id != tid:
                    tree._structural_check(ch)
                h, prev = ch.id, ch.prev_ids
            for p in prev:
                if p not in changes and not tree._stored_base(ch, p, bases):
                    raise InvalidChange("stored tree is not in topological order")
            if h in changes:
                continue
            changes[h] = ch
            index[h] = len(order)
            order.append(ch)
            heads.difference_update(prev)
            heads.add(h)
        return tree

    def _stored_base(self, ch: Change, parent: bytes, bases: Collection[bytes]) -> bool:
        """Store open met a change whose ``parent`` is not held: fine only for a parent the
        shallow base set already vouches for, or for a recorded base itself."""
        if parent in self._shallow:
            return True
        if ch.id not in bases:
            return False
        self.bases.add(ch.id)
        self._shallow.update(p for p in ch.prev_ids if p not in self._changes)
        self._heads.discard(self.root.id)  # every change descends from the root
        return True

    @staticmethod
    def _check_root_acl(gate: AclGate, root: Change) -> None:
        if not gate.knows_head(root.acl_head):
            raise InvalidChange("root change names an ACL head this replica does not know")
        gate.check_change(root.author, root.acl_head, root.read_key_id, [])

    # --- read side ---------------------------------------------------------------------------
    @property
    def id(self) -> bytes:
        return self.root.id

    @property
    def heads(self) -> tuple[bytes, ...]:
        """Current heads, sorted (so equal trees give equal tuples)."""
        return tuple(sorted(self._heads))

    def heads_hash(self) -> bytes:
        """BLAKE2b-256 over the sorted heads: equal iff two replicas have the same heads."""
        return heads_digest(self._heads)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, change_id: object) -> bool:
        return change_id in self._changes

    def get(self, change_id: bytes) -> Change:
        return self._changes[change_id]

    def changes(self) -> list[Change]:
        """All attached changes in attach order (a topological order, root first)."""
        return list(self._order)

    def changes_from(self, start: int) -> list[Change]:
        """Attached changes from attach position ``start`` on (attach order only grows)."""
        return self._order[start:]

    @property
    def waiting_ids(self) -> list[bytes]:
        return list(self._waiting)

    def replay_order(self) -> list[Change]:
        """Deterministic topological order: among ready changes the smallest id goes first."""
        if self._replay_cache is None:
            children: dict[bytes, list[bytes]] = {}
            pending: dict[bytes, int] = {}
            for ch in self._order:
                pending[ch.id] = len(ch.prev_ids)
                for p in ch.prev_ids:
                    children.setdefault(p, []).append(ch.id)
            ready = [self.root.id]
            for b in self.bases:  # shallow: a base's parents are not held
                pending[b] -= sum(1 for p in self._changes[b].prev_ids if p in self._shallow)
                if pending[b] == 0:
                    ready.append(b)
            heapq.heapify(ready)
            out: list[Change] = []
            while ready:
                cid = heapq.heappop(ready)
                out.append(self._changes[cid])
                for c in children.get(cid, ()):
                    pending[c] -= 1
                    if pending[c] == 0:
                        heapq.heappush(ready, c)
            self._replay_cache = out
        return list(self._replay_cache)

    def changes_for(self, their_heads: Sequence[bytes]) -> list[Change]:
        """Changes a peer with heads ``their_heads`` lacks, in causal order.

        Heads we do not know are ignored (the peer is ahead there; it may get a few changes it
        already has, never miss one). Cost is proportional to the changes walked back from our
        heads to where both histories meet, not to the tree size.
        """
        ours, theirs = 1, 2
        color: dict[bytes, int] = {}
        heap: list[tuple[int, bytes]] = []
        for h in their_heads:
            if h in self._changes and h not in color:
                color[h] = theirs
                heapq.heappush(heap, (-self._index[h], h))
        ours_left = 0
        for h in self._heads:
            if h not in color:
                color[h] = ours
                ours_left += 1
                heapq.heappush(heap, (-self._index[h], h))
        found: list[bytes] = []
        while ours_left and heap:
            _, cid = heapq.heappop(heap)
            c = color[cid]
            if c == ours:
                ours_left -= 1
                found.append(cid)
            for p in self._changes[cid].prev_ids:
                pc = color.get(p)
                if pc is None and p in self._shallow:
                    continue  # before a shallow base: not held, nothing to send
                if pc is None:
                    color[p] = c
                    heapq.heappush(heap, (-self._index[p], p))
                    if c == ours:
                        ours_left += 1
                elif pc == ours and c == theirs:
                    color[p] = theirs
                    ours_left -= 1
        found.sort(key=self._index.__getitem__)
        return [self._changes[c] for c in found]

    def past(self, heads: Sequence[bytes]) -> set[bytes]:
        """Ids of ``heads`` and all their ancestors (KeyError on an unknown head)."""
        seen: set[bytes] = set()
        stack = [self._changes[h].id for h in heads]
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            stack.extend(p for p in self._changes[cid].prev_ids
                         if p not in seen and p not in self._shallow)
        if self.bases and not self.bases.isdisjoint(seen):
            seen.add(self.root.id)  # before a shallow base: every change descends from it
        return seen

    # --- write side --------------------------------------------------------------------------
    def create_change(
        self, author: SigningKey, plaintext: bytes, *, snapshot: bool = False,
        timestamp: int | None = None, persist: Persist | None = None,
    ) -> Change:
        """Sign a new local change on top of the current heads, attach it and return it."""
        acl_head, rk_id = self.gate.write_position(author.public)
        key = self.gate.read_key(rk_id)
        if key is None:
            raise UnknownReadKey("cannot write: this replica holds no current read key")
        ch = build_change(author, key, plaintext, space_id=self.space_id, tree_id=self.id,
                          prev_ids=self.heads, acl_head=acl_head, read_key_id=rk_id,
                          snapshot=snapshot, timestamp=timestamp)
        self._add_parsed([ch], persist)
        return ch

    def add(self, raws: Iterable[bytes], *, persist: Persist | None = None,
            parsed: Mapping[bytes, Change] | None = None) -> AddResult:
        """Verify and add received changes; all-or-nothing for the given changes.

        ``parsed`` maps raw bytes to what :func:`~p2psync.replica.change.parse_change` made of
        them earlier on the same path (the sync layer parses each received change to filter
        a batch): those are not parsed twice. Every signature is verified here regardless.

        Raises DecodeError / BadSignature / WrongTree / InvalidChange / AccessDenied /
        UnknownReadKey (or whatever ``persist`` raises) and then the tree is unchanged.
        """
        new: list[Change] = []
        dup: list[bytes] = []
        seen: set[bytes] = set()
        for raw in raws:
            ch = parsed.get(raw) if parsed is not None else None
            cid = content_id(raw) if ch is None else ch.id
            if (cid in self._changes or cid in self._waiting or cid in seen
                    or cid in self._shallow):
                dup.append(cid)
                continue
            seen.add(cid)
            if ch is None:
                ch = parse_change(raw)
            self._structural_check(ch)
            new.append(ch)
        verify_signatures(new)  # all of them before any attaches: all-or-nothing
        result = self._add_parsed(new, persist)
        result.duplicates = dup
        return result

    def attach_base(self, raw: bytes, *, check: Callable[[Change], None],
                    persist: Persist | None = None,
                    parsed: Mapping[bytes, Change] | None = None) -> AddResult:
        """Make this tree *shallow*: attach a snapshot change whose parents are not held
        (snapshot-first fetch, docs/replica.md "Shallow trees"). Only a tree holding nothing
        but its root may go shallow. The change's id, structure and signature are verified,
        its ACL head must be known and the gate must allow its author to write there (no
        parent ACL heads to compare: none is held); ``check`` is the caller's rule on the
        content the tree cannot read (a key holder checks that the sealed flag says snapshot
        and that the author was not removed: :func:`p2psync.replica.snapshots.check_base`).
        Its parents then count as present: a later change naming one attaches with all its
        own checks. All-or-nothing like :meth:`add` (``persist`` sees ``result.base``)."""
        ch = parsed.get(raw) if parsed is not None else None
        if ch is None:
            ch = parse_change(raw)
        self._structural_check(ch)
        if len(self._order) != 1 or self._waiting:
            raise InvalidChange("only a tree holding nothing but its root may go shallow")
        if all(p in self._changes for p in ch.prev_ids):
            raise InvalidChange("a shallow base must name parents this tree does not hold")
        ch.verify_signature()
        if not self.gate.knows_head(ch.acl_head):
            raise InvalidChange("a shallow base names an ACL head this replica does not know")
        self.gate.check_change(ch.author, ch.acl_head, ch.read_key_id,
                               [self._changes[p].acl_head for p in ch.prev_ids
                                if p in self._changes])
        check(ch)
        undo: list[Callable[[], None]] = []
        shallow = {p for p in ch.prev_ids if p not in self._changes}
        try:
            self.bases.add(ch.id)
            self._shallow.update(shallow)
            self._attach(ch, undo)
            # every change descends from the root, so the root is in the base's past (not a
            # head: a shallow tree's heads equal those of the whole tree it came from)
            if self.root.id in self._heads:
                self._heads.discard(self.root.id)
                undo.append(lambda: self._heads.add(self.root.id))
            result = AddResult(attached=[ch], heads=self.heads, base=ch.id)
            if persist is not None:
                persist(self, result)
        except BaseException:
            for fn in reversed(undo):
                fn()
            self.bases.discard(ch.id)
            self._shallow.difference_update(shallow)
            self._replay_cache = None
            raise
        return result

    @property
    def shallow(self) -> bool:
        """Whether this tree starts from a snapshot (its history before it is not held)."""
        return bool(self.bases)

    def holds_or_vouches(self, change_id: bytes) -> bool:
        """Attached here, or a parent of a shallow base (known, not held)."""
        return change_id in self._changes or change_id in self._shallow

    def recheck_waiting(self, *, persist: Persist | None = None) -> AddResult:
        """Retry changes waiting for ACL heads (call after the ACL learned new records)."""
        return self._add_parsed([], persist, acl_retry=True)

    def _structural_check(self, ch: Change) -> None:
        if ch.space_id != self.space_id:
            raise WrongTree(f"change belongs to space {ch.space_id!r}, not {self.space_id!r}")
        if ch.is_root:
            raise WrongTree("a different root change was offered to this tree")
        if ch.tree_id != self.id:
            raise WrongTree("change belongs to another tree")

    def _add_parsed(
        self, parsed: list[Change], persist: Persist | None, *, acl_retry: bool = False,
    ) -> AddResult:
        undo: list[Callable[[], None]] = []
        result = AddResult()
        mine = {ch.id for ch in parsed}
        try:
            queue: deque[Change] = deque(parsed)
            if acl_retry:
                for head in [h for h in self._acl_blocked if self.gate.knows_head(h)]:
                    queue.extend(self._unblock(self._acl_blocked, head, undo))
            while queue:
                ch = queue.popleft()
                missing = next((p for p in ch.prev_ids if p not in self._changes
                                and p not in self._shallow), None)
                if missing is not None or not self.gate.knows_head(ch.acl_head):
                    self._park(ch, missing, undo)
                    continue
                # a parent before a shallow base is not held: its ACL head is not compared
                parent_acl = [self._changes[p].acl_head for p in ch.prev_ids
                              if p in self._changes]
                try:
                    self.gate.check_change(ch.author, ch.acl_head, ch.read_key_id, parent_acl)
                except ReplicaError as exc:
                    if ch.id in mine:
                        raise
                    result.rejected.append((ch.id, exc))
                    continue
                self._attach(ch, undo)
                result.attached.append(ch)
                queue.extend(self._unblock(self._blocked_on, ch.id, undo))
            result.waiting = [cid for cid in mine if cid in self._waiting]
            result.heads = self.heads
            if persist is not None and result.attached:
                persist(self, result)
        except BaseException:
            for fn in reversed(undo):
                fn()
            self._replay_cache = None
            raise
        if len(self._waiting) > self.max_waiting:
            result.evicted = self._trim_waiting()
            gone = set(result.evicted)
            result.waiting = [cid for cid in result.waiting if cid not in gone]
        return result

    def _trim_waiting(self) -> list[bytes]:
        """Drop the oldest waiting changes beyond :attr:`max_waiting`, index entries too."""
        evicted: list[bytes] = []
        while len(self._waiting) > self.max_waiting:
            cid, ch = next(iter(self._waiting.items()))
            del self._waiting[cid]
            evicted.append(cid)
            # Parents before the first missing one were present at park time and stay so.
            missing = next((p for p in ch.prev_ids if p not in self._changes
                            and p not in self._shallow), None)
            index, key = ((self._blocked_on, missing) if missing is not None
                          else (self._acl_blocked, ch.acl_head))
            ids = index.get(key)
            if ids is not None:
                ids[:] = [i for i in ids if i != cid]
                if not ids:
                    del index[key]
        return evicted

    def _park(self, ch: Change, missing: bytes | None, undo: list[Callable[[], None]]) -> None:
        index, key = (self._blocked_on, missing) if missing is not None else (
            self._acl_blocked, ch.acl_head)
        if ch.id not in self._waiting:
            self._waiting[ch.id] = ch
            undo.append(lambda: self._forget_waiting(ch.id))
        lst = index.setdefault(key, [])
        lst.append(ch.id)
        undo.append(lambda: self._drop_last(lst))

    def _forget_waiting(self, cid: bytes) -> None:
        self._waiting.pop(cid, None)

    @staticmethod
    def _drop_last(lst: list[bytes]) -> None:
        lst.pop()

    def _unblock(
        self, index: dict[bytes, list[bytes]], key: bytes, undo: list[Callable[[], None]],
    ) -> list[Change]:
        ids = index.pop(key, None)
        if not ids:
            return []
        undo.append(lambda: index.__setitem__(key, ids))
        out = []
        for cid in ids:
            ch = self._waiting.pop(cid)
            undo.append(lambda c=ch: self._waiting.__setitem__(c.id, c))  # type: ignore[misc]
            out.append(ch)
        return out

    def _attach(self, ch: Change, undo: list[Callable[[], None]] | None) -> None:
        removed = [p for p in ch.prev_ids if p in self._heads]
        self._changes[ch.id] = ch
        self._index[ch.id] = len(self._order)
        self._order.append(ch)
        self._heads.difference_update(removed)
        self._heads.add(ch.id)
        self._replay_cache = None
        if undo is None:
            return

        def revert() -> None:
            del self._changes[ch.id]
            del self._index[ch.id]
            self._order.pop()
            self._heads.discard(ch.id)
            self._heads.update(removed)

        undo.append(revert)


def heads_digest(heads: Iterable[bytes]) -> bytes:
    """The :meth:`ObjectTree.heads_hash` of an arbitrary head set (for comparing with a peer)."""
    return hashlib.blake2b(b"".join(sorted(heads)), digest_size=32).digest()
