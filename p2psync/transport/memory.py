"""In-memory carrier: two :class:`Link` ends joined by an in-process pipe (no sockets).

The same Noise handshake, framing, records, streams and credit as TCP run over it — only the
bytes travel through the event loop (``call_soon``, in order) instead of a socket — so whole
multi-node sync runs happen in one process in milliseconds and are repeatable. The pipe can
be :meth:`MemoryPipe.cut` to simulate a vanished peer: either like a reset (both ends learn
at once, no CLOSE record) or silently (bytes are dropped; the keepalive notices).

Usage::

    conn_a, conn_b, pipe = await memory_pair(dev_a, cert_a, dev_b, cert_b)
    ...
    pipe.cut()
"""

from __future__ import annotations

import asyncio
from typing import Any

from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import DeviceKey
from p2psync.errors import ConnectionClosed, FrameError, TransportError
from p2psync.transport.connection import Carrier, Connection, Link, TransportConfig
from p2psync.transport.framing import FrameDecoder

#: Like TCP, the Noise session itself is the channel: nothing below it to bind to.
MEMORY_BINDING = b"memory"


class MemoryCarrier(Carrier):
    """One end of a :class:`MemoryPipe`; feeds its :class:`Link` like the TCP carrier does."""

    transport_name = "memory"

    def __init__(self, pipe: MemoryPipe, name: str) -> None:
        self.pipe = pipe
        self.name = name
        self.peer: MemoryCarrier | None = None
        self.link: Link | None = None
        self.decoder = FrameDecoder()
        self.loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[None] = self.loop.create_future()

    @property
    def closed(self) -> bool:
        return self._closed.done()

    def _mark_closed(self) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    # Carrier
    def write_frames(self, route: int, frames: list[bytes]) -> None:
        peer = self.peer
        if self.closed or peer is None or self.pipe.silent:
            return
        data = b"".join(frames)
        self.pipe.bytes_moved += len(data)
        self.loop.call_soon(peer._deliver, data)

    def teardown(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self._mark_closed()
        peer = self.peer
        if peer is not None and not self.pipe.silent:
            # after the bytes already written (the CLOSE record), like a TCP FIN
            self.loop.call_soon(peer._lost, ConnectionClosed("peer closed the memory pipe"))

    def pending_bytes(self) -> int:
        return self.decoder.pending

    def remote_address(self) -> Any:
        return None if self.peer is None else f"memory:{self.peer.name}"

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    # from the other end
    def _deliver(self, data: bytes) -> None:
        link = self.link
        if link is None or link.error is not None or self.closed:
            return
        try:
            bodies = self.decoder.feed(data)
        except FrameError as exc:
            link.fail(exc)
            return
        if bodies:
            link.on_frames(0, bodies)

    def _lost(self, exc: TransportError) -> None:
        if self.link is not None:
            self.link.on_transport_lost(exc)
        self._mark_closed()


class MemoryPipe:
    """The two ends of one in-memory connection."""

    def __init__(self, name_a: str = "a", name_b: str = "b") -> None:
        self.a = MemoryCarrier(self, name_a)
        self.b = MemoryCarrier(self, name_b)
        self.a.peer, self.b.peer = self.b, self.a
        self.silent = False  #: set by a silent cut: every further byte is dropped
        self.bytes_moved = 0

    def cut(self, *, silent: bool = False) -> None:
        """The peer vanishes. Default: both ends learn at once (like a reset, no CLOSE
        record). ``silent``: bytes just stop flowing; each end's keepalive times out."""
        if silent:
            self.silent = True
            return
        for end in (self.a, self.b):
            if not end.closed:
                end._lost(ConnectionClosed("memory pipe cut"))


async def memory_pair(
    device_a: DeviceKey, certificate_a: DeviceCertificate,
    device_b: DeviceKey, certificate_b: DeviceCertificate, *,
    config: TransportConfig | None = None, expected_peer: str | None = None,
    names: tuple[str, str] = ("a", "b"),
) -> tuple[Connection, Connection, MemoryPipe]:
    """Connect ``a`` (initiator) to ``b`` over a new pipe; returns both authenticated
    connections once the handshake is done (its errors raise, as with ``connect``)."""
    cfg = config or TransportConfig()
    loop = asyncio.get_running_loop()
    pipe = MemoryPipe(*names)
    ready: dict[str, asyncio.Future[Connection]] = {
        "a": loop.create_future(), "b": loop.create_future()}

    def callbacks(side: str) -> dict[str, Any]:
        fut = ready[side]

        def on_ready(conn: Connection) -> None:
            if not fut.done():
                fut.set_result(conn)

        def on_failed(exc: TransportError) -> None:
            if not fut.done():
                fut.set_exception(exc)

        return {"on_ready": on_ready, "on_failed": on_failed}

    pipe.a.link = Link(pipe.a, initiator=True, device_key=device_a, certificate=certificate_a,
                       config=cfg, binding=MEMORY_BINDING, expected_peer=expected_peer,
                       **callbacks("a"))
    pipe.b.link = Link(pipe.b, initiator=False, device_key=device_b, certificate=certificate_b,
                       config=cfg, binding=MEMORY_BINDING, **callbacks("b"))
    pipe.a.link.start()
    try:
        conn_a = await ready["a"]
        conn_b = await ready["b"]
    except BaseException:
        pipe.cut()
        for fut in ready.values():
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: no "never retrieved" warning
            else:
                fut.cancel()
        raise
    return conn_a, conn_b, pipe
