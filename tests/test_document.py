"""Automerge documents over trees: edits, coalescing, convergence, counters, snapshots, views."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import DeviceKey
from p2psync.errors import DecryptionFailed, DocumentError
from p2psync.replica.change import build_change
from p2psync.replica.document import ROOT, AsyncFlusher, Document, Text, encode_payload
from p2psync.replica.store import Store
from p2psync.replica.tree import ObjectTree
from tests.replica_helpers import SPACE_ID, make_owner

OWNER = make_owner(2)


def new_doc(device: bytes = b"A" * 32, window: float = 0.05) -> Document:
    tree = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, encode_payload([], []))
    return Document(tree, OWNER.account, device, window=window)


def replica_of(doc: Document, device: bytes, **kw: object) -> Document:
    tree = ObjectTree.from_root(SPACE_ID, OWNER.gate(), doc.tree.root.raw)
    return Document(tree, OWNER.account, device, **kw)  # type: ignore[arg-type]


def others(doc: Document) -> list[bytes]:
    return [c.raw for c in doc.tree.changes() if not c.is_root]


def _build_history() -> tuple[Document, list[bytes]]:
    """Three devices of the owner edit concurrently and partly see each other."""
    a = new_doc(b"A" * 32, window=0)
    with a.edit() as e:
        e.put(ROOT, "title", Text("hello"))
        e.put(ROOT, "items", ["x"])
        e.make_counter(ROOT, "likes")
    b, c = replica_of(a, b"B" * 32, window=0), replica_of(a, b"C" * 32, window=0)
    b.receive(others(a))
    c.receive(others(a))
    with a.edit() as e:
        e.put(ROOT, "k", "from a")
        e.increment(ROOT, "likes", 2)
        e.splice_text(a.obj(["title"]), 5, 0, " world")
    with b.edit() as e:
        e.put(ROOT, "k", "from b")
        e.increment(ROOT, "likes", 3)
        e.splice_text(b.obj(["title"]), 0, 1, "J")
        e.insert(b.obj(["items"]), 1, {"n": 1})
    b.receive(others(a))
    with b.edit() as e:
        e.increment(ROOT, "likes", 1)
        e.put(ROOT, "seen_a", True)
    with c.edit() as e:
        e.put(ROOT, "c", 1.5)
        e.delete(ROOT, "items")
    c.receive(others(b))
    c.snapshot()
    with c.edit() as e:
        e.put(ROOT, "after_snapshot", None)
    everything = {r for d in (a, b, c) for r in others(d)}
    ref = replica_of(a, b"R" * 32)
    ref.receive(sorted(everything))
    return ref, sorted(everything)


REF, HISTORY = _build_history()


def test_reference_merge_is_sane() -> None:
    j = REF.to_json()
    assert j["likes"] == 6 and j["k"] in ("from a", "from b") and j["c"] == 1.5
    assert j["title"] == "Jello world" and "items" not in j
    assert j["seen_a"] is True and "after_snapshot" in j


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_two_replicas_converge_under_any_delivery(data: st.DataObject) -> None:
    n = len(HISTORY)
    results = []
    for device, eager in ((b"X" * 32, True), (b"Y" * 32, False)):
        order = data.draw(st.permutations(range(n)))
        dups = data.draw(st.lists(st.integers(0, n - 1), max_size=4))
        chunk = data.draw(st.integers(1, 5))
        d = replica_of(REF, device)
        if eager:
            d.to_json()  # materialised: changes apply incrementally as they attach
        stream = [HISTORY[i] for i in order] + [HISTORY[i] for i in dups]
        for i in range(0, len(stream), chunk):
            d.receive(stream[i:i + chunk])
        results.append((d.tree.heads, d.to_json_text()))
    assert results[0] == results[1] == (REF.tree.heads, REF.to_json_text())


def test_coalescing_window_makes_one_change() -> None:
    d = new_doc(window=0.05)
    for i in range(10):
        with d.edit(now=1.0 + i * 0.001) as e:
            e.put(ROOT, f"k{i}", i)
    assert len(d.tree) == 1 and d.pending == 10 and d.due_at == pytest.approx(1.05)
    assert d.poll(1.049) is None
    ch = d.poll(1.05)
    assert ch is not None and len(d.tree) == 2 and d.pending == 0 and d.due_at is None
    assert d.flush() is None
    other = replica_of(d, b"B" * 32)
    other.receive([ch.raw])
    assert other.to_json() == {f"k{i}": i for i in range(10)}


def test_zero_window_flushes_every_edit_and_rollback_makes_nothing() -> None:
    d = new_doc(window=0)
    for i in range(3):
        with d.edit() as e:
            e.put(ROOT, "n", i)
    assert len(d.tree) == 4
    with pytest.raises(RuntimeError), d.edit() as e:
        e.put(ROOT, "n", 99)
        raise RuntimeError("abort")
    assert len(d.tree) == 4 and d.to_json() == {"n": 2}


def test_values_at_past_heads() -> None:
    d = new_doc(window=0)
    with d.edit() as e:
        e.put(ROOT, "v", 1)
        e.put(ROOT, "t", Text("ab"))
    h1 = d.tree.heads
    with d.edit() as e:
        e.put(ROOT, "v", 2)
        e.splice_text(d.obj(["t"]), 1, 1, "Z")
    assert d.to_json() == {"v": 2, "t": "aZ"}
    assert d.to_json(heads=h1) == {"v": 1, "t": "ab"}
    assert d.get(["v"], heads=h1) == 1 and d.get(["t"], heads=h1) == "ab"
    assert d.to_json(heads=[d.tree.id]) == {}
    # another replica answers the same from received changes only
    r = replica_of(d, b"B" * 32)
    r.receive(others(d))
    assert r.to_json(heads=h1) == {"v": 1, "t": "ab"}
    with pytest.raises(DocumentError):
        d.to_json(heads=[b"\x00" * 32])


def test_counters_from_two_devices_add_up() -> None:
    a = new_doc(window=0)
    with a.edit() as e:
        e.make_counter(ROOT, "n", start=10)
        e.put(ROOT, "plain", 1)
    b = replica_of(a, b"B" * 32, window=0)
    b.receive(others(a))
    for _ in range(3):
        with a.edit() as e:
            e.increment(ROOT, "n", 1)
    with b.edit() as e:
        e.increment(ROOT, "n", -4)
    a.receive(others(b))
    b.receive(others(a))
    assert a.to_json()["n"] == b.to_json()["n"] == 9
    with pytest.raises(DocumentError), a.edit() as e:
        e.increment(ROOT, "plain")


def test_snapshot_lets_a_new_device_skip_replay() -> None:
    d = new_doc(window=0)
    for i in range(20):
        with d.edit() as e:
            e.put(ROOT, "i", i)
    h_early = d.tree.heads
    snap = d.snapshot()
    with d.edit() as e:
        e.put(ROOT, "after", "yes")
    fresh = replica_of(d, b"N" * 32)
    fresh.receive(others(d))
    assert fresh.to_json() == {"i": 19, "after": "yes"} == d.to_json()
    assert fresh.loaded_snapshot == snap.id
    assert fresh.to_json(heads=h_early) == {"i": 19}
    slow = replica_of(d, b"S" * 32, use_snapshots=False)
    slow.receive(others(d))
    assert slow.to_json() == fresh.to_json() and slow.loaded_snapshot is None


def test_lazy_materialisation_and_direct_tree_adds() -> None:
    d = new_doc(window=0)
    with d.edit() as e:
        e.put(ROOT, "a", 1)
    r = replica_of(d, b"B" * 32)
    r.receive(others(d))
    assert not r.materialized
    assert r.to_json() == {"a": 1} and r.materialized
    with d.edit() as e:
        e.put(ROOT, "a", 2)
    r.tree.add(others(d))  # e.g. the sync layer adding straight to the tree
    assert r.to_json() == {"a": 2}


def test_payload_under_wrong_key_rejected_and_store_unchanged(tmp_path: object) -> None:
    from pathlib import Path

    d = new_doc(window=0)
    path = Path(str(tmp_path)) / "s.db"
    with Store(path) as store:
        r = replica_of(d, b"B" * 32)
        r.persist = store.persister()
        store.save_tree(r.tree)
        bad = build_change(OWNER.account, ReadKey.generate(), encode_payload([], []),
                           space_id=SPACE_ID, tree_id=d.tree.id, prev_ids=[d.tree.id],
                           acl_head=OWNER.acl_root, read_key_id=OWNER.acl_root)
        before = (store.count_changes(), store.get_heads(d.tree.id), r.tree.heads)
        with pytest.raises(DecryptionFailed):
            r.receive([bad.raw])
        assert (store.count_changes(), store.get_heads(d.tree.id), r.tree.heads) == before


def test_actor_is_stable_and_edits_continue_after_reload(tmp_path: object) -> None:
    from pathlib import Path

    dev = DeviceKey(b"\x07" * 32).public
    path = Path(str(tmp_path)) / "s.db"
    with Store(path) as store:
        d = new_doc(dev, window=0)
        d.persist = store.persister()
        store.save_tree(d.tree)
        with d.edit() as e:
            e.put(ROOT, "x", 1)
        tree_id = d.tree.id
    with Store(path) as store:
        t = store.load_tree(SPACE_ID, tree_id, OWNER.gate())
        again = Document(t, OWNER.account, dev, window=0, persist=store.persister())
        assert again.actor == d.actor
        with again.edit() as e:
            e.put(ROOT, "y", 2)
        other = replica_of(again, b"B" * 32)
        other.receive(others(again))
        assert other.to_json() == {"x": 1, "y": 2}


async def test_async_flusher_flushes_after_window() -> None:
    d = new_doc(window=0.02)
    done = asyncio.Event()
    made = []

    def on_change(ch: object) -> None:
        made.append(ch)
        done.set()

    f = AsyncFlusher(d, on_change)
    for i in range(5):
        with f.edit() as e:
            e.put(ROOT, "k", i)
    assert made == [] and d.pending == 1  # five puts to one key: the last is held back
    await asyncio.wait_for(done.wait(), 2)
    assert len(made) == 1 and d.pending == 0 and len(d.tree) == 2
    assert f.close() is None
