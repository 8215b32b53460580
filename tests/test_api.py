"""The local API on bad input, against a real agent on its real Unix socket: every request is
checked against its op's declared schema and answered with a typed error; the connection and
the agent stay up."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from p2psync import api
from p2psync.agent import ops
from p2psync.agent.core import Agent
from p2psync.api import OPS, ApiServer
from p2psync.config import AgentConfig
from p2psync.crypto.keys import account_from_phrase, new_recovery_phrase
from p2psync.home import Home

DOCS = Path(__file__).resolve().parent.parent / "docs" / "local-api.md"


class Conn:
    """One JSON-lines connection; ``ask`` returns the next response (events skipped)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.n = reader, writer, 0

    async def raw(self, line: bytes) -> dict[str, Any]:
        self.writer.write(line)
        await self.writer.drain()
        while True:
            got = await self.reader.readline()
            assert got, "the agent closed the connection instead of answering"
            msg: dict[str, Any] = json.loads(got)
            if "event" not in msg:
                return msg

    async def ask(self, op: Any, params: Any = None) -> dict[str, Any]:
        self.n += 1
        req: dict[str, Any] = {"id": self.n, "op": op}
        if params is not None:
            req["params"] = params
        msg = await self.raw(json.dumps(req).encode() + b"\n")
        assert msg["id"] == self.n
        return msg

    async def ok(self, op: str, **params: Any) -> Any:
        msg = await self.ask(op, params)
        assert msg["ok"], msg
        return msg["result"]


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[Conn]:
    home = Home(tmp_path / "a")
    keys = home.create(account_from_phrase(new_recovery_phrase()), "")
    cfg = AgentConfig(listen="127.0.0.1", quic_port=None, tcp_port=0, mdns=False,
                      durable=False)
    agent = await Agent(home, keys, cfg).start()
    server = await ApiServer(agent).start()
    reader, writer = await asyncio.open_unix_connection(str(server.path),
                                                        limit=api.MAX_LINE * 2)
    try:
        yield Conn(reader, writer)
    finally:
        writer.close()
        await server.close()
        await agent.close()


async def seeded(c: Conn) -> tuple[str, str]:
    space = (await c.ok("space.create", name="notes"))["space_id"]
    doc = (await c.ok("doc.new", space=space))["doc"]
    await c.ok("doc.set", space=space, doc=doc, path="items", value=["a", "b"])
    return space, doc


def error(msg: dict[str, Any]) -> tuple[str, str]:
    assert msg["ok"] is False, msg
    return msg["error"]["type"], msg["error"]["message"]


@pytest.mark.parametrize("op, params, field", [
    ("space.members", {"space": 123}, "space"),
    ("space.invite", {"space": "notes", "role": ["a"]}, "role"),
    ("space.invite", {"space": "notes", "role": "owner"}, "role"),
    ("doc.get", {"space": "notes", "doc": []}, "doc"),
    ("doc.set", {"space": "notes", "doc": "x", "path": "a", "value": 1, "text": "yes"}, "text"),
    ("space.wait_synced", {"space": "notes", "timeout": "10"}, "timeout"),
    ("space.wait_synced", {"space": "notes", "timeout": -1}, "timeout"),
    ("space.join", {"code": "x", "peers": "10.0.0.1:1"}, "peers"),
    ("unsubscribe", {"subscription": True}, "subscription"),
    ("space.create", {}, "name"),
    ("space.create", {"name": "x", "nam": "x"}, "nam"),
    ("ping", {"x": 1}, "x"),
])
async def test_wrong_params_are_typed_answers_and_the_connection_stays(
        conn: Conn, op: str, params: dict[str, Any], field: str) -> None:
    await conn.ok("space.create", name="notes")
    kind, message = error(await conn.ask(op, params))
    assert kind == "InvalidParams" and f"`{field}`" in message and message.startswith(op)
    assert (await conn.ok("ping"))["api"] == api.API_VERSION


