"""The backup as a real process (``p2psync backup run``) over real sockets: closed-laptop
store-and-forward, no plaintext in any of its files (WAL included), no document ever loaded
(guard metric), metrics endpoint, and SIGKILL during heavy pushes losing nothing acknowledged."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from p2psync.backup.receipt import Receipt, verify_receipt
from p2psync.crypto.ids import decode_key
from p2psync.node import Node
from p2psync.replica.acl import Acl
from p2psync.replica.store import Store
from p2psync.sync.engine import PeerEngine
from p2psync.sync.ldiff import heads_hash
from tests.backup_helpers import edit
from tests.netns import JsonLinesProcess
from tests.sync_helpers import close_all, documents_json, make_node, wait_any

REPO = Path(__file__).resolve().parent.parent
MARKER = "PLAINTEXT-MARKER-7f3a9c"
DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_backup_home(home: Path, metrics_port: int = 0) -> dict[str, Any]:
    env = dict(os.environ, P2PSYNC_PASSPHRASE="", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "p2psync", "--json", "init", "--home",
                          str(home)], capture_output=True, text=True, env=env, check=True,
                         timeout=60)
    (home / "config.toml").write_text(
        f'listen = "127.0.0.1"\nquic_port = {free_udp_port()}\ntcp_port = -1\nmdns = false\n'
        f'durable = true\n[replicator]\nmetrics_port = {metrics_port}\n')
    ident = json.loads(out.stdout)
    got = json.loads(subprocess.run(
        [sys.executable, "-m", "p2psync", "--json", "backup", "id", "--home", str(home)],
        capture_output=True, text=True, env=env, check=True, timeout=60).stdout)
    assert got["account_id"] == ident["account_id"] and got["addresses"]
    return dict(got)


async def start_backup(home: Path) -> tuple[JsonLinesProcess, dict[str, Any]]:
    env = dict(os.environ, P2PSYNC_PASSPHRASE="", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    err = (home / "stderr.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2psync", "--json", "backup", "run", "--home", str(home),
        stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL,
        env=env, start_new_session=True)
    err.close()
    jp = JsonLinesProcess(proc, name="backup", stderr_path=home / "stderr.log")
    ready = await jp.expect(lambda ln: ln.get("event") == "ready", 30, what="backup ready")
    return jp, ready


@pytest.fixture
async def procs() -> AsyncIterator[list[JsonLinesProcess]]:
    started: list[JsonLinesProcess] = []
    try:
        yield started
    finally:
        for p in started:
            await p.aclose()


async def receipt(engine: PeerEngine, space_id: str) -> Receipt:
    nonce = os.urandom(32)
    raw = await engine.request_receipt(space_id, nonce)
    return verify_receipt(raw, device=engine.remote_device, space_id=space_id, nonce=nonce)


async def until_backed_up(node: Node, engine: PeerEngine, space_id: str) -> Receipt:
    """Ask for receipts until one covers our whole state (status polling with a deadline)."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if space_id in engine.shared or not engine.conn.is_closed:
            try:
                rec = await receipt(engine, space_id)
            except Exception:
                rec = None
            if rec is not None and rec.root == node.space_hash(space_id):
                return rec
        await asyncio.sleep(0.1)  # poll interval of a status query, bounded by the deadline
    raise AssertionError("the backup never acknowledged our state")


async def metrics(port: int) -> dict[str, float]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = (await asyncio.wait_for(r.read(), 10)).decode()
    w.close()
    head, _, body = data.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and "version=0.0.4" in head
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            k, v = line.split(" ")
            out[k] = float(v)
    return out


