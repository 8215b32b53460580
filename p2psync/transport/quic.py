"""QUIC carrier (aioquic): TLS for packet protection only, Noise for identity, bound together.

* TLS uses an ephemeral self-signed Ed25519 certificate that nobody checks; the peer's identity
  comes from the Noise handshake on QUIC stream 0.
* Channel binding: the Noise prologue includes a hash of both 1-RTT TLS traffic secrets of this
  QUIC connection, which only its two endpoints know; a Noise handshake relayed onto another QUIC
  connection (different TLS secrets) fails authentication.
* Each logical stream is its own QUIC stream with its own per-direction key derived from the
  Noise session, so a lost packet on one stream never blocks another.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.tls import Epoch
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from p2psync.errors import (
    AioquicLayoutChanged,
    ConnectionClosed,
    FrameError,
    HandshakeError,
    PeerTimeout,
    RefusedByPeer,
    StreamLimitExceeded,
    TransportError,
)
from p2psync.transport.connection import (
    AdmissionGuard,
    Carrier,
    Link,
    TransportConfig,
    raise_nofile_limit,
    source_key,
)
from p2psync.transport.framing import FrameDecoder
from p2psync.transport.session import CloseCode

log = logging.getLogger("p2psync.transport")
ALPN = "p2psync/1"
#: QUIC application error codes are CLOSE codes offset by this.
APP_ERROR_BASE = 0x100


def ephemeral_certificate() -> tuple[x509.Certificate, ed25519.Ed25519PrivateKey]:
    """A throwaway self-signed Ed25519 certificate: TLS here is encryption, not identity."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p2psync")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, None))
    return cert, key


def quic_configuration(*, is_client: bool, max_datagram_size: int, window: int,
                       idle_timeout: float) -> QuicConfiguration:
    """The QuicConfiguration p2psync uses (also used by the raw-aioquic benchmark)."""
    cfg = QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN],
                            max_datagram_size=max_datagram_size, idle_timeout=idle_timeout,
                            max_data=window * 4, max_stream_data=window)
    if is_client:
        cfg.verify_mode = ssl.CERT_NONE
    else:
        cfg.certificate, cfg.private_key = ephemeral_certificate()
    return cfg


# --- aioquic private layout -------------------------------------------------------------------
# aioquic has no public API for the TLS traffic secrets (no exporter), the current peer address
# or the server's socket. Every read of a private aioquic attribute happens in this section, so
# an aioquic upgrade that moves them breaks here, loudly (AioquicLayoutChanged), and
# tests/test_quic_private.py pins the layout. pyproject.toml pins aioquic to the tested minor.
#: aioquic versions this layout was checked against (``aioquic.__version__`` prefix).
TESTED_AIOQUIC = ("1.7.",)


@dataclass(frozen=True)
class AioquicView:
    """What p2psync needs from a QUIC connection that aioquic does not expose publicly."""

    is_client: bool  #: public: ``configuration.is_client``
    #: (client, server) 1-RTT traffic secrets, None until the handshake derived them.
    one_rtt_secrets: tuple[bytes, bytes] | None
    #: The peer's current address (follows migration), None before the first packet.
    peer_address: Any


def aioquic_private(quic: QuicConnection) -> AioquicView:
    """The one place that reads aioquic connection internals (``_cryptos``,
    ``_network_paths``); raises :class:`AioquicLayoutChanged` if they moved."""
    try:
        cryptos = quic._cryptos
        paths = quic._network_paths
    except AttributeError as exc:
        raise AioquicLayoutChanged(_layout_message(exc)) from exc
    is_client = quic.configuration.is_client
    secrets: tuple[bytes, bytes] | None = None
    pair = cryptos.get(Epoch.ONE_RTT) if isinstance(cryptos, dict) else None
    if pair is not None:
        try:
            send, recv = pair.send.secret, pair.recv.secret
        except AttributeError as exc:
            raise AioquicLayoutChanged(_layout_message(exc)) from exc
        if send is not None and recv is not None:
            secrets = (send, recv) if is_client else (recv, send)
    peer = paths[0].addr if paths else None
    return AioquicView(is_client, secrets, peer)


