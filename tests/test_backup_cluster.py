"""The backup on PostgreSQL (issue 19, docs/backup-cluster.md): ``[replicator] store =
"postgresql://…"`` makes ``p2psync backup run`` keep what it stores in the database; the
database's files hold no plaintext; a second process with the same identity on the same
database serves the same backup (its receipts verify as the same account)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.backup_helpers import (
    MarkedBackup,
    assert_no_plaintext,
    back_up_marked_space,
    edit,
    free_udp_port,
    new_marker,
    receipt,
    start_backup,
)
from tests.guards import encryption_off
from tests.netns import JsonLinesProcess
from tests.pg import fresh_schema, pg_server  # noqa: F401  (a fixture)
from tests.sync_helpers import close_all, make_node, wait_any


@pytest.fixture
async def procs() -> AsyncIterator[list[JsonLinesProcess]]:
    started: list[JsonLinesProcess] = []
    try:
        yield started
    finally:
        for p in started:
            await p.aclose()


def data_directory(url: str) -> Path:
    """The server's data directory, after a checkpoint (every page written to its files)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CHECKPOINT")
        row = db.execute("SHOW data_directory").fetchone()
    assert row is not None
    return Path(row[0])


def stored_changes(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as db:
        row = db.execute("SELECT count(*) FROM changes").fetchone()
    assert row is not None
    return int(row[0])


async def second_process(mb: MarkedBackup, home2: Path,
                         url: str) -> tuple[JsonLinesProcess, dict[str, Any]]:
    """Another ``backup run`` of the same backup: its home is a copy of the first's (the same
    keystore, so the same identity), on its own port, on the same database."""
    shutil.copytree(mb.home, home2, ignore=shutil.ignore_patterns("*.log", "*.sock", "run"))
    (home2 / "config.toml").write_text(
        f'listen = "127.0.0.1"\nquic_port = {free_udp_port()}\ntcp_port = -1\nmdns = false\n'
        f'[replicator]\nstore = "{url}"\n')
    return await start_backup(home2)


async def test_backup_process_on_postgresql_holds_no_plaintext(
        tmp_path: Path, procs: list[JsonLinesProcess], pg_server: str) -> None:  # noqa: F811
    url = fresh_schema(pg_server)
    marker = new_marker()
    mb = await back_up_marked_space(tmp_path, procs, marker, store=url)
    try:
        assert mb.receipt.objects_count == 3 and mb.receipt.changes_count == 6
        # the changes are in the database, not in a SQLite file of the home
        assert stored_changes(url) == 6
        assert not (mb.home / "store.sqlite3").exists()
        assert_no_plaintext([data_directory(pg_server), mb.home], marker)
    finally:
        await close_all([mb.laptop])


async def test_postgresql_no_plaintext_check_fails_with_encryption_off(
        tmp_path: Path, procs: list[JsonLinesProcess], pg_server: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the same flow with the laptop's encryption off puts the marker in the
    database's files, and the check catches it (so the test above cannot pass vacuously)."""
    encryption_off(monkeypatch)
    url = fresh_schema(pg_server)
    marker = new_marker()
    mb = await back_up_marked_space(tmp_path, procs, marker, store=url)
    try:
        with pytest.raises(AssertionError, match="plaintext marker"):
            assert_no_plaintext([data_directory(pg_server)], marker)
    finally:
        await close_all([mb.laptop])


async def test_second_process_same_identity_same_database_is_the_same_backup(
        tmp_path: Path, procs: list[JsonLinesProcess], pg_server: str) -> None:  # noqa: F811
    """A second ``backup run`` whose home is a copy of the first's (same keystore: the same
    backup identity) on the same database serves what the first stored, and its receipts
    name the same account: devices may use either."""
    url = fresh_schema(pg_server)
    mb = await back_up_marked_space(tmp_path, procs, new_marker(), store=url)
    second, ready = await second_process(mb, tmp_path / "backup2", url)
    procs.append(second)
    first_device = {bytes(e.remote_device) for e in mb.laptop.engines}
    await mb.laptop.close()  # the laptop is gone: only the database holds its space now
    phone = await make_node(tmp_path, "phone")
    try:
        addr2 = ready["listening"][0].removeprefix("quic:")
        await phone.join(mb.invite, [f"quic:{addr2}"])
        await wait_any([phone], lambda: phone.space_hash(mb.space.id) == mb.receipt.root)
        # a receipt from the second process, signed by the same backup device as the first's
        engine = next(e for e in phone.engines if not e.conn.is_closed)
        assert {bytes(engine.remote_device)} == first_device
        rec = await receipt(engine, mb.space.id)
        assert rec.root == mb.receipt.root and rec.changes_count == mb.receipt.changes_count
    finally:
        await close_all([mb.laptop, phone])


async def test_a_change_pushed_to_one_process_reaches_a_device_on_the_other(
        tmp_path: Path, procs: list[JsonLinesProcess], pg_server: str) -> None:  # noqa: F811
    """The laptop is connected to the first process only, the phone to the second only: the
    second learns of the laptop's new changes from PostgreSQL's NOTIFY (it never talks to the
    first) and pushes them to the phone."""
    url = fresh_schema(pg_server)
    mb = await back_up_marked_space(tmp_path, procs, new_marker(), store=url)
    second, ready = await second_process(mb, tmp_path / "backup2", url)
    procs.append(second)
    phone = await make_node(tmp_path, "phone")
    laptop, space = mb.laptop, mb.space
    try:
        await phone.join(mb.invite, [ready["listening"][0]])
        await wait_any([phone], lambda: phone.space_hash(space.id) == mb.receipt.root)
        assert len(laptop.engines) == 1 and len(phone.engines) == 1
        edit(space, mb.docs[0], "later", "from the laptop")
        fresh = space.new_document()
        edit(space, fresh.tree.id, "body", "a new document")
        space.flush()
        await wait_any([phone], lambda: phone.space_hash(space.id)
                       == laptop.space_hash(space.id), timeout=15)
        # and the other way: the phone's edit reaches the laptop through the first process
        edit(phone.spaces[space.id], fresh.tree.id, "reply", "from the phone")
        phone.spaces[space.id].flush()
        await wait_any([laptop], lambda: phone.space_hash(space.id)
                       == laptop.space_hash(space.id), timeout=15)
    finally:
        await close_all([laptop, phone])


def test_replicator_store_key() -> None:
    from p2psync.backup.config import ReplicatorConfigError, parse_replicator

    assert parse_replicator({}).store == ""
    assert parse_replicator({"store": "postgresql://u@h/db"}).store == "postgresql://u@h/db"
    with pytest.raises(ReplicatorConfigError, match=r"replicator\.store"):
        parse_replicator({"store": 5})
