"""A minimal agent: one store, one identity, its spaces, listeners, dialled peers, engines.

:class:`Node` wires the layers: it opens the :class:`~p2psync.replica.store.Store` and every
space in it (:class:`~p2psync.sync.replicas.Replicas`), listens on QUIC and/or TCP, runs one
:class:`~p2psync.sync.engine.PeerEngine` per connection (incoming or dialled), keeps dialled
peers connected with jittered exponential backoff, joins spaces by invite code, and reports
truthful status (everything in :meth:`Node.status` is read from live state).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from p2psync.backoff import Backoff
from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.dialer import Dialer, dial_address
from p2psync.discovery.peers import AddressBook, Endpoint, Source, parse_endpoints
from p2psync.errors import JoinError, P2PSyncError, StoreError, TransportError
from p2psync.hostport import host_port
from p2psync.replica.acl import InviteCode
from p2psync.replica.acl_records import Role
from p2psync.replica.space import Space
from p2psync.replica.storage import ReplicaStore, open_store
from p2psync.sync.engine import EngineConfig, PeerEngine, PeerStatus
from p2psync.sync.ldiff import heads_hash
from p2psync.sync.memberlimits import MemberLimits
from p2psync.sync.messages import MAX_MESSAGE_SIZE
from p2psync.sync.replicas import Replicas
from p2psync.transport.api import Server, TransportName, listen
from p2psync.transport.connection import Connection, TransportConfig
from p2psync.transport.handshake import Limits
from p2psync.transport.registry import split_hint

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
    #: Issue 13: stored changes share SQLite commits for up to this long (s), and always
    #: commit before anything is sent to a peer (docs/replica.md "Grouped commits"); 0: a
    #: commit per change, as before.
    group_commit: float = 0.01
    seed: int | None = None
    #: Issue 12.6: listeners send this device's certificate (which names the account) only to
    #: an initiator that is a known peer, shares a space, or may be bootstrapping by invite
    #: (:meth:`Node.reveals_to`). Off: the certificate goes in handshake message 2 to anyone.
    #: Ignored when ``transport.reveal_certificate`` is set explicitly. On by default (the
    #: agent sets it explicitly too); off lets anyone learn the account (the switch-off).
    hide_identity: bool = True
    #: What one space and one author may make this device store (``[limits]`` of the agent's
    #: config; None or all zero: no limit) — :class:`~p2psync.sync.memberlimits.MemberLimits`.
    limits: MemberLimits | None = None


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
    peer_id: str | None = None  #: who answered there last (None: never reached)


@dataclass
class NodeStatus:
    peer_id: str
    account_id: str
    listening: list[str]
    spaces: list[SpaceStatus]
    peers: list[PeerStatus]
    dialing: list[DialStatus]


class Node:
    """One device: store + keys + spaces, listening, dialling and syncing."""

    def __init__(self, store_path: str | Path, account: AccountKey, device: DeviceKey, *,
                 certificate: DeviceCertificate | None = None,
                 config: NodeConfig | None = None, book: AddressBook | None = None,
                 on_connected: Callable[[PeerEngine, Endpoint], None] | None = None) -> None:
        #: What :func:`~p2psync.replica.storage.open_store` opens: a path, ``sqlite:///…``,
        #: ``memory:`` / ``memory://name`` or a registered scheme.
        self.store_where = store_path
        self.store_path = Path(store_path)
        self.account = account
        self.device = device
        self.certificate = certificate or DeviceCertificate.issue(account, device)
        self.config = config or NodeConfig()
        if self.config.hide_identity and self.config.transport.reveal_certificate is None:
            self.config = replace(self.config, transport=replace(
                self.config.transport, reveal_certificate=self.reveals_to))
        #: Reveal the certificate to every authenticated initiator (set it, or install a
        #: storage policy with ``answers_anyone = True`` like a backup's: devices offer a
        #: backup spaces it does not hold yet, so it cannot know them in advance).
        self.reveal_to_anyone = False
        self.rng = random.Random(self.config.seed)
        self.store: ReplicaStore | None = None
        self._replicas: Replicas | None = None
        self.servers: list[Server] = []
        self.engines: set[PeerEngine] = set()
        self._engine_tasks: set[asyncio.Task[None]] = set()
        #: the one dialler: keeps every address of ``book`` connected, with backoff
        self.dialer = Dialer(
            book or AddressBook(self_peer_id=device.id, policy=Backoff(
                base=self.config.reconnect_base, cap=self.config.reconnect_cap,
                rng=self.rng)),
            self._connect_endpoint, connected_peers=self.connected_peers,
            on_connected=on_connected, on_change=self._notify)
        self.closed = False
        #: peer ids whose connections are refused (devices removed by `device remove`)
        self.refused_peers: set[str] = set()

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> Node:
        """Open the store and every space in it, then listen."""
        self.store = open_store(self.store_where, durable=self.config.durable)
        if self.config.group_commit > 0:
            self.store.group_writes(_commit_later(self.store, self.config.group_commit))
        self._replicas = Replicas(self.store, self.account, self.device,
                                  window=self.config.window, limits=self.config.limits)
        for host, port, transport in self.config.listen:
            server = await listen(host, port, device_key=self.device,
                                  certificate=self.certificate, on_connection=self._incoming,
                                  transport=transport, config=self.config.transport)
            self.servers.append(server)
        self.dialer.start()
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
        await self.dialer.close()
        for engine in list(self.engines):
            await engine.close("node closing")
        tasks = list(self._engine_tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self.servers:
            await server.close()
        if self.store is not None:
            for space in list(self.spaces.values()):  # flush, and snapshot idle documents
                try:
                    space.settle()
                except P2PSyncError as exc:  # closing anyway: what was flushed is kept
                    log.warning("closing space %s: %s", space.id, exc)
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
            try:
                transport, hostport = split_hint(addr)  # UnknownTransport: try the next
                conn = await self._dial(hostport, transport)
            except (TransportError, OSError, P2PSyncError) as exc:
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
                ep = _endpoint(hostport, transport)
                self.dialer.book.add_static(ep)
                self.dialer.adopt(ep, engine)
            return space
        raise JoinError("could not join: " + ("; ".join(errors) or "no address to try"))

    async def fetch_space(self, space_id: str, engine: PeerEngine) -> Space:
        """Fetch a space we may access (a replicator, or a member's new device) from a peer."""
        if space_id in self.spaces:
            return self.spaces[space_id]
        return await engine.bootstrap(space_id, None)

    # --- who learns our account (issue 12.6) ---------------------------------------------------
    def reveals_to(self, cert: DeviceCertificate) -> bool:
        """Listener policy: may this authenticated initiator learn our certificate (account)?

        Yes for another device of our account, the configured backup, a peer we dialled or
        were configured with (it learnt our account when we dialled it, or the user named
        it), an account that is a member or replicator of a space held here, and — until the
        joiner's invite proof travels in the Hello — anyone while a space here has an open
        invite (the joiner is not a member yet). Everyone else is refused before learning who
        owns this device (``StrangerRefused``); they learn only the device key mDNS advertises.
        """
        if self.reveal_to_anyone or cert.account == self.account.public:
            return True
        book = self.dialer.book
        if cert.peer_id == book.backup_peer_id:
            return True
        if any(row.peer_id == cert.peer_id and (row.proved or Source.MDNS not in row.sources)
               for row in book.entries()):
            return True
        if self._replicas is None:
            return False
        if getattr(self._replicas.policy, "answers_anyone", False):
            return True
        now = time.time()
        for space in self._replicas.spaces.values():
            st = space.acl.state
            if cert.account == st.owner or cert.account in st.members \
                    or cert.account in st.replicators:
                return True
            if cert.account in st.departed:  # it knew us; it is told why it lost the space
                return True
            if any(not inv.expired(int(now)) for inv in st.invites.values()):
                return True
        return False

    # --- connections ---------------------------------------------------------------------------
    async def _dial(self, address: str, transport: TransportName) -> Connection:
        return await dial_address(_endpoint(address, transport), device=self.device,
                                  certificate=self.certificate, config=self.config.transport)

    async def _connect_endpoint(self, ep: Endpoint) -> PeerEngine:
        return await self.connect_endpoint(ep)

    def _notify(self) -> None:
        if self._replicas is not None:
            self._replicas.notify()

    def connected_peers(self) -> set[str]:
        """Peer ids of every open connection."""
        return {e.conn.peer_id for e in self.engines if not e.conn.is_closed}

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
        if conn.peer_id in self.refused_peers:
            await conn.close("this device was removed from the account")
            return
        await self._run_engine(self._engine_for(conn))

    async def connect(self, address: str, transport: TransportName = "tcp") -> PeerEngine:
        """Connect once (no reconnect) and start syncing; returns the engine once the space
        exchange is done."""
        return await self.connect_endpoint(_endpoint(address, transport))

    async def connect_endpoint(self, ep: Endpoint) -> PeerEngine:
        """:meth:`connect` to an endpoint."""
        conn = await dial_address(ep, device=self.device, certificate=self.certificate,
                                  config=self.config.transport)
        if self.closed:
            await conn.close("node closing")
            raise TransportError("node closing")
        engine = self._engine_for(conn)
        task = asyncio.get_running_loop().create_task(self._run_engine(engine))
        self._engine_tasks.add(task)
        task.add_done_callback(self._engine_tasks.discard)
        ready = asyncio.ensure_future(engine.ready.wait())
        await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not engine.ready.is_set():
            raise TransportError(f"sync with {ep} failed: {engine.last_error}")
        self.replicas.notify()
        return engine

    def add_peer(self, address: str, transport: TransportName = "tcp") -> None:
        """Keep ``address`` connected (reconnecting with backoff) until :meth:`remove_peer`."""
        self.dialer.book.add_static(_endpoint(address, transport))
        self.dialer.wake()

    async def remove_peer(self, address: str, transport: TransportName = "tcp") -> None:
        await self.dialer.forget(_endpoint(address, transport))

    def reconnect_now(self) -> None:
        """Skip the backoff wait of every disconnected dialled peer."""
        self.dialer.retry_now()

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
            spaces=spaces, peers=peers, dialing=self._dial_status())

    def _dial_status(self) -> list[DialStatus]:
        out = []
        for row in self.dialer.book.entries():
            ep = row.endpoint
            st = self.dialer.state.get(ep)
            out.append(DialStatus(
                host_port(ep.host, ep.port), ep.transport.value, bool(st and st.connected),
                row.failures, row.next_try, st.last_error if st else None, row.peer_id))
        return out

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; re-checked on every sync event (no polling)."""
        await self.replicas.wait_for(predicate, timeout)

    async def fetch_history(self, space_id: str, tree_id: bytes, timeout: float = 30.0) -> bool:
        """History on demand (docs/replica.md "Shallow trees"): a tree held shallow (from
        a snapshot) fetches its whole history from the connected peers sharing the space
        (a ``history`` job on each: whole tree, every change verified) and holds it whole
        afterwards. True once whole (at once if it already is); False when no connected peer
        shares the space; TimeoutError if none delivered it within ``timeout``."""
        space = self.spaces[space_id]

        def whole() -> bool:
            return not space.has_tree(tree_id) or not space.tree(tree_id).shallow

        if whole():
            return True
        peers = [e for e in list(self.engines) if space_id in e.shared]
        for engine in peers:
            engine.submit(("history", space_id, tree_id), 2)
        if not peers:
            return False
        await self.wait_for(whole, timeout)
        return True

    def tree_heads_hash(self, space_id: str, tree_id: bytes) -> bytes:
        return heads_hash(self.spaces[space_id].heads(tree_id))


def _endpoint(address: str, transport: TransportName) -> Endpoint:
    """``host:port`` (IPv6 in brackets) on a carrier as an endpoint."""
    (ep,) = parse_endpoints(f"{transport}://{address}")
    return ep


def _commit_later(store: ReplicaStore, delay: float) -> Callable[[], None]:
    """The asyncio shell of grouped commits: when a group opens, commit it ``delay`` later
    (engines commit it sooner, before they send)."""
    loop = asyncio.get_running_loop()

    def commit() -> None:
        try:
            store.commit_group()
        except StoreError as exc:  # the next write raises it again, where it is handled
            log.error("grouped commit failed: %s", exc)

    def opened() -> None:
        loop.call_later(delay, commit)

    return opened
