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


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... event=... k=v`` — one line per record, grep-able."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        msg = record.getMessage()
        if "event=" not in msg:
            msg = 'msg="' + msg.replace('"', "'") + '"'
        line = f"ts={ts}.{int(record.msecs):03d} level={record.levelname.lower()} " \
               f"logger={record.name} {msg}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


def setup_logging(level: str) -> None:
    """Structured logs on stderr; quiet (warnings) unless the config asks for more."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
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
