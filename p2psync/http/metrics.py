"""Prometheus metrics of a running agent, read from live state at each scrape.

Built on ``prometheus_client`` (not a hand-written exposition): a custom collector
(:class:`AgentCollector`) turns :meth:`Agent.status`-level state into metric families when
``/metrics`` is scraped, and the HTTP server's own request and error counters are ordinary
``Counter`` objects in the same per-agent registry (one registry per agent, never the global
one: several agents may share a process, as in the tests). Names are listed in docs/http.md.

Traffic counters (bytes, messages) live on each connection and vanish with it; to keep them
monotonic the collector holds the connections it saw at the last scrape and, when one has
gone, adds its final counts to a retired total. A connection that opens and closes entirely
between two scrapes is not counted (a node-level hook would be needed for that).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from p2psync import __version__

if TYPE_CHECKING:
    from p2psync.agent.core import Agent
    from p2psync.sync.engine import PeerEngine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TRAFFIC = ("bytes_in", "bytes_out", "messages_in", "messages_out")


class AgentCollector(Collector):
    """Gauges and counters of one agent: connections, endpoints, spaces, sync, traffic."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._live: dict[int, PeerEngine] = {}
        self._retired = dict.fromkeys(_TRAFFIC, 0)

    def _traffic(self) -> dict[str, int]:
        """Totals over every connection seen, closed ones included (see the module doc)."""
        engines = {id(e): e for e in self.agent.node.engines}
        for key, gone in list(self._live.items()):
            if key not in engines:
                st = gone.status()
                for name in _TRAFFIC:
                    self._retired[name] += getattr(st, name)
                del self._live[key]
        self._live.update(engines)
        totals = dict(self._retired)
        for e in engines.values():
            st = e.status()
            for name in _TRAFFIC:
                totals[name] += getattr(st, name)
        return totals

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        ns = agent.node.status()
        info = InfoMetricFamily("p2psync_agent", "the agent: version and identity")
        info.add_metric([], {"version": __version__, "peer_id": ns.peer_id,
                             "account_id": ns.account_id})
        yield info
        yield GaugeMetricFamily("p2psync_uptime_seconds", "seconds since the agent started",
                                value=time.monotonic() - agent.started_at)
        conns = GaugeMetricFamily("p2psync_connections", "open peer connections",
                                  labels=["transport"])
        by_transport: dict[str, int] = {}
        for p in ns.peers:
            if p.connected:
                by_transport[p.transport] = by_transport.get(p.transport, 0) + 1
        for transport, n in sorted(by_transport.items()):
            conns.add_metric([transport], n)
        yield conns
        yield GaugeMetricFamily("p2psync_endpoints", "peer endpoints in the address book",
                                value=len(ns.dialing))
        yield GaugeMetricFamily("p2psync_dial_failures",
                                "failed dials since each endpoint's last success (summed)",
                                value=sum(d.attempts for d in ns.dialing))
        yield GaugeMetricFamily("p2psync_spaces", "spaces on this device", value=len(ns.spaces))
        yield GaugeMetricFamily("p2psync_documents", "documents in every space",
                                value=sum(s.objects for s in ns.spaces))
        peers = GaugeMetricFamily("p2psync_space_peers",
                                  "connected peers a space is synced with", labels=["space"])
        in_sync = GaugeMetricFamily("p2psync_space_peers_in_sync",
                                    "of those, peers that agree with our current state",
                                    labels=["space"])
        pending = GaugeMetricFamily("p2psync_space_pending_documents",
                                    "documents found different and not yet synced (all peers)",
                                    labels=["space"])
        for s in ns.spaces:
            peers.add_metric([s.space_id], s.peers)
            in_sync.add_metric([s.space_id], s.peers_in_sync)
            pending.add_metric([s.space_id], sum(
                ps.pending_trees for p in ns.peers for ps in p.spaces
                if ps.space_id == s.space_id))
        yield peers
        yield in_sync
        yield pending
        yield GaugeMetricFamily(
            "p2psync_sync_errors", "(peer, space) pairs whose last sync job failed",
            value=sum(1 for p in ns.peers for ps in p.spaces if ps.last_error))
        yield GaugeMetricFamily("p2psync_peer_strikes",
                                "protocol strikes against connected peers (summed)",
                                value=sum(p.strikes for p in ns.peers))
        traffic = self._traffic()
        yield CounterMetricFamily("p2psync_received_bytes", "bytes received from peers",
                                  value=traffic["bytes_in"])
        yield CounterMetricFamily("p2psync_sent_bytes", "bytes sent to peers",
                                  value=traffic["bytes_out"])
        yield CounterMetricFamily("p2psync_received_messages", "sync messages received",
                                  value=traffic["messages_in"])
        yield CounterMetricFamily("p2psync_sent_messages", "sync messages sent",
                                  value=traffic["messages_out"])
        yield GaugeMetricFamily("p2psync_subscribers", "change-stream subscriptions",
                                value=len(agent._subs))


class Metrics:
    """One agent's registry: the collector plus the HTTP server's own counters."""

    def __init__(self, agent: Agent) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(agent))
        self.requests = Counter("p2psync_api_requests", "HTTP API requests answered",
                                ["path", "status"], registry=self.registry)
        self.errors = Counter("p2psync_api_errors", "HTTP API requests answered with an error",
                              ["type"], registry=self.registry)

    def observe(self, path: str, status: int, error_type: str | None = None) -> None:
        """Count one answer; ``path`` is the route's pattern ("unmatched" for none), so the
        label set stays bounded whatever paths clients try."""
        self.requests.labels(path=path, status=str(status)).inc()
        if error_type is not None:
            self.errors.labels(type=error_type).inc()

    def render(self) -> bytes:
        out: Any = generate_latest(self.registry)
        return bytes(out)
