"""Receive budgets over real loopback sockets (issue 12.1), both carriers.

Hostile peers complete the handshake, open every stream they may and fill each to its credit
while the listener accepts only one stream per connection (as the sync engine does). With the
budget on, no connection holds more than its budget, the process-wide pool stays under its
capacity, and an honest peer on the same listener still gets its answers. With the budget off
(``P2PSYNC_NO_BUDGET=1``) the same flood buffers every byte it sends: these tests fail.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import StreamReset, TransportError
from p2psync.transport import (
    Connection,
    Keepalive,
    Limits,
    Server,
    TransportConfig,
    connect,
    listen,
)
from p2psync.transport.connection import shared_pool

MSG = 64 << 10
CFG = TransportConfig(
    keepalive=Keepalive(interval=1.0, timeout=5.0), handshake_timeout=5.0,
    limits=Limits(max_streams=16, stream_window=512 << 10, max_message=256 << 10),
    max_pending_streams=4, conn_budget=1 << 20, conn_floor=256 << 10,
    restricted_budget=300 << 10, pool_budget=2 << 20)
HOSTILE = 3
#: What the flood would buffer without a budget: every stream filled to its window.
UNBOUNDED = CFG.limits.max_streams * CFG.limits.stream_window


def identity() -> tuple[DeviceKey, DeviceCertificate]:
    dev = DeviceKey.generate()
    return dev, DeviceCertificate.issue(AccountKey.generate(), dev)


class Listener:
    """A listener whose handler accepts one stream per connection and echoes on it."""

    def __init__(self) -> None:
        self.conns: list[Connection] = []
        self.server: Server | None = None
        self.restrict = False

    async def handle(self, conn: Connection) -> None:
        self.conns.append(conn)
        if self.restrict:
            conn.restrict()
        try:
            st = await conn.accept_stream()
            async for msg in st:
                await st.send(msg)
        except TransportError:
            pass


@pytest.fixture(params=["tcp", "quic"])
async def listener(request: pytest.FixtureRequest) -> AsyncIterator[Listener]:
    lst = Listener()
    dev, cert = identity()
    lst.server = await listen("127.0.0.1", 0, device_key=dev, certificate=cert,
                              on_connection=lst.handle, transport=request.param, config=CFG)
    pool = shared_pool(CFG.pool_budget)
    pool.peak = pool.used
    try:
        yield lst
    finally:
        await lst.server.close()


async def dial(lst: Listener) -> Connection:
    assert lst.server is not None
    dev, cert = identity()
    return await connect(("127.0.0.1", lst.server.port), device_key=dev, certificate=cert,
                         transport=lst.server.transport, config=CFG)  # type: ignore[arg-type]


async def flood(conn: Connection) -> int:
    """Open one 'engine' stream, then fill every other stream to its credit; returns bytes
    sent. Streams the listener refuses are replaced by new ones (the slot comes back)."""
    first = await conn.open_stream()
    await first.send(b"hello")
    assert await first.recv() == b"hello"
    sent = 0
    payload = os.urandom(MSG)
    for _ in range(3 * CFG.limits.max_streams):
        try:
            async with asyncio.timeout(1):
                st = await conn.open_stream()
        except (TimeoutError, TransportError):
            break
        for _ in range(CFG.limits.stream_window // MSG):  # within the initial credit
            try:
                await st.send(payload)
            except TransportError:
                break
            sent += MSG
    return sent


async def settled(conns: list[Connection]) -> None:
    """Wait until the listener side has processed everything the peers sent (no new data
    for a few intervals): the flood is over, peaks are final."""
    last = -1
    quiet = 0
    for _ in range(200):
        total = sum(c._link.session.data_in for c in conns if c._link.session is not None)
        quiet = quiet + 1 if total == last else 0
        if quiet >= 4:
            return
        last = total
        await asyncio.sleep(0.05)


async def test_stream_flood_stays_within_budget(listener: Listener) -> None:
    hostile = [await dial(listener) for _ in range(HOSTILE)]
    honest = await dial(listener)
    sent = await asyncio.gather(*(flood(c) for c in hostile))
    assert min(sent) >= UNBOUNDED // 2, "the flood did not even try"
    await settled(listener.conns)
    # An honest peer on the same listener still gets its answers.
    st = await honest.open_stream()
    for i in range(20):
        await st.send(b"ping %d" % i)
        assert await st.recv() == b"ping %d" % i
    peaks = [c._link.session.peak_buffered for c in listener.conns
             if c._link.session is not None]
    assert len(peaks) == HOSTILE + 1
    assert max(peaks) <= CFG.conn_budget, peaks
    pool = shared_pool(CFG.pool_budget)
    assert pool.peak <= CFG.pool_budget
    for c in [*hostile, honest]:
        await c.close()


async def test_unaccepted_streams_are_refused_not_buffered(listener: Listener) -> None:
    conn = await dial(listener)
    first = await conn.open_stream()
    await first.send(b"x")
    assert await first.recv() == b"x"
    streams = []
    for _ in range(CFG.max_pending_streams + 4):
        st = await conn.open_stream()
        await st.send(b"y")
        streams.append(st)
    # The listener has not accepted these: the first max_pending_streams wait (buffered),
    # every later one is reset on arrival, its data never buffered.
    for st in streams[CFG.max_pending_streams:]:
        with pytest.raises(StreamReset, match="wait to be accepted"):
            async with asyncio.timeout(5):
                await st.recv()
    session = listener.conns[0]._link.session
    assert session is not None and len(session.unaccepted) == CFG.max_pending_streams
    await conn.close()


async def test_restrict_shrinks_the_budget(listener: Listener) -> None:
    listener.restrict = True
    conn = await dial(listener)
    await flood(conn)
    await settled(listener.conns)
    server_conn = listener.conns[0]
    session = server_conn._link.session
    assert session is not None and session.conn_budget == CFG.restricted_budget
    assert session.peak_buffered <= CFG.restricted_budget
    await conn.close()


async def test_restricted_peer_is_closed_after_the_grace_period(listener: Listener) -> None:
    conn = await dial(listener)
    st = await conn.open_stream()
    await st.send(b"x")
    assert await st.recv() == b"x"
    server_conn = listener.conns[0]
    server_conn.restrict(grace=0.2)
    async with asyncio.timeout(5):
        reason = await server_conn.wait_closed()
    assert "shares no space" in str(reason)


async def test_lifted_restriction_keeps_the_peer(listener: Listener) -> None:
    conn = await dial(listener)
    st = await conn.open_stream()
    await st.send(b"x")
    assert await st.recv() == b"x"
    server_conn = listener.conns[0]
    server_conn.restrict(grace=0.2)
    server_conn.lift_restriction()
    session = server_conn._link.session
    assert session is not None and session.conn_budget == CFG.conn_budget
    for i in range(10):  # well past the grace period, still answered
        await st.send(b"%d" % i)
        assert await st.recv() == b"%d" % i
        await asyncio.sleep(0.05)
    assert not server_conn.is_closed
    await conn.close()
