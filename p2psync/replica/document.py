"""An Automerge document over an object tree: local edits, coalescing, remote apply, snapshots.

The core is sans-IO: :meth:`Document.edit` records Automerge changes, :attr:`Document.due_at`
says when the coalescing window closes, :meth:`Document.flush` turns everything pending into ONE
signed tree change. :class:`AsyncFlusher` is the thin asyncio shell that flushes on time.

Payload plaintext (inside the encrypted tree-change payload)::

    pack([1, automerge_heads_after, [automerge change bytes, ...]])   # normal change
    pack([1, automerge_heads_after, [automerge save() bytes]])        # snapshot change

``automerge_heads_after`` are the Automerge heads of the author's document right after the
change, i.e. of its whole causal past; that is how a past *tree* state maps to Automerge heads.

Counters: Automerge counters panic in this automerge build, so a counter is a map
``{"$counter": true, <actor hex>: int, ...}`` where each actor only writes its own entry; its
value is the sum. Create it once (:meth:`Editor.make_counter`) before sharing: two concurrent
creations of the same key conflict like any map put and one of them wins.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from automerge import core

from p2psync.codec import Reader, pack, unpack
from p2psync.crypto.keys import SigningKey
from p2psync.errors import (
    ChangeTooLarge,
    DecodeError,
    DecryptionFailed,
    DocumentError,
    P2PSyncError,
    UnknownReadKey,
    UnsupportedContent,
)
from p2psync.replica import automerge_adapter as am
from p2psync.replica.change import MAX_PAYLOAD_SIZE, SEAL_OVERHEAD, Change
from p2psync.replica.snapshots import SnapshotPolicy
from p2psync.replica.tree import AddResult, ObjectTree, Persist

log = logging.getLogger("p2psync.document")

ObjId = bytes
ROOT: ObjId = core.ROOT
COUNTER_MARK = "$counter"
PAYLOAD_VERSION = 1
DEFAULT_WINDOW = 0.050


@dataclass(frozen=True)
class Quarantined:
    """A tree change whose content is left out of the document, and why (issue 12.5).

    The change stays in the tree (it is signed and allowed; peers hold it too), but its payload
    did not decrypt, did not decode, holds content this Automerge build cannot render safely
    (:func:`~p2psync.replica.automerge_adapter.screen`), or made Automerge fail when applied.
    The same happens on every replica, so documents still converge.
    """

    change_id: bytes
    author: bytes
    reason: str


@dataclass(frozen=True)
class HistoryEntry:
    """One tree change as ``doc history`` shows it: who, when (claimed), and what became of
    its content."""

    change_id: bytes
    author: bytes
    #: claimed by the author; sealed with the content since change format 2, so None when
    #: this replica cannot decrypt the change
    timestamp: int | None
    parents: tuple[bytes, ...]
    snapshot: bool | None  #: None when sealed and not decryptable here
    #: why its content is not in the document (None: applied)
    quarantined: str | None
    #: id of a removal (or leave) of its author at or after the ACL head it names: a
    #: possibly back-dated edit by a removed member (issue 20.5); None when not flagged
    removed_after: bytes | None = None


@dataclass(frozen=True)
class Flagged:
    """A change whose author was removed at or after the ACL head it names (issue 20.5)."""

    change_id: bytes
    author: bytes
    removal_id: bytes  #: the ACL record that removed the author (or its leave)


@dataclass(frozen=True)
class DocumentStatus:
    """What ``status`` reports about a document."""

    changes: int
    quarantined: tuple[Quarantined, ...]
    flagged: tuple[Flagged, ...] = ()


@dataclass(frozen=True)
class Payload:
    """Decrypted content of a tree change."""

    am_heads: tuple[bytes, ...]
    items: tuple[bytes, ...]  #: Automerge change bytes, or one save() for a snapshot
    snapshot: bool = False  #: from the change's sealed part (format 2) or clear header (1)


def encode_payload(am_heads: Sequence[bytes], items: Sequence[bytes]) -> bytes:
    return pack([PAYLOAD_VERSION, sorted(am_heads), list(items)])


def decode_payload(plain: bytes) -> Payload:
    """Strictly decode a decrypted payload; :class:`DocumentError` if malformed."""
    try:
        r = Reader(unpack(plain, what="change payload"), "change payload")
        r.version([PAYLOAD_VERSION])
        heads = r.blob_list("am_heads", size=32, max_items=4096)
        items = r.blob_list("items", max_items=1_000_000)
        r.end()
    except DecodeError as exc:
        raise DocumentError(f"malformed change payload: {exc}") from exc
    return Payload(tuple(heads), tuple(items))


def actor_for(author: bytes, device: bytes) -> bytes:
    """Stable 16-byte Automerge actor for one author on one device (two actors must differ)."""
    return hashlib.blake2b(author + device, digest_size=16, person=b"p2psync-actor").digest()


def read_automerge(data: bytes) -> list[bytes]:
    """The changes of a ``.automerge`` file in causal order, each screened: content this build
    cannot render (native counters, marks) is :class:`UnsupportedContent`, a damaged file a
    :class:`DocumentError` — checked before anything is created. The changes keep their own
    actors."""
    loaded = am.load(data, b"\x00" * 16)
    changes = am.changes_since(loaded, [])
    for c in changes:
        am.screen(c)
    return changes


class Text(str):
    """Marks a string to be stored as editable Automerge text (one code point per element)."""


#: Scalar puts held back per document before they are written into Automerge (distinct keys)
HOLD_MAX_KEYS = 64
#: A string or bytes value longer than this is written at once, never held back
HOLD_MAX_VALUE = 512

Scalar = tuple[Any, Any]  #: (core.ScalarType, value)


class _Held:
    """Scalar map puts held back during one edit (issue 13, one hot key; docs/replica.md).

    ``committed`` is the document's buffer (puts of earlier edits, read-only here); ``staged``
    this edit's. :meth:`release` writes both into the open transaction, in order: any
    operation other than a scalar map put calls it first, so the Automerge ops still come out
    in the order that matters (only the last value of an ``(object, key)`` is skipped over).
    The document takes ``staged`` (and drops ``committed`` if released) only once the
    transaction has committed, so a rolled-back edit leaves its buffer as it was."""

    __slots__ = ("_tx", "committed", "released", "staged", "wrote")

    def __init__(self, tx: core.Transaction, committed: dict[tuple[ObjId, str], Scalar]) -> None:
        self._tx = tx
        self.committed = committed
        self.staged: dict[tuple[ObjId, str], Scalar] = {}
        self.released = False
        self.wrote = False  #: something was written into the transaction

    def lookup(self, obj: ObjId, key: str | int) -> Scalar | None:
        """The held value of ``obj[key]`` (None: not held)."""
        if not isinstance(key, str):
            return None
        got = self.staged.get((obj, key))
        if got is None and not self.released:
            got = self.committed.get((obj, key))
        return got

    def __bool__(self) -> bool:
        return bool(self.staged) or (bool(self.committed) and not self.released)

    def hold(self, obj: ObjId, key: str, scalar: Scalar) -> bool:
        """Hold ``obj[key] = scalar`` back if it may be (a small scalar in a map)."""
        v = scalar[1]
        if isinstance(v, (str, bytes)) and len(v) > HOLD_MAX_VALUE:
            return False
        if obj != ROOT and self._tx.object_type(obj) != core.ObjType.Map:
            return False  # a list or text: Automerge says what is wrong, at once
        if (obj, key) not in self.staged and len(self.staged) + (
                0 if self.released else len(self.committed)) >= HOLD_MAX_KEYS:
            self.release()
        self.staged[(obj, key)] = scalar
        return True

    def release(self) -> None:
        """Write every held put into the transaction, in order."""
        self.wrote = True
        if not self.released:
            self.released = True
            for (obj, key), scalar in self.committed.items():
                if (obj, key) not in self.staged:
                    self._tx.put(obj, key, *scalar)
        for (obj, key), scalar in self.staged.items():
            self._tx.put(obj, key, *scalar)
        self.staged = {}


class Editor:
    """Typed edits inside one Automerge transaction (see :meth:`Document.edit`).

    With ``held`` (a document with a coalescing window), scalar puts to map keys are held
    back and only the last value of each ``(object, key)`` reaches Automerge; reads here see
    them (read-your-writes), every other operation writes them first."""

    def __init__(self, tx: core.Transaction, actor_key: str,
                 held: _Held | None = None) -> None:
        self._tx = tx
        self._actor_key = actor_key
        self._held = held
        self.touched = False  #: an operation other than a held put was made (or a length read)

    def _release(self) -> None:
        self.touched = True
        if self._held is not None and self._held:
            self._held.release()

    def put(self, obj: ObjId, key: str | int, value: Any) -> ObjId | None:
        """Set ``obj[key] = value``; dicts/lists/:class:`Text` create nested objects (returned)."""
        made = _new_object(value)
        if made is None:
            scalar = _scalar(value)
            if self._held is not None and isinstance(key, str) and self._held.hold(
                    obj, key, scalar):
                return None
        self._release()
        if made is not None:
            child: ObjId = self._tx.put_object(obj, key, made)
            self._fill(child, value)
            return child
        self._tx.put(obj, key, *scalar)
        return None

    def insert(self, obj: ObjId, index: int, value: Any) -> ObjId | None:
        """Insert ``value`` into list ``obj`` at ``index``."""
        self._release()
        made = _new_object(value)
        if made is not None:
            child: ObjId = self._tx.insert_object(obj, index, made)
            self._fill(child, value)
            return child
        self._tx.insert(obj, index, *_scalar(value))
        return None

    def delete(self, obj: ObjId, key: str | int) -> None:
        self._release()
        self._tx.delete(obj, key)

    def splice_text(self, obj: ObjId, pos: int, delete: int, text: str) -> None:
        """Delete ``delete`` code points at ``pos`` then insert ``text`` one code point per op."""
        self._release()
        for _ in range(delete):
            self._tx.delete(obj, pos)
        for i, ch in enumerate(text):
            self._tx.insert(obj, pos + i, core.ScalarType.Str, ch)

    def make_counter(self, obj: ObjId, key: str | int, start: int = 0) -> ObjId:
        """Create a counter (see module doc) at ``obj[key]`` with our share set to ``start``."""
        self._release()
        c: ObjId = self._tx.put_object(obj, key, core.ObjType.Map)
        self._tx.put(c, COUNTER_MARK, core.ScalarType.Boolean, True)
        if start:
            self._tx.put(c, self._actor_key, core.ScalarType.Int, start)
        return c

    def increment(self, obj: ObjId, key: str | int, delta: int = 1) -> None:
        """Add ``delta`` to the counter at ``obj[key]`` by bumping only our own entry."""
        self._release()
        got = self._tx.get(obj, key)
        if got is None or got[0] != core.ObjType.Map or self._tx.get(got[1], COUNTER_MARK) is None:
            raise DocumentError(f"{key!r} is not a counter (create it with make_counter)")
        cid = got[1]
        mine = self._tx.get(cid, self._actor_key)
        current = 0
        if mine is not None and not isinstance(mine[0], core.ObjType):
            v = mine[0][1]
            if isinstance(v, int) and not isinstance(v, bool):
                current = v
        self._tx.put(cid, self._actor_key, core.ScalarType.Int, current + delta)

    def get(self, obj: ObjId, key: str | int) -> Any:
        """Read inside the transaction (plain values; objects come back as their id)."""
        held = self._held.lookup(obj, key) if self._held is not None else None
        if held is not None:
            return _plain(held)
        got = self._tx.get(obj, key)
        if got is None:
            return None
        if isinstance(got[0], core.ObjType):
            return got[1]
        return _plain(got[0])

    def length(self, obj: ObjId) -> int:
        self._release()
        return int(self._tx.length(obj))

    def node(self, obj: ObjId, key: str | int) -> tuple[str, Any]:
        """What is at ``obj[key]`` inside the transaction: ``("map" | "list" | "text" |
        "counter", object id)``, ``("scalar", plain value)`` or ``("missing", None)`` (for
        :mod:`p2psync.replica.edits`, which checks every edit before making it)."""
        held = self._held.lookup(obj, key) if self._held is not None else None
        if held is not None:
            return "scalar", _plain(held)
        got = self._tx.get(obj, key)
        if got is None:
            return "missing", None
        if not isinstance(got[0], core.ObjType):
            return "scalar", _plain(got[0])
        if got[0] == core.ObjType.Text:
            return "text", got[1]
        if got[0] == core.ObjType.List:
            return "list", got[1]
        if self._tx.get(got[1], COUNTER_MARK) is not None:
            return "counter", got[1]
        return "map", got[1]

    def _fill(self, child: ObjId, value: Any) -> None:
        if isinstance(value, Text):
            self.splice_text(child, 0, 0, value)
        elif isinstance(value, dict):
            for k, v in value.items():
                self.put(child, k, v)
        else:
            for i, v in enumerate(value):
                self.insert(child, i, v)


def _new_object(value: Any) -> Any:
    if isinstance(value, Text):
        return core.ObjType.Text
    if isinstance(value, dict):
        return core.ObjType.Map
    if isinstance(value, (list, tuple)):
        return core.ObjType.List
    return None


def _scalar(value: Any) -> tuple[Any, Any]:
    if value is None:
        return core.ScalarType.Null, None
    if isinstance(value, bool):
        return core.ScalarType.Boolean, value
    if isinstance(value, int):
        return core.ScalarType.Int, value
    if isinstance(value, float):
        return core.ScalarType.F64, value
    if isinstance(value, str):
        return core.ScalarType.Str, value
    if isinstance(value, (bytes, bytearray)):
        return core.ScalarType.Bytes, bytes(value)
    if isinstance(value, _dt.datetime):
        return core.ScalarType.Timestamp, value
    raise UnsupportedContent(f"cannot store a {type(value).__name__} in a document (counters: "
                             "Editor.make_counter / Editor.increment)")


def _plain(scalar: tuple[Any, Any]) -> Any:
    kind, v = scalar
    if kind == core.ScalarType.Bytes:
        return bytes(v)
    return v


def _json_scalar(scalar: tuple[Any, Any]) -> Any:
    kind, v = scalar
    if kind == core.ScalarType.Bytes:
        return {"$bytes": base64.b64encode(bytes(v)).decode()}
    if kind == core.ScalarType.Timestamp:
        return {"$timestamp": v.isoformat()}
    return v


@dataclass
class _Pending:
    items: list[bytes] = field(default_factory=list)
    since: float | None = None
    #: Automerge hash and dependencies of each item (to name the heads after part of them)
    links: list[tuple[bytes, tuple[bytes, ...]]] = field(default_factory=list)


#: Plaintext one tree change may carry: the payload cap less the AEAD nonce and tag (40), the
#: sealed wrapper of change format 2 (time and snapshot flag, :data:`SEAL_OVERHEAD`) and slack.
PAYLOAD_ROOM = MAX_PAYLOAD_SIZE - 64
assert PAYLOAD_ROOM + SEAL_OVERHEAD + 40 <= MAX_PAYLOAD_SIZE


def _payload_size(heads: Sequence[bytes], items: Sequence[bytes]) -> int:
    return len(encode_payload(heads, items))


def _split(items: Sequence[bytes], heads: Sequence[bytes]) -> list[tuple[int, int]]:
    """Cut ``items`` into consecutive runs whose payload (with ``heads``) fits one change."""
    runs: list[tuple[int, int]] = []
    start, size = 0, _payload_size(heads, [])
    for i, item in enumerate(items):
        extra = len(item) + 9  # the item's bytes and its msgpack bin header, at most
        if i > start and size + extra > PAYLOAD_ROOM:
            runs.append((start, i))
            start, size = i, _payload_size(heads, [])
        size += extra
    runs.append((start, len(items)))
    return runs


def _heads_without(final: Sequence[bytes],
                   later: Sequence[tuple[bytes, tuple[bytes, ...]]]) -> list[bytes]:
    """The Automerge heads before the ``later`` changes (hash, deps) were made: drop them from
    ``final`` and add what they depended on (an ancestor among those names nothing extra)."""
    gone = {h for h, _ in later}
    out = {h for h in final if h not in gone}
    out.update(d for _, deps in later for d in deps if d not in gone)
    return sorted(out)


class Document:
    """One Automerge document over one object tree, written by ``author`` on ``device``.

    The Automerge document is materialised lazily (first read or edit); until then receiving
    changes only verifies and stores them. ``persist`` is the store hook every new tree change
    goes through (see :meth:`p2psync.replica.store.Store.persister`).
    """

    def __init__(
        self, tree: ObjectTree, author: SigningKey, device: bytes, *,
        window: float = DEFAULT_WINDOW, persist: Persist | None = None,
        use_snapshots: bool = True,
    ) -> None:
        self.tree = tree
        self.author = author
        self.actor = actor_for(author.public, device)
        self.window = window
        self.persist = persist
        self.use_snapshots = use_snapshots
        self._doc: core.Document | None = None
        self._pending = _Pending()
        #: scalar map puts held back, last value per (object, key), in first-put order
        self._puts: dict[tuple[ObjId, str], Scalar] = {}
        self._am_heads: dict[bytes, tuple[bytes, ...]] = {}
        #: change id -> (claimed time, snapshot flag) of changes decrypted here: since change
        #: format 2 both are sealed, so only a key holder knows them (history, snapshot lookup)
        self._claims: dict[bytes, tuple[int, bool]] = {}
        #: tree changes whose content could not be applied (ids; see :attr:`quarantined`)
        self.skipped: list[bytes] = []
        #: change id -> why its content is left out of the document (issue 12.5)
        self.quarantined: dict[bytes, Quarantined] = {}
        self._seen: set[bytes] = set()  #: tree changes whose content the Automerge doc holds
        self._cursor = 0  #: tree attach positions below this were considered for the doc
        #: id of the snapshot change the document was materialised from (None: full replay)
        self.loaded_snapshot: bytes | None = None
        #: when a local flush is followed by a snapshot (replica/snapshots.py); None: never
        self.snapshot_policy: SnapshotPolicy | None = SnapshotPolicy()

    # --- materialisation --------------------------------------------------------------------
    @property
    def materialized(self) -> bool:
        return self._doc is not None

    def _payload(self, ch: Change) -> Payload:
        key = self.tree.gate.read_key(ch.read_key_id)
        if key is None:
            raise UnknownReadKey("this replica does not hold the read key of the change")
        try:
            sealed = ch.open(key)
        except DecodeError as exc:
            raise DocumentError(f"malformed sealed part: {exc}") from None
        self._claims[ch.id] = (sealed.timestamp, sealed.snapshot)
        p = decode_payload(sealed.plaintext)
        if sealed.snapshot:
            p = Payload(p.am_heads, p.items, snapshot=True)
        return p

    def claims(self, ch: Change) -> tuple[int | None, bool | None]:
        """``(claimed time in ms, snapshot flag)`` of a change of this tree: clear in format 1,
        sealed in format 2 (decrypted here on demand; ``(None, None)`` when this replica cannot
        decrypt it)."""
        if ch.timestamp is not None:
            return ch.timestamp, ch.snapshot
        if ch.id not in self._claims:
            key = self.tree.gate.read_key(ch.read_key_id)
            if key is None:
                return None, None
            try:
                sealed = ch.open(key)
            except (DecryptionFailed, DecodeError):
                return None, None
            self._claims[ch.id] = (sealed.timestamp, sealed.snapshot)
        return self._claims[ch.id]

    def _payloads(
        self, changes: Sequence[Change],
        opened: dict[bytes, Payload | P2PSyncError] | None = None,
    ) -> list[tuple[Change, Payload]]:
        """Decrypt payloads for materialisation; one that fails is skipped and reported.
        ``opened`` holds payloads (or their failures) already decrypted by the snapshot lookup.

        The sync path stores any change whose signature and ACL check pass without decrypting
        it (so members and backups hold identical trees); content that does not decrypt or
        decode is left out of the document and listed in :attr:`skipped`.
        """
        out: list[tuple[Change, Payload]] = []
        for c in changes:
            done = opened.get(c.id) if opened is not None else None
            try:
                if isinstance(done, P2PSyncError):
                    raise done
                out.append((c, done if done is not None else self._payload(c)))
            except (DecryptionFailed, DocumentError, UnknownReadKey) as exc:
                self._seen.add(c.id)
                self._quarantine(c, f"{type(exc).__name__}: {exc}")
        return out

    def _latest_snapshot(
        self, opened: dict[bytes, Payload | P2PSyncError],
    ) -> tuple[Change, Payload] | None:
        """The most recently attached change whose (sealed) flag says snapshot, with its
        payload. Walks back in attach order, decrypting as it goes (into ``opened``): every
        change attached after the snapshot is outside its past, so it is decrypted for the
        replay anyway — the lookup costs no extra decryption."""
        for c in reversed(self.tree.changes()):
            try:
                p = self._payload(c)
            except (DecryptionFailed, DocumentError, UnknownReadKey) as exc:
                opened[c.id] = exc
                continue
            opened[c.id] = p
            if p.snapshot:
                return c, p
        return None

    def _quarantine(self, ch: Change, reason: str) -> None:
        if ch.id not in self.quarantined:
            self.quarantined[ch.id] = Quarantined(ch.id, ch.author, reason)
            self.skipped.append(ch.id)

    def _ensure(self) -> core.Document:
        if self._doc is not None:
            if self._cursor != len(self.tree):  # changes reached the tree by the sync path
                fresh = self.tree.changes_from(self._cursor)
                self._cursor = len(self.tree)
                missing = [c for c in fresh if c.id not in self._seen]
                if missing and self._puts:
                    self._drain(self._doc)  # our held puts come before what we had not seen
                self._apply(self._doc, self._payloads(missing))
            return self._doc
        order = self.tree.replay_order()
        opened: dict[bytes, Payload | P2PSyncError] = {}
        found = self._latest_snapshot(opened) if self.use_snapshots else None
        doc: core.Document | None = None
        if found is not None:
            snap, p = found
            try:
                doc = am.load(p.items[0] if p.items else b"", self.actor)
                with am.contained("checking a snapshot"):  # a panic here: not usable
                    self._render(doc, ROOT, core.ObjType.Map, None)
            except (DecryptionFailed, DocumentError, UnknownReadKey) as exc:
                # unreadable (or unrenderable) snapshot: fall back to a full replay
                self._quarantine(snap, f"snapshot not used: {type(exc).__name__}: {exc}")
                doc = None
            if doc is not None:
                self.loaded_snapshot = snap.id
                covered = self.tree.past([snap.id])
                self._seen.update(covered)
                order = [c for c in order if c.id not in covered]
        if doc is None:
            doc = am.new_document(self.actor)
        self._apply(doc, self._payloads(order, opened))
        self._cursor = len(self.tree)
        self._doc = doc
        return doc

    def _apply(self, doc: core.Document, items: list[tuple[Change, Payload]]) -> None:
        """Apply payloads in the given (causal) order; one message, per-change on failure.

        Each change's Automerge bytes are screened first (:func:`am.screen`): one holding
        content this build cannot render (a counter panics on every read) is quarantined and
        never reaches the document, which stays readable; later changes still apply.
        """
        self._seen.update(c.id for c, _ in items)
        normal: list[tuple[Change, Payload]] = []
        for c, p in items:
            if p.snapshot:
                continue
            try:
                for b in p.items:
                    am.screen(b)
            except UnsupportedContent as exc:
                self._quarantine(c, str(exc))
                continue
            normal.append((c, p))
        try:
            am.apply_changes(doc, [b for _, p in normal for b in p.items])
        except DocumentError:
            for c, p in normal:
                try:
                    am.apply_changes(doc, p.items)
                except DocumentError as exc:
                    self._quarantine(c, f"{type(exc).__name__}: {exc}")

    def _reset(self) -> None:
        """Forget the materialised document (it is rebuilt from the tree on next use)."""
        self._doc = None
        self._seen.clear()
        self._cursor = 0
        self.loaded_snapshot = None

    # --- local edits ------------------------------------------------------------------------
    #: hold scalar map puts back until the window's change is made (issue 13, one hot key;
    #: docs/replica.md "Coalesced puts"); off: every edit is its own Automerge change
    coalesce_puts: bool = True

    @contextmanager
    def edit(self, now: float | None = None) -> Iterator[Editor]:
        """One Automerge transaction; an exception rolls it back. Flushes at once if window=0.

        With a window, scalar puts to map keys are held back (:class:`_Held`) and written,
        last value per key, when the window's change is made or anything else touches the
        document first; reads see them at once."""
        doc = self._ensure()
        held: _Held | None = None
        with am.contained("editing"), doc.transaction() as tx:
            if self.coalesce_puts and self.window > 0:
                held = _Held(tx, self._puts)
            ed = Editor(tx, self.actor.hex(), held)
            yield ed
            before = [bytes(h) for h in tx.get_heads()]  # still the heads before this edit
        kept = self._puts
        made = True  #: the transaction may have made an Automerge change
        if held is not None:
            self._puts = dict(held.staged) if held.released else {**kept, **held.staged}
            made = ed.touched or held.wrote  # only held puts: no Automerge change
        try:
            if made:
                self._record(doc, before, now)
        except (UnsupportedContent, ChangeTooLarge):
            self._puts = kept
            raise
        if self._puts and self._pending.since is None:
            self._pending.since = time.monotonic() if now is None else now
        if self.window <= 0:
            self.flush()

    def _record(self, doc: core.Document, before: Sequence[bytes],
                now: float | None = None) -> None:
        """Take the Automerge changes made since ``before`` as pending (screened, each small
        enough for one tree change; otherwise the document is rebuilt without them)."""
        links = am.change_links(doc, before)
        new = [raw for raw, _, _ in links]
        try:
            for b in new:
                am.screen(b)
        except UnsupportedContent:
            self._reset()  # never sign it: rebuild from the tree without this edit
            raise
        heads = am.heads(doc)
        for b in new:
            if _payload_size(heads, [b]) > PAYLOAD_ROOM:
                self._reset()  # never sign it: rebuild without this edit, keep earlier ones
                if self._pending.items:
                    am.apply_changes(self._ensure(), self._pending.items)
                raise ChangeTooLarge(
                    f"one edit makes a {len(b)}-byte Automerge change; a change may carry at "
                    f"most {PAYLOAD_ROOM} bytes (what sync sends): big blobs belong in files")
        if new:
            self._pending.items.extend(new)
            self._pending.links.extend((h, deps) for _, h, deps in links)
            if self._pending.since is None:
                self._pending.since = time.monotonic() if now is None else now

    def _drain(self, doc: core.Document | None = None) -> None:
        """Write the held-back puts into Automerge as one pending change (before a flush, a
        read that needs the Automerge document, or applying changes from elsewhere)."""
        if not self._puts:
            return
        if doc is None:
            doc = self._ensure()  # may drain first itself (changes arrived by the sync path)
            if not self._puts:
                return
        puts, self._puts = self._puts, {}
        before = am.heads(doc)
        try:
            with am.contained("editing"), doc.transaction() as tx:
                for (obj, key), scalar in puts.items():
                    tx.put(obj, key, *scalar)
            self._record(doc, before)
        except BaseException:
            self._puts = puts
            raise

    @property
    def due_at(self) -> float | None:
        """When the coalescing window of the pending edits closes (None: nothing pending)."""
        return None if self._pending.since is None else self._pending.since + self.window

    @property
    def pending(self) -> int:
        """Local edits not yet in a tree change: Automerge changes plus held-back puts."""
        return len(self._pending.items) + len(self._puts)

    def poll(self, now: float) -> Change | None:
        """Flush if the window has closed at ``now``."""
        due = self.due_at
        return self.flush() if due is not None and now >= due else None

    def flush(self) -> Change | None:
        """Put all pending Automerge changes into one signed tree change — or several, each on
        the previous, when together they exceed what one change (and so one sync message) may
        carry (``PAYLOAD_ROOM``). Returns the last; pending is kept for the part not signed
        if signing fails."""
        self._drain()
        if not self._pending.items:
            return None
        final = am.heads(self._ensure())
        pending = self._pending
        runs = _split(pending.items, final)
        last: Change | None = None
        for n, (start, end) in enumerate(runs):
            heads = final if n == len(runs) - 1 else _heads_without(
                final, pending.links[end:])
            ch = self.tree.create_change(
                self.author, encode_payload(heads, pending.items[start:end]),
                persist=self.persist)
            self._am_heads[ch.id] = tuple(sorted(heads))
            self._seen.add(ch.id)
            last = ch
            self._pending = _Pending(pending.items[end:], pending.since, pending.links[end:])
        self._pending = _Pending()
        if self.snapshot_policy is not None:
            self.snapshot_policy.after_flush(self)
        return last

    def save_automerge(self) -> bytes:
        """The document as a standard ``.automerge`` file (Automerge ``save()``): what other
        Automerge implementations load. Quarantined content is not in it; counters are the
        per-actor maps described in docs/replica.md."""
        self._drain()
        doc = self._ensure()
        return am.save(doc)

    def import_automerge(self, data: bytes) -> Change | None:
        """Take every change of a ``.automerge`` file (saved by any Automerge implementation)
        into this document as ONE signed tree change (see :func:`read_automerge`)."""
        changes = read_automerge(data)
        self._drain()
        doc = self._ensure()
        before = am.heads(doc)
        am.apply_changes(doc, changes)
        new = am.changes_since(doc, before)
        if new:
            self._pending.items.extend(new)
            if self._pending.since is None:
                self._pending.since = time.monotonic()
        return self.flush()

    def snapshot(self) -> Change | None:
        """Flush, then emit a snapshot change (encrypted Automerge ``save()``); None (logged)
        when the saved document is bigger than one change may carry — the changes still hold
        everything, a snapshot only speeds loading."""
        self.flush()
        doc = self._ensure()
        heads = am.heads(doc)
        saved = am.save(doc)
        if _payload_size(heads, [saved]) > PAYLOAD_ROOM:
            log.info("snapshot of %s skipped: %d bytes exceed one change (%d)",
                     self.tree.id.hex()[:12], len(saved), PAYLOAD_ROOM)
            return None
        ch = self.tree.create_change(
            self.author, encode_payload(heads, [saved]), snapshot=True,
            persist=self.persist)
        self._am_heads[ch.id] = tuple(sorted(heads))
        self._seen.add(ch.id)
        if self.snapshot_policy is not None:
            self.snapshot_policy.snapshotted(self.tree, ch)
        return ch

    # --- remote changes ---------------------------------------------------------------------
    def receive(self, raws: Sequence[bytes]) -> AddResult:
        """Add changes from a peer; they are decrypted before being stored (a payload that
        does not decrypt rejects the batch: DecryptionFailed, nothing stored) and applied
        incrementally if the document is materialised."""
        decoded: list[tuple[Change, Payload]] = []

        def hook(tree: ObjectTree, result: AddResult) -> None:
            decoded.clear()
            decoded.extend((c, self._payload(c)) for c in result.attached)
            if self.persist is not None:
                self.persist(tree, result)

        result = self.tree.add(raws, persist=hook)
        if self._doc is not None and decoded:
            self._drain(self._doc)
            self._apply(self._doc, decoded)
        return result

    def recheck_waiting(self) -> AddResult:
        """After the ACL learned records: attach changes that waited for them."""
        decoded: list[tuple[Change, Payload]] = []

        def hook(tree: ObjectTree, result: AddResult) -> None:
            decoded.extend((c, self._payload(c)) for c in result.attached)
            if self.persist is not None:
                self.persist(tree, result)

        result = self.tree.recheck_waiting(persist=hook)
        if self._doc is not None and decoded:
            self._drain(self._doc)
            self._apply(self._doc, decoded)
        return result

    # --- reading ----------------------------------------------------------------------------
    def _am_heads_at(self, tree_heads: Sequence[bytes] | None) -> list[bytes] | None:
        if tree_heads is None:
            return None
        out: set[bytes] = set()
        for h in tree_heads:
            if h not in self.tree:
                raise DocumentError(f"unknown tree head {h.hex()[:16]}…")
            amh = self._am_heads.get(h)
            if amh is None:  # cached only for heads asked about (issue 13: no per-change cache)
                amh = self._am_heads[h] = self._payload(self.tree.get(h)).am_heads
            out.update(amh)
        return sorted(out)

    def obj(self, path: Sequence[str | int], *, heads: Sequence[bytes] | None = None) -> ObjId:
        """The object id at ``path`` from the root (DocumentError if missing or not an object)."""
        with am.contained("reading"):
            return self._obj(path, heads)

    def _obj(self, path: Sequence[str | int], heads: Sequence[bytes] | None) -> ObjId:
        if heads is None:
            self._drain()
        doc = self._ensure()
        amh = self._am_heads_at(heads)
        cur = ROOT
        for key in path:
            got = doc.get(cur, key) if amh is None else doc.get(cur, key, heads=amh)
            if got is None or not isinstance(got[0], core.ObjType):
                raise DocumentError(f"no object at {list(path)!r}")
            cur = got[1]
        return cur

    def get(self, path: Sequence[str | int], *, heads: Sequence[bytes] | None = None) -> Any:
        """JSON value at ``path`` (None if absent), at current or past tree ``heads``.
        A panic inside Automerge comes out as :class:`AutomergePanic` (a DocumentError)."""
        with am.contained("reading"):
            return self._get(path, heads)

    def _get(self, path: Sequence[str | int], heads: Sequence[bytes] | None) -> Any:
        if heads is None and self._puts:
            held = self._held_at(path)
            if held is not None:
                return _json_scalar(held)
            self._drain()
        doc = self._ensure()
        amh = self._am_heads_at(heads)
        if not path:
            return self._render(doc, ROOT, core.ObjType.Map, amh)
        parent = self._obj(path[:-1], heads)
        got = (doc.get(parent, path[-1]) if amh is None
               else doc.get(parent, path[-1], heads=amh))
        return None if got is None else self._render_value(doc, got, amh)

    def _held_at(self, path: Sequence[str | int]) -> Scalar | None:
        """The held-back value at ``path`` when its key is held and nothing held lies on the
        way to it (then the Automerge document is not needed to answer)."""
        if not path or not isinstance(path[-1], str):
            return None
        doc = self._ensure()
        if not self._puts:  # drained on the way (changes arrived by the sync path)
            return None
        cur = ROOT
        for key in path[:-1]:
            if isinstance(key, str) and (cur, key) in self._puts:
                return None
            got = doc.get(cur, key)
            if got is None or not isinstance(got[0], core.ObjType):
                return None
            cur = got[1]
        return self._puts.get((cur, path[-1]))

    def to_json(self, heads: Sequence[bytes] | None = None) -> Any:
        """The whole document as JSON-able Python values, at current or past tree ``heads``."""
        return self.get([], heads=heads)

    def to_json_text(self, heads: Sequence[bytes] | None = None) -> str:
        return json.dumps(self.to_json(heads), sort_keys=True, ensure_ascii=False)

    def _render_value(self, doc: core.Document, got: Any, amh: list[bytes] | None) -> Any:
        if isinstance(got[0], core.ObjType):
            return self._render(doc, got[1], got[0], amh)
        return _json_scalar(got[0])

    def _render(self, doc: core.Document, obj: ObjId, kind: Any, amh: list[bytes] | None) -> Any:
        kw: dict[str, Any] = {} if amh is None else {"heads": amh}
        if kind == core.ObjType.Text:
            return doc.text(obj, **kw)
        if kind == core.ObjType.List:
            return [self._render_value(doc, v, amh) for v in doc.values(obj, **kw)]
        keys = list(doc.keys(obj, **kw))
        if COUNTER_MARK in keys:
            total = 0
            for k in keys:
                if k != COUNTER_MARK:
                    v = doc.get(obj, k, **kw)
                    if v is not None and not isinstance(v[0], core.ObjType) and isinstance(
                            v[0][1], int) and not isinstance(v[0][1], bool):
                        total += v[0][1]
            return total
        return {k: self._render_value(doc, doc.get(obj, k, **kw), amh) for k in keys}

    def automerge_heads(self) -> list[bytes]:
        self._drain()
        return am.heads(self._ensure())

    # --- status and history -----------------------------------------------------------------
    def status(self) -> DocumentStatus:
        """Counts and quarantined changes (materialises the document)."""
        self._ensure()
        return DocumentStatus(len(self.tree), tuple(self.quarantined.values()),
                              tuple(self.flagged()))

    def flagged(self) -> list[Flagged]:
        """Changes whose author was removed at or after the ACL head they name, replay order
        (asks the ACL now: a change is flagged as soon as the removal is known here)."""
        gate = self.tree.gate
        out = []
        for ch in self.tree.replay_order():
            gone = gate.removed_after(ch.author, ch.acl_head)
            if gone is not None:
                out.append(Flagged(ch.id, ch.author, gone))
        return out

    def history(self) -> list[HistoryEntry]:
        """Every tree change in replay order with what became of its content (``doc
        history``; materialises the document so quarantine decisions are known)."""
        self._ensure()
        out = []
        for ch in self.tree.replay_order():
            q = self.quarantined.get(ch.id)
            ts, snap = self.claims(ch)
            out.append(HistoryEntry(ch.id, ch.author, ts, ch.prev_ids, snap,
                                    None if q is None else q.reason,
                                    self.tree.gate.removed_after(ch.author, ch.acl_head)))
        return out


class AsyncFlusher:
    """Thin asyncio shell: after an edit, flush when the document's window closes."""

    def __init__(self, doc: Document, on_change: Callable[[Change], None] | None = None) -> None:
        self.doc = doc
        self.on_change = on_change
        self._timer: asyncio.TimerHandle | None = None

    @contextmanager
    def edit(self) -> Iterator[Editor]:
        loop = asyncio.get_running_loop()
        with self.doc.edit(loop.time()) as ed:
            yield ed
        due = self.doc.due_at
        if due is not None and self._timer is None:
            self._timer = loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        ch = self.doc.flush()
        if ch is not None and self.on_change is not None:
            self.on_change(ch)

    def close(self) -> Change | None:
        """Cancel the timer and flush what is pending now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self.doc.flush()
