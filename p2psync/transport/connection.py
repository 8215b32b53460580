"""The asyncio shell shared by both carriers: handshake driving, Connection and Stream.

A carrier (TCP or QUIC) turns bytes into frame bodies per route and hands them to a
:class:`Link`; the link runs the sans-IO handshake, decrypts records and feeds the sans-IO
:class:`~p2psync.transport.session.Session`, then wakes the :class:`Stream` objects. Nothing
here blocks: waits are futures completed by incoming records.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import DeviceKey
from p2psync.errors import (
    AdmissionRefused,
    ConnectionClosed,
    EndOfStream,
    FrameError,
    HandshakeError,
    PeerTimeout,
    RefusedByPeer,
    StrangerRefused,
    StreamReset,
    TransportError,
)
from p2psync.transport.framing import HEADER, Record, RecordType, decode_record, encode_record
from p2psync.transport.handshake import HandshakeResult, Limits, SecureHandshake
from p2psync.transport.noise import CipherState
from p2psync.transport.session import (
    CONTROL,
    Accepted,
    Budget,
    BufferPool,
    CloseCode,
    CreditAvailable,
    Event,
    Keepalive,
    MessageReceived,
    PeerClosed,
    Session,
    StreamFinished,
    StreamOpened,
    StreamsAvailable,
    StreamWasReset,
    close_code_for,
)

log = logging.getLogger("p2psync.transport")
_SID = struct.Struct(">Q")


def _SID_OF(record: bytes) -> int:
    return int.from_bytes(record[1:5], "big")


@dataclass(frozen=True)
class TransportConfig:
    """Tunables shared by both carriers (defaults suit a LAN)."""

    limits: Limits = field(default_factory=Limits)
    keepalive: Keepalive = field(default_factory=Keepalive)
    handshake_timeout: float = 10.0
    features: tuple[str, ...] = ()
    #: QUIC only: UDP payload size (1452 fits a 1500-byte Ethernet MTU over IPv6/IPv4 + UDP).
    max_datagram_size: int = 1452
    #: QUIC only: socket receive buffer to ask the kernel for.
    udp_rcvbuf: int = 4 << 20
    #: QUIC only: aioquic flow-control windows (our own credit bounds memory anyway).
    quic_window: int = 4 << 20
    # --- receive budgets (issue 12.1; see session.Budget) -------------------------------------
    #: Peer-opened streams waiting for ``accept_stream``; more are reset, not buffered.
    max_pending_streams: int = 4
    #: Received-but-unread bytes per connection (raised to ``limits.max_message`` if lower).
    conn_budget: int = 16 << 20
    #: Bytes a connection always may hold without drawing on the shared pool.
    conn_floor: int = 256 << 10
    #: What :meth:`Connection.restrict` shrinks a connection to (peers sharing no space).
    restricted_budget: int = 1 << 20
    #: Received-but-unread bytes above the floors, summed over every connection of the
    #: process. Sized for a Raspberry Pi: RSS grows a few times the pool under a flood (copies
    #: in flight, allocator retention); scripts/bench_hostile.py measured +21…+82 MiB with
    #: 16 MiB and +69…+115 MiB with 32 MiB under 50 hostile peers. Fits two 8 MiB messages.
    pool_budget: int = 16 << 20
    # --- admission (issue 12.4): listeners only ----------------------------------------------
    #: QUIC: validate client addresses with a Retry before keeping any state (costs one RTT).
    quic_retry: bool = True
    #: Connections still in their handshake, in total; the oldest is dropped for a new one.
    max_half_open: int = 256
    #: … from one source address; more are refused at once.
    max_half_open_per_source: int = 16
    #: Authenticated connections in total / per source address; more are closed.
    max_connections: int = 512
    max_connections_per_source: int = 32
    #: Raise the soft RLIMIT_NOFILE towards this at listen (best effort; 0: leave it).
    nofile_limit: int = 65536
    # --- who learns our account (issue 12.6) ---------------------------------------------------
    #: Listener policy: called with an authenticated initiator's certificate; True = send it
    #: our certificate (with ACCEPT) and talk, False = refuse it (StrangerRefused) without it
    #: ever learning our account. None = the pre-12.6 behaviour (certificate in message 2).
    reveal_certificate: Callable[[DeviceCertificate], bool] | None = field(
        default=None, compare=False)
    # --- WebSocket listeners (transport/websocket.py) -----------------------------------------
    #: Directory served at ``/app/`` next to the WebSocket endpoint (None: nothing served).
    ws_static_dir: str | None = None
    #: Origins allowed to open a WebSocket besides the listener's own (the app at ``/app/``);
    #: ``"*"`` allows any. Clients that send no Origin (not browsers) are not affected.
    ws_origins: tuple[str, ...] = ()
    #: Off only to prove the budget tests fail without it (``P2PSYNC_NO_BUDGET=1``).
    enforce_budget: bool = field(
        default_factory=lambda: os.environ.get("P2PSYNC_NO_BUDGET", "") != "1")

    def budget(self) -> Budget | None:
        if not self.enforce_budget:
            return None
        return Budget(max_pending_streams=self.max_pending_streams,
                      connection=self.conn_budget, floor=self.conn_floor)


def source_key(addr: Any) -> str:
    """The source address a peer is counted under: its IP (IPv4-mapped IPv6 unmapped)."""
    host = addr[0] if isinstance(addr, tuple) and addr else str(addr)
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class Ticket:
    """One admitted connection, as counted by an :class:`AdmissionGuard`."""

    __slots__ = ("close", "established", "released", "source")

    def __init__(self, source: str, close: Callable[[], None]) -> None:
        self.source = source
        self.close = close
        self.established = False
        self.released = False


class AdmissionGuard:
    """Caps half-open and established connections per source address and in total.

    Sans-IO bookkeeping shared by a listener's carriers: ``admit`` when a connection appears
    (TCP accept, QUIC Initial that passed Retry), ``promote`` when its handshake completes,
    ``release`` when it ends. A source over its half-open cap is refused; a full half-open table
    drops its *oldest* entry instead (a flood from many addresses churns itself, while an honest
    handshake — milliseconds — completes before it becomes the oldest).
    """

    def __init__(self, config: TransportConfig) -> None:
        self.config = config
        self.half_open: dict[Ticket, None] = {}  # insertion-ordered: oldest first
        self.half_by_source: Counter[str] = Counter()
        self.est_by_source: Counter[str] = Counter()
        self.established = 0
        self.refused = 0
        self.evicted = 0
        self.admitted = 0  #: connections ever admitted

    def would_admit(self, source: str) -> bool:
        return self.half_by_source[source] < self.config.max_half_open_per_source

    def admit(self, source: str, close: Callable[[], None]) -> Ticket | None:
        if not self.would_admit(source):
            self.refused += 1
            return None
        while len(self.half_open) >= self.config.max_half_open:
            self.evict_oldest()
        t = Ticket(source, close)
        self.admitted += 1
        self.half_open[t] = None
        self.half_by_source[source] += 1
        return t

    def evict_oldest(self) -> bool:
        """Drop the oldest half-open connection (frees its descriptor); False if none."""
        if not self.half_open:
            return False
        t = next(iter(self.half_open))
        self.release(t)
        self.evicted += 1
        t.close()
        return True

    def promote(self, t: Ticket) -> None:
        """The handshake completed; raises :class:`AdmissionRefused` over the caps."""
        if t.released or t.established:
            return
        cfg = self.config
        if self.established >= cfg.max_connections:
            self.refused += 1
            raise AdmissionRefused(f"too many connections ({self.established})")
        if self.est_by_source[t.source] >= cfg.max_connections_per_source:
            self.refused += 1
            raise AdmissionRefused(f"too many connections from {t.source}")
        self._drop_half(t)
        t.established = True
        self.established += 1
        self.est_by_source[t.source] += 1

    def release(self, t: Ticket) -> None:
        if t.released:
            return
        t.released = True
        if t.established:
            self.established -= 1
            self.est_by_source[t.source] -= 1
            if not self.est_by_source[t.source]:
                del self.est_by_source[t.source]
        else:
            self._drop_half(t)

    def _drop_half(self, t: Ticket) -> None:
        if self.half_open.pop(t, 0) is None:
            self.half_by_source[t.source] -= 1
            if not self.half_by_source[t.source]:
                del self.half_by_source[t.source]


def raise_nofile_limit(target: int) -> int:
    """Raise the soft descriptor limit towards ``target`` (capped by the hard limit); returns
    the soft limit now in force. Best effort: an idle-socket flood must hit our caps, not
    EMFILE at the default 1024."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if target and soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            log.info("raised the descriptor limit from %d to %d", soft, want)
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("could not raise the descriptor limit from %d: %s", soft, exc)
    return int(soft)


