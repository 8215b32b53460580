"""Shallow trees (snapshot-first fetch, docs/replica.md "Shallow trees"): sans-IO, no sockets.

A fresh member starts a tree from its root and a snapshot S whose parents it does not hold.
Every rule here is a way a lying responder or writer could abuse that, and each test fails
when the rule guarding it is switched off (see the report in docs/replica.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.codec import content_id
from p2psync.crypto import AccountKey, DeviceKey
from p2psync.crypto.box import ReadKey
from p2psync.errors import (
    AccessDenied,
    BadSignature,
    DecodeError,
    InvalidChange,
    ObjectDeleted,
    RemovedAuthor,
    StoreError,
    UnknownReadKey,
)
from p2psync.replica.acl_records import Role
from p2psync.replica.change import Change, build_change
from p2psync.replica.document import ROOT, Document
from p2psync.replica.snapshots import latest_snapshot
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from p2psync.replica.tree import ObjectTree


class World:
    """Alice (owner) writes; Bob (writer) fetches shallow; Carol is a reader; Dave a writer."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.alice = AccountKey.generate()
        self.a = Space.create(Store(tmp_path / "a.sqlite3", durable=False), self.alice,
                              DeviceKey.generate().public, window=0)
        self.members: dict[str, tuple[AccountKey, Space]] = {}
        for name, role in (("bob", Role.WRITER), ("carol", Role.READER),
                           ("dave", Role.WRITER)):
            self.members[name] = self.join(name, role)
        self.bob = self.members["bob"][1]

    def join(self, name: str, role: Role) -> tuple[AccountKey, Space]:
        invite, code = self.a.acl.invite(self.alice, role, anyone_can_join=True)
        self.a.commit_acl(invite)
        acc = AccountKey.generate()
        sp = Space.adopt(Store(self.tmp / f"{name}.sqlite3", durable=False), acc,
                         DeviceKey.generate().public, self.a.id, self.a.header.raw,
                         self.a.acl_records(), window=0)
        sp.emit_acl(lambda acl: acl.join(acc, code))
        self.a.add_acl_records(sp.acl_records())
        for _, other in self.members.values():
            other.add_acl_records(self.a.acl_records())
        sp.add_acl_records(self.a.acl_records())
        return acc, sp

    def sync_acl(self) -> None:
        for _, sp in self.members.values():
            sp.add_acl_records(self.a.acl_records())
            self.a.add_acl_records(sp.acl_records())
        for _, sp in self.members.values():
            sp.add_acl_records(self.a.acl_records())


def _edit(doc: Document, n: int, start: int = 0) -> None:
    for j in range(start, start + n):
        with doc.edit() as e:
            e.put(ROOT, f"k{j}", j)


def _doc_with_snapshot(space: Space, before: int = 30, after: int = 3) -> tuple[Document,
                                                                                Change]:
    doc = space.new_document()
    doc.snapshot_policy = None
    _edit(doc, before)
    snap = doc.snapshot()
    assert snap is not None
    _edit(doc, after, before)
    return doc, snap


def _after(doc: Document, snap: Change) -> list[bytes]:
    return [c.raw for c in doc.tree.changes_for([snap.id])]


