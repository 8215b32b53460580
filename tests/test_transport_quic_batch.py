"""QUIC timers: closing never depends on a timer that may be lost; batched replies keep the
timer armed; a pacing timer sends what it was armed for (docs/transport.md, "quicbatch").

Real QUIC connections on loopback, on the default asyncio loop (the pacing test: uvloop).
"""

from __future__ import annotations

import asyncio
import selectors
import time
from dataclasses import replace
from typing import Any

import pytest
import uvloop
from aioquic.quic.connection import QuicConnectionState

import p2psync.transport.quic as quic_mod
from p2psync.errors import PeerTimeout
from p2psync.transport import Connection, Keepalive, TransportConfig, connect, listen
from p2psync.transport.quic import QuicCarrier
from tests.conformance.transport_suite import FAST, TransportSuite, bulk_one_stream
from tests.test_transport import echo, identity

#: Pings every 0.25 s, but a peer is given up only after 30 s: these tests are about QUIC
#: timers, and a loaded machine (nice'd, load average 10) must not time a peer out midway.
CFG = TransportConfig(keepalive=Keepalive(interval=0.25, timeout=30.0), handshake_timeout=10.0)


async def _pair() -> tuple[Any, Connection]:
    dev, cert = identity()
    srv = await listen("127.0.0.1", 0, device_key=dev, certificate=cert, on_connection=echo,
                       transport="quic", config=CFG)
    cdev, ccert = identity()
    conn = await connect(("127.0.0.1", srv.port), device_key=cdev, certificate=ccert,
                         transport="quic", config=CFG)
    return srv, conn


@pytest.mark.parametrize("batch", [True, False])
async def test_close_completes_when_aioquic_timer_was_lost(
        monkeypatch: pytest.MonkeyPatch, batch: bool) -> None:
    """The hang of ``test_vanished_peer_noticed_by_keepalive[quic]``, made deterministic.

    That test models a vanished network by replacing the client carrier's ``transmit`` with a
    no-op for about a second. An aioquic timer (ACK delay, loss probe) that fires meanwhile
    calls the no-op instead of re-arming itself, so the client is left with *no* aioquic timer;
    its keepalive then fails the link, which queues a CONNECTION_CLOSE that the no-op never
    sends. When the network comes back, ``conn.close()`` waits for aioquic to finish closing —
    which needs a timer or an incoming datagram. If the server's own goodbye came (and was
    dropped) before that, nothing ever arrives: the loop sleeps with no timer at all, forever.
    Here: the same state on purpose (timer cancelled as if it fired under the no-op, server
    gone), then ``close()`` must end within a bound, with batching on and off."""
    monkeypatch.setattr(quic_mod, "BATCH_TRANSMIT", batch)
    srv, conn = await _pair()
    carrier = conn._link.carrier
    assert isinstance(carrier, QuicCarrier)
    try:
        carrier.transmit = lambda: None  # type: ignore[method-assign]  # nothing out
        carrier.datagram_received = lambda data, addr: None  # type: ignore[method-assign]
        # aioquic's timer fired while transmit was a no-op: no timer re-armed
        if carrier._timer is not None:
            carrier._timer.cancel()
        carrier._timer = carrier._timer_at = None
        await srv.close()  # the server's CONNECTION_CLOSE is dropped; nothing will come again
        conn._link.fail(PeerTimeout("keepalive: the peer vanished"))  # queues the close
        del carrier.transmit  # type: ignore[attr-defined]  # network back
        del carrier.datagram_received  # type: ignore[attr-defined]
        await asyncio.wait_for(conn.close(), 10)
        assert carrier.quic._state is QuicConnectionState.TERMINATED
    finally:
        if not carrier._closed.is_set():  # failed: do not leave the UDP socket behind
            carrier.quic._close_end()
            carrier._process_events()


def _stale_timers(carriers: list[QuicCarrier]) -> list[str]:
    """Carriers whose armed loop timer is not aioquic's next deadline."""
    bad = []
    for c in carriers:
        if c._closed.is_set():
            continue
        want = c.quic.get_timer()
        armed = c._timer_at if c._timer is not None and not c._timer.cancelled() else None
        if armed != want:
            bad.append(f"client={c.quic.configuration.is_client} armed={armed} want={want}")
    return bad


