"""The local API: JSON lines over a Unix socket in the agent's home (mode 0600).

Apps in any language (and the CLI, when an agent runs) talk to the agent here. One request per
line, ``{"id": 1, "op": "doc.get", "params": {...}}``; one response per request, same ``id``:
``{"id": 1, "ok": true, "result": ...}`` or ``{"id": 1, "ok": false, "error": {"type": ...,
"message": ...}}``. ``subscribe`` starts a stream of ``{"event": "change", "subscription": N,
...}`` lines on the same connection. See docs/local-api.md.

The protocol logic (:func:`handle_request`) is a plain function from a request to a response;
:class:`ApiServer` is the asyncio shell and :class:`ApiClient` a small blocking client.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
from pathlib import Path
from typing import Any

from p2psync.agent import ops
from p2psync.agent.core import Agent, Subscription
from p2psync.errors import P2PSyncError

SOCKET = "agent.sock"
MAX_LINE = 1 << 20  #: bytes per request line
API_VERSION = 1
_UNIX_PATH_MAX = 107


class ApiError(P2PSyncError):
    """The agent answered a request with an error, or the socket failed."""

    def __init__(self, message: str, kind: str = "ApiError") -> None:
        super().__init__(message)
        self.kind = kind


def socket_path(home: Path) -> Path:
    return home / SOCKET


def _error(rid: Any, exc: BaseException) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}


def _check_params(fn: Any, params: dict[str, Any], skip: int) -> None:
    """Raise OpError when ``params`` do not fit ``fn``'s keyword parameters."""
    sig = inspect.signature(fn)
    names = list(sig.parameters)[skip:]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ops.OpError(f"unknown parameter(s): {', '.join(unknown)}")
    missing = [n for n in names if sig.parameters[n].default is inspect.Parameter.empty
               and n not in params]
    if missing:
        raise ops.OpError(f"missing parameter(s): {', '.join(missing)}")


async def handle_request(agent: Agent, req: Any,
                         subscribe: Any = None) -> dict[str, Any]:
    """Answer one decoded request (never raises for a bad request: answers an error)."""
    rid = req.get("id") if isinstance(req, dict) else None
    try:
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            raise ops.OpError('a request is {"id": ..., "op": "...", "params": {...}}')
        op: str = req["op"]
        params = req.get("params") or {}
        if not isinstance(params, dict):
            raise ops.OpError("params must be an object")
        result = await _run(agent, op, params, subscribe)
        return {"id": rid, "ok": True, "result": result}
    except (P2PSyncError, TimeoutError, KeyError, ValueError) as exc:
        if isinstance(exc, TimeoutError):
            exc = ops.OpError("timed out")
        return _error(rid, exc)


async def _run(agent: Agent, op: str, params: dict[str, Any], subscribe: Any) -> Any:
    assert agent.device is not None
    if op in ops.LOCAL_OPS:
        fn = ops.LOCAL_OPS[op]
        _check_params(fn, params, 1)
        if op == "space.invite" and not params.get("addresses"):
            params = dict(params, addresses=agent.reachable_addresses())
        return fn(agent.device, **params)
    if op == "ping":
        return {"api": API_VERSION, "peer_id": agent.keys.device.id}
    if op == "status":
        return agent.status()
    if op == "peers":
        return agent.peers()
    if op == "space.join":
        _check_params(agent.join, params, 0)
        space = await agent.join(**params)
        return {"space_id": space.id, "role": ops.role_name(space.role()),
                "documents": len(space.tree_ids())}
    if op == "space.replicate":
        _check_params(agent.replicate, params, 0)
        space = await agent.replicate(**params)
        return {"space_id": space.id, "documents": len(space.tree_ids())}
    if op == "space.add_backup":
        from p2psync.backup.client import add_backup_agent

        return await add_backup_agent(agent, str(params.get("space", "")),
                                      str(params.get("address", "")))
    if op == "space.backup_status":
        from p2psync.backup.client import backup_status

        return await backup_status(agent, str(params.get("space", "")),
                                   float(params.get("timeout", 10.0)))
    if op == "space.sync_state":
        sid = agent.device.resolve_space(str(params.get("space", ""))).id
        return agent.sync_state(sid)
    if op == "space.wait_synced":
        sid = agent.device.resolve_space(str(params.get("space", ""))).id
        await agent.wait_synced(sid, float(params.get("timeout", 30.0)))
        return agent.sync_state(sid)
    if op == "subscribe":
        if subscribe is None:
            raise ops.OpError("subscribe needs a streaming connection")
        _check_params(agent.subscribe, params, 0)
        sub = agent.subscribe(**params)
        subscribe(sub)
        return {"subscription": sub.sub_id, "space_id": sub.space_id}
    if op == "unsubscribe":
        return {"removed": agent.unsubscribe(int(params.get("subscription", -1)))}
    raise ops.OpError(f"unknown operation {op!r}")


