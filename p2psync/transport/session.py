"""Sans-IO stream multiplexer: logical streams, credit flow control, stream limits, keepalive.

One :class:`Session` per authenticated connection, identical over QUIC and TCP. It consumes
decrypted :class:`~p2psync.transport.framing.Record` objects and produces ``(route, record)``
pairs to encrypt and send: ``route`` is the stream a record belongs on (QUIC writes it to that
QUIC stream; 0 is the control stream) and TCP ignores it because every record carries its
stream id. Stream ids follow QUIC numbering: 0 is control, the initiator opens 4, 8, 12, …,
the responder 1, 5, 9, ….

Flow control: a receiver grants each stream ``stream_window`` bytes of message data and grants
more only as its application consumes messages, so buffered data per stream never exceeds the
window. Stream limit: a receiver lets its peer open ``max_streams`` streams and raises that
total by one each time a peer-opened stream is fully closed (like QUIC's MAX_STREAMS); opening
beyond it is a :class:`~p2psync.errors.StreamLimitExceeded` that ends the connection.

Receive budget (issue 12.1): credit alone bounds each stream, not the sum. A :class:`Budget`
caps (a) the peer-opened streams the application has not accepted yet — a new one beyond
``max_pending_streams`` is reset at once, never buffered — and (b) the bytes received but not
consumed by the application, per connection and, above a small per-connection floor, in a
:class:`BufferPool` shared by every connection of the process. Data that would exceed either
resets the stream it arrived on (its bytes are dropped and released); a peer that keeps doing
it is closed with :class:`~p2psync.errors.BudgetExceeded`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from p2psync.errors import (
    BudgetExceeded,
    FlowControlError,
    FrameError,
    PeerTimeout,
    StreamLimitExceeded,
    TransportError,
)
from p2psync.transport.framing import (
    DATA_PATH,
    MAX_RECORD_PAYLOAD,
    Record,
    RecordType,
    encode_record,
)
from p2psync.transport.handshake import Limits

CONTROL = 0
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_CLOSE = struct.Struct(">H")


class CloseCode:
    """Codes carried by CLOSE records."""

    NORMAL = 0
    PROTOCOL = 1  #: malformed, oversize or unauthenticated frames
    REFUSED = 2  #: handshake refused (certificate, identity, version)
    TIMEOUT = 3
    STREAM_LIMIT = 4
    FLOW_CONTROL = 5
    INTERNAL = 6


def close_code_for(exc: BaseException) -> int:
    """The CLOSE code that tells the peer which kind of failure ended the connection."""
    from p2psync.errors import HandshakeError

    if isinstance(exc, HandshakeError):
        return CloseCode.REFUSED
    if isinstance(exc, FlowControlError):
        return CloseCode.FLOW_CONTROL
    if isinstance(exc, FrameError):
        return CloseCode.PROTOCOL
    if isinstance(exc, StreamLimitExceeded):
        return CloseCode.STREAM_LIMIT
    if isinstance(exc, PeerTimeout):
        return CloseCode.TIMEOUT
    return CloseCode.INTERNAL


@dataclass(frozen=True)
class Budget:
    """Receive-side memory limits of one connection (see the module docstring)."""

    #: Peer-opened streams not yet accepted by the application; more are reset on arrival.
    max_pending_streams: int = 4
    #: Bytes received and not yet consumed by the application, on this connection.
    connection: int = 16 << 20
    #: Bytes a connection may hold without drawing on the shared pool (so one greedy peer
    #: cannot starve another's small messages).
    floor: int = 256 << 10
    #: Budget resets tolerated before the connection is closed with BudgetExceeded.
    strikes: int = 8

    def __post_init__(self) -> None:
        if self.max_pending_streams < 1 or self.connection < 1 or self.floor < 0:
            raise ValueError("budget values must be positive")


class BufferPool:
    """Received-but-unread bytes above each connection's floor, summed over connections.

    Shared (mutable) by every session of a process; single-threaded like the event loop.
    """

    __slots__ = ("capacity", "peak", "used")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.peak = 0  #: highest ``used`` seen (tests, benchmarks)

    def __repr__(self) -> str:
        return f"<BufferPool {self.used}/{self.capacity}>"


# --- events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StreamOpened:
    stream: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    stream: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamFinished:
    """The peer sent FIN: no more messages on this stream."""

    stream: int


@dataclass(frozen=True, slots=True)
class StreamWasReset:
    stream: int
    reason: str
    local: bool = False  #: we reset it (receive budget), not the peer


@dataclass(frozen=True, slots=True)
class CreditAvailable:
    stream: int


@dataclass(frozen=True, slots=True)
class StreamsAvailable:
    pass


@dataclass(frozen=True, slots=True)
class Accepted:
    payload: bytes = b""  #: a deferring responder's certificate (issue 12.6)


@dataclass(frozen=True, slots=True)
class PeerClosed:
    code: int
    reason: str


Event = (StreamOpened | MessageReceived | StreamFinished | StreamWasReset | CreditAvailable
         | StreamsAvailable | Accepted | PeerClosed)


class _Stream:
    __slots__ = ("consumed", "granted", "local", "partial", "partial_len", "received",
                 "recv_open", "send_limit", "send_open", "sent")

    def __init__(self, local: bool, send_limit: int, granted: int) -> None:
        self.local = local
        self.send_open = True
        self.recv_open = True
        self.send_limit = send_limit
        self.sent = 0
        self.granted = granted
        self.received = 0
        self.consumed = 0
        self.partial: list[bytes] = []
        self.partial_len = 0


@dataclass(frozen=True)
class Keepalive:
    """PING after ``interval`` s without sending; give up after ``timeout`` s of silence."""

    interval: float = 1.5
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.interval < self.timeout:
            raise ValueError("keepalive interval must be positive and below the timeout")


class Session:
    """The multiplexer state machine (no I/O, no clock of its own: pass ``now``)."""

    def __init__(self, *, initiator: bool, local: Limits, remote: Limits,
                 keepalive: Keepalive | None = None, now: float = 0.0,
                 budget: Budget | None = None, pool: BufferPool | None = None) -> None:
        self.initiator = initiator
        self.local = local
        self.remote = remote
        self.keepalive = keepalive or Keepalive()
        self.streams: dict[int, _Stream] = {}
        self._out: list[tuple[int, bytes]] = []
        self._credit_dirty: set[int] = set()
        self._streams_dirty = False
        self._mine = 0 if initiator else 1  # sid % 4 of streams we open
        self._opened = 0  # streams we opened (ordinal of the last)
        self._may_open = remote.max_streams  # total the peer lets us open
        self._peer_max_ord = 0  # highest ordinal the peer opened
        self._peer_gaps: set[int] = set()  # ordinals below that max not seen yet (QUIC reorder)
        self._granted_streams = local.max_streams
        self.last_received = now
        self.last_sent = now
        self._ping_outstanding = False
        #: When the next ``on_timer`` call is due (what the last one returned).
        self._due = now + self.keepalive.interval / 2
        #: Seconds our own timer ran late since the last receive: time our event loop was
        #: blocked, which is not the peer's silence (see ``on_timer``).
        self.stalled = 0.0
        self._verdict_deferred = False
        self.closed = False
        # Receive budget (None: unlimited, the pre-issue-12 behaviour).
        self.budget = budget
        self.pool = pool
        self.conn_budget = 0 if budget is None else max(budget.connection, local.max_message)
        self._floor_bytes = 0 if budget is None else budget.floor
        self.buffered = 0  #: bytes received and not consumed by the application
        self.peak_buffered = 0  #: highest ``buffered`` seen (tests, benchmarks)
        self.data_in = 0  #: message bytes received, including refused and late ones
        self.unaccepted: set[int] = set()  #: peer-opened streams the app has not accepted
        self.budget_resets = 0

    # --- ids ---------------------------------------------------------------------------------
    def _ordinal(self, sid: int) -> int:
        return sid // 4 if sid % 4 == 0 else sid // 4 + 1

    def _sid(self, ordinal: int) -> int:
        return ordinal * 4 if self._mine == 0 else (ordinal - 1) * 4 + 1

    # --- sending -----------------------------------------------------------------------------
    def can_open(self) -> bool:
        return self._opened < self._may_open

    def open_stream(self) -> int:
        if not self.can_open():
            raise StreamLimitExceeded(
                f"peer allows {self.remote.max_streams} concurrent streams; wait for one to close")
        self._opened += 1
        sid = self._sid(self._opened)
        self.streams[sid] = _Stream(True, self.remote.stream_window, self.local.stream_window)
        return sid

    def credit(self, sid: int) -> int:
        st = self.streams.get(sid)
        return 0 if st is None else st.send_limit - st.sent

    def write(self, sid: int, data: memoryview, final: bool) -> int:
        """Queue up to the available credit of ``data``; DATA_END goes on the last chunk if
        ``final``. Returns the number of bytes taken."""
        st = self._sendable(sid)
        n = min(len(data), st.send_limit - st.sent)
        if n < len(data) or not final:
            final = False
        if n == 0 and not final:
            return 0
        out = self._out
        pos = 0
        while True:
            end = min(pos + MAX_RECORD_PAYLOAD, n)
            last = end == n
            rtype = RecordType.DATA_END if (last and final) else RecordType.DATA
            out.append((sid, encode_record(rtype, sid, bytes(data[pos:end]))))
            pos = end
            if last:
                break
        st.sent += n
        return n

    def _sendable(self, sid: int) -> _Stream:
        st = self.streams.get(sid)
        if st is None or not st.send_open:
            raise TransportError(f"stream {sid} is closed for sending")
        return st

    def finish(self, sid: int) -> None:
        """Half-close: we send nothing more on ``sid``."""
        st = self.streams.get(sid)
        if st is None or not st.send_open:
            return
        st.send_open = False
        self._out.append((sid, encode_record(RecordType.FIN, sid)))
        self._maybe_done(sid, st)

    def reset(self, sid: int, reason: str = "") -> None:
        st = self.streams.pop(sid, None)
        if st is None:
            return
        self._credit_dirty.discard(sid)
        self.unaccepted.discard(sid)
        self.release(st.received - st.consumed)  # dropped with the stream
        st.consumed = st.received
        self._control(RecordType.RESET, sid, reason.encode()[:512])
        if not st.local:
            self._grant_stream()

    def consumed(self, sid: int, n: int) -> None:
        """The application took ``n`` bytes of messages from ``sid``: grant more credit."""
        self.release(n)
        st = self.streams.get(sid)
        if st is None or not st.recv_open:
            return
        st.consumed += n
        if st.granted - st.consumed <= self.local.stream_window // 2 or self._stalled(st):
            self._grant(sid, st)

    @staticmethod
    def _stalled(st: _Stream) -> bool:
        """The sender used all its credit in the middle of a message. Credit only comes back
        when *whole* messages are consumed, so without a grant now that message could never
        complete (a deadlock the transport conformance suite found with max_message ==
        stream_window: a large message arriving with less than half a window left)."""
        return st.partial_len > 0 and st.received == st.granted

    def _grant(self, sid: int, st: _Stream) -> None:
        """Let the sender have a whole window beyond what the application consumed (buffered
        data therefore never exceeds the window)."""
        granted = st.consumed + self.local.stream_window
        if granted > st.granted:
            st.granted = granted
            self._credit_dirty.add(sid)

    # --- receive budget --------------------------------------------------------------------
    def release(self, n: int) -> None:
        """``n`` received bytes left our buffers (consumed by the app, or dropped)."""
        if n <= 0:
            return
        before = self.buffered
        after = self.buffered = before - n if before > n else 0
        if before > self._floor_bytes:  # the pool only holds what is above the floor
            self._pool_move(before, after)

    def _pool_move(self, before: int, after: int) -> None:
        pool = self.pool
        if pool is not None and self.budget is not None:
            floor = self._floor_bytes
            pool.used += max(0, after - floor) - max(0, before - floor)
            if pool.used > pool.peak:
                pool.peak = pool.used

    def _fits(self, n: int) -> bool:
        """May ``n`` more received bytes be buffered on this connection?"""
        if self.budget is None:
            return True
        after = self.buffered + n
        if after <= self._floor_bytes:  # hot path: small messages read promptly
            return True
        if after > self.conn_budget:
            return False
        if self.pool is None:
            return True
        floor = self._floor_bytes
        extra = max(0, after - floor) - max(0, self.buffered - floor)
        return extra == 0 or self.pool.used + extra <= self.pool.capacity

    def stream_accepted(self, sid: int) -> None:
        """The application accepted peer stream ``sid``: it no longer counts as pending."""
        self.unaccepted.discard(sid)

    def restrict(self, connection_budget: int, max_pending_streams: int = 1) -> list[Event]:
        """Shrink this connection's budget (a peer sharing nothing with us). Pending
        (unaccepted) streams are reset, largest first, until the bytes held fit; returns the
        resulting events. May go below ``max_message``: such a peer's big messages are refused."""
        budget = self.budget or Budget()
        self._pool_move(self.buffered, 0)
        self.budget = Budget(max_pending_streams=min(budget.max_pending_streams,
                                                     max_pending_streams),
                             connection=budget.connection, floor=budget.floor,
                             strikes=budget.strikes)
        self._floor_bytes = budget.floor
        self._pool_move(0, self.buffered)
        self.conn_budget = min(self.conn_budget or connection_budget, connection_budget)
        events: list[Event] = []
        for sid in sorted(self.unaccepted, key=lambda i: -self._held(i)):
            if self.buffered <= self.conn_budget:
                break
            self.refuse(sid, f"connection restricted to {self.conn_budget} buffered bytes",
                        events)
        return events

    def unrestrict(self, budget: Budget | None) -> None:
        """Back to ``budget`` (the configured one) after :meth:`restrict`."""
        self._pool_move(self.buffered, 0)  # re-file what we hold under the new floor
        self.budget = budget
        self._floor_bytes = 0 if budget is None else budget.floor
        self._pool_move(0, self.buffered)
        self.conn_budget = 0 if budget is None else max(budget.connection,
                                                        self.local.max_message)

    def _held(self, sid: int) -> int:
        st = self.streams.get(sid)
        return 0 if st is None else st.received - st.consumed

    def refuse(self, sid: int, reason: str, events: list[Event]) -> None:
        """Reset peer stream ``sid`` for budget reasons: drop its bytes, tell both sides."""
        st = self.streams.get(sid)
        if st is not None:
            self.release(st.received - st.consumed)
            st.consumed = st.received
        self.unaccepted.discard(sid)
        self.reset(sid, reason)
        events.append(StreamWasReset(sid, reason, local=True))

    def accept(self, payload: bytes = b"") -> None:
        """Responder: the handshake is accepted; ``payload`` = our deferred certificate."""
        self._control(RecordType.ACCEPT, CONTROL, payload)

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self._control(RecordType.CLOSE, CONTROL, _CLOSE.pack(code) + reason.encode()[:512])

    def _control(self, rtype: RecordType, sid: int, payload: bytes = b"") -> None:
        self._out.append((CONTROL, encode_record(rtype, sid, payload)))

    def take_outgoing(self) -> list[tuple[int, bytes]]:
        """Records to encrypt and send, in order (credits and stream grants batched)."""
        if self._credit_dirty:
            for sid in self._credit_dirty:
                st = self.streams.get(sid)
                if st is not None:
                    self._control(RecordType.CREDIT, sid, _U64.pack(st.granted))
            self._credit_dirty.clear()
        if self._streams_dirty:
            self._control(RecordType.STREAMS, CONTROL, _U32.pack(self._granted_streams))
            self._streams_dirty = False
        out, self._out = self._out, []
        return out

    # --- timers ------------------------------------------------------------------------------
    def on_timer(self, now: float) -> float:
        """Queue a PING if we have been quiet; raise PeerTimeout if the peer has. Returns the
        time of the next check.

        Silence is counted only while *our* loop was running: when this call comes late
        (the caller's timer was due at the time the previous call returned), the lateness
        is time our event loop was blocked — CPU-bound signing or verification, a slow
        synchronous store commit, a starved process — and the peer may well have sent
        PINGs and data meanwhile that sit unread in the socket. uvloop (libuv) even runs
        due timers *before* reading the bytes that arrived during a stall in an I/O
        callback. So the lateness is subtracted from the silence, and a check that comes
        more than half an interval late gives no verdict: it pings and asks to be called
        again at once (the caller's loop reads its sockets before that). Only one check in a
        row is deferred, so a loop that is late every time still reaches a verdict on the
        silence it did observe."""
        ka = self.keepalive
        late = max(0.0, now - self._due)
        self.stalled += late
        silent = now - self.last_received - self.stalled
        if late > ka.interval / 2 and not self._verdict_deferred:
            self._verdict_deferred = True
            if not self._ping_outstanding:
                self._ping_outstanding = True
                self._control(RecordType.PING, CONTROL, os.urandom(8))
            self._due = now
            return now
        self._verdict_deferred = False
        if silent >= ka.timeout:
            raise PeerTimeout(f"peer silent for {silent:.1f} s (keepalive timeout "
                              f"{ka.timeout:g} s, {self.stalled:.1f} s of our own stall "
                              "not counted): it vanished or stalled")
        quiet = now - self.last_sent >= ka.interval or silent >= ka.interval
        if quiet and not self._ping_outstanding:
            self._ping_outstanding = True
            self._control(RecordType.PING, CONTROL, os.urandom(8))
        self._due = now + ka.interval / 2
        return self._due

    def sent_at(self, now: float) -> None:
        self.last_sent = now

    # --- receiving ---------------------------------------------------------------------------
    def receive(self, records: list[Record], route: int | None, now: float) -> list[Event]:
        """Apply authenticated records from ``route`` (None on TCP: no route check)."""
        events: list[Event] = []
        self.last_received = now
        self.stalled = 0.0
        self._ping_outstanding = False
        for rec in records:
            self._receive_one(rec, route, events)
        return events

    def _receive_one(self, rec: Record, route: int | None, events: list[Event]) -> None:
        rtype, sid = rec.type, rec.stream
        if rtype in DATA_PATH:
            self.data_in += len(rec.payload)
            if sid == CONTROL or (route is not None and route != sid):
                raise FrameError(f"{rtype.name} record for stream {sid} on the wrong stream")
            st = self._stream_for_data(sid, events)
            if st is None:
                return  # a stream we already reset: drop late data
            if not st.recv_open:
                raise FrameError(f"data on stream {sid} after the peer finished it")
            if rtype is RecordType.FIN:
                if rec.payload:  # protocol.md: FIN is empty; a payload there is never read
                    raise FrameError(f"FIN on stream {sid} carries {len(rec.payload)} bytes")
                if st.partial_len:
                    raise FrameError(f"stream {sid} finished in the middle of a message")
                st.recv_open = False
                events.append(StreamFinished(sid))
                self._maybe_done(sid, st)
                return
            n = len(rec.payload)
            st.received += n
            if st.received > st.granted:
                raise FlowControlError(
                    f"peer overran its credit on stream {sid} ({st.received} > {st.granted})")
            if not self._fits(n):
                st.received -= n
                self._budget_strike(sid, events)
                return
            before = self.buffered
            after = self.buffered = before + n
            if after > self.peak_buffered:
                self.peak_buffered = after
            if after > self._floor_bytes:
                self._pool_move(before, after)
            st.partial_len += n
            if st.partial_len > self.local.max_message:
                raise FrameError(f"message on stream {sid} exceeds {self.local.max_message} "
                                 "bytes")
            if rtype is RecordType.DATA:
                st.partial.append(rec.payload)
                if self._stalled(st):
                    self._grant(sid, st)
                return
            if st.partial:
                st.partial.append(rec.payload)
                msg = b"".join(st.partial)
                st.partial = []
            else:
                msg = rec.payload
            st.partial_len = 0
            events.append(MessageReceived(sid, msg))
            return
        if route not in (None, CONTROL):
            raise FrameError(f"{rtype.name} record outside the control stream")
        if rtype is RecordType.CREDIT:
            if len(rec.payload) != 8:
                raise FrameError("malformed CREDIT record")
            st = self.streams.get(sid)
            if st is not None and st.send_open:
                (limit,) = _U64.unpack(rec.payload)
                if limit > st.send_limit:
                    st.send_limit = limit
                    events.append(CreditAvailable(sid))
        elif rtype is RecordType.STREAMS:
            if len(rec.payload) != 4:
                raise FrameError("malformed STREAMS record")
            (total,) = _U32.unpack(rec.payload)
            if total > self._may_open:
                self._may_open = total
                events.append(StreamsAvailable())
        elif rtype is RecordType.RESET:
            st = self.streams.pop(sid, None)
            if st is not None:
                self._credit_dirty.discard(sid)
                self.unaccepted.discard(sid)
                self.release(st.received - st.consumed)
                if not st.local:
                    self._grant_stream()
                events.append(StreamWasReset(sid, rec.payload.decode("utf-8", "replace")))
        elif rtype is RecordType.PING:
            self._control(RecordType.PONG, CONTROL, rec.payload[:8])
        elif rtype is RecordType.PONG:
            pass
        elif rtype is RecordType.CLOSE:
            if len(rec.payload) < 2:
                raise FrameError("malformed CLOSE record")
            (code,) = _CLOSE.unpack_from(rec.payload)
            events.append(PeerClosed(code, rec.payload[2:].decode("utf-8", "replace")))
        elif rtype is RecordType.ACCEPT:
            if not self.initiator:
                raise FrameError("unexpected ACCEPT record")
            events.append(Accepted(rec.payload))

    def stream_closed(self, sid: int) -> bool:
        """``sid`` was open once and is closed now (data for it is late and dropped)."""
        if sid in self.streams or sid % 4 not in (0, 1):
            return False
        ordinal = self._ordinal(sid)
        if sid % 4 == self._mine:
            return ordinal <= self._opened
        return ordinal <= self._peer_max_ord and ordinal not in self._peer_gaps

    def check_peer_stream(self, sid: int) -> None:
        """Refuse early a peer stream beyond the limit (QUIC: before any frame completes)."""
        if sid % 4 != self._mine and sid % 4 in (0, 1) and sid not in self.streams:
            ordinal = self._ordinal(sid)
            if ordinal > self._peer_max_ord and ordinal > self._granted_streams:
                raise StreamLimitExceeded(
                    f"peer opened stream #{ordinal} but may have only "
                    f"{self.local.max_streams} open at once (stream flood)")

    def _stream_for_data(self, sid: int, events: list[Event]) -> _Stream | None:
        st = self.streams.get(sid)
        if st is not None:
            return st
        if sid % 4 == self._mine:
            if self._ordinal(sid) <= self._opened:
                return None  # ours, already closed
            raise FrameError(f"peer used stream {sid} that we never opened")
        if sid % 4 not in (0, 1):
            raise FrameError(f"invalid stream id {sid}")
        ordinal = self._ordinal(sid)
        if ordinal <= self._peer_max_ord:
            if ordinal not in self._peer_gaps:
                return None  # closed earlier: late data after a reset
            self._peer_gaps.discard(ordinal)
        else:
            if ordinal > self._granted_streams:
                raise StreamLimitExceeded(
                    f"peer opened stream #{ordinal} but may have only "
                    f"{self.local.max_streams} open at once (stream flood)")
            self._peer_gaps.update(range(self._peer_max_ord + 1, ordinal))
            self._peer_max_ord = ordinal
        st = self.streams[sid] = _Stream(False, self.remote.stream_window,
                                         self.local.stream_window)
        if self.budget is not None and len(self.unaccepted) >= self.budget.max_pending_streams:
            # Not buffered: the app has not taken the streams already waiting.
            self.reset(sid, f"{len(self.unaccepted)} streams already wait to be accepted")
            return None
        self.unaccepted.add(sid)
        events.append(StreamOpened(sid))
        return st

    def _budget_strike(self, sid: int, events: list[Event]) -> None:
        assert self.budget is not None
        self.budget_resets += 1
        if self.budget_resets > self.budget.strikes:
            raise BudgetExceeded(
                f"peer exceeded the receive buffer budget {self.budget_resets} times "
                f"({self.buffered} bytes held, connection budget {self.conn_budget})")
        self.refuse(sid, f"receive buffer budget exceeded ({self.buffered} bytes held, "
                         f"connection budget {self.conn_budget})", events)

    def _maybe_done(self, sid: int, st: _Stream) -> None:
        if not st.send_open and not st.recv_open:
            self.unaccepted.discard(sid)
            del self.streams[sid]
            self._credit_dirty.discard(sid)
            if not st.local:
                self._grant_stream()

    def _grant_stream(self) -> None:
        self._granted_streams += 1
        self._streams_dirty = True

    def local_streams(self) -> Iterator[int]:
        return (sid for sid, st in self.streams.items() if st.local)
