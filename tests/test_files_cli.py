"""Encrypted files from the CLI (no agent: straight on the store) and over the local API of a
running agent: add, list, get, an edit re-adding only changed chunks."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from p2psync import api
from p2psync.agent.core import Agent
from p2psync.api import ApiServer
from p2psync.cli import main
from p2psync.config import AgentConfig
from p2psync.crypto.keys import account_from_phrase, new_recovery_phrase
from p2psync.home import Home


def _cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> Any:
    assert main(["--json", *args, "--home", str(home)]) == 0
    out = capsys.readouterr().out
    return json.loads(out) if out.strip() else None


def test_cli_add_list_get_edit(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PSYNC_PASSPHRASE", "")
    home = tmp_path / "h"
    _cli(capsys, home, "init")
    sp = _cli(capsys, home, "space", "create", "photos")["space_id"]
    src = tmp_path / "cat.png"
    data = random.Random(1).randbytes(2_000_000)
    src.write_bytes(data)
    added = _cli(capsys, home, "file", "add", sp, str(src))
    assert added["new_chunks"] == added["chunks"] and added["size"] == len(data)
    [row] = _cli(capsys, home, "file", "list", sp)
    assert (row["name"], row["media_type"], row["complete"]) == ("cat.png", "image/png", True)
    out = tmp_path / "out.png"
    _cli(capsys, home, "file", "get", sp, row["file"][:10], str(out))
    assert out.read_bytes() == data
    src.write_bytes(data[:900_000] + b"whiskers" + data[900_000:])
    again = _cli(capsys, home, "file", "add", sp, str(src), "--file", row["file"][:10])
    assert again["file"] == row["file"] and 1 <= again["new_chunks"] <= 2
    _cli(capsys, home, "file", "get", sp, row["file"], str(out))
    assert out.read_bytes() == src.read_bytes()


async def test_local_api_file_ops(tmp_path: Path) -> None:
    home = Home(tmp_path / "a")
    keys = home.create(account_from_phrase(new_recovery_phrase()), "")
    cfg = AgentConfig(listen="127.0.0.1", quic_port=None, tcp_port=0, mdns=False,
                      durable=False)
    agent = await Agent(home, keys, cfg).start()
    server = await ApiServer(agent).start()
    reader, writer = await asyncio.open_unix_connection(str(server.path),
                                                        limit=api.MAX_LINE * 2)
    n = 0

    async def ok(op: str, **params: Any) -> Any:
        nonlocal n
        n += 1
        writer.write(json.dumps({"id": n, "op": op, "params": params}).encode() + b"\n")
        await writer.drain()
        while True:
            msg = json.loads(await reader.readline())
            if "event" not in msg:
                assert msg["ok"], msg
                return msg["result"]

    try:
        sp = (await ok("space.create", name="docs"))["space_id"]
        src = tmp_path / "report.pdf"
        src.write_bytes(random.Random(2).randbytes(500_000))
        fid = (await ok("file.add", space=sp, path=str(src)))["file"]
        info = await ok("file.info", space=sp, file=fid)
        assert info["media_type"] == "application/pdf" and info["complete"]
        await ok("file.get", space=sp, file=fid, out=str(tmp_path / "copy.pdf"))
        assert (tmp_path / "copy.pdf").read_bytes() == src.read_bytes()
    finally:
        writer.close()
        await server.close()
        await agent.close()
