"""A QUIC dial whose handshake answer is processed before the dialer starts waiting still
connects (regression: the closed-laptop netns test's dials hung for 8 s on every other run).

aioquic resolves ``wait_connected()`` only if its waiter already exists when the handshake
completes. ``_quic_dial`` used ``asyncio.wait_for(proto.wait_connected(), ...)``, which on Python
3.11 starts that coroutine in a new task one loop iteration after the Initial was sent; uvloop (the
agent's loop) handles I/O before that task's first step, so when the server's answer was already
queued (a busy or preempted dialer, a fast peer) the handshake completed with no waiter and the
dial hung until its timeout.

Here the dialer is "preempted" right after sending its Initial until the server (on its own
thread and loop) has sent its whole first flight, which makes the old order fail every time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.transport import Connection, TransportConfig, connect, listen
from p2psync.transport.quic import QuicCarrier

uvloop = pytest.importorskip("uvloop")


def _identity() -> tuple[DeviceKey, DeviceCertificate]:
    device = DeviceKey.generate()
    return device, DeviceCertificate.issue(AccountKey.generate(), device)


class _ServerThread:
    """A QUIC listener on 127.0.0.1 running on its own thread and event loop."""

    def __init__(self) -> None:
        self.key, self.cert = _identity()
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()/stop()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        async def hold(conn: Connection) -> None:
            await conn.wait_closed()

        # Retry off: with it the first answer is a stateless Retry from the server object, so
        # the preemption below could not wait for the handshake flight of a connection.
        server = await listen("127.0.0.1", 0, device_key=self.key, certificate=self.cert,
                              on_connection=hold, transport="quic",
                              config=TransportConfig(quic_retry=False))
        self.port, self._loop, self._stop = server.port, asyncio.get_running_loop(), \
            asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.close()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "server thread did not start"
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def server_and_slow_dialer(monkeypatch: pytest.MonkeyPatch) -> Iterator[_ServerThread]:
    server = _ServerThread()
    flight_sent = threading.Event()
    real_connect = QuicCarrier.connect
    real_received = QuicCarrier.datagram_received

    def received(self: QuicCarrier, data: bytes | str, addr: Any) -> None:
        real_received(self, data, addr)  # processes and transmits the whole answer
        if not self._quic._is_client:
            flight_sent.set()

    def connect_then_preempted(self: QuicCarrier, addr: Any, transmit: bool = True) -> None:
        real_connect(self, addr, transmit)
        # the dialer loses the CPU right after sending its Initial: by the time its loop runs
        # again, the server's answer (delivered synchronously over loopback) is queued
        assert flight_sent.wait(10), "server never answered the Initial"

    monkeypatch.setattr(QuicCarrier, "datagram_received", received)
    monkeypatch.setattr(QuicCarrier, "connect", connect_then_preempted)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _dial(server: _ServerThread) -> str:
    key, cert = _identity()
    async with asyncio.timeout(6):  # the handshake itself takes milliseconds
        conn = await connect(("127.0.0.1", server.port), device_key=key, certificate=cert,
                             expected_peer=server.key.id, transport="quic")
    try:
        return conn.peer_id
    finally:
        await conn.close()


@pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop],
                         ids=["uvloop", "asyncio"])
def test_dial_connects_when_the_answer_is_queued_before_the_dialer_waits(
        server_and_slow_dialer: _ServerThread,
        loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(_dial(server_and_slow_dialer)) == server_and_slow_dialer.key.id
