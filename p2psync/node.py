"""A minimal agent: one store, one identity, its spaces, listeners, dialled peers, engines.

:class:`Node` wires the layers: it opens the :class:`~p2psync.replica.store.Store` and every
space in it (:class:`~p2psync.sync.replicas.Replicas`), listens on QUIC and/or TCP, runs one
:class:`~p2psync.sync.engine.PeerEngine` per connection (incoming or dialled), keeps dialled
peers connected with jittered exponential backoff, joins spaces by invite code, and reports
truthful status (everything in :meth:`Node.status` is read from live state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.errors import JoinError, P2PSyncError, TransportError
from p2psync.replica.acl import InviteCode
from p2psync.replica.acl_records import Role
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from p2psync.sync.engine import EngineConfig, PeerEngine, PeerStatus
from p2psync.sync.ldiff import heads_hash
from p2psync.sync.messages import MAX_MESSAGE_SIZE
from p2psync.sync.replicas import Replicas
from p2psync.sync.sched import Backoff
from p2psync.transport.api import Server, TransportName, connect, listen
from p2psync.transport.connection import Connection, TransportConfig
from p2psync.transport.handshake import Limits

log = logging.getLogger("p2psync.node")


def sync_transport_config() -> TransportConfig:
    """Transport limits that fit the largest sync message (8 MiB) with room for framing."""
    return TransportConfig(limits=Limits(max_message=MAX_MESSAGE_SIZE + 4096,
                                         stream_window=16 << 20))


@dataclass
class NodeConfig:
    """Where to listen and how to behave; defaults suit a LAN agent."""

    #: (host, port, transport) to listen on; port 0 picks a free port.
    listen: list[tuple[str, int, TransportName]] = field(
        default_factory=lambda: [("127.0.0.1", 0, "tcp")])
    engine: EngineConfig = field(default_factory=EngineConfig)
    transport: TransportConfig = field(default_factory=sync_transport_config)
    reconnect_base: float = 0.5
    reconnect_cap: float = 30.0
    durable: bool = True  #: fsync every commit (False: WAL + synchronous=NORMAL)
    window: float = 0.0  #: edit coalescing window of documents (0: a change per edit)
    seed: int | None = None


@dataclass
class SpaceStatus:
    """One space on this node."""

    space_id: str
    role: str | None  #: our role ("replicator" if we only replicate it)
    objects: int
    heads_hash: str  #: fingerprint of every (object, heads) — equal on converged replicas
    peers: int  #: connected peers we sync it with
    peers_in_sync: int  #: of those, how many agreed on our current fingerprint


@dataclass
class DialStatus:
    """A dialled address and its reconnect state."""

    address: str
    transport: str
    connected: bool
    attempts: int  #: failures since the last successful connection
    next_attempt: float | None  #: wall time of the next dial, if waiting
    last_error: str | None


@dataclass
class NodeStatus:
    peer_id: str
    account_id: str
    listening: list[str]
    spaces: list[SpaceStatus]
    peers: list[PeerStatus]
    dialing: list[DialStatus]


class _Dialer:
    """Keeps one address connected: dial, run an engine, back off after failures."""

    def __init__(self, node: Node, address: str, transport: TransportName) -> None:
        self.node = node
        self.address = address
        self.transport: TransportName = transport
        self.engine: PeerEngine | None = None
        self.attempts = 0
        self.next_attempt: float | None = None
        self.last_error: str | None = None
        self.kick = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.removed = False

    async def run(self) -> None:
        node = self.node
        backoff = Backoff(base=node.config.reconnect_base, cap=node.config.reconnect_cap,
                          rng=node.rng)
        while not node.closed and not self.removed:
            self.next_attempt = None
            try:
                conn = await node._dial(self.address, self.transport)
            except (TransportError, OSError) as exc:
                self.attempts += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            else:
                if node.closed or self.removed:
                    await conn.close("node closing")
                    return
                self.attempts = 0
                self.engine = node._engine_for(conn)
                node.replicas.notify()
                await node._run_engine(self.engine)
                self.last_error = self.engine.last_error
                self.engine = None
                self.attempts += 1
            delay = backoff.delay(max(1, self.attempts))
            self.next_attempt = time.time() + delay
            node.replicas.notify()
            self.kick.clear()
            with contextlib.suppress(TimeoutError):
                # a reconnect timer (woken early by reconnect_now), not synchronisation
                async with asyncio.timeout(delay):
                    await self.kick.wait()

    def status(self) -> DialStatus:
        return DialStatus(self.address, self.transport, self.engine is not None,
                          self.attempts, self.next_attempt, self.last_error)


class Node:
    """One device: store + keys + spaces, listening, dialling and syncing."""

    def __init__(self, store_path: str | Path, account: AccountKey, device: DeviceKey, *,
                 certificate: DeviceCertificate | None = None,
                 config: NodeConfig | None = None) -> None:
        self.store_path = Path(store_path)
        self.account = account
        self.device = device
        self.certificate = certificate or DeviceCertificate.issue(account, device)
        self.config = config or NodeConfig()
        self.rng = random.Random(self.config.seed)
        self.store: Store | None = None
        self._replicas: Replicas | None = None
        self.servers: list[Server] = []
        self.engines: set[PeerEngine] = set()
        self._engine_tasks: set[asyncio.Task[None]] = set()
        self.dialers: dict[str, _Dialer] = {}
        self.closed = False

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> Node:
        """Open the store and every space in it, then listen."""
        self.store = Store(self.store_path, durable=self.config.durable)
        self._replicas = Replicas(self.store, self.account, self.device,
                                  window=self.config.window)
        for host, port, transport in self.config.listen:
            server = await listen(host, port, device_key=self.device,
                                  certificate=self.certificate, on_connection=self._incoming,
                                  transport=transport, config=self.config.transport)
            self.servers.append(server)
        return self

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop dialling, close every connection and listener, close the store."""
        if self.closed:
            return
        self.closed = True
        for d in self.dialers.values():
            d.removed = True
            d.kick.set()
            if d.task is not None:
                d.task.cancel()
        for engine in list(self.engines):
            await engine.close("node closing")
        tasks = [d.task for d in self.dialers.values() if d.task is not None]
        tasks += list(self._engine_tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self.servers:
            await server.close()
        if self.store is not None:
            self.store.close()

    @property
    def replicas(self) -> Replicas:
        if self._replicas is None:
            raise P2PSyncError("node is not started")
        return self._replicas

    @property
    def addresses(self) -> list[str]:
        """``transport:host:port`` of every listener (the form invite hints use)."""
        return [f"{s.transport}:{s.host}:{s.port}" for s in self.servers]

    def address(self, transport: TransportName = "tcp") -> str:
        for s in self.servers:
            if s.transport == transport:
                return f"{s.host}:{s.port}"
        raise P2PSyncError(f"not listening on {transport}")

    # --- spaces --------------------------------------------------------------------------------
    @property
    def spaces(self) -> dict[str, Space]:
        return self.replicas.spaces

    def create_space(self, space_type: str = "default") -> Space:
        return self.replicas.create_space(space_type)

    def invite(self, space_id: str, role: Role = Role.WRITER, *,
               anyone_can_join: bool = True) -> InviteCode:
        """Create and store an invite; the code carries the space id and our addresses."""
        space = self.spaces[space_id]
        raw, code = space.acl.invite(self.account, role, anyone_can_join=anyone_can_join)
        space.commit_acl(raw)
        return replace(code, space_id=space_id, addresses=tuple(self.addresses))

    async def join(self, code: str | InviteCode, addresses: list[str] | None = None, *,
                   keep: bool = True) -> Space:
        """Join a space by invite code through the first reachable address (the code's hints
        unless ``addresses`` is given). With ``keep`` the address stays dialled afterwards."""
        ic = InviteCode.decode(code) if isinstance(code, str) else code
        if not ic.space_id:
            raise JoinError("this invite code does not name its space (old format)")
        if ic.space_id in self.spaces:
            return self.spaces[ic.space_id]
        errors = []
        for addr in addresses or list(ic.addresses):
            transport, hostport = _split_hint(addr)
            try:
                conn = await self._dial(hostport, transport)
            except (TransportError, OSError) as exc:
                errors.append(f"{addr}: {exc}")
                continue
            engine = self._engine_for(conn)
            task = asyncio.get_running_loop().create_task(self._run_engine(engine))
            self._engine_tasks.add(task)
            task.add_done_callback(self._engine_tasks.discard)
            try:
                space = await engine.bootstrap(ic.space_id, ic)
            except (P2PSyncError, TimeoutError) as exc:
                errors.append(f"{addr}: {exc}")
                await engine.close("join failed")
                continue
            if keep:
                self.add_peer(hostport, transport, _engine=engine, _task=task)
            return space
        raise JoinError("could not join: " + ("; ".join(errors) or "no address to try"))

    async def fetch_space(self, space_id: str, engine: PeerEngine) -> Space:
        """Fetch a space we may access (a replicator, or a member's new device) from a peer."""
        if space_id in self.spaces:
            return self.spaces[space_id]
        return await engine.bootstrap(space_id, None)

    # --- connections ---------------------------------------------------------------------------
    async def _dial(self, address: str, transport: TransportName) -> Connection:
        return await connect(address, device_key=self.device, certificate=self.certificate,
                             transport=transport, config=self.config.transport)

    def _engine_for(self, conn: Connection) -> PeerEngine:
        engine = PeerEngine(self.replicas, conn, self.config.engine)
        self.engines.add(engine)
        return engine

    async def _run_engine(self, engine: PeerEngine) -> None:
        try:
            await engine.run()
        finally:
            self.engines.discard(engine)
            self.replicas.notify()

    async def _incoming(self, conn: Connection) -> None:
        if self.closed:
            await conn.close("node closing")
            return
        await self._run_engine(self._engine_for(conn))

    async def connect(self, address: str, transport: TransportName = "tcp") -> PeerEngine:
        """Connect once (no reconnect) and start syncing; returns the engine once the space
        exchange is done."""
        conn = await self._dial(address, transport)
        engine = self._engine_for(conn)
        task = asyncio.get_running_loop().create_task(self._run_engine(engine))
        self._engine_tasks.add(task)
        task.add_done_callback(self._engine_tasks.discard)
        ready = asyncio.ensure_future(engine.ready.wait())
        await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not engine.ready.is_set():
            raise TransportError(f"sync with {address} failed: {engine.last_error}")
        return engine

    def add_peer(self, address: str, transport: TransportName = "tcp", *,
                 _engine: PeerEngine | None = None,
                 _task: asyncio.Task[None] | None = None) -> None:
        """Keep ``address`` connected (reconnecting with backoff) until :meth:`remove_peer`."""
        key = f"{transport}:{address}"
        if key in self.dialers:
            return
        d = _Dialer(self, address, transport)
        self.dialers[key] = d

        async def first_then_loop() -> None:
            if _engine is not None and _task is not None:
                d.engine = _engine
                await asyncio.shield(_task)
                d.engine = None
            await d.run()

        d.task = asyncio.get_running_loop().create_task(first_then_loop())

    async def remove_peer(self, address: str, transport: TransportName = "tcp") -> None:
        d = self.dialers.pop(f"{transport}:{address}", None)
        if d is None:
            return
        d.removed = True
        if d.task is not None:
            d.task.cancel()
        if d.engine is not None:
            await d.engine.close("peer removed")
        if d.task is not None:
            await asyncio.gather(d.task, return_exceptions=True)

    def reconnect_now(self) -> None:
        """Skip the backoff wait of every disconnected dialled peer."""
        for d in self.dialers.values():
            d.kick.set()

    async def disconnect_all(self) -> None:
        """Drop every connection (dialled peers reconnect after their backoff)."""
        for engine in list(self.engines):
            await engine.close("disconnect requested")

    # --- status and waiting --------------------------------------------------------------------
    def space_hash(self, space_id: str) -> bytes:
        return self.replicas.ldiff(space_id).hash()

    def status(self) -> NodeStatus:
        peers = [e.status() for e in sorted(self.engines, key=lambda e: e.conn.peer_id)]
        spaces = []
        for sid, space in sorted(self.spaces.items()):
            role = space.role()
            rname = role.name.lower() if role is not None else (
                "replicator" if self.account.public in space.acl.state.replicators else None)
            mine = [ps for p in peers for ps in p.spaces if ps.space_id == sid]
            spaces.append(SpaceStatus(
                space_id=sid, role=rname, objects=len(space.tree_ids()),
                heads_hash=self.space_hash(sid).hex(), peers=len(mine),
                peers_in_sync=sum(1 for ps in mine if ps.in_sync)))
        return NodeStatus(
            peer_id=self.device.id, account_id=self.account.id, listening=self.addresses,
            spaces=spaces, peers=peers, dialing=[d.status() for d in self.dialers.values()])

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; re-checked on every sync event (no polling)."""
        await self.replicas.wait_for(predicate, timeout)

    def tree_heads_hash(self, space_id: str, tree_id: bytes) -> bytes:
        return heads_hash(self.spaces[space_id].heads(tree_id))


def _split_hint(hint: str) -> tuple[TransportName, str]:
    """``tcp:host:port`` / ``quic:host:port`` / ``host:port`` (QUIC by default)."""
    head, _, rest = hint.partition(":")
    if head == "tcp":
        return "tcp", rest
    if head == "quic":
        return "quic", rest
    return "quic", hint
