"""Helpers for backup tests: an in-process backup node (policy installed), edits, waiting, a
backup as a real process, and no-plaintext checks that cannot pass vacuously."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psync.backup.config import Quotas, ReplicatorConfig
from p2psync.backup.policy import BackupPolicy
from p2psync.backup.receipt import Receipt, verify_receipt
from p2psync.crypto.ids import decode_key
from p2psync.node import Node
from p2psync.replica.document import ROOT
from p2psync.replica.space import Space
from p2psync.sync.engine import PeerEngine
from tests.netns import JsonLinesProcess
from tests.sync_helpers import fast_config, make_node

NO_PERIODIC = 3600.0  #: no periodic head sync: only pushes and offers can move data


async def make_backup(tmp_path: Path, name: str = "backup", quotas: Quotas | None = None,
                      **engine: Any) -> tuple[Node, BackupPolicy]:
    node = await make_node(tmp_path, name, config=fast_config(**engine))
    policy = BackupPolicy(node.replicas, ReplicatorConfig(quotas=quotas or Quotas())).install()
    return node, policy


def edit(space: Space, tree_id: bytes, key: str, value: Any) -> None:
    doc = space.document(tree_id)
    with doc.edit() as e:
        e.put(ROOT, key, value)


def held(node: Node, space_id: str, tree_id: bytes) -> int:
    assert node.store is not None
    if space_id not in node.spaces:
        return 0
    return node.store.count_changes(tree_id)


# --- no plaintext at rest ---------------------------------------------------------------------
#
# A "marker never appears in these files" check proves nothing unless the marker WOULD appear if
# the content were stored in the clear. Automerge deflates a change's columns once they pass a
# few hundred bytes, so a marker inside a long string is absent from an unencrypted change too.
# Markers here are short and random (never compressed, never a false hit), and every check has a
# control: the marker must be found in the plaintext payload (in-process) or in the files of an
# unencrypted run (tests/test_switch_off.py).


def new_marker() -> str:
    """A short random marker: too short for Automerge to compress, too random to hit by chance."""
    return "pm" + os.urandom(6).hex()


def files_containing(paths: Iterable[Path], needle: bytes) -> list[str]:
    """Every file under ``paths`` (files or directories) whose bytes contain ``needle``."""
    hits = []
    for root in paths:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file() and needle in path.read_bytes():
                hits.append(str(path))
    return hits


def assert_no_plaintext(paths: Iterable[Path], marker: str) -> None:
    """No file under ``paths`` holds the marker (checked files must exist: an empty glob passes
    nothing)."""
    paths = list(paths)
    assert paths and all(p.exists() for p in paths), f"nothing to check in {paths}"
    hits = files_containing(paths, marker.encode())
    assert hits == [], f"plaintext marker {marker!r} found in {hits}"


def assert_payloads_carry(space: Space, tree_ids: Iterable[bytes], marker: str) -> None:
    """Control: the decrypted payloads of these trees hold the marker as bytes, so a file storing
    them unencrypted WOULD show it (rules out compression hiding the marker)."""
    for tid in tree_ids:
        tree = space.document(tid).tree
        plain = b"".join(c.decrypt(k) for c in tree.changes()
                         if (k := tree.gate.read_key(c.read_key_id)) is not None)
        assert marker.encode() in plain, "the marker does not survive Automerge's encoding"


# --- a backup as a real process (``p2psync backup run``) ------------------------------------

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_backup_home(home: Path, metrics_port: int = 0, store: str = "") -> dict[str, Any]:
    env = dict(os.environ, P2PSYNC_PASSPHRASE="", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "p2psync", "--json", "init", "--home",
                          str(home)], capture_output=True, text=True, env=env, check=True,
                         timeout=60)
    (home / "config.toml").write_text(
        f'listen = "127.0.0.1"\nquic_port = {free_udp_port()}\ntcp_port = -1\nmdns = false\n'
        f'durable = true\n[replicator]\nmetrics_port = {metrics_port}\n'
        + (f'store = "{store}"\n' if store else ""))
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


@dataclass
class MarkedBackup:
    """A laptop's space, holding ``marker`` in every document, acknowledged by a backup process."""

    home: Path
    backup: JsonLinesProcess
    address: str
    metrics_port: int
    laptop: Node
    space: Space
    docs: list[bytes]
    receipt: Receipt
    marker: str
    invite: str  #: made before the backup synced, so the backup can admit a joiner


async def back_up_marked_space(tmp_path: Path, procs: list[JsonLinesProcess],
                               marker: str, ndocs: int = 3, store: str = "") -> MarkedBackup:
    """Start a backup process, make ``ndocs`` documents holding the marker on a laptop node,
    make the backup a replicator of the space and wait for a receipt covering it all.
    ``store``: the backup's ``[replicator] store`` ("" = its home's SQLite file)."""
    home = tmp_path / "backup"
    mport = free_port()
    ident = init_backup_home(home, metrics_port=mport, store=store)
    backup, ready = await start_backup(home)
    procs.append(backup)
    addr = ready["listening"][0].removeprefix("quic:")
    laptop = await make_node(tmp_path, "laptop")
    try:
        space = laptop.create_space()
        docs = []
        for i in range(ndocs):
            d = space.new_document()
            edit(space, d.tree.id, "body", f"{marker} {i}")
            docs.append(d.tree.id)
        space.flush()  # edits inside the coalescing window become changes now
        assert_payloads_carry(space, docs, marker)
        space.emit_acl(lambda acl: acl.add_replicator(
            laptop.account, decode_key("a", ident["account_id"])))
        code = laptop.invite(space.id)
        engine = await laptop.connect(addr, "quic")
        rec = await until_backed_up(laptop, engine, space.id)
    except BaseException:
        await laptop.close()
        raise
    return MarkedBackup(home, backup, addr, mport, laptop, space, docs, rec, marker, code)
async def hand_to_backup(owner: Node, backup: Node, space: Space, *, wait_for: Any = None) -> None:
    """The owner makes ``backup`` the space's replicator and connects to it; returns once the
    backup holds the space (and, with ``wait_for``, the invite of that code too), so a device
    can then join through the backup alone."""
    from tests.sync_helpers import converged, wait_any

    space.emit_acl(lambda acl: acl.add_replicator(owner.account, backup.account.public))
    await owner.connect(backup.address())
    await wait_any([owner, backup], lambda: converged([owner, backup], space.id) and (
        wait_for is None or wait_for.invite_id in backup.spaces[space.id].acl.state.invites))