def aioquic_server_socket(server: QuicServer) -> socket.socket | None:
    """The UDP socket of an aioquic server (private ``_transport``)."""
    try:
        transport = server._transport
    except AttributeError as exc:
        raise AioquicLayoutChanged(_layout_message(exc)) from exc
    return transport.get_extra_info("socket") if transport is not None else None


def _layout_message(exc: BaseException) -> str:
    import aioquic

    return (f"aioquic {aioquic.__version__} changed an internal p2psync relies on ({exc}); "
            f"p2psync was tested with aioquic {', '.join(v + 'x' for v in TESTED_AIOQUIC)} — "
            "see p2psync/transport/quic.py 'aioquic private layout'")


def check_aioquic_layout() -> None:
    """Fail loudly (AioquicLayoutChanged) if any aioquic internal p2psync uses is gone.

    Checked by tests on a real in-memory QUIC handshake too; this is the cheap static part
    (class attributes and methods), callable at start-up.
    """
    missing = [name for owner, name in (
        (QuicConnectionProtocol, "_transmit_soon"),
        (QuicConnectionProtocol, "_process_events"),
        (QuicConnection, "configuration"),
        (QuicConnection, "_write_connection_limits"),
        (QuicConnection, "_write_stream_limits"),
    ) if not hasattr(owner, name)]
    # QuicCarrier.transmit replaces aioquic's and keeps its state in aioquic's attributes:
    # the protocol's __init__ must still set them, and _transmit_soon still use _transmit_task.
    init_names = QuicConnectionProtocol.__init__.__code__.co_names
    missing += [f"QuicConnectionProtocol.{name}" for name in (
        "_timer", "_timer_at", "_transmit_task", "_transport", "_closed")
        if name not in init_names]
    if "_transmit_task" not in QuicConnectionProtocol._transmit_soon.__code__.co_names:
        missing.append("QuicConnectionProtocol._transmit_soon._transmit_task")
    if missing:
        raise AioquicLayoutChanged(_layout_message(AttributeError(", ".join(missing))))


class BoundedQuicConnection(QuicConnection):
    """aioquic's QuicConnection with receive windows that follow what was *delivered*.

    aioquic doubles a stream's (and the connection's) receive window whenever the highest
    offset *received* passes half of it, delivered or not: a peer that leaves a gap at the
    start of a stream and keeps sending makes aioquic buffer without bound. Here a window is
    re-granted as ``delivered + initial window`` once less than half of it is left (batched
    like p2psync's own credit; p2psync reads every delivered byte at
    once and bounds it with its own credit and budget), so out-of-order data per connection
    stays under ``max_data``. Installed on each connection by :class:`QuicCarrier` (class
    swap: aioquic's server builds plain QuicConnections). Overrides two private methods —
    part of the private layout pinned by tests/test_quic_private.py.
    """

    #: In-order bytes delivered to p2psync over the whole connection (set by the carrier).
    p2p_delivered = 0

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        lim = self._local_max_data
        window = self._configuration.max_data
        if lim.value - self.p2p_delivered < window // 2:  # batched, like credit
            lim.value = self.p2p_delivered + window
        used, lim.used = lim.used, 0  # suppress aioquic's doubling on bytes not delivered
        try:
            super()._write_connection_limits(builder, space)
        finally:
            lim.used = used

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        recv = stream.receiver
        if stream.max_stream_data_local:
            window = self._configuration.max_stream_data
            delivered = recv.starting_offset()
            if stream.max_stream_data_local - delivered < window // 2:  # batched updates
                stream.max_stream_data_local = delivered + window
        high, recv.highest_offset = recv.highest_offset, 0  # suppress doubling (see above)
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            recv.highest_offset = high


def bound_windows(quic: QuicConnection) -> None:
    """Make ``quic`` a :class:`BoundedQuicConnection` (no state added: a class swap)."""
    if type(quic) is QuicConnection:
        quic.__class__ = BoundedQuicConnection


def aioquic_buffered(quic: QuicConnection) -> int:
    """Bytes aioquic holds in stream receive buffers (out-of-order data): for tests/bench."""
    return sum(len(st.receiver._buffer) for st in quic._streams.values())


