"""Space facade: two devices and a keyless replicator exchanging records over the sync path."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.errors import AccessDenied, InvalidChange, StoreError
from p2psync.replica.acl_records import Role
from p2psync.replica.document import ROOT
from p2psync.replica.space import Space
from p2psync.replica.store import Store


def _device(tmp_path: Path, name: str) -> tuple[Store, AccountKey, bytes]:
    return Store(tmp_path / f"{name}.sqlite3"), AccountKey.generate(), DeviceKey.generate().public


def _ship(src: Space, dst: Space) -> None:
    """What sync does: ACL records first, then every tree's changes."""
    dst.add_acl_records(src.acl_records())
    for tid in src.tree_ids():
        dst.add_changes(tid, [c.raw for c in src.tree(tid).changes()])


def test_create_edit_reopen(tmp_path: Path) -> None:
    store, me, dev = _device(tmp_path, "a")
    space = Space.create(store, me, dev, window=0)
    doc = space.new_document()
    with doc.edit() as e:
        e.put(ROOT, "title", "hello")
    store.close()
    store2 = Store(tmp_path / "a.sqlite3")
    again = Space.open(store2, me, dev, space.id)
    assert again.tree_ids() == [doc.tree.id]
    assert again.document(doc.tree.id).to_json() == {"title": "hello"}
    assert again.role() == Role.OWNER
    with pytest.raises(StoreError, match="no space"):
        Space.open(store2, me, dev, "nope.0")


def test_member_joins_and_reads_replicator_holds_only_ciphertext(tmp_path: Path) -> None:
    a_store, alice, a_dev = _device(tmp_path, "alice")
    b_store, bob, b_dev = _device(tmp_path, "bob")
    r_store, backup, r_dev = _device(tmp_path, "backup")
    a = Space.create(a_store, alice, a_dev, window=0)
    invite, code = a.acl.invite(alice, Role.WRITER, anyone_can_join=True)
    a.commit_acl(invite)
    a.emit_acl(lambda acl: acl.add_replicator(alice, backup.public))
    doc = a.new_document()
    with doc.edit() as e:
        e.put(ROOT, "secret", "MARKER-7f3a")

    b = Space.adopt(b_store, bob, b_dev, a.id, a.header.raw, a.acl_records(), window=0)
    b.emit_acl(lambda acl: acl.join(bob, code))
    r = Space.adopt(r_store, backup, r_dev, a.id, a.header.raw, a.acl_records(), window=0)
    _ship(b, a)
    _ship(a, r)
    _ship(r, b)  # bob gets the document through the replicator only

    assert b.document(doc.tree.id).to_json() == {"secret": "MARKER-7f3a"}
    assert r.heads(doc.tree.id) == a.heads(doc.tree.id) == b.heads(doc.tree.id)
    blind = r.document(doc.tree.id)  # the replicator holds no read key: it sees nothing
    assert blind.to_json() == {} and len(blind.skipped) == len(r.tree(doc.tree.id))
    r_store.close()
    for f in tmp_path.glob("backup.sqlite3*"):
        assert b"MARKER-7f3a" not in f.read_bytes()

    with b.document(doc.tree.id).edit() as e:
        e.put(ROOT, "reply", "hi")
    _ship(b, a)
    assert a.document(doc.tree.id).to_json() == {"secret": "MARKER-7f3a", "reply": "hi"}


def test_outsider_changes_refused_and_nothing_stored(tmp_path: Path) -> None:
    a_store, alice, a_dev = _device(tmp_path, "alice")
    m_store, mallory, m_dev = _device(tmp_path, "mallory")
    a = Space.create(a_store, alice, a_dev, window=0)
    doc = a.new_document()
    m = Space.adopt(m_store, mallory, m_dev, a.id, a.header.raw, a.acl_records(), window=0)
    m.add_changes(doc.tree.id, [c.raw for c in doc.tree.changes()])
    with pytest.raises(AccessDenied), m.document(doc.tree.id).edit() as e:
        e.put(ROOT, "x", 1)
    assert m.heads(doc.tree.id) == a.heads(doc.tree.id)
    with pytest.raises(InvalidChange, match="without its root"):
        a.add_changes(b"\x01" * 32, [doc.tree.root.raw])
    before = a_store.count_changes()
    res = a.add_acl_records([b"garbage", a.acl_records()[0][:-1]])
    assert len(res.rejected) == 2 and not res.added
    assert a_store.count_changes() == before


def test_trees_in_memory_are_bounded_and_reload_from_the_store(tmp_path: Path) -> None:
    """A backup touching many objects keeps only the most recently used trees in memory;
    the rest reload from the store intact. Trees with an open document are never dropped."""
    a_store, alice, a_dev = _device(tmp_path, "alice")
    r_store, backup, r_dev = _device(tmp_path, "backup")
    a = Space.create(a_store, alice, a_dev, window=0)
    a.emit_acl(lambda acl: acl.add_replicator(alice, backup.public))
    docs = []
    for i in range(6):
        doc = a.new_document()
        with doc.edit() as e:
            e.put(ROOT, "i", i)
        docs.append(doc)
    r = Space.adopt(r_store, backup, r_dev, a.id, a.header.raw, a.acl_records(), window=0)
    r.max_cached_trees = 2
    _ship(a, r)
    assert len(r._trees) <= 2
    for doc in docs:  # each reloads with the same changes and heads
        assert r.tree(doc.tree.id).heads == doc.tree.heads
        assert len(r.tree(doc.tree.id)) == len(doc.tree)
        assert len(r._trees) <= 2
    a.max_cached_trees = 1
    assert all(d.tree.id in a._trees for d in docs)  # pinned by their open documents
    a.tree(docs[0].tree.id)
    assert len(a._trees) == 6


def test_open_documents_are_bounded_and_an_app_held_one_stays_the_same(tmp_path: Path) -> None:
    """Issue 13: the space keeps at most ``max_open_documents`` documents open (LRU); the rest
    are freed and reopen from the store with the same content. A document an app still holds
    is handed back as the same object over the same tree (never a second copy), and one with
    unflushed edits is never dropped."""
    import gc

    store, me, dev = _device(tmp_path, "a")
    a = Space.create(store, me, dev, window=0)
    a.max_open_documents = 3
    tids = []
    for i in range(8):
        doc = a.new_document()
        with doc.edit() as e:
            e.put(ROOT, "i", i)
        tids.append(doc.tree.id)
    del doc
    for i, tid in enumerate(tids):
        assert a.document(tid).to_json() == {"i": i}
    gc.collect()
    assert len(a._docs) == 3 and len(a._live) == 3  # the others were freed
    assert [a.document(t).to_json() for t in tids] == [{"i": i} for i in range(8)]

    held = a.document(tids[0])
    a.max_cached_trees = 1
    for t in tids[1:]:
        a.document(t).to_json()
    assert tids[0] not in a._docs
    assert a.document(tids[0]) is held  # same object, so edits and syncs meet in one tree
    assert a.tree(tids[0]) is held.tree

    held.window = 3600.0  # an unflushed edit pins the document even when nobody holds it
    with held.edit() as e:
        e.put(ROOT, "late", True)
    del held
    for t in tids[1:]:
        a.document(t).to_json()
    gc.collect()
    assert a.flush() == 1
    reopened = Space.open(store, me, dev, a.id)
    assert reopened.document(tids[0]).to_json() == {"i": 0, "late": True}
