"""Chunk transfer, sans-IO (p2psync/sync/files.py) and its messages: several peers serving one
file, a tampering peer dropped, resume after an interruption asking only for the remainder,
a responder serving only chunks of the file asked about."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.errors import DecodeError, FileChunkInvalid
from p2psync.replica import filespace as FS
from p2psync.replica.memstore import MemoryStore
from p2psync.replica.space import Space
from p2psync.sync import files as SF
from p2psync.sync import messages as m


def _setup(size: int = 2_000_000) -> tuple[Space, Space, bytes]:
    """Alice holds a file; bob has its manifest (document sync) but no chunk."""
    alice = AccountKey.generate()
    a = Space.create(MemoryStore(), alice, DeviceKey.generate().public, window=0)
    fid = FS.add_file(a, random.Random(1).randbytes(size), name="f").manifest.file_id
    b = Space.adopt(MemoryStore(), alice, DeviceKey.generate().public, a.id, a.header.raw,
                    a.acl_records(), window=0)  # alice's second device
    for tid in a.tree_ids():
        b.add_changes(tid, [c.raw for c in a.tree(tid).changes()])
    return a, b, fid


def _pump(fetch: SF.ChunkFetch, peers: dict[Any, Space], into: Space,
          limit: int | None = None) -> int:
    """Run requests against the peers' stores (through the wire encoding) until done, stuck,
    or ``limit`` responses; returns how many answers were refused as tampered."""
    n = refused = 0
    while not fetch.done and not fetch.stuck and (limit is None or n < limit):
        reqs = fetch.requests()
        assert reqs, "nothing to send yet nothing in flight"
        for peer, req in reqs:
            wire = m.decode(m.encode(req, 1)).message
            assert isinstance(wire, m.ChunkRequest)
            resp = m.decode(m.encode(SF.answer(peers[peer].store, wire), 1)).message
            assert isinstance(resp, m.ChunkResponse)
            try:
                fetch.on_response(peer, wire, resp,
                                  lambda ps: FS.accept_chunks(into, fetch.file_id, ps))
            except FileChunkInvalid:
                refused += 1
            n += 1
            if limit is not None and n >= limit:
                break
    return refused


def test_fetch_from_two_peers_spreads_the_load(tmp_path: Path) -> None:
    a, b, fid = _setup()
    # a second source holding the same chunks (say, a backup)
    c = Space.adopt(MemoryStore(), a.me, DeviceKey.generate().public, a.id, a.header.raw,
                    a.acl_records(), window=0)
    addrs = a.store.list_chunks(a.id, fid)
    c.store.put_chunks(a.id, fid, [(x, a.store.get_chunk(x)) for x in addrs])
    served: dict[str, int] = {"a": 0, "c": 0}
    fetch = SF.ChunkFetch(a.id, fid, FS.missing_chunks(b, fid))
    fetch.add_peer("a")
    fetch.add_peer("c")
    for peer, req in fetch.requests():
        served[peer] += len(req.addresses)
    assert served["a"] > 0 and served["c"] > 0
    fetch2 = SF.ChunkFetch(a.id, fid, FS.missing_chunks(b, fid))
    for p in ("a", "c"):
        fetch2.add_peer(p)
    _pump(fetch2, {"a": a, "c": c}, b)
    assert fetch2.done
    FS.get_file(b, fid, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == random.Random(1).randbytes(2_000_000)


def test_peer_missing_chunks_falls_back_to_another() -> None:
    a, b, fid = _setup()
    half = Space.adopt(MemoryStore(), a.me, DeviceKey.generate().public, a.id, a.header.raw,
                       a.acl_records(), window=0)
    addrs = a.store.list_chunks(a.id, fid)
    half.store.put_chunks(a.id, fid, [(x, a.store.get_chunk(x)) for x in addrs[::2]])
    fetch = SF.ChunkFetch(a.id, fid, FS.missing_chunks(b, fid))
    fetch.add_peer("half")
    _pump(fetch, {"half": half}, b)
    assert fetch.stuck and not fetch.done and fetch.remaining == len(addrs) // 2
    fetch.add_peer("a")
    _pump(fetch, {"half": half, "a": a}, b)
    assert fetch.done and FS.file_info(b, fid).complete


def test_tampering_peer_dropped_and_nothing_of_its_batch_stored() -> None:
    a, b, fid = _setup()
    evil = Space.adopt(MemoryStore(), a.me, DeviceKey.generate().public, a.id, a.header.raw,
                       a.acl_records(), window=0)
    addrs = a.store.list_chunks(a.id, fid)
    evil.store.put_chunks(a.id, fid, [(x, b"\0" * 100) for x in addrs])  # lies about content
    fetch = SF.ChunkFetch(a.id, fid, FS.missing_chunks(b, fid))
    fetch.add_peer("evil")
    fetch.add_peer("a")
    assert _pump(fetch, {"evil": evil, "a": a}, b) == 1  # dropped at its first answer
    assert all(b.store.get_chunk(x) == a.store.get_chunk(x) for x in addrs)
    assert fetch.done and FS.file_info(b, fid).complete


def test_resume_after_interruption_asks_only_for_the_remainder() -> None:
    a, b, fid = _setup(3_000_000)
    total = len(FS.missing_chunks(b, fid))
    first = SF.ChunkFetch(a.id, fid, FS.missing_chunks(b, fid), window=1)
    first.add_peer("a")
    _pump(first, {"a": a}, b, limit=1)  # then the receiver dies
    held = total - len(FS.missing_chunks(b, fid))
    assert 0 < held < total and not FS.file_info(b, fid).complete
    again = SF.ChunkFetch(a.id, fid, FS.missing_chunks(b, fid))
    again.add_peer("a")
    sent = 0
    while not again.done:
        for peer, req in again.requests():
            resp = SF.answer(a.store, req)
            sent += len(resp.chunks)
            again.on_response(peer, req, resp, lambda ps: FS.accept_chunks(b, fid, ps))
    assert sent == total - held


def test_lost_peer_requests_go_to_others() -> None:
    a, b, fid = _setup()
    fetch = SF.ChunkFetch(a.id, fid, FS.missing_chunks(b, fid))
    fetch.add_peer("gone")
    assert fetch.requests()  # all in flight to a peer that then vanishes
    assert fetch.requests() == [] and not fetch.stuck
    fetch.on_peer_lost("gone")
    assert fetch.stuck  # nobody left to ask
    fetch.add_peer("a")
    _pump(fetch, {"a": a}, b)
    assert fetch.done


def test_rate_limited_peer_waits_its_turn_and_others_take_its_batch() -> None:
    """RATE_LIMITED (the peer's inbound gate) is not a lost peer: its batch is re-queued at
    once for the others, it is asked again only after the wait, and only a peer refusing
    MAX_REFUSALS times in a row is given up on."""
    a, b, fid = _setup()
    fetch = SF.ChunkFetch(a.id, fid, FS.missing_chunks(b, fid), window=1)
    fetch.add_peer("busy")
    [(peer, req)] = fetch.requests(now=0.0)
    fetch.on_refused(peer, req, until=5.0)
    assert fetch.resume_at == 5.0 and not fetch.stuck
    assert fetch.requests(now=4.9) == []  # still waiting
    fetch.add_peer("a")
    [(other, req2)] = fetch.requests(now=4.9)
    assert other == "a" and req2.addresses == req.addresses  # the refused batch, at once
    [(p, r)] = fetch.requests(now=5.0)
    assert p == "busy"  # its wait is over
    for i in range(2, SF.MAX_REFUSALS + 1):
        fetch.on_refused(p, r, until=10.0 + i)
        if i < SF.MAX_REFUSALS:
            [(p, r)] = fetch.requests(now=10.0 + i)
            assert p == "busy"
    assert "busy" not in fetch._in_flight  # refused every time: given up on
    fetch.on_peer_lost("a")
    fetch.add_peer("a")
    _pump(fetch, {"a": a}, b)
    assert fetch.done


def test_responder_serves_only_the_file_asked_about() -> None:
    a, _b, fid = _setup()
    other = FS.add_file(a, random.Random(9).randbytes(100_000), name="g").manifest.file_id
    theirs = a.store.list_chunks(a.id, other)
    resp = SF.answer(a.store, m.ChunkRequest(a.id, fid, tuple(theirs[:3])))
    assert resp.chunks == () and resp.missing == tuple(theirs[:3])
    resp = SF.answer(a.store, m.ChunkRequest("another.space", other, tuple(theirs[:3])))
    assert resp.chunks == ()


def test_chunk_messages_are_bounded() -> None:
    too_many = m.ChunkRequest("s", b"\1" * 32, tuple(bytes([i]) * 32 for i in range(17)))
    with pytest.raises(DecodeError):
        m.decode(m.encode(too_many, 1))
    big = m.ChunkResponse("s", b"\1" * 32, ((b"\2" * 32, b"x" * (m.MAX_CHUNK_DATA + 1)),), ())
    with pytest.raises(DecodeError):
        m.decode(m.encode(big, 1))


def test_answer_stays_under_the_message_limit_and_progresses() -> None:
    a, b, fid = _setup(4_000_000)
    addrs = tuple(a.store.list_chunks(a.id, fid)[:16])
    resp = SF.answer(a.store, m.ChunkRequest(a.id, fid, addrs), max_bytes=200_000)
    assert 1 <= len(resp.chunks) < 16 and resp.missing == ()
    assert sum(len(d) for _, d in resp.chunks) <= 200_000 + 256 * 1024
    fetch = SF.ChunkFetch(a.id, fid, FS.missing_chunks(b, fid))
    fetch.add_peer("a")
    while not fetch.done:  # partial answers: the rest is asked again, never marked missing
        for peer, req in fetch.requests():
            fetch.on_response(peer, req, SF.answer(a.store, req, max_bytes=200_000),
                              lambda ps: FS.accept_chunks(b, fid, ps))
    assert FS.file_info(b, fid).complete
