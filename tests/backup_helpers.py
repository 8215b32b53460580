"""Helpers for backup tests: an in-process backup node (policy installed), edits, waiting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from p2psync.backup.config import Quotas, ReplicatorConfig
from p2psync.backup.policy import BackupPolicy
from p2psync.node import Node
from p2psync.replica.document import ROOT
from p2psync.replica.space import Space
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


async def hand_to_backup(owner: Node, backup: Node, space: Space, *, wait_for: Any = None) -> None:
    """The owner makes ``backup`` the space's replicator and connects to it; returns once the
    backup holds the space (and, with ``wait_for``, the invite of that code too), so a device
    can then join through the backup alone."""
    from tests.sync_helpers import converged, wait_any

    space.emit_acl(lambda acl: acl.add_replicator(owner.account, backup.account.public))
    await owner.connect(backup.address())
    await wait_any([owner, backup], lambda: converged([owner, backup], space.id) and (
        wait_for is None or wait_for.invite_id in backup.spaces[space.id].acl.state.invites))
