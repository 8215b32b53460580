"""The store conformance suite against every ReplicaStore implementation (SQLite on a temp
file, memory by name), plus ``open_store``'s URL handling."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync.errors import StoreError, UnknownStore
from p2psync.replica.memstore import MemoryStore
from p2psync.replica.storage import open_store
from p2psync.replica.store import SqliteStore
from tests.conformance.store_suite import StoreSuite
from tests.pg import fresh_schema, pg_server  # noqa: F401  (a fixture)


@pytest.fixture(params=["sqlite", "sqlite-url", "memory", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    kind = request.param
    if kind == "postgresql":  # a real server, a fresh schema per test
        yield fresh_schema(request.getfixturevalue("pg_server"))
    elif kind == "sqlite":
        yield str(tmp_path / "store.sqlite3")
    elif kind == "sqlite-url":
        yield f"sqlite://{tmp_path / 'store.sqlite3'}"
    else:
        name = uuid.uuid4().hex
        yield f"memory://{name}"
        MemoryStore.forget(name)


class TestEveryStore(StoreSuite):
    """Runs the whole suite once per implementation."""


def test_open_store_picks_the_implementation(tmp_path: Path) -> None:
    with open_store(tmp_path / "a.db") as s:
        assert isinstance(s, SqliteStore)
    with open_store(f"sqlite://{tmp_path / 'b.db'}") as s:
        assert isinstance(s, SqliteStore) and (tmp_path / "b.db").exists()
    with open_store("memory:") as a, open_store("memory:") as b:
        assert isinstance(a, MemoryStore)
        a.put_space("s", b"h")
        assert b.list_spaces() == []  # anonymous memory stores share nothing


def test_unknown_scheme_is_typed() -> None:
    with pytest.raises(UnknownStore, match="postgresql"):  # the message lists what exists
        open_store("mysql://backup@db/p2psync")
    assert issubclass(UnknownStore, StoreError)
