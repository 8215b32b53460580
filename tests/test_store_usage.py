"""Running quota totals of the SQLite store (issue 13): a backup reads them at start instead of
scanning every stored change, so they must equal the scan after any sequence of writes — by
this version, or by code that only knows the original schema — and a store made before the
totals existed gets them on its first open."""

from __future__ import annotations

import random
from pathlib import Path

from p2psync.replica.store import Store
from p2psync.replica.tree import ObjectTree
from tests.replica_helpers import SPACE_ID, make_owner, random_dag

OWNER = make_owner(6)
TREES = [ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"r%d" % i, timestamp=i)
         for i in range(3)]
DAGS = [random_dag(OWNER, t.id, 15, seed=i) for i, t in enumerate(TREES)]


def _fill(store: Store, space: str = SPACE_ID) -> None:
    for t, dag in zip(TREES, DAGS, strict=True):
        tree = ObjectTree.from_root(SPACE_ID, OWNER.gate(), t.root.raw)
        store.save_changes(space, tree.id, tree.changes(), tree.heads)
        tree.add(dag, persist=lambda tr, res: store.save_changes(
            space, tr.id, res.attached, res.heads))


def test_totals_follow_every_write_and_equal_the_scan(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as s:
        assert s.space_usage() == {}
        _fill(s)
        _fill(s)  # resent changes are no-ops, for the totals too
        _fill(s, "other.1")  # the same bytes in a second space
        assert s.space_usage() == s.space_usage_scan()
        assert s.space_usage()[SPACE_ID] == (
            sum(len(r) for dag in DAGS for r in dag) + sum(len(t.root.raw) for t in TREES),
            sum(len(d) for d in DAGS) + len(TREES))
        s.delete_trees([TREES[0].id])
        assert s.space_usage() == s.space_usage_scan()
        s.forget_space("other.1")
        assert s.space_usage() == s.space_usage_scan() and "other.1" not in s.space_usage()
        s.delete_trees([t.id for t in TREES])
        assert s.space_usage() == {} == s.space_usage_scan()


def test_writes_by_code_that_knows_only_the_old_schema_keep_the_totals(tmp_path: Path) -> None:
    """The totals are kept by triggers in the file, so an older p2psync writing it (plain
    inserts and deletes on ``changes``) cannot make them stale."""
    rng = random.Random(3)
    with Store(tmp_path / "a.db") as s:
        _fill(s)
        db = s._db
        db.execute("INSERT INTO trees VALUES (?, ?)", (b"\x07" * 32, "old.1"))
        for i in range(20):
            db.execute("INSERT INTO changes (tree_id, change_id, raw) VALUES (?, ?, ?)",
                       (b"\x07" * 32, bytes([i]) * 32, rng.randbytes(rng.randrange(1, 300))))
        db.execute("DELETE FROM changes WHERE change_id = ?", (bytes([5]) * 32,))
        db.execute("DELETE FROM changes WHERE tree_id = ?", (TREES[1].id,))
        assert s.space_usage() == s.space_usage_scan()
        assert s.space_usage()["old.1"][1] == 19


def test_a_store_made_before_the_totals_gets_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with Store(path) as s:
        _fill(s)
        want = s.space_usage_scan()
        for stmt in ("DROP TRIGGER usage_add", "DROP TRIGGER usage_del", "DROP TABLE usage"):
            s._db.execute(stmt)  # what a store of the previous version looks like
    with Store(path) as s:
        assert s.space_usage() == want
        s.delete_trees([TREES[2].id])
        assert s.space_usage() == s.space_usage_scan()