class ApiServer:
    """Serves the local API of ``agent`` on ``<home>/agent.sock``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.path = socket_path(agent.home.path)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> ApiServer:
        if len(str(self.path)) > _UNIX_PATH_MAX:
            raise ApiError(f"{self.path} is too long for a Unix socket; use a shorter --home")
        if self.path.exists():
            if _alive(self.path):
                raise ApiError(f"an agent is already running on {self.agent.home.path}")
            self.path.unlink()
        old = os.umask(0o177)  # the socket is created 0600: only this user may talk to it
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                           limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        subs: list[Subscription] = []
        lock = asyncio.Lock()
        pumps: list[asyncio.Task[None]] = []

        async def write(obj: dict[str, Any]) -> None:
            async with lock:
                writer.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
                await writer.drain()

        async def pump(sub: Subscription) -> None:
            while True:
                ev = await sub.queue.get()
                await write(ev)
                if ev.get("event") == "closed":
                    return

        def on_subscribe(sub: Subscription) -> None:
            subs.append(sub)
            pumps.append(asyncio.get_running_loop().create_task(pump(sub)))

        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # over MAX_LINE
                    await write(_error(None, ops.OpError("request line too long")))
                    break
                if not line:
                    break
                try:
                    req = json.loads(line)
                except ValueError as exc:
                    await write(_error(None, ops.OpError(f"not JSON: {exc}")))
                    continue
                await write(await handle_request(self.agent, req, on_subscribe))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for sub in subs:
                self.agent.unsubscribe(sub.sub_id)
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._conns.discard(task)


def _alive(path: Path) -> bool:
    """Whether an agent answers on ``path`` (a stale socket file from a crash does not)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(path))
    except OSError:
        return False
    finally:
        s.close()
    return True


def agent_running(home: Path) -> bool:
    path = socket_path(home)
    return path.exists() and _alive(path)


class ApiClient:
    """A blocking JSON-lines client (what the CLI uses; apps may copy it in ~40 lines)."""

    def __init__(self, home: Path, timeout: float | None = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(socket_path(home)))
        except OSError as exc:
            self.sock.close()
            raise ApiError(f"no agent answers on {socket_path(home)}: {exc}") from exc
        self.file = self.sock.makefile("rb")
        self._next = 0
        self._events: list[dict[str, Any]] = []  #: events read while waiting for a response

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, **params: Any) -> Any:
        """Send one request; return its result or raise :class:`ApiError`."""
        self._next += 1
        rid = self._next
        self.sock.sendall(json.dumps({"id": rid, "op": op, "params": params}).encode() + b"\n")
        while True:
            msg = self._read_line()
            if msg.get("id") == rid and "ok" in msg:
                break
            if "event" in msg:
                self._events.append(msg)
        if not msg["ok"]:
            err = msg.get("error") or {}
            raise ApiError(str(err.get("message", "error")), str(err.get("type", "ApiError")))
        return msg.get("result")

    def read(self) -> dict[str, Any]:
        """The next line from the agent (events first, in order of arrival)."""
        if self._events:
            return self._events.pop(0)
        return self._read_line()

    def _read_line(self) -> dict[str, Any]:
        try:
            line = self.file.readline()
        except OSError as exc:
            raise ApiError(f"agent connection failed: {exc}") from exc
        if not line:
            raise ApiError("the agent closed the connection")
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ApiError("malformed line from the agent")
        return obj
