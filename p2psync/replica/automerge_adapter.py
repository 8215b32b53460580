"""The one place that talks to ``automerge.core`` internals.

automerge 1.0.0rc1 has no ``apply_changes``: raw change bytes are applied by wrapping them in a
hand-built sync message (``0x42``, heads, empty need/have, the changes) and feeding it to
``receive_sync_message`` — idempotent, incremental, and changes with missing dependencies are
queued by Automerge until they arrive. Everything that can fail raises :class:`DocumentError`.

**Panics** (issue 12.5): the Rust binding answers some valid content with a Rust panic, which
pyo3 raises as ``PanicException`` — a ``BaseException``, so ``except Exception`` misses it.
Reading a counter value does it (``todo!()`` in the binding), so a writer could sign one valid
change that makes every device fail to read the document, for good. Two defences:

* :func:`screen` parses a change's op columns (strictly, bounded) *before* it is applied and
  refuses content this binding cannot render (counters, increments, unknown actions or value
  types): :class:`UnsupportedContent`. The document layer quarantines such a change.
* :func:`contained` turns any panic that still escapes a call into :class:`AutomergePanic`
  (``KeyboardInterrupt``/``SystemExit`` pass through untouched).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from automerge import core

from p2psync.errors import AutomergePanic, DocumentError, UnsupportedContent

_SYNC_MESSAGE_TYPE = 0x42
_MAGIC = b"\x85\x6f\x4a\x83"
_CHUNK_CHANGE, _CHUNK_COMPRESSED = 1, 2
#: Column ids (spec >> 4) of a change's op columns that screening reads.
_COL_ACTION, _COL_VALUE = 4, 5
_TYPE_ULEB, _TYPE_VALUE_META = 2, 6
#: Op actions this binding renders: make map, put, make list, delete, make text.
ALLOWED_ACTIONS = frozenset({0, 1, 2, 3, 4})
_ACTION_NAMES = {5: "a counter increment", 6: "a table", 7: "a mark"}
#: Value types it renders: null, false, true, uint, int, f64, str, bytes, timestamp (not 8:
#: counter, nor anything newer).
ALLOWED_VALUE_TYPES = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 9})
#: Inflated size cap for a compressed change or column (payloads are ≤ 8 MiB anyway).
MAX_INFLATED = 64 * 1024 * 1024


def _is_panic(exc: BaseException) -> bool:
    """pyo3's PanicException (module ``pyo3_runtime``), never a real interpreter exit."""
    return type(exc).__name__ == "PanicException" and not isinstance(
        exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


@contextmanager
def contained(what: str) -> Iterator[None]:
    """Run Automerge calls; a Rust panic becomes :class:`AutomergePanic` (typed, catchable)."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        if _is_panic(exc):
            raise AutomergePanic(f"Automerge panicked while {what}: {exc}") from exc
        raise


# --- screening ---------------------------------------------------------------------------------
class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise UnsupportedContent("truncated Automerge change")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    # uleb/sleb index bytes directly (not take(1)[0]): screening runs on every local edit and
    # was ~40 % of an edit's Python time with the slicing version.
    def uleb(self) -> int:
        data, pos, end = self.data, self.pos, len(self.data)
        out = shift = 0
        while True:
            if pos >= end:
                raise UnsupportedContent("truncated Automerge change")
            b = data[pos]
            pos += 1
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                self.pos = pos
                return out
            shift += 7
            if shift > 63:
                raise UnsupportedContent("over-long LEB128 in an Automerge change")

    def sleb(self) -> int:
        data, pos, end = self.data, self.pos, len(self.data)
        out = shift = 0
        while True:
            if pos >= end:
                raise UnsupportedContent("truncated Automerge change")
            b = data[pos]
            pos += 1
            out |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                self.pos = pos
                return out - (1 << shift) if b & 0x40 else out
            if shift > 63:
                raise UnsupportedContent("over-long LEB128 in an Automerge change")

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(data, MAX_INFLATED)
    except zlib.error as exc:
        raise UnsupportedContent(f"bad DEFLATE data in an Automerge change: {exc}") from exc
    if d.unconsumed_tail:
        raise UnsupportedContent("an Automerge change inflates beyond the size cap")
    return out


def _uleb_at(data: bytes, pos: int) -> tuple[int, int]:
    """``(value, next position)`` of the ULEB128 at ``pos`` (what :meth:`_Cursor.uleb` reads)."""
    if pos < len(data):
        b = data[pos]
        if b < 0x80:  # one byte: almost every length, count and action
            return b, pos + 1
    c = _Cursor(data)
    c.pos = pos
    return c.uleb(), c.pos


def _sleb_at(data: bytes, pos: int) -> tuple[int, int]:
    """``(value, next position)`` of the SLEB128 at ``pos`` (what :meth:`_Cursor.sleb` reads)."""
    if pos < len(data):
        b = data[pos]
        if b < 0x80:
            return (b - 0x80 if b & 0x40 else b), pos + 1
    c = _Cursor(data)
    c.pos = pos
    return c.sleb(), c.pos


def _skip(data: bytes, pos: int, n: int) -> int:
    """The position after ``n`` bytes at ``pos`` (what :meth:`_Cursor.take` checks)."""
    if n < 0 or pos + n > len(data):
        raise UnsupportedContent("truncated Automerge change")
    return pos + n


def _first_refused(data: bytes, allowed: frozenset[int], mask: int) -> int | None:
    """The first value of an RLE-encoded ULEB column (nulls skipped) whose ``value & mask``
    is not in ``allowed``, or None; reads no further than that value (so a column cut after
    it is refused for the value, as before)."""
    pos, end = 0, len(data)
    while pos < end:
        n, pos = _sleb_at(data, pos)
        if n == 0:
            _, pos = _uleb_at(data, pos)  # a run of nulls
            continue
        for _ in range(1 if n > 0 else -n):
            v, pos = _uleb_at(data, pos)
            if v & mask not in allowed:
                return v & mask
    return None


def screen(change: bytes) -> None:
    """Refuse a change whose ops this binding cannot apply and render safely.

    Parses the change chunk (compressed or not) down to its op columns and checks every op's
    action and value type against :data:`ALLOWED_ACTIONS` / :data:`ALLOWED_VALUE_TYPES`. Raises
    :class:`UnsupportedContent` with the reason; never calls into Automerge.

    Runs on every change a document applies (opening a document screens its whole history), so
    it reads positions with module functions that take one-byte LEB128s at once (issue 13:
    ~35 % of opening a document with the cursor-object version; `tests/test_screen.py` checks
    both agree).
    """
    if len(change) < 9:
        raise UnsupportedContent("truncated Automerge change")
    if change[:4] != _MAGIC:
        raise UnsupportedContent("not an Automerge change (bad magic)")
    checksum = change[4:8]
    kind = change[8]
    size, pos = _uleb_at(change, 9)
    end = _skip(change, pos, size)
    if end != len(change):
        raise UnsupportedContent("trailing bytes after an Automerge change")
    body = change[pos:end]
    if kind == _CHUNK_COMPRESSED:
        body = _inflate(body)
    elif kind == _CHUNK_CHANGE:
        if hashlib.sha256(change[8:]).digest()[:4] != checksum:
            raise UnsupportedContent("Automerge change checksum mismatch")
    else:
        raise UnsupportedContent(f"Automerge chunk type {kind} is not a change")
    b = body
    n, pos = _uleb_at(b, 0)
    for _ in range(n):  # dependencies
        pos = _skip(b, pos, 32)
    n, pos = _uleb_at(b, pos)
    pos = _skip(b, pos, n)  # actor
    _, pos = _uleb_at(b, pos)  # seq
    _, pos = _uleb_at(b, pos)  # start op
    _, pos = _sleb_at(b, pos)  # time
    n, pos = _uleb_at(b, pos)
    pos = _skip(b, pos, n)  # message
    n, pos = _uleb_at(b, pos)
    for _ in range(n):  # other actors
        m, pos = _uleb_at(b, pos)
        pos = _skip(b, pos, m)
    n, pos = _uleb_at(b, pos)
    specs = []
    for _ in range(n):
        spec, pos = _uleb_at(b, pos)
        length, pos = _uleb_at(b, pos)
        specs.append((spec, length))
    for spec, length in specs:
        start, pos = pos, _skip(b, pos, length)
        col, ctype = spec >> 4, spec & 7
        if not ((col == _COL_ACTION and ctype == _TYPE_ULEB)
                or (col == _COL_VALUE and ctype == _TYPE_VALUE_META)):
            if spec & 8:
                _inflate(b[start:pos])  # a bad DEFLATE column is refused as before
            continue
        data = b[start:pos]
        if spec & 8:
            data = _inflate(data)
        if col == _COL_ACTION:
            action = _first_refused(data, ALLOWED_ACTIONS, 0xFFFFFFFFFFFFFFFF)
            if action is not None:
                what = _ACTION_NAMES.get(action, f"op action {action}")
                raise UnsupportedContent(f"the change contains {what}, which this "
                                         "Automerge build cannot apply safely")
        else:
            vtype = _first_refused(data, ALLOWED_VALUE_TYPES, 0x0F)
            if vtype is not None:
                what = "a counter" if vtype == 8 else f"value type {vtype}"
                raise UnsupportedContent(f"the change contains {what}, which this "
                                         "Automerge build cannot render (it panics)")


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sync_message(changes: Sequence[bytes], heads: Sequence[bytes] = ()) -> bytes:
    """Encode a sync message that carries ``changes`` and asks for nothing."""
    out = bytearray([_SYNC_MESSAGE_TYPE])
    out += _uleb(len(heads))
    for h in heads:
        out += h
    out += _uleb(0) + _uleb(0) + _uleb(len(changes))
    for c in changes:
        out += _uleb(len(c)) + c
    return bytes(out)


def apply_changes(doc: core.Document, changes: Sequence[bytes]) -> None:
    """Apply raw Automerge change bytes to ``doc`` (idempotent; missing deps are queued)."""
    if not changes:
        return
    try:
        with contained("applying changes"):
            msg = core.Message.decode(sync_message(changes))
            doc.receive_sync_message(core.SyncState(), msg)
    except AutomergePanic:
        raise
    except Exception as exc:  # automerge raises bare Exception ("bad checksum", ...)
        raise DocumentError(f"corrupt Automerge change bytes: {exc}") from exc


def new_document(actor: bytes) -> core.Document:
    """An empty document with our stable actor id."""
    return core.Document(actor)


def load(saved: bytes, actor: bytes) -> core.Document:
    """Load a ``save()``d document and set our actor (``load`` picks a random one)."""
    try:
        with contained("loading a snapshot"):
            doc = core.Document.load(saved)
    except AutomergePanic:
        raise
    except Exception as exc:
        raise DocumentError(f"corrupt Automerge snapshot: {exc}") from exc
    doc.set_actor(actor)
    return doc


def save(doc: core.Document) -> bytes:
    with contained("saving"):
        return bytes(doc.save())


def heads(doc: core.Document) -> list[bytes]:
    with contained("reading heads"):
        return [bytes(h) for h in doc.get_heads()]


def changes_since(doc: core.Document, have: Sequence[bytes]) -> list[bytes]:
    """Raw bytes of the changes not in the causal past of ``have``, in causal order."""
    with contained("listing changes"):
        return [bytes(c.bytes) for c in doc.get_changes(list(have))]


def change_links(doc: core.Document, have: Sequence[bytes]) -> list[tuple[bytes, bytes,
                                                                           tuple[bytes, ...]]]:
    """(raw bytes, hash, dependencies) of the changes not in the causal past of ``have``."""
    with contained("listing changes"):
        return [(bytes(c.bytes), bytes(c.hash), tuple(bytes(d) for d in c.deps))
                for c in doc.get_changes(list(have))]
