"""Transport over real loopback sockets: happy path and every hostile case from issue 4.

Each hostile case must end only the offending connection with a typed error while the
listener keeps serving a well-behaved client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic import events

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import (
    ConnectionClosed,
    EndOfStream,
    FrameError,
    HandshakeError,
    PeerCertificateInvalid,
    PeerTimeout,
    RefusedByPeer,
    StreamLimitExceeded,
    TransportError,
    UnexpectedPeer,
)
from p2psync.transport import (
    Connection,
    Keepalive,
    Limits,
    Server,
    TransportConfig,
    connect,
    listen,
)
from p2psync.transport.framing import HEADER, FrameDecoder, RecordType, decode_record
from p2psync.transport.handshake import SecureHandshake
from p2psync.transport.quic import quic_configuration
from p2psync.transport.tcp import TCP_BINDING

# max_pending_streams above max_streams: the stream-flood test is about the stream limit
# (tests/test_transport_budget.py covers streams refused for not being accepted).
FAST = TransportConfig(keepalive=Keepalive(interval=0.2, timeout=0.8), handshake_timeout=2.0,
                       limits=Limits(max_streams=8, stream_window=256 << 10,
                                     max_message=128 << 10), max_pending_streams=64)
TRANSPORTS = ["tcp", "quic"]


def identity() -> tuple[DeviceKey, DeviceCertificate]:
    dev = DeviceKey.generate()
    return dev, DeviceCertificate.issue(AccountKey.generate(), dev)


async def echo(conn: Connection) -> None:
    """Echo every message reversed, on every stream the peer opens."""
    async def serve_stream(st: object) -> None:
        assert hasattr(st, "recv")
        try:
            async for msg in st:  # type: ignore[attr-defined]
                await st.send(msg[::-1])  # type: ignore[attr-defined]
            st.finish()  # type: ignore[attr-defined]
        except TransportError:
            pass

    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            st = await conn.accept_stream()
            t = asyncio.create_task(serve_stream(st))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
    except TransportError:
        pass
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server_id() -> tuple[DeviceKey, DeviceCertificate]:
    return identity()


@pytest.fixture
async def server(transport: str, server_id: tuple[DeviceKey, DeviceCertificate]
                 ) -> AsyncIterator[Server]:
    dev, cert = server_id
    srv = await listen("127.0.0.1", 0, device_key=dev, certificate=cert, on_connection=echo,
                       transport=transport, config=FAST)  # type: ignore[arg-type]
    yield srv
    await srv.close()


async def assert_serves(srv: Server, host: str = "127.0.0.1") -> None:
    """A well-behaved client still gets service."""
    dev, cert = identity()
    conn = await connect((host, srv.port), device_key=dev, certificate=cert,
                         transport=srv.transport, config=FAST)  # type: ignore[arg-type]
    try:
        st = await conn.open_stream()
        await st.send(b"still here")
        assert await st.recv() == b"ereh llits"
    finally:
        await conn.close()


# --- happy path ------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_roundtrip(transport: str, host: str) -> None:
    sdev, scert = identity()
    cdev, ccert = identity()
    got: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()

    async def handler(conn: Connection) -> None:
        got.set_result(conn)
        await echo(conn)

    srv = await listen(host, 0, device_key=sdev, certificate=scert, on_connection=handler,
                       transport=transport, config=FAST)  # type: ignore[arg-type]
    try:
        conn = await connect((host, srv.port), device_key=cdev, certificate=ccert,
                             expected_peer=sdev.id, transport=transport,  # type: ignore[arg-type]
                             config=FAST)
        assert conn.peer_id == sdev.id and conn.account_id == scert.account_id
        assert conn.certificate.raw == scert.raw and conn.transport == transport
        remote = await got
        assert remote.peer_id == cdev.id and remote.account_id == ccert.account_id
        a, b = await conn.open_stream(), await conn.open_stream()
        big = bytes(range(256)) * 400  # 100 KiB: several frames, within max_message
        for msg in (b"hello", b"", big):
            await a.send(msg)
            await b.send(msg + b"!")
            assert await b.recv() == (msg + b"!")[::-1]
            assert await a.recv() == msg[::-1]
        a.finish()
        with pytest.raises(EndOfStream):
            await a.recv()
        # the listener side can open streams too
        s = await remote.open_stream()
        await s.send(b"ping")
        incoming = await conn.accept_stream()
        assert await incoming.recv() == b"ping"
        await conn.close("done")
        assert isinstance(await conn.wait_closed(), ConnectionClosed)
        reason = await remote.wait_closed()
        assert isinstance(reason, ConnectionClosed) and "done" in str(reason)
    finally:
        await srv.close()


async def test_flow_control_backpressure(transport: str) -> None:
    """A receiver that does not read stops the sender at its window; reading resumes it."""
    sdev, scert = identity()
    cdev, ccert = identity()
    got: asyncio.Queue[Connection] = asyncio.Queue()
    srv = await listen("127.0.0.1", 0, device_key=sdev, certificate=scert,
                       on_connection=got.put_nowait, transport=transport,  # type: ignore
                       config=FAST)
    try:
        conn = await connect(("127.0.0.1", srv.port), device_key=cdev, certificate=ccert,
                             transport=transport, config=FAST)  # type: ignore[arg-type]
        remote = await got.get()
        st = await conn.open_stream()
        chunk = b"x" * (64 << 10)
        window = FAST.limits.stream_window
        for _ in range(window // len(chunk)):
            await st.send(chunk)  # fits the window: completes without the peer reading
        blocked = asyncio.create_task(st.send(chunk))
        rst = await remote.accept_stream()
        assert conn._link.session is not None
        assert conn._link.session.credit(st.id) == 0 and not blocked.done()
        for _ in range(window // len(chunk) + 1):
            assert await rst.recv() == chunk
        await blocked
        await conn.close()
    finally:
        await srv.close()


# --- identity failures -----------------------------------------------------------------------
async def test_certificate_of_another_device(server: Server) -> None:
    dev, _ = identity()
    _, other_cert = identity()
    # Claim someone else's (valid) certificate while holding our own key.
    fake = replace(other_cert, device=dev.public)
    with pytest.raises(RefusedByPeer, match="does not hold that device key"):
        await connect(("127.0.0.1", server.port), device_key=dev, certificate=fake,
                      transport=server.transport, config=FAST)  # type: ignore[arg-type]
    assert isinstance(await server.next_error(), PeerCertificateInvalid)
    await assert_serves(server)


async def test_forged_certificate(server: Server) -> None:
    dev, cert = identity()
    raw = bytearray(cert.raw)
    raw[-1] ^= 0x01  # break the account signature
    forged = replace(cert, raw=bytes(raw))
    with pytest.raises(RefusedByPeer, match="certificate"):
        await connect(("127.0.0.1", server.port), device_key=dev, certificate=forged,
                      transport=server.transport, config=FAST)  # type: ignore[arg-type]
    assert isinstance(await server.next_error(), PeerCertificateInvalid)
    await assert_serves(server)


async def test_unexpected_peer(server: Server) -> None:
    dev, cert = identity()
    someone = DeviceKey.generate().id
    with pytest.raises(UnexpectedPeer, match=someone):
        await connect(("127.0.0.1", server.port), device_key=dev, certificate=cert,
                      expected_peer=someone, transport=server.transport,  # type: ignore
                      config=FAST)
    await assert_serves(server)


# --- raw TCP peers ---------------------------------------------------------------------------
async def raw_tcp_session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                              SecureHandshake]:
    """A hand-driven initiator: completes the handshake, then lets the test misbehave."""
    dev, cert = identity()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hs = SecureHandshake(initiator=True, device_key=dev, certificate=cert, binding=TCP_BINDING)
    m1 = hs.start()
    writer.write(HEADER.pack(len(m1)) + m1)
    dec = FrameDecoder()
    while not hs.complete:
        for body in dec.feed(await reader.read(65536)):
            out = hs.receive(body)
            if out is not None:
                writer.write(HEADER.pack(len(out)) + out)
    assert hs.result is not None
    bodies: list[bytes] = []
    while not bodies:
        bodies = dec.feed(await reader.read(65536))
    assert decode_record(hs.result.recv_cipher.decrypt_with_ad(None, bodies[0])).type \
        is RecordType.ACCEPT
    return reader, writer, hs


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


@pytest.mark.parametrize("transport", ["tcp"])
@pytest.mark.parametrize("case", ["oversize", "truncated", "garbage", "zero-length"])
async def test_bad_frames_after_handshake(server: Server, case: str) -> None:
    reader, writer, hs = await raw_tcp_session(server.port)
    assert hs.result is not None
    if case == "oversize":
        writer.write(HEADER.pack(1 << 20) + b"\0" * 64)
    elif case == "truncated":
        ct = hs.result.send_cipher.encrypt_with_ad(None, b"\x00" + b"\0\0\0\x04" + b"abc")
        writer.write(HEADER.pack(len(ct)) + ct[:-5])
        writer.write_eof()
    elif case == "garbage":
        writer.write(HEADER.pack(40) + bytes(range(40)))
    else:
        writer.write(HEADER.pack(0))
    err = await server.next_error()
    assert isinstance(err, FrameError), err
    assert await reader.read() is not None  # server closed our connection (EOF)
    await close_writer(writer)
    await assert_serves(server)


@pytest.mark.parametrize("transport", ["tcp"])
async def test_oversize_and_garbage_before_handshake(server: Server) -> None:
    for junk in (HEADER.pack(70000), b"GET / HTTP/1.1\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(junk)
        err = await server.next_error()
        assert isinstance(err, (FrameError, HandshakeError)), err
        assert await reader.read() == b""
        await close_writer(writer)
    await assert_serves(server)


@pytest.mark.parametrize("transport", ["tcp"])
async def test_stall_mid_frame(server: Server) -> None:
    _reader, writer, _ = await raw_tcp_session(server.port)
    writer.write(HEADER.pack(1000) + b"\0" * 10)  # ... and never the rest
    err = await server.next_error()
    assert isinstance(err, PeerTimeout) and "mid-frame" in str(err)
    await close_writer(writer)
    await assert_serves(server)


@pytest.mark.parametrize("transport", ["tcp"])
async def test_replayed_handshake(server: Server) -> None:
    """Record a real client's bytes, replay them on a new connection: refused."""
    dev, cert = identity()
    recorded = bytearray()
    upstream_port = server.port

    async def proxy(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", upstream_port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, rec: bool) -> None:
            while data := await r.read(65536):
                if rec:
                    recorded.extend(data)
                w.write(data)
            w.close()

        await asyncio.gather(pipe(cr, uw, True), pipe(ur, cw, False),
                             return_exceptions=True)

    relay = await asyncio.start_server(proxy, "127.0.0.1", 0)
    try:
        conn = await connect(("127.0.0.1", relay.sockets[0].getsockname()[1]), device_key=dev,
                             certificate=cert, transport="tcp", config=FAST)
        await conn.close()
    finally:
        relay.close()
        await relay.wait_closed()
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(bytes(recorded))
    err = await server.next_error()
    assert isinstance(err, HandshakeError) and "authentication" in str(err)
    await close_writer(writer)
    await assert_serves(server)


# --- stream flood, vanished peer -------------------------------------------------------------
async def test_stream_flood(server: Server) -> None:
    dev, cert = identity()
    conn = await connect(("127.0.0.1", server.port), device_key=dev, certificate=cert,
                         transport=server.transport, config=FAST)  # type: ignore[arg-type]
    assert conn._link.session is not None
    conn._link.session._may_open = 10_000  # ignore the limit the server announced
    for _ in range(40):
        st = await conn.open_stream()
        try:
            await st.send(b"open")
        except TransportError:
            break
    reason = await conn.wait_closed()
    assert isinstance(reason, ConnectionClosed) and "stream flood" in str(reason)
    assert isinstance(await server.next_error(), StreamLimitExceeded)
    await conn.close()
    await assert_serves(server)


async def test_vanished_peer_noticed_by_keepalive(server: Server) -> None:
    dev, cert = identity()
    conn = await connect(("127.0.0.1", server.port), device_key=dev, certificate=cert,
                         transport=server.transport, config=FAST)  # type: ignore[arg-type]
    carrier = conn._link.carrier
    # The client's process freezes / its network vanishes: nothing in, nothing out.
    if server.transport == "tcp":
        tr = carrier.transport  # type: ignore[attr-defined]
        tr.pause_reading()
        carrier.write_frames = lambda route, frames: None  # type: ignore[method-assign]
    else:
        assert isinstance(carrier, QuicConnectionProtocol)
        carrier.transmit = lambda: None  # type: ignore[method-assign]
        carrier.datagram_received = lambda data, addr: None  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    err = await server.next_error()
    assert isinstance(err, PeerTimeout), err
    assert loop.time() - t0 < FAST.keepalive.timeout * 3
    # our side notices too, since the server stopped answering
    assert isinstance(await conn.wait_closed(), PeerTimeout)
    if server.transport == "quic":  # network back: let aioquic run its closing period
        del carrier.transmit  # type: ignore[attr-defined]
        del carrier.datagram_received  # type: ignore[attr-defined]
    await conn.close()
    await assert_serves(server)


# --- QUIC channel binding --------------------------------------------------------------------
class _Relay(QuicConnectionProtocol):
    """A man-in-the-middle QUIC endpoint that forwards stream bytes to a partner connection."""

    partner: _Relay | None = None
    pending: list[tuple[int, bytes]]

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived) and event.data:
            if self.partner is None:
                self.pending.append((event.stream_id, event.data))
            else:
                self.partner.forward(event.stream_id, event.data)

    def forward(self, sid: int, data: bytes) -> None:
        self._quic.send_stream_data(sid, data)
        self.transmit()