def grep_files(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            hits.append(str(path))
    return hits


async def test_closed_laptop_via_a_backup_process_holds_no_plaintext(
        tmp_path: Path, procs: list[JsonLinesProcess]) -> None:
    bhome = tmp_path / "backup"
    mport = free_port()
    ident = init_backup_home(bhome, metrics_port=mport)
    backup, ready = await start_backup(bhome)
    procs.append(backup)
    addr = ready["listening"][0].removeprefix("quic:")
    laptop = await make_node(tmp_path, "laptop")
    phone = await make_node(tmp_path, "phone")
    try:
        space = laptop.create_space()
        docs = []
        for i in range(3):
            d = space.new_document()
            edit(space, d.tree.id, "body", f"{MARKER} document {i} " + "x" * 200)
            docs.append(d.tree.id)
        space.emit_acl(lambda acl: acl.add_replicator(
            laptop.account, decode_key("a", ident["account_id"])))
        code = laptop.invite(space.id)
        engine = await laptop.connect(addr, "quic")
        rec = await until_backed_up(laptop, engine, space.id)
        assert rec.objects_count == 3 and rec.changes_count == 6
        await laptop.close()  # closed laptop: never online with the phone
        await phone.join(code, [f"quic:{addr}"])
        await wait_any([phone], lambda: len(phone.spaces[space.id].tree_ids()) == 3
                       and phone.space_hash(space.id) == rec.root)
        got = documents_json(phone, space.id)
        assert all(MARKER in got[t]["body"] for t in docs)
        m = await metrics(mport)
        assert m["p2psync_backup_spaces"] == 1 and m["p2psync_backup_changes"] >= 6
        assert m["p2psync_backup_document_loads_total"] == 0
        assert m["p2psync_backup_peers"] >= 1
        # no plaintext anywhere in the backup home, while running (WAL present) and after stop
        assert (bhome / "store.sqlite3-wal").exists()
        assert grep_files(bhome, MARKER.encode()) == []
        assert await backup.stop() == 0
        assert grep_files(bhome, MARKER.encode()) == []
        # and the marker really is in the device's own (decrypted) view only
        assert MARKER.encode() not in (tmp_path / "phone.sqlite3").read_bytes()
    finally:
        await close_all([laptop, phone])


async def test_sigkill_during_heavy_pushes_loses_nothing_acknowledged(
        tmp_path: Path, procs: list[JsonLinesProcess]) -> None:
    bhome = tmp_path / "backup"
    ident = init_backup_home(bhome)
    backup, ready = await start_backup(bhome)
    procs.append(backup)
    addr = ready["listening"][0].removeprefix("quic:")
    laptop = await make_node(tmp_path, "laptop")
    try:
        space = laptop.create_space()
        trees = [space.new_document().tree.id for _ in range(4)]
        states: dict[bytes, tuple[bytes, ...]] = {}  # heads hash -> heads, every state we made

        def remember(_sid: str, tid: bytes, res: Any) -> None:
            states[heads_hash(res.heads)] = tuple(res.heads)
        space.tree_listeners.append(remember)
        space.emit_acl(lambda acl: acl.add_replicator(
            laptop.account, decode_key("a", ident["account_id"])))
        engine = await laptop.connect(addr, "quic")
        await until_backed_up(laptop, engine, space.id)
        acked: dict[bytes, bytes] = {}
        killed = False
        n = 0
        # the connection dies with the backup: the pending receipt request fails or is cancelled
        with pytest.raises((Exception, asyncio.CancelledError)):
            for n in range(100_000):
                edit(space, trees[n % 4], f"k{n % 50}", n)
                if n % 25 == 24:
                    rec = await asyncio.wait_for(receipt(engine, space.id), 10)
                    assert rec.objects is not None
                    acked.update(rec.objects)
                    if n >= 400 and not killed:
                        os.killpg(backup.proc.pid, signal.SIGKILL)  # mid-stream, pushes queued
                        killed = True
        assert killed and len(acked) == 4 and n > 400
        await backup.aclose()
        store = Store(bhome / "store.sqlite3")
        try:
            assert store.integrity_check() == "ok"
            acl = Acl.from_records(space.id, [r for _, r in store.list_acl_records(space.id)],
                                   owner=space.header.owner)
            for tid, hh in acked.items():
                heads = states.get(hh)
                assert heads is not None, "the receipt named a state we never made"
                tree = store.load_tree(space.id, tid, acl)
                assert all(h in tree for h in heads), "an acknowledged change was lost"
        finally:
            store.close()
        # restart: the backup opens its store and serves again
        backup2, ready2 = await start_backup(bhome)
        procs.append(backup2)
        laptop2_engine = await laptop.connect(ready2["listening"][0].removeprefix("quic:"),
                                              "quic")
        await until_backed_up(laptop, laptop2_engine, space.id)
    finally:
        await close_all([laptop])
