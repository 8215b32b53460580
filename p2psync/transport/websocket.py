"""WebSocket carrier (aiohttp): the TCP byte stream, carried in binary WebSocket messages.

**Wire.** One binary WebSocket message = a chunk of the same byte stream TCP carries:
length-prefixed frames (``u32 length | body``), the Noise XX handshake with the TCP prologue
binding ``b"tcp"``, then encrypted records. Message boundaries mean nothing; a frame may span
messages and a message may hold several frames. So a WebSocket-to-TCP bridge (websockify)
in front of a TCP listener speaks exactly this carrier, and a browser or Node peer reuses the
TCP framing code unchanged. Text messages, and messages over :data:`MAX_WS_MESSAGE` bytes,
end the connection; per-message compression is off (the payload is ciphertext, and
decompression is a memory risk). WebSocket close frames carry no reason: the reason already
went, encrypted, in the CLOSE record.

**Endpoint.** ``GET /p2psync`` upgrades to a WebSocket (:data:`WS_PATH`); ``/app/…`` serves the
files of ``TransportConfig.ws_static_dir`` (if set) with content types and cache headers;
everything else is 404. ``Origin``, when sent (browsers always do), must be the listener's own
origin (``Origin``'s host equals ``Host``: the web app served from ``/app/``) or in
``TransportConfig.ws_origins`` (``"*"``: any).

**Hardening.** The listener is the guarded TCP accept loop (:func:`~p2psync.transport.tcp.
serve_tcp`): half-open caps per source and in total, oldest dropped, EMFILE-proof accept,
established caps when the Noise handshake completes. A connection that sends no request within
``handshake_timeout`` is dropped; HTTP keep-alive is that long too; headers are capped. Above
the WebSocket, the shared :class:`~p2psync.transport.connection.Link` applies the same frame
size, stream caps, credit, receive budgets and keepalive as every carrier.

**wss.** ``wss`` listens with TLS on an ephemeral self-signed certificate, and the ``wss``
dialler does not verify certificates: as on QUIC, TLS here is only what lets the bytes pass
proxies and browsers; identity and confidentiality are the Noise session's (dial with
``expected_peer``). Behind a TLS reverse proxy (docs/backup.md), the agent listens on ``ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import ssl
import tempfile
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.web_protocol import RequestHandler
from cryptography.hazmat.primitives import serialization

from p2psync.errors import ConnectionClosed, FrameError, TransportError
from p2psync.hostport import host_port
from p2psync.transport.connection import Carrier, Link, Ticket, TransportConfig
from p2psync.transport.framing import FrameDecoder
from p2psync.transport.interface import CarrierDriver, MakeLink
from p2psync.transport.registry import register_carrier
from p2psync.transport.tcp import TCP_BINDING, TcpListener, serve_tcp

log = logging.getLogger("p2psync.transport")

#: The WebSocket endpoint of a listener.
WS_PATH = "/p2psync"
#: Where ``TransportConfig.ws_static_dir`` is served.
APP_PREFIX = "/app/"
#: Largest WebSocket message accepted; a bigger one closes the connection (1009). aiohttp
#: buffers a whole message before delivering it, so this bounds memory per connection.
MAX_WS_MESSAGE = 256 << 10
#: Frames of one write are joined into messages of about this size (at most this + a frame).
CHUNK = 64 << 10
#: ``drain()`` waits while more than this is queued for sending.
HIGH_WATER = 1 << 20
#: How long a closing side waits for the peer's WebSocket close frame.
CLOSE_TIMEOUT = 2.0

#: Types the web app needs that platform MIME tables get wrong or lack (Python 3.11 says
#: application/javascript; RFC 9239 made text/javascript the one to use).
CONTENT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
                 ".html": "text/html; charset=utf-8", ".wasm": "application/wasm",
                 ".json": "application/json", ".webmanifest": "application/manifest+json",
                 ".svg": "image/svg+xml", ".map": "application/json"}

_WsLike = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


class WsCarrier(Carrier):
    """One WebSocket (either end) feeding a :class:`Link`, like the TCP carrier does."""

    transport_name = "ws"

    def __init__(self, ws: _WsLike, *, peer: Any,
                 session: aiohttp.ClientSession | None = None,
                 transport: asyncio.Transport | None = None) -> None:
        self.ws = ws
        self._transport = transport  #: listener side: the TCP transport, to abort
        self.link: Link | None = None
        self.decoder = FrameDecoder()
        self._peer = peer
        self._session = session
        loop = asyncio.get_running_loop()
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._drained: asyncio.Future[None] | None = None
        self._closing = False
        self._closed: asyncio.Future[None] = loop.create_future()
        self._writer = loop.create_task(self._write_loop())
        self._reader: asyncio.Task[None] | None = None

    # --- receiving ------------------------------------------------------------------------
    def start_reading(self) -> None:
        """Dialler side: read in a task (the listener side runs :meth:`read_loop` in its
        request handler)."""
        self._reader = asyncio.get_running_loop().create_task(self.read_loop())

    async def read_loop(self) -> None:
        """Feed binary messages to the Link until the WebSocket ends."""
        exc: TransportError = ConnectionClosed("peer closed the WebSocket")
        try:
            async for msg in self.ws:
                link = self.link
                if link is None or link.error is not None:
                    break
                if msg.type == WSMsgType.BINARY:
                    try:
                        bodies = self.decoder.feed(msg.data)
                    except FrameError as e:
                        link.fail(e)
                        break
                    if bodies:
                        link.on_frames(0, bodies)
                    # aiohttp hands over queued messages without yielding: give the
                    # application a turn per message, as it gets one per TCP read
                    await asyncio.sleep(0)
                elif msg.type == WSMsgType.ERROR:  # e.g. a message over MAX_WS_MESSAGE
                    exc = FrameError(f"WebSocket error: {msg.data}")
                    break
                else:  # text: not part of the protocol
                    exc = FrameError("text WebSocket message (only binary is allowed)")
                    break
            else:
                try:
                    self.decoder.eof()
                except FrameError as e:
                    exc = e
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
            exc = ConnectionClosed(f"WebSocket lost: {e}")
        finally:
            if self.link is not None:
                self.link.on_transport_lost(exc)
            self.teardown(0, "")
            await self._finish()

    # --- sending --------------------------------------------------------------------------
    def write_frames(self, route: int, frames: list[bytes]) -> None:
        if self._closing:
            return
        # One message per call (cut at CHUNK): a burst of small sends stays a burst of
        # messages, which the receiver takes one loop turn each, as TCP reads come.
        part: list[bytes] = []
        size = 0
        for f in frames:
            part.append(f)
            size += len(f)
            if size >= CHUNK:
                self._queue(part, size)
                part, size = [], 0
        if part:
            self._queue(part, size)
        self._wake.set()

    def _queue(self, part: list[bytes], size: int) -> None:
        self._out.append(part[0] if len(part) == 1 else b"".join(part))
        self._out_bytes += size

    async def _write_loop(self) -> None:
        ws = self.ws
        try:
            while True:
                if not self._out:
                    if self._closing:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                msg = self._out.popleft()
                self._out_bytes -= len(msg)
                if self._drained is not None and self._out_bytes <= HIGH_WATER // 2 \
                        and not self._drained.done():
                    self._drained.set_result(None)
                await ws.send_bytes(msg)
            await ws.close()  # after everything queued (the CLOSE record) went out
        except (aiohttp.ClientError, ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self._out.clear()
            self._out_bytes = 0
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)

    async def drain(self) -> None:
        while self._out_bytes > HIGH_WATER and not self._closing:
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    # --- ending ---------------------------------------------------------------------------
    def teardown(self, code: int, reason: str) -> None:
        """Send what is queued (the CLOSE record), then a bare WebSocket close."""
        if not self._closing:
            self._closing = True
            self._wake.set()

    async def _finish(self) -> None:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_TIMEOUT)
        self._writer.cancel()
        if self._session is not None:
            await self._session.close()
        self.release_admission()
        if not self._closed.done():
            self._closed.set_result(None)

    def abort(self) -> None:
        """Drop the socket now (listener closing, eviction)."""
        self._closing = True
        self._writer.cancel()
        if self._transport is not None:
            self._transport.abort()

    def pending_bytes(self) -> int:
        return self.decoder.pending

    def remote_address(self) -> Any:
        return self._peer

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


# --- listening -------------------------------------------------------------------------------
class _Http(web.Server):
    """aiohttp's low-level HTTP server plus the admission ticket of each TCP connection."""

    def __init__(self, handler: Any, *, tls: ssl.SSLContext | None, **kw: Any) -> None:
        super().__init__(handler, **kw)
        self.tls = tls
        self.tickets: dict[RequestHandler, Ticket] = {}
        self.active: set[RequestHandler] = set()  #: connections that sent a request
        self.release: Any = None

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.active.discard(handler)
        ticket = self.tickets.pop(handler, None)
        if ticket is not None and self.release is not None:
            self.release(ticket)


