"""Floods before any handshake (issue 12.4), over real loopback sockets.

Listeners are built with the guarded entry points (``tcp.serve_tcp``, ``quic.serve_quic``)
that ``transport.api.listen`` is to call. Each test fails with its mechanism switched off:
Retry off keeps state per spoofable Initial; caps off keep every idle socket; the plain
asyncio accept loop leaves an honest peer out while descriptors are exhausted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aioquic.quic.connection import QuicConnection

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import TransportError
from p2psync.transport import Connection, Keepalive, TransportConfig, connect
from p2psync.transport.connection import AdmissionGuard, Link
from p2psync.transport.quic import (
    GuardedQuicServer,
    QuicCarrier,
    aioquic_server_socket,
    quic_configuration,
    serve_quic,
    tls_binding,
)
from p2psync.transport.tcp import TCP_BINDING, TcpCarrier, TcpListener, serve_tcp

CFG = TransportConfig(keepalive=Keepalive(interval=1.0, timeout=5.0), handshake_timeout=30.0,
                      nofile_limit=0)


def identity() -> tuple[DeviceKey, DeviceCertificate]:
    dev = DeviceKey.generate()
    return dev, DeviceCertificate.issue(AccountKey.generate(), dev)


@dataclass
class Guarded:
    transport: str
    port: int
    guard: AdmissionGuard
    server: Any
    conns: list[Connection] = field(default_factory=list)
    errors: list[TransportError] = field(default_factory=list)


@contextlib.asynccontextmanager
async def guarded(transport: str, cfg: TransportConfig = CFG) -> AsyncIterator[Guarded]:
    dev, cert = identity()
    box: list[Guarded] = []

    def make_link(carrier: Any, binding: bytes, per_stream: bool) -> Link:
        g = box[0]
        return Link(carrier, initiator=False, device_key=dev, certificate=cert, config=cfg,
                    binding=binding, per_stream_keys=per_stream, on_ready=g.conns.append,
                    on_failed=g.errors.append)

    if transport == "tcp":
        tcp = await serve_tcp("127.0.0.1", 0, lambda: TcpCarrier(
            lambda c: make_link(c, TCP_BINDING, False)), cfg)
        box.append(Guarded("tcp", tcp.sock.getsockname()[1], tcp.guard, tcp))
    else:
        qcfg = quic_configuration(is_client=False, max_datagram_size=1452, window=1 << 20,
                                  idle_timeout=10.0)
        quic = await serve_quic("127.0.0.1", 0, configuration=qcfg, config=cfg,
                                create_protocol=lambda q, **kw: QuicCarrier(
                                    q, make_link=lambda c: make_link(
                                        c, tls_binding(c.quic), True), **kw))
        sock = aioquic_server_socket(quic)
        assert sock is not None
        box.append(Guarded("quic", sock.getsockname()[1], quic.guard, quic))
    g = box[0]
    try:
        yield g
    finally:
        for c in g.conns:
            await c.close()
        g.server.close()
        if isinstance(g.server, TcpListener):
            await g.server.wait_closed()


async def dial(g: Guarded) -> Connection:
    dev, cert = identity()
    async with asyncio.timeout(2):  # "an honest peer still connects within 2 s"
        return await connect(("127.0.0.1", g.port), device_key=dev, certificate=cert,
                             transport=g.transport, config=CFG)  # type: ignore[arg-type]


def idle_sockets(port: int, n: int, source: str = "127.0.0.2") -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def closed_by_peer(s: socket.socket) -> bool:
    s.settimeout(2)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True  # aborted: closed too
    except TimeoutError:
        return False


# --- QUIC Retry ------------------------------------------------------------------------------
def spoofed_initials(n: int) -> list[bytes]:
    """First datagrams of ``n`` fresh QUIC clients (what an Initial flood sends)."""
    out = []
    for _ in range(n):
        cfg = quic_configuration(is_client=True, max_datagram_size=1452, window=1 << 20,
                                 idle_timeout=5.0)
        cfg.server_name = "p2psync"
        q = QuicConnection(configuration=cfg)
        q.connect(("127.0.0.1", 9), now=0.0)
        out.append(q.datagrams_to_send(now=0.0)[0][0])
    return out


@pytest.mark.parametrize("retry", [True])
async def test_quic_retry_keeps_no_state_for_initials(retry: bool) -> None:
    async with guarded("quic", replace(CFG, quic_retry=retry)) as g:
        server = g.server
        assert isinstance(server, GuardedQuicServer)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.2", 0))
        for pkt in spoofed_initials(100):
            udp.sendto(pkt, ("127.0.0.1", g.port))
        udp.close()
        conn = await dial(g)  # with Retry: one more round trip, still well within 2 s
        assert g.guard.admitted == 1, "state was created for unvalidated Initials"
        await conn.close()


# --- caps ------------------------------------------------------------------------------------
async def test_half_open_cap_per_source() -> None:
    cfg = replace(CFG, max_half_open_per_source=5)
    async with guarded("tcp", cfg) as g:
        socks = idle_sockets(g.port, 20)
        conn = await dial(g)  # another source (127.0.0.1): not affected
        assert all(closed_by_peer(s) for s in socks[5:])  # refused at once
        assert g.guard.half_by_source["127.0.0.2"] == 5
        for s in socks:
            s.close()
        await conn.close()


async def test_half_open_total_cap_drops_the_oldest() -> None:
    cfg = replace(CFG, max_half_open=8)
    async with guarded("tcp", cfg) as g:
        socks = idle_sockets(g.port, 30)
        conn = await dial(g)
        assert closed_by_peer(socks[0])  # the oldest made room
        assert len(g.guard.half_open) <= 8 and g.guard.evicted >= 22
        for s in socks:
            s.close()
        await conn.close()


@pytest.mark.parametrize("transport", ["tcp", "quic"])
async def test_established_cap_per_source(transport: str) -> None:
    cfg = replace(CFG, max_connections_per_source=2)
    async with guarded(transport, cfg) as g:
        a, b = await dial(g), await dial(g)
        with pytest.raises(TransportError, match="too many connections"):
            await dial(g)
        assert g.guard.established == 2
        await a.close()
        await b.close()


# --- EMFILE ----------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import asyncio, resource, sys
    from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
    from p2psync.transport import Keepalive, TransportConfig
    from p2psync.transport.connection import Link
    from p2psync.transport.tcp import TCP_BINDING, TcpCarrier, serve_tcp

    async def main():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        cfg = TransportConfig(handshake_timeout=30.0, nofile_limit=0,
                              max_half_open_per_source=10_000, max_half_open=10_000,
                              keepalive=Keepalive(interval=1.0, timeout=5.0))
        dev = DeviceKey.generate()
        cert = DeviceCertificate.issue(AccountKey.generate(), dev)
        make = lambda c: Link(c, initiator=False, device_key=dev, certificate=cert,
                              config=cfg, binding=TCP_BINDING)
        if sys.argv[1] == "guarded":
            lst = await serve_tcp("127.0.0.1", 0, lambda: TcpCarrier(make), cfg)
            port = lst.sock.getsockname()[1]
        else:  # asyncio's own accept loop: the switch-off
            srv = await asyncio.get_running_loop().create_server(
                lambda: TcpCarrier(make), "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
""")


