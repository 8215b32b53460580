"""The public ``listen`` builds guarded listeners (issue 12.4 wired into the agent).

``tests/test_hostile_transport.py`` checks the mechanisms on ``serve_tcp``/``serve_quic``
directly; here the same caps are shown to apply to what ``transport.api.listen`` returns — the
listener the agent runs. Each test fails with the driver back on ``loop.create_server`` /
aioquic's ``serve`` (no caps, no Retry).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from p2psync.errors import TransportError
from p2psync.transport import Connection, Keepalive, TransportConfig, connect, listen
from p2psync.transport.api import Server
from tests.test_hostile_transport import closed_by_peer, identity, idle_sockets, spoofed_initials

CFG = TransportConfig(keepalive=Keepalive(interval=1.0, timeout=5.0), handshake_timeout=30.0,
                      nofile_limit=0)


@asynccontextmanager
async def listening(transport: str, cfg: TransportConfig) -> AsyncIterator[Server]:
    dev, cert = identity()
    server = await listen("127.0.0.1", 0, device_key=dev, certificate=cert,
                          on_connection=lambda c: None, transport=transport, config=cfg)
    try:
        yield server
    finally:
        await server.close()


async def dial(server: Server) -> Connection:
    dev, cert = identity()
    async with asyncio.timeout(5):
        return await connect(("127.0.0.1", server.port), device_key=dev, certificate=cert,
                             transport=server.transport, config=CFG)


async def test_listen_tcp_caps_half_open_per_source() -> None:
    async with listening("tcp", replace(CFG, max_half_open_per_source=3)) as server:
        socks = idle_sockets(server.port, 6)
        try:
            conn = await dial(server)  # another source address: unaffected
            # asyncio's create_server would keep every idle socket for the handshake timeout
            assert await asyncio.to_thread(closed_by_peer, socks[-1])
            await conn.close()
        finally:
            for s in socks:
                s.close()


@pytest.mark.parametrize("transport", ["tcp", "quic"])
async def test_listen_caps_established_per_source(transport: str) -> None:
    async with listening(transport, replace(CFG, max_connections_per_source=1)) as server:
        first = await dial(server)
        with pytest.raises(TransportError, match="too many connections"):
            await dial(server)
        await first.close()


async def test_listen_quic_answers_initials_with_retry() -> None:
    """A fresh Initial gets a stateless Retry, not a handshake: no state for spoofed sources."""
    async with listening("quic", CFG) as server:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.2", 0))
        udp.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendto(udp, spoofed_initials(1)[0], ("127.0.0.1", server.port))
            async with asyncio.timeout(5):
                answer = await loop.sock_recv(udp, 4096)
        finally:
            udp.close()
        header = pull_quic_header(Buffer(data=answer), host_cid_length=8)
        assert header.packet_type == QuicPacketType.RETRY
        assert server.guard is not None and server.guard.admitted == 0
