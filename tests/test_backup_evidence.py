"""A receipt is evidence, not just a signature (issues 20.4 and 12.7): its claims must hang
together, and a backup restored from an older copy is flagged on the device that saw the newer
receipt — while sync repairs the backup and the device never goes back to older heads."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from p2psync.agent.backups import Ours, collect_receipts, compare, judge
from p2psync.backup.config import ReplicatorConfig
from p2psync.backup.policy import BackupPolicy
from p2psync.backup.receipt import Receipt, verify_receipt
from p2psync.crypto import AccountKey, DeviceKey
from p2psync.node import Node
from p2psync.replica.space import Space
from p2psync.sync.ldiff import LDiff
from tests.backup_helpers import edit
from tests.conftest import Fleet
from tests.sync_helpers import converged, fast_config, wait_any


def _ours(node: Node, space: Space) -> Ours:
    assert node.store is not None
    return Ours.of(space, node.replicas.ldiff(space.id), node.store)


def _receipt(ld: LDiff, **over: object) -> Receipt:
    base = Receipt("s", b"d" * 32, b"a" * 32, 0, b"n" * 32, (), ld.hash(), len(ld), 3, 300,
                   dict(ld.items()))
    return replace(base, **over)  # type: ignore[arg-type]


def _ld(*objects: bytes) -> LDiff:
    ld = LDiff()
    for i, t in enumerate(objects):
        ld.set(t, bytes([i]) * 32)
    return ld


def test_a_copied_root_with_made_up_totals_is_not_evidence() -> None:
    ld = _ld(b"x" * 32)
    ours = Ours(ld, changes=3, size=300)
    assert judge(_receipt(ld), ours) == []
    liar = _receipt(ld, objects_count=0, changes_count=0, size=0, objects=None)
    (problem,) = judge(liar, ours)
    assert "claims our exact set" in problem
    view = compare(liar, ours)
    assert not view["all_backed_up"] and view["documents_backed_up"] == 0
    assert not view["evidence_ok"]


def test_the_receipt_must_name_the_certificate_account_and_list_what_it_counts() -> None:
    ld = _ld(b"x" * 32, b"y" * 32)
    ours = Ours(ld, changes=3, size=300)
    assert "another account" in judge(_receipt(ld), ours, account=b"b" * 32)[0]
    short = _receipt(ld, objects={b"x" * 32: bytes(32)}, root=bytes(32))
    assert "lists 1 objects but claims 2" in judge(short, ours)[0]


def test_a_deleted_object_missing_from_the_next_receipt_is_not_a_rollback() -> None:
    x, y = b"x" * 32, b"y" * 32
    prev = {"held_ids": [x.hex(), y.hex()], "receipt_time": 0, "backup_objects": 2}
    now_ld = _ld(x)
    rec = _receipt(now_ld, root=bytes(32))
    assert judge(rec, Ours(_ld(x, y), 3, 300, deleted=frozenset({y})), previous=prev) == []
    assert "rolled back" in judge(rec, Ours(_ld(x, y), 3, 300), previous=prev)[0]


async def _start_backup(fleet: Fleet, path: Path, account: AccountKey,
                        device: DeviceKey) -> tuple[Node, BackupPolicy]:
    node = await Node(path, account, device, config=fast_config()).start()
    policy = BackupPolicy(node.replicas, ReplicatorConfig()).install()
    return fleet.track(node), policy


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
    shutil.copy(path, old)  # the old copy: only the first document

    backup, _ = await _start_backup(fleet, path, bacc, bdev)
    d2 = space.new_document()
    edit(space, d2.tree.id, "b", 2)
    engine = await laptop.connect(backup.address())
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    status = await collect_receipts([engine], space, _ours(laptop, space))
    (newer,) = status["receipts"]
    assert newer["evidence_ok"] and newer["all_backed_up"] and newer["documents"] == 2
    await engine.close()
    await backup.close()

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(old, path)  # the operator restores last week's copy
    backup, policy = await _start_backup(fleet, path, bacc, bdev)
    heads_before = laptop.replicas.ldiff(space.id).hash()
    nonce = os.urandom(32)
    rolled = verify_receipt(policy.receipt(backup.spaces[space.id], nonce), device=bdev.public,
                            space_id=space.id, nonce=nonce)
    view = compare(rolled, _ours(laptop, space), account=bacc.public, previous=newer)
    assert not view["evidence_ok"] and not view["all_backed_up"]
    assert any("rolled back" in p for p in view["problems"])

    # sync repairs the backup from the device; the device never goes back
    engine = await laptop.connect(backup.address())
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    assert laptop.replicas.ldiff(space.id).hash() == heads_before
    after = await collect_receipts([engine], space, _ours(laptop, space),
                                   previous={"receipts": [newer]})
    assert after["receipts"][0]["evidence_ok"] and after["receipts"][0]["all_backed_up"]