_POOL: BufferPool | None = None


def shared_pool(capacity: int) -> BufferPool:
    """The process-wide receive pool (its capacity follows the last config that asked)."""
    global _POOL
    if _POOL is None:
        _POOL = BufferPool(capacity)
    _POOL.capacity = capacity
    return _POOL


def stream_key(secret: bytes, from_initiator: bool, sid: int) -> bytes:
    """Per-stream, per-direction ChaCha20-Poly1305 key (QUIC carrier)."""
    label = b"p2psync stream " + (b"i>r" if from_initiator else b"r>i") + _SID.pack(sid)
    return hashlib.blake2b(label, key=secret, digest_size=32).digest()


class Link:
    """One physical connection's protocol state; the carrier calls in, we call it back."""

    def __init__(
        self, carrier: Carrier, *, initiator: bool, device_key: DeviceKey,
        certificate: DeviceCertificate, config: TransportConfig, binding: bytes,
        expected_peer: str | None = None, per_stream_keys: bool = False,
        on_ready: Callable[[Connection], None] | None = None,
        on_failed: Callable[[TransportError], None] | None = None,
        pool: BufferPool | None = None,
    ) -> None:
        self.carrier = carrier
        self.initiator = initiator
        self.config = config
        self.per_stream_keys = per_stream_keys
        self.hs: SecureHandshake | None = SecureHandshake(
            initiator=initiator, device_key=device_key, certificate=certificate,
            binding=binding, expected_peer=expected_peer, limits=config.limits,
            features=config.features,
            defer_certificate=not initiator and config.reveal_certificate is not None)
        #: Initiator whose responder deferred its certificate: verifies the one in ACCEPT.
        self._deferred_check: Callable[[bytes], DeviceCertificate] | None = None
        self.result: HandshakeResult | None = None
        self.session: Session | None = None
        self.connection: Connection | None = None
        self._send_ciphers: dict[int, CipherState] = {}
        self._recv_ciphers: dict[int, CipherState] = {}
        self._on_ready = on_ready
        self._on_failed = on_failed
        self.error: TransportError | None = None
        #: Shared receive pool (tests may give each listener its own).
        self.pool = pool if pool is not None else shared_pool(config.pool_budget)
        self.loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(
            config.handshake_timeout, self._handshake_timeout)

    # --- handshake ---------------------------------------------------------------------------
    def start(self) -> None:
        assert self.hs is not None
        self.carrier.write_frames(CONTROL, [HEADER.pack(n) + m for m in [self.hs.start()]
                                            for n in [len(m)]])

    def _handshake_timeout(self) -> None:
        self._timer = None
        if self.connection is None:
            self.fail(PeerTimeout(
                f"handshake not completed within {self.config.handshake_timeout:g} s"))

    def on_frames(self, route: int, bodies: list[bytes]) -> None:
        """Frame bodies received on ``route`` (always 0 on TCP). Never raises."""
        if self.error is not None:
            return
        try:
            i = 0
            while self.hs is not None and i < len(bodies):
                if route != CONTROL:
                    raise HandshakeError("stream data before the handshake completed")
                self._handshake_step(bodies[i])
                i += 1
            if i < len(bodies):
                self._on_secure(route, bodies[i:] if i else bodies)
        except TransportError as exc:
            self.fail(exc)

    def _handshake_step(self, body: bytes) -> None:
        hs = self.hs
        assert hs is not None
        try:
            reply = hs.receive(body)
        except HandshakeError as exc:
            noise = hs._noise
            if noise.complete and noise.send_cipher is not None:
                # Responder refusing the initiator's Hello: tell it why, encrypted.
                self._send_ciphers[CONTROL] = noise.send_cipher
                self._write_records([(CONTROL, encode_record(
                    RecordType.CLOSE, CONTROL,
                    struct.pack(">H", CloseCode.REFUSED) + str(exc).encode()[:512]))])
            raise
        if reply is not None:
            self.carrier.write_frames(CONTROL, [HEADER.pack(len(reply)) + reply])
        if hs.result is None:
            return
        self.result = res = hs.result
        self.hs = None
        if self.initiator and hs.deferred:
            self._deferred_check = hs.check_deferred_certificate
        reveal = b""
        if not self.initiator and self.config.reveal_certificate is not None:
            peer = res.require_certificate()
            if not self.config.reveal_certificate(peer):
                self._send_ciphers[CONTROL] = res.send_cipher
                reason = "this device does not talk to strangers"
                self._write_records([(CONTROL, encode_record(
                    RecordType.CLOSE, CONTROL,
                    struct.pack(">H", CloseCode.REFUSED) + reason.encode()))])
                raise StrangerRefused(f"refused {peer.peer_id} (account {peer.account_id}): "
                                      "not known, no shared space, no invite")
            reveal = hs.certificate.raw
        self._send_ciphers[CONTROL] = res.send_cipher
        self._recv_ciphers[CONTROL] = res.recv_cipher
        budget = self.config.budget()
        self.session = Session(initiator=self.initiator, local=self.config.limits,
                               remote=res.remote_limits, keepalive=self.config.keepalive,
                               now=self.loop.time(), budget=budget,
                               pool=None if budget is None else self.pool)
        if not self.initiator:
            self.carrier.promote()  # AdmissionRefused over a listener's connection caps
            self.session.accept(reveal)
            self._ready()

    def _ready(self) -> None:
        assert self.result is not None and self.session is not None
        if self._timer is not None:
            self._timer.cancel()
        self.connection = Connection(self)
        self._timer = self.loop.call_later(self.config.keepalive.interval / 2, self._on_timer)
        self.flush()
        log.debug("connection up", extra={"peer": self.result.peer_id,
                                         "initiator": self.initiator})
        if self._on_ready is not None:
            self._on_ready(self.connection)

    # --- secure records ----------------------------------------------------------------------
    def _cipher(self, table: dict[int, CipherState], route: int, outgoing: bool) -> CipherState:
        c = table.get(route)
        if c is None:
            assert self.result is not None
            if not self.per_stream_keys:
                return table[CONTROL]
            from_initiator = self.initiator == outgoing
            c = table[route] = CipherState(
                stream_key(self.result.stream_secret, from_initiator, route))
        return c

    def _on_secure(self, route: int, bodies: list[bytes]) -> None:
        session = self.session
        assert session is not None
        cipher = self._cipher(self._recv_ciphers, route, False)
        records: list[Record] = [decode_record(cipher.decrypt_with_ad(None, b)) for b in bodies]
        events = session.receive(records, route if self.per_stream_keys else None,
                                 self.loop.time())
        self._dispatch(events)
        self.flush()

    def _dispatch(self, events: list[Event]) -> None:
        conn = self.connection
        for ev in events:
            if isinstance(ev, Accepted):
                if conn is not None:
                    raise FrameError("duplicate ACCEPT record")
                if self._deferred_check is not None:
                    assert self.result is not None
                    self.result = replace(self.result,
                                          certificate=self._deferred_check(ev.payload))
                    self._deferred_check = None
                self._ready()
                conn = self.connection
                continue
            if isinstance(ev, PeerClosed):
                if ev.code == CloseCode.REFUSED:
                    raise RefusedByPeer(f"peer refused the connection: {ev.reason}")
                reason = ev.reason or "no reason given"
                raise ConnectionClosed(f"peer closed the connection: {reason}")
            if conn is None:
                raise FrameError("stream records before the handshake was accepted")
            conn._on_event(ev)

    def flush(self) -> None:
        if self.session is not None:
            out = self.session.take_outgoing()
            if out:
                self._write_records(out)
                self.session.sent_at(self.loop.time())

    def _write_records(self, records: list[tuple[int, bytes]]) -> None:
        by_route: dict[int, list[bytes]] = {}
        for route, rec in records:
            if not self.per_stream_keys:
                route = CONTROL
            c = self._cipher(self._send_ciphers, route, True)
            ct = c.encrypt_with_ad(None, rec)
            by_route.setdefault(route, []).append(HEADER.pack(len(ct)) + ct)
        for route, frames in by_route.items():
            self.carrier.write_frames(route, frames)
        if self.per_stream_keys:
            for route, rec in records:
                if rec[0] == RecordType.FIN:
                    self.carrier.end_route(route)
                elif rec[0] == RecordType.RESET:
                    self.carrier.abort_route(_SID_OF(rec))

    def on_route_end(self, route: int) -> None:
        """QUIC: the peer ended the QUIC stream ``route``; it must have sent FIN first."""
        st = self.session.streams.get(route) if self.session is not None else None
        if st is not None and st.recv_open:
            self.fail(FrameError(f"stream {route} ended without a FIN record"))

    def _on_timer(self) -> None:
        self._timer = None
        if self.session is None or self.error is not None:
            return
        try:
            nxt = self.session.on_timer(self.loop.time())
        except TransportError as exc:
            if self.carrier.pending_bytes():
                exc = PeerTimeout(f"{exc} (stopped mid-frame)")
            self.fail(exc)
            return
        self.flush()
        self._timer = self.loop.call_at(nxt, self._on_timer)

    # --- ending ------------------------------------------------------------------------------
    def fail(self, exc: TransportError, *, send_close: bool = True) -> None:
        """End this connection (only this one) with ``exc`` as the reason."""
        if self.error is not None:
            return
        self.error = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        code = CloseCode.NORMAL if isinstance(exc, ConnectionClosed) else close_code_for(exc)
        if self.session is not None:  # give this connection's bytes back to the pool...
            self.session.release(self.session.buffered)
            for st in self.session.streams.values():  # ...and really free partial messages
                st.partial = []
        if self.connection is not None:  # (Link <-> Connection is a cycle: don't wait for gc)
            self.connection._drop_buffers(exc, keep_accepted=isinstance(exc, ConnectionClosed))
        if send_close and self.session is not None:
            try:
                self.session.close(code, str(exc))
                self.flush()
            except TransportError:
                pass
        level = logging.DEBUG if isinstance(exc, ConnectionClosed) else logging.INFO
        log.log(level, "connection ended: %s", exc,
                extra={"peer": self.result.certificate.peer_id
                       if self.result and self.result.certificate else None,
                       "error": type(exc).__name__})
        self.carrier.teardown(code, str(exc))
        if self.connection is not None:
            self.connection._on_closed(exc)
        elif self._on_failed is not None:
            self._on_failed(exc)

    def on_transport_lost(self, exc: TransportError) -> None:
        """The carrier's socket went away (peer closed, reset, QUIC terminated)."""
        self.fail(exc, send_close=False)


