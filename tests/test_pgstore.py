"""The PostgreSQL store beyond the conformance suite: several processes sharing one database
(issue 19) — pushes of the same changes through several connections at once store each change
once, and concurrent branches written by different processes keep every head."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from p2psync.errors import SchemaTooNew, StoreError
from p2psync.replica.change import build_change
from p2psync.replica.pgstore import PgStore
from p2psync.replica.storage import open_store
from tests.conformance.store_suite import DAG_A, OWNER, TREE_A, fresh
from tests.pg import fresh_schema, pg_server  # noqa: F401  (a fixture)
from tests.replica_helpers import SPACE_ID


@pytest.fixture
def url(pg_server: str) -> str:  # noqa: F811
    return fresh_schema(pg_server)


def _child(parent: bytes, text: bytes) -> bytes:
    return build_change(OWNER.account, OWNER.key, text, space_id=SPACE_ID, tree_id=TREE_A.id,
                        prev_ids=[parent], acl_head=OWNER.acl_root,
                        read_key_id=OWNER.acl_root, timestamp=1).raw


def test_two_processes_writing_two_branches_keep_both_heads(url: str) -> None:
    with open_store(url) as a, open_store(url) as b:
        ta, tb = fresh(TREE_A), fresh(TREE_A)
        a.save_tree(ta)
        b.save_tree(tb)
        ta.add([_child(TREE_A.id, b"from a")], persist=a.persister())
        tb.add([_child(TREE_A.id, b"from b")], persist=b.persister())
        both = set(ta.heads) | set(tb.heads)
        assert len(both) == 2
        assert set(a.get_heads(TREE_A.id)) == both  # last writer did not win
        loaded = a.load_tree(SPACE_ID, TREE_A.id, OWNER.gate())
        assert set(loaded.heads) == both


def test_concurrent_pushes_of_one_history_store_each_change_once(url: str) -> None:
    expected = fresh(TREE_A)
    expected.add(DAG_A)
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def push() -> None:
        try:
            with open_store(url) as s:
                t = fresh(TREE_A)
                start.wait()
                s.save_tree(t)
                for raw in DAG_A:  # one change per transaction: maximal interleaving
                    t.add([raw], persist=s.persister())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with open_store(url) as s:
        assert s.count_changes(TREE_A.id) == len(DAG_A) + 1
        assert s.get_heads(TREE_A.id) == expected.heads
        assert s.load_tree(SPACE_ID, TREE_A.id, OWNER.gate(), verify_signatures=True).heads \
            == expected.heads


def test_a_newer_schema_is_refused_untouched(url: str) -> None:
    with PgStore(url) as s:
        s._query("UPDATE p2psync_meta SET value = 99 WHERE key = 'schema'", fetch=False)
    with pytest.raises(SchemaTooNew, match="upgrade p2psync"):
        PgStore(url)


def test_an_unreachable_server_is_a_typed_error_without_the_password(tmp_path: Path) -> None:
    bad = f"postgresql://u:secret@/x?host={tmp_path}&port=1"
    with pytest.raises(StoreError, match="cannot connect") as exc:
        open_store(bad)
    assert "secret" not in str(exc.value)

