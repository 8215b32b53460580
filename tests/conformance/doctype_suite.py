"""Conformance suite of the document-type seam (:class:`p2psync.replica.doctype.DocumentType`).

Use: subclass :class:`DoctypeSuite` in a test module providing a ``space_type`` fixture (a
registered type). Checks: the registry returns a declared ``DocumentType``; a new object's
root plaintext is stable and opens as a ``ReplicaDocument`` over that very tree; flushing with
nothing pending makes no change; receiving nothing changes nothing; a second replica of the
same space opens the same object from the synced tree alone.
"""

from __future__ import annotations

from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.replica.doctype import DocumentType, ReplicaDocument, doctype_for
from p2psync.replica.memstore import MemoryStore
from p2psync.replica.space import Space
from p2psync.replica.tree import ObjectTree


def _space(space_type: str) -> Space:
    return Space.create(MemoryStore(), AccountKey.generate(), DeviceKey.generate().public,
                        space_type=space_type)


class DoctypeSuite:
    """Every document type passes these. Needs a ``space_type`` fixture."""

    def test_registered_as_a_declared_document_type(self, space_type: str) -> None:
        dt = doctype_for(space_type)
        assert isinstance(dt, DocumentType) and dt.name
        assert dt.root_plaintext() == dt.root_plaintext()  # stable: no clock, no randomness

    def test_opens_a_new_object_over_its_tree(self, space_type: str) -> None:
        space = _space(space_type)
        dt = doctype_for(space_type)
        tree = ObjectTree.create(space.id, space.acl, space.me, dt.root_plaintext())
        doc = dt.open(tree, space.me, space.device, window=0.0)
        assert isinstance(doc, ReplicaDocument) and doc.tree is tree
        assert doc.flush() is None  # nothing pending: no change made
        assert len(tree) == 1
        res = doc.receive([])
        assert res.attached == [] and len(tree) == 1

    def test_a_second_replica_opens_the_synced_object(self, space_type: str) -> None:
        a = _space(space_type)
        dt = doctype_for(space_type)
        tree = ObjectTree.create(a.id, a.acl, a.me, dt.root_plaintext())
        b = Space.adopt(MemoryStore(), a.me, DeviceKey.generate().public, a.id, a.header.raw,
                        a.acl_records())
        b.add_changes(tree.id, [tree.root.raw])
        doc = dt.open(b.tree(tree.id), b.me, b.device)
        assert doc.tree.heads == tree.heads