def test_member_starts_shallow_and_reads_the_same(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    tid = doc.tree.id
    res = w.bob.add_base(tid, doc.tree.root.raw, snap.raw)
    assert res.base == snap.id and [c.id for c in res.attached] == [tid, snap.id]
    w.bob.add_changes(tid, _after(doc, snap))
    tree = w.bob.tree(tid)
    assert tree.shallow and len(tree) == 2 + 3 and tree.heads == doc.tree.heads
    assert w.bob.document(tid).to_json() == doc.to_json()
    # the shallow member serves snapshot-first answers itself
    heads, raws = w.bob.snapshot_answer(tid, 1 << 20) or ((), [])
    assert heads == doc.tree.heads and raws[:2] == [doc.tree.root.raw, snap.raw]


def test_the_answer_is_root_snapshot_and_what_follows(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    _heads, raws = w.a.snapshot_answer(doc.tree.id, 1 << 20) or ((), [])
    assert raws == [doc.tree.root.raw, snap.raw, *_after(doc, snap)] and len(raws) == 5
    plain = w.a.new_document()
    plain.snapshot_policy = None
    _edit(plain, 3)
    assert w.a.snapshot_answer(plain.tree.id, 1 << 20) is None  # no snapshot: whole tree
    # a backup (no read key) cannot find the snapshot: it answers with the whole tree
    assert latest_snapshot(doc.tree, w.members["carol"][1].acl) is not None  # reader can
    assert w.a.snapshot_answer(doc.tree.id, len(snap.raw)) is None  # root + S do not fit


def test_the_answer_from_stored_rows_equals_the_trees(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    tid = doc.tree.id
    in_memory = w.a.snapshot_answer(tid, 1 << 20)
    cold = Space.open(w.a.store, w.alice, w.a.device, w.a.id)  # nothing in memory
    assert cold.snapshot_answer(tid, 1 << 20) == in_memory is not None
    assert tid not in cold._trees  # answered without building the tree
    # a change outside the snapshot's past stored before it: the stored rows cannot tell
    # without the tree, so the whole tree is sent (the in-memory path still answers)
    acl = w.a.acl
    kid = acl.state.current_key_id
    key = acl.read_key(kid)
    assert key is not None
    heads = doc.tree.heads
    side = build_change(w.alice, key, b"c", space_id=w.a.id, tree_id=tid, prev_ids=heads,
                        acl_head=acl.heads[-1], read_key_id=kid)
    snap2 = build_change(w.alice, key, b"s", space_id=w.a.id, tree_id=tid, prev_ids=heads,
                         acl_head=acl.heads[-1], read_key_id=kid, snapshot=True)
    w.a.add_changes(tid, [side.raw])
    w.a.add_changes(tid, [snap2.raw])
    cold = Space.open(w.a.store, w.alice, w.a.device, w.a.id)
    assert cold.snapshot_answer(tid, 1 << 20) is None
    got = w.a.snapshot_answer(tid, 1 << 20)
    assert got is not None and got[1] == [doc.tree.root.raw, snap2.raw, side.raw]
    assert snap.id != snap2.id


def test_a_normal_change_is_no_base(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, _snap = _doc_with_snapshot(w.a)
    normal = doc.tree.changes()[-1]
    with pytest.raises(InvalidChange, match="snapshot"):
        w.bob.add_base(doc.tree.id, doc.tree.root.raw, normal.raw)
    assert not w.bob.has_tree(doc.tree.id) and w.bob.store.count_changes() == 0


def test_a_forged_base_is_refused(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    forged = bytearray(snap.raw)
    forged[-1] ^= 1  # the signature's last byte
    with pytest.raises((BadSignature, DecodeError)):
        w.bob.add_base(doc.tree.id, doc.tree.root.raw, bytes(forged))
    assert not w.bob.has_tree(doc.tree.id) and w.bob.store.count_changes() == 0


def _fake_snapshot(author: AccountKey, space: Space, doc: Document) -> Change:
    """A 'snapshot' signed by ``author`` on top of the document's heads (any content)."""
    acl = space.acl
    head = acl.heads[-1]
    kid = acl.state.current_key_id
    key = acl.read_key(kid)
    assert key is not None
    return build_change(author, key, b"\x93\x01\x90\x90", space_id=space.id,
                        tree_id=doc.tree.id, prev_ids=doc.tree.heads, acl_head=head,
                        read_key_id=kid, snapshot=True)


def test_a_non_writer_base_is_refused(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, _ = _doc_with_snapshot(w.a)
    carol, _ = w.members["carol"]
    fake = _fake_snapshot(carol, w.a, doc)  # a reader signs a snapshot
    with pytest.raises(AccessDenied):
        w.bob.add_base(doc.tree.id, doc.tree.root.raw, fake.raw)
    assert not w.bob.has_tree(doc.tree.id)


def test_a_removed_authors_base_is_refused(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, _ = _doc_with_snapshot(w.a)
    dave, _ = w.members["dave"]
    fake = _fake_snapshot(dave, w.a, doc)  # valid when made…
    w.a.emit_acl(lambda acl: acl.remove(w.alice, [dave.public]))  # …then dave is removed
    w.sync_acl()
    assert w.bob.acl.removed_after(dave.public, fake.acl_head) is not None
    assert w.bob.removal_policy == "flag"  # even so: a base is never a removed author's
    with pytest.raises(RemovedAuthor):
        w.bob.add_base(doc.tree.id, doc.tree.root.raw, fake.raw)
    assert not w.bob.has_tree(doc.tree.id)


def test_a_keyless_replica_never_goes_shallow(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    backup = AccountKey.generate()
    w.a.emit_acl(lambda acl: acl.add_replicator(w.alice, backup.public))
    r = Space.adopt(Store(tmp_path / "r.sqlite3"), backup, DeviceKey.generate().public,
                    w.a.id, w.a.header.raw, w.a.acl_records(), window=0)
    with pytest.raises(UnknownReadKey):
        r.add_base(doc.tree.id, doc.tree.root.raw, snap.raw)
    assert not r.has_tree(doc.tree.id)


def test_boundary_changes_attach_and_deeper_parents_wait(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a, after=0)
    tid = doc.tree.id
    w.bob.add_base(tid, doc.tree.root.raw, snap.raw)
    acl = w.a.acl
    kid = acl.state.current_key_id
    key = acl.read_key(kid)
    assert key is not None
    # concurrent with S: names S's own parents (S vouches for them) -> attaches, all checks
    conc = build_change(w.alice, key, b"x", space_id=w.a.id, tree_id=tid,
                        prev_ids=snap.prev_ids, acl_head=acl.heads[-1], read_key_id=kid)
    res = w.bob.add_changes(tid, [conc.raw])
    assert [c.id for c in res.attached] == [conc.id]
    # names a change deeper in S's past, which nothing vouches for here: waits
    deep = doc.tree.changes()[3]
    assert deep.id not in snap.prev_ids
    orphan = build_change(w.alice, key, b"y", space_id=w.a.id, tree_id=tid,
                          prev_ids=[deep.id], acl_head=acl.heads[-1], read_key_id=kid)
    res = w.bob.add_changes(tid, [orphan.raw])
    assert not res.attached and res.waiting == [orphan.id]
    # a parent of S arriving is known, not attached (it would become a false head)
    parent = doc.tree.get(snap.prev_ids[0])
    res = w.bob.add_changes(tid, [parent.raw])
    assert res.duplicates == [parent.id] and parent.id not in w.bob.tree(tid)
    # a forged change on the boundary is still refused
    bad = bytearray(conc.raw)
    bad[-1] ^= 1
    with pytest.raises((BadSignature, DecodeError)):
        w.bob.add_changes(tid, [bytes(bad)])


def test_store_reopen_accepts_the_base_and_nothing_else(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    tid = doc.tree.id
    w.bob.add_base(tid, doc.tree.root.raw, snap.raw)
    w.bob.add_changes(tid, _after(doc, snap))
    bob, _ = w.members["bob"]
    store = w.bob.store
    assert store.shallow_bases(tid) == {snap.id}
    again = Space.open(store, bob, w.bob.device, w.a.id)
    assert again.tree(tid).heads == doc.tree.heads and again.tree(tid).shallow
    assert again.document(tid).to_json() == doc.to_json()
    # without the base record the same rows are refused: a missing parent is corruption
    assert isinstance(store, Store)
    store._db.execute("DELETE FROM shallow")
    with pytest.raises(StoreError, match="corrupt or tampered"):
        Space.open(store, bob, w.bob.device, w.a.id).tree(tid)


def test_store_reopen_refuses_a_second_change_with_missing_parents(tmp_path: Path) -> None:
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    tid = doc.tree.id
    w.bob.add_base(tid, doc.tree.root.raw, snap.raw)
    bob, _ = w.members["bob"]
    store = w.bob.store
    assert isinstance(store, Store)
    deep = doc.tree.changes()[5]  # a change whose parents are not vouched for
    store._db.execute("INSERT INTO changes (tree_id, change_id, raw) VALUES (?, ?, ?)",
                      (tid, deep.id, deep.raw))
    with pytest.raises(StoreError, match="corrupt or tampered"):
        Space.open(store, bob, w.bob.device, w.a.id).tree(tid)


def test_a_keyless_replica_answers_with_the_whole_tree_without_looking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = World(tmp_path)
    doc, _ = _doc_with_snapshot(w.a)
    backup = AccountKey.generate()
    w.a.emit_acl(lambda acl: acl.add_replicator(w.alice, backup.public))
    r = Space.adopt(Store(tmp_path / "r.sqlite3"), backup, DeviceKey.generate().public,
                    w.a.id, w.a.header.raw, w.a.acl_records(), window=0)
    r.add_changes(doc.tree.id, [c.raw for c in doc.tree.changes()])
    cold = Space.open(r.store, backup, r.device, r.id)
    parsed: list[bytes] = []
    import p2psync.replica.space as space_mod

    real = space_mod.parse_stored_change

    def counting(raw: bytes, cid: bytes | None) -> Change:
        parsed.append(raw)
        return real(raw, cid)

    monkeypatch.setattr(space_mod, "parse_stored_change", counting)
    assert cold.snapshot_answer(doc.tree.id, 1 << 20) is None
    assert parsed == []  # no stored change was parsed to look for a snapshot it cannot see


@pytest.mark.parametrize("url", ["memory:", "sqlite"])
def test_stores_keep_bases_and_replace_shallow_trees(tmp_path: Path, url: str) -> None:
    from p2psync.replica.storage import open_store

    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    tid = doc.tree.id
    bob, _ = w.members["bob"]
    store = open_store(url if url != "sqlite" else tmp_path / "s.sqlite3")
    store.put_space(w.a.id, w.a.header.raw)
    store.add_acl_records(w.a.id, [(content_id(r), r) for r in w.a.acl_records()])
    sp = Space.open(store, bob, w.bob.device, w.a.id)
    sp.add_base(tid, doc.tree.root.raw, snap.raw)
    sp.add_changes(tid, _after(doc, snap))
    assert store.shallow_bases(tid) == {snap.id}
    again = Space.open(store, bob, w.bob.device, w.a.id)
    assert again.tree(tid).shallow and again.tree(tid).heads == doc.tree.heads
    full = ObjectTree.from_root(w.a.id, again.acl, doc.tree.root.raw)
    full.add([c.raw for c in doc.tree.changes()[1:]])
    again.complete_history(full)
    assert store.shallow_bases(tid) == frozenset()
    assert [c for c, _ in store.raw_changes(tid)] == [c.id for c in full.changes()]
    third = Space.open(store, bob, w.bob.device, w.a.id)
    assert not third.tree(tid).shallow and len(third.tree(tid)) == len(doc.tree)
    store.delete_trees([tid])
    assert store.shallow_bases(tid) == frozenset()


# --- the acceptance rule, condition by condition (mutation testing round 5, issue 21) -------
# Each test below was found by applying a hand mutant of that condition (docs/testing.md,
# "Mutation testing, round 5"): the rule had no test refusing exactly that base.


def _on_heads(w: World, doc: Document, *, snapshot: bool, version: int = 2,
              key: ReadKey | None = None, acl_head: bytes | None = None,
              prev: list[bytes] | None = None) -> Change:
    """A change by Alice (owner: may write) on the document's heads."""
    acl = w.a.acl
    kid = acl.state.current_key_id
    real = acl.read_key(kid)
    assert real is not None
    return build_change(w.alice, key or real, b"\x93\x01\x90\x90", space_id=w.a.id,
                        tree_id=doc.tree.id, prev_ids=prev or doc.tree.heads,
                        acl_head=acl_head or acl.heads[-1], read_key_id=kid,
                        snapshot=snapshot, version=version)


@pytest.mark.parametrize("version", [1, 2])
def test_a_base_must_say_snapshot_in_either_format(tmp_path: Path, version: int) -> None:
    """The flag decides, in the legacy clear header (format 1) as in the sealed part (format
    2): a normal change by a writer is no base (hand mutant: format 1's clear flag read as
    always set — any legacy change became a base)."""
    w = World(tmp_path)
    doc, _ = _doc_with_snapshot(w.a)
    tid = doc.tree.id
    with pytest.raises(InvalidChange, match="only from a snapshot"):
        w.bob.add_base(tid, doc.tree.root.raw, _on_heads(w, doc, snapshot=False,
                                                         version=version).raw)
    assert not w.bob.has_tree(tid)
    ok = _on_heads(w, doc, snapshot=True, version=version)
    assert w.bob.add_base(tid, doc.tree.root.raw, ok.raw).base == ok.id


def test_a_base_whose_sealed_part_does_not_open_is_refused(tmp_path: Path) -> None:
    """A format-2 change naming a read key held here but sealed under another key: its flag
    cannot be read, so it is no snapshot (hand mutant: a sealed part that fails to open
    counted as a snapshot — a writer could make any unreadable blob the base)."""
    w = World(tmp_path)
    doc, _ = _doc_with_snapshot(w.a)
    blob = _on_heads(w, doc, snapshot=True, key=ReadKey.generate())
    with pytest.raises(InvalidChange, match="only from a snapshot"):
        w.bob.add_base(doc.tree.id, doc.tree.root.raw, blob.raw)
    assert not w.bob.has_tree(doc.tree.id) and w.bob.store.count_changes() == 0


def test_a_base_naming_an_unknown_acl_head_is_refused(tmp_path: Path) -> None:
    """No ACL head to judge the author at: refused before any write check (hand mutant:
    the ``knows_head`` check dropped)."""
    w = World(tmp_path)
    doc, _ = _doc_with_snapshot(w.a)
    fake = _on_heads(w, doc, snapshot=True, acl_head=b"\x07" * 32)
    with pytest.raises(InvalidChange, match="ACL head this replica does not know"):
        w.bob.add_base(doc.tree.id, doc.tree.root.raw, fake.raw)
    assert not w.bob.has_tree(doc.tree.id)


def test_only_a_tree_holding_just_its_root_goes_shallow(tmp_path: Path) -> None:
    """``attach_base`` on a tree that holds or waits for more than its root, or with a base
    whose parents are all held, is refused and leaves the tree as it was (hand mutants: each
    guard of ``ObjectTree.attach_base`` dropped — a held tree could be made shallow, its
    history then counted as vouched-for)."""
    from p2psync.replica.snapshots import check_base

    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    acl = w.bob.acl

    def fresh() -> ObjectTree:
        return ObjectTree.from_root(w.a.id, acl, doc.tree.root.raw)

    def check(ch: Change) -> None:
        check_base(acl, ch)

    holding = fresh()
    holding.add([doc.tree.changes()[1].raw])
    waiting = fresh()
    waiting.add([doc.tree.changes()[3].raw])
    assert waiting.waiting_ids
    for tree in (holding, waiting):
        before = (tree.heads, len(tree), tree.waiting_ids)
        with pytest.raises(InvalidChange, match="nothing but its root"):
            tree.attach_base(snap.raw, check=check)
        assert (tree.heads, len(tree), tree.waiting_ids) == before and not tree.shallow
    on_root = _on_heads(w, doc, snapshot=True, prev=[doc.tree.id])  # its parent is held
    tree = fresh()
    with pytest.raises(InvalidChange, match="must name parents"):
        tree.attach_base(on_root.raw, check=check)
    assert not tree.shallow and len(tree) == 1
    assert fresh().attach_base(snap.raw, check=check).base == snap.id  # the control


def test_add_base_only_for_a_live_tree_not_held_with_its_own_root(tmp_path: Path) -> None:
    """``Space.add_base`` refuses a deleted object, a tree already held (a base must not turn
    held history into vouched-for history) and a root that is not the tree's (hand mutants:
    each of its three guards dropped)."""
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    tid = doc.tree.id
    other, _ = _doc_with_snapshot(w.a, before=2, after=0)
    with pytest.raises(InvalidChange, match="root first"):
        w.bob.add_base(tid, other.tree.root.raw, snap.raw)
    assert not w.bob.has_tree(tid)
    w.bob.add_changes(tid, [c.raw for c in doc.tree.changes()])
    with pytest.raises(InvalidChange, match="not held yet"):
        w.bob.add_base(tid, doc.tree.root.raw, snap.raw)
    assert not w.bob.tree(tid).shallow and len(w.bob.tree(tid)) == len(doc.tree)
    assert w.bob.store.shallow_bases(tid) == frozenset()
    dave = w.members["dave"][1]
    w.a.delete_objects([tid])
    dave.add_acl_records(w.a.acl_records())
    with pytest.raises(ObjectDeleted):
        dave.add_base(tid, doc.tree.root.raw, snap.raw)
    assert not dave.has_tree(tid)


def test_store_reopen_keeps_a_change_on_the_boundary(tmp_path: Path) -> None:
    """A change naming the base's own parents (concurrent with it) was accepted because the
    base vouches for them; store open accepts it again (mutant ``_stored_base`` 2: a parent
    the base vouches for refused at open — the shallow tree no longer opened)."""
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a, after=0)
    tid = doc.tree.id
    w.bob.add_base(tid, doc.tree.root.raw, snap.raw)
    conc = _on_heads(w, doc, snapshot=False, prev=list(snap.prev_ids))
    assert [c.id for c in w.bob.add_changes(tid, [conc.raw]).attached] == [conc.id]
    bob, _ = w.members["bob"]
    again = Space.open(w.bob.store, bob, w.bob.device, w.a.id).tree(tid)
    assert conc.id in again and again.heads == w.bob.tree(tid).heads and again.shallow


def test_a_shallow_trees_walks_stop_at_the_base(tmp_path: Path) -> None:
    """``past`` of the base holds the root (every change descends from it) but none of the
    base's unheld parents; ``changes_for`` a peer with nothing walks down to the base and
    stops there (mutants ``past`` 12, 14: the root left out of the base's past — the root's
    content then replayed over the snapshot; ``changes_for`` 40: an unheld parent walked
    into, KeyError while serving)."""
    w = World(tmp_path)
    doc, snap = _doc_with_snapshot(w.a)
    tid = doc.tree.id
    w.bob.add_base(tid, doc.tree.root.raw, snap.raw)
    w.bob.add_changes(tid, _after(doc, snap))
    tree = w.bob.tree(tid)
    assert tree.past([snap.id]) == {tid, snap.id}
    assert tree.past(list(tree.heads)) == {c.id for c in tree.changes()}
    assert [c.id for c in tree.changes_for([])] == [snap.id, *map(content_id,
                                                                   _after(doc, snap))]
