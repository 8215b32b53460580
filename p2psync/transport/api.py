"""The connection API the sync layer uses: :func:`connect` and :func:`listen`.

Both carriers give the same :class:`~p2psync.transport.connection.Connection`; pick with
``transport="quic"`` (default) or ``"tcp"`` (for networks that block UDP).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic.connection import QuicConnection

from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import DeviceKey
from p2psync.errors import ConnectionClosed, PeerTimeout, TransportError
from p2psync.transport.connection import Carrier, Connection, Link, TransportConfig
from p2psync.transport.quic import QuicCarrier, quic_configuration, raise_rcvbuf, tls_binding
from p2psync.transport.tcp import TCP_BINDING, TcpCarrier

log = logging.getLogger("p2psync.transport")
TransportName = Literal["quic", "tcp"]
OnConnection = Callable[[Connection], Awaitable[None] | None]


def _split_address(address: tuple[str, int] | str) -> tuple[str, int]:
    if isinstance(address, tuple):
        return address
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def connect(
    address: tuple[str, int] | str, *, device_key: DeviceKey, certificate: DeviceCertificate,
    expected_peer: str | None = None, transport: TransportName = "quic",
    config: TransportConfig | None = None,
) -> Connection:
    """Dial a peer, run the authenticated handshake and return the live connection.

    Raises a :class:`~p2psync.errors.HandshakeError` subclass if the peer (or we) refuse the
    identity or version, :class:`~p2psync.errors.PeerTimeout` if it does not answer in time.
    """
    cfg = config or TransportConfig()
    host, port = _split_address(address)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[Connection] = loop.create_future()

    def on_ready(conn: Connection) -> None:
        if not ready.done():
            ready.set_result(conn)

    def on_failed(exc: TransportError) -> None:
        if not ready.done():
            ready.set_exception(exc)

    def make_link(carrier: Any, binding: bytes, per_stream: bool) -> Link:
        return Link(carrier, initiator=True, device_key=device_key, certificate=certificate,
                    config=cfg, binding=binding, expected_peer=expected_peer,
                    per_stream_keys=per_stream, on_ready=on_ready, on_failed=on_failed)

    if transport == "tcp":
        try:
            _, tcp = await asyncio.wait_for(loop.create_connection(
                lambda: TcpCarrier(lambda c: make_link(c, TCP_BINDING, False)), host, port),
                cfg.handshake_timeout)
        except (TimeoutError, OSError) as exc:
            raise TransportError(f"cannot reach {host}:{port} over TCP: {exc}") from exc
        assert tcp.link is not None
        tcp.link.start()
        carrier: Carrier = tcp
    elif transport == "quic":
        carrier = await _quic_dial(host, port, cfg, make_link)
    else:
        raise ValueError(f"unknown transport {transport!r}")
    try:
        return await ready
    except BaseException:
        carrier_close = getattr(carrier, "wait_closed", None)
        if carrier_close is not None:
            await carrier_close()
        raise


async def _quic_dial(host: str, port: int, cfg: TransportConfig,
                     make_link: Callable[[Any, bytes, bool], Link]) -> QuicCarrier:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    addr: Any = infos[0][4]
    if len(addr) == 2:
        addr = ("::ffff:" + str(addr[0]), addr[1], 0, 0)
    qcfg = quic_configuration(is_client=True, max_datagram_size=cfg.max_datagram_size,
                              window=cfg.quic_window, idle_timeout=cfg.keepalive.timeout * 2)
    qcfg.server_name = "p2psync"
    quic = QuicConnection(configuration=qcfg)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0, 0, 0))
        raise_rcvbuf(sock, cfg.udp_rcvbuf)
    except OSError:
        sock.close()
        raise
    transport, proto = await loop.create_datagram_endpoint(
        lambda: QuicCarrier(quic, make_link=lambda c: make_link(c, tls_binding(c._quic), True)),
        sock=sock)
    assert isinstance(proto, QuicCarrier)
    closer = loop.create_task(_close_transport_when_done(proto, transport))
    proto._closer = closer  # type: ignore[attr-defined]
    proto.connect(addr)
    try:
        # Awaited directly, never through wait_for(): on Python 3.11 wait_for runs it in a new
        # task one loop iteration later, and uvloop may deliver the server's whole answer in
        # between. aioquic only resolves a waiter that exists at HandshakeCompleted, so a fast
        # answer (or a preempted dialer) left the dial hanging until the timeout.
        async with asyncio.timeout(cfg.handshake_timeout):
            await proto.wait_connected()
    except (TimeoutError, ConnectionError) as exc:
        proto.close()
        raise PeerTimeout(f"no QUIC handshake with {host}:{port}: {exc or 'timed out'}") \
            from exc
    proto.ensure_link().start()
    return proto


async def _close_transport_when_done(proto: QuicCarrier, transport: asyncio.BaseTransport) -> None:
    """Release the UDP socket once the QUIC connection is closed (or this task is cancelled).

    Not a ``finally``: if the loop is closed with the connection still open, the coroutine is
    garbage-collected later and a ``finally`` would call into the dead loop from the GC.
    """
    try:
        await proto.wait_closed()
    except asyncio.CancelledError:
        transport.close()
        raise
    transport.close()


class Server:
    """A listener; ``port`` is the bound port, ``await close()`` stops it and its connections."""

    def __init__(self, transport: TransportName) -> None:
        self.transport = transport
        self.port = 0
        self.host = ""
        self.connections: set[Connection] = set()
        #: Recent failures (handshake refusals, protocol errors), newest last: for status/tests.
        self.errors: deque[TransportError] = deque(maxlen=64)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp: asyncio.base_events.Server | None = None
        self._quic: QuicServer | None = None
        self._carriers: set[Any] = set()
        self._unread: asyncio.Queue[TransportError] = asyncio.Queue(maxsize=64)

    async def next_error(self) -> TransportError:
        """The oldest connection failure not returned yet (for tests and diagnostics)."""
        return await self._unread.get()

    def _failed(self, exc: TransportError) -> None:
        log.info("incoming connection failed: %s", exc, extra={"error": type(exc).__name__})
        self.errors.append(exc)
        if self._unread.full():
            self._unread.get_nowait()
        self._unread.put_nowait(exc)

    async def close(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
        for conn in list(self.connections):
            await conn.close("listener closing")
        for carrier in list(self._carriers):
            if isinstance(carrier, QuicCarrier):
                carrier.close()
            elif carrier.transport is not None:
                carrier.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._quic is not None:
            for carrier in list(self._carriers):
                if isinstance(carrier, QuicCarrier):
                    await carrier.wait_closed()
            self._quic.close()
        if self._tcp is not None:
            await self._tcp.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def listen(
    host: str, port: int, *, device_key: DeviceKey, certificate: DeviceCertificate,
    on_connection: OnConnection, transport: TransportName = "quic",
    config: TransportConfig | None = None,
) -> Server:
    """Accept peers on ``host:port`` (port 0 = any); call ``on_connection`` for each peer that
    completes the handshake. A coroutine callback runs as a task cancelled by ``close()``."""
    cfg = config or TransportConfig()
    server = Server(transport)

    def on_ready(conn: Connection) -> None:
        server.connections.add(conn)

        async def run() -> None:
            try:
                res = on_connection(conn)
                if inspect.isawaitable(res):
                    await res
                reason = await conn.wait_closed()
                if not isinstance(reason, ConnectionClosed):
                    server._failed(reason)
            finally:
                server.connections.discard(conn)

        task = asyncio.get_running_loop().create_task(run())
        server._tasks.add(task)
        task.add_done_callback(server._tasks.discard)

    def make_link(carrier: Any, binding: bytes, per_stream: bool) -> Link:
        server._carriers.add(carrier)
        return Link(carrier, initiator=False, device_key=device_key, certificate=certificate,
                    config=cfg, binding=binding, per_stream_keys=per_stream, on_ready=on_ready,
                    on_failed=server._failed)

    if transport == "tcp":
        tcp = await asyncio.get_running_loop().create_server(
            lambda: TcpCarrier(lambda c: make_link(c, TCP_BINDING, False)), host, port)
        server._tcp = tcp
        server.port = tcp.sockets[0].getsockname()[1]
    elif transport == "quic":
        qcfg = quic_configuration(is_client=False, max_datagram_size=cfg.max_datagram_size,
                                  window=cfg.quic_window, idle_timeout=cfg.keepalive.timeout * 2)
        quic = await serve(host, port, configuration=qcfg, create_protocol=lambda q, **kw:
                           QuicCarrier(q, make_link=lambda c: make_link(
                               c, tls_binding(c._quic), True), **kw))
        server._quic = quic
        sock = quic._transport.get_extra_info("socket") if quic._transport else None
        raise_rcvbuf(sock, cfg.udp_rcvbuf)
        server.port = sock.getsockname()[1] if sock is not None else port
    else:
        raise ValueError(f"unknown transport {transport!r}")
    server.host = host
    return server
