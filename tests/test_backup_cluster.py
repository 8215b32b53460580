"""The backup on PostgreSQL (issue 19, docs/backup-cluster.md): ``[replicator] store =
"postgresql://…"`` makes ``p2psync backup run`` keep what it stores in the database; the
database's files hold no plaintext; a second process with the same identity on the same
database serves the same backup (its receipts verify as the same account)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from p2psync.node import Node
from p2psync.sync.engine import PeerEngine
from tests.backup_helpers import (
    MarkedBackup,
    assert_no_plaintext,
    back_up_marked_space,
    edit,
    free_udp_port,
    new_marker,
    receipt,
    start_backup,
    until_backed_up,
)
from tests.guards import encryption_off
from tests.netns import JsonLinesProcess
from tests.pg import fresh_schema, pg_server  # noqa: F401  (a fixture)
from tests.sync_helpers import close_all, converged, make_node, wait_any


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


def live(node: Node) -> PeerEngine:
    """The node's connection that is still open (each device here has one backup at a time)."""
    return next(e for e in node.engines if not e.conn.is_closed)


async def second_process(mb: MarkedBackup, home2: Path, url: str,
                         extra: str = "") -> tuple[JsonLinesProcess, dict[str, Any]]:
    """Another ``backup run`` of the same backup: its home is a copy of the first's (the same
    keystore, so the same identity), on its own port, on the same database."""
    shutil.copytree(mb.home, home2, ignore=shutil.ignore_patterns("*.log", "*.sock", "run"))
    (home2 / "config.toml").write_text(
        f'listen = "127.0.0.1"\nquic_port = {free_udp_port()}\ntcp_port = -1\nmdns = false\n'
        f'[replicator]\nstore = "{url}"\n{extra}')
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


async def test_devices_on_two_processes_converge_and_a_sigkill_loses_nothing_acknowledged(
        tmp_path: Path, procs: list[JsonLinesProcess], pg_server: str) -> None:  # noqa: F811
    """Four devices, two on each process, write concurrently (the same documents too): all
    converge and both processes' receipts cover the result; then the first process is
    SIGKILLed in the middle of a burst: everything it acknowledged is in the database, the
    devices that used it reconnect to the second and converge with the rest."""
    url = fresh_schema(pg_server)
    mb = await back_up_marked_space(tmp_path, procs, new_marker(), store=url)
    first_addr = f"quic:{mb.address}"
    second, ready = await second_process(mb, tmp_path / "backup2", url)
    procs.append(second)
    second_addr = ready["listening"][0]
    laptop, space = mb.laptop, mb.space
    codes = [laptop.invite(space.id) for _ in range(3)]
    phones = [await make_node(tmp_path, f"phone{i}") for i in range(3)]
    devices = [laptop, *phones]
    try:
        await until_backed_up(laptop, live(laptop), space.id)  # the invites are stored
        for phone, code, addr in zip(phones, codes, [first_addr, second_addr, second_addr],
                                     strict=True):
            await phone.join(code, [addr])
        await wait_any(devices, lambda: converged(devices, space.id), timeout=20)

        def burst(tag: str, n: int) -> None:
            for i, dev in enumerate(devices):
                sp = dev.spaces[space.id]
                for k in range(n):
                    edit(sp, mb.docs[k % len(mb.docs)], f"{tag}{i}", k)
                sp.flush()

        burst("a", 6)
        await wait_any(devices, lambda: converged(devices, space.id), timeout=20)
        root = laptop.space_hash(space.id)
        for dev in devices:  # each process's receipt covers the converged state
            assert (await until_backed_up(dev, live(dev), space.id)).root == root
        # the first process dies in the middle of the next burst; what it acknowledged
        # (the receipts above) must survive, what was in flight is pushed again
        on_first = [laptop, phones[0]]
        burst("b", 6)
        mb.backup.kill_now()
        to_second = {id(dev): await dev.connect(second_addr.removeprefix("quic:"), "quic")
                     for dev in on_first}  # the dead connection may not have timed out yet
        burst("c", 3)
        await wait_any(devices, lambda: converged(devices, space.id), timeout=20)
        final = laptop.space_hash(space.id)
        for dev in devices:
            engine = to_second.get(id(dev)) or live(dev)
            assert (await until_backed_up(dev, engine, space.id)).root == final
        # every change of every device is in the database exactly once
        total = sum(dev.store.count_changes(t) for dev in devices[:1]
                    for t in dev.spaces[space.id].tree_ids() if dev.store is not None)
        assert stored_changes(url) == total
    finally:
        await close_all(devices)


async def test_quota_counts_what_the_other_process_stored(
        tmp_path: Path, procs: list[JsonLinesProcess], pg_server: str) -> None:  # noqa: F811
    """A quota is enforced on the cluster's totals: changes stored through the first process
    count against the space's quota in the second, which then refuses the phone's push."""
    url = fresh_schema(pg_server)
    mb = await back_up_marked_space(tmp_path, procs, new_marker(), store=url)
    assert stored_changes(url) == 6
    second, ready = await second_process(mb, tmp_path / "backup2", url, "space_changes = 9\n")
    procs.append(second)
    phone = await make_node(tmp_path, "phone")
    laptop, space = mb.laptop, mb.space
    try:
        await phone.join(mb.invite, [ready["listening"][0]])
        for k in range(3):  # through the first process (no quota there): the space is full
            edit(space, mb.docs[k], "more", k)
        space.flush()
        await wait_any([phone], lambda: phone.space_hash(space.id)
                       == laptop.space_hash(space.id), timeout=15)
        assert stored_changes(url) == 9
        edit(phone.spaces[space.id], mb.docs[0], "one", "too many")
        phone.spaces[space.id].flush()
        engine = live(phone)
        await wait_any([phone], lambda: space.id in engine.refused_by_peer, timeout=15)
        assert stored_changes(url) == 9
    finally:
        await close_all([laptop, phone])


def test_replicator_store_key() -> None:
    from p2psync.backup.config import ReplicatorConfigError, parse_replicator

    assert parse_replicator({}).store == ""
    assert parse_replicator({"store": "postgresql://u@h/db"}).store == "postgresql://u@h/db"
    with pytest.raises(ReplicatorConfigError, match=r"replicator\.store"):
        parse_replicator({"store": 5})
