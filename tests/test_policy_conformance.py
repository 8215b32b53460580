"""The storage-policy conformance suite against the device default and the backup's policy,
plus what only the backup does: refuse a space that does not name it, refuse over quota, fetch
an offered space."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from p2psync.backup.config import Quotas, ReplicatorConfig
from p2psync.backup.policy import BackupPolicy
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.errors import AccessDenied, QuotaExceeded
from p2psync.replica.memstore import MemoryStore
from p2psync.sync.replicas import DevicePolicy, Replicas
from tests.conformance.policy_suite import (
    FakePeer,
    PolicySuite,
    PolicyWorld,
    _adopt,
    _Conn,
    _Source,
)


def _world(kind: str, *, replicator: bool = True, quotas: Quotas | None = None) -> PolicyWorld:
    owner = Replicas(MemoryStore(), AccountKey.generate(), DeviceKey.generate())
    holder = Replicas(MemoryStore(), AccountKey.generate(), DeviceKey.generate())
    space = owner.create_space()
    if replicator:
        space.emit_acl(lambda acl: acl.add_replicator(owner.account, holder.account.public))
    if kind == "backup":
        BackupPolicy(holder, ReplicatorConfig(quotas=quotas or Quotas())).install()
    return PolicyWorld(owner, holder, issues_receipts=kind == "backup")


@pytest.fixture(params=["device", "backup"])
def policy_world(request: pytest.FixtureRequest) -> Iterator[PolicyWorld]:
    yield _world(str(request.param))


class TestEveryPolicy(PolicySuite):
    """Runs the whole suite once per policy."""


def test_replicas_start_with_the_device_policy() -> None:
    r = Replicas(MemoryStore(), AccountKey.generate(), DeviceKey.generate())
    assert isinstance(r.policy, DevicePolicy)


def test_backup_refuses_a_space_that_does_not_name_it() -> None:
    w = _world("backup", replicator=False)
    with pytest.raises(AccessDenied, match="replicator"):
        _adopt(w)
    assert w.holder.spaces == {} and w.holder.store.list_spaces() == []


def test_backup_refuses_a_batch_over_quota_and_stores_nothing() -> None:
    w = _world("backup", quotas=Quotas(space_changes=1))
    mine, copy = _adopt(w)
    first, second = mine.new_document().tree, mine.new_document().tree
    w.holder.apply_changes(_Source(), copy, first.id, [mine.tree(first.id).root.raw])
    with pytest.raises(QuotaExceeded):
        w.holder.apply_changes(_Source(), copy, second.id, [mine.tree(second.id).root.raw])
    assert w.holder.store.list_trees(copy.id) == [first.id]


async def test_backup_fetches_an_offered_space_and_refreshes_a_held_one() -> None:
    w = _world("backup")
    _, copy = _adopt(w)
    peer = FakePeer(conn=_Conn())
    policy = w.holder.policy
    policy.on_offer(peer, copy.id)
    assert copy.id in peer.shared and peer.jobs == [(("acl", copy.id, b""), 0)]
    policy.on_offer(peer, "new.space")
    for _ in range(3):
        await asyncio.sleep(0)
    assert peer.bootstraps == ["new.space"]
    assert isinstance(policy, BackupPolicy) and policy.fetch_errors == 1
