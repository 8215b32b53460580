"""Issue 20.4: a storage receipt is evidence, not a claim.

Before, ``space backup-status`` said "all backed up" when the receipt's root matched ours — the
root our own device had sent the replicator — so a replicator that stored nothing could copy
it, claim 0 objects and pass. Now the receipt's account must be the connection's, its counts
must be consistent (and cover what we hold when it claims our root), and the backup must
return the ciphertext of randomly chosen changes; a backup claiming less than it ever claimed
before is flagged as rolled back."""

from __future__ import annotations

from typing import Any

from p2psync.agent.backups import collect_receipts
from p2psync.backup.policy import BackupPolicy
from p2psync.backup.receipt import Receipt, sign_receipt
from p2psync.replica.space import Space
from tests.backup_helpers import edit
from tests.conftest import Fleet
from tests.sync_helpers import converged, wait_any


class CopyingPolicy(BackupPolicy):
    """A replicator that echoes the root it was sent and claims to store nothing."""

    def receipt(self, space: Space, nonce: bytes) -> bytes:
        ld = self.replicas.ldiff(space.id)
        rec = Receipt(space.id, self.replicas.device.public, self.replicas.account.public,
                      0, nonce, tuple(space.acl.heads), ld.hash(), 0, 0, 0, None)
        return sign_receipt(self.replicas.device, rec)


async def _setup(fleet: Fleet) -> tuple[Any, Any, Space, Any]:
    backup, _policy = await fleet.backup()
    laptop = await fleet.node("laptop")
    space = laptop.create_space()
    for i in range(3):
        d = space.new_document()
        edit(space, d.tree.id, "a", i)
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, backup.account.public))
    engine = await laptop.connect(backup.address())
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    return laptop, backup, space, engine


async def test_an_honest_backup_is_proven(fleet: Fleet) -> None:
    laptop, _backup, space, engine = await _setup(fleet)
    out = await collect_receipts([engine], space, laptop.replicas.ldiff(space.id))
    (r,) = out["receipts"]
    assert r["all_backed_up"] and r["account_ok"] and r["counts_ok"] and not r["rolled_back"]
    assert r["challenge"]["proven"] == r["challenge"]["asked"] == 3
    assert r["proven_at"] is not None and r["proof"].startswith("signed receipt + 3 of 3")
    # the same backup later claiming fewer changes (restored from an older copy) is flagged
    older = dict(r, seen_changes=r["backup_changes"] + 5)
    again = await collect_receipts([engine], space, laptop.replicas.ldiff(space.id),
                                   previous={"receipts": [older]})
    (r2,) = again["receipts"]
    assert r2["rolled_back"] and not r2["all_backed_up"]
    assert r2["seen_changes"] == r["backup_changes"] + 5  # the flag stays until it catches up
    # a receipt signed for another account than the connection's proves nothing
    engine.remote_account = bytes(32)
    third = await collect_receipts([engine], space, laptop.replicas.ldiff(space.id))
    (r3,) = third["receipts"]
    assert not r3["account_ok"] and not r3["all_backed_up"]


async def test_a_backup_copying_our_root_is_not_backed_up(fleet: Fleet) -> None:
    laptop, backup, space, engine = await _setup(fleet)
    CopyingPolicy(backup.replicas, fleet_policy_config(backup)).install()
    out = await collect_receipts([engine], space, laptop.replicas.ldiff(space.id))
    (r,) = out["receipts"]
    assert r["signature_ok"] and not r["counts_ok"] and not r["all_backed_up"]


async def test_a_backup_that_lost_the_changes_fails_the_challenge(fleet: Fleet) -> None:
    laptop, backup, space, engine = await _setup(fleet)
    # the backup's store loses every change (its receipt still copies our root and counts)
    real = backup.replicas.policy

    class Amnesiac(CopyingPolicy):
        def receipt(self, space: Space, nonce: bytes) -> bytes:
            ld = laptop.replicas.ldiff(space.id)
            bytes_, changes = laptop.store.space_usage()[space.id]
            rec = Receipt(space.id, self.replicas.device.public, self.replicas.account.public,
                          0, nonce, (), ld.hash(), len(ld), changes, bytes_, None)
            return sign_receipt(self.replicas.device, rec)

    Amnesiac(backup.replicas, real.config).install()
    bs = backup.spaces[space.id]
    backup.store.delete_trees(bs.tree_ids())
    for tid in list(bs.tree_ids()):
        bs._known_trees.discard(tid)  # simulate the lost data
        bs._trees.pop(tid, None)
    out = await collect_receipts([engine], space, laptop.replicas.ldiff(space.id))
    (r,) = out["receipts"]
    assert r["counts_ok"] and r["challenge"]["proven"] == 0 and not r["all_backed_up"]


def fleet_policy_config(backup: Any) -> Any:
    policy = backup.replicas.policy
    assert isinstance(policy, BackupPolicy)
    return policy.config


async def test_an_empty_space_is_backed_up_without_a_challenge(fleet: Fleet) -> None:
    backup, _policy = await fleet.backup()
    laptop = await fleet.node("laptop")
    space = laptop.create_space()
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, backup.account.public))
    engine = await laptop.connect(backup.address())
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    (r,) = (await collect_receipts([engine], space, laptop.replicas.ldiff(space.id)))["receipts"]
    assert r["all_backed_up"] and r["challenge"]["asked"] == 0
    assert r["proof"] == "signed receipt (no documents)"
