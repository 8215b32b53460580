"""The WebSocket carrier (issue 15.3/15.4): sync between Python nodes over ``ws``, hostile input
over WebSocket (oversize messages and frames, text and garbage, stream floods, idle sockets),
the Origin allow-list and the ``/app/`` static files. Real loopback sockets throughout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from p2psync.errors import ConnectionClosed, FrameError, HandshakeError, StreamLimitExceeded
from p2psync.replica.document import ROOT
from p2psync.transport import Server, TransportConfig, connect, listen
from p2psync.transport import websocket as wsmod
from p2psync.transport.framing import HEADER
from tests.sync_helpers import (
    close_all,
    converged,
    documents_json,
    fast_config,
    make_node,
    wait_any,
)
from tests.test_hostile_transport import closed_by_peer, idle_sockets
from tests.test_transport import FAST, assert_serves, echo, identity


async def serve(config: TransportConfig = FAST) -> Server:
    dev, cert = identity()
    return await listen("127.0.0.1", 0, device_key=dev, certificate=cert, on_connection=echo,
                        transport="ws", config=config)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = await serve()
    yield srv
    await srv.close()


def url(srv: Server, path: str = wsmod.WS_PATH) -> str:
    return f"http://127.0.0.1:{srv.port}{path}"


async def raw_ws(srv: Server, **kw: str) -> tuple[aiohttp.ClientSession,
                                                  aiohttp.ClientWebSocketResponse]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(url(srv), max_msg_size=0, **kw)  # type: ignore[arg-type]
    return session, ws


async def closed_by_server(ws: aiohttp.ClientWebSocketResponse) -> bool:
    async with asyncio.timeout(5):
        msg = await ws.receive()
    return msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING)


# --- sync between Python nodes ------------------------------------------------------------------
async def test_nodes_join_by_invite_and_converge_over_websocket(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a", config=fast_config("ws"))
    b = await make_node(tmp_path, "b", config=fast_config("ws"))
    try:
        space = a.create_space()
        code = a.invite(space.id)
        assert code.addresses[0].startswith("ws:")
        await b.join(code.encode())
        await wait_any([a, b], lambda: converged([a, b], space.id))
        assert {e.conn.transport for e in a.engines} == {"ws"}
        # concurrent edits on both sides, live over the same WebSocket
        da, db = space.new_document(), b.spaces[space.id].new_document()
        for i in range(5):
            with da.edit() as e:
                e.put(ROOT, f"a{i}", i)
            with db.edit() as e:
                e.put(ROOT, f"b{i}", i)
        await wait_any([a, b], lambda: converged([a, b], space.id)
                       and len(documents_json(a, space.id)) == 2)
        assert documents_json(a, space.id) == documents_json(b, space.id)
        assert documents_json(b, space.id)[da.tree.id] == {f"a{i}": i for i in range(5)}
    finally:
        await close_all([a, b])


# --- hostile input over WebSocket ----------------------------------------------------------------
async def test_oversize_websocket_message_closes_the_connection(server: Server) -> None:
    session, ws = await raw_ws(server)
    try:
        await ws.send_bytes(b"\0" * (wsmod.MAX_WS_MESSAGE + 1))
        assert await closed_by_server(ws)
        err = await server.next_error()
        assert isinstance(err, FrameError) and "WebSocket" in str(err), err  # refused by size
    finally:
        await session.close()
    await assert_serves(server)


@pytest.mark.parametrize("junk", [HEADER.pack(70000), HEADER.pack(0), b"\0\0\0\x10" + b"x" * 16,
                                  "GET / HTTP/1.1"])
async def test_garbage_over_websocket_ends_only_that_connection(
        server: Server, junk: bytes | str) -> None:
    session, ws = await raw_ws(server)
    try:
        if isinstance(junk, str):
            await ws.send_str(junk)  # text messages are not part of the protocol
        else:
            await ws.send_bytes(junk)
        assert await closed_by_server(ws)
        err = await server.next_error()
        assert isinstance(err, (FrameError, HandshakeError)), err
    finally:
        await session.close()
    await assert_serves(server)


async def test_stream_flood_over_websocket(server: Server) -> None:
    dev, cert = identity()
    conn = await connect(("127.0.0.1", server.port), device_key=dev, certificate=cert,
                         transport="ws", config=FAST)
    assert conn._link.session is not None
    conn._link.session._may_open = 10_000  # ignore the limit the server announced
    for _ in range(40):
        st = await conn.open_stream()
        try:
            await st.send(b"open")
        except Exception:
            break
    reason = await conn.wait_closed()
    assert isinstance(reason, ConnectionClosed) and "stream flood" in str(reason)
    assert isinstance(await server.next_error(), StreamLimitExceeded)
    await assert_serves(server)


async def test_idle_sockets_over_the_per_source_cap_are_refused() -> None:
    srv = await serve(replace(FAST, max_half_open_per_source=4, nofile_limit=0,
                              handshake_timeout=30.0))
    socks = idle_sockets(srv.port, 6)  # from 127.0.0.2, never sending a request
    try:
        assert await asyncio.to_thread(closed_by_peer, socks[-1])  # at once, not after 30 s
        await assert_serves(srv)  # another source: unaffected
    finally:
        for s in socks:
            s.close()
        await srv.close()


async def test_idle_socket_is_dropped_after_the_handshake_timeout() -> None:
    srv = await serve(replace(FAST, nofile_limit=0, handshake_timeout=0.5))
    (sock,) = idle_sockets(srv.port, 1)
    try:
        assert await asyncio.to_thread(closed_by_peer, sock)  # (waits 2 s at most)
        assert srv.guard is not None and not srv.guard.half_open
    finally:
        sock.close()
        await srv.close()


# --- Origin -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("origins", "origin", "allowed"), [
    ((), None, True),  # not a browser
    ((), "http://evil.example", False),
    ((), "SAME", True),  # the app served at /app/ by this listener
    (("https://app.example",), "https://app.example", True),
    (("https://app.example",), "https://app.example.evil", False),
    (("*",), "http://anything.example", True),
])
async def test_origin_allow_list(origins: tuple[str, ...], origin: str | None,
                                 allowed: bool) -> None:
    srv = await serve(replace(FAST, ws_origins=origins))
    try:
        if origin == "SAME":
            origin = f"http://127.0.0.1:{srv.port}"
        async with aiohttp.ClientSession() as session:
            try:
                ws = await session.ws_connect(url(srv), origin=origin)  # type: ignore[arg-type]
            except aiohttp.WSServerHandshakeError as exc:
                assert not allowed and exc.status == 403
            else:
                assert allowed
                await ws.close()
    finally:
        await srv.close()


# --- static files ---------------------------------------------------------------------------------
@pytest.fixture
async def app_server(tmp_path: Path) -> AsyncIterator[tuple[Server, Path]]:
    root = tmp_path / "app"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>p2psync</title>")
    (root / "js" / "main.js").write_text("export const x = 1;\n")
    (root / "sync.wasm").write_bytes(b"\0asm\1\0\0\0")
    (root / ".env").write_text("SECRET=1")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    srv = await serve(replace(FAST, ws_static_dir=str(root)))
    yield srv, root
    await srv.close()


async def test_static_files_with_types_and_cache_headers(
        app_server: tuple[Server, Path]) -> None:
    srv, _ = app_server
    async with aiohttp.ClientSession() as session:
        async with session.get(url(srv, "/app/")) as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert r.headers["Cache-Control"] == "no-cache" and "ETag" in r.headers
            assert "p2psync" in await r.text()
        async with session.get(url(srv, "/app/js/main.js")) as r:
            assert r.status == 200 and r.content_type == "text/javascript"
            assert r.headers["Cache-Control"] == "public, max-age=3600"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with session.get(url(srv, "/app/sync.wasm")) as r:
            assert r.status == 200 and r.content_type == "application/wasm"
        async with session.get(url(srv, "/app"), allow_redirects=False) as r:
            assert r.status == 301 and r.headers["Location"] == "/app/"
        async with session.head(url(srv, "/app/index.html")) as r:
            assert r.status == 200
        async with session.post(url(srv, "/app/index.html")) as r:
            assert r.status == 405


@pytest.mark.parametrize("path", ["/", "/index.html", "/app/.env", "/app/link.txt",
                                  "/app/../secret.txt", "/app/%2e%2e/secret.txt",
                                  "/app/missing.js", "/status", "/p2psync/x"])
async def test_nothing_else_is_exposed(app_server: tuple[Server, Path], path: str) -> None:
    srv, _ = app_server
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head = (await reader.readline()).decode()
    writer.close()
    assert head.split()[1] == "404", (path, head)


async def test_no_static_dir_serves_no_files(server: Server) -> None:
    async with aiohttp.ClientSession() as session, session.get(url(server, "/app/")) as r:
        assert r.status == 404


async def test_wss_dials_through_tls() -> None:
    dev, cert = identity()
    srv = await listen("127.0.0.1", 0, device_key=dev, certificate=cert, on_connection=echo,
                       transport="wss", config=FAST)
    try:
        d, c = identity()
        conn = await connect(("127.0.0.1", srv.port), device_key=d, certificate=c,
                             transport="wss", expected_peer=dev.id, config=FAST)
        st = await conn.open_stream()
        await st.send(b"over tls")
        assert await st.recv() == b"slt revo"  # echo reverses
        await conn.close()
        # a plain-HTTP client gets nothing from the TLS port
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /p2psync HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert not (await reader.read()).startswith(b"HTTP/1.1")
        writer.close()
    finally:
        await srv.close()
