"""Whole multi-node sync runs over the in-memory carrier: seeded, socket-free, repeatable.

Also the carrier itself (handshake, streams, cut) and the checks that the convergence run
really depends on push and on tree sync: with either switched off it does not converge.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.crypto.cert import DeviceCertificate
from p2psync.errors import ConnectionClosed, TransportError
from p2psync.sync import engine as engine_mod
from p2psync.sync.pull import TreePull
from p2psync.transport.memory import memory_pair
from tests.memory_net import MemoryNet


def _ident() -> tuple[DeviceKey, DeviceCertificate]:
    acc, dev = AccountKey.generate(), DeviceKey.generate()
    return dev, DeviceCertificate.issue(acc, dev)


async def test_memory_carrier_handshake_streams_and_cut() -> None:
    (da, ca), (db, cb) = _ident(), _ident()
    conn_a, conn_b, pipe = await memory_pair(da, ca, db, cb)
    assert conn_a.certificate.device == db.public and conn_b.certificate.device == da.public
    assert conn_a.transport == "memory"
    s = await conn_a.open_stream()
    await s.send(b"hello")
    t = await conn_b.accept_stream()
    assert await t.recv() == b"hello"
    await t.send(b"x" * 100_000)
    assert await s.recv() == b"x" * 100_000
    pipe.cut()
    assert isinstance(await asyncio.wait_for(conn_a.wait_closed(), 1), ConnectionClosed)
    assert isinstance(await asyncio.wait_for(conn_b.wait_closed(), 1), ConnectionClosed)
    with pytest.raises(TransportError):
        await s.send(b"after the cut")


async def test_memory_carrier_close_reaches_the_peer() -> None:
    (da, ca), (db, cb) = _ident(), _ident()
    conn_a, conn_b, _ = await memory_pair(da, ca, db, cb)
    await conn_a.close("bye")
    reason = await asyncio.wait_for(conn_b.wait_closed(), 1)
    assert "bye" in str(reason)


async def test_memory_carrier_refuses_the_wrong_peer() -> None:
    (da, ca), (db, cb) = _ident(), _ident()
    _, other = _ident()
    conn_a, _, _ = await memory_pair(da, ca, db, cb)
    with pytest.raises(TransportError):
        await memory_pair(da, ca, db, cb, expected_peer=other.peer_id)
    assert conn_a.peer_id == cb.peer_id != other.peer_id


async def _run(tmp: Path, n: int, seed: int, steps: int = 120, timeout: float = 10.0,
               ) -> MemoryNet:
    net = MemoryNet(tmp, n, seed)
    try:
        await net.run(steps)
        await net.wait(net.converged, timeout)
    finally:
        await net.close()
    return net


@pytest.mark.parametrize("seed,n", [(1, 3), (2, 4), (3, 5), (4, 3)])
async def test_seeded_convergence(tmp_path: Path, seed: int, n: int) -> None:
    net = await _run(tmp_path, n, seed)
    assert net.expected and len(net.docs) >= 1
    assert any(s.startswith("cut") for s in net.log)
    assert any(s.startswith("restart") for s in net.log)


async def test_a_seed_replays_the_same_script(tmp_path: Path) -> None:
    one = await _run(tmp_path / "one", 4, 7)
    two = await _run(tmp_path / "two", 4, 7)
    assert one.log == two.log and one.expected == two.expected


async def test_without_push_it_does_not_converge(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod.PeerEngine, "push_tree", lambda *a: None)
    with pytest.raises(TimeoutError):
        await _run(tmp_path, 3, 1, timeout=2.0)


async def test_without_tree_sync_it_does_not_converge(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    original = TreePull.__init__

    def disabled(self: TreePull, *args: object) -> None:
        original(self, *args)  # type: ignore[arg-type]
        self.done = True

    monkeypatch.setattr(TreePull, "__init__", disabled)
    with pytest.raises(TimeoutError):
        await _run(tmp_path, 3, 1, timeout=2.0)


async def test_memory_carrier_silent_cut_is_noticed_by_the_keepalive() -> None:
    from p2psync.errors import PeerTimeout
    from p2psync.transport.connection import TransportConfig
    from p2psync.transport.session import Keepalive

    (da, ca), (db, cb) = _ident(), _ident()
    cfg = TransportConfig(keepalive=Keepalive(interval=0.05, timeout=0.2))
    conn_a, conn_b, pipe = await memory_pair(da, ca, db, cb, config=cfg)
    pipe.cut(silent=True)
    reason_a = await asyncio.wait_for(conn_a.wait_closed(), 3)
    reason_b = await asyncio.wait_for(conn_b.wait_closed(), 3)
    assert isinstance(reason_a, PeerTimeout) and isinstance(reason_b, PeerTimeout)
