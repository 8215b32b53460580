"""A device that knows several addresses of one backup cluster (issue 19: "devices can use
any of them (several addresses in config …)"): every process is the same backup device, so
the agent keeps one connection to it; when that process dies the agent's redial reaches
another address, which answers as the same backup and has everything (docs/backup-cluster.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from p2psync.backup.receipt import Receipt
from p2psync.crypto.ids import decode_key
from p2psync.node import Node
from p2psync.sync.engine import PeerEngine
from tests.backup_helpers import edit, receipt
from tests.cluster_scenario import BackupCluster, start_cluster, stored_changes
from tests.conftest import Fleet
from tests.netns import JsonLinesProcess
from tests.pg import fresh_schema, pg_server  # noqa: F401  (a fixture)


def to_backup(node: Node, cl: BackupCluster) -> PeerEngine | None:
    return next((e for e in node.engines if not e.conn.is_closed and e.ready.is_set()
                 and e.conn.peer_id == cl.peer_id), None)


def process_of(engine: PeerEngine, cl: BackupCluster) -> int:
    """Which process a dialled connection reaches (by port: the host may be v4-mapped)."""
    port = engine.conn.remote_address[1]
    return [int(a.rsplit(":", 1)[1]) for a in cl.addresses].index(port)


async def backed_up(node: Node, cl: BackupCluster, space_id: str,
                    not_this: PeerEngine | None = None) -> tuple[PeerEngine, Receipt]:
    """A receipt covering our state from the backup through whichever connection to it is
    up (the agent dials every address; the duplicate is closed within moments)."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        e = to_backup(node, cl)
        if e is not None and e is not not_this:
            with contextlib.suppress(Exception):
                rec = await asyncio.wait_for(receipt(e, space_id), 5)
                if rec.root == node.space_hash(space_id) and not e.conn.is_closed:
                    return e, rec
        await asyncio.sleep(0.1)  # status polling with a deadline
    raise AssertionError("no process of the backup acknowledged our state")


async def test_a_device_with_every_address_fails_over_to_another_process(
        tmp_path: Path, procs: list[JsonLinesProcess], fleet: Fleet,
        pg_server: str) -> None:  # noqa: F811
    cl = await start_cluster(tmp_path, fresh_schema(pg_server), 2, procs)
    agent = await fleet.agent("laptop", peers=[f"quic://{a}" for a in cl.addresses])
    node = agent.node
    space = node.create_space()
    doc = space.new_document()
    edit(space, doc.tree.id, "body", "before")
    space.flush()
    space.emit_acl(lambda acl: acl.add_replicator(node.account,
                                                   decode_key("a", cl.account_id)))
    first, _ = await backed_up(node, cl, space.id)
    used = process_of(first, cl)
    assert node.store is not None
    held = sum(node.store.count_changes(t) for t in space.tree_ids())
    assert stored_changes(cl.url) == held  # in the shared database
    cl.procs[used].kill_now()
    edit(space, doc.tree.id, "body", "after the kill")
    space.flush()
    t0 = time.monotonic()
    # the agent notices (keepalive), redials: the other address answers as the same device
    second, _ = await backed_up(node, cl, space.id, not_this=first)
    took = time.monotonic() - t0
    assert process_of(second, cl) != used
    assert bytes(second.remote_device) == bytes(first.remote_device)
    assert stored_changes(cl.url) == sum(node.store.count_changes(t) for t in space.tree_ids())
    print(f"failover: backed up through process {1 - used} {took:.1f} s after the kill")
