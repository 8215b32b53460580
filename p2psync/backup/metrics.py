"""Health and metrics of a backup: Prometheus text format over a tiny asyncio HTTP server.

``render(samples)`` is pure (name, help, type, value) → text; :class:`MetricsServer` answers
``GET /metrics`` (the text) and ``GET /health`` (``ok``) on a configured, by default localhost,
port. No dependency beyond asyncio; one request per connection, bounded request size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

MAX_REQUEST = 8192


@dataclass(frozen=True)
class Sample:
    """One metric: Prometheus name, help text, type (gauge/counter) and value."""

    name: str
    help: str
    kind: str
    value: float


def render(samples: list[Sample]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for s in samples:
        lines.append(f"# HELP {s.name} {s.help}")
        lines.append(f"# TYPE {s.name} {s.kind}")
        v = int(s.value) if float(s.value).is_integer() else s.value
        lines.append(f"{s.name} {v}")
    return "\n".join(lines) + "\n"


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """``(method, path)`` of an HTTP request head, or None when it is not one."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    return parts[0], parts[1].split("?", 1)[0]


class MetricsServer:
    """Serves ``collect()`` at /metrics and a liveness answer at /health."""

    def __init__(self, collect: Callable[[], list[Sample]], host: str, port: int) -> None:
        self.collect = collect
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
            status, body = "200 OK", render(self.collect())
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
