"""The HTTP server (aiohttp): the local API as REST, the change stream, OpenAPI, page, metrics.

A thin shell over sans-IO pieces: the routes come from :mod:`p2psync.http.routes` (generated
from the ops table), each op runs through :func:`p2psync.api.handle_request` (the very path of
the Unix socket: same validation, same typed errors, same logging of bugs), the checks of who
may call are :mod:`p2psync.http.auth`. The server adds HTTP framing only: a status code per
error type, a JSON body for every error (aiohttp's own 404/405/413 included), and
``GET /api/v1/events`` as Server-Sent Events over an agent subscription.

:class:`HttpServer` is started by ``p2psync run`` when ``[http] enabled = true`` (see
:func:`p2psync.agent.run.serve_until_signalled`) and writes its URL to ``<home>/http-url`` so
the CLI can print it; the key is in ``<home>/http-api-key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from p2psync import __version__
from p2psync.agent.core import Agent, Subscription
from p2psync.api import ApiError, SubscribeParams, handle_request
from p2psync.config import HttpConfig
from p2psync.errors import InvalidParams, InvalidRequest, P2PSyncError
from p2psync.hostport import host_port
from p2psync.http import auth, openapi
from p2psync.http.info import url_path
from p2psync.http.metrics import CONTENT_TYPE, Metrics
from p2psync.http.page import PAGE
from p2psync.http.routes import (
    EVENTS_PATH,
    OPENAPI_PATH,
    PREFIX,
    Route,
    error_body,
    http_status,
    query_params,
    routes,
)

log = logging.getLogger("p2psync.http")

MAX_BODY = 1 << 20  #: bytes per request body, as per request line on the socket
KEEPALIVE = 15.0  #: seconds between SSE comments on an idle stream (proxies close idle ones)
PUBLIC = frozenset({"/", OPENAPI_PATH})  #: paths served without the key

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status,
                        content_type="application/json")


def error_response(error_type: str, message: str, status: int | None = None) -> web.Response:
    """The JSON answer of a typed error; ``X-P2PSync-Error`` names the type (for the metrics
    and for clients that want it without parsing the body)."""
    resp = _json(error_body(error_type, message), status or http_status(error_type))
    resp.headers["X-P2PSync-Error"] = error_type
    return resp


class HttpServer:
    """Serves one agent's HTTP API on ``config.listen:config.port``."""

    def __init__(self, agent: Agent, config: HttpConfig | None = None) -> None:
        self.agent = agent
        self.config = config or agent.config.http
        self.key = auth.load_or_create_key(agent.home.path)
        self.metrics = Metrics(agent)
        self.routes = routes()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://{host_port(self.config.listen, self.port)}/"

    # --- lifecycle -----------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY,
                              middlewares=[self._errors, self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get(OPENAPI_PATH, self._openapi)
        app.router.add_get(EVENTS_PATH, self._events)
        app.router.add_get("/metrics", self._metrics)
        for r in self.routes:
            handler = self._op_handler(r)
            for method in r.methods:
                app.router.add_route(method, r.path, handler)
        return app

    async def start(self) -> HttpServer:
        # handler_cancellation: a client that goes away cancels its handler, so a change
        # stream unsubscribes at once instead of at its next keepalive write
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.listen, self.config.port)
        try:
            await site.start()
        except OSError as exc:  # port taken, address not local: a clear error, not a trace
            await self._runner.cleanup()
            self._runner = None
            raise ApiError(f"cannot serve HTTP on {host_port(self.config.listen, self.config.port)}"
                           f": {exc.strerror or exc} (change [http] port or listen)") from None
        self.port = int(self._runner.addresses[0][1])
        url_path(self.agent.home.path).write_text(self.url + "\n")
        log.info("event=http_started url=%s key_file=%s", self.url,
                 auth.key_path(self.agent.home.path))
        return self

    async def close(self) -> None:
        for t in list(self._streams):
            t.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            url_path(self.agent.home.path).unlink()

    # --- middlewares ---------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every answer is JSON with a typed error, aiohttp's own refusals included."""
        resource = request.match_info.route.resource
        label = resource.canonical if resource is not None else "unmatched"
        try:
            resp = await handler(request)
        except P2PSyncError as exc:
            resp = error_response(type(exc).__name__, str(exc))
        except web.HTTPException as exc:
            kind, msg = {
                404: ("UnknownOperation" if request.path.startswith(PREFIX) else "NotFound",
                      f"no endpoint {request.path} (see {OPENAPI_PATH})"),
                405: ("MethodNotAllowed", f"{request.method} is not allowed on {request.path}"),
                413: ("PayloadTooLarge", f"request body over {MAX_BODY} bytes"),
            }.get(exc.status, ("InvalidRequest", exc.reason))
            resp = error_response(kind, msg, exc.status)
        self.metrics.observe(label, resp.status, resp.headers.get("X-P2PSync-Error"))
        return resp

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Host/Origin checks for every path; the key for every path but the public ones.

        A configured origin (``[http] origins``) gets CORS: its preflight (``OPTIONS``, which
        carries no key and reveals nothing) is answered here, its requests get
        ``Access-Control-Allow-Origin``. Nothing else does, so a browser never lets another
        page send the key header or read an answer."""
        auth.check_browser(request.headers, request.scheme, self.config.origins)
        origin = request.headers.get("Origin")
        cors = origin is not None and origin in self.config.origins
        if request.method == "OPTIONS" and cors:
            return web.Response(status=204, headers={
                **_cors(origin or ""), "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "X-API-Key, Authorization, Content-Type",
                "Access-Control-Max-Age": "600"})
        public = request.path in PUBLIC or (request.path == "/metrics"
                                            and self.config.metrics_public)
        try:
            if not public:
                auth.check_key(request.headers, self.key)
            resp = await handler(request)
        except P2PSyncError as exc:
            resp = error_response(type(exc).__name__, str(exc))
        if cors and not resp.prepared:
            resp.headers.update(_cors(origin or ""))
        return resp

    # --- handlers ------------------------------------------------------------------------------
    def _op_handler(self, route: Route) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.method == "GET":
                query = {k: request.query.getall(k) for k in request.query}
                params: Any = query_params(route.op, route.params, query)
            else:
                body = await request.read()
                params = _decode_body(body)
            answer = await handle_request(self.agent, {"op": route.op, "params": params})
            if answer["ok"]:
                return _json(answer["result"])
            err = answer["error"]
            return error_response(err["type"], err["message"])
        return handle

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=PAGE, content_type="text/html", headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                       "style-src 'unsafe-inline'; frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        from p2psync.api import API_VERSION

        return _json(openapi.describe(f"{API_VERSION} (p2psync {__version__})", self.routes))

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: ``ready`` (the subscription is live), then one ``change`` per
        changed document (local or from a peer), ``closed`` when the agent stops; a comment
        every :data:`KEEPALIVE` seconds while idle."""
        query = {k: request.query.getall(k) for k in request.query}
        p = query_params("events", SubscribeParams, query)
        sub = self.agent.subscribe(p.get("space"), p.get("doc"))  # NotFound: answered typed
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        try:
            await resp.prepare(request)
            await resp.write(sse("ready", {"subscription": sub.sub_id,
                                           "space_id": sub.space_id}))
            await self._pump(sub, resp)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.agent.unsubscribe(sub.sub_id)
            self._streams.discard(task)
        return resp

    async def _pump(self, sub: Subscription, resp: web.StreamResponse) -> None:
        n = 0
        while True:
            try:
                ev = await asyncio.wait_for(sub.queue.get(), KEEPALIVE)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            n += 1
            name = str(ev.get("event", "change"))
            await resp.write(sse(name, ev, n))
            if name == "closed":
                return


def _cors(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _decode_body(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        params = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise InvalidParams("the body holds the op's parameters: a JSON object, not "
                            f"{type(params).__name__}")
    return params


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One Server-Sent Event (``data`` as one line of JSON: JSON escapes newlines)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