@pytest.mark.parametrize("mode", ["guarded"])
async def test_accept_survives_emfile(mode: str) -> None:
    """Descriptors exhausted by idle sockets: the guarded loop drops the oldest half-open
    connections and the honest peer gets in within 2 s."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, mode, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env)
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 20))
        socks = idle_sockets(port, 150)
        g = Guarded("tcp", port, AdmissionGuard(CFG), None)
        conn = await dial(g)
        await conn.close()
        for s in socks:
            s.close()
    finally:
        proc.kill()
        _, err = await proc.communicate()
    log = err.decode()
    assert log.count("dropping the oldest half-open") == 1, log[-2000:]


async def test_guarded_tcp_listener_serves_both_families() -> None:
    """host "" binds IPv4 and IPv6 like asyncio.create_server (the guarded loop replaces it)."""
    dev, cert = identity()
    conns: list[Connection] = []

    def make_link(carrier: Any) -> Link:
        return Link(carrier, initiator=False, device_key=dev, certificate=cert, config=CFG,
                    binding=TCP_BINDING, on_ready=conns.append)

    lst = await serve_tcp("", 0, lambda: TcpCarrier(make_link), CFG)
    try:
        assert {s.family for s in lst.sockets} == {socket.AF_INET, socket.AF_INET6}
        port = lst.sock.getsockname()[1]
        for host in ("127.0.0.1", "::1"):
            g = Guarded("tcp", port, lst.guard, lst)
            d, c = identity()
            async with asyncio.timeout(2):
                conn = await connect((host, g.port), device_key=d, certificate=c,
                                     transport="tcp", config=CFG)
            await conn.close()
        assert lst.guard.admitted == 2
    finally:
        for c in conns:
            await c.close()
        lst.close()
        await lst.wait_closed()
