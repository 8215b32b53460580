"""Convergence: 3-5 nodes over real loopback connections in random topologies, with random
concurrent edits, disconnects and restarts (close + reopen from the SQLite store). Afterwards
every node has identical heads and identical document JSON for every object."""

from __future__ import annotations

import asyncio
import random

import pytest

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.node import Node
from p2psync.replica.document import ROOT
from tests.conftest import Fleet
from tests.sync_helpers import (
    converged,
    documents_json,
    fast_config,
    wait_any,
)


def _topology(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """A random connected graph: a random spanning tree plus a few extra edges (i dials j)."""
    order = list(range(n))
    rng.shuffle(order)
    edges = {(order[i], order[rng.randrange(i)]) for i in range(1, n)}
    for _ in range(rng.randint(0, n)):
        a, b = rng.sample(range(n), 2)
        if (b, a) not in edges:
            edges.add((a, b))
    return sorted(edges)


@pytest.mark.parametrize("seed", [11, 22, 33])
async def test_random_topology_edits_disconnects_restarts(fleet: Fleet, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(3, 5)
    accounts = [AccountKey.generate() for _ in range(n)]
    devices = [DeviceKey.generate() for _ in range(n)]
    ports = [0] * n
    nodes: list[Node] = []

    async def start(i: int) -> Node:
        node = await fleet.node(f"n{i}", account=accounts[i], device=devices[i],
                                config=fast_config(port=ports[i], seed=seed * 10 + i,
                                                  head_sync_interval=2.0))
        ports[i] = int(node.address().rsplit(":", 1)[1])
        return node

    for i in range(n):
        nodes.append(await start(i))
    owner = nodes[0]
    space = owner.create_space()
    sid = space.id
    for i in range(1, n):
        code = owner.invite(sid)
        await nodes[i].join(code, keep=False)
    edges = _topology(rng, n)
    for a, b in edges:
        nodes[a].add_peer(nodes[b].address())

    alive = [True] * n
    for step in range(40):
        roll = rng.random()
        i = rng.choice([k for k in range(n) if alive[k]])
        sp = nodes[i].spaces[sid]
        if roll < 0.65:
            tids = sp.tree_ids()
            doc = (sp.new_document() if not tids or rng.random() < 0.2
                   else sp.document(rng.choice(tids)))
            with doc.edit() as e:
                e.put(ROOT, rng.choice("abcdef"), f"{i}-{step}")
        elif roll < 0.8:
            await nodes[i].disconnect_all()
        elif roll < 0.9 and sum(alive) > 2:
            await nodes[i].close()
            alive[i] = False
        else:
            for k in range(n):
                if not alive[k]:
                    nodes[k] = await start(k)
                    alive[k] = True
                    for a, b in edges:
                        if a == k:
                            nodes[k].add_peer(nodes[b].address())
        # random interleaving of edits with sync traffic (jitter, not synchronisation)
        await asyncio.sleep(rng.random() * 0.03)

    for k in range(n):
        if not alive[k]:
            nodes[k] = await start(k)
            for a, b in edges:
                if a == k:
                    nodes[k].add_peer(nodes[b].address())
    for node in nodes:
        node.reconnect_now()
    await wait_any(nodes, lambda: converged(nodes, sid), timeout=40)
    heads = [{t: nd.spaces[sid].heads(t) for t in nd.spaces[sid].tree_ids()} for nd in nodes]
    assert all(h == heads[0] for h in heads)
    docs = [documents_json(nd, sid) for nd in nodes]
    assert all(d == docs[0] for d in docs)
    assert len(docs[0]) >= 1
