"""The backup cluster when connections to PostgreSQL fail (issue 19, docs/backup-cluster.md).

A process's LISTEN connection can be dropped (``pg_terminate_backend``, a network cut, a
server restart); PostgreSQL keeps no notification for a session that is gone, so the watch
must reconnect *and* read what was written meanwhile. The store's own connection, lost the
same way, is re-opened and the interrupted write repeated (every write is idempotent)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2psync.replica.pgstore import WATCH_APP, PgStore
from p2psync.replica.storage import open_store
from tests.backup_helpers import back_up_marked_space, edit, new_marker, until_backed_up
from tests.conformance.store_suite import DAG_A, TREE_A, TREE_B, fresh
from tests.netns import JsonLinesProcess
from tests.pg import Cluster, fresh_schema, own_cluster, pg_server  # noqa: F401
from tests.replica_helpers import SPACE_ID
from tests.sync_helpers import close_all, make_node, wait_any
from tests.test_backup_cluster import live, second_process, stored_changes


@pytest.fixture
def url(pg_server: str) -> str:  # noqa: F811
    return fresh_schema(pg_server)


def terminate(url: str, where: str, args: tuple[object, ...]) -> int:
    """``pg_terminate_backend`` the matching backends, waiting until each is gone."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute("SELECT pid FROM pg_stat_activity WHERE " + where, args).fetchall()
        for (pid,) in rows:
            db.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    return len(rows)


