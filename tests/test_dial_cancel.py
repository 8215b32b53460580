"""A cancelled dial releases its carrier at once (not after the 10 s handshake timeout).

The peer here accepts the TCP connection, reads the dialer's first Noise message and never
answers, so the dial is parked in the handshake. Cancelling it must end the Link: the peer's
socket sees the connection closed, and the cancelled task finishes without waiting for
``handshake_timeout`` (set to 60 s, so the switched-off version cannot pass by waiting).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from p2psync.transport import TransportConfig, connect
from p2psync.transport.quic import QuicCarrier
from tests.test_hostile_transport import identity

CFG = TransportConfig(handshake_timeout=60.0, nofile_limit=0)


async def test_cancelled_tcp_dial_closes_its_carrier() -> None:
    loop = asyncio.get_running_loop()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.setblocking(False)
    dev, cert = identity()
    dial = asyncio.create_task(connect(("127.0.0.1", lsock.getsockname()[1]), device_key=dev,
                                       certificate=cert, transport="tcp", config=CFG))
    peer, _ = await loop.sock_accept(lsock)
    try:
        assert await loop.sock_recv(peer, 4096)  # Noise message 1: the dialer waits for 2
        dial.cancel()
        # guards only (the teardown is immediate); without it the dial sat out the timeout
        done, _ = await asyncio.wait({dial}, timeout=5)
        assert dial in done and dial.cancelled()
        async with asyncio.timeout(5):
            while await loop.sock_recv(peer, 4096):  # until b"": the dialer closed
                pass
    finally:
        dial.cancel()
        peer.close()
        lsock.close()


async def test_cancelled_quic_dial_closes_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """QUIC: the peer swallows the Initial; cancelling the dial closes the QUIC connection now
    (not at aioquic's idle timeout, 2 × keepalive timeout = 10 s here)."""
    made: list[QuicCarrier] = []
    init = QuicCarrier.__init__

    def spy(self: QuicCarrier, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(QuicCarrier, "__init__", spy)
    loop = asyncio.get_running_loop()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    dev, cert = identity()
    dial = asyncio.create_task(connect(("127.0.0.1", sink.getsockname()[1]), device_key=dev,
                                       certificate=cert, transport="quic", config=CFG))
    try:
        assert await loop.sock_recv(sink, 2048)  # the Initial: the dialer waits for an answer
        dial.cancel()
        done, _ = await asyncio.wait({dial}, timeout=5)
        assert dial in done and dial.cancelled()
        (carrier,) = made
        await asyncio.wait_for(carrier.wait_closed(), 5)  # guard; closes in a few PTOs
    finally:
        dial.cancel()
        sink.close()
