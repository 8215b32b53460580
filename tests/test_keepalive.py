"""Keepalive verdicts count the peer's silence, not the time our own event loop was blocked.

A process whose loop is busy (CPU-bound signing, a slow synchronous store commit, a starved
process on a loaded machine) for longer than the keepalive timeout used to close every one of
its connections at once as soon as the loop came back: the timers ran first (uvloop runs due
timers before reading the bytes that arrived during a stall in an I/O callback) and measured
the stall as peer silence. Sans-IO tests drive ``Session.on_timer`` with explicit ``now``;
the last test blocks a real loop with two TCP connections on loopback.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import PeerTimeout
from p2psync.transport import Connection, Keepalive, Limits, TransportConfig, connect, listen
from p2psync.transport.framing import RecordType, decode_record
from p2psync.transport.session import Session

KA = Keepalive(interval=1.5, timeout=5.0)
LIM = Limits()


def session(now: float = 0.0) -> Session:
    return Session(initiator=True, local=LIM, remote=LIM, keepalive=KA, now=now)


def pings(s: Session) -> int:
    return sum(1 for _route, raw in s.take_outgoing()
               if decode_record(raw).type is RecordType.PING)


def run_on_time(s: Session, until: float, now: float) -> float:
    """Call ``on_timer`` exactly when it asks, up to ``until``; returns the last ``now``."""
    while True:
        nxt = s.on_timer(now)
        if nxt > until:
            return now
        now = nxt


def test_silent_peer_on_time_loop_times_out_at_the_timeout() -> None:
    s = session()
    with pytest.raises(PeerTimeout):
        run_on_time(s, 100.0, 0.75)
    # the verdict came at the first check at or past 5 s of silence, not later
    assert s.last_received == 0.0


def test_late_timer_after_our_stall_is_not_peer_silence() -> None:
    s = session()
    now = run_on_time(s, 3.0, 0.75)  # checks on time up to 3 s, a PING is out
    assert pings(s) == 1
    due = now + KA.interval / 2
    # our loop blocked 6 s: the check runs 6 s late. Without the fix: "peer silent for 9 s".
    late_now = due + 6.0
    nxt = s.on_timer(late_now)
    assert nxt == late_now  # asks to be called again at once (after the loop reads sockets)
    # the bytes the peer sent meanwhile are read first, then the re-check is fine
    s.receive([], None, late_now + 0.01)
    assert s.on_timer(late_now + 0.02) > late_now
    assert s.stalled < 0.1  # only the re-check's own lateness


def test_stall_is_subtracted_even_when_nothing_arrives() -> None:
    s = session()
    now = run_on_time(s, 2.0, 0.75)
    late_now = now + KA.interval / 2 + 10.0  # a 10 s stall
    assert s.on_timer(late_now) == late_now
    # nothing arrived: the silence observed while running is ~2.75 s, below 5 s
    nxt = s.on_timer(late_now + 0.01)
    assert nxt > late_now and s.stalled >= 10.0
    # a peer that really is gone is still noticed, ~5 s of running time later
    with pytest.raises(PeerTimeout):
        run_on_time(s, late_now + 10.0, nxt)


def test_a_loop_late_every_time_still_reaches_a_verdict() -> None:
    """Only one check in a row is deferred: a permanently overloaded loop does not keep a
    dead connection forever."""
    s = session()
    now, due = 0.0, KA.interval / 2
    with pytest.raises(PeerTimeout):
        for _ in range(200):
            now = due + 1.0  # every check 1 s late (more than half an interval)
            due = s.on_timer(now)


# --- a real loop, real sockets -----------------------------------------------------------------
FAST = TransportConfig(keepalive=Keepalive(interval=0.2, timeout=0.8), handshake_timeout=3.0)


def identity() -> tuple[DeviceKey, DeviceCertificate]:
    dev = DeviceKey.generate()
    return dev, DeviceCertificate.issue(AccountKey.generate(), dev)


async def test_blocked_loop_keeps_its_tcp_connections() -> None:
    """Both ends in this process: block the loop for 2.5 keepalive timeouts. When it comes
    back, neither side may call the other silent; a message still goes through."""
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    async def on_conn(conn: Connection) -> None:
        await accepted.put(conn)
        await conn.wait_closed()

    dev, cert = identity()
    srv = await listen("127.0.0.1", 0, device_key=dev, certificate=cert,
                       on_connection=on_conn, transport="tcp", config=FAST)
    cdev, ccert = identity()
    client = await connect(("127.0.0.1", srv.port), device_key=cdev, certificate=ccert,
                           transport="tcp", config=FAST)
    try:
        server_side = await asyncio.wait_for(accepted.get(), 5)
        await asyncio.sleep(0.5)  # keepalive timers armed and running
        time.sleep(2.0)  # the loop is blocked (CPU-bound work, a synchronous commit)
        st = await client.open_stream()
        await st.send(b"after the stall")
        peer_st = await asyncio.wait_for(server_side.accept_stream(), 5)
        assert await asyncio.wait_for(peer_st.recv(), 5) == b"after the stall"
        await asyncio.sleep(1.0)  # a few more keepalive rounds on a running loop
        assert not client.is_closed and not server_side.is_closed
    finally:
        await client.close()
        await srv.close()