async def test_broken_envelopes_and_lines(conn: Conn) -> None:
    assert error(await conn.ask("nope"))[0] == "UnknownOperation"
    for line in (b"not json\n", b'["a"]\n', b'{"id": 1}\n', b'{"id": 1, "op": 5}\n',
                 b'{"id": 1, "op": "ping", "params": [1]}\n', b'{"op": "ping", "x": 1}\n',
                 b"\xff\xfe\n", b"\n", b"[" * 5000 + b"]" * 5000 + b"\n"):
        msg = await conn.raw(line)
        assert error(msg)[0] == "InvalidRequest", (line[:40], msg)
    # a bad id is answered with a null id, never echoed back
    msg = await conn.raw(b'{"id": [1, 2], "op": "ping"}\n')
    assert msg["id"] is None and error(msg)[0] == "InvalidRequest"
    assert (await conn.raw(b'{"id": "x", "op": "ping"}\n'))["id"] == "x"
    assert (await conn.ok("ping"))["api"] == api.API_VERSION


async def test_list_index_past_the_end_is_invalid_path(conn: Conn) -> None:
    space, doc = await seeded(conn)
    heads = (await conn.ok("doc.list", space=space))[0]["heads"]
    for path, words in [("items/7", "index 7 is past the end (use 0–1, or 2 to append)"),
                        ("items/-1", "use a number"), ("items/x", "use a number"),
                        ("items/0/z", "items/0 is a string"), ("nope/z", "no nope"),
                        ("", "give a PATH")]:
        kind, message = error(await conn.ask("doc.set", {"space": space, "doc": doc,
                                                         "path": path, "value": "x"}))
        assert kind == "InvalidPath" and words in message, (path, message)
    kind, message = error(await conn.ask("doc.get", {"space": space, "doc": doc,
                                                     "path": "items/2"}))
    assert kind == "InvalidPath" and "past the end (use 0–1)" in message
    assert (await conn.ok("doc.list", space=space))[0]["heads"] == heads  # nothing written
    await conn.ok("doc.set", space=space, doc=doc, path="items/2", value="c")  # appends
    await conn.ok("doc.set", space=space, doc=doc, path="items/0", value="A")  # replaces
    assert await conn.ok("doc.get", space=space, doc=doc) == {"items": ["A", "b", "c"]}


async def test_values_that_cannot_be_stored_are_refused(conn: Conn) -> None:
    space, doc = await seeded(conn)
    deep: Any = 1
    for _ in range(ops.MAX_VALUE_DEPTH + 1):
        deep = [deep]
    for value, words in [(deep, "nested deeper"), (1 << 64, "64 bits"),
                         ({"a": [-(1 << 63) - 1]}, "64 bits"), ({"a": {"": 1}}, "empty key")]:
        kind, message = error(await conn.ask("doc.set", {"space": space, "doc": doc,
                                                         "path": "v", "value": value}))
        assert kind == "InvalidParams" and words in message
    await conn.ok("doc.set", space=space, doc=doc, path="v", value=(1 << 63) - 1)


async def test_a_bug_is_an_internal_error_answer_not_a_closed_connection(
        conn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(ctx: api.Context, p: Any) -> Any:
        raise RuntimeError("boom")
    monkeypatch.setitem(OPS, "ping", api.Op(ops.NoParams, boom))
    assert error(await conn.ask("ping")) == ("InternalError", "RuntimeError: boom")
    assert (await conn.ok("whoami"))["peer_id"]


def test_every_schema_matches_its_function_and_the_docs() -> None:
    doc_text = DOCS.read_text()
    for name, spec in ops.LOCAL_OPS.items():
        declared = list(spec.params.__struct_fields__)
        taken = list(inspect.signature(spec.fn).parameters)[1:]
        assert declared == taken, name
    for name in OPS:
        assert f"`{name}`" in doc_text, f"{name} is not in docs/local-api.md"
