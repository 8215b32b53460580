"""Hostile input on chunk streams between real agents (TCP loopback): garbled and oversized
requests are struck and end the stream; a peer serving wrong bytes is struck and the chunk is
fetched from another peer; chunks of a space the asker is not in (never was, or was removed
from before the file was added) are answered as an unknown space and never sent."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgpack
import pytest

from p2psync.agent.core import Agent
from p2psync.agent.ops import space_remove
from p2psync.crypto.ids import account_id
from p2psync.errors import StreamReset
from p2psync.replica import filespace as FS
from p2psync.sync import files_io
from p2psync.sync.engine import PeerEngine
from p2psync.sync.files import ChunkFetch
from p2psync.sync.messages import (
    ChunkRequest,
    ChunkResponse,
    ErrorCode,
    ErrorMessage,
    decode,
    encode,
)
from tests.conftest import Fleet
from tests.sync_helpers import wait_any
from tests.test_files_agents import has_file, pair, sees

SIZE = 600_000


def engine_to(agent: Agent, other: Agent) -> PeerEngine:
    [e] = [e for e in agent.node.engines
           if e.conn.peer_id == other.keys.device.id and not e.conn.is_closed]
    return e


async def linked(a: Agent, b: Agent) -> tuple[PeerEngine, PeerEngine]:
    await wait_any([a.node, b.node], lambda: any(
        e.ready.is_set() and e.conn.peer_id == b.keys.device.id for e in a.node.engines)
        and any(e.ready.is_set() and e.conn.peer_id == a.keys.device.id
                for e in b.node.engines))
    return engine_to(a, b), engine_to(b, a)


@pytest.mark.parametrize("garbage", [
    b"\xc1not msgpack",  # undecodable
    msgpack.packb([1, 60, 1, ["s", b"f" * 32, [b"a" * 32] * 17]]),  # 17 addresses: over bound
    encode(ChunkResponse("s", b"f" * 32, (), ()), 1),  # not a request
    b"\x00" * 900_000,  # big garbage, under the transport's message limit
], ids=["garbled", "too-many-addresses", "wrong-kind", "huge"])
async def test_garbage_on_a_chunk_stream_is_struck(fleet: Fleet, garbage: bytes) -> None:
    (a, b), _space = await pair(fleet, "tcp", "a", "b")
    a_side, b_side = await linked(a, b)
    before = a_side.strikes
    st = await b_side.conn.open_stream()
    await st.send(garbage)
    try:
        raw = await st.recv()
    except StreamReset:
        pass  # garbage ends the stream
    else:  # a message of the wrong kind is answered MALFORMED
        assert isinstance(decode(raw).message, ErrorMessage)
    assert a_side.strikes == before + 1
    assert not a_side.conn.is_closed  # one strike is not a disconnect


async def test_wrong_bytes_are_struck_and_fetched_elsewhere(fleet: Fleet,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    """B serves every chunk with one byte flipped; C asks A and B at once, strikes B, gets
    every chunk from A, stores nothing B sent."""
    (a, b), space = await pair(fleet, "tcp", "a", "b")
    code = a.node.invite(space.id)
    c = await fleet.agent("c", quic_port=None, peers=[f"tcp://{a.node.address('tcp')}",
                                                      f"tcp://{b.node.address('tcp')}"])
    await c.join(code.encode(), [f"tcp://{a.node.address('tcp')}"])
    data = random.Random(3).randbytes(4 * SIZE)  # > 16 chunks: both peers are asked
    fid = FS.add_file(space, data, name="f").manifest.file_id
    for ag in (b, c):
        await has_file(ag, space.id, fid)
    assert await files_io.fetch_file(b.node.engines, b.node.replicas.spaces[space.id], fid)
    await sees(c, space.id, a, b)
    real = files_io.answer
    liar = b.node.replicas.store

    def lying(store: Any, req: ChunkRequest) -> ChunkResponse:
        resp = real(store, req)
        if getattr(store, "store", store) is not liar:  # the store, or its chunk_io
            return resp
        bad = tuple((addr, bytes([data[0] ^ 1]) + data[1:]) for addr, data in resp.chunks)
        return ChunkResponse(resp.space_id, resp.file_id, bad, resp.missing)

    monkeypatch.setattr(files_io, "answer", lying)
    struck: list[tuple[str, str]] = []
    real_strike = PeerEngine._strike

    def record(self: PeerEngine, why: str, *, violation: bool = False) -> None:
        struck.append((self.conn.peer_id, why))
        real_strike(self, why, violation=violation)

    monkeypatch.setattr(PeerEngine, "_strike", record)
    sc = c.node.replicas.spaces[space.id]
    assert await files_io.fetch_file(c.node.engines, sc, fid, window=1)
    assert any(p == b.keys.device.id and "not matching its address" in why
               for p, why in struck)  # B struck for the substituted chunk
    assert not any(p == a.keys.device.id for p, _ in struck)
    out = c.home.path / "out"
    FS.get_file(sc, fid, out)  # every stored chunk verifies: nothing of B's was kept
    assert out.read_bytes() == data


async def test_chunks_of_a_space_the_peer_is_not_in(fleet: Fleet, tmp_path: Path) -> None:
    """C shares space X with A. Of space Y it never was a member; of space Z it was removed
    before the file was added. Asking A for chunks of either: UNKNOWN_SPACE, no chunk sent
    (C knows the addresses here only because the test hands them over)."""
    (a, c), x = await pair(fleet, "tcp", "a", "c")
    y = a.node.create_space()
    z = a.node.create_space()
    code = a.node.invite(z.id)
    await c.join(code.encode(), [f"tcp://{a.node.address('tcp')}"])
    assert a.device is not None
    space_remove(a.device, z.id, account_id(c.keys.account.public))
    await wait_any([a.node], lambda: not a.node.replicas.may_access(z.id,
                                                                    c.keys.account.public))
    for sp in (y, z):
        fid = FS.add_file(sp, random.Random(4).randbytes(SIZE), name="secret").manifest.file_id
        wanted = FS.missing_chunks(sp, fid) or list(dict.fromkeys(
            FS.manifest_of(sp, fid).addresses))
        _a_side, c_side = await linked(a, c)
        st = await c_side.conn.open_stream()
        await st.send(encode(ChunkRequest(sp.id, fid, tuple(wanted[:16])), 5))
        reply = decode(await st.recv())
        assert isinstance(reply.message, ErrorMessage)
        assert reply.message.code == ErrorCode.UNKNOWN_SPACE
        fetch = ChunkFetch(sp.id, fid, wanted)
        got: list[Any] = []
        assert not await files_io.run_fetch(fetch, {"a": await c_side.conn.open_stream()},
                                            got.extend)
        assert got == []
    assert x.id in c.node.replicas.spaces  # the connection and its shared space were fine
