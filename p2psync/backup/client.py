"""Deprecated alias: the device side of backups moved to :mod:`p2psync.agent.backups` and the
public :class:`~p2psync.agent.core.Agent` methods ``add_backup`` / ``backup_status``.

Kept only so callers that still import from here keep working until they are switched; it sits
above the agent (like :mod:`p2psync.backup.service`) and nothing below the agent imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from p2psync.agent.backups import (
    RECEIPTS_FILE,
    BackupError,
    BackupIdentity,
    add_replicator_record,
    compare,
    identify,
    load_receipts,
    save_receipt,
    write_backup_config,
)

if TYPE_CHECKING:  # pragma: no cover
    from p2psync.agent.core import Agent

__all__ = ["RECEIPTS_FILE", "BackupError", "BackupIdentity", "add_backup_agent",
           "add_replicator_record", "backup_status", "compare", "identify", "load_receipts",
           "save_receipt", "write_backup_config"]


async def add_backup_agent(agent: Agent, space_ref: str, address: str) -> dict[str, Any]:
    """Use :meth:`Agent.add_backup <p2psync.agent.core.Agent.add_backup>`."""
    return await agent.add_backup(space_ref, address)


async def backup_status(agent: Agent, space_ref: str, timeout: float = 10.0) -> dict[str, Any]:
    """Use :meth:`Agent.backup_status <p2psync.agent.core.Agent.backup_status>`."""
    return await agent.backup_status(space_ref, timeout)