def tls_binding(quic: QuicConnection) -> bytes:
    """A value both endpoints of this QUIC connection derive and nobody else can: a hash of
    the client and server 1-RTT traffic secrets."""
    secrets = aioquic_private(quic).one_rtt_secrets
    if secrets is None:
        raise HandshakeError("QUIC 1-RTT keys not available for channel binding")
    client, server = secrets
    return hashlib.blake2b(client + server, digest_size=32,
                           person=b"p2psync-quicbind").digest()


def raise_rcvbuf(sock: socket.socket | None, size: int) -> None:
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError:  # capped by net.core.rmem_max; best effort
        log.debug("could not raise SO_RCVBUF")


#: Reply to received datagrams once per loop turn (False: aioquic's once per datagram). The
#: keepalive-test hang once blamed on it was the test's no-op ``transmit`` losing aioquic's
#: timer, with or without batching; fixed in :meth:`QuicCarrier.wait_closed`
#: (docs/transport.md, "quicbatch").
BATCH_TRANSMIT = True
#: After a timer, transmit at the time it was due, not the loop's (cached, coarse) clock:
#: False restores aioquic's empty pacing spins (:meth:`QuicCarrier._handle_timer`).
PACE_AT_DUE_TIME = True
#: A timer that fires this much (s) after it was due means the loop was blocked (a starved
#: process, CPU-bound work): it is run once more after the loop has read its sockets, so
#: aioquic's idle timeout never ends a connection whose peer's datagrams sit unread
#: (:meth:`QuicCarrier._handle_timer`; 0 switches this off).
LATE_TIMER_GRACE = 0.25


