"""Health and metrics of a backup: Prometheus text format over a tiny asyncio HTTP server.

The exposition is ``prometheus_client``'s (no hand-written text format): :class:`SampleCollector`
turns the backup's samples (name, help, type, value) into metric families, and the service
registers it next to the agent's collector (:mod:`p2psync.http.metrics`), so a backup serves the
same ``p2psync_*`` names as every agent plus its own ``p2psync_backup_*``. :class:`MetricsServer`
answers ``GET /metrics`` and ``GET /health`` (``ok``) on a configured, by default localhost,
port: kept hand-written (40 lines of asyncio, one request per connection, bounded request
size) because a backup on a Pi need not run the HTTP API to be scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MAX_REQUEST = 8192


@dataclass(frozen=True)
class Sample:
    """One metric: Prometheus name, help text, type (gauge/counter) and value."""

    name: str
    help: str
    kind: str
    value: float


class SampleCollector(Collector):
    """Metric families from ``collect()``'s samples, read at each scrape."""

    def __init__(self, collect: Callable[[], list[Sample]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        for s in self._collect():
            family = CounterMetricFamily if s.kind == "counter" else GaugeMetricFamily
            yield family(s.name, s.help, value=s.value)


def registry_of(*collectors: Collector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    for c in collectors:
        reg.register(c)
    return reg


def render(samples: list[Sample]) -> str:
    """Prometheus text exposition format 0.0.4 of ``samples``."""
    return bytes(generate_latest(registry_of(SampleCollector(lambda: samples)))).decode()


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """``(method, path)`` of an HTTP request head, or None when it is not one."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    return parts[0], parts[1].split("?", 1)[0]


class MetricsServer:
    """Serves ``collect()`` (or a registry) at /metrics and a liveness answer at /health."""

    def __init__(self, collect: Callable[[], list[Sample]] | CollectorRegistry, host: str,
                 port: int) -> None:
        self.registry = collect if isinstance(collect, CollectorRegistry) else \
            registry_of(SampleCollector(collect))
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> MetricsServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            writer.close()
            return
        req = parse_request_line(head[:MAX_REQUEST])
        if req is None:
            status, body, ctype = "400 Bad Request", "bad request\n", "text/plain"
        elif req[0] != "GET":
            status, body, ctype = "405 Method Not Allowed", "GET only\n", "text/plain"
        elif req[1] == "/metrics":
            status, body = "200 OK", bytes(generate_latest(self.registry)).decode()
            ctype = "text/plain; version=0.0.4; charset=utf-8"
        elif req[1] == "/health":
            status, body, ctype = "200 OK", "ok\n", "text/plain"
        else:
            status, body, ctype = "404 Not Found", "try /metrics or /health\n", "text/plain"
        data = body.encode()
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                     f"{len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
