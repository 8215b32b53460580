"""Helpers for engine/node tests: fast nodes on loopback, convergence checks, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.node import Node, NodeConfig
from p2psync.sync.engine import EngineConfig
from p2psync.transport.api import TransportName

TIMEOUT = 20.0


def fast_config(transport: TransportName = "tcp", *, port: int = 0, seed: int | None = None,
                **engine: Any) -> NodeConfig:
    """A node config for tests: non-durable store, quick reconnects, quick timeouts."""
    eng = EngineConfig(request_timeout=10.0, exchange_timeout=5.0, seed=seed, **engine)
    return NodeConfig(listen=[("127.0.0.1", port, transport)], engine=eng,
                      reconnect_base=0.05, reconnect_cap=0.4, durable=False, seed=seed)


async def make_node(tmp_path: Path, name: str, *, account: AccountKey | None = None,
                    device: DeviceKey | None = None, config: NodeConfig | None = None) -> Node:
    node = Node(tmp_path / f"{name}.sqlite3", account or AccountKey.generate(),
                device or DeviceKey.generate(), config=config or fast_config())
    return await node.start()


async def wait_any(nodes: Sequence[Node], predicate: Callable[[], bool],
                   timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds, re-checking whenever any of ``nodes`` changes."""
    async with asyncio.timeout(timeout):
        while not predicate():
            waits = [asyncio.ensure_future(n.replicas.changed()) for n in nodes if not n.closed]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()


def converged(nodes: Sequence[Node], space_id: str) -> bool:
    """Every node holds the space with the same head-sync fingerprint."""
    hashes = set()
    for n in nodes:
        if space_id not in n.spaces:
            return False
        hashes.add(n.space_hash(space_id))
    return len(hashes) == 1


def documents_json(node: Node, space_id: str) -> dict[bytes, Any]:
    space = node.spaces[space_id]
    return {tid: space.document(tid).to_json() for tid in space.tree_ids()}


async def close_all(nodes: Sequence[Node]) -> None:
    for n in nodes:
        await n.close()
