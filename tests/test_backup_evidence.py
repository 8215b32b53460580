"""A backup restored from an older copy of its store (issue 12.7, 20.4), for real: the backup's
SQLite file is swapped for last week's copy. The device that saw the newer receipt flags it,
sync repairs the backup, and the device never goes back to older heads. A tombstone that
legitimately shrinks the backup is not a rollback."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from p2psync.agent.backups import collect_receipts, compare, judge
from p2psync.backup.config import ReplicatorConfig
from p2psync.backup.policy import BackupPolicy
from p2psync.backup.receipt import verify_receipt
from p2psync.crypto import AccountKey, DeviceKey
from p2psync.node import Node
from p2psync.replica.space import Space
from tests.backup_helpers import edit
from tests.conftest import Fleet
from tests.sync_helpers import converged, fast_config, wait_any


async def _start_backup(fleet: Fleet, path: Path, account: AccountKey,
                        device: DeviceKey) -> tuple[Node, BackupPolicy]:
    node = await Node(path, account, device, config=fast_config()).start()
    policy = BackupPolicy(node.replicas, ReplicatorConfig()).install()
    return fleet.track(node), policy


def _usage(node: Node, space: Space) -> tuple[int, int]:
    assert node.store is not None
    return node.store.space_usage().get(space.id, (0, 0))


async def test_a_backup_restored_from_an_older_copy_is_flagged_and_repaired(
        fleet: Fleet, tmp_path: Path) -> None:
    laptop = await fleet.node("laptop")
    bacc, bdev = AccountKey.generate(), DeviceKey.generate()
    path, old = tmp_path / "backup.sqlite3", tmp_path / "old-copy.sqlite3"
    backup, _ = await _start_backup(fleet, path, bacc, bdev)
    space = laptop.create_space()
    d1 = space.new_document()
    edit(space, d1.tree.id, "a", 1)
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, bacc.public))
    engine = await laptop.connect(backup.address())
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    await engine.close()
    await backup.close()
    shutil.copy(path, old)  # last week's copy: one document

    backup, _ = await _start_backup(fleet, path, bacc, bdev)
    d2 = space.new_document()
    edit(space, d2.tree.id, "b", 2)
    engine = await laptop.connect(backup.address())
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    status = await collect_receipts([engine], space, laptop.replicas.ldiff(space.id))
    (newer,) = status["receipts"]
    assert newer["all_backed_up"] and not newer["rolled_back"] and newer["documents"] == 2
    await engine.close()
    await backup.close()

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(old, path)  # the operator restores the old copy
    backup, policy = await _start_backup(fleet, path, bacc, bdev)
    heads_before = laptop.replicas.ldiff(space.id).hash()
    nonce = os.urandom(32)  # the receipt the restored backup gives before any sync
    rec = verify_receipt(policy.receipt(backup.spaces[space.id], nonce), device=bdev.public,
                         space_id=space.id, nonce=nonce)
    size, changes = _usage(laptop, space)
    out = judge(rec, compare(rec, laptop.replicas.ldiff(space.id)),
                connection_account=bacc.public, local_changes=changes, local_bytes=size,
                challenge=None, previous=newer, now=time.time())
    assert out["rolled_back"] and not out["all_backed_up"]

    # sync repairs the backup from the device; the device never goes back
    engine = await laptop.connect(backup.address())
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    assert laptop.replicas.ldiff(space.id).hash() == heads_before
    after = await collect_receipts([engine], space, laptop.replicas.ldiff(space.id),
                                   previous={"receipts": [out]})
    assert after["receipts"][0]["all_backed_up"] and not after["receipts"][0]["rolled_back"]


async def test_a_tombstone_that_shrinks_the_backup_is_not_a_rollback(fleet: Fleet) -> None:
    backup, _ = await fleet.backup()
    laptop = await fleet.node("laptop")
    space = laptop.create_space()
    docs = [space.new_document() for _ in range(2)]
    for i, d in enumerate(docs):
        edit(space, d.tree.id, "k", i)
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, backup.account.public))
    engine = await laptop.connect(backup.address())
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    first = (await collect_receipts([engine], space, laptop.replicas.ldiff(space.id)))
    assert first["receipts"][0]["all_backed_up"]
    space.delete_objects([docs[1].tree.id])
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    second = await collect_receipts([engine], space, laptop.replicas.ldiff(space.id),
                                    previous=first)
    (view,) = second["receipts"]
    assert view["backup_objects"] == 1 and not view["rolled_back"] and view["all_backed_up"]
