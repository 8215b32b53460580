"""A seeded multi-node sync simulation over the in-memory carrier (no sockets).

:class:`MemoryNet` runs ``n`` devices (each: its own account, store, :class:`Replicas` and one
:class:`PeerEngine` per link) joined by :func:`~p2psync.transport.memory.memory_pair` pipes.
:meth:`MemoryNet.run` plays a random script drawn from one seed — edits on random documents,
links cut and re-made, devices restarted from their store — then heals the network, makes one
last edit on every device while all links are up (only push carries those quickly) and waits
for every device to hold the same documents. The script (every action and every value
written) is a function of the seed alone, so a failing seed replays the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.crypto.cert import DeviceCertificate
from p2psync.node import sync_transport_config
from p2psync.replica.document import ROOT
from p2psync.replica.store import Store
from p2psync.sync.engine import EngineConfig, PeerEngine
from p2psync.sync.replicas import Replicas
from p2psync.sync.spacex import header_exchange_key
from p2psync.transport.memory import MemoryPipe, memory_pair


@dataclass
class SimNode:
    """One simulated device."""

    index: int
    path: Path
    account: AccountKey = field(default_factory=AccountKey.generate)
    device: DeviceKey = field(default_factory=DeviceKey.generate)
    store: Store | None = None
    replicas: Replicas | None = None

    def __post_init__(self) -> None:
        self.certificate = DeviceCertificate.issue(self.account, self.device)

    @property
    def up(self) -> bool:
        return self.replicas is not None

    def start(self) -> None:
        self.store = Store(self.path, durable=False)
        self.replicas = Replicas(self.store, self.account, self.device)

    def stop(self) -> None:
        assert self.store is not None
        self.store.close()
        self.store = self.replicas = None


@dataclass
class Link:
    pipe: MemoryPipe
    engines: tuple[PeerEngine, PeerEngine]
    tasks: tuple[asyncio.Task[None], asyncio.Task[None]]


class MemoryNet:
    """``n`` devices sharing one space, linked and unlinked at random from ``seed``."""

    def __init__(self, tmp: Path, n: int, seed: int, *, config: EngineConfig | None = None,
                 ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        tmp.mkdir(parents=True, exist_ok=True)
        self.nodes = [SimNode(i, tmp / f"sim{seed}-{i}.sqlite3") for i in range(n)]
        self.links: dict[tuple[int, int], Link] = {}
        self.config = config or EngineConfig(request_timeout=5.0, exchange_timeout=5.0,
                                             seed=seed)
        self.space_id = ""
        self.expected: dict[int, dict[str, Any]] = {}  #: doc number -> key -> value written
        self.docs: dict[int, bytes] = {}  #: doc number -> tree id (once created)
        self.log: list[str] = []  #: the script as played (for reproducibility checks)

    # --- links ---------------------------------------------------------------------------------
    async def connect(self, i: int, j: int) -> None:
        a, b = self.nodes[i], self.nodes[j]
        assert a.replicas is not None and b.replicas is not None
        conn_a, conn_b, pipe = await memory_pair(
            a.device, a.certificate, b.device, b.certificate,
            config=sync_transport_config(), names=(f"n{i}", f"n{j}"))
        ea = PeerEngine(a.replicas, conn_a, self.config)
        eb = PeerEngine(b.replicas, conn_b, self.config)
        loop = asyncio.get_running_loop()
        self.links[(i, j)] = Link(pipe, (ea, eb),
                                  (loop.create_task(ea.run()), loop.create_task(eb.run())))
        await asyncio.wait_for(asyncio.gather(ea.ready.wait(), eb.ready.wait()), 5)

    async def cut(self, key: tuple[int, int]) -> None:
        link = self.links.pop(key)
        link.pipe.cut()
        await asyncio.gather(*link.tasks, return_exceptions=True)

    async def restart(self, i: int) -> None:
        for key in [k for k in self.links if i in k]:
            await self.cut(key)
        self.nodes[i].stop()
        self.nodes[i].start()

    # --- the script ----------------------------------------------------------------------------
    async def setup(self) -> None:
        """Node 0 creates the space; every other node joins it by invite over a link to 0."""
        for node in self.nodes:
            node.start()
        owner = self.nodes[0].replicas
        assert owner is not None
        space = owner.create_space()
        self.space_id = space.id
        for i in range(1, len(self.nodes)):
            raw, code = space.acl.invite(owner.account, anyone_can_join=True)
            space.commit_acl(raw)
            await self.connect(0, i)
            await self.links[(0, i)].engines[1].bootstrap(space.id, code)

    def edit(self, i: int, doc: int, key: str, value: int) -> None:
        reps = self.nodes[i].replicas
        assert reps is not None
        space = reps.spaces[self.space_id]
        if doc not in self.docs:
            d = space.new_document()
            self.docs[doc] = d.tree.id
        elif not space.has_tree(self.docs[doc]):
            return  # this node has not received that document yet: edit another time
        d = space.document(self.docs[doc])
        with d.edit() as e:
            e.put(ROOT, key, value)
        self.expected.setdefault(doc, {})[key] = value

    async def tick(self, n: int) -> None:
        """Let the event loop run ``n`` rounds (messages move; no wall-clock waits)."""
        for _ in range(n):
            await asyncio.sleep(0)

    async def run(self, steps: int = 120) -> None:
        rng, n = self.rng, len(self.nodes)
        await self.setup()
        for step in range(steps):
            roll = rng.random()
            i = rng.randrange(n)
            if roll < 0.6:
                doc = rng.randrange(max(1, min(len(self.docs) + 1, 8)))
                self.log.append(f"edit {i} d{doc} k{step}")
                self.edit(i, doc, f"k{step}", step)
            elif roll < 0.75:
                j = rng.randrange(n)
                key = (min(i, j), max(i, j))
                if i != j and key not in self.links:
                    self.log.append(f"link {key}")
                    await self.connect(*key)
            elif roll < 0.9:
                if self.links:
                    key = rng.choice(sorted(self.links))
                    self.log.append(f"cut {key}")
                    await self.cut(key)
            else:
                self.log.append(f"restart {i}")
                await self.restart(i)
            await self.tick(rng.randrange(1, 30))
        await self.heal()

    async def heal(self) -> None:
        """Link every device to the next (a ring), then one edit per device with all links
        up: with push off those would wait for the 30 s periodic head sync."""
        n = len(self.nodes)
        for i in range(n):
            key = (min(i, (i + 1) % n), max(i, (i + 1) % n))
            if key[0] != key[1] and key not in self.links:
                self.log.append(f"link {key}")
                await self.connect(*key)
        await self.wait_idle()
        for i in range(n):
            self.edit(i, 0, f"final{i}", i)
            self.log.append(f"edit {i} d0 final{i}")

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every engine is idle (nothing queued, in flight or waiting to be pushed)."""
        await self.wait(lambda: all(e.idle for link in self.links.values()
                                    for e in link.engines), timeout)

    async def wait(self, predicate: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                waits = [nd.replicas.changed() for nd in self.nodes if nd.replicas is not None]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()

    # --- checks --------------------------------------------------------------------------------
    def documents(self, i: int) -> dict[bytes, Any]:
        reps = self.nodes[i].replicas
        assert reps is not None
        space = reps.spaces[self.space_id]
        return {tid: space.document(tid).to_json() for tid in space.tree_ids()}

    def converged(self) -> bool:
        """Every device holds every document with every value ever written."""
        want = {self.docs[d]: kv for d, kv in self.expected.items()}
        return all(self.documents(i) == want for i in range(len(self.nodes)))

    async def close(self) -> None:
        for key in list(self.links):
            await self.cut(key)
        for node in self.nodes:
            if node.up:
                node.stop()


class Running:
    """Both engines of each memory link made by :meth:`link`, run as tasks; :meth:`close`
    ends them all (shared by the memory-carrier hardening and engine-wiring tests)."""

    def __init__(self) -> None:
        self.engines: list[PeerEngine] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def link(self, a: SimNode, b: SimNode, config: EngineConfig,
                   ) -> tuple[PeerEngine, PeerEngine]:
        assert a.replicas is not None and b.replicas is not None
        ca, cb, _ = await memory_pair(a.device, a.certificate, b.device, b.certificate,
                                      config=sync_transport_config())
        ea, eb = PeerEngine(a.replicas, ca, config), PeerEngine(b.replicas, cb, config)
        self.engines += [ea, eb]
        self.tasks += [asyncio.ensure_future(ea.run()), asyncio.ensure_future(eb.run())]
        await asyncio.wait_for(asyncio.gather(ea.ready.wait(), eb.ready.wait()), 5)
        return ea, eb

    async def close(self) -> None:
        for e in self.engines:
            await e.close("test done")
        await asyncio.gather(*self.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def lying_member(a: SimNode, evil: SimNode, space: Any, answer: Callable[[Any], Any],
                       config: EngineConfig) -> AsyncIterator[tuple[PeerEngine, Any]]:
    """``a``'s real engine facing ``evil``, a member that answers our requests with
    ``answer(msg)`` (a :class:`tests.sync_helpers.RawPeer` over a memory link, real Noise);
    yields ``(engine, peer)`` and stops everything, both nodes included, at the end."""
    from tests.sync_helpers import RawPeer

    assert a.replicas is not None
    ca, cb, _ = await memory_pair(a.device, a.certificate, evil.device, evil.certificate,
                                  config=sync_transport_config())
    engine = PeerEngine(a.replicas, ca, config)
    task = asyncio.ensure_future(engine.run())
    keys = {space.id: header_exchange_key(space.header.raw, space.id)}
    peer = RawPeer(cb, evil.device, keys, answer=answer)
    try:
        await peer._start()
        yield engine, peer
    finally:
        await peer.close()
        await asyncio.gather(task, return_exceptions=True)
        a.stop()
        evil.stop()
