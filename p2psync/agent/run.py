"""``p2psync run``: the agent process — logging, event loop, signals, the local API socket.

Prints one JSON line ``{"event": "ready", ...}`` on stdout when the agent listens and the API
socket accepts connections (tests and service managers wait for it), and ``{"event":
"stopped"}`` after a clean shutdown. SIGTERM and SIGINT stop it gracefully: pending edits are
flushed, mDNS says goodbye, peers are disconnected, the store is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from p2psync.agent.core import Agent
from p2psync.config import AgentConfig
from p2psync.crypto.keystore import Keystore
from p2psync.home import Home

T = TypeVar("T")


def _iso(created: float) -> str:
    """Local time with its UTC offset and milliseconds: ``2026-12-03T11:30:00.123+01:00``."""
    t = time.localtime(created)
    off = time.strftime("%z", t)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(created * 1000) % 1000:03d}"
            + off[:3] + ":" + off[3:])


_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}  #: syslog levels


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... event=... k=v`` — one line per record, grep-able; the
    timestamp carries its UTC offset. Under journald (``$JOURNAL_STREAM`` set by systemd) the
    line starts with the syslog priority (``<4>``: journald files it at that level) and has no
    ``ts=`` (journald stamps each line itself)."""

    def __init__(self, journald: bool | None = None) -> None:
        super().__init__()
        self.journald = bool(os.environ.get("JOURNAL_STREAM")) if journald is None \
            else journald

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if "event=" not in msg:
            msg = 'msg="' + msg.replace('"', "'") + '"'
        line = f"level={record.levelname.lower()} logger={record.name} {msg}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        if self.journald:
            return f"<{_PRIORITY.get(record.levelname, 6)}>{line}"
        return f"ts={_iso(record.created)} {line}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (with UTC offset), ``level``, ``logger``, ``event`` and
    the record's ``key=value`` fields as keys (a message without ``event=`` is ``msg``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname.lower(),
                               "logger": record.name}
        msg = record.getMessage()
        if msg.startswith("event="):
            for key, value in _FIELD.findall(msg):
                if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                    value = value[1:-1].replace('\\"', '"')
                out.setdefault(key, value)
        else:
            out["msg"] = msg
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Structured logs on stderr (``fmt``: ``text`` key=value lines or ``json``); quiet
    (warnings) unless the config asks for more."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.WARNING))
    if level != "debug":
        logging.getLogger("zeroconf").setLevel(logging.ERROR)
        logging.getLogger("quic").setLevel(logging.WARNING)


def run_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main`` on uvloop when it is installed, else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(main())
    result: T = uvloop.run(main())
    return result


async def serve_until_signalled(
    agent: Agent, start: Callable[[], Coroutine[Any, Any, object]],
    close: Callable[[], Coroutine[Any, Any, None]],
    ready: Callable[[Any], dict[str, Any]], emit: Callable[[dict[str, Any]], None],
) -> int:
    """Start a service and its local API socket, emit ``ready(api)``, run until SIGTERM or
    SIGINT, then close both (edits flushed, mDNS goodbye, store closed); returns exit code."""
    from p2psync.api import ApiServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    api: ApiServer | None = None
    http: Any = None
    try:
        await start()
        api = await ApiServer(agent).start()
        http = await start_http(agent)
        emit({**ready(api), **({"http": http.url} if http is not None else {})})
        await stop.wait()
    finally:
        if http is not None:
            await http.close()
        if api is not None:
            await api.close()
        await close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    emit({"event": "stopped"})
    return 0


async def start_http(agent: Agent) -> Any:
    """The HTTP API, status page and metrics when ``[http] enabled`` (docs/http.md), else None."""
    if not agent.config.http.enabled:
        return None
    from p2psync.http.server import HttpServer

    return await HttpServer(agent).start()


async def serve(home: Home, keys: Keystore, config: AgentConfig,
                emit: Callable[[dict[str, Any]], None]) -> int:
    """Run the agent until SIGTERM/SIGINT; returns the exit code."""
    agent = Agent(home, keys, config)
    return await serve_until_signalled(
        agent, agent.start, agent.close,
        lambda api: {"event": "ready", "peer_id": keys.device.id,
                     "account_id": keys.account.id, "listening": agent.node.addresses,
                     "socket": str(api.path), "invite_hints": agent.reachable_addresses()},
        emit)
