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
