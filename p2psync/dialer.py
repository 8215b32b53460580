"""The one dialler: keeps the peers of an address book connected.

Every outgoing connection of p2psync goes through here. :func:`dial_address` turns an
:class:`~p2psync.discovery.peers.Endpoint` into an authenticated connection (the single place
that formats ``host:port`` for a carrier). :class:`Dialer` is the asyncio shell around the
sans-IO :class:`~p2psync.discovery.peers.AddressBook` (which endpoints exist, their per-endpoint
backoff) and :func:`plan_dials` (which to start now): it dials due candidates, reports success
and failure back to the book, and sleeps until the book's next due time or a :meth:`~Dialer.wake`.

:class:`~p2psync.node.Node` owns one (``Node.add_peer`` puts a static address in its book);
the :class:`~p2psync.agent.core.Agent` gives it a book fed by config, mDNS and last-known
addresses. Who answers is whoever the handshake proves: when that is not the peer the book
expected there, the connection is kept and the endpoint relabelled (the book only ever holds a
guess until a handshake proves it; closing would let a LAN neighbour who advertises a made-up
peer id at a real device's address cut us off from that device).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import DeviceKey
from p2psync.discovery.peers import AddressBook, DialCandidate, Endpoint
from p2psync.errors import TransportError
from p2psync.hostport import host_port
from p2psync.transport.api import connect
from p2psync.transport.connection import Connection, TransportConfig

if TYPE_CHECKING:  # pragma: no cover
    from p2psync.sync.engine import PeerEngine

log = logging.getLogger("p2psync.dialer")

MAX_DIALS = 8  #: dials in flight at once
DIAL_TIMEOUT = 8.0  #: seconds for connect + handshake + space exchange
IDLE_WAKE = 5.0  #: the dial loop re-checks at least this often


async def dial_address(ep: Endpoint, *, device: DeviceKey, certificate: DeviceCertificate,
                       config: TransportConfig | None = None) -> Connection:
    """Connect to ``ep`` and run the handshake; the connection knows who answered."""
    return await connect(host_port(ep.host, ep.port), device_key=device,
                         certificate=certificate, transport=ep.transport.value, config=config)


def plan_dials(candidates: Iterable[DialCandidate], *, connected: Collection[str],
               dialing: Collection[Endpoint], dialing_peers: Collection[str],
               aliases: Mapping[tuple[str, int], str], limit: int) -> list[DialCandidate]:
    """The candidates to dial now, best first: at most one dial per peer (and per host:port
    when the peer is not known yet), none to connected peers, ``limit`` dials in flight."""
    out: list[DialCandidate] = []
    busy_hosts = {(ep.host, ep.port) for ep in dialing}
    busy_peers = set(dialing_peers)
    for cand in candidates:
        if len(dialing) + len(out) >= limit:
            break
        ep = cand.endpoint
        pid = cand.peer_id or aliases.get((ep.host, ep.port))
        if pid is not None and (pid in connected or pid in busy_peers):
            continue
        if ep in dialing or (ep.host, ep.port) in busy_hosts:
            continue
        out.append(cand)
        busy_hosts.add((ep.host, ep.port))
        if pid is not None:
            busy_peers.add(pid)
    return out


@dataclass
class DialState:
    """What the last dials of one endpoint did (for status)."""

    last_error: str | None = None
    last_ok: float | None = None
    attempts: int = 0
    connected: bool = False
    connections: int = 0  #: connections made here and kept
    #: the peer the book expected and the one that answered, when they differed
    relabelled: tuple[str, str] | None = None


class Dialer:
    """Keeps the peers of ``book`` connected (see the module docstring)."""

    def __init__(self, book: AddressBook,
                 connect: Callable[[Endpoint], Awaitable[PeerEngine]], *,
                 connected_peers: Callable[[], set[str]],
                 on_connected: Callable[[PeerEngine, Endpoint], None] | None = None,
                 on_change: Callable[[], None] | None = None,
                 limit: int = MAX_DIALS, timeout: float = DIAL_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self._connect = connect
        self._connected_peers = connected_peers
        self._on_connected = on_connected
        self._on_change = on_change
        self.limit = limit
        self.timeout = timeout
        self.clock = clock
        self.state: dict[Endpoint, DialState] = {}
        #: engines this dialler opened (id(engine) -> engine) while they run
        self.outgoing: dict[int, PeerEngine] = {}
        self.aliases: dict[tuple[str, int], str] = {}  #: host:port -> who answered there
        self._dialing: dict[Endpoint, str | None] = {}
        self._by_endpoint: dict[Endpoint, PeerEngine] = {}
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def dialing(self) -> list[Endpoint]:
        """Endpoints with a dial in flight now."""
        return sorted(self._dialing)

    # --- control -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """Re-plan now (something changed: a sighting, a new address, a lost connection)."""
        self._kick.set()

    def retry_now(self) -> None:
        """Skip every endpoint's backoff wait (the network changed)."""
        self.book.retry_now(self.clock())
        self.wake()

    async def close(self) -> None:
        self.closed = True
        tasks = list(self._tasks) + ([self._loop] if self._loop is not None else [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def forget(self, ep: Endpoint) -> None:
        """Stop dialling ``ep`` and close the connection opened there."""
        self.book.remove(ep)
        engine = self._by_endpoint.pop(ep, None)
        if engine is not None:
            await engine.close("peer removed")

    def adopt(self, ep: Endpoint, engine: PeerEngine) -> None:
        """Track an engine opened elsewhere (``Node.join``) as our connection to ``ep``."""
        self._connected(ep, engine, self.state.setdefault(ep, DialState()))

    # --- the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        """Dial due candidates; sleep until the next one is due or something changes."""
        while not self.closed:
            self._kick.clear()
            now = self.clock()
            connected = self._connected_peers()
            todo = plan_dials(self.book.candidates(now, connected), connected=connected,
                              dialing=self._dialing.keys(),
                              dialing_peers={p for p in self._dialing.values() if p},
                              aliases=self.aliases, limit=self.limit)
            for cand in todo:
                self._dialing[cand.endpoint] = cand.peer_id
                self._spawn(self._dial(cand))
            due = self.book.next_due(self.clock(), connected)
            wait = IDLE_WAKE if due is None else min(IDLE_WAKE, max(0.05, due - self.clock()))
            with contextlib.suppress(TimeoutError):
                # the book's backoff timer (or an event that changes the plan), not a sync wait
                await asyncio.wait_for(self._kick.wait(), wait)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial(self, cand: DialCandidate) -> None:
        ep = cand.endpoint
        st = self.state.setdefault(ep, DialState())
        st.attempts += 1
        try:
            async with asyncio.timeout(self.timeout):  # no inner task to orphan on close
                engine = await self._connect(ep)
        except (TransportError, OSError, TimeoutError) as exc:
            st.last_error = f"{type(exc).__name__}: {exc}"
            self.book.failed(ep, self.clock())
            log.info("event=dial_failed endpoint=%s error=%r", ep, st.last_error)
            self._dialing.pop(ep, None)
            self._changed()
            self.wake()
            return
        pid = engine.conn.peer_id
        if cand.peer_id is not None and pid != cand.peer_id:
            # DHCP reuse, or a neighbour advertising a made-up id at this address: the
            # handshake is the truth, so keep the connection and relabel the endpoint
            st.relabelled = (cand.peer_id, pid)
            log.info("event=endpoint_relabelled endpoint=%s expected=%s reached=%s",
                     ep, cand.peer_id, pid)
        self._dialing.pop(ep, None)
        self._connected(ep, engine, st)

    def _connected(self, ep: Endpoint, engine: PeerEngine, st: DialState) -> None:
        pid = engine.conn.peer_id
        st.last_ok, st.last_error, st.connected = self.clock(), None, True
        st.connections += 1
        self.aliases[(ep.host, ep.port)] = pid
        self.book.connected(ep, pid, self.clock())
        self.outgoing[id(engine)] = engine
        self._by_endpoint[ep] = engine
        if self._on_connected is not None:
            self._on_connected(engine, ep)
        self._spawn(self._watch(ep, engine, st))
        self._changed()

    async def _watch(self, ep: Endpoint, engine: PeerEngine, st: DialState) -> None:
        try:
            await engine.finished.wait()
        finally:
            self.outgoing.pop(id(engine), None)
            if self._by_endpoint.get(ep) is engine:
                del self._by_endpoint[ep]
            st.connected = False
            st.last_error = engine.last_error
            log.info("event=disconnected peer=%s endpoint=%s error=%s", engine.conn.peer_id,
                     ep, engine.last_error or "-")
            if not self.closed:
                self.book.disconnected(ep, self.clock())
                self._changed()
                self.wake()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