class QuicCarrier(QuicConnectionProtocol, Carrier):
    """One QUIC connection; creates its :class:`Link` once TLS is up."""

    transport_name = "quic"

    def __init__(self, quic: QuicConnection, stream_handler: Any = None, *,
                 make_link: Callable[[QuicCarrier], Link]) -> None:
        super().__init__(quic, stream_handler)
        self._make_link = make_link
        self.link: Link | None = None
        self._decoders: dict[int, FrameDecoder] = {}
        self._ended: set[int] = set()
        self._peer_addr: Any = None
        self._reply_soon = False  #: a transmit is due this loop turn (datagram_received)
        self._due: float | None = None  #: the next transmit's time (after a timer)
        self._deferred_due: float | None = None  #: a late timer's deadline, run once more
        #: The aioquic connection (the base class keeps it only as private ``_quic``).
        self.quic = quic
        bound_windows(quic)

    def ensure_link(self) -> Link:
        if self.link is None:
            self.link = self._make_link(self)
        return self.link

    # aioquic events
    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            self._on_stream_data(event)
        elif isinstance(event, events.HandshakeCompleted):
            if not self.quic.configuration.is_client:
                self.ensure_link()
        elif isinstance(event, events.ConnectionTerminated):
            self._on_terminated(event)
        elif isinstance(event, events.StreamReset):
            self._decoders.pop(event.stream_id, None)

    def _on_stream_data(self, event: events.StreamDataReceived) -> None:
        sid = event.stream_id
        link = self.ensure_link()
        if link.error is not None:
            return
        quic = self.quic
        if isinstance(quic, BoundedQuicConnection):
            quic.p2p_delivered += len(event.data)
        dec = self._decoders.get(sid)
        if dec is None and sid and link.session is not None \
                and link.session.stream_closed(sid):
            return  # late data on a stream we reset (or refused): dropped unparsed
        try:
            if dec is None:
                if sid % 4 in (2, 3):
                    raise FrameError("unidirectional QUIC streams are not used by p2psync")
                if sid != 0:
                    if link.session is None:
                        raise HandshakeError("stream opened before the handshake completed")
                    link.session.check_peer_stream(sid)
                dec = self._decoders[sid] = FrameDecoder()
            bodies = dec.feed(event.data) if event.data else []
            if event.end_stream:
                dec.eof()
        except (FrameError, HandshakeError, StreamLimitExceeded) as exc:
            link.fail(exc)
            return
        if bodies:
            link.on_frames(sid, bodies)
        if event.end_stream and link.error is None:
            self._decoders.pop(sid, None)
            link.on_route_end(sid)

    def _on_terminated(self, event: events.ConnectionTerminated) -> None:
        self.release_admission()
        reason = event.reason_phrase or "no reason given"
        code = event.error_code - APP_ERROR_BASE
        exc: TransportError
        if event.frame_type is None and code == CloseCode.REFUSED:
            exc = RefusedByPeer(f"peer refused the connection: {reason}")
        elif reason == "Idle timeout":
            exc = PeerTimeout("QUIC idle timeout: the peer vanished")
        else:
            exc = ConnectionClosed(f"peer closed the connection: {reason}")
        if self.link is not None:
            self.link.on_transport_lost(exc)
        self._decoders.clear()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """aioquic's, except that what we send in reply (ACKs, window updates, queued data)
        goes out once per loop turn instead of once per datagram: a
        bulk receiver gets many datagrams per turn (uvloop reads them in batches), and
        ``datagrams_to_send`` + a timer re-arm per datagram was the largest cost of
        receiving beyond aioquic's packet parsing (docs/files.md, "filesperf")."""
        self._peer_addr = addr
        if not BATCH_TRANSMIT:
            super().datagram_received(data, addr)
            return
        self.quic.receive_datagram(data if isinstance(data, bytes) else data.encode(), addr,
                                   now=self._loop.time())
        self._process_events()
        if not self._reply_soon:  # our own flag: aioquic's _transmit_task stays its own
            self._reply_soon = True
            self._loop.call_soon(self._reply)

    def _reply(self) -> None:
        self._reply_soon = False
        self.transmit()

    def _handle_timer(self) -> None:
        """aioquic's, except that the transmit after the timer uses the time the timer was
        *due*, as ``handle_timer`` already does, not the loop's clock (``PACE_AT_DUE_TIME``).

        Loop timers fire up to the clock's resolution early, and uvloop's clock is cached per
        loop iteration in whole milliseconds. aioquic's pacer (one packet every few µs on a
        LAN) then sees no time pass since its last packet, sends nothing and asks for a timer
        a few µs later, which fires at once: the sender spun through empty transmits for the
        rest of each millisecond (2–8 per datagram sent, most of a sending node's CPU). At the
        due time the pacer's bucket holds one packet, which goes out."""
        due = self._timer_at
        now = self._loop.time() if due is None else max(due, self._loop.time())
        if (LATE_TIMER_GRACE and due is not None and now - due > LATE_TIMER_GRACE
                and self._deferred_due != due):
            # Stalled: datagrams that came meanwhile are still unread (uvloop runs due
            # timers before polling), and aioquic would judge idleness without them. Once
            # per deadline, so a loop that is always late still reaches a verdict.
            self._deferred_due = due
            self._timer = self._loop.call_at(now, self._handle_timer)
            return
        self._timer = None
        self._timer_at = None
        self.quic.handle_timer(now=now)
        self._process_events()
        if PACE_AT_DUE_TIME:
            self._due = now
        self.transmit()  # no argument: aioquic's signature (tests stub it)

    def transmit(self) -> None:
        """aioquic's ``transmit`` (send what is due, re-arm the timer); right after a timer,
        at the time that timer was due (:meth:`_handle_timer`)."""
        self._transmit_task = None
        now = self._loop.time()
        if self._due is not None:
            now, self._due = max(now, self._due), None
        assert self._transport is not None
        for data, addr in self.quic.datagrams_to_send(now=now):
            self._transport.sendto(data, addr)
        timer_at = self.quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            self._timer = self._loop.call_at(timer_at, self._handle_timer)
        self._timer_at = timer_at

    # Carrier
    def write_frames(self, route: int, frames: list[bytes]) -> None:
        if route in self._ended:
            return
        self.quic.send_stream_data(route, b"".join(frames) if len(frames) > 1 else frames[0])
        self._transmit_soon()

    def abort_route(self, route: int) -> None:
        """We reset ``route``: stop reading it (STOP_SENDING), end our half, drop its
        partial frame."""
        self._decoders.pop(route, None)
        if not route or route in self._ended:
            return
        self._ended.add(route)
        # RESET_STREAM, not FIN: the peer may see it before our RESET record (another QUIC
        # stream), and a FIN without a FIN record would be a protocol error there.
        with contextlib.suppress(Exception):  # unknown or already-finished stream
            self.quic.reset_stream(route, APP_ERROR_BASE)
        with contextlib.suppress(Exception):
            self.quic.stop_stream(route, APP_ERROR_BASE)
        self._transmit_soon()

    def end_route(self, route: int) -> None:
        if route and route not in self._ended:
            self._ended.add(route)
            with contextlib.suppress(Exception):  # stream already gone in aioquic
                self.quic.send_stream_data(route, b"", end_stream=True)
            self._transmit_soon()

    def teardown(self, code: int, reason: str) -> None:
        self.transmit()  # push any CLOSE record out before CONNECTION_CLOSE
        self.close(error_code=APP_ERROR_BASE + code, reason_phrase=reason[:200])

    def pending_bytes(self) -> int:
        return sum(d.pending for d in self._decoders.values())

    def remote_address(self) -> Any:
        return self._peer_addr or aioquic_private(self.quic).peer_address

    async def wait_closed(self) -> None:
        """Wait until aioquic has finished closing (closing period over, or idle timeout).

        Transmits first: that sends a CONNECTION_CLOSE still queued and re-arms aioquic's
        timer from its current deadline, so the wait never depends on a loop timer armed
        earlier. Without it, a connection whose timer chain was lost (an aioquic timer that
        fired while ``transmit`` did nothing, as in the vanished-peer test) and that
        receives no more datagrams waited forever with no timer armed (docs/transport.md,
        "quicbatch")."""
        if not self._closed.is_set():
            self.transmit()
        await super().wait_closed()


