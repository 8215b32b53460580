"""Files between real agents on loopback (issue 18): ``file.add`` on A, ``file.get`` on B
through the local API, over TCP and over QUIC. B gets the manifest with head sync and the
chunks only when the file is opened (lazily), from every connected peer of the space at once;
a partly held file is never complete; an interrupted transfer resumes with the remainder."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from p2psync.agent.core import Agent
from p2psync.api import handle_request
from p2psync.crypto.ids import short_hash
from p2psync.replica import filespace as FS
from p2psync.replica.space import Space
from p2psync.sync import files_io
from tests.conftest import Fleet
from tests.sync_helpers import wait_any

SIZE = 2_500_000


def only(carrier: str) -> dict[str, Any]:
    return {"quic_port": None} if carrier == "tcp" else {"tcp_port": None}


async def call(agent: Agent, op: str, **params: Any) -> Any:
    ans = await handle_request(agent, {"id": 1, "op": op, "params": params})
    assert ans["ok"], ans
    return ans["result"]


async def call_err(agent: Agent, op: str, **params: Any) -> dict[str, Any]:
    ans = await handle_request(agent, {"id": 1, "op": op, "params": params})
    assert not ans["ok"], ans
    err: dict[str, Any] = ans["error"]
    return err


async def pair(fleet: Fleet, carrier: str, *names: str) -> tuple[list[Agent], Space]:
    """Agents on one carrier; the first creates a space, the others join it."""
    agents = [await fleet.agent(n, **only(carrier)) for n in names]
    a = agents[0]
    space = a.node.create_space()
    for other in agents[1:]:
        code = a.node.invite(space.id)
        await other.join(code.encode(), [f"{carrier}://{a.node.address(carrier)}"])
    return agents, space


async def has_file(agent: Agent, space_id: str, fid: bytes) -> None:
    sp = agent.node.replicas.spaces[space_id]
    await wait_any([agent.node], lambda: any(i.file_id == fid for i in FS.list_files(sp)))


async def sees(agent: Agent, space_id: str, *others: Agent) -> None:
    """Until ``agent`` has ready connections sharing the space with exactly ``others``."""
    want = {o.keys.device.id for o in others}
    await wait_any([agent.node], lambda: {
        e.conn.peer_id for e in files_io.peers_for(agent.node.engines, space_id)} == want
        and len(files_io.peers_for(agent.node.engines, space_id)) == len(want))


@pytest.mark.parametrize("carrier", ["tcp", "quic"])
async def test_put_on_a_get_on_b(fleet: Fleet, carrier: str, tmp_path: Path) -> None:
    (a, b), space = await pair(fleet, carrier, "a", "b")
    data = random.Random(7).randbytes(SIZE)
    src = tmp_path / "photo.jpg"
    src.write_bytes(data)
    added = await call(a, "file.add", space=space.id, path=str(src))
    fid = FS.list_files(space)[0].file_id
    await has_file(b, space.id, fid)
    [row] = await call(b, "file.list", space=space.id)
    assert row["held"] == 0 and not row["complete"]  # manifest at once, chunks lazily
    out = tmp_path / "got.jpg"
    got = await call(b, "file.get", space=space.id, file=added["file"], out=str(out))
    assert got["size"] == SIZE and out.read_bytes() == data
    [row] = await call(b, "file.list", space=space.id)
    assert row["complete"]


async def test_chunks_come_from_several_peers_and_resume(fleet: Fleet, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """C fetches from A and B at once (both serve). Cut off midway, C holds part of the file:
    not complete, and get refuses without writing anything; once reconnected, the next get
    moves only the remainder."""
    (a, b), space = await pair(fleet, "tcp", "a", "b")
    code = a.node.invite(space.id)
    c = await fleet.agent("c", quic_port=None, peers=[f"tcp://{a.node.address('tcp')}",
                                                      f"tcp://{b.node.address('tcp')}"])
    await c.join(code.encode(), [f"tcp://{a.node.address('tcp')}"])
    data = random.Random(8).randbytes(SIZE)
    fid = FS.add_file(space, data, name="f").manifest.file_id
    for ag in (b, c):
        await has_file(ag, space.id, fid)
    sb, sc = b.node.replicas.spaces[space.id], c.node.replicas.spaces[space.id]
    assert await files_io.fetch_file(b.node.engines, sb, fid)  # B has it all now
    await sees(c, space.id, a, b)
    total = len(FS.missing_chunks(sc, fid))
    served = {"a": 0, "b": 0}
    real_answer = files_io.answer

    def counting(store: Any, req: Any) -> Any:
        resp = real_answer(store, req)
        served["a" if store is a.node.replicas.store else "b"] += len(resp.chunks)
        return resp

    monkeypatch.setattr(files_io, "answer", counting)
    engines = files_io.peers_for(c.node.engines, space.id)

    closing: list[asyncio.Task[None]] = []

    def cut(n: int) -> None:  # the receiver's connections go after its first stored batch
        if not closing:
            closing.extend(asyncio.get_running_loop().create_task(e.close("cut"))
                           for e in engines)

    assert not await files_io.fetch_file(engines, sc, fid, window=1, progress=cut)
    await asyncio.gather(*closing)
    held = total - len(FS.missing_chunks(sc, fid))
    assert 0 < held < total and not FS.file_info(sc, fid).complete
    out = tmp_path / "out"
    if not files_io.peers_for(c.node.engines, space.id):  # nobody to ask: refused, no output
        err = await call_err(c, "file.get", space=space.id, file=short_hash(fid), out=str(out))
        assert err["type"] == "FileIncomplete" and not out.exists()
    before = sum(served.values())
    await sees(c, space.id, a, b)
    await call(c, "file.get", space=space.id, file=short_hash(fid), out=str(out))
    assert out.read_bytes() == data
    assert sum(served.values()) - before == total - held  # only the remainder moved
    assert served["a"] > 0 and served["b"] > 0  # both peers served chunks of the file
