"""The connection API the sync layer uses: :func:`connect` and :func:`listen`.

Every carrier gives the same :class:`~p2psync.transport.connection.Connection`; pick one by
name (``transport="quic"`` (default), ``"tcp"`` for networks that block UDP, or any carrier in
:mod:`p2psync.transport.registry`). This module holds what all carriers share — the Link
(handshake, identity) wiring and the :class:`Server` bookkeeping — and no carrier branch.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import DeviceKey
from p2psync.errors import ConnectionClosed, TransportError
from p2psync.transport.connection import AdmissionGuard, Connection, Link, TransportConfig
from p2psync.transport.interface import BoundCarrier, FrameCarrier, Listener, PeerConnection
from p2psync.transport.registry import carrier

log = logging.getLogger("p2psync.transport")
#: A carrier's registry name (``"quic"``, ``"tcp"``, …); see :func:`registry.carrier_names`.
TransportName = str
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
    driver = carrier(transport)  # UnknownTransport before anything is opened
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

    links: list[Link] = []

    def make_link(c: Any, binding: bytes, per_stream: bool) -> Link:
        c.transport_name = driver.name  # status shows the registry name it was dialled by
        link = Link(c, initiator=True, device_key=device_key, certificate=certificate,
                    config=cfg, binding=binding, expected_peer=expected_peer,
                    per_stream_keys=per_stream, on_ready=on_ready, on_failed=on_failed)
        links.append(link)
        return link

    link_carrier: FrameCarrier = await driver.dial(host, port, make_link, cfg)
    try:
        return await ready
    except BaseException:
        # Cancelled (or failed) while the handshake runs: end the Link now, which tears the
        # carrier down, so wait_closed returns at once instead of after the handshake timeout.
        for link in links:
            if link.connection is not None:  # became ready just as we were cancelled
                await link.connection.close("dial cancelled")
            else:
                link.fail(ConnectionClosed("dial cancelled"))
        await link_carrier.wait_closed()
        raise


class Server:
    """A listener; ``port`` is the bound port, ``await close()`` stops it and its connections.

    Carrier-independent: the carrier's sockets are its driver's :class:`BoundCarrier`."""

    def __init__(self, transport: TransportName) -> None:
        self.transport = transport
        self.port = 0
        self.host = ""
        self.connections: set[Connection] = set()
        #: Recent failures (handshake refusals, protocol errors), newest last: for status/tests.
        self.errors: deque[TransportError] = deque(maxlen=64)
        self._tasks: set[asyncio.Task[None]] = set()
        self._bound: BoundCarrier | None = None
        self._unread: asyncio.Queue[TransportError] = asyncio.Queue(maxsize=64)

    @property
    def guard(self) -> AdmissionGuard | None:
        """The listener's admission caps (half-open/established counts), if its carrier has
        them (QUIC, TCP): for status output and tests."""
        return getattr(self._bound, "guard", None)

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
        """Close every accepted connection (peers see "listener closing"), stop the handlers,
        then let the driver abort half-open carriers and release the sockets."""
        for conn in list(self.connections):
            await conn.close("listener closing")
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._bound is not None:
            await self._bound.close()

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
    driver = carrier(transport)
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

    def make_link(c: Any, binding: bytes, per_stream: bool) -> Link:
        c.transport_name = driver.name
        return Link(c, initiator=False, device_key=device_key, certificate=certificate,
                    config=cfg, binding=binding, per_stream_keys=per_stream, on_ready=on_ready,
                    on_failed=server._failed)

    server._bound = await driver.listen(host, port, make_link, cfg)
    server.port = server._bound.port
    server.host = host
    return server


def _conforms(conn: Connection, server: Server) -> tuple[PeerConnection, Listener]:
    """Static check (mypy): the one Connection class and Server satisfy the declared seam."""
    return conn, server
