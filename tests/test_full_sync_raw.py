"""A full sync to a peer that has nothing is served from stored bytes, without parsing a tree.

Parsing and re-hashing every change to send its bytes back was ~73 % of a source's time in
initial sync (docs/performance.md). The receiver still verifies everything it gets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.replica.document import ROOT
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from p2psync.replica.tree import ObjectTree


def test_full_sync_of_a_stored_tree_builds_no_object_tree(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    me, dev = AccountKey.generate(), DeviceKey.generate().public
    store = Store(tmp_path / "a.sqlite3")
    space = Space.create(store, me, dev, window=0)
    doc = space.new_document()
    for i in range(20):
        with doc.edit() as e:
            e.put(ROOT, f"k{i % 3}", i)
    want = [c.raw for c in doc.tree.changes_for(())]
    heads = doc.tree.heads
    store.close()

    again = Space.open(Store(tmp_path / "a.sqlite3"), me, dev, space.id)

    def no_parse(*a: object, **k: object) -> ObjectTree:
        raise AssertionError("a full sync from the store built an ObjectTree")

    monkeypatch.setattr(ObjectTree, "from_trusted", no_parse)
    got_heads, raws = again.full_sync_raws(doc.tree.id)
    assert got_heads == heads
    assert sorted(raws) == sorted(want)
    monkeypatch.undo()

    # what was served is complete and in an order a fresh replica verifies and attaches
    other = Store(tmp_path / "b.sqlite3")
    fresh = Space.adopt(other, me, DeviceKey.generate().public, space.id, space.header.raw,
                        space.acl_records(), window=0)
    fresh.add_changes(doc.tree.id, raws)
    assert fresh.tree(doc.tree.id).heads == heads
    assert fresh.document(doc.tree.id).to_json() == {"k0": 18, "k1": 19, "k2": 17}
