"""aioquic internals p2psync reads, pinned: a layout change in aioquic fails here, loudly.

The QUIC channel binding needs the 1-RTT traffic secrets, which aioquic exposes only through
private attributes; ``transport/quic.py`` reads them in one function (``aioquic_private``).
These tests run a real QUIC handshake in memory (no sockets) and check that both ends derive
the same secrets, so a renamed or restructured attribute cannot silently break authentication.
"""

from __future__ import annotations

import aioquic
import pytest
from aioquic.quic.connection import QuicConnection

from p2psync.errors import AioquicLayoutChanged, HandshakeError
from p2psync.transport.quic import (
    TESTED_AIOQUIC,
    aioquic_private,
    check_aioquic_layout,
    quic_configuration,
    tls_binding,
)

CLIENT_ADDR = ("1.2.3.4", 1234)
SERVER_ADDR = ("2.3.4.5", 4433)


def _pair() -> tuple[QuicConnection, QuicConnection]:
    kw = {"max_datagram_size": 1452, "window": 1 << 20, "idle_timeout": 5.0}
    ccfg = quic_configuration(is_client=True, **kw)
    ccfg.server_name = "p2psync"
    client = QuicConnection(configuration=ccfg)
    scfg = quic_configuration(is_client=False, **kw)
    client.connect(SERVER_ADDR, now=0.0)
    server: QuicConnection | None = None
    for _ in range(10):
        for data, _addr in client.datagrams_to_send(now=0.0):
            if server is None:
                server = QuicConnection(configuration=scfg,
                                        original_destination_connection_id=(
                                            client.original_destination_connection_id))
            server.receive_datagram(data, CLIENT_ADDR, now=0.0)
        if server is not None:
            for data, _addr in server.datagrams_to_send(now=0.0):
                client.receive_datagram(data, SERVER_ADDR, now=0.0)
    assert server is not None
    return client, server


def test_installed_aioquic_is_the_tested_minor() -> None:
    assert aioquic.__version__.startswith(TESTED_AIOQUIC), (
        f"aioquic {aioquic.__version__} is not a version the private layout was checked "
        f"against ({TESTED_AIOQUIC}); re-run tests/test_quic_private.py and update the pin")


def test_static_layout() -> None:
    check_aioquic_layout()


def test_secrets_match_across_a_real_handshake() -> None:
    client, server = _pair()
    cv, sv = aioquic_private(client), aioquic_private(server)
    assert cv.is_client and not sv.is_client
    assert cv.one_rtt_secrets is not None and sv.one_rtt_secrets is not None
    assert cv.one_rtt_secrets == sv.one_rtt_secrets
    client_secret, server_secret = cv.one_rtt_secrets
    assert client_secret != server_secret and len(client_secret) >= 32
    assert tls_binding(client) == tls_binding(server)
    assert cv.peer_address == SERVER_ADDR and sv.peer_address == CLIENT_ADDR


def test_another_connection_has_another_binding() -> None:
    a, _ = _pair()
    b, _ = _pair()
    assert tls_binding(a) != tls_binding(b)


def test_no_secrets_before_the_handshake() -> None:
    cfg = quic_configuration(is_client=True, max_datagram_size=1452, window=1 << 20,
                             idle_timeout=5.0)
    quic = QuicConnection(configuration=cfg)
    assert aioquic_private(quic).one_rtt_secrets is None
    with pytest.raises(HandshakeError):
        tls_binding(quic)


def test_moved_internal_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an aioquic upgrade that renames ``_cryptos`` looks like: a typed, explicit error."""
    client, _ = _pair()
    monkeypatch.delattr(client, "_cryptos")
    with pytest.raises(AioquicLayoutChanged, match=r"aioquic .* changed an internal"):
        aioquic_private(client)


def _pump(client: QuicConnection, server: QuicConnection, now: float) -> int:
    """Exchange datagrams once each way; returns stream bytes delivered to the server (and
    counts them as the carrier does)."""
    from aioquic.quic import events

    from p2psync.transport.quic import BoundedQuicConnection

    for data, _ in client.datagrams_to_send(now=now):
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    delivered = 0
    while (ev := server.next_event()) is not None:
        if isinstance(ev, events.StreamDataReceived):
            delivered += len(ev.data)
    if isinstance(server, BoundedQuicConnection):
        server.p2p_delivered += delivered
    for data, _ in server.datagrams_to_send(now=now):
        client.receive_datagram(data, SERVER_ADDR, now=now)
    return delivered


@pytest.mark.parametrize("bounded", [True])
def test_receive_window_follows_delivery_not_reception(bounded: bool) -> None:
    """aioquic doubles a window when the highest *received* offset passes half of it; bounded,
    a window is always delivered + initial window (so undelivered data stays bounded)."""
    from p2psync.transport.quic import bound_windows

    client, server = _pair()
    if bounded:
        bound_windows(server)
    window = server.configuration.max_stream_data
    sid = client.get_next_available_stream_id()
    total = 6 * window
    client.send_stream_data(sid, b"x" * total)  # stream stays open: its window is checked
    delivered = 0
    now = 0.0
    for _ in range(2000):
        now += 0.001
        delivered += _pump(client, server, now)
        if delivered >= total:
            break
    assert delivered == total
    stream = server._streams.get(sid)
    assert stream is not None
    limit = stream.max_stream_data_local
    assert limit - delivered <= window, f"window grew to {limit} after {delivered} delivered"
    assert server._local_max_data.value - delivered <= server.configuration.max_data


async def test_server_and_window_internals_are_where_we_read_them() -> None:
    """GuardedQuicServer and BoundedQuicConnection read these aioquic internals."""
    from aioquic.asyncio.server import QuicServer

    from p2psync.transport.quic import BoundedQuicConnection

    cfg = quic_configuration(is_client=False, max_datagram_size=1452, window=1 << 20,
                             idle_timeout=5.0)
    server = QuicServer(configuration=cfg, retry=True)
    for name in ("_protocols", "_retry", "_transport", "_configuration"):
        assert hasattr(server, name), f"aioquic QuicServer lost {name}"
    client, srv = _pair()
    for name in ("_local_max_data", "_streams", "_configuration"):
        assert hasattr(srv, name), f"aioquic QuicConnection lost {name}"
    assert {"used", "value", "sent"} <= set(vars(srv._local_max_data))
    for meth in ("_write_connection_limits", "_write_stream_limits"):
        assert getattr(BoundedQuicConnection, meth) is not getattr(QuicConnection, meth)
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"x")
    _pump(client, srv, 0.1)
    receiver = srv._streams[sid].receiver
    assert isinstance(receiver.highest_offset, int) and receiver.starting_offset() == 1
    assert hasattr(receiver, "_buffer")
