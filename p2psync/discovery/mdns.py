"""mDNS advertise + browse for ``_p2psync._udp.local.``: a thin asyncio shell around zeroconf.

It turns zeroconf callbacks into validated :class:`PeerSeen` / :class:`PeerGone` events and works
around what zeroconf does not do by itself (see LIBRARY-NOTES): it polls the local interfaces and
restarts zeroconf when they change (zeroconf reads them once), re-resolves peers it knew after a
restart, and offers :meth:`MdnsDiscovery.refresh` to force a fresh query. mDNS says where a peer
*might* be; it never says a peer is alive (a vanished peer lingers for an hour): the agent learns
liveness from connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from zeroconf import IPVersion, NonUniqueNameException, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from p2psync import PROTOCOL_VERSION
from p2psync.discovery.netwatch import LocalAddress, local_addresses, zeroconf_interfaces
from p2psync.discovery.records import (
    SERVICE_TYPE,
    Advert,
    BadAdvert,
    instance_label,
    parse_advert,
    usable_addresses,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerSeen:
    """A peer advertised itself (first sighting, or its addresses/ports changed)."""

    peer_id: str
    addresses: tuple[str, ...]  #: IPv4 first; IPv6 link-local carry ``%scope``
    quic_port: int | None
    tcp_port: int | None
    version: int


@dataclass(frozen=True)
class PeerGone:
    """A peer said goodbye on mDNS. A hint only: a silent peer never produces this."""

    peer_id: str


@dataclass(frozen=True)
class NetworkChanged:
    """Our usable local addresses changed; mDNS was restarted on them (empty: offline)."""

    addresses: tuple[str, ...]


DiscoveryEvent = PeerSeen | PeerGone | NetworkChanged


@dataclass(frozen=True)
class MdnsConfig:
    """Tunables; defaults suit a laptop or a Raspberry Pi on a home LAN."""

    poll_interval: float = 3.0  #: seconds between interface checks
    settle: float = 1.0  #: after a change, wait this long for more (DHCP, IPv6 DAD) first
    resolve_timeout: float = 3.0  #: seconds to wait for SRV/TXT/address answers
    interfaces: Collection[str] | None = None  #: restrict to these interface names
    ipv6: bool = True
    accept_versions: frozenset[int] = frozenset({PROTOCOL_VERSION})
    max_peers: int = 256  #: sightings tracked at once (a hostile LAN may flood names)
    queue_size: int = 256  #: events buffered for :meth:`MdnsDiscovery.events`


@dataclass
class _Session:
    """One zeroconf instance bound to one interface snapshot."""

    generation: int
    addrs: tuple[LocalAddress, ...]
    azc: AsyncZeroconf | None = None
    browser: AsyncServiceBrowser | None = None
    registered: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)  #: registration finished
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _scope_link_local(addresses: list[str], local: tuple[LocalAddress, ...]) -> list[str]:
    """Give unscoped IPv6 link-local addresses our only IPv6 interface as scope.

    zeroconf scopes an AAAA record only when it arrived over IPv6; one learnt over IPv4 has no
    scope and cannot be dialled. With a single IPv6 interface the scope is unambiguous.
    """
    v6_indexes = {a.index for a in local if a.version == 6 and a.index}
    if len(v6_indexes) != 1:
        return addresses
    (index,) = v6_indexes
    return [
        f"{a}%{index}" if a.lower().startswith("fe80:") and "%" not in a else a for a in addresses
    ]


class MdnsDiscovery:
    """Advertise ``advert`` (None: browse only) and report peers on the LAN.

    Events go to ``on_event`` (called in the event loop; must not block) and to any iterator
    obtained from :meth:`events`. Use ``async with`` or :meth:`start` / :meth:`close`.
    """

    def __init__(
        self,
        advert: Advert | None,
        on_event: Callable[[DiscoveryEvent], None] | None = None,
        config: MdnsConfig | None = None,
    ) -> None:
        self.advert = advert
        self.config = config or MdnsConfig()
        zc_log = logging.getLogger("zeroconf")
        if zc_log.level == logging.NOTSET:
            # zeroconf warns on every send to a vanished link; expected here, so keep it quiet
            # unless the application configured that logger itself
            zc_log.setLevel(logging.ERROR)
        self._on_event = on_event
        self._queues: list[asyncio.Queue[DiscoveryEvent | None]] = []
        self._session: _Session | None = None
        self._generation = 0
        self._known: dict[str, PeerSeen] = {}  #: by peer id, for the current session
        self._names: dict[str, str] = {}  #: service name → peer id, survives restarts
        self._resolving: set[str] = set()
        self._watch_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._started = False

    # --- public API ---------------------------------------------------------------------------
    @property
    def peers(self) -> dict[str, PeerSeen]:
        """Current sightings by peer id (a copy). Not a liveness list."""
        return dict(self._known)

    @property
    def local_addresses(self) -> tuple[str, ...]:
        """The local addresses mDNS currently runs on."""
        return tuple(a.ip for a in self._session.addrs) if self._session else ()

    async def start(self) -> None:
        """Bind to the current interfaces, start advertising and browsing, start the watch.

        Returns once the browser runs; registration (RFC 6762 probing, ~1.2 s) continues in
        the background — :meth:`wait_registered` waits for it.
        """
        if self._started:
            return
        self._started = True
        await self._restart(self._snapshot())
        self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        """Say goodbye, stop zeroconf and the watch, and end every event iterator."""
        if self._closed:
            return
        self._closed = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        async with self._lock:
            await self._stop_session()
        for q in self._queues:
            if q.full():  # the end marker must get through, even at the cost of one event
                q.get_nowait()
            q.put_nowait(None)

    async def __aenter__(self) -> MdnsDiscovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def refresh(self) -> None:
        """Query the LAN again now: restart zeroconf if interfaces changed, else restart the
        browser and re-resolve every known peer.

        Use after anything that may have made us miss announcements (resume from sleep, a
        link flap shorter than the poll interval). Cheap: a few packets.
        """
        if await self.recheck_interfaces():
            return
        async with self._lock:
            s = self._session
            if s is None or s.azc is None:
                return
            if s.browser is not None:
                await s.browser.async_cancel()
            s.browser = self._new_browser(s)
            for name in list(self._names):
                self._schedule_resolve(s, name)

    async def recheck_interfaces(self) -> bool:
        """Compare interfaces now (instead of waiting for the poll); restart if they changed."""
        if not self._started or self._closed:
            return False
        snap = self._snapshot()
        if self._session is not None and snap == self._session.addrs:
            return False
        await self._restart(snap)
        return True

    async def wait_registered(self, timeout: float = 10.0) -> bool:
        """Wait until our advert is registered on the current session (False if not possible)."""
        async with asyncio.timeout(timeout):
            while True:
                s = self._session
                if s is None:
                    return False
                await s.settled.wait()
                if s is self._session:
                    return s.registered

    def events(self) -> AsyncIterator[DiscoveryEvent]:
        """An async iterator of every event from now on; it ends when discovery closes."""
        q: asyncio.Queue[DiscoveryEvent | None] = asyncio.Queue(self.config.queue_size)
        self._queues.append(q)
        return self._drain(q)

    async def _drain(
        self, q: asyncio.Queue[DiscoveryEvent | None]
    ) -> AsyncIterator[DiscoveryEvent]:
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            with contextlib.suppress(ValueError):
                self._queues.remove(q)

    # --- internals ----------------------------------------------------------------------------
    def _snapshot(self) -> tuple[LocalAddress, ...]:
        try:
            return local_addresses(self.config.interfaces, ipv6=self.config.ipv6)
        except OSError as exc:  # getifaddrs failing is transient at worst
            log.debug("reading interfaces failed: %s", exc)
            return self._session.addrs if self._session else ()

    def _emit(self, ev: DiscoveryEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(ev)
            except Exception:
                log.exception("discovery event callback failed")
        for q in self._queues:
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:
                log.warning("discovery event queue full; dropped %s", type(ev).__name__)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval)
            snap = self._snapshot()
            s = self._session
            if s is None or snap != s.addrs or (snap and s.azc is None):
                snap = await self._settled_snapshot(snap)
                log.debug("interfaces changed: %s", [a.ip for a in snap])
                try:
                    await self._restart(snap)
                except Exception:  # never let the watch die; try again next poll
                    log.exception("restarting mDNS failed")

    async def _settled_snapshot(self, snap: tuple[LocalAddress, ...]) -> tuple[LocalAddress, ...]:
        """Re-read until two reads ``settle`` apart agree (at most 5), so that one link-up
        (IPv4 lease, then IPv6 after DAD) costs one restart rather than several."""
        for _ in range(5):
            if self.config.settle <= 0:
                break
            await asyncio.sleep(self.config.settle)
            again = self._snapshot()
            if again == snap:
                break
            snap = again
        return snap

    async def _restart(self, snap: tuple[LocalAddress, ...]) -> None:
        async with self._lock:
            if self._closed:
                return
            changed = self._session is None or snap != self._session.addrs
            await self._stop_session()
            self._generation += 1
            s = _Session(self._generation, snap)
            self._session = s
            self._known.clear()
            if changed:
                self._emit(NetworkChanged(tuple(a.ip for a in snap)))
            if not snap or self.advert is None:
                s.settled.set()
            if not snap:
                return
            v6 = any(a.version == 6 for a in snap)
            v4 = any(a.version == 4 for a in snap)
            ipv = IPVersion.All if v4 and v6 else IPVersion.V6Only if v6 else IPVersion.V4Only
            try:
                s.azc = AsyncZeroconf(interfaces=zeroconf_interfaces(snap), ip_version=ipv)
            except (OSError, RuntimeError, ValueError) as exc:
                # e.g. an IPv6 address still tentative (DAD): retried at the next poll
                log.info("mDNS could not start on %s: %s", [a.ip for a in snap], exc)
                s.settled.set()
                return
            s.browser = self._new_browser(s)
            if self.advert is not None:
                self._spawn(s, self._register(s, self.advert))
            for name in list(self._names):
                self._schedule_resolve(s, name)

    async def _stop_session(self) -> None:
        s, self._session = self._session, None
        if s is None:
            return
        for t in list(s.tasks):
            t.cancel()
        for t in list(s.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if s.azc is not None:
            try:
                if s.browser is not None:
                    await s.browser.async_cancel()
                await asyncio.wait_for(s.azc.async_close(), timeout=5)  # sends goodbyes
            except Exception as exc:  # a link that vanished can fail the goodbye send
                log.debug("closing zeroconf: %r", exc)

    def _spawn(self, s: _Session, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        s.tasks.add(task)
        task.add_done_callback(s.tasks.discard)

    async def _register(self, s: _Session, advert: Advert) -> None:
        assert s.azc is not None
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            advert.instance_name,
            port=advert.quic_port or advert.tcp_port,
            properties=advert.txt(),
            server=f"{advert.peer_id}.local.",
            parsed_addresses=[a.ip for a in s.addrs],
        )
        try:
            await (await s.azc.async_register_service(info))
            s.registered = True
            log.debug("advertised %s on %s", advert.peer_id, [a.ip for a in s.addrs])
        except NonUniqueNameException:
            # someone else answers for our peer id: we stay dialable by static/known addresses
            log.warning("another host claims our mDNS name %s; not advertising", advert.peer_id)
        except (OSError, RuntimeError) as exc:
            log.info("mDNS registration failed: %s", exc)
        finally:
            s.settled.set()

    def _new_browser(self, s: _Session) -> AsyncServiceBrowser:
        assert s.azc is not None

        def handler(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            self._on_state_change(s, name, state_change)

        return AsyncServiceBrowser(s.azc.zeroconf, SERVICE_TYPE, handlers=[handler])

    def _is_self(self, name: str) -> bool:
        return self.advert is not None and name.lower() == self.advert.instance_name.lower()

    def _on_state_change(self, s: _Session, name: str, change: ServiceStateChange) -> None:
        if s is not self._session or self._is_self(name):
            return
        if change is ServiceStateChange.Removed:
            pid = self._names.pop(name, None)
            if pid is not None and self._known.pop(pid, None) is not None:
                self._emit(PeerGone(pid))
            return
        self._schedule_resolve(s, name)

    def _schedule_resolve(self, s: _Session, name: str) -> None:
        if name in self._resolving:
            return
        if len(self._resolving) + len(self._known) >= self.config.max_peers:
            log.debug("too many mDNS peers; ignoring %s", name[:80])
            return
        self._resolving.add(name)
        self._spawn(s, self._resolve(s, name))

    async def _resolve(self, s: _Session, name: str) -> None:
        try:
            try:
                instance_label(name)
            except BadAdvert as exc:
                log.debug("ignoring mDNS name: %s", exc)
                return
            assert s.azc is not None
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            timeout_ms = self.config.resolve_timeout * 1000
            if not await info.async_request(s.azc.zeroconf, timeout_ms):
                log.debug("no answer resolving %s", name[:80])
                return
            if s is not self._session:
                return
            try:
                adv = parse_advert(name, info.text or b"", self.config.accept_versions)
            except BadAdvert as exc:
                log.debug("ignoring mDNS advert %s: %s", name[:80], exc)
                return
            if self.advert is not None and adv.peer_id == self.advert.peer_id:
                return
            version = IPVersion.All if self.config.ipv6 else IPVersion.V4Only
            addrs = usable_addresses(_scope_link_local(info.parsed_scoped_addresses(version),
                                                       s.addrs))
            if not addrs:
                log.debug("mDNS advert %s has no usable address", name[:80])
                return
            seen = PeerSeen(adv.peer_id, addrs, adv.quic_port, adv.tcp_port, adv.version)
            if name not in self._names and len(self._names) >= self.config.max_peers:
                self._names.pop(next(iter(self._names)))  # forget the oldest name
            self._names[name] = adv.peer_id
            if self._known.get(adv.peer_id) != seen:
                self._known[adv.peer_id] = seen
                self._emit(seen)
        except (OSError, ValueError, RuntimeError) as exc:  # zeroconf hiccup: log, never crash
            log.debug("resolving %s failed: %r", name[:80], exc)
        finally:
            self._resolving.discard(name)
