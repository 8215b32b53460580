"""The throughput mechanisms of chunk transfer (docs/files.md, "filesperf"), each checked for
what it does, not for speed: a chunk request is answered by one indexed read (no listing of the
whole file), the sender reads answers in a worker thread, the receiver stores verified chunks
in groups from a worker thread (nothing lost: every chunk is stored when the fetch returns),
and a QUIC receiver replies once per loop turn, not once per datagram."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import uvloop

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.replica import filespace as FS
from p2psync.replica.files import chunk_address
from p2psync.replica.memstore import MemoryStore
from p2psync.replica.space import Space
from p2psync.replica.store import SqliteStore
from p2psync.sync import files_io
from p2psync.sync.files import ChunkFetch, answer
from p2psync.sync.messages import ChunkRequest
from p2psync.transport import quic as quic_mod
from tests.conformance.transport_suite import TransportSuite, bulk_one_stream

SIZE = 6_000_000  # ~90 chunks


def _spaces(tmp_path: Path) -> tuple[Space, Space, bytes, bytes]:
    """A (SQLite store) holding a file, B (memory store) with its manifest only."""
    acc = AccountKey.generate()
    a = Space.create(SqliteStore(tmp_path / "a.sqlite3", durable=False), acc,
                     DeviceKey.generate().public, window=0)
    data = random.Random(4).randbytes(SIZE)
    fid = FS.add_file(a, data, name="f").manifest.file_id
    b = Space.adopt(MemoryStore(), acc, DeviceKey.generate().public, a.id, a.header.raw,
                    a.acl_records(), window=0)
    for tid in a.tree_ids():
        b.add_changes(tid, [c.raw for c in a.tree(tid).changes()])
    return a, b, fid, data


def test_a_request_is_answered_without_listing_the_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    a, _, fid, _ = _spaces(tmp_path)
    wanted = FS.manifest_of(a, fid).addresses[:16]

    def no_listing(*args: Any) -> list[bytes]:
        raise AssertionError("answer listed every chunk of the file")

    monkeypatch.setattr(SqliteStore, "list_chunks", no_listing)
    resp = answer(a.store, ChunkRequest(a.id, fid, tuple(wanted)))
    assert [addr for addr, _ in resp.chunks] + list(resp.missing) == list(dict.fromkeys(wanted))
    assert resp.chunks and all(a.store.get_chunk(x) == d for x, d in resp.chunks)
    other = answer(a.store, ChunkRequest(a.id, b"\1" * 32, tuple(wanted)))  # not that file's
    assert not other.chunks and list(other.missing) == list(dict.fromkeys(wanted))
    a.store.close()


async def _transfer(tmp_path: Path, store: Any, *, threaded: bool, serve_depth: int,
                    window: int = 8, verify_later: bool = False,
                    ) -> tuple[Space, bytes, bytes, bool]:
    a, b, fid, data = _spaces(tmp_path)
    async with TransportSuite().pair("tcp") as p:
        st = await p.client.open_stream()
        await st.send(b"")
        srv = await p.accepted.accept_stream()
        assert await srv.recv() == b""
        server = asyncio.create_task(files_io.serve_stream(srv, a.store, lambda s: True,
                                                           depth=serve_depth))
        fetch = ChunkFetch(a.id, fid, FS.missing_chunks(b, fid), window=window)
        ok = await files_io.run_fetch(fetch, {"a": st}, lambda ps: store(b, fid, ps),
                                      threaded=threaded, verify_later=verify_later)
        await server
    a.store.close()
    return b, fid, data, ok


async def test_receiver_groups_verified_chunks_into_fewer_writes_off_the_loop(
        tmp_path: Path) -> None:
    """A slow store (a durable commit) in its worker thread: the answers arriving meanwhile
    join the next write, so there are fewer writes than answers; every chunk is stored when
    run_fetch returns, and the file assembles."""
    writes: list[int] = []
    threads: set[str] = set()

    def slow_store(b: Space, fid: bytes, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        threads.add(threading.current_thread().name)
        time.sleep(0.03)  # stands for a commit and its fsync (runs in the writer thread)
        writes.append(len(pairs))
        b.store.put_chunks(b.id, fid, pairs)

    b, fid, data, ok = await _transfer(tmp_path, slow_store, threaded=True, serve_depth=4)
    answers = -(-len(FS.manifest_of(b, fid).addresses) // 16)
    assert ok and FS.file_info(b, fid).complete and sum(writes) == len(set(
        FS.manifest_of(b, fid).addresses))
    assert len(writes) < answers, (writes, answers)  # grouped
    assert threading.main_thread().name not in threads  # off the loop's thread
    FS.get_file(b, fid, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data


async def test_sender_reads_answers_in_a_worker_thread(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    where: set[str] = set()
    real = files_io.answer

    def recording(store: Any, req: ChunkRequest) -> Any:
        where.add(threading.current_thread().name)
        return real(store, req)

    monkeypatch.setattr(files_io, "answer", recording)

    def put(b: Space, fid: bytes, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        b.store.put_chunks(b.id, fid, pairs)

    b, fid, _data, ok = await _transfer(tmp_path, put, threaded=False, serve_depth=4)
    assert ok and FS.file_info(b, fid).complete
    assert where and threading.main_thread().name not in where


def _quic_bulk(nbytes: int) -> tuple[int, int]:
    """(datagrams the receiving carrier got, times it transmitted) for ``nbytes`` on one
    stream over QUIC loopback, on uvloop (what agents run on; it reads datagrams in
    batches)."""

    async def run() -> tuple[int, int]:
        async with TransportSuite().pair("quic") as p:
            carrier: Any = p.accepted._link.carrier  # type: ignore[attr-defined]
            counts = [0, 0]
            real_receive, real_transmit = carrier.quic.receive_datagram, carrier.transmit

            def receive(*a: Any, **kw: Any) -> Any:
                counts[0] += 1
                return real_receive(*a, **kw)

            def transmit() -> None:
                counts[1] += 1
                real_transmit()

            carrier.quic.receive_datagram = receive
            carrier.transmit = transmit
            await bulk_one_stream(p, nbytes)
            return counts[0], counts[1]

    result: tuple[int, int] = uvloop.run(run())
    return result


def test_quic_receiver_replies_once_per_loop_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quic_mod, "BATCH_TRANSMIT", True)  # the default; pinned here
    datagrams, transmits = _quic_bulk(6_000_000)
    assert datagrams > 1000
    assert transmits < datagrams / 2, (datagrams, transmits)


def test_quic_batching_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The switch-off used by the test above: aioquic's own once-per-datagram replies."""
    monkeypatch.setattr(quic_mod, "BATCH_TRANSMIT", False)
    datagrams, transmits = _quic_bulk(2_000_000)
    assert transmits >= datagrams * 0.9, (datagrams, transmits)


