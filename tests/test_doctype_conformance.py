"""The document-type suite against every registered space type, and what an unknown type
means: the app path refuses with UnknownSpaceType, the sync path replicates as usual."""

from __future__ import annotations

import pytest

from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.errors import UnknownSpaceType
from p2psync.replica import doctype
from p2psync.replica.memstore import MemoryStore
from p2psync.replica.space import Space
from p2psync.replica.tree import ObjectTree
from tests.conformance.doctype_suite import DoctypeSuite


@pytest.fixture(params=doctype.space_types())
def space_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestEveryDoctype(DoctypeSuite):
    """Runs the whole suite once per registered space type."""


def test_automerge_is_the_default() -> None:
    assert doctype.doctype_for("default") is doctype.AUTOMERGE
    assert {"default", "automerge"} <= set(doctype.space_types())


def test_unknown_space_type_refuses_documents_but_replicates() -> None:
    owner = AccountKey.generate()
    a = Space.create(MemoryStore(), owner, DeviceKey.generate().public, space_type="x-future")
    with pytest.raises(UnknownSpaceType, match="x-future"):
        a.new_document()
    assert a.tree_ids() == []  # refused before anything was written
    # objects of the unknown type made elsewhere still sync through this device
    tree = ObjectTree.create(a.id, a.acl, owner, b"opaque payload of the future type")
    copy = Space.adopt(MemoryStore(), owner, DeviceKey.generate().public, a.id, a.header.raw,
                       a.acl_records())
    copy.add_changes(tree.id, [tree.root.raw])
    assert copy.tree_ids() == [tree.id]
    with pytest.raises(UnknownSpaceType):
        copy.document(tree.id)


def test_registering_a_taken_type_needs_replace() -> None:
    with pytest.raises(ValueError):
        doctype.register_doctype("default", doctype.AutomergeType())
    doctype.register_doctype("test-am", doctype.AutomergeType())
    try:
        a = Space.create(MemoryStore(), AccountKey.generate(), DeviceKey.generate().public,
                         space_type="test-am")
        assert a.new_document().tree.id in a.tree_ids()
    finally:
        doctype.unregister_doctype("test-am")
