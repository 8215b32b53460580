"""Writers make snapshots with default settings (replica/snapshots.py, issue 13 step 1)."""

from __future__ import annotations

from pathlib import Path

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.replica.acl_records import Role
from p2psync.replica.document import ROOT, Document
from p2psync.replica.snapshots import is_snapshot, latest_snapshot
from p2psync.replica.space import Space
from p2psync.replica.store import Store


def _space(tmp_path: Path, name: str = "a") -> Space:
    return Space.create(Store(tmp_path / f"{name}.sqlite3", durable=False),
                        AccountKey.generate(), DeviceKey.generate().public, window=0)


def _edit(doc: Document, n: int, start: int = 0) -> None:
    for j in range(start, start + n):
        with doc.edit() as e:
            e.put(ROOT, f"k{j}", j)


def _snapshots(space: Space, doc: Document) -> list[bytes]:
    return [c.id for c in doc.tree.changes() if is_snapshot(space.acl, c)]


def test_a_busy_writer_snapshots_by_default(tmp_path: Path) -> None:
    space = _space(tmp_path)
    doc = space.new_document()
    _edit(doc, 100)  # ~50 KB of changes: past the 32 KiB busy threshold once
    snaps = _snapshots(space, doc)
    assert len(snaps) >= 1
    assert latest_snapshot(doc.tree, space.acl) is not None
    # the snapshot is what the document opens from, and it reads the same
    again = Space.open(space.store, space.me, space.device, space.id)
    d2 = again.document(doc.tree.id)
    assert d2.to_json() == doc.to_json() and d2.loaded_snapshot == snaps[-1]


def test_policy_off_makes_none(tmp_path: Path) -> None:
    space = _space(tmp_path)
    doc = space.new_document()
    doc.snapshot_policy = None
    _edit(doc, 100)
    space.settle()
    assert _snapshots(space, doc) == []


def test_idle_documents_snapshot_on_settle_and_when_dropped(tmp_path: Path) -> None:
    space = _space(tmp_path)
    space.max_open_documents = 2
    docs = []
    for _ in range(3):
        docs.append(space.new_document())
        _edit(docs[-1], 12)  # ~6 KB: below the busy threshold, above the idle one
    # the first document left the open set when the third opened: it snapshotted then
    assert len(_snapshots(space, docs[0])) == 1
    assert _snapshots(space, docs[2]) == []
    space.settle()  # what the node does when it closes
    assert all(len(_snapshots(space, d)) == 1 for d in docs)
    # nothing written since: settling again makes none
    space.settle()
    assert all(len(_snapshots(space, d)) == 1 for d in docs)
    # the latest snapshot is the last change: a fetch from it verifies root + snapshot only
    assert all(latest_snapshot(d.tree, space.acl) == d.tree.changes()[-1] for d in docs)


def _joined(tmp_path: Path, role: Role) -> tuple[Space, Document]:
    """Bob's space, joined as ``role``, holding a document of ten edits Alice wrote (without
    snapshots), and that document on Alice's side."""
    a = _space(tmp_path, "a")
    invite, code = a.acl.invite(a.me, role, anyone_can_join=True)
    a.commit_acl(invite)
    doc = a.new_document()
    doc.snapshot_policy = None
    _edit(doc, 10)
    bob = AccountKey.generate()
    b = Space.adopt(Store(tmp_path / "b.sqlite3"), bob, DeviceKey.generate().public, a.id,
                    a.header.raw, a.acl_records(), window=0)
    b.emit_acl(lambda acl: acl.join(bob, code))
    a.add_acl_records(b.acl_records())
    b.add_changes(doc.tree.id, [c.raw for c in doc.tree.changes()])
    return b, doc


def test_a_reader_never_snapshots(tmp_path: Path) -> None:
    b, doc = _joined(tmp_path, Role.READER)
    assert b.document(doc.tree.id).to_json() == doc.to_json()
    n = len(b.tree(doc.tree.id))
    b.settle()
    assert len(b.tree(doc.tree.id)) == n


def test_a_writer_that_only_reads_a_document_does_not_snapshot_it(tmp_path: Path) -> None:
    b, doc = _joined(tmp_path, Role.WRITER)
    assert b.document(doc.tree.id).to_json() == doc.to_json()  # opened (materialised)
    n = len(b.tree(doc.tree.id))
    b.settle()
    assert len(b.tree(doc.tree.id)) == n
