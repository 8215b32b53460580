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
from p2psync.replica.document import ROOT
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
        mine = getattr(store, "store", store) is a.node.replicas.store  # or its chunk_io
        served["a" if mine else "b"] += len(resp.chunks)
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


async def test_pin_fetches_now_and_unpin_keeps_the_chunks(fleet: Fleet) -> None:
    (_a, b), space = await pair(fleet, "tcp", "a", "b")
    fid = FS.add_file(space, random.Random(9).randbytes(SIZE), name="f").manifest.file_id
    await has_file(b, space.id, fid)
    ref = short_hash(fid)
    row = await call(b, "file.pin", space=space.id, file=ref)
    assert row["pinned"] and row["complete"]  # fetched at pin time, not at open
    [listed] = await call(b, "file.list", space=space.id)
    assert listed["pinned"]
    row = await call(b, "file.unpin", space=space.id, file=ref)
    assert not row["pinned"] and row["complete"]


async def test_cache_limit_evicts_least_recently_used_unpinned_fetched_files(
        fleet: Fleet, tmp_path: Path) -> None:
    """B fetches three of A's files (one pinned) and adds one itself; a cache limit of about
    one file drops the oldest unpinned fetched file first, never the pinned one nor B's own;
    an evicted file is fetched again when opened."""
    (_a, b), space = await pair(fleet, "tcp", "a", "b")
    fids = [FS.add_file(space, random.Random(20 + i).randbytes(SIZE), name=f"f{i}"
                        ).manifest.file_id for i in range(3)]
    sb = b.node.replicas.spaces[space.id]
    own = FS.add_file(sb, random.Random(30).randbytes(SIZE), name="mine").manifest.file_id
    for fid in fids:
        await has_file(b, space.id, fid)
    refs = [short_hash(f) for f in fids]
    await call(b, "file.pin", space=space.id, file=refs[0])
    for i in (1, 2):
        await call(b, "file.get", space=space.id, file=refs[i], out=str(tmp_path / f"o{i}"))
    res = await call(b, "file.cache", max_bytes=SIZE * 3 // 2)
    assert res["evicted"] == [fids[1].hex()[:16]]  # the least recently used unpinned one
    held = {f: FS.file_info(sb, f).complete for f in (*fids, own)}
    assert held == {fids[0]: True, fids[1]: False, fids[2]: True, own: True}
    await call(b, "file.get", space=space.id, file=refs[1], out=str(tmp_path / "again"))
    assert (tmp_path / "again").read_bytes() == random.Random(21).randbytes(SIZE)
    assert not FS.file_info(sb, fids[2]).complete  # the limit holds: now f2 is the oldest


async def test_file_change_events(fleet: Fleet, tmp_path: Path) -> None:
    """A subscriber on B sees a ``file`` event when A's file arrives (incomplete) and another
    when B has fetched it (complete); documents that are not files give none."""
    (_a, b), space = await pair(fleet, "tcp", "a", "b")
    sub = b.subscribe(space.id)

    async def next_file_event(origin: str) -> dict[str, Any]:
        while True:
            ev = await asyncio.wait_for(sub.queue.get(), 20)
            if ev["event"] == "file" and ev["origin"] == origin:
                return ev
            assert ev["event"] == "change" or ev["file"] == short_hash(fid)

    doc = space.new_document()  # not a file: change events only
    with doc.edit() as e:
        e.put(ROOT, "k", 1)
    doc.flush()
    fid = FS.add_file(space, random.Random(40).randbytes(SIZE), name="pic.png",
                      media_type="image/png").manifest.file_id
    ev = await next_file_event("peer")
    assert (ev["file"], ev["name"], ev["origin"], ev["complete"]) == (
        short_hash(fid), "pic.png", "peer", False)
    await call(b, "file.get", space=space.id, file=short_hash(fid), out=str(tmp_path / "o"))
    ev = await next_file_event("fetched")
    assert (ev["origin"], ev["complete"], ev["held"]) == ("fetched", True, ev["chunks"])


async def test_an_edited_file_moves_only_its_changed_chunks(
        fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (_a, b), space = await pair(fleet, "tcp", "a", "b")
    data = bytearray(random.Random(50).randbytes(SIZE))
    res = FS.add_file(space, bytes(data), name="doc.bin")
    fid = res.manifest.file_id
    await has_file(b, space.id, fid)
    ref = short_hash(fid)
    await call(b, "file.get", space=space.id, file=ref, out=str(tmp_path / "v1"))
    data[SIZE // 2:SIZE // 2 + 100] = b"x" * 100  # a small edit in the middle
    edit = FS.add_file(space, bytes(data), name="doc.bin", file_id=fid)
    assert 0 < edit.new_chunks <= 3
    sb = b.node.replicas.spaces[space.id]
    await wait_any([b.node], lambda: FS.manifest_of(sb, fid).addresses
                   == edit.manifest.addresses)
    served = [0]
    real = files_io.answer

    def counting(store: Any, req: Any) -> Any:
        resp = real(store, req)
        served[0] += len(resp.chunks)
        return resp

    monkeypatch.setattr(files_io, "answer", counting)
    await call(b, "file.get", space=space.id, file=ref, out=str(tmp_path / "v2"))
    assert (tmp_path / "v2").read_bytes() == bytes(data)
    assert served[0] == edit.new_chunks  # only the changed chunks travelled
