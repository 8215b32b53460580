"""The Automerge change screen (issue 13 made it faster): the new reader must refuse exactly
what the cursor-object reader it replaced refused, for the same reason, on real changes and on
every mutation of them hypothesis finds."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from automerge import core
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.errors import UnsupportedContent
from p2psync.replica import automerge_adapter as am
from p2psync.replica.automerge_adapter import (
    _ACTION_NAMES,
    _CHUNK_CHANGE,
    _CHUNK_COMPRESSED,
    _COL_ACTION,
    _COL_VALUE,
    _MAGIC,
    _TYPE_ULEB,
    _TYPE_VALUE_META,
    ALLOWED_ACTIONS,
    ALLOWED_VALUE_TYPES,
    _Cursor,
    _inflate,
)
from tests.test_document_poison import COUNTER, INCREMENT


# --- the reader before issue 13, kept as the reference --------------------------------------
def _old_rle_ulebs(data: bytes) -> Iterator[int]:
    """Values of an RLE-encoded ULEB column (nulls skipped)."""
    c = _Cursor(data)
    while not c.done:
        n = c.sleb()
        if n > 0:
            yield c.uleb()
        elif n < 0:
            for _ in range(-n):
                yield c.uleb()
        else:
            c.uleb()  # a run of nulls


def old_screen(change: bytes) -> None:
    """Refuse a change whose ops this binding cannot apply and render safely.

    Parses the change chunk (compressed or not) down to its op columns and checks every op's
    action and value type against :data:`ALLOWED_ACTIONS` / :data:`ALLOWED_VALUE_TYPES`. Raises
    :class:`UnsupportedContent` with the reason; never calls into Automerge.
    """
    c = _Cursor(change)
    if c.take(4) != _MAGIC:
        raise UnsupportedContent("not an Automerge change (bad magic)")
    checksum = c.take(4)
    start = c.pos
    kind = c.take(1)[0]
    body = c.take(c.uleb())
    if not c.done:
        raise UnsupportedContent("trailing bytes after an Automerge change")
    if kind == _CHUNK_COMPRESSED:
        body = _inflate(body)
    elif kind == _CHUNK_CHANGE:
        if hashlib.sha256(change[start:]).digest()[:4] != checksum:
            raise UnsupportedContent("Automerge change checksum mismatch")
    else:
        raise UnsupportedContent(f"Automerge chunk type {kind} is not a change")
    b = _Cursor(body)
    for _ in range(b.uleb()):  # dependencies
        b.take(32)
    b.take(b.uleb())  # actor
    b.uleb()  # seq
    b.uleb()  # start op
    b.sleb()  # time
    b.take(b.uleb())  # message
    for _ in range(b.uleb()):  # other actors
        b.take(b.uleb())
    specs = [(b.uleb(), b.uleb()) for _ in range(b.uleb())]
    for spec, length in specs:
        data = b.take(length)
        col, ctype = spec >> 4, spec & 7
        if spec & 8:
            data = _inflate(data)
        if col == _COL_ACTION and ctype == _TYPE_ULEB:
            for action in _old_rle_ulebs(data):
                if action not in ALLOWED_ACTIONS:
                    what = _ACTION_NAMES.get(action, f"op action {action}")
                    raise UnsupportedContent(f"the change contains {what}, which this "
                                             "Automerge build cannot apply safely")
        elif col == _COL_VALUE and ctype == _TYPE_VALUE_META:
            for meta in _old_rle_ulebs(data):
                vtype = meta & 0x0F
                if vtype not in ALLOWED_VALUE_TYPES:
                    what = "a counter" if vtype == 8 else f"value type {vtype}"
                    raise UnsupportedContent(f"the change contains {what}, which this "
                                             "Automerge build cannot render (it panics)")


def _changes() -> list[bytes]:
    """Real changes of every kind the screen looks at: map puts of each scalar type, nested
    objects, text splices and deletes, a big (compressed) change, a native counter."""
    doc = am.new_document(b"\x01" * 16)
    out: list[bytes] = []

    def tx(fn: object) -> None:
        before = am.heads(doc)
        with doc.transaction() as t:
            fn(t)  # type: ignore[operator]
        out.extend(am.changes_since(doc, before))

    tx(lambda t: t.put(core.ROOT, "i", core.ScalarType.Int, -5))
    tx(lambda t: t.put(core.ROOT, "s", core.ScalarType.Str, "héllo"))
    tx(lambda t: t.put(core.ROOT, "f", core.ScalarType.F64, 1.5))
    tx(lambda t: t.put(core.ROOT, "b", core.ScalarType.Bytes, b"\x00\xff"))
    tx(lambda t: t.put(core.ROOT, "n", core.ScalarType.Null, None))
    tx(lambda t: t.put(core.ROOT, "t", core.ScalarType.Boolean, True))
    text: list[bytes] = []

    def make_text(t: core.Transaction) -> None:
        text.append(t.put_object(core.ROOT, "txt", core.ObjType.Text))

    tx(make_text)
    tx(lambda t: [t.insert(text[0], i, core.ScalarType.Str, c) for i, c in enumerate("abc")])
    tx(lambda t: t.delete(text[0], 1))
    tx(lambda t: t.put_object(core.ROOT, "l", core.ObjType.List))
    tx(lambda t: [t.put(core.ROOT, f"k{i}", core.ScalarType.Int, i * 1000) for i in range(400)])
    tx(lambda t: t.delete(core.ROOT, "i"))
    return [*out, COUNTER, INCREMENT]


CHANGES = _changes()


def _outcome(fn: object, raw: bytes) -> object:
    try:
        fn(raw)  # type: ignore[operator]
    except UnsupportedContent as exc:
        return str(exc)
    return None


def test_the_samples_cover_what_the_screen_checks() -> None:
    assert any(c[8] == _CHUNK_COMPRESSED for c in CHANGES)
    assert _outcome(am.screen, COUNTER) is not None
    assert all(_outcome(am.screen, c) is None for c in CHANGES[:-2])


def test_real_changes_screen_as_before() -> None:
    for raw in CHANGES:
        assert _outcome(am.screen, raw) == _outcome(old_screen, raw)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(CHANGES), st.data())
def test_mutated_changes_screen_as_before(raw: bytes, data: st.DataObject) -> None:
    """Any byte changed, cut or appended; checksums re-made half of the time so the mutation
    reaches the columns instead of stopping at the checksum."""
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["set", "cut", "add"]))
        if op == "set" and b:
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        elif op == "cut" and b:
            del b[data.draw(st.integers(0, len(b) - 1)):]
        else:
            b += bytes(data.draw(st.lists(st.integers(0, 255), max_size=4)))
    if data.draw(st.booleans()) and len(b) > 9 and b[8] == _CHUNK_CHANGE:
        b[4:8] = hashlib.sha256(bytes(b[8:])).digest()[:4]
    new, old = _outcome(am.screen, bytes(b)), _outcome(old_screen, bytes(b))
    assert (new is None) == (old is None)
    if old is not None and "truncated" not in old and "bad magic" not in old:
        assert new == old