class Seen:
    """What a watch reported, awaitable."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes | None]] = []
        self._cond = asyncio.Condition()

    def __call__(self, space_id: str, tree_id: bytes | None) -> None:
        self.items.append((space_id, tree_id))
        asyncio.get_running_loop().create_task(self._kick())

    async def _kick(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def until(self, item: tuple[str, bytes | None], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._cond:
            await self._cond.wait_for(lambda: item in self.items)


@pytest.fixture
async def watched(url: str) -> AsyncIterator[tuple[PgStore, PgStore, Seen]]:
    """``a`` writes, ``b`` watches (its callback records what it is told)."""
    a, b = PgStore(url), PgStore(url)
    seen = Seen()
    task = asyncio.get_running_loop().create_task(b.watch(seen, retry=0.05))
    try:
        yield a, b, seen
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        a.close()
        b.close()


async def listening(b: PgStore, n: int = 1) -> None:
    while b.watch_connects < n:  # the task has not run its LISTEN yet: let it
        await asyncio.sleep(0.01)


async def test_a_dropped_listen_connection_catches_up_on_what_it_missed(
        url: str, watched: tuple[PgStore, PgStore, Seen]) -> None:
    a, b, seen = watched
    await listening(b)
    a.save_tree(fresh(TREE_A))
    await seen.until((SPACE_ID, TREE_A.id))
    # the LISTEN backend dies; before the watch task runs again (no await in between) a tree
    # and an ACL record are written: their notifications go nowhere
    assert terminate(url, "application_name = %s", (WATCH_APP,)) == 1
    a.save_tree(fresh(TREE_B))
    a.add_acl_records("space-two", [(b"r" * 32, b"record")])
    await listening(b, 2)
    await seen.until((SPACE_ID, TREE_B.id))
    await seen.until(("space-two", None))


async def test_the_store_reconnects_and_repeats_an_interrupted_write(url: str) -> None:
    with PgStore(url) as a:
        a.save_tree(fresh(TREE_A))
        assert terminate(url, "pid = %s", (a._pid,)) == 1
        t = fresh(TREE_A)
        t.add(DAG_A, persist=a.persister())  # the first attempt meets the dead connection
        assert a.reconnects == 1
        with open_store(url) as other:
            assert other.count_changes(TREE_A.id) == len(DAG_A) + 1
            assert other.get_heads(TREE_A.id) == t.heads
        terminate(url, "pid = %s", (a._pid,))
        assert a.get_heads(TREE_A.id) == t.heads  # reads too
        assert a.reconnects == 2


async def test_a_closed_store_stays_closed(url: str) -> None:
    from p2psync.errors import StoreError

    a = PgStore(url)
    a.close()
    with pytest.raises(StoreError, match="closed"):
        a.save_tree(fresh(TREE_A))
    with pytest.raises(StoreError, match="closed"):
        a.get_heads(TREE_A.id)
    assert a.reconnects == 0


async def test_the_catch_up_starts_from_a_watermark_that_follows_the_notifications(
        url: str) -> None:
    """With a short tick, what was written (and notified) two ticks before the drop is not
    reported again: the catch-up reads from a recent watermark, not from the start."""
    a, b = PgStore(url), PgStore(url)
    seen = Seen()
    task = asyncio.get_running_loop().create_task(b.watch(seen, tick=0.05, retry=0.05))
    try:
        await listening(b)
        a.save_tree(fresh(TREE_A))
        await seen.until((SPACE_ID, TREE_A.id))
        ticks = b.watch_ticks
        while b.watch_ticks < ticks + 2:  # the watermark moves past TREE_A
            await asyncio.sleep(0.02)
        before = len(seen.items)
        terminate(url, "application_name = %s", (WATCH_APP,))
        a.save_tree(fresh(TREE_B))
        await seen.until((SPACE_ID, TREE_B.id))
        assert seen.items[before:] == [(SPACE_ID, TREE_B.id)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        a.close()
        b.close()


async def test_backup_processes_ride_out_a_postgresql_restart(
        tmp_path: Path, procs: list[JsonLinesProcess],
        own_cluster: Cluster) -> None:  # noqa: F811
    """Two ``backup run`` processes, the laptop on the first and the phone on the second; the
    server is stopped and started again under them. A change the laptop pushes while it is
    down is not acknowledged (the process ends that connection), and reaches the phone
    after the restart (the laptop redials and head-syncs); a change made after the restart
    reaches the phone at once: the first process's store reconnected, the second's LISTEN
    came back."""
    url = fresh_schema(own_cluster.url)
    mb = await back_up_marked_space(tmp_path, procs, new_marker(), store=url)
    second, ready = await second_process(mb, tmp_path / "backup2", url)
    procs.append(second)
    phone = await make_node(tmp_path, "phone")
    laptop, space = mb.laptop, mb.space
    try:
        await phone.join(mb.invite, [ready["listening"][0]])
        await wait_any([phone], lambda: phone.space_hash(space.id) == mb.receipt.root)
        own_cluster.stop()
        edit(space, mb.docs[0], "down", "while the database is down")
        space.flush()
        first = live(laptop)
        # the first process cannot store the push: it ends that connection (the engine's
        # answer to a store error) without acknowledging anything
        await wait_any([laptop], lambda: first.conn.is_closed, timeout=15)
        own_cluster.start()
        await laptop.connect(mb.address, "quic")  # the device redials (an agent does)
        await wait_any([phone], lambda: phone.space_hash(space.id)
                       == laptop.space_hash(space.id), timeout=15)
        edit(space, mb.docs[1], "up", "after the restart")
        space.flush()
        await wait_any([phone], lambda: phone.space_hash(space.id)
                       == laptop.space_hash(space.id), timeout=15)
        assert (await until_backed_up(laptop, live(laptop), space.id)).root \
            == laptop.space_hash(space.id)
        assert stored_changes(url) == sum(laptop.store.count_changes(t)  # type: ignore[union-attr]
                                          for t in space.tree_ids())
    finally:
        await close_all([laptop, phone])


async def test_what_is_written_between_opening_and_listening_is_reported(url: str) -> None:
    """A process opens its store, then starts its watch: a tree another process writes in
    between (no LISTEN yet, so no notification) is reported when the watch comes up."""
    a, b = PgStore(url), PgStore(url)
    seen = Seen()
    a.save_tree(fresh(TREE_A))  # b is open, its watch not started
    task = asyncio.get_running_loop().create_task(b.watch(seen, retry=0.05))
    try:
        await seen.until((SPACE_ID, TREE_A.id))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        a.close()
        b.close()
