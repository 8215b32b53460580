"""The two built-in carrier drivers, QUIC and TCP: how each dials, listens and releases sockets.

Each implements :class:`~p2psync.transport.interface.CarrierDriver`; everything above the
carrier (handshake, identity, streams) is the shared :class:`~p2psync.transport.connection.Link`,
wired by :mod:`p2psync.transport.api`. They are registered in
:mod:`p2psync.transport.registry` under ``"quic"`` and ``"tcp"``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aioquic.quic.connection import QuicConnection

from p2psync.errors import PeerTimeout, TransportError
from p2psync.transport.connection import AdmissionGuard, Link, TransportConfig
from p2psync.transport.interface import MakeLink
from p2psync.transport.quic import (
    GuardedQuicServer,
    QuicCarrier,
    aioquic_server_socket,
    quic_configuration,
    raise_rcvbuf,
    serve_quic,
    tls_binding,
)
from p2psync.transport.tcp import TCP_BINDING, TcpCarrier, TcpListener, serve_tcp


class TcpDriver:
    """TCP: one Noise session per socket, streams multiplexed in records (binding ``b"tcp"``)."""

    name = "tcp"

    async def dial(self, host: str, port: int, make_link: MakeLink,
                   config: TransportConfig) -> TcpCarrier:
        loop = asyncio.get_running_loop()
        try:
            _, tcp = await asyncio.wait_for(loop.create_connection(
                lambda: TcpCarrier(lambda c: make_link(c, TCP_BINDING, False)), host, port),
                config.handshake_timeout)
        except (TimeoutError, OSError) as exc:
            raise TransportError(f"cannot reach {host}:{port} over TCP: {exc}") from exc
        assert tcp.link is not None
        tcp.link.start()
        return tcp

    async def listen(self, host: str, port: int, make_link: MakeLink,
                     config: TransportConfig) -> _TcpBound:
        bound = _TcpBound()

        def new_link(c: TcpCarrier) -> Link:
            bound.carriers.add(c)
            return make_link(c, TCP_BINDING, False)

        # The guarded accept loop (issue 12.4): half-open caps per source and in total,
        # established caps at handshake end, EMFILE-proof accept, descriptor limit raised.
        bound.server = await serve_tcp(host, port, lambda: TcpCarrier(new_link), config)
        bound.guard = bound.server.guard
        bound.port = bound.server.sock.getsockname()[1]
        return bound


class _TcpBound:
    def __init__(self) -> None:
        self.server: TcpListener | None = None
        #: The listener's admission caps (for status and tests).
        self.guard: AdmissionGuard | None = None
        self.port = 0
        self.carriers: set[TcpCarrier] = set()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.carriers):
            if c.transport is not None:
                c.transport.abort()
        if self.server is not None:
            await self.server.wait_closed()


class QuicDriver:
    """QUIC (aioquic): TLS for packet protection, Noise on stream 0 bound to the TLS secrets,
    one QUIC stream per logical stream with its own key."""

    name = "quic"

    async def dial(self, host: str, port: int, make_link: MakeLink,
                   config: TransportConfig) -> QuicCarrier:
        cfg = config
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
            lambda: QuicCarrier(quic, make_link=lambda c: make_link(c, tls_binding(c.quic),
                                                                    True)),
            sock=sock)
        assert isinstance(proto, QuicCarrier)
        closer = loop.create_task(_close_transport_when_done(proto, transport))
        proto._closer = closer  # type: ignore[attr-defined]
        proto.connect(addr)
        try:
            # Awaited directly, never through wait_for(): on Python 3.11 wait_for runs it in a
            # new task one loop iteration later, and uvloop may deliver the server's whole
            # answer in between. aioquic only resolves a waiter that exists at
            # HandshakeCompleted, so a fast answer (or a preempted dialer) left the dial
            # hanging until the timeout.
            async with asyncio.timeout(cfg.handshake_timeout):
                await proto.wait_connected()
        except (TimeoutError, ConnectionError) as exc:
            proto.close()
            raise PeerTimeout(f"no QUIC handshake with {host}:{port}: {exc or 'timed out'}") \
                from exc
        except BaseException:  # cancelled: release the socket now, not at the idle timeout
            proto.close()
            raise
        proto.ensure_link().start()
        return proto

    async def listen(self, host: str, port: int, make_link: MakeLink,
                     config: TransportConfig) -> _QuicBound:
        cfg = config
        bound = _QuicBound()

        def new_link(c: QuicCarrier) -> Link:
            bound.carriers.add(c)
            return make_link(c, tls_binding(c.quic), True)

        qcfg = quic_configuration(is_client=False, max_datagram_size=cfg.max_datagram_size,
                                  window=cfg.quic_window, idle_timeout=cfg.keepalive.timeout * 2)
        # Retry (address validation) and the admission caps (issue 12.4); SO_RCVBUF raised.
        quic = await serve_quic(host, port, configuration=qcfg, config=cfg,
                                create_protocol=lambda q, **kw: QuicCarrier(
                                    q, make_link=new_link, **kw))
        bound.server = quic
        bound.guard = quic.guard
        sock = aioquic_server_socket(quic)
        bound.port = sock.getsockname()[1] if sock is not None else port
        return bound


class _QuicBound:
    def __init__(self) -> None:
        self.server: GuardedQuicServer | None = None
        #: The listener's admission caps (for status and tests).
        self.guard: AdmissionGuard | None = None
        self.port = 0
        self.carriers: set[QuicCarrier] = set()

    async def close(self) -> None:
        for c in list(self.carriers):
            c.close()
        for c in list(self.carriers):
            await c.wait_closed()
        if self.server is not None:
            self.server.close()


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
