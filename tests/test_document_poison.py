"""Issue 12.5: a writer's valid, signed change whose Automerge payload makes the binding panic.

The payloads below are real Automerge changes, made by the official implementation
(``@automerge/automerge`` 3.5.0: ``x.hits = new Counter(5)`` then ``x.hits.increment(2)``);
automerge 1.0.0rc1 applies them, then panics (pyo3 ``PanicException``, a ``BaseException``) on
every read of the counter — before the fix, reading the document failed on every device, for
good. Now the change is screened before apply, quarantined (named with its author and reason),
the document stays readable, and a later valid change still applies.
"""

from __future__ import annotations

import pytest
from automerge import core

from p2psync.errors import AutomergePanic, UnsupportedContent
from p2psync.replica import automerge_adapter as am
from p2psync.replica.document import ROOT, Document, encode_payload
from p2psync.replica.tree import ObjectTree
from tests.replica_helpers import SPACE_ID, make_owner

#: ``x.hits = new Counter(5)`` (actor 03…03, no dependencies)
COUNTER = bytes.fromhex(
    "856f4a839e9ce30701360010030303030303030303030303030303030101c2bdc4d806000006150634014202"
    "5602570170027f0468697473017f017f18057f00")
#: ``x.hits.increment(2)`` (depends on COUNTER)
INCREMENT = bytes.fromhex(
    "856f4a835f06f822015e019e9ce307086057885366a20c997c906641565caa41ed1e9e8f5a22ab9de9072910"
    "030303030303030303030303030303030202c2bdc4d806000008150634014202560257017002710273027f04"
    "68697473017f057f14027f017f007f01")

OWNER = make_owner(7)


def _docs() -> tuple[Document, Document]:
    """An honest device and the writer's second device (same account: the gate allows it)."""
    tree = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, encode_payload([], []))
    honest = Document(tree, OWNER.account, b"H" * 32, window=0)
    with honest.edit() as e:
        e.put(ROOT, "title", "hello")
    writer = Document(ObjectTree.from_root(SPACE_ID, OWNER.gate(), tree.root.raw),
                      OWNER.account, b"W" * 32, window=0)
    writer.receive([c.raw for c in tree.changes() if not c.is_root])
    return honest, writer


def test_counter_change_is_quarantined_and_the_document_stays_readable() -> None:
    honest, writer = _docs()
    assert honest.to_json() == {"title": "hello"}
    # The hostile writer signs two perfectly valid tree changes carrying the counter.
    bad1 = writer.tree.create_change(OWNER.account, encode_payload([], [COUNTER]))
    bad2 = writer.tree.create_change(OWNER.account, encode_payload([], [INCREMENT]))
    honest.receive([bad1.raw, bad2.raw])
    assert honest.to_json() == {"title": "hello"}  # readable, without the counter
    st = honest.status()
    assert [q.change_id for q in st.quarantined] == [bad1.id, bad2.id]
    assert all(q.author == OWNER.account.public and "counter" in q.reason
               for q in st.quarantined)
    hist = {h.change_id: h for h in honest.history()}
    assert hist[bad1.id].quarantined and "counter" in (hist[bad1.id].quarantined or "")
    assert all(h.quarantined is None for cid, h in hist.items() if cid not in (bad1.id, bad2.id))

    # A later valid change (another device, after the poisoned ones) still applies.
    with writer.edit() as e:
        e.put(ROOT, "after", 1)
    honest.receive([c.raw for c in writer.tree.changes() if c.id not in honest.tree])
    assert honest.to_json() == {"title": "hello", "after": 1}

    # After a restart (a fresh document over the same changes) the same holds.
    again = Document(ObjectTree.from_root(SPACE_ID, OWNER.gate(), honest.tree.root.raw),
                     OWNER.account, b"R" * 32)
    again.receive([c.raw for c in honest.tree.replay_order() if not c.is_root])
    assert again.to_json() == {"title": "hello", "after": 1}
    assert {q.change_id for q in again.status().quarantined} == {bad1.id, bad2.id}


def test_screen_refuses_counters_and_accepts_ordinary_changes() -> None:
    for raw in (COUNTER, INCREMENT):
        with pytest.raises(UnsupportedContent, match="counter"):
            am.screen(raw)
    d = am.new_document(b"\x01" * 16)
    with d.transaction() as tx:
        t = tx.put_object(ROOT, "t", core.ObjType.Text)
        for i in range(400):  # big enough to be a compressed change chunk
            tx.insert(t, i, core.ScalarType.Str, "a")
        tx.put(ROOT, "n", core.ScalarType.Int, -3)
    for raw in am.changes_since(d, []):
        am.screen(raw)
    with pytest.raises(UnsupportedContent):
        am.screen(COUNTER[:-1])


def test_a_panic_that_escapes_becomes_a_typed_error() -> None:
    d = am.new_document(b"\x02" * 16)
    am.apply_changes(d, [COUNTER])  # unscreened: the binding applies it ...
    with pytest.raises(AutomergePanic), am.contained("reading"):
        d.get(ROOT, "hits")  # ... and panics on read: contained, typed
    with pytest.raises(KeyboardInterrupt), am.contained("reading"):
        raise KeyboardInterrupt


def test_writing_side_refuses_unsupported_values() -> None:
    honest, _writer = _docs()
    with pytest.raises(UnsupportedContent, match="make_counter"), honest.edit() as e:
        e.put(ROOT, "x", object())
    assert honest.to_json() == {"title": "hello"}