class Carrier:
    """What a Link needs from TCP or QUIC."""

    transport_name = "?"
    #: Set by a guarded listener: this connection's entry in its AdmissionGuard.
    guard: AdmissionGuard | None = None
    ticket: Ticket | None = None

    def promote(self) -> None:
        """The handshake completed: count the connection as established (may refuse)."""
        if self.guard is not None and self.ticket is not None:
            self.guard.promote(self.ticket)

    def release_admission(self) -> None:
        if self.guard is not None and self.ticket is not None:
            self.guard.release(self.ticket)

    def write_frames(self, route: int, frames: list[bytes]) -> None:
        raise NotImplementedError

    def teardown(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def end_route(self, route: int) -> None:
        """QUIC: end our half of the QUIC stream (after FIN or RESET)."""

    def abort_route(self, route: int) -> None:
        """QUIC: we reset ``route``; stop reading it too."""
        self.end_route(route)

    def pending_bytes(self) -> int:
        """Bytes of incomplete frames buffered (to report a stall mid-frame)."""
        return 0

    async def drain(self) -> None:
        """Wait while the carrier's send buffer is over its high-water mark."""

    def remote_address(self) -> Any:
        return None

    async def wait_closed(self) -> None:
        """Wait until the carrier's sockets are released."""


class Stream:
    """A message-oriented bidirectional stream: ``await send(bytes)`` / ``await recv()``."""

    def __init__(self, conn: Connection, sid: int) -> None:
        self._conn = conn
        self.id = sid
        self._messages: deque[bytes] = deque()
        self._recv_waiter: asyncio.Future[None] | None = None
        self._send_waiter: asyncio.Future[None] | None = None
        self._peer_finished = False
        self._error: TransportError | None = None

    def __repr__(self) -> str:
        return f"<Stream {self.id} of {self._conn.peer_id}>"

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one message; waits while the peer's credit is used up (backpressure)."""
        conn = self._conn
        link = conn._link
        session = link.session
        assert session is not None
        if len(data) > session.remote.max_message:
            raise TransportError(f"message of {len(data)} bytes exceeds the peer's limit of "
                                 f"{session.remote.max_message}")
        view = memoryview(data).cast("B")
        while True:
            self._check_send()
            n = session.write(self.id, view, True)
            if n:
                link.flush()
            if n == len(view):  # all of it, or an empty message's DATA_END
                break
            view = view[n:]
            await self._wait_send()
        await link.carrier.drain()

    def _check_send(self) -> None:
        if self._error is not None:
            raise self._error
        err = self._conn._link.error
        if err is not None:
            raise err

    async def _wait_send(self) -> None:
        fut = self._send_waiter = asyncio.get_running_loop().create_future()
        try:
            await fut
        finally:
            self._send_waiter = None

    async def recv(self) -> bytes:
        """The next message; :class:`EndOfStream` once the peer finished the stream."""
        while not self._messages:
            if self._error is not None:
                raise self._error
            if self._peer_finished:
                raise EndOfStream(f"peer finished stream {self.id}")
            if self._conn._link.error is not None:
                raise self._conn._link.error
            fut = self._recv_waiter = asyncio.get_running_loop().create_future()
            try:
                await fut
            finally:
                self._recv_waiter = None
        msg = self._messages.popleft()
        link = self._conn._link
        if link.session is not None and link.error is None:
            link.session.consumed(self.id, len(msg))
            link.flush()
        return msg

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except EndOfStream:
            raise StopAsyncIteration from None

    def finish(self) -> None:
        """Half-close: tell the peer we will send no more messages on this stream."""
        link = self._conn._link
        if link.session is not None and link.error is None:
            link.session.finish(self.id)
            link.flush()

    def reset(self, reason: str = "") -> None:
        """Abort the stream both ways (the peer sees :class:`StreamReset` with ``reason``)."""
        link = self._conn._link
        if self._error is None:
            self._error = StreamReset(f"stream {self.id} reset locally: {reason}")
        self._messages.clear()  # the session releases their bytes with the stream
        if link.session is not None and link.error is None:
            link.session.reset(self.id, reason)
            link.flush()
        self._conn._streams.pop(self.id, None)
        self._wake()

    def _wake(self) -> None:
        for fut in (self._recv_waiter, self._send_waiter):
            if fut is not None and not fut.done():
                fut.set_result(None)


class Connection:
    """An authenticated, encrypted connection to one peer device (QUIC or TCP)."""

    def __init__(self, link: Link) -> None:
        assert link.result is not None
        self._link = link
        self.result = link.result
        self._streams: dict[int, Stream] = {}
        self._incoming: deque[Stream] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._open_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[TransportError] = link.loop.create_future()
        self._grace: asyncio.TimerHandle | None = None

    # --- identity ----------------------------------------------------------------------------
    @property
    def peer_id(self) -> str:
        return self.result.peer_id

    @property
    def account_id(self) -> str:
        return self.result.account_id

    @property
    def certificate(self) -> DeviceCertificate:
        return self.result.require_certificate()

    @property
    def protocol_version(self) -> int:
        return self.result.version

    @property
    def features(self) -> frozenset[str]:
        return self.result.features

    @property
    def transport(self) -> str:
        return self._link.carrier.transport_name

    @property
    def remote_address(self) -> Any:
        return self._link.carrier.remote_address()

    def __repr__(self) -> str:
        return f"<Connection {self.transport} {self.peer_id}>"

    # --- streams -----------------------------------------------------------------------------
    async def open_stream(self) -> Stream:
        """Open a new stream; waits while the peer's concurrent-stream limit is reached."""
        link = self._link
        assert link.session is not None
        while not link.session.can_open():
            self._raise_if_closed()
            fut = self._open_waiter = link.loop.create_future()
            try:
                await fut
            finally:
                self._open_waiter = None
        self._raise_if_closed()
        sid = link.session.open_stream()
        st = self._streams[sid] = Stream(self, sid)
        return st

    async def accept_stream(self) -> Stream:
        """The next stream the peer opened."""
        while not self._incoming:
            self._raise_if_closed()
            fut = self._accept_waiter = self._link.loop.create_future()
            try:
                await fut
            finally:
                self._accept_waiter = None
        st = self._incoming.popleft()
        if self._link.session is not None:
            self._link.session.stream_accepted(st.id)
        return st

    # --- receive budget ----------------------------------------------------------------------
    def restrict(self, budget: int | None = None, *, grace: float | None = None) -> None:
        """Shrink this connection's receive budget (default ``restricted_budget``, 1 MiB) and
        allow one pending stream: for a peer that shares no space with us. Pending streams
        holding more are reset at once. With ``grace``, the connection is closed after that
        many seconds unless :meth:`lift_restriction` is called first (invite bootstrap)."""
        link = self._link
        if link.session is None or link.error is not None:
            return
        if grace is not None:
            self._cancel_grace()
            self._grace = link.loop.call_later(grace, self._grace_over)
        if not link.config.enforce_budget:
            return
        events = link.session.restrict(budget if budget is not None
                                       else link.config.restricted_budget)
        for ev in events:
            self._on_event(ev)
        link.flush()

    def lift_restriction(self) -> None:
        """The peer shares a space after all (e.g. it just joined by invite): back to the
        configured budget, and no disconnect at the end of the grace period."""
        self._cancel_grace()
        link = self._link
        if link.session is not None:
            link.session.unrestrict(link.config.budget())

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _grace_over(self) -> None:
        self._grace = None
        self._link.fail(ConnectionClosed("closed locally: the peer shares no space with this "
                                         "device (grace period over)"))

    @property
    def buffered(self) -> int:
        """Bytes received from the peer that the application has not consumed yet."""
        return self._link.session.buffered if self._link.session is not None else 0

    def _raise_if_closed(self) -> None:
        if self._link.error is not None:
            raise self._link.error

    # --- closing -----------------------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    @property
    def close_reason(self) -> TransportError | None:
        return self._closed.result() if self._closed.done() else None

    async def close(self, reason: str = "") -> None:
        """Close with ``reason`` (sent to the peer) and release the sockets."""
        self._link.fail(ConnectionClosed(f"closed locally{': ' + reason if reason else ''}"))
        await self._link.carrier.wait_closed()

    async def wait_closed(self) -> TransportError:
        """Wait until the connection is closed; returns the reason (never raises it)."""
        return await asyncio.shield(self._closed)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- from the link -----------------------------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, MessageReceived):
            st = self._streams.get(ev.stream)
            if st is not None:
                st._messages.append(ev.data)
                st._wake()
        elif isinstance(ev, StreamOpened):
            st = self._streams[ev.stream] = Stream(self, ev.stream)
            self._incoming.append(st)
            _wake(self._accept_waiter)
        elif isinstance(ev, StreamFinished):
            st = self._streams.get(ev.stream)
            if st is not None:
                st._peer_finished = True
                st._wake()
        elif isinstance(ev, StreamWasReset):
            st = self._streams.pop(ev.stream, None)
            if st is not None:
                who = "reset locally" if ev.local else "peer reset stream"
                st._error = StreamReset(f"{who} {ev.stream}: {ev.reason}" if not ev.local
                                        else f"stream {ev.stream} {who}: {ev.reason}")
                st._messages.clear()  # the session released their bytes
                if st in self._incoming:
                    self._incoming.remove(st)
                st._wake()
        elif isinstance(ev, CreditAvailable):
            st = self._streams.get(ev.stream)
            if st is not None:
                _wake(st._send_waiter)
        elif isinstance(ev, StreamsAvailable):
            _wake(self._open_waiter)

    def _drop_buffers(self, exc: TransportError, *, keep_accepted: bool) -> None:
        """The connection ended: free queued messages nobody will read — streams never
        accepted always, accepted ones too unless it ended normally (then what arrived before
        the close stays readable).

        An accepted stream whose messages are dropped gets ``exc`` as its error: its reader
        must see the failure, not :class:`EndOfStream` — the peer may have finished the
        stream already (FIN received with the last messages), and ``recv`` would otherwise
        report a clean end after a short read (docs/transport.md, "quicshort")."""
        for st in self._incoming:
            st._messages.clear()
        self._incoming.clear()
        if not keep_accepted:
            for st in self._streams.values():
                if st._messages:
                    st._messages.clear()
                    if st._error is None:
                        st._error = exc

    def _on_closed(self, exc: TransportError) -> None:
        self._cancel_grace()
        if not self._closed.done():
            self._closed.set_result(exc)
        for st in self._streams.values():
            st._wake()
        _wake(self._accept_waiter)
        _wake(self._open_waiter)


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)