class WsListener(TcpListener):
    """The guarded accept loop feeding aiohttp: a TCP connection is half-open until its
    WebSocket's Noise handshake completes; one that sends no request in time is dropped."""

    def _attach(self, proto: Any, ticket: Ticket) -> None:
        http = self._factory
        assert isinstance(http, _Http)
        http.tickets[proto] = ticket
        http.release = self.guard.release
        self._loop.call_later(self.guard.config.handshake_timeout, self._idle, proto, ticket)

    def _idle(self, proto: RequestHandler, ticket: Ticket) -> None:
        http = self._factory
        assert isinstance(http, _Http)
        if proto in http.active or ticket.released:
            return
        self.guard.release(ticket)
        if proto.transport is not None:
            proto.transport.abort()

    async def _start(self, conn: Any, proto: asyncio.Protocol, ticket: Ticket) -> None:
        http = self._factory
        assert isinstance(http, _Http)
        try:
            if http.tls is None:
                await self._loop.connect_accepted_socket(lambda: proto, sock=conn)
            else:
                await self._loop.connect_accepted_socket(
                    lambda: proto, sock=conn, ssl=http.tls,
                    ssl_handshake_timeout=self.guard.config.handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError):
            self.guard.release(ticket)
            conn.close()


class _Site:
    """Routes one listener's requests: the WebSocket endpoint, static files, 404."""

    def __init__(self, make_link: MakeLink, config: TransportConfig, bound: _WsBound,
                 name: str) -> None:
        self.make_link = make_link
        self.config = config
        self.bound = bound
        self.name = name
        root = config.ws_static_dir
        self.root = Path(root).resolve() if root else None
        self.http: _Http | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self.http is not None
        self.http.active.add(request.protocol)
        path = request.path
        if path == WS_PATH:
            return await self._websocket(request)
        if self.root is not None and (path == APP_PREFIX[:-1] or path.startswith(APP_PREFIX)):
            return self._static(request)
        return _plain(404, "not found")

    def origin_allowed(self, origin: str, host: str) -> bool:
        allowed = self.config.ws_origins
        if "*" in allowed or origin in allowed:
            return True
        return urlsplit(origin).netloc.lower() == host.lower()  # the app served at /app/

    async def _websocket(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self.http is not None
        if request.method != "GET":
            return _plain(405, "method not allowed", Allow="GET")
        origin = request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(origin, request.host):
            return _plain(403, "origin not allowed")
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_WS_MESSAGE,
                                   autoping=True, timeout=CLOSE_TIMEOUT)
        if not ws.can_prepare(request).ok:
            return _plain(426, "WebSocket upgrade expected", Upgrade="websocket")
        await ws.prepare(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        carrier = WsCarrier(ws, peer=peer, transport=request.transport)
        ticket = self.http.tickets.get(request.protocol)
        if ticket is not None:
            carrier.guard, carrier.ticket = self.bound.guard, ticket
        self.bound.carriers.add(carrier)
        try:
            carrier.link = self.make_link(carrier, TCP_BINDING, False)
            await carrier.read_loop()
        finally:
            self.bound.carriers.discard(carrier)
        return ws

    def _static(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self.root is not None
        if request.method not in ("GET", "HEAD"):
            return _plain(405, "method not allowed", Allow="GET, HEAD")
        if request.path == APP_PREFIX[:-1]:
            raise web.HTTPMovedPermanently(APP_PREFIX)
        rel = request.path[len(APP_PREFIX):]
        if not rel or rel.endswith("/"):
            rel += "index.html"
        parts = rel.split("/")
        if any(p.startswith(".") or p == "" for p in parts):  # dotfiles, "..", "//"
            return _plain(404, "not found")
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return _plain(404, "not found")  # symlinks out of the directory too
        # HTML revalidates each time (ETag/Last-Modified from FileResponse); assets an hour
        cache = "no-cache" if target.suffix in (".html", ".htm") else "public, max-age=3600"
        ctype = CONTENT_TYPES.get(target.suffix.lower()) \
            or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return web.FileResponse(target, headers={
            "Content-Type": ctype, "Cache-Control": cache, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"})


def _plain(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text + "\n",
                        headers={"X-Content-Type-Options": "nosniff", **headers})


class _WsBound:
    def __init__(self) -> None:
        self.listener: TcpListener | None = None
        self.http: _Http | None = None
        self.guard: Any = None
        self.port = 0
        self.carriers: set[WsCarrier] = set()

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        for c in list(self.carriers):
            c.abort()
        if self.http is not None:
            await self.http.shutdown(1.0)
        if self.listener is not None:
            await self.listener.wait_closed()


def _self_signed_context() -> ssl.SSLContext:
    """A server TLS context on a throwaway self-signed certificate (see module doc: wss)."""
    from p2psync.transport.quic import ephemeral_certificate

    cert, key = ephemeral_certificate()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    return ctx


class WsDriver:
    """``ws`` (plain) and ``wss`` (TLS) WebSocket carriers; see the module docstring."""

    def __init__(self, name: str = "ws") -> None:
        self.name = name
        self.tls = name == "wss"

    async def dial(self, host: str, port: int, make_link: MakeLink,
                   config: TransportConfig) -> WsCarrier:
        url = f"{'wss' if self.tls else 'ws'}://{host_port(host, port)}{WS_PATH}"
        session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(config.handshake_timeout):
                ws = await session.ws_connect(
                    url, compress=0, max_msg_size=MAX_WS_MESSAGE, autoping=True,
                    ssl=not self.tls,  # wss: no verification, identity is Noise's
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            await session.close()
            raise TransportError(f"cannot reach {url}: {exc or 'timed out'}") from exc
        except BaseException:
            await session.close()
            raise
        conn = ws.get_extra_info("peername")
        carrier = WsCarrier(ws, peer=conn, session=session)
        carrier.transport_name = self.name
        carrier.link = make_link(carrier, TCP_BINDING, False)
        carrier.link.start()
        carrier.start_reading()
        return carrier

    async def listen(self, host: str, port: int, make_link: MakeLink,
                     config: TransportConfig) -> _WsBound:
        bound = _WsBound()
        site = _Site(make_link, config, bound, self.name)
        http = _Http(site.handle, tls=_self_signed_context() if self.tls else None,
                     keepalive_timeout=config.handshake_timeout, max_line_size=4096,
                     max_field_size=4096, max_headers=32, access_log=None)
        site.http = bound.http = http
        listener = await serve_tcp(host, port, http, config, listener=WsListener)
        bound.listener, bound.guard = listener, listener.guard
        bound.port = listener.sock.getsockname()[1]
        return bound


def _conforms(d: WsDriver) -> CarrierDriver:
    """Static check (mypy): the driver satisfies the carrier seam."""
    return d


for _name in ("ws", "wss"):
    with contextlib.suppress(ValueError):  # already registered (module reloaded)
        register_carrier(_name, WsDriver(_name))
