"""The local API: JSON lines over a Unix socket in the agent's home (mode 0600).

Apps in any language (and the CLI, when an agent runs) talk to the agent here. One request per
line, ``{"id": 1, "op": "doc.get", "params": {...}}``; one response per request, same ``id``:
``{"id": 1, "ok": true, "result": ...}`` or ``{"id": 1, "ok": false, "error": {"type": ...,
"message": ...}}``. ``subscribe`` starts a stream of ``{"event": "change", "subscription": N,
...}`` lines on the same connection. See docs/local-api.md.

The protocol logic (:func:`handle_request`) is a plain function from a request to a response:
the envelope and each op's parameters are checked against declared msgspec schemas, the op is
found in the dispatch table :data:`OPS` (like the CLI's sub-commands), and anything a client
sends is answered with a typed error, never a closed connection. :class:`ApiServer` is the
asyncio shell and :class:`ApiClient` a small blocking client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from p2psync.agent import fileops as _fileops  # registers the file.* ops
from p2psync.agent import ops, pairing
from p2psync.agent.core import Agent, Subscription
from p2psync.apiclient import API_VERSION as API_VERSION

# The light client half lives in p2psync.apiclient (the CLI imports only that); re-exported here.
from p2psync.apiclient import SOCKET as SOCKET
from p2psync.apiclient import ApiClient as ApiClient
from p2psync.apiclient import ApiError as ApiError
from p2psync.apiclient import _alive, socket_path
from p2psync.apiclient import agent_running as agent_running
from p2psync.crypto.ids import peer_id, short_hash
from p2psync.device import LocalDevice, doc_ref
from p2psync.errors import InvalidRequest, P2PSyncError, UnknownOperation

MAX_LINE = 1 << 20  #: bytes per request line
_UNIX_PATH_MAX = 107
log = logging.getLogger(__name__)


def _error(rid: Any, kind: str, message: str) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": {"type": kind, "message": message}}


# --- the request envelope and the agent's own operations --------------------------------------
RequestId = int | Annotated[str, msgspec.Meta(max_length=256)] | None


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``{"id": ..., "op": "...", "params": {...}}``; ``params`` is checked per op."""

    op: Annotated[str, msgspec.Meta(max_length=64)]
    id: RequestId = None
    params: dict[str, Any] | None = None


