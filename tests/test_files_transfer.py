"""Chunk transfer over real loopback connections (TCP and QUIC carriers): chunks on their own
streams (a sync-like stream keeps working alongside), from two peers at once, resume after
the receiver's connection dies midway asking only for the remainder, and a space the peer may
not access answered as unknown."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.replica import filespace as FS
from p2psync.replica.memstore import MemoryStore
from p2psync.replica.space import Space
from p2psync.sync import files_io
from p2psync.sync.files import ChunkFetch
from tests.conformance.transport_suite import TransportSuite

SIZE = 3_000_000


def _spaces() -> tuple[Space, Space, bytes]:
    acc = AccountKey.generate()
    a = Space.create(MemoryStore(), acc, DeviceKey.generate().public, window=0)
    fid = FS.add_file(a, random.Random(1).randbytes(SIZE), name="f").manifest.file_id
    b = Space.adopt(MemoryStore(), acc, DeviceKey.generate().public, a.id, a.header.raw,
                    a.acl_records(), window=0)
    for tid in a.tree_ids():
        b.add_changes(tid, [c.raw for c in a.tree(tid).changes()])
    return a, b, fid


@pytest.mark.parametrize("carrier", ["tcp", "quic"])
async def test_file_over_loopback_with_sync_stream_alongside(carrier: str,
                                                             tmp_path: Path) -> None:
    a, b, fid = _spaces()
    async with TransportSuite().pair(carrier) as p:
        sync_out = await p.client.open_stream()  # stands for the document-sync stream
        await sync_out.send(b"hello")
        sync_in = await p.accepted.accept_stream()
        assert await sync_in.recv() == b"hello"
        chunks = await p.client.open_stream()
        await chunks.send(b"")  # streams appear to the peer on first data; see serve below
        srv_stream = await p.accepted.accept_stream()
        assert await srv_stream.recv() == b""
        server = asyncio.create_task(files_io.serve_stream(srv_stream, a.store,
                                                           lambda s: s == a.id))
        fetch = ChunkFetch(a.id, fid, FS.missing_chunks(b, fid))
        task = asyncio.create_task(files_io.run_fetch(
            fetch, {"a": chunks}, lambda ps: FS.accept_chunks(b, fid, ps)))
        await sync_out.send(b"still flowing")  # the sync stream is not blocked by the transfer
        assert await sync_in.recv() == b"still flowing"
        assert await task
        await server
    FS.get_file(b, fid, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == random.Random(1).randbytes(SIZE)


async def test_resume_after_connection_dies_sends_only_the_remainder() -> None:
    a, b, fid = _spaces()
    total = len(FS.missing_chunks(b, fid))
    stored = 0
    first = asyncio.Event()

    def store_then_die(pairs: list[tuple[bytes, bytes]]) -> None:
        nonlocal stored
        FS.accept_chunks(b, fid, pairs)
        stored += len(pairs)
        first.set()

    suite = TransportSuite()
    async with suite.pair("tcp") as p:
        st = await p.client.open_stream()
        await st.send(b"")
        srv = await p.accepted.accept_stream()
        await srv.recv()
        server = asyncio.create_task(files_io.serve_stream(srv, a.store, lambda s: True))
        fetch = ChunkFetch(a.id, fid, FS.missing_chunks(b, fid), window=1)
        task = asyncio.create_task(files_io.run_fetch(fetch, {"a": st}, store_then_die))
        await first.wait()
        await p.client.close("receiver killed")
        assert not await task  # lost its only peer: not done
        await server
    held = total - len(FS.missing_chunks(b, fid))
    assert 0 < held < total and not FS.file_info(b, fid).complete
    served_before = stored
    async with suite.pair("tcp") as p:
        st = await p.client.open_stream()
        await st.send(b"")
        srv = await p.accepted.accept_stream()
        await srv.recv()
        server = asyncio.create_task(files_io.serve_stream(srv, a.store, lambda s: True))
        again = ChunkFetch(a.id, fid, FS.missing_chunks(b, fid))
        assert len(again.wanted) == total - held
        assert await files_io.run_fetch(again, {"a": st}, store_then_die)
        await server
    assert stored - served_before == total - held  # only the remainder travelled
    assert FS.file_info(b, fid).complete


async def test_space_not_accessible_is_unknown() -> None:
    a, b, fid = _spaces()
    async with TransportSuite().pair("tcp") as p:
        st = await p.client.open_stream()
        await st.send(b"")
        srv = await p.accepted.accept_stream()
        await srv.recv()
        server = asyncio.create_task(files_io.serve_stream(srv, a.store, lambda s: False))
        fetch = ChunkFetch(a.id, fid, FS.missing_chunks(b, fid))
        assert not await files_io.run_fetch(fetch, {"a": st},
                                            lambda ps: FS.accept_chunks(b, fid, ps))
        await server
    assert b.store.list_chunks(b.id) == []
