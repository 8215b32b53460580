"""``p2psync backup run`` / ``backup id``: the agent in replicator mode, headless.

The process is an ordinary :class:`~p2psync.agent.core.Agent` (listeners, mDNS, address book,
local API socket) with three additions: the :class:`BackupPolicy` installed in its sync layer
before any peer is served, the document guard (:mod:`p2psync.backup.guard`), and the metrics
endpoint. It holds no read keys: it is a replicator, never a member, of the spaces it stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from collections.abc import Callable
from typing import Any

from p2psync.agent.core import Agent
from p2psync.agent.run import serve_until_signalled
from p2psync.backup import guard
from p2psync.backup.cluster import check_identity
from p2psync.backup.metrics import MetricsServer, Sample, SampleCollector, registry_of
from p2psync.backup.policy import BackupPolicy
from p2psync.config import AgentConfig
from p2psync.crypto.keystore import Keystore
from p2psync.errors import P2PSyncError
from p2psync.home import Home
from p2psync.node import Node

log = logging.getLogger(__name__)


class BackupService:
    """A running backup: agent + policy + metrics. ``await start()`` … ``await close()``."""

    def __init__(self, home: Home, keys: Keystore, config: AgentConfig) -> None:
        self.home = home
        self.keys = keys
        self.config = config
        self.policy: BackupPolicy | None = None
        self.agent = Agent(home, keys, config, setup=self._setup,
                           store=config.replicator.store or None)
        self.metrics: MetricsServer | None = None
        self.started = time.monotonic()
        self._errors_closed = 0  #: sync errors of connections that have ended
        self._errors_live: dict[int, int] = {}
        self._watch: asyncio.Task[None] | None = None
        self._follow: asyncio.Task[None] | None = None

    def _setup(self, node: Node) -> None:
        # a database claimed by another backup is refused before any peer is served
        check_identity(node.store, self.keys.device.public)
        guard.forbid_documents()
        self.policy = BackupPolicy(node.replicas, self.config.replicator).install()

    async def start(self) -> BackupService:
        await self.agent.start()
        rc = self.config.replicator
        if rc.metrics_port:
            from p2psync.http.metrics import AgentCollector

            # the backup's own samples next to the metrics every agent has (one set of names)
            registry = registry_of(SampleCollector(self.collect), AgentCollector(self.agent))
            self.metrics = await MetricsServer(registry, rc.metrics_listen,
                                               rc.metrics_port).start()
        self._watch = asyncio.get_running_loop().create_task(self._watch_errors())
        watch = getattr(self.agent.node.store, "watch", None)
        if watch is not None:  # a shared database: follow the other processes' writes
            self._follow = asyncio.get_running_loop().create_task(watch(self._refresh))
            self._follow.add_done_callback(_report_end)
        return self

    def _refresh(self, space_id: str, tree_id: bytes | None) -> None:
        """Another backup process on our database stored changes of this tree: take them in
        and push them to our connected devices (docs/backup-cluster.md)."""
        try:
            self.agent.node.replicas.refresh(space_id, tree_id)
            usage_of = getattr(self.agent.node.store, "space_usage_of", None)
            if self.policy is not None and usage_of is not None:
                self.policy.resync(space_id, usage_of(space_id))
        except P2PSyncError as exc:
            log.warning("refresh of %s after a notify failed: %s", space_id, exc)

    async def close(self) -> None:
        for task in (self._watch, self._follow):
            if task is not None:
                task.cancel()
        if self.metrics is not None:
            await self.metrics.close()
        await self.agent.close()

    async def _watch_errors(self) -> None:
        """Keep sync-error counts of ended connections (each engine's last value counts)."""
        replicas = self.agent.node.replicas
        while True:
            await replicas.changed()
            self._tally_errors()

    def _tally_errors(self) -> int:
        live: dict[int, int] = {}
        for e in list(self.agent.node.engines):
            st = e.sched.status()
            live[id(e)] = e.strikes + st.given_up
        for key, value in self._errors_live.items():
            if key not in live:
                self._errors_closed += value
        self._errors_live = live
        return self._errors_closed + sum(live.values())

    def collect(self) -> list[Sample]:
        """The metrics, read from live state."""
        node = self.agent.node
        assert self.policy is not None
        usage = self.policy.usage.total
        objects = sum(len(node.replicas.ldiff(s)) for s in node.spaces)
        store_bytes = 0
        # the SQLite files; 0 on a database server (its size is the server's to report)
        for suffix in () if self.config.replicator.store else ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                store_bytes += os.stat(str(node.store_path) + suffix).st_size
        quota_out = sum(e.quota_refusals for e in node.engines)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return [
            Sample("p2psync_backup_up", "1 while the backup runs", "gauge", 1),
            Sample("p2psync_backup_uptime_seconds", "seconds since start", "gauge",
                   round(time.monotonic() - self.started, 3)),
            Sample("p2psync_backup_spaces", "spaces stored", "gauge", len(node.spaces)),
            Sample("p2psync_backup_objects", "objects (documents) stored", "gauge", objects),
            Sample("p2psync_backup_changes", "signed changes stored", "gauge", usage.changes),
            Sample("p2psync_backup_bytes", "bytes of raw changes stored", "gauge", usage.bytes),
            Sample("p2psync_backup_store_file_bytes", "SQLite files on disk incl. WAL", "gauge",
                   store_bytes),
            Sample("p2psync_backup_peers", "connected peers", "gauge",
                   len(self.agent.connected_peers())),
            Sample("p2psync_backup_sync_errors_total",
                   "protocol violations and abandoned sync jobs", "counter",
                   self._tally_errors()),
            Sample("p2psync_backup_quota_refusals_total", "batches refused by a quota",
                   "counter", self.policy.usage.refusals),
            Sample("p2psync_backup_quota_notices_sent", "refusals told to live peers", "gauge",
                   quota_out),
            Sample("p2psync_backup_spaces_fetched_total", "spaces fetched after an offer",
                   "counter", self.policy.fetches),
            Sample("p2psync_backup_spaces_refused_total", "offered spaces refused", "counter",
                   self.policy.refused_spaces),
            Sample("p2psync_backup_document_loads_total",
                   "attempts to load a document (must stay 0)", "counter", guard.attempts),
            Sample("p2psync_backup_max_rss_bytes", "peak resident memory", "gauge", rss),
        ]


def _report_end(task: asyncio.Task[None]) -> None:
    """The watch reconnects on its own; it only ends on cancel (shutdown) or a bug of ours."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the watch of the shared database ended: %r; this process no longer "
                  "follows the others' writes (restart it)", task.exception())


async def serve_backup(home: Home, keys: Keystore, config: AgentConfig,
                       emit: Callable[[dict[str, Any]], None]) -> int:
    """Run the backup until SIGTERM/SIGINT (the local API socket runs too); exit code."""
    svc = BackupService(home, keys, config)
    return await serve_until_signalled(
        svc.agent, svc.start, svc.close,
        lambda api: {"event": "ready", "mode": "backup", "peer_id": keys.device.id,
                     "account_id": keys.account.id, "listening": svc.agent.node.addresses,
                     "addresses": svc.agent.reachable_addresses(), "socket": str(api.path),
                     "metrics": None if svc.metrics is None else
                     f"http://{svc.metrics.host}:{svc.metrics.port}/metrics"},
        emit)