class JoinParams(ops.Params, frozen=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
    peers: Annotated[list[ops.Address], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=list)
    name: ops.Name | None = None
    timeout: ops.Timeout = 30.0


class ReplicateParams(ops.Params, frozen=True):
    space_id: ops.Ref
    timeout: ops.Timeout = 30.0


class AddBackupParams(ops.Params, frozen=True):
    space: ops.Ref
    address: ops.Address


class TimedSpaceParams(ops.Params, frozen=True):
    space: ops.Ref
    timeout: ops.Timeout = 30.0


class SubscribeParams(ops.Params, frozen=True):
    space: ops.Ref | None = None
    doc: ops.Ref | None = None
    patches: bool = False


class UnsubscribeParams(ops.Params, frozen=True):
    subscription: int


@dataclass(frozen=True)
class Context:
    """What an operation may use: the agent and, on a streaming connection, a way to attach a
    subscription to it."""

    agent: Agent
    subscribe: Callable[[Subscription], None] | None


@dataclass(frozen=True)
class Op:
    """One entry of the dispatch table: declared parameters and an async runner."""

    params: type[ops.Params]
    run: Callable[[Context, Any], Awaitable[Any]]


def _device(ctx: Context) -> LocalDevice:
    assert ctx.agent.device is not None
    return ctx.agent.device


def _local(name: str, spec: ops.LocalOp) -> Op:
    async def run(ctx: Context, p: ops.Params) -> Any:
        if name == "space.invite" and isinstance(p, ops.SpaceInviteParams) and not p.addresses:
            p = msgspec.structs.replace(p, addresses=ctx.agent.reachable_addresses())
        if name == "doc.history" or (name == "doc.get" and getattr(p, "at", None)):
            await _whole_history(ctx, p)
        out = spec.run(_device(ctx), p)
        if name == "device.remove":  # refused from now on, and dropped if connected now
            ctx.agent.node.refused_peers.add(out["peer_id"])
            for e in list(ctx.agent.node.engines):
                if e.conn.peer_id == out["peer_id"]:
                    await e.close("this device was removed from the account")
        return out
    return Op(spec.params, run)


#: how long ``doc.history`` / ``doc.get --at`` wait for a shallow document's history
HISTORY_TIMEOUT = 10.0


async def _whole_history(ctx: Context, p: ops.Params) -> None:
    """History on demand (docs/replica.md "Shallow trees"): a document this device fetched
    from a snapshot gets its older history from the connected peers first; without peers (or
    past :data:`HISTORY_TIMEOUT`) the op answers from what is held."""
    space, doc = getattr(p, "space", None), getattr(p, "doc", None)
    if not isinstance(space, str) or not isinstance(doc, str):
        return
    try:
        sp = _device(ctx).resolve_space(space)
        tid = doc_ref(sp, doc)
        if sp.has_tree(tid) and sp.tree(tid).shallow:
            await ctx.agent.node.fetch_history(sp.id, tid, HISTORY_TIMEOUT)
    except (P2PSyncError, TimeoutError):
        return  # the op itself reports a bad space or document


class DeviceAddParams(ops.Params, frozen=True):
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    #: seconds the code stays valid (the listener closes then, paired or not)
    timeout: ops.Timeout = 300.0


class DeviceAddWaitParams(ops.Params, frozen=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    timeout: ops.Timeout = 300.0


#: pairing listeners the agents of this process run (``device.add``), by code
_PAIRINGS: dict[str, pairing.PairingHost] = {}


def pairing_addresses(hosts: list[str], port: int) -> list[str]:
    """``host:port`` of a pairing listener on every given host (LAN first, loopback last)."""
    return [f"{h}:{port}" for h in hosts]


async def _device_add(ctx: Context, p: DeviceAddParams) -> Any:
    """Start pairing a new device: listen on ``port`` (0: any) and return the code, the
    addresses and the link for the QR code; ``device.add_wait`` waits for the new device."""
    dev = _device(ctx)
    synced_at = ctx.agent.reachable_addresses()
    host = await pairing.PairingHost(
        lambda pub, name: ops.host_bundle(dev, pub, name, synced_at), port=p.port).start()
    _PAIRINGS[host.code] = host
    loop = asyncio.get_running_loop()
    loop.call_later(p.timeout, lambda: loop.create_task(host.close()))
    hosts = [a.rsplit(":", 2)[-2] for a in ctx.agent.reachable_addresses()]
    addrs = pairing_addresses(list(dict.fromkeys(hosts)), host.bound_port)
    return {"code": pairing.show_code(host.code), "addresses": addrs,
            "link": pairing.link(host.code, addrs), "attempts": pairing.MAX_ATTEMPTS}


async def _device_add_wait(ctx: Context, p: DeviceAddWaitParams) -> Any:
    code = pairing.normalize_code(p.code)
    host = _PAIRINGS.get(code)
    if host is None:
        raise ops.OpError("no pairing in progress with that code (run `device add` again)")
    try:
        pub, name = await host.wait(p.timeout)
    finally:
        _PAIRINGS.pop(code, None)
    return {"peer_id": peer_id(pub), "name": name, "paired": True}


async def _ping(ctx: Context, p: ops.NoParams) -> Any:
    return {"api": API_VERSION, "peer_id": ctx.agent.keys.device.id}


async def _status(ctx: Context, p: ops.NoParams) -> Any:
    return ctx.agent.status()


async def _peers(ctx: Context, p: ops.NoParams) -> Any:
    return ctx.agent.peers()


async def _join(ctx: Context, p: JoinParams) -> Any:
    """Join by invite. With an approval-required invite the answer comes back at once with
    ``"state": "pending"``, the ``request`` id and the ``accept_command`` an admin runs; then
    ``space.wait_access`` waits for the decision."""
    space = await ctx.agent.join(p.code, list(p.peers), p.name, timeout=p.timeout)
    st = ctx.agent.join_state(space.id)
    return {**st, "space_id": space.id, "role": ops.role_name(space.role()),
            "documents": len(space.tree_ids())}


async def _wait_access(ctx: Context, p: TimedSpaceParams) -> Any:
    sid = _device(ctx).resolve_space(p.space).id
    return await ctx.agent.wait_access(sid, p.timeout)


async def _join_state(ctx: Context, p: ops.SpaceParams) -> Any:
    return ctx.agent.join_state(_device(ctx).resolve_space(p.space).id)


async def _leave(ctx: Context, p: ops.SpaceParams) -> Any:
    return ctx.agent.leave(p.space)


async def _replicate(ctx: Context, p: ReplicateParams) -> Any:
    space = await ctx.agent.replicate(p.space_id, timeout=p.timeout)
    return {"space_id": space.id, "documents": len(space.tree_ids())}


async def _add_backup(ctx: Context, p: AddBackupParams) -> Any:
    return await ctx.agent.add_backup(p.space, p.address)


async def _backup_status(ctx: Context, p: TimedSpaceParams) -> Any:
    return await ctx.agent.backup_status(p.space, p.timeout)


async def _sync_state(ctx: Context, p: ops.SpaceParams) -> Any:
    sid = _device(ctx).resolve_space(p.space).id
    return ctx.agent.sync_state(sid)


async def _wait_synced(ctx: Context, p: TimedSpaceParams) -> Any:
    sid = _device(ctx).resolve_space(p.space).id
    await ctx.agent.wait_synced(sid, p.timeout)
    return ctx.agent.sync_state(sid)


async def _subscribe(ctx: Context, p: SubscribeParams) -> Any:
    if ctx.subscribe is None:
        raise ops.OpError("subscribe needs a streaming connection")
    sub = ctx.agent.subscribe(p.space, p.doc, p.patches)
    ctx.subscribe(sub)
    out: dict[str, Any] = {"subscription": sub.sub_id, "space_id": sub.space_id}
    if sub.space_id is not None and sub.doc is not None:
        # the heads the first event builds on (doc watch's snapshot line)
        out["heads"] = [short_hash(h) for h in _device(ctx).open_space(sub.space_id).heads(
            sub.doc)]
    return out


async def _unsubscribe(ctx: Context, p: UnsubscribeParams) -> Any:
    return {"removed": ctx.agent.unsubscribe(p.subscription)}


#: The dispatch table: every operation of the local API, its schema and its runner.
OPS: dict[str, Op] = {
    **{name: _local(name, spec) for name, spec in ops.LOCAL_OPS.items()},
    "ping": Op(ops.NoParams, _ping),
    "status": Op(ops.NoParams, _status),
    "peers": Op(ops.NoParams, _peers),
    "space.join": Op(JoinParams, _join),
    "space.replicate": Op(ReplicateParams, _replicate),
    "space.wait_access": Op(TimedSpaceParams, _wait_access),
    "space.join_state": Op(ops.SpaceParams, _join_state),
    "space.leave": Op(ops.SpaceParams, _leave),
    "space.add_backup": Op(AddBackupParams, _add_backup),
    "space.backup_status": Op(TimedSpaceParams, _backup_status),
    "space.sync_state": Op(ops.SpaceParams, _sync_state),
    "space.wait_synced": Op(TimedSpaceParams, _wait_synced),
    "subscribe": Op(SubscribeParams, _subscribe),
    "unsubscribe": Op(UnsubscribeParams, _unsubscribe),
    "device.add": Op(DeviceAddParams, _device_add),
    "device.add_wait": Op(DeviceAddWaitParams, _device_add_wait),
    **{name: Op(params, run) for name, (params, run) in _fileops.AGENT_FILE_OPS.items()},
}


def parse_request(req: Any) -> tuple[Request, Op, ops.Params]:
    """A decoded request line checked against the envelope and its op's schema."""
    try:
        env = msgspec.convert(req, Request)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f'a request is {{"id": ..., "op": "...", "params": {{...}}}}: '
                             f"{str(exc).replace('`$.', '`')}") from None
    op = OPS.get(env.op)
    if op is None:
        raise UnknownOperation(f"unknown operation {env.op!r} (see docs/local-api.md)")
    return env, op, ops.parse_params(env.op, op.params, env.params)


def request_id(req: Any) -> Any:
    """The id to answer with: the request's, when it is a valid id, else null."""
    rid = req.get("id") if isinstance(req, dict) else None
    try:
        return msgspec.convert(rid, RequestId)
    except msgspec.ValidationError:
        return None


async def handle_request(agent: Agent, req: Any,
                         subscribe: Callable[[Subscription], None] | None = None,
                         ) -> dict[str, Any]:
    """Answer one decoded request. Never raises for anything a client sends: a bad request is a
    typed error answer (InvalidRequest, UnknownOperation, InvalidParams, InvalidPath, NotFound,
    …), and a bug is an ``InternalError`` answer (logged with its traceback)."""
    rid = request_id(req)
    try:
        _env, op, params = parse_request(req)
        result = await op.run(Context(agent, subscribe), params)
        return {"id": rid, "ok": True, "result": result}
    except P2PSyncError as exc:
        return _error(rid, type(exc).__name__, str(exc))
    except TimeoutError:
        return _error(rid, "Timeout", "timed out")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug: answer it and keep the connection and the agent up
        log.exception("event=api_internal_error op=%s", req.get("op") if isinstance(
            req, dict) else None)
        return _error(rid, "InternalError", f"{type(exc).__name__}: {exc}")


def decode_line(line: bytes) -> Any:
    """One request line as JSON (msgspec: strict UTF-8, no NaN, bounded nesting)."""
    try:
        return msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"not JSON: {exc}") from None


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
        os.chmod(self.path, 0o600)  # the home itself was secured by Agent.start
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
                except ValueError:  # over MAX_LINE: the rest of the line cannot be skipped
                    await write(_error(None, "InvalidRequest",
                                       f"request line longer than {MAX_LINE} bytes"))
                    break
                if not line:
                    break
                try:
                    req = decode_line(line)
                except InvalidRequest as exc:
                    await write(_error(None, "InvalidRequest", str(exc)))
                    continue
                await write(await handle_request(self.agent, req, on_subscribe))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for sub in subs:
                self.agent.unsubscribe(sub.sub_id)
            for p in pumps:
                p.cancel()
            # a second cancel (shutdown) may land while we tidy up: the connection is ending
            # either way, and a CancelledError escaping here is printed by asyncio's stream
            # callback as an "Exception in callback" traceback at every shutdown
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pumps, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self._conns.discard(task)
