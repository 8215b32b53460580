"""Chunk requests pass the engine's inbound rate gate (issue 18, docs/files.md "Rate gate"):
the same per-peer budget as document-sync requests. A member flooding a node with pipelined
chunk requests on several streams gets typed RATE_LIMITED answers beyond its budget (the store
is not read for them), while another member fetches a file from the same node and syncs a
document edit during the flood; an honest fetcher told RATE_LIMITED waits and asks again
instead of giving the peer up."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from p2psync.agent.core import Agent
from p2psync.errors import RateLimited
from p2psync.replica import filespace as FS
from p2psync.replica.document import ROOT
from p2psync.sync import files_io
from p2psync.sync.files import ChunkFetch
from p2psync.sync.messages import (
    ChunkRequest,
    ChunkResponse,
    ErrorCode,
    ErrorMessage,
    decode,
    encode,
)
from p2psync.sync.sched import InboundGate
from tests.conftest import Fleet
from tests.sync_helpers import wait_any
from tests.test_files_agents import has_file, pair
from tests.test_files_hostile import engine_to, linked

RATE, BURST = 20.0, 20.0
STREAMS, PER_STREAM = 4, 300


def tight_gate(agent: Agent, peer: Agent, rate: float = RATE, burst: float = BURST) -> Any:
    """Give ``agent``'s engine for ``peer`` a small inbound budget (the gate document sync
    uses too: the engine's responder reads it at every request)."""
    gate: InboundGate[Any] = InboundGate(now=time.monotonic(), rate=rate, burst=burst,
                                         max_concurrent=16)
    engine_to(agent, peer).responder.gate = gate
    return gate


async def flood(stream: Any, space_id: str, fid: bytes, addrs: list[bytes]) -> list[Any]:
    """PER_STREAM chunk requests on one stream, each sent as soon as the previous one is
    answered (as fast as the node answers; several such streams run at once)."""
    got = []
    for i in range(PER_STREAM):
        await stream.send(encode(ChunkRequest(space_id, fid, (addrs[i % len(addrs)],)), i + 1))
        got.append(decode(await stream.recv()).message)
    stream.finish()
    return got


async def test_a_chunk_request_flood_is_rate_limited_and_others_are_unaffected(
        fleet: Fleet) -> None:
    (a, f, h), space = await pair(fleet, "tcp", "a", "f", "h")
    data = random.Random(30).randbytes(150_000)  # a few small chunks: the flood is cheap
    fid = FS.add_file(space, data, name="small").manifest.file_id
    big = random.Random(31).randbytes(2_000_000)
    big_id = FS.add_file(space, big, name="big").manifest.file_id
    for ag in (f, h):
        await has_file(ag, space.id, big_id)
    await linked(a, f)
    await linked(a, h)
    gate = tight_gate(a, f)
    addrs = list(dict.fromkeys(FS.manifest_of(space, fid).addresses))
    f_side = engine_to(f, a)

    t0 = time.monotonic()
    streams = [await f_side.conn.open_stream() for _ in range(STREAMS)]
    flooding = asyncio.gather(*(flood(st, space.id, fid, addrs) for st in streams))
    # meanwhile H, with its own budget, fetches a 2 MB file and syncs an edit through A
    sh = h.node.replicas.spaces[space.id]
    assert await files_io.fetch_file([engine_to(h, a)], sh, big_id)
    doc = sh.new_document()
    with doc.edit() as e:
        e.put(ROOT, "during", "flood")
    tid = doc.tree.id
    await wait_any([a.node], lambda: space.has_tree(tid)
                   and space.document(tid).get(["during"]) == "flood")
    answers = [m for per in await flooding for m in per]
    elapsed = time.monotonic() - t0

    served = [m for m in answers if isinstance(m, ChunkResponse)]
    limited = [m for m in answers if isinstance(m, ErrorMessage)
               and m.code == ErrorCode.RATE_LIMITED]
    assert len(served) + len(limited) == STREAMS * PER_STREAM  # every request answered
    assert len(served) <= BURST + RATE * elapsed + 16  # the budget, not the flood, decides
    assert len(limited) >= STREAMS * PER_STREAM // 2
    assert all(m.retry_after_ms for m in limited)
    assert isinstance(limited[0].to_exception(), RateLimited)  # a typed error
    assert gate.refused >= len(limited)
    assert not gate._active  # every admitted request released its slot
    out = h.home.path / "big.out"
    FS.get_file(sh, big_id, out)
    assert out.read_bytes() == big
    assert engine_to(a, f).ready.is_set()  # throttled, not thrown out: its budget is its own


async def test_a_fetch_told_rate_limited_waits_and_asks_again(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    (a, b), space = await pair(fleet, "tcp", "a", "b")
    data = random.Random(32).randbytes(3_000_000)  # ~45 chunks: several requests
    fid = FS.add_file(space, data, name="f").manifest.file_id
    await has_file(b, space.id, fid)
    await linked(a, b)
    tight_gate(a, b, rate=5.0, burst=1.0)  # one request now, then one per 200 ms
    refused: list[float] = []
    real = ChunkFetch.on_refused

    def counting(self: ChunkFetch, peer: Any, req: ChunkRequest, until: float) -> None:
        refused.append(until)
        real(self, peer, req, until)

    monkeypatch.setattr(ChunkFetch, "on_refused", counting)
    sb = b.node.replicas.spaces[space.id]
    assert await files_io.fetch_file([engine_to(b, a)], sb, fid, window=4)
    assert refused  # its chunk requests were told to slow down, and it still got everything
    out = b.home.path / "f.out"
    FS.get_file(sb, fid, out)
    assert out.read_bytes() == data
