"""Conformance suite of the store seam (:class:`p2psync.replica.storage.ReplicaStore`).

Use: subclass :class:`StoreSuite` in a test module providing a ``store_url`` fixture (what
:func:`~p2psync.replica.storage.open_store` opens; opening it again must reach the same data).
It checks the contract written on the protocol: round trips of bytes exactly as given, storage
order, idempotent writes, **atomic writes** (a write that raises midway leaves nothing behind —
what keeps a tree's memory and disk equal after a failed persist), tombstone deletion, usage
totals, trusted loading that catches tampering and stale heads, data kept across close/reopen,
and typed failures after close.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from p2psync.errors import StoreError
from p2psync.replica.storage import ReplicaStore, open_store
from p2psync.replica.tree import ObjectTree
from tests.replica_helpers import SPACE_ID, make_owner, random_dag

OWNER = make_owner(7)
TREE_A = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"a", timestamp=0)
TREE_B = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"b", timestamp=1)
DAG_A = random_dag(OWNER, TREE_A.id, 25, seed=3)
DAG_B = random_dag(OWNER, TREE_B.id, 6, seed=4)


def fresh(tree: ObjectTree) -> ObjectTree:
    return ObjectTree.from_root(SPACE_ID, OWNER.gate(), tree.root.raw)


def grown(store: ReplicaStore, tree: ObjectTree, dag: list[bytes]) -> ObjectTree:
    """Store a tree's root, then its DAG through the persist hook, as Space does."""
    t = fresh(tree)
    store.save_tree(t)
    t.add(dag, persist=store.persister())
    return t


class _Exploding:
    """A change-like whose bytes cannot be read: a write that fails halfway through."""

    id = b"\x01" * 32

    @property
    def raw(self) -> bytes:
        raise RuntimeError("disk vanished mid-batch")