class GuardedQuicServer(QuicServer):
    """aioquic's server with Retry (address validation) on by default and admission caps.

    A packet that would create connection state (an Initial, with a valid Retry token when
    Retry is on) from a source over its half-open cap is dropped before aioquic builds
    anything; a full half-open table drops its oldest connection; established caps apply when
    the p2psync handshake completes (:meth:`Link._ready`). Reads aioquic's private
    ``_protocols`` table (part of the pinned private layout).
    """

    def __init__(self, *, guard: AdmissionGuard, **kw: Any) -> None:
        super().__init__(**kw)
        self.guard = guard
        self._source: str | None = None
        self.dropped = 0  #: Initials dropped by the caps

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        raw = data if isinstance(data, bytes) else data.encode()
        if raw and raw[0] & 0x80:  # long header: may create a connection
            try:
                header = pull_quic_header(
                    Buffer(data=raw), host_cid_length=self._configuration.connection_id_length)
            except ValueError:
                return
            if header.packet_type == QuicPacketType.INITIAL \
                    and header.destination_cid not in self._protocols:
                source = source_key(addr)
                if (header.token or self._retry is None) and not self.guard.would_admit(source):
                    self.guard.refused += 1
                    self.dropped += 1
                    return
                self._source = source
        try:
            super().datagram_received(data, addr)
        finally:
            self._source = None

    def admit(self, carrier: QuicCarrier) -> None:
        """Called by the protocol factory while a new connection is being created."""
        source = self._source or "?"
        ticket = self.guard.admit(source, carrier.close)
        if ticket is None:  # raced past would_admit (cannot happen single-threaded)
            carrier.close()
            return
        carrier.guard, carrier.ticket = self.guard, ticket


async def serve_quic(host: str, port: int, *, configuration: QuicConfiguration,
                     create_protocol: Callable[..., QuicCarrier],
                     config: TransportConfig) -> GuardedQuicServer:
    """Like aioquic's ``serve`` with Retry per ``config.quic_retry`` and the admission caps
    of ``config``; the descriptor limit is raised as for TCP."""
    if config.nofile_limit:
        raise_nofile_limit(config.nofile_limit)
    loop = asyncio.get_running_loop()
    server: GuardedQuicServer | None = None

    def make(quic: QuicConnection, **kw: Any) -> QuicCarrier:
        carrier = create_protocol(quic, **kw)
        assert server is not None
        server.admit(carrier)
        return carrier

    server = GuardedQuicServer(guard=AdmissionGuard(config), configuration=configuration,
                               create_protocol=make, retry=config.quic_retry)
    await loop.create_datagram_endpoint(lambda: server, local_addr=(host, port))
    raise_rcvbuf(aioquic_server_socket(server), config.udp_rcvbuf)
    return server