@pytest.mark.parametrize("transport", ["quic"])
async def test_handshake_relayed_to_another_quic_connection(server: Server) -> None:
    from aioquic.asyncio.client import connect as quic_connect

    upstream: asyncio.Future[_Relay] = asyncio.get_running_loop().create_future()
    downstreams: list[_Relay] = []

    def make(quic: object, **kw: object) -> _Relay:
        p = _Relay(quic, **kw)  # type: ignore[arg-type]
        p.pending = []
        downstreams.append(p)

        async def attach() -> None:
            up = await upstream
            p.partner, up.partner = up, p
            for sid, data in p.pending:
                up.forward(sid, data)

        asyncio.get_running_loop().create_task(attach())
        return p

    mitm = await serve("127.0.0.1", 0, configuration=quic_configuration(
        is_client=False, max_datagram_size=1452, window=1 << 20, idle_timeout=5),
        create_protocol=make)
    mitm_port = mitm._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    qcfg = quic_configuration(is_client=True, max_datagram_size=1452, window=1 << 20,
                              idle_timeout=5)

    def make_up(quic: object, **kw: object) -> _Relay:
        p = _Relay(quic, **kw)  # type: ignore[arg-type]
        p.pending = []
        return p

    try:
        async with quic_connect("127.0.0.1", server.port, configuration=qcfg,
                                create_protocol=make_up) as up:
            assert isinstance(up, _Relay)
            upstream.set_result(up)
            dev, cert = identity()
            with pytest.raises(HandshakeError, match=r"relayed|authentication"):
                await connect(("127.0.0.1", mitm_port), device_key=dev, certificate=cert,
                              transport="quic", config=FAST)
            for d in downstreams:
                d.close()
    finally:
        mitm.close()
    await assert_serves(server)