def _assert_reopened_holds(path: Path, written: list[bytes]) -> None:
    """A fresh store on ``path`` holds every chunk written (nothing lost in the WAL)."""
    again = SqliteStore(path, durable=False)
    try:
        assert again.has_chunks(written) == set(written)
    finally:
        again.close()


def test_chunk_writes_checkpoint_the_wal_rarely(tmp_path: Path) -> None:
    """The chunk connection lets the WAL grow to CHUNK_WAL_BYTES before a checkpoint (copy into
    the database + fsyncs), not SQLite's default ~4 MiB (docs/files.md, "tcpfile"): 16 MiB
    written in 2 MiB groups stay in the WAL (with the default it would have been checkpointed
    and restarted, never exceeding ~6 MiB). Every chunk is still there after reopening."""
    from p2psync.replica.store import CHUNK_WAL_BYTES
    assert CHUNK_WAL_BYTES >= 32 << 20
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(path, durable=False)
    io = store.chunk_io()
    assert io is not None
    rnd = random.Random(7)
    written: list[bytes] = []
    for _ in range(8):
        group = [(rnd.randbytes(32), rnd.randbytes(64 << 10)) for _ in range(32)]
        io.put_chunks("sp", b"f" * 16, group)
        written += [a for a, _ in group]
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size >= 16 << 20
    io.close()
    store.close()
    _assert_reopened_holds(path, written)