async def test_loop_never_sleeps_with_a_quic_timer_stale(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With batched replies (``BATCH_TRANSMIT``) the timer is re-armed in the deferred reply,
    not in ``datagram_received``. Checked where it matters: every time the loop is about to
    sleep (a blocking ``select``: nothing ready, so no reply pending), each live carrier's
    loop timer is exactly aioquic's ``get_timer()`` — through a handshake, 4 MiB echoed both
    ways, streams opened and ended, and a close."""
    monkeypatch.setattr(quic_mod, "BATCH_TRANSMIT", True)
    carriers: list[QuicCarrier] = []
    init = QuicCarrier.__init__

    def record(self: QuicCarrier, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        carriers.append(self)

    monkeypatch.setattr(QuicCarrier, "__init__", record)
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    select = selector.select
    sleeps: list[int] = []
    stale: list[str] = []

    def checked(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout > 0:  # the loop may sleep: nothing is left to run
            sleeps.append(1)
            stale.extend(_stale_timers(carriers))
        result: list[tuple[selectors.SelectorKey, int]] = select(timeout)
        return result

    monkeypatch.setattr(selector, "select", checked)
    srv, conn = await _pair()
    try:
        for size in (1, 60_000, 1_000_000):
            st = await conn.open_stream()
            for _ in range(4):
                await st.send(b"x" * size)
                assert len(await st.recv()) == size
            st.finish()
        await asyncio.sleep(CFG.keepalive.interval * 2)  # idle: keepalive pings and their ACKs
        await conn.close()
    finally:
        await srv.close()
    assert len(carriers) == 2 and len(sleeps) > 20
    assert not stale, stale[:5]


def _sender_timer_spins(nbytes: int) -> tuple[int, int]:
    """(datagrams the sending carrier sent, timer firings after which it sent nothing) for
    ``nbytes`` on one QUIC stream over loopback, on uvloop (agents run on it; its clock is
    cached per loop iteration in whole milliseconds)."""

    async def run() -> tuple[int, int]:
        config = replace(FAST, keepalive=CFG.keepalive, handshake_timeout=10.0)
        async with TransportSuite().pair("quic", config=config) as p:
            carrier: Any = p.client._link.carrier  # type: ignore[attr-defined]
            counts = [0, 0]
            in_timer = [False]
            real_send = carrier.quic.datagrams_to_send
            real_timer = carrier._handle_timer

            def send(now: float) -> Any:
                out = real_send(now=now)
                counts[0] += len(out)
                if in_timer[0] and not out:
                    counts[1] += 1
                return out

            def timer() -> None:
                in_timer[0] = True
                try:
                    real_timer()
                finally:
                    in_timer[0] = False

            carrier.quic.datagrams_to_send = send
            carrier._handle_timer = timer

            await bulk_one_stream(p, nbytes)
            return counts[0], counts[1]

    result: tuple[int, int] = uvloop.run(run())
    return result


def test_pacing_timer_sends_what_it_was_armed_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PACE_AT_DUE_TIME``: after a timer the carrier transmits at the time the timer was
    due. With aioquic's loop-clock transmit, uvloop fires a pacing timer a few µs "early" (same
    cached millisecond), the pacer sees no time pass, sends nothing and re-arms at once —
    several empty transmits per datagram sent (switched off: this test fails)."""
    monkeypatch.setattr(quic_mod, "PACE_AT_DUE_TIME", True)
    sent, empty = _sender_timer_spins(6_000_000)
    assert sent > 3000
    assert empty < sent / 4, (sent, empty)


@pytest.mark.parametrize("carrier_name", ["quic", "tcp"])
async def test_failure_after_fin_never_reads_as_a_clean_end(
        monkeypatch: pytest.MonkeyPatch, carrier_name: str) -> None:
    """The pacing test's one short read (docs/transport.md, "quicshort"): the last message and
    the FIN arrive together, the reader is woken, and before its task runs the link fails with
    an error that is not a normal close (a keepalive ``PeerTimeout`` on a starved machine).
    The failure frees queued messages (``Connection._drop_buffers``); the reader then found no
    message and ``_peer_finished`` set and got ``EndOfStream``: 99 of 100 messages, no error.
    Made deterministic: the link fails right after the FIN is dispatched. Now the reader gets
    every message that was not dropped, then the link's error — never a clean end."""
    config = replace(FAST, keepalive=CFG.keepalive, handshake_timeout=10.0)
    finished = asyncio.Event()
    on_event = Connection._on_event

    def hook(self: Connection, ev: Any) -> None:
        on_event(self, ev)
        if type(ev).__name__ == "StreamFinished" and not self._link.initiator:
            self._link.fail(PeerTimeout("keepalive: peer silent (simulated)"))
            finished.set()

    monkeypatch.setattr(Connection, "_on_event", hook)
    async with TransportSuite().pair(carrier_name, config=config) as p:
        st = await p.client.open_stream()
        await st.send(b"m0")
        srv = await p.accepted.accept_stream()
        got = [await srv.recv()]
        for i in range(1, 4):
            await st.send(b"m%d" % i)
        st.finish()
        await finished.wait()
        assert srv._peer_finished
        with pytest.raises(PeerTimeout):
            async for msg in srv:  # EndOfStream would end this loop silently
                got.append(msg)
        assert got[0] == b"m0" and all(m.startswith(b"m") for m in got)


def test_idle_timer_late_after_a_stall_reads_the_socket_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``LATE_TIMER_GRACE``: the real trigger of the short read. On uvloop, due timers run
    before the loop polls its sockets; after a stall longer than aioquic's idle timeout
    (2 × the keepalive timeout: 1.6 s here) aioquic's idle timer fired first and ended a
    connection whose peer's datagrams sat unread (``PeerTimeout: QUIC idle timeout``). Here
    the loop blocks for 2 s right after the FIN is dispatched: the connection must survive
    and the reader get every message and a clean end (switched off: ``PeerTimeout``)."""
    monkeypatch.setattr(quic_mod, "LATE_TIMER_GRACE", 0.25)
    on_event = Connection._on_event

    def hook(self: Connection, ev: Any) -> None:
        on_event(self, ev)
        if type(ev).__name__ == "StreamFinished" and not self._link.initiator:
            time.sleep(2.0)  # the stimulus: a starved process, not a wait for an event

    monkeypatch.setattr(Connection, "_on_event", hook)

    async def run() -> tuple[list[bytes], Any]:
        async with TransportSuite().pair("quic", config=FAST) as p:
            st = await p.client.open_stream()
            await st.send(b"m0")
            srv = await p.accepted.accept_stream()
            got = [await srv.recv()]
            for i in range(1, 4):
                await st.send(b"m%d" % i)
            st.finish()
            got += [msg async for msg in srv]
            return got, p.accepted._link.error

    got, error = uvloop.run(run())
    assert error is None
    assert got == [b"m0", b"m1", b"m2", b"m3"]
