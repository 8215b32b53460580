"""TCP carrier: one Noise session per TCP connection, logical streams multiplexed in records.

Every record carries its stream id, so one pair of Noise CipherStates (strictly sequential
nonces) covers the whole connection. Backpressure comes from the kernel socket buffer
(``pause_writing``) plus the per-stream credit of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from p2psync.errors import ConnectionClosed, FrameError, TransportError
from p2psync.transport.connection import (
    AdmissionGuard,
    Carrier,
    Link,
    Ticket,
    TransportConfig,
    raise_nofile_limit,
    source_key,
)
from p2psync.transport.framing import FrameDecoder

log = logging.getLogger("p2psync.transport")

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
        self.release_admission()
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


#: accept() errors that mean "out of descriptors or memory right now", not "listener broken".
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


#: A descriptor-starvation warning is logged at most this often (seconds).
LOG_EVERY = 60.0


class TcpListener:
    """A TCP accept loop that caps connections and survives running out of descriptors.

    asyncio's own loop logs every failed ``accept`` and retries after 1 s with no way to free a
    descriptor, and an idle-socket flood holds one per socket for the handshake timeout. Here:
    each accepted socket is admitted by an :class:`AdmissionGuard` (per-source and total
    half-open caps, oldest dropped when full); on EMFILE/ENFILE the oldest half-open connection
    is dropped to free a descriptor and accept backs off briefly (10 ms doubling to 0.5 s),
    logging at most once a minute.
    """

    def __init__(self, socks: list[socket.socket], factory: Callable[[], asyncio.Protocol],
                 guard: AdmissionGuard) -> None:
        self.sockets = socks
        self.sock = socks[0]
        self.guard = guard
        self._factory = factory
        self._loop = asyncio.get_running_loop()
        self._tasks = [self._loop.create_task(self._accept_loop(s)) for s in socks]
        self.resource_errors = 0  #: accept() failures for lack of descriptors/memory
        self._starved = False
        self._logged_at = -LOG_EVERY

    async def _accept_loop(self, sock: socket.socket) -> None:
        backoff = 0.01
        n = 0
        while True:
            n += 1
            if n % 2 == 0:  # a ready accept() never yields: let the loop breathe in a burst
                await asyncio.sleep(0)
            try:
                conn, addr = await self._loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    if sock.fileno() < 0:
                        return  # closed
                    log.warning("TCP accept failed: %s", exc)
                    await asyncio.sleep(backoff)
                    continue
                self.resource_errors += 1
                self._starved = True
                now = self._loop.time()
                if now - self._logged_at >= LOG_EVERY:  # once per episode, not per accept
                    self._logged_at = now
                    log.warning("TCP accept: %s (%d so far); dropping the oldest half-open "
                                "connections and backing off", exc, self.resource_errors)
                if not self.guard.evict_oldest():
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)
                else:
                    await asyncio.sleep(0)
                continue
            backoff = 0.01
            if self._starved and self._loop.time() - self._logged_at >= 1.0:
                self._starved = False
                log.info("TCP accept working again after %d descriptor errors",
                         self.resource_errors)
            self._admit(conn, addr)

    def _admit(self, conn: socket.socket, addr: Any) -> None:
        proto = self._factory()
        ticket = self.guard.admit(source_key(addr), lambda: _abort(proto, conn))
        if ticket is None:
            conn.close()  # over this source's half-open cap
            return
        self._attach(proto, ticket)
        conn.setblocking(False)
        task = self._loop.create_task(self._start(conn, proto, ticket))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _attach(self, proto: Any, ticket: Ticket) -> None:
        """Hand the admission ticket to the protocol (which promotes/releases it)."""
        proto.guard, proto.ticket = self.guard, ticket

    async def _start(self, conn: socket.socket, proto: asyncio.Protocol, ticket: Ticket) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: proto, sock=conn)
        except OSError:
            self.guard.release(ticket)
            conn.close()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _abort(proto: Any, conn: socket.socket) -> None:
    """Drop an admitted connection (evicted): abort its transport, or the bare socket."""
    transport = getattr(proto, "transport", None)
    if transport is not None:
        transport.abort()
    else:
        conn.close()


async def serve_tcp(host: str, port: int, factory: Callable[[], asyncio.Protocol],
                    config: TransportConfig, *,
                    listener: type[TcpListener] | None = None) -> TcpListener:
    """Listen on ``host:port`` with the guarded accept loop; the descriptor limit is raised
    first where the OS allows (``config.nofile_limit``)."""
    if config.nofile_limit:
        raise_nofile_limit(config.nofile_limit)
    infos = await asyncio.get_running_loop().getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        # Like asyncio.create_server: one socket per address (both families for host ""),
        # IPv6 sockets IPv6-only; port 0 binds the first and reuses its port for the rest.
        for family, _, _, _, addr in dict.fromkeys((i[0], 0, 0, "", i[4]) for i in infos):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(1024)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return (listener or TcpListener)(socks, factory, AdmissionGuard(config))
