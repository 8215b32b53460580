"""Shared fixtures: ``fleet`` builds nodes, agents and backups and always closes them.

A test asks for what it needs and never writes ``try/finally: close_all``::

    async def test_x(fleet):
        a, b = await fleet.nodes("a", "b")
        agent = await fleet.agent("c")

Everything the fleet made (plus anything handed to :meth:`Fleet.track`) is closed in reverse
order when the test ends, whether it passed, failed or timed out. Helpers are imported as
``tests.<helper>`` (one style, see ``tests/__init__.py``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from p2psync.agent.core import Agent
from p2psync.config import AgentConfig
from p2psync.crypto.ids import peer_id
from p2psync.crypto.keys import account_from_phrase, new_recovery_phrase
from p2psync.home import Home
from p2psync.node import Node, NodeConfig
from tests.netns import JsonLinesProcess
from tests.sync_helpers import fast_config, make_node


class Closable(Protocol):
    async def close(self) -> Any: ...


C = TypeVar("C", bound=Closable)


class Fleet:
    """Nodes, agents and servers of one test, closed together at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._open: list[Closable] = []

    def track(self, thing: C) -> C:
        """Close ``thing`` with the fleet (an API server, a raw connection, …)."""
        self._open.append(thing)
        return thing

    async def node(self, name: str, *, config: NodeConfig | None = None,
                   **kw: Any) -> Node:
        """A started :class:`Node` on loopback (``tests.sync_helpers.fast_config``)."""
        return self.track(await make_node(self.tmp_path, name, config=config or fast_config(),
                                          **kw))

    async def nodes(self, *names: str, **kw: Any) -> list[Node]:
        return [await self.node(n, **kw) for n in names]

    async def backup(self, name: str = "backup", **kw: Any) -> tuple[Node, Any]:
        """An in-process backup node with its storage policy installed."""
        from tests.backup_helpers import make_backup

        node, policy = await make_backup(self.tmp_path, name, **kw)
        return self.track(node), policy

    async def agent(self, name: str, **config: Any) -> Agent:
        """A started in-process :class:`~p2psync.agent.core.Agent` (no mDNS, loopback,
        ephemeral ports); ``config`` overrides :class:`~p2psync.config.AgentConfig` fields."""
        home = Home(self.tmp_path / name)
        keys = home.create(account_from_phrase(new_recovery_phrase()), "")
        cfg = AgentConfig(**{"listen": "127.0.0.1", "quic_port": 0, "tcp_port": 0,
                             "mdns": False, "durable": False, "reconnect_cap": 1.0, **config})
        return self.track(await Agent(home, keys, cfg).start())

    @staticmethod
    def peer_id() -> str:
        """A valid peer id nobody holds (a squatter's made-up identity)."""
        return peer_id(os.urandom(32))

    async def close(self) -> None:
        while self._open:
            await self._open.pop().close()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        await f.close()


@pytest.fixture
async def procs() -> AsyncIterator[list[JsonLinesProcess]]:
    """Child processes a test starts (agents, backups): append them; all are stopped at the end,
    also when the test fails."""
    started: list[JsonLinesProcess] = []
    try:
        yield started
    finally:
        for p in started:
            await p.aclose()
