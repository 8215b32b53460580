"""Object tree details that mutation testing found unguarded (docs/testing.md): the heads
digest peers compare is exactly the documented hash, and a batch whose store write fails leaves
no trace among the waiting changes either."""

from __future__ import annotations

import hashlib

import pytest

from p2psync.errors import StoreError
from p2psync.replica.change import parse_change
from p2psync.replica.tree import AddResult, ObjectTree, heads_digest
from tests.replica_helpers import SPACE_ID, make_owner, random_dag

OWNER = make_owner(3)
BASE = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"root", timestamp=0)
DAG = random_dag(OWNER, BASE.id, 20, seed=9)


def fresh() -> ObjectTree:
    return ObjectTree.from_root(SPACE_ID, OWNER.gate(), BASE.root.raw)


def state(t: ObjectTree) -> tuple[object, ...]:
    return (t.heads, len(t), sorted(t.waiting_ids), [c.id for c in t.changes()])


def test_heads_digest_is_blake2b_256_of_the_sorted_heads() -> None:
    heads = [b"\x02" * 32, b"\x01" * 32, b"\x03" * 32]
    want = hashlib.blake2b(b"".join(sorted(heads)), digest_size=32).digest()
    assert heads_digest(heads) == want and heads_digest(reversed(heads)) == want


def test_failed_write_of_a_batch_with_waiting_changes_leaves_no_trace() -> None:
    t = fresh()
    t.add(DAG[:3])
    before = state(t)

    def boom(tree: ObjectTree, result: AddResult) -> None:
        raise StoreError("disk full")

    # DAG[3] attaches, the later ones wait for parents that are missing from the batch
    batch = [DAG[3], *DAG[8:12]]
    assert any(parse_change(r).prev_ids[0] not in {parse_change(x).id for x in DAG[:4]}
               for r in DAG[8:12])
    with pytest.raises(StoreError):
        t.add(batch, persist=boom)
    assert state(t) == before
    res = t.add(batch)  # and the same batch is accepted afterwards, waiting as before
    assert res.waiting and state(t) != before
    t.add(DAG)
    assert t.waiting_ids == []