@pytest.mark.parametrize("via_io", [False, True])
def test_a_chunk_request_costs_the_same_in_a_small_and_a_big_file(tmp_path: Path,
                                                                  via_io: bool) -> None:
    """Reading 16 chunks of a file is looked up by address, not by scanning the file's index
    (docs/files.md, "tcpfile": SQLite's planner chose ``chunks_by_file`` and a 1 GiB transfer
    became quadratic). Counted in SQLite VM steps, so independent of the machine's speed: a
    file of 4000 chunks costs no more than 2x one of 400 (the scan costs ~10x)."""
    def steps(n: int) -> int:
        store = SqliteStore(tmp_path / f"s{n}-{via_io}.sqlite3", durable=False)
        rnd = random.Random(n)
        pairs = [(rnd.randbytes(32), rnd.randbytes(100)) for _ in range(n)]
        store.put_chunks("sp", b"f" * 16, pairs)
        store.put_chunks("sp", b"g" * 16, [(rnd.randbytes(32), b"x")])  # another file
        io = store.chunk_io() if via_io else None
        reader: Any = io if io is not None else store
        db = io._conn() if io is not None else store._db
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        want = [a for a, _ in pairs[n // 2:n // 2 + 16]]
        db.set_progress_handler(tick, 10)
        try:
            got = reader.get_file_chunks("sp", b"f" * 16, want)
        finally:
            db.set_progress_handler(None, 10)
        assert got == dict(pairs[n // 2:n // 2 + 16])
        assert reader.get_file_chunks("sp", b"g" * 16, want) == {}  # only that file
        assert reader.get_file_chunks("other", b"f" * 16, want) == {}  # only that space
        if io is not None:
            io.close()
        store.close()
        return count[0]

    small, big = steps(400), steps(4000)
    assert big <= 2 * small + 5, (small, big)


# --- tcpfile2 (docs/files.md, "tcpfile2") ---------------------------------------------------
async def test_the_next_request_goes_out_while_an_answer_is_still_being_hashed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``verify_later``, an answer is taken (its request's slot freed) before its chunks
    are hashed: with a window of one request, the sender gets the second request while the
    hash thread still holds the first answer. (Waiting for the hash first, the second request
    would only leave once that hash ended: the hash below would time out waiting for it.)"""
    asked = threading.Event()
    seen: list[bool] = []
    real_answer, real_hashes = files_io.answer, files_io._hashes

    def counting(store: Any, req: ChunkRequest) -> Any:
        if len(served) == 1:
            asked.set()  # the second request arrived
        served.append(req)
        return real_answer(store, req)

    served: list[ChunkRequest] = []

    def held_hashes(chunks: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        if not seen:  # the first answer: hashed only once the next request is out
            seen.append(asked.wait(5))
        return real_hashes(chunks)

    monkeypatch.setattr(files_io, "answer", counting)
    monkeypatch.setattr(files_io, "_hashes", held_hashes)

    def put(b: Space, fid: bytes, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        b.store.put_chunks(b.id, fid, pairs)

    b, fid, data, ok = await _transfer(tmp_path, put, threaded=True, serve_depth=4, window=1,
                                       verify_later=True)
    assert seen == [True]
    assert ok and FS.file_info(b, fid).complete
    FS.get_file(b, fid, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data


class _Liar:
    """A store that serves every chunk of the real one with its first byte flipped."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def get_file_chunks(self, space_id: str, file_id: bytes,
                        addresses: Sequence[bytes]) -> dict[bytes, bytes]:
        held = self.real.get_file_chunks(space_id, file_id, addresses)
        return {a: bytes([d[0] ^ 1]) + d[1:] for a, d in held.items()}


async def test_threaded_fetch_compares_every_chunk_before_storing_it(tmp_path: Path) -> None:
    """With ``verify_later`` (answers taken before their hashes are known), a peer serving
    wrong bytes is still caught before anything of its answers is stored: it is reported
    (once) and dropped, its chunks come from the honest peer, and every stored chunk matches
    its address."""
    a, b, fid, data = _spaces(tmp_path)
    stored: list[tuple[bytes, bytes]] = []
    reported: list[tuple[str, str]] = []

    def put(pairs: Sequence[tuple[bytes, bytes]]) -> None:
        stored.extend(pairs)
        b.store.put_chunks(b.id, fid, pairs)

    suite = TransportSuite()
    async with suite.pair("tcp") as honest, suite.pair("tcp") as liar:
        streams = {}
        servers = []
        for name, p, store, depth in (("honest", honest, a.store, 4),
                                      ("liar", liar, _Liar(a.store), 0)):
            st = await p.client.open_stream()
            await st.send(b"")
            srv = await p.accepted.accept_stream()
            assert await srv.recv() == b""
            servers.append(asyncio.create_task(files_io.serve_stream(
                srv, store, lambda s: True, depth=depth)))
            streams[name] = st
        fetch = ChunkFetch(a.id, fid, FS.missing_chunks(b, fid), window=2)
        ok = await files_io.run_fetch(fetch, streams, put, threaded=True, verify_later=True,
                                      on_bad=lambda peer, why: reported.append((peer, why)))
        for s in servers:
            with contextlib.suppress(Exception):
                await s
    assert ok and FS.file_info(b, fid).complete
    assert [p for p, _ in reported] == ["liar"]
    assert files_io.NOT_MATCHING in reported[0][1]
    assert stored and all(chunk_address(d) == addr for addr, d in stored)
    FS.get_file(b, fid, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    a.store.close()


def test_chunk_checkpoints_run_beside_the_writes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CHUNK_WAL_BYTES written through ``chunk_io``, the WAL is checkpointed in a thread
    of its own: the writing thread goes on writing meanwhile (a checkpoint inside it stalled
    the receiver ~0.1-0.3 s per 64 MiB). Writes that outrun a checkpoint by another
    CHUNK_WAL_BYTES wait for it. Every chunk is there after reopening."""
    from p2psync.replica import store as store_mod
    monkeypatch.setattr(store_mod, "CHUNK_WAL_BYTES", 1 << 20)
    release, started = threading.Event(), threading.Event()
    where: list[str] = []
    real = store_mod.SqliteChunkIO._checkpoint

    def held(self: Any) -> None:
        where.append(threading.current_thread().name)
        started.set()
        release.wait(3)  # (a checkpoint in the writer's thread would hold the writer here)
        real(self)

    monkeypatch.setattr(store_mod.SqliteChunkIO, "_checkpoint", held)
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(path, durable=False)
    io = store.chunk_io()
    assert io is not None
    rnd = random.Random(8)
    written: list[bytes] = []

    def write(n: int) -> None:
        group = [(rnd.randbytes(32), rnd.randbytes(64 << 10)) for _ in range(n)]
        io.put_chunks("sp", b"f" * 16, group)
        written.extend(a for a, _ in group)

    write(16)  # 1 MiB: a checkpoint starts
    assert started.wait(5)
    write(4)  # returns while that checkpoint is held
    assert not release.is_set() and where and where[0] != threading.current_thread().name
    outrun = threading.Thread(target=write, args=(16,))  # another 1 MiB: waits for it
    outrun.start()
    outrun.join(0.3)
    assert outrun.is_alive()
    release.set()
    outrun.join(5)
    assert not outrun.is_alive() and io.checkpoints >= 1
    io.close()
    store.close()
    _assert_reopened_holds(path, written)
