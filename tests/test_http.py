"""The local HTTP API against real in-process agents on loopback (docs/http.md): the key and the
browser checks, every endpoint, typed errors with their status, the change stream delivering a
peer's edit, the OpenAPI description checked against the real routes, and the metrics."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import msgspec
import openapi_spec_validator
import pytest

from p2psync.agent.core import Agent
from p2psync.api import OPS, handle_request
from p2psync.config import HttpConfig
from p2psync.http import auth
from p2psync.http.info import url_path
from p2psync.http.results import SHAPES, result_schema
from p2psync.http.routes import (
    EVENTS_PATH,
    OPENAPI_PATH,
    SAFE_OPS,
    STREAM_OPS,
    WRITE_OPS,
    http_status,
    routes,
)
from p2psync.http.server import HttpServer
from tests.conftest import Fleet
from tests.http_helpers import env, start_agent

#: ops whose real answers this run validated against their declared result schema
CHECKED: set[str] = set()


class Client:
    """A thin aiohttp client of one server: ``await c.call("space.create", name="x")``."""

    def __init__(self, server: HttpServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{server.port}"
        self.session = session
        self.headers = {"X-API-Key": server.key}
        self.spec: dict[str, Any] | None = None

    async def req(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                  **kw: Any) -> tuple[int, Any]:
        h = self.headers if headers is None else headers
        async with self.session.request(method, self.base + path, headers=h, **kw) as r:
            text = await r.text()
            ctype = r.headers.get("Content-Type", "")
            return r.status, json.loads(text) if ctype.startswith("application/json") else text

    async def call(self, op: str, **params: Any) -> Any:
        """POST an op; its answer must match the result schema the served OpenAPI declares."""
        path = "/api/v1/" + op.replace(".", "/")
        status, body = await self.req("POST", path, json=params)
        assert status == 200, (op, status, body)
        if self.spec is None:
            _, self.spec = await self.req("GET", OPENAPI_PATH, headers={})
        declared = self.spec["paths"][path]["post"]["responses"]["200"]["content"][
            "application/json"]["schema"]
        jsonschema.Draft202012Validator(declared).validate(body)
        CHECKED.add(op)
        return body


async def serve(fleet: Fleet, agent: Agent, **cfg: Any) -> HttpServer:
    return fleet.track(await HttpServer(agent, HttpConfig(enabled=True, port=0, **cfg)).start())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def one(fleet: Fleet, session: aiohttp.ClientSession, **cfg: Any) -> Client:
    agent = await fleet.agent("a")
    return Client(await serve(fleet, agent, **cfg), session)


# --- who may call ----------------------------------------------------------------------------
async def test_the_key_is_required_and_checked(fleet: Fleet, session: aiohttp.ClientSession
                                               ) -> None:
    c = await one(fleet, session)
    home = c.server.agent.home.path
    assert auth.key_path(home).stat().st_mode & 0o777 == 0o600
    assert auth.load_or_create_key(home) == c.server.key  # created once, then reused
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": c.server.key[:-1]},
                    {"Authorization": "Basic " + c.server.key}):
        status, body = await c.req("GET", "/api/v1/status", headers=headers)
        assert (status, body["error"]["type"]) == (401, "Unauthorized"), headers
    # an unknown path says nothing either without the key
    status, body = await c.req("GET", "/api/v1/nope", headers={})
    assert status == 401
    status, body = await c.req("GET", "/api/v1/status",
                               headers={"Authorization": "Bearer " + c.server.key})
    assert status == 200 and body["peer_id"] == c.server.agent.keys.device.id
    # the page shell and the description need no key; metrics do (unless made public)
    assert (await c.req("GET", "/", headers={}))[0] == 200
    assert (await c.req("GET", OPENAPI_PATH, headers={}))[0] == 200
    assert (await c.req("GET", "/metrics", headers={}))[0] == 401


async def test_wrong_origin_and_rebinding_hosts_are_refused(
        fleet: Fleet, session: aiohttp.ClientSession) -> None:
    c = await one(fleet, session, origins=["http://ui.example:9000"])
    own = f"http://127.0.0.1:{c.server.port}"
    cases = [({"Origin": "http://evil.example"}, 403),
             ({"Origin": "null"}, 403),
             ({"Host": f"evil.example:{c.server.port}"}, 403),  # DNS rebinding
             ({"Origin": own}, 200),
             ({"Origin": "http://ui.example:9000"}, 200),
             ({"Host": f"localhost:{c.server.port}", "Origin": f"http://localhost:{c.server.port}"},
              200),
             ({"Host": f"ui.example:{c.server.port}"}, 200)]
    for extra, want in cases:
        status, body = await c.req("GET", "/api/v1/ping", headers={**c.headers, **extra})
        assert status == want, (extra, body)
        if want == 403:
            assert body["error"]["type"] == "OriginRefused"
    # a configured origin gets CORS (preflight without the key), another origin none
    ui = {"Origin": "http://ui.example:9000", "Access-Control-Request-Method": "POST",
          "Access-Control-Request-Headers": "x-api-key"}
    async with c.session.options(c.base + "/api/v1/space/create", headers=ui) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "http://ui.example:9000"
        assert "X-API-Key" in r.headers["Access-Control-Allow-Headers"]
    async with c.session.get(c.base + "/api/v1/ping", headers={**c.headers, **ui}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "http://ui.example:9000"
    async with c.session.get(c.base + "/api/v1/ping", headers={"Origin": "http://ui.example:9000"}
                             ) as r:  # no key: refused, still readable by that origin
        assert (r.status, r.headers["Access-Control-Allow-Origin"]) == (401, ui["Origin"])
    async with c.session.options(c.base + "/api/v1/space/create",
                                 headers={**ui, "Origin": "http://evil.example"}) as r:
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    async with c.session.get(c.base + "/api/v1/ping", headers={**c.headers, "Origin": own}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers  # same origin needs none
    # the page itself is refused to a rebinding Host as well
    status, _ = await c.req("GET", "/", headers={"Host": "evil.example"})
    assert status == 403


# --- every endpoint --------------------------------------------------------------------------
async def test_every_op_is_an_endpoint_with_its_schema(fleet: Fleet,
                                                       session: aiohttp.ClientSession) -> None:
    """Generated from the table: each op answers; one without required params runs on an
    empty body, one with them says which is missing (InvalidParams, 422)."""
    c = await one(fleet, session)
    table = routes()
    assert {r.op for r in table} == set(OPS) - {"subscribe", "unsubscribe"}
    for r in table:  # every endpoint refuses a request without the key, whatever its method
        for method in r.methods:
            status, body = await c.req(method, r.path, headers={})
            assert (status, body["error"]["type"]) == (401, "Unauthorized"), (r.op, method)
    for r in table:
        required = [f.name for f in msgspec.structs.fields(r.params) if f.required]
        status, body = await c.req("POST", r.path, data=b"")
        if required:
            assert (status, body["error"]["type"]) == (422, "InvalidParams"), (r.op, body)
            assert required[0] in body["error"]["message"]
        else:
            assert status == 200, (r.op, body)


async def test_each_op_does_what_the_socket_does(fleet: Fleet,
                                                 session: aiohttp.ClientSession) -> None:
    c = await one(fleet, session)
    agent = c.server.agent
    assert (await c.call("ping"))["peer_id"] == agent.keys.device.id
    assert (await c.call("whoami"))["account_id"] == agent.keys.account.id
    space = (await c.call("space.create", name="notes"))["space_id"]
    doc = (await c.call("doc.new", space="notes"))["doc"]
    await c.call("doc.set", space=space, doc=doc, path="title", value="Hi")
    await c.call("doc.set", space=space, doc=doc, path="tags", value=["a", {"b": 1}])
    # GET with query parameters for the safe ops, converted to the declared types
    status, value = await c.req("GET", f"/api/v1/doc/get?space={space}&doc={doc}&path=title")
    assert (status, value) == (200, "Hi")
    assert await c.call("doc.get", space=space, doc=doc) == {"title": "Hi",
                                                             "tags": ["a", {"b": 1}]}
    assert [d["doc"] for d in await c.call("doc.list", space=space)] == [doc]
    assert len(await c.call("doc.history", space=space, doc=doc)) == 3  # new + 2 sets
    [row] = await c.call("space.list")
    assert (row["name"], row["documents"], row["members"]) == ("notes", 1, 1)
    assert (await c.call("space.members", space=space))[0]["role"] == "owner"
    inv = await c.call("space.invite", space=space, role="reader")
    assert inv["approval_required"] and inv["addresses"]  # the agent's hints filled in
    assert await c.call("space.requests", space=space) == []
    assert (await c.call("space.sync_state", space=space))["peers"] == 0
    st = await c.call("status")
    assert st == {**(await handle_request(agent, {"op": "status"}))["result"],
                  "uptime": st["uptime"]}
    assert await c.call("peers") == []
    bs = await c.call("space.backup_status", space=space, timeout=0.5)
    assert bs["receipts"] == []
    other = Fleet.peer_id()  # a valid id of nobody (a peer id, not an account id)
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("space.remove", {"space": space, "account": other}, 409, "OpError"),  # no member
        ("space.accept", {"space": space, "request": "zz"}, 409, "OpError"),
        ("space.add_replicator", {"space": space, "account": "a-nope"}, 422, "BadId"),
        ("space.join", {"code": "not-a-code", "timeout": 1}, 422, ""),
        ("space.replicate", {"space_id": "s" * 20, "timeout": 0.2}, 502, "JoinError"),
        ("space.wait_synced", {"space": space, "timeout": 0.1}, 504, "Timeout"),
        ("space.add_backup", {"space": space, "address": "127.0.0.1:1"}, 0, ""),
        ("doc.get", {"space": space, "doc": doc, "path": "tags/7"}, 422, "InvalidPath"),
        ("doc.get", {"space": "nope", "doc": doc}, 404, "NotFound"),
        ("doc.set", {"space": space, "doc": doc, "path": "x", "value": 1 << 70}, 422,
         "InvalidParams"),
        ("space.create", {"name": 5}, 422, "InvalidParams"),
    ]
    for op, params, want, kind in cases:
        status, body = await c.req("POST", "/api/v1/" + op.replace(".", "/"), json=params)
        assert status >= 400 and "type" in body["error"], (op, status, body)
        assert status == http_status(body["error"]["type"]), (op, body)
        if want:
            assert status == want, (op, status, body)
        if kind:
            assert body["error"]["type"] == kind, (op, body)
    assert (await c.call("space.delete_docs", space=space, docs=[doc]))["deleted"] == [doc]
    assert (await c.call("space.delete", space=space))["deleted"] is True


async def test_http_errors_are_typed_json(fleet: Fleet, session: aiohttp.ClientSession) -> None:
    c = await one(fleet, session)
    cases = [
        ("POST", "/api/v1/space/create", {"data": b"{not json"}, 400, "InvalidRequest"),
        ("POST", "/api/v1/space/create", {"json": ["a"]}, 422, "InvalidParams"),
        ("POST", "/api/v1/space/create", {"data": b"x" * (2 << 20)}, 413, "PayloadTooLarge"),
        ("GET", "/api/v1/space/create?name=x", {}, 405, "MethodNotAllowed"),
        ("GET", "/api/v1/no/such/op", {}, 404, "UnknownOperation"),
        ("GET", "/elsewhere", {}, 404, "NotFound"),
        ("GET", "/api/v1/doc/get?space=a&space=b&doc=x", {}, 422, "InvalidParams"),
        ("GET", "/api/v1/space/sync_state?space=x&bogus=1", {}, 422, "InvalidParams"),
        ("GET", EVENTS_PATH + "?space=nope", {}, 404, "NotFound"),
    ]
    for method, path, kw, want, kind in cases:
        status, body = await c.req(method, path, **kw)
        assert (status, body["error"]["type"]) == (want, kind), (method, path, body)
        assert body["error"]["message"]


# --- the change stream -------------------------------------------------------------------------
async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines()
                          if not line.startswith(":"))
            if fields:
                yield fields["event"], json.loads(fields["data"])


async def share(a: Agent, b: Agent) -> tuple[str, str]:
    """A space of ``a`` with one document, joined by ``b`` (invite hints: a's addresses)."""
    async def op(agent: Agent, op_name: str, **params: Any) -> Any:
        answer = await handle_request(agent, {"op": op_name, "params": params})
        assert answer["ok"], answer
        return answer["result"]
    space = (await op(a, "space.create", name="shared"))["space_id"]
    doc = (await op(a, "doc.new", space=space))["doc"]
    code = (await op(a, "space.invite", space=space, no_approval=True))["invite"]
    await op(b, "space.join", code=code)
    await op(b, "space.wait_synced", space=space, timeout=20)
    return space, doc


async def test_the_change_stream_delivers_a_peers_edit(fleet: Fleet,
                                                       session: aiohttp.ClientSession) -> None:
    a, b = await fleet.agent("a"), await fleet.agent("b")
    space, doc = await share(a, b)
    c = Client(await serve(fleet, a), session)
    async with session.get(f"{c.base}{EVENTS_PATH}?space={space}", headers=c.headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(resp)
        kind, ready = await anext(events)
        assert (kind, ready["space_id"]) == ("ready", space)
        answer = await handle_request(b, {"op": "doc.set", "params": {
            "space": space, "doc": doc, "path": "from_b", "value": 1}})
        assert answer["ok"], answer
        async with asyncio.timeout(20):
            kind, ev = await anext(events)
        assert (kind, ev["doc"], ev["origin"], ev["space_id"]) == ("change", doc, "peer", space)
        assert a.device is not None
        assert (await c.call("doc.get", space=space, doc=doc, path="from_b")) == 1
    # the subscription ends with the client's connection
    async with asyncio.timeout(5):
        while a._subs:
            await asyncio.sleep(0.01)


async def test_the_stream_says_closed_when_the_agent_stops(
        fleet: Fleet, session: aiohttp.ClientSession) -> None:
    c = await one(fleet, session)
    async with session.get(c.base + EVENTS_PATH, headers=c.headers) as resp:
        events = sse_events(resp)
        assert (await anext(events))[0] == "ready"
        await c.server.agent.close()
        async with asyncio.timeout(10):
            kind, _ = await anext(events)
        assert kind == "closed"


# --- OpenAPI -----------------------------------------------------------------------------------
async def test_openapi_matches_the_real_endpoints(fleet: Fleet,
                                                  session: aiohttp.ClientSession) -> None:
    c = await one(fleet, session)
    status, spec = await c.req("GET", OPENAPI_PATH, headers={})
    assert status == 200 and spec["openapi"].startswith("3.1")
    openapi_spec_validator.validate(spec)  # a valid OpenAPI 3.1 document
    described = {(path, m.upper()) for path, item in spec["paths"].items() for m in item}
    app = c.server._runner.app if c.server._runner else None
    assert app is not None
    served = {(res.canonical, route.method) for res in app.router.resources()
              for route in res if route.method != "HEAD"}
    assert described == served
    schemas = spec["components"]["schemas"]
    for r in routes():
        item = spec["paths"][r.path]
        ref = item["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[1]
        _, want = msgspec.json.schema_components([r.params],
                                                 ref_template="#/components/schemas/{name}")
        assert schemas[name] == want[name], r.op
        assert ("get" in item) == (r.op in SAFE_OPS)
        ok = item["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == result_schema(r.op), r.op
        assert ok or r.op == "doc.get", f"{r.op}: declare its result in http/results.py"
    # every described operation answers as described: not 404/405, JSON errors are typed
    for path, method in sorted(described):
        if path == EVENTS_PATH:
            continue  # a stream: checked above
        kw: dict[str, Any] = {"json": {}} if method == "POST" else {}
        status, body = await c.req(method, path, **kw)
        assert status not in (404, 405), (method, path, body)
        declared = spec["paths"][path][method.lower()]["responses"]
        assert str(status) in declared or "default" in declared
        if status >= 400:
            assert body["error"]["type"], (path, body)
    # and what is not described is not served
    status, body = await c.req("DELETE", "/api/v1/space/list")
    assert (status, body["error"]["type"]) == (405, "MethodNotAllowed")


# --- metrics ------------------------------------------------------------------------------------
def sample(text: str, name: str) -> float:
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, name
    return total


async def test_metrics_count_connections_sync_traffic_and_errors(
        fleet: Fleet, session: aiohttp.ClientSession) -> None:
    a, b = await fleet.agent("a"), await fleet.agent("b")
    space, _ = await share(a, b)
    c = Client(await serve(fleet, a), session)
    await c.req("GET", "/api/v1/nope")  # one error, counted by type
    status, text = await c.req("GET", "/metrics")
    assert status == 200
    assert sample(text, "p2psync_connections") == 1
    assert sample(text, "p2psync_spaces") == 1 and sample(text, "p2psync_documents") == 1
    assert f'p2psync_space_peers_in_sync{{space="{space}"}}' in text
    sent = sample(text, "p2psync_sent_bytes_total")
    assert sent > 0 and sample(text, "p2psync_received_messages_total") > 0
    assert sample(text, 'p2psync_api_errors_total{type="UnknownOperation"}') == 1
    await c.req("GET", "/api/v1/status", headers={})
    status, text = await c.req("GET", "/metrics")
    assert sample(text, 'p2psync_api_errors_total{type="Unauthorized"}') == 1
    assert sample(text, 'p2psync_api_requests_total{path="/api/v1/status",status="401"}') == 1
    # traffic stays counted (monotonic) after the connection closed
    for e in list(a.node.engines):
        await e.close("test")
    async with asyncio.timeout(10):
        while a.connected_peers():
            await a.node.replicas.changed()
    status, text = await c.req("GET", "/metrics")
    assert sample(text, "p2psync_sent_bytes_total") >= sent
    assert "p2psync_connections{" not in text


async def test_a_taken_port_is_a_clear_error(fleet: Fleet) -> None:
    from p2psync.api import ApiError

    agent = await fleet.agent("a")
    first = await serve(fleet, agent)
    with pytest.raises(ApiError, match=r"cannot serve HTTP on 127\.0\.0\.1:.*port"):
        await HttpServer(agent, HttpConfig(enabled=True, port=first.port)).start()


async def test_public_metrics_need_no_key(fleet: Fleet, session: aiohttp.ClientSession) -> None:
    c = await one(fleet, session, metrics_public=True)
    status, text = await c.req("GET", "/metrics", headers={})
    assert status == 200 and "p2psync_uptime_seconds" in text
    assert (await c.req("GET", "/api/v1/status", headers={}))[0] == 401


# --- the agent starts it ------------------------------------------------------------------------
async def test_run_starts_the_http_server_when_enabled(tmp_path: Path) -> None:
    """``p2psync run`` with ``[http] enabled``: the ready line names the URL, the URL file and
    the 0600 key file exist, the API answers with the key; all gone with the agent but the key."""
    async with start_agent(tmp_path / "h") as (_proc, ready, home):
        url = ready["http"]
        assert url_path(home).read_text().strip() == url
        key = auth.key_path(home).read_text().strip()
        assert os.stat(auth.key_path(home)).st_mode & 0o777 == 0o600
        async with aiohttp.ClientSession() as s, s.get(
                url + "api/v1/status", headers={"X-API-Key": key}) as r:
            assert r.status == 200 and (await r.json())["peer_id"] == ready["peer_id"]
        # `p2psync http` prints where it is and where the key is
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2psync", "--json", "http", "--open-url", "--home", str(home),
            stdout=asyncio.subprocess.PIPE, env=env())
        info = json.loads((await cli.communicate())[0])
        assert (info["running"], info["url"]) == (True, url)
        assert info["key_file"] == str(auth.key_path(home))
        assert info["page"] == f"{url}#key={key}"
    assert not url_path(home).exists()


# --- conventions --------------------------------------------------------------------------------
def test_default_home_is_the_platforms_data_folder(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """platformdirs gives the same folder as before on Linux (XDG), and $P2PSYNC_HOME wins."""
    from p2psync.home import default_home

    monkeypatch.delenv("P2PSYNC_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_home() == tmp_path / "data" / "p2psync"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert default_home() == tmp_path / "me" / ".local" / "share" / "p2psync"
    monkeypatch.setenv("P2PSYNC_HOME", str(tmp_path / "elsewhere"))
    assert default_home() == tmp_path / "elsewhere"


def test_every_op_is_classified_safe_or_writing_and_has_a_result() -> None:
    """A new op must be put on purpose in SAFE_OPS (also GET) or WRITE_OPS (POST only), and
    declare its result shape (issue 17)."""
    ops_ = set(OPS) - STREAM_OPS
    assert ops_ == SAFE_OPS | WRITE_OPS and not SAFE_OPS & WRITE_OPS
    assert set(SHAPES) == ops_


async def test_real_answers_match_their_declared_results(
        fleet: Fleet, session: aiohttp.ClientSession) -> None:
    """The answers of the ops a person uses most, validated against the served schemas
    (Client.call does it for every call of this module)."""
    c = await one(fleet, session)
    space = (await c.call("space.create", name="notes"))["space_id"]
    doc = (await c.call("doc.new", space=space))["doc"]
    await c.call("doc.change", space=space, doc=doc, edits=[
        {"op": "put", "path": "title", "value": "Hi"}, {"op": "put", "path": "l", "value": []},
        {"op": "insert", "path": "l/0", "value": 1}, {"op": "counter", "path": "n"}])
    for op, params in [("doc.delete", {"path": "l/0"}), ("doc.insert", {"path": "l/0",
                                                                          "value": 2}),
                       ("doc.increment", {"path": "n"}), ("doc.set", {"path": "t", "value": "x",
                                                                       "text": True}),
                       ("doc.splice", {"path": "t", "pos": 0, "insert": "a"}),
                       ("doc.counter", {"path": "m"})]:
        await c.call(op, space=space, doc=doc, **params)
    exported = await c.call("doc.export", space=space, doc=doc)
    await c.call("doc.import", space=space, data=exported["data"])
    for op in ["ping", "whoami", "status", "peers", "space.list", "device.list"]:
        await c.call(op)
    for op in ["space.members", "space.requests", "space.invites", "space.join_state",
               "space.sync_state", "doc.list", "file.list"]:
        await c.call(op, space=space)
    await c.call("space.invite", space=space)
    await c.call("space.rename", space=space, name="renamed")
    await c.call("space.rename", space=space, name="mine", local=True)
    await c.call("doc.history", space=space, doc=doc)
    await c.call("space.backup_status", space=space, timeout=0.2)
    await c.call("space.delete_docs", space=space, docs=[doc])
    assert len(CHECKED) >= 30
