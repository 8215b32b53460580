"""TCP carrier: one Noise session per TCP connection, logical streams multiplexed in records.

Every record carries its stream id, so one pair of Noise CipherStates (strictly sequential
nonces) covers the whole connection. Backpressure comes from the kernel socket buffer
(``pause_writing``) plus the per-stream credit of the session.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

from p2psync.errors import ConnectionClosed, FrameError, TransportError
from p2psync.transport.connection import Carrier, Link
from p2psync.transport.framing import FrameDecoder

#: TCP has no exporter to bind to: the Noise session *is* the channel.
TCP_BINDING = b"tcp"


class TcpCarrier(asyncio.Protocol, Carrier):
    """asyncio Protocol feeding a :class:`Link`."""

    transport_name = "tcp"

    def __init__(self, make_link: Any) -> None:
        self._make_link = make_link
        self.link: Link | None = None
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder()
        self._paused: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._closed = asyncio.get_running_loop().create_future()
        self._peer: Any = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport has the Transport methods but does not subclass it: no assert.
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        self._peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=1 << 20)
        self.link = self._make_link(self)

    def data_received(self, data: bytes) -> None:
        link = self.link
        if link is None or link.error is not None:
            return
        try:
            bodies = self.decoder.feed(data)
        except FrameError as exc:
            link.fail(exc)
            return
        if bodies:
            link.on_frames(0, bodies)

    def eof_received(self) -> bool | None:
        if self.link is not None:
            try:
                self.decoder.eof()
                exc: TransportError = ConnectionClosed("peer closed the TCP connection")
            except FrameError as e:
                exc = e
            self.link.on_transport_lost(exc)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.link is not None:
            self.link.on_transport_lost(ConnectionClosed(
                f"TCP connection lost{': ' + str(exc) if exc else ''}"))
        if not self._closed.done():
            self._closed.set_result(None)
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)

    # Carrier
    def write_frames(self, route: int, frames: list[bytes]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if len(frames) == 1:
                self.transport.write(frames[0])
            else:
                self.transport.writelines(frames)

    def teardown(self, code: int, reason: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # flushes what was written (the CLOSE record) first

    def pending_bytes(self) -> int:
        return self.decoder.pending

    async def drain(self) -> None:
        while self._writing_paused and not self._closed.done():
            self._paused = asyncio.get_running_loop().create_future()
            await self._paused

    def remote_address(self) -> Any:
        return self._peer

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)
