"""The backup as a real process (``p2psync backup run``) over real sockets: closed-laptop
store-and-forward, no plaintext in any of its files (WAL included), no document ever loaded
(guard metric), metrics endpoint, and SIGKILL during heavy pushes losing nothing acknowledged."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from p2psync.crypto.ids import decode_key
from p2psync.replica.acl import Acl
from p2psync.replica.store import Store
from p2psync.sync.ldiff import heads_hash
from tests.backup_helpers import (
    assert_no_plaintext,
    back_up_marked_space,
    edit,
    init_backup_home,
    new_marker,
    receipt,
    start_backup,
    until_backed_up,
)
from tests.netns import JsonLinesProcess
from tests.sync_helpers import close_all, documents_json, make_node, wait_any


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


async def test_closed_laptop_via_a_backup_process_holds_no_plaintext(
        tmp_path: Path, procs: list[JsonLinesProcess]) -> None:
    # the marker is short and random (Automerge does not compress it); back_up_marked_space
    # checks it is in the plaintext payloads, and tests/test_switch_off.py runs this same flow
    # with encryption off and sees assert_no_plaintext fail on the backup's files
    marker = new_marker()
    mb = await back_up_marked_space(tmp_path, procs, marker)
    laptop, space, rec, bhome = mb.laptop, mb.space, mb.receipt, mb.home
    phone = await make_node(tmp_path, "phone")
    try:
        assert rec.objects_count == 3 and rec.changes_count == 6
        await laptop.close()  # closed laptop: never online with the phone
        await phone.join(mb.invite, [f"quic:{mb.address}"])
        await wait_any([phone], lambda: len(phone.spaces[space.id].tree_ids()) == 3
                       and phone.space_hash(space.id) == rec.root)
        got = documents_json(phone, space.id)
        assert all(marker in got[t]["body"] for t in mb.docs)
        m = await metrics(mb.metrics_port)
        assert m["p2psync_backup_spaces"] == 1 and m["p2psync_backup_changes"] >= 6
        assert m["p2psync_backup_document_loads_total"] == 0
        assert m["p2psync_backup_peers"] >= 1
        # the metrics every agent has, under the same names (docs/http.md)
        assert m["p2psync_spaces"] == 1 and m["p2psync_received_bytes_total"] > 0
        # no plaintext anywhere in the backup home, while running (WAL present) and after stop
        assert (bhome / "store.sqlite3-wal").exists()
        assert_no_plaintext([bhome], marker)
        assert await mb.backup.stop() == 0
        assert_no_plaintext([bhome], marker)
        # the phone decrypts in memory only: its own store holds ciphertext too
        assert_no_plaintext(tmp_path.glob("phone.sqlite3*"), marker)
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
