"""The transport seam, declared: what the sync engine and the node use of a connection, and
what a carrier (QUIC, TCP, in-memory, WebSocket…) must provide to be dialled and listened on.

Two levels, on purpose:

* **Above** — :class:`PeerConnection`, :class:`PeerStream`, :class:`Listener`: the surface the
  engine and the node touch, and nothing more. Code above the transport types against these
  (so a sans-IO test can hand the engine a fake) and never against QUIC or TCP classes.
* **Below** — :class:`CarrierDriver` and :class:`FrameCarrier`: a carrier only moves *frame
  bodies* between two endpoints and owns its sockets. Identity (Noise XX + certificates),
  encryption, streams, credit and keepalive are the shared
  :class:`~p2psync.transport.connection.Link`'s, so a new carrier cannot weaken them and every
  carrier yields the same :class:`~p2psync.transport.connection.Connection`.

Carriers are chosen by name from :mod:`p2psync.transport.registry`; the conformance suite
``tests/conformance/transport_suite.py`` runs against every registered one. See docs/seams.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from p2psync.crypto.cert import DeviceCertificate
from p2psync.errors import TransportError

if TYPE_CHECKING:  # pragma: no cover
    from p2psync.transport.connection import Link, TransportConfig


# --- above: what the engine and node use ------------------------------------------------------
@runtime_checkable
class PeerStream(Protocol):
    """A message-oriented bidirectional stream of one connection.

    ``send`` waits while the peer's credit is used up (backpressure); ``recv`` raises
    :class:`~p2psync.errors.EndOfStream` after the peer's ``finish()`` and
    :class:`~p2psync.errors.StreamReset` after a reset either way; a closed connection raises
    its close reason. Messages arrive whole, in order, each exactly as sent.
    """

    @property
    def id(self) -> int: ...

    async def send(self, data: bytes | bytearray | memoryview) -> None: ...

    async def recv(self) -> bytes: ...

    def finish(self) -> None:
        """Half-close: no more messages from this side."""

    def reset(self, reason: str = "") -> None:
        """Abort both ways; the peer's pending and later calls raise ``StreamReset``."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class HandshakeFacts(Protocol):
    """What the engine reads from the authenticated handshake: the Noise handshake hash, to
    bind sync-level proofs (space exchange, bootstrap) to this very connection."""

    @property
    def handshake_hash(self) -> bytes: ...


@runtime_checkable
class PeerConnection(Protocol):
    """An authenticated, encrypted connection to one peer device, whatever the carrier.

    The peer's identity is proven before the object exists (``connect`` either returns a
    working connection or raises). ``close`` and ``wait_closed`` never raise the reason.
    """

    @property
    def peer_id(self) -> str: ...

    @property
    def account_id(self) -> str: ...

    @property
    def certificate(self) -> DeviceCertificate: ...

    @property
    def result(self) -> HandshakeFacts: ...

    @property
    def transport(self) -> str:
        """The carrier's registry name (``"quic"``, ``"tcp"``…), for status output."""

    @property
    def is_closed(self) -> bool: ...

    @property
    def close_reason(self) -> TransportError | None: ...

    async def open_stream(self) -> PeerStream:
        """A new stream; waits while the peer's concurrent-stream limit is reached."""

    async def accept_stream(self) -> PeerStream:
        """The next stream the peer opened (one caller at a time, as the engine does)."""

    async def close(self, reason: str = "") -> None: ...

    async def wait_closed(self) -> TransportError: ...

    def restrict(self, budget: int | None = None, *, grace: float | None = None) -> None:
        """Shrink the receive budget for a peer that shares nothing with us; with ``grace``,
        close the connection after that many seconds unless lifted first."""

    def lift_restriction(self) -> None:
        """Back to the configured budget, and no close at the end of the grace period."""


@runtime_checkable
class Listener(Protocol):
    """A bound listener as the node sees it: its carrier name and address, and ``close()``
    (stops accepting and closes every connection it accepted)."""

    @property
    def transport(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    async def close(self) -> None: ...


# --- below: what a carrier provides ------------------------------------------------------------
class FrameCarrier(Protocol):
    """One physical connection as the :class:`Link` drives it (TCP socket, QUIC connection,
    in-memory pipe…). ``route`` is a logical stream id where the carrier has native streams
    (QUIC), else always 0. The carrier calls ``link.on_frames(route, bodies)`` for received
    frame bodies and ``link.on_transport_lost(exc)`` when its socket goes away."""

    transport_name: str

    def write_frames(self, route: int, frames: list[bytes]) -> None:
        """Queue length-prefixed frames for sending, in order; never blocks."""

    def teardown(self, code: int, reason: str) -> None:
        """Close the socket after flushing what was written (the CLOSE record)."""

    def end_route(self, route: int) -> None:
        """Native-stream carriers: end our half of ``route`` (after FIN or RESET)."""

    def pending_bytes(self) -> int:
        """Bytes of incomplete frames buffered (to report a stall mid-frame)."""

    async def drain(self) -> None:
        """Wait while the carrier's send buffer is over its high-water mark."""

    def remote_address(self) -> Any: ...

    async def wait_closed(self) -> None:
        """Wait until the carrier's sockets are released."""


#: Builds the Link for a new carrier: ``make_link(carrier, binding, per_stream_keys)``.
#: ``binding`` is the channel-binding value both ends derive (see docs/transport.md);
#: ``per_stream_keys`` is True where each route is encrypted with its own key (QUIC).
MakeLink = Callable[[Any, bytes, bool], "Link"]


class BoundCarrier(Protocol):
    """A carrier's listening socket(s): the port actually bound, and ``close()`` which stops
    accepting, aborts any carrier it accepted that is still open and releases the sockets."""

    @property
    def port(self) -> int: ...

    async def close(self) -> None: ...


@runtime_checkable
class CarrierDriver(Protocol):
    """How to dial and listen on one kind of carrier; registered under :attr:`name`.

    ``dial`` reaches ``host:port``, builds the carrier's Link with ``make_link`` and starts the
    handshake (``link.start()`` on the initiator); it returns once the Link runs, not when the
    handshake is done (the caller awaits that). It raises :class:`~p2psync.errors.TransportError`
    (or a subclass) when the address cannot be reached. ``listen`` binds (port 0: any free
    port) and calls ``make_link`` for every incoming carrier.
    """

    name: str

    async def dial(self, host: str, port: int, make_link: MakeLink,
                   config: TransportConfig) -> FrameCarrier: ...

    async def listen(self, host: str, port: int, make_link: MakeLink,
                     config: TransportConfig) -> BoundCarrier: ...
