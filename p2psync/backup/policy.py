"""The backup's admission rules, hooked into the sync layer as its ``StoragePolicy``
(:class:`p2psync.sync.replicas.StoragePolicy`, the declared seam; docs/seams.md).

* **Spaces** are taken only when their ACL names this account as replicator (and, if
  ``accounts`` is configured, the owner is allowed); a member's ``SPACE_OFFER`` makes the
  backup fetch such a space at once (no manual step).
* **Changes** are counted against per-space / per-owner quotas before they are stored; a batch
  that would pass one is refused whole (``QuotaExceeded`` → ``STORAGE_REFUSED`` to the
  pusher). Signatures, ids, DAG and ACL write rules are checked by the replica as on any peer.
* **Receipts**: answers "which heads of S do you hold" with a statement signed by the device key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from p2psync.backup.config import ReplicatorConfig
from p2psync.backup.quota import Usage
from p2psync.backup.receipt import MAX_LISTED, Receipt, sign_receipt
from p2psync.codec import content_id
from p2psync.errors import AccessDenied, P2PSyncError
from p2psync.replica.acl import Acl
from p2psync.replica.acl_records import DeleteObjects, DeleteSpace
from p2psync.replica.header import SpaceHeader
from p2psync.replica.space import Space
from p2psync.replica.tree import AddResult
from p2psync.sync.replicas import OfferingPeer, Replicas, StoragePolicy

log = logging.getLogger("p2psync.backup")


class BackupPolicy:
    """Quotas, replicator-only admission, automatic fetching and receipts for one backup."""

    #: A node running this policy shows its certificate to every authenticated initiator
    #: (``Node.reveals_to``): devices offer a backup spaces it cannot know in advance.
    answers_anyone = True

    def __init__(self, replicas: Replicas, config: ReplicatorConfig) -> None:
        self.replicas = replicas
        self.config = config
        self.usage = Usage(config.quotas)
        self.fetches = 0
        self.fetch_errors = 0
        self.refused_spaces = 0
        self._hooked: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        totals = replicas.store.space_usage()
        for sid, space in replicas.spaces.items():
            b, c = totals.get(sid, (0, 0))
            self.usage.add_space(sid, space.header.owner, b, c)
            self._hook(space)

    def install(self) -> BackupPolicy:
        self.replicas.policy = self
        return self

    # --- StoragePolicy -----------------------------------------------------------------------
    def admit_space(self, space_id: str, header: SpaceHeader, acl: Acl) -> None:
        me = self.replicas.account.public
        if me not in acl.state.replicators:
            self.refused_spaces += 1
            raise AccessDenied("this backup stores only spaces whose ACL names it replicator")
        if self.config.accounts and header.owner not in self.config.accounts:
            self.refused_spaces += 1
            raise AccessDenied("this backup does not store spaces of that owner")
        self.usage.add_space(space_id, header.owner)

    def admit_changes(self, space: Space, tree_id: bytes, raws: Sequence[bytes]) -> None:
        self._hook(space)
        if space.has_tree(tree_id):
            tree = space.tree(tree_id)
            raws = [r for r in raws if content_id(r) not in tree]
        self.usage.check(space.id, sum(len(r) for r in raws), len(raws))

    # --- counting what is stored -------------------------------------------------------------
    def _hook(self, space: Space) -> None:
        if space.id in self._hooked:
            return
        self._hooked.add(space.id)
        space.tree_listeners.append(self._on_tree)
        space.acl_listeners.append(self._on_acl)

    def _on_tree(self, space_id: str, tree_id: bytes, result: AddResult) -> None:
        self.usage.stored(space_id, sum(len(c.raw) for c in result.attached),
                          len(result.attached))

    def _on_acl(self, space_id: str, record_ids: list[bytes]) -> None:
        space = self.replicas.spaces.get(space_id)
        if space is None or not any(
                isinstance(space.acl.record(i).payload, (DeleteObjects, DeleteSpace))
                for i in record_ids if i in space.acl):
            return
        self.recount(space_id)  # a tombstone freed space

    def recount(self, space_id: str) -> None:
        """Set the space's tally to what the store holds now (after a tombstone, or after
        chunks were collected — also when a collection failed midway: the store, not what we
        meant to delete, is the truth). Receipts report this tally."""
        b, c = self.replicas.store.space_usage().get(space_id, (0, 0))
        t = self.usage.spaces.get(space_id)
        if t is not None:
            self.usage.stored(space_id, b - t.bytes, c - t.changes)

    # --- a cluster: other processes on our database (docs/backup-cluster.md) ----------------
    def resync(self, space_id: str, totals: tuple[int, int]) -> None:
        """Another process stored into this space: set its tally to the database's
        ``(bytes, changes)``, so quotas hold across the cluster (not only what passed here)."""
        space = self.replicas.spaces.get(space_id)
        if space is None:
            return
        self._hook(space)
        self.usage.add_space(space_id, space.header.owner)
        t = self.usage.spaces[space_id]
        self.usage.stored(space_id, totals[0] - t.bytes, totals[1] - t.changes)

    # --- offers: fetch spaces that name us replicator ----------------------------------------
    def on_offer(self, engine: OfferingPeer, space_id: str) -> None:
        """A member says "you replicate this space": fetch it (or refresh our ACL copy)."""
        if space_id in self.replicas.spaces:
            engine.shared.add(space_id)
            engine.submit(("acl", space_id, b""), 0)
            return
        task = asyncio.get_running_loop().create_task(self._fetch(engine, space_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, engine: OfferingPeer, space_id: str) -> None:
        try:
            await engine.bootstrap(space_id, None)
        except (P2PSyncError, TimeoutError) as exc:
            self.fetch_errors += 1
            log.info("event=replicate_failed space=%s peer=%s error=%r", space_id,
                     engine.conn.peer_id, str(exc))
            return
        self.fetches += 1
        log.info("event=replicating space=%s peer=%s", space_id, engine.conn.peer_id)
        self.replicas.notify()

    # --- receipts ----------------------------------------------------------------------------
    def receipt(self, space: Space, nonce: bytes) -> bytes:
        """A signed statement of the heads of ``space`` held here now."""
        ld = self.replicas.ldiff(space.id)
        t = self.usage.spaces.get(space.id)
        objs = dict(ld.items()) if len(ld) <= MAX_LISTED else None
        rec = Receipt(space.id, self.replicas.device.public, self.replicas.account.public,
                      int(time.time() * 1000), nonce, tuple(space.acl.heads), ld.hash(),
                      len(ld), t.changes if t else 0, t.bytes if t else 0, objs)
        return sign_receipt(self.replicas.device, rec)


def _conforms(policy: BackupPolicy) -> StoragePolicy:
    """Static check (mypy): BackupPolicy implements the declared seam."""
    return policy
