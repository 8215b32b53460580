"""SQLite store: schema, round trips, tampering, locking, full disk, newer schema."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync.errors import BadSignature, P2PSyncError, SchemaTooNew, StoreError
from p2psync.replica.document import ROOT, Document, encode_payload
from p2psync.replica.store import SCHEMA_VERSION, Store
from p2psync.replica.tree import ObjectTree
from tests.replica_helpers import SPACE_ID, make_owner, random_dag

OWNER = make_owner(4)
ROOT_TREE = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"r", timestamp=0)
DAG = random_dag(OWNER, ROOT_TREE.id, 12, seed=9)


def stored_tree(path: Path) -> tuple[Store, ObjectTree]:
    store = Store(path)
    tree = ObjectTree.from_root(SPACE_ID, OWNER.gate(), ROOT_TREE.root.raw)
    store.save_tree(tree)
    tree.add(DAG, persist=store.persister())
    return store, tree


def test_pragmas_and_schema_version(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as s:
        q = s._db.execute
        assert q("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert q("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert q("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s.integrity_check() == "ok"


def test_newer_schema_is_refused_and_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match="upgrade p2psync"):
        Store(path)
    assert path.read_bytes() == before


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="corrupt"):
        Store(path)


def test_spaces_and_acl_records(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as s:
        s.put_space("sp.1", b"header")
        s.put_space("sp.1", b"header")
        assert s.get_space("sp.1") == b"header" and s.get_space("nope") is None
        assert s.list_spaces() == ["sp.1"]
        assert s.add_acl_records("sp.1", [(b"2" * 32, b"two"), (b"1" * 32, b"one")]) == 2
        assert s.add_acl_record("sp.1", b"1" * 32, b"one") is False
        assert s.list_acl_records("sp.1") == [(b"2" * 32, b"two"), (b"1" * 32, b"one")]
        assert s.list_acl_records("other") == []


def test_tree_round_trip_keeps_raw_bytes(tmp_path: Path) -> None:
    store, tree = stored_tree(tmp_path / "a.db")
    store.close()
    with Store(tmp_path / "a.db") as s:
        assert s.list_trees(SPACE_ID) == [tree.id]
        assert s.get_heads(tree.id) == tree.heads
        assert {r for _, r in s.raw_changes(tree.id)} == {c.raw for c in tree.changes()}
        again = s.load_tree(SPACE_ID, tree.id, OWNER.gate(), verify_signatures=True)
        assert again.heads == tree.heads and len(again) == len(tree)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_flipped_bit_in_stored_change_is_caught(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / f"t{data.draw(st.integers(0, 10**9))}.db"
    store, tree = stored_tree(path)
    seq, raw = store._db.execute(
        "SELECT seq, raw FROM changes ORDER BY seq LIMIT 1 OFFSET ?",
        (data.draw(st.integers(0, len(DAG))),)).fetchone()
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    bad = bytearray(raw)
    bad[bit // 8] ^= 1 << (bit % 8)
    store._db.execute("UPDATE changes SET raw = ? WHERE seq = ?", (bytes(bad), seq))
    with pytest.raises(StoreError, match="corrupt or tampered"):
        store.load_tree(SPACE_ID, tree.id, OWNER.gate())
    store.close()


def test_rejected_change_leaves_store_unchanged(tmp_path: Path) -> None:
    store, tree = stored_tree(tmp_path / "a.db")
    new = tree.create_change(OWNER.account, b"n")  # not persisted: a fresh change to offer
    other = ObjectTree.from_trusted(SPACE_ID, OWNER.gate(),
                                    store.raw_changes(tree.id))
    before = (store.count_changes(), store.get_heads(tree.id))
    bad = bytearray(new.raw)
    bad[-3] ^= 0x10  # in the signature
    with pytest.raises(BadSignature):
        other.add([bytes(bad)], persist=store.persister())
    for cut in (1, len(new.raw) // 2):
        with pytest.raises(P2PSyncError):
            other.add([new.raw[:-cut]], persist=store.persister())
    assert (store.count_changes(), store.get_heads(tree.id)) == before
    other.add([new.raw], persist=store.persister())
    assert store.get_heads(tree.id) == (new.id,)
    store.close()


def test_locked_database_gives_store_error(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        s = Store(path, timeout=0.05)
        with pytest.raises(StoreError, match="locked"):
            s.put_space("x", b"y")
        s.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_full_disk_gives_store_error_and_memory_rolls_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    tree = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, encode_payload([], []))
    store.save_tree(tree)
    doc = Document(tree, OWNER.account, b"D" * 32, window=0, persist=store.persister())
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages + 2}")  # a nearly full "disk"
    heads = tree.heads
    with pytest.raises(StoreError, match="disk is full"), doc.edit() as e:
        e.put(ROOT, "big", os.urandom(60_000))  # incompressible
    assert tree.heads == heads and store.get_heads(tree.id) == heads
    assert doc.pending == 1  # kept, flushed once there is room again
    store._db.execute("PRAGMA max_page_count=1000000")
    assert doc.flush() is not None and store.get_heads(tree.id) == tree.heads
    store.close()