class StoreSuite:
    """Every store passes these. Needs a ``store_url`` fixture."""

    @pytest.fixture
    def store(self, store_url: str) -> Any:
        s = open_store(store_url)
        yield s
        s.close()

    # --- spaces and ACL records ------------------------------------------------------------
    def test_is_a_replica_store(self, store: ReplicaStore) -> None:
        assert isinstance(store, ReplicaStore)
        assert store.label

    def test_spaces(self, store: ReplicaStore) -> None:
        assert store.list_spaces() == [] and store.get_space("s.b") is None
        store.put_space("s.b", b"header-b")
        store.put_space("s.a", b"header-a")
        store.put_space("s.b", b"another header")  # first wins; a resend is a no-op
        assert store.list_spaces() == ["s.a", "s.b"]
        assert store.get_space("s.b") == b"header-b"

    def test_acl_records_keep_arrival_order_and_ignore_resends(self,
                                                               store: ReplicaStore) -> None:
        assert store.add_acl_records("s", [(b"z", b"rz"), (b"a", b"ra")]) == 2
        assert store.add_acl_records("s", [(b"a", b"ra"), (b"m", b"rm")]) == 1
        assert store.add_acl_record("s", b"b", b"rb") is True
        assert store.add_acl_record("s", b"b", b"rb") is False
        assert store.add_acl_records("other", [(b"a", b"other-a")]) == 1
        assert store.list_acl_records("s") == [(b"z", b"rz"), (b"a", b"ra"), (b"m", b"rm"),
                                               (b"b", b"rb")]
        assert store.list_acl_records("other") == [(b"a", b"other-a")]
        assert store.list_acl_records("none") == []

    # --- trees -----------------------------------------------------------------------------
    def test_tree_round_trip_keeps_bytes_order_and_heads(self, store: ReplicaStore) -> None:
        tree = grown(store, TREE_A, DAG_A)
        assert store.list_trees(SPACE_ID) == [TREE_A.id] and store.list_trees("x") == []
        assert store.get_heads(TREE_A.id) == tree.heads
        assert store.get_heads(b"\0" * 32) == ()
        raws = store.raw_changes(TREE_A.id)
        assert raws[0] == (TREE_A.id, TREE_A.root.raw)
        assert {r for _, r in raws} == {TREE_A.root.raw, *DAG_A}
        by_id = {c.id: c for c in tree.changes()}
        seen: set[bytes] = set()
        for cid, raw in raws:  # storage order is topological: parents first
            ch = by_id[cid]
            assert ch.raw == raw and all(p in seen for p in ch.prev_ids)
            seen.add(cid)
        assert store.count_changes(TREE_A.id) == len(DAG_A) + 1
        assert store.count_changes() == len(DAG_A) + 1
        assert store.has_change(TREE_A.id, tree.heads[0])
        assert not store.has_change(TREE_B.id, tree.heads[0])
        loaded = store.load_tree(SPACE_ID, TREE_A.id, OWNER.gate())
        assert loaded.heads == tree.heads and len(loaded) == len(tree)

    def test_saving_known_changes_again_is_a_no_op(self, store: ReplicaStore) -> None:
        tree = grown(store, TREE_A, DAG_A)
        before = store.raw_changes(TREE_A.id)
        store.save_changes(SPACE_ID, TREE_A.id, list(tree.changes())[::-1], tree.heads)
        assert store.raw_changes(TREE_A.id) == before

    def test_heads_are_replaced_not_merged(self, store: ReplicaStore) -> None:
        t = fresh(TREE_A)
        store.save_tree(t)
        t.add(DAG_A[:5], persist=store.persister())
        t.add(DAG_A[5:], persist=store.persister())
        assert store.get_heads(TREE_A.id) == t.heads

    # --- atomicity -------------------------------------------------------------------------
    def test_a_failing_change_batch_leaves_nothing(self, store: ReplicaStore) -> None:
        tree = grown(store, TREE_A, DAG_A[:10])
        extra = fresh(TREE_A)
        extra.add(DAG_A)
        more = [c for c in extra.changes() if not store.has_change(TREE_A.id, c.id)]
        batch: list[Any] = [*more[:3], _Exploding(), *more[3:]]
        before = (store.raw_changes(TREE_A.id), store.get_heads(TREE_A.id))
        with pytest.raises(Exception, match="disk vanished"):
            store.save_changes(SPACE_ID, TREE_A.id, batch, extra.heads)
        assert (store.raw_changes(TREE_A.id), store.get_heads(TREE_A.id)) == before
        # a new tree whose first batch fails does not appear at all
        with pytest.raises(Exception, match="disk vanished"):
            store.save_changes(SPACE_ID, TREE_B.id, [TREE_B.root, _Exploding()],
                               TREE_B.heads)
        assert store.list_trees(SPACE_ID) == [TREE_A.id]
        assert store.count_changes(TREE_B.id) == 0
        assert tree.heads == store.get_heads(TREE_A.id)

    def test_a_failed_persist_rolls_the_tree_back_too(self, store: ReplicaStore) -> None:
        tree = grown(store, TREE_A, DAG_A[:10])
        heads = tree.heads

        def broken(t: ObjectTree, res: Any) -> None:
            store.save_changes(t.space_id, t.id, [*res.attached[:1], _Exploding()], res.heads)

        with pytest.raises(Exception, match="disk vanished"):
            tree.add(DAG_A[10:], persist=broken)
        assert tree.heads == heads == store.get_heads(TREE_A.id)
        assert store.load_tree(SPACE_ID, TREE_A.id, OWNER.gate()).heads == heads

    def test_a_failing_acl_batch_leaves_nothing(self, store: ReplicaStore) -> None:
        store.add_acl_records("s", [(b"a", b"ra")])
        bad: list[Any] = [(b"b", b"rb"), (b"c", object())]
        with pytest.raises(StoreError):
            store.add_acl_records("s", bad)
        assert store.list_acl_records("s") == [(b"a", b"ra")]

    # --- deletion and usage ----------------------------------------------------------------
    def test_delete_trees_and_usage(self, store: ReplicaStore) -> None:
        grown(store, TREE_A, DAG_A)
        grown(store, TREE_B, DAG_B)
        store.save_tree(fresh(TREE_A))  # a tree of another space
        size_a = len(TREE_A.root.raw) + sum(map(len, DAG_A))
        size_b = len(TREE_B.root.raw) + sum(map(len, DAG_B))
        assert store.space_usage() == {SPACE_ID: (size_a + size_b, len(DAG_A) + len(DAG_B) + 2)}
        store.delete_trees([])
        store.delete_trees([TREE_A.id])
        assert store.list_trees(SPACE_ID) == [TREE_B.id]
        assert store.get_heads(TREE_A.id) == () and store.count_changes(TREE_A.id) == 0
        assert store.space_usage() == {SPACE_ID: (size_b, len(DAG_B) + 1)}
        with pytest.raises(StoreError):
            store.load_tree(SPACE_ID, TREE_A.id, OWNER.gate())
        store.delete_trees([TREE_B.id, b"\0" * 32])
        assert store.space_usage() == {} and store.count_changes() == 0

    def test_usage_counts_chunk_bytes_once(self, store: ReplicaStore) -> None:
        """A backup resets its quota tally from ``space_usage`` after a tombstone, so the
        chunks of the files still held must be in it (each ciphertext once, as the backup
        counted it when storing), and leave it with their file or their space."""
        grown(store, TREE_A, DAG_A)
        changes = len(TREE_A.root.raw) + sum(map(len, DAG_A))
        c1, c2, c3 = (bytes([i]) * (100 * i + 7) for i in (1, 2, 3))
        assert store.put_chunks(SPACE_ID, TREE_A.id, [(b"\x01" * 32, c1),
                                                      (b"\x02" * 32, c2)]) == 2
        store.put_chunks(SPACE_ID, TREE_A.id, [(b"\x01" * 32, c1)])  # known: not twice
        store.put_chunks(SPACE_ID, TREE_B.id, [(b"\x03" * 32, c3)])  # a file not held (yet)
        store.put_chunks("other", b"\x09" * 32, [(b"\x04" * 32, c1)])  # chunks only
        assert store.space_usage() == {SPACE_ID: (changes + len(c1) + len(c2) + len(c3),
                                                  len(DAG_A) + 1),
                                       "other": (len(c1), 0)}
        store.delete_trees([TREE_B.id])  # a tombstone of the file: its chunks go
        assert store.space_usage()[SPACE_ID] == (changes + len(c1) + len(c2), len(DAG_A) + 1)
        store.delete_chunks([b"\x02" * 32])
        assert store.space_usage()[SPACE_ID] == (changes + len(c1), len(DAG_A) + 1)
        store.forget_space("other")
        store.delete_trees([TREE_A.id])
        assert store.space_usage() == {}

    def test_forget_space_drops_only_that_space(self, store: ReplicaStore) -> None:
        store.put_space(SPACE_ID, b"hdr")
        store.put_space("other", b"hdr2")
        store.add_acl_records(SPACE_ID, [(b"r", b"raw")])
        store.add_acl_records("other", [(b"r", b"raw")])
        grown(store, TREE_A, DAG_A)
        store.save_changes("other", TREE_B.id, [TREE_B.root], [TREE_B.id])
        store.forget_space(SPACE_ID)
        assert store.list_spaces() == ["other"] and store.get_space(SPACE_ID) is None
        assert store.list_acl_records(SPACE_ID) == [] and store.list_trees(SPACE_ID) == []
        assert store.count_changes(TREE_A.id) == 0 and store.get_heads(TREE_A.id) == ()
        assert store.list_acl_records("other") == [(b"r", b"raw")]
        assert store.list_trees("other") == [TREE_B.id] and store.count_changes() == 1
        store.forget_space("never-held")  # a no-op

    # --- trusted load ----------------------------------------------------------------------
    def test_load_catches_tampered_bytes_and_stale_heads(self, store: ReplicaStore) -> None:
        root = TREE_A.root
        forged: Any = SimpleNamespace(id=root.id, raw=root.raw[:-1] + bytes([root.raw[-1] ^ 1]))
        store.save_changes(SPACE_ID, root.id, [forged], [root.id])
        with pytest.raises(StoreError, match="corrupt or tampered"):
            store.load_tree(SPACE_ID, root.id, OWNER.gate())
        store.save_changes(SPACE_ID, TREE_B.id, [TREE_B.root], [b"\x02" * 32])
        with pytest.raises(StoreError, match="heads"):
            store.load_tree(SPACE_ID, TREE_B.id, OWNER.gate())
        with pytest.raises(StoreError):
            store.load_tree(SPACE_ID, b"\x03" * 32, OWNER.gate())

    # --- lifetime --------------------------------------------------------------------------
    def test_everything_survives_close_and_reopen(self, store_url: str) -> None:
        with open_store(store_url) as s:
            s.put_space(SPACE_ID, b"hdr")
            s.add_acl_records(SPACE_ID, [(b"r", b"raw")])
            tree = grown(s, TREE_A, DAG_A)
        with open_store(store_url) as s:
            assert s.get_space(SPACE_ID) == b"hdr"
            assert s.list_acl_records(SPACE_ID) == [(b"r", b"raw")]
            assert s.load_tree(SPACE_ID, TREE_A.id, OWNER.gate()).heads == tree.heads

    def test_use_after_close_is_a_store_error(self, store_url: str) -> None:
        s = open_store(store_url)
        s.close()
        with pytest.raises(StoreError):
            s.list_spaces()
        with pytest.raises(StoreError):
            s.put_space("x", b"h")
        with pytest.raises(StoreError):
            s.save_tree(fresh(TREE_A))
