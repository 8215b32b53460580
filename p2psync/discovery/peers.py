"""The address book: every way we know to reach peers, merged into dial candidates (sans-IO).

Sources: static peers from config, the backup peer, mDNS sightings, and last-known addresses of
peers we connected to before (persisted in the agent home). Each endpoint has its own
exponential backoff. Time is always passed in (wall-clock seconds), so the logic is testable
without sleeping. Liveness is *not* judged here from mDNS: the agent reports connection success
and failure, and that alone moves an endpoint's backoff.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import random
import re
import tempfile
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from p2psync.backoff import Backoff
from p2psync.crypto.ids import PEER, decode_key
from p2psync.errors import BadId, DiscoveryError
from p2psync.hostport import host_port

log = logging.getLogger(__name__)

KNOWN_PEERS_FILE = "peers.json"  #: in the agent home
_FILE_VERSION = 1
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?$")


class BadPeerAddress(DiscoveryError):
    """A peer address from config or a file is not ``[scheme://]host:port``."""


class Transport(StrEnum):
    QUIC = "quic"
    TCP = "tcp"
    WS = "ws"  #: WebSocket (transport/websocket.py); dialled only when named
    WSS = "wss"


class Source(StrEnum):
    """Where an endpoint came from (an endpoint may have several)."""

    BACKUP = "backup"
    STATIC = "static"
    KNOWN = "known"  #: we connected to the peer there before
    MDNS = "mdns"


@dataclass(frozen=True, order=True)
class Endpoint:
    """One place to dial: host (IP or name; IPv6 may carry ``%scope``), port, carrier."""

    host: str
    port: int
    transport: Transport

    def __str__(self) -> str:
        return f"{self.transport.value}://{host_port(self.host, self.port)}"

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def is_link_local(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_link_local
        except ValueError:
            return False


def parse_endpoints(text: str, default_port: int | None = None) -> list[Endpoint]:
    """Parse ``[quic://|tcp://]host[:port]``; IPv6 in brackets. No scheme means both carriers.

    The agent listens for QUIC (UDP) and TCP on the same port number, so ``host:port`` without
    a scheme yields a QUIC and a TCP endpoint.
    """
    raw = text.strip()
    transports = [Transport.QUIC, Transport.TCP]
    scheme, sep, rest = raw.partition("://")
    if sep:
        try:
            transports = [Transport(scheme.lower())]
        except ValueError:
            raise BadPeerAddress(
                f"{text!r}: unknown scheme {scheme!r} (use quic://, tcp://, ws:// or wss://)"
            ) from None
        raw = rest
    port_text: str | None
    if raw.startswith("["):
        host, end, after = raw[1:].partition("]")
        if not end:
            raise BadPeerAddress(f"{text!r}: missing ']' after IPv6 address")
        if after and not after.startswith(":"):
            raise BadPeerAddress(f"{text!r}: expected ':port' after ']'")
        port_text = after[1:] if after else None
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise BadPeerAddress(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        if raw.count(":") > 1:
            raise BadPeerAddress(f"{text!r}: put IPv6 addresses in brackets: [addr]:port")
        host, colon, port_text_ = raw.partition(":")
        port_text = port_text_ if colon else None
        if not _HOST_RE.match(host) or host.replace(".", "").isdigit():
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise BadPeerAddress(f"{text!r}: {host!r} is not a host name or IP") from None
    if port_text is None:
        if default_port is None:
            raise BadPeerAddress(f"{text!r}: missing ':port'")
        port = default_port
    else:
        if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
            raise BadPeerAddress(f"{text!r}: bad port {port_text!r}")
        port = int(port_text)
    if not 1 <= port <= 65535:
        raise BadPeerAddress(f"{text!r}: port {port} out of range 1-65535")
    return [Endpoint(host, port, t) for t in transports]


def _check_peer_id(pid: str) -> str:
    try:
        decode_key(PEER, pid)
    except BadId as exc:
        raise BadPeerAddress(str(exc)) from None
    return pid


@dataclass(frozen=True)
class DialCandidate:
    """An endpoint due for a dial attempt. ``peer_id`` is who we expect there (None: unknown,
    e.g. a static address never connected yet); the handshake must confirm it."""

    endpoint: Endpoint
    peer_id: str | None
    sources: frozenset[Source]
    failures: int


@dataclass(frozen=True)
class EndpointState:
    """One endpoint as the book holds it (see :meth:`AddressBook.entries`)."""

    endpoint: Endpoint
    peer_id: str | None
    sources: frozenset[Source]
    failures: int
    next_try: float
    last_ok: float | None
    proved: bool  #: a handshake proved ``peer_id`` answers here


@dataclass
class _Entry:
    endpoint: Endpoint
    peer_id: str | None
    sources: set[Source] = field(default_factory=set)
    failures: int = 0
    next_try: float = 0.0
    last_ok: float | None = None
    last_seen: float | None = None  #: last mDNS sighting
    #: a handshake proved ``peer_id`` answers here; only another handshake may relabel it
    proved: bool = False


_SOURCE_RANK = {Source.BACKUP: 0, Source.KNOWN: 1, Source.MDNS: 2, Source.STATIC: 3}


class AddressBook:
    """Merges every address source; hands out dial candidates with per-endpoint backoff."""

    def __init__(
        self,
        *,
        static: Iterable[str] = (),
        backup: str | None = None,
        backup_peer_id: str | None = None,
        self_peer_id: str | None = None,
        default_port: int | None = None,
        policy: Backoff | None = None,
        rand: Callable[[], float] = random.random,
        known_ttl: float = 30 * 86400.0,
        mdns_ttl: float = 3600.0,
        max_known_per_peer: int = 8,
    ) -> None:
        self.policy = policy or Backoff(base=1.0, cap=300.0, jitter=0.2)
        self.self_peer_id = self_peer_id
        self.backup_peer_id = _check_peer_id(backup_peer_id) if backup_peer_id else None
        self.known_ttl = known_ttl
        self.mdns_ttl = mdns_ttl
        self.max_known_per_peer = max_known_per_peer
        self._rand = rand
        self._entries: dict[Endpoint, _Entry] = {}
        for text in static:
            for ep in parse_endpoints(text, default_port):
                self._add(ep, None, Source.STATIC)
        if backup:
            for ep in parse_endpoints(backup, default_port):
                self._add(ep, self.backup_peer_id, Source.BACKUP)

    # --- inputs -------------------------------------------------------------------------------
    def _add(self, ep: Endpoint, peer_id: str | None, source: Source) -> _Entry | None:
        """Merge one claim that ``peer_id`` is at ``ep``. A claim that is not a handshake
        (mDNS, config) never relabels an endpoint a handshake proved: returns None then."""
        e = self._entries.get(ep)
        if e is None:
            e = self._entries[ep] = _Entry(ep, peer_id)
        elif peer_id is not None and e.peer_id != peer_id:
            if e.proved and source is not Source.KNOWN:
                log.info("ignoring %s claim that %s is at %s (a handshake proved %s)",
                         source.value, peer_id, ep, e.peer_id)
                return None
            if e.peer_id is not None:
                # the address now belongs to someone else (DHCP reuse): old history is moot
                e.failures, e.last_ok, e.next_try = 0, None, 0.0
                e.sources.discard(Source.KNOWN)
                e.proved = False
            e.peer_id = peer_id
        e.sources.add(source)
        return e

    def add_static(self, ep: Endpoint) -> None:
        """Dial ``ep`` (whoever answers) until :meth:`remove`."""
        self._add(ep, None, Source.STATIC)

    def set_backup(self, endpoints: Iterable[Endpoint], peer_id: str | None) -> None:
        """The backup peer is (now) at ``endpoints``; ``peer_id`` is who we expect there."""
        self.backup_peer_id = _check_peer_id(peer_id) if peer_id else None
        for ep in endpoints:
            self._add(ep, self.backup_peer_id, Source.BACKUP)

    def remove(self, ep: Endpoint) -> None:
        """Forget ``ep`` whatever told us about it."""
        self._entries.pop(ep, None)

    def mdns_seen(
        self,
        peer_id: str,
        addresses: Iterable[str],
        quic_port: int | None,
        tcp_port: int | None,
        now: float,
    ) -> None:
        """Merge an mDNS sighting. A fresh sighting makes the peer's endpoints due now."""
        if peer_id == self.self_peer_id:
            return
        for host in addresses:
            for port, t in ((quic_port, Transport.QUIC), (tcp_port, Transport.TCP)):
                if port is None:
                    continue
                e = self._add(Endpoint(host, port, t), peer_id, Source.MDNS)
                if e is None:
                    continue
                e.last_seen = now
                e.next_try = min(e.next_try, now)

    def mdns_gone(self, peer_id: str) -> None:
        """The peer said goodbye on mDNS: drop what only mDNS told us about it."""
        for ep, e in list(self._entries.items()):
            if e.peer_id == peer_id and Source.MDNS in e.sources:
                e.sources.discard(Source.MDNS)
                if not e.sources:
                    del self._entries[ep]

    def connected(self, endpoint: Endpoint, peer_id: str, now: float) -> None:
        """The agent connected and authenticated ``peer_id`` at ``endpoint``."""
        e = self._add(endpoint, peer_id, Source.KNOWN)
        assert e is not None  # a handshake always wins
        e.failures, e.next_try, e.last_ok, e.proved = 0, now, now, True
        self._trim_known(peer_id)

    def disconnected(self, endpoint: Endpoint, now: float) -> None:
        """A connection made at ``endpoint`` ended: redial after the first backoff step (not
        at once, so a peer that accepts and then drops us is not hammered)."""
        e = self._entries.get(endpoint)
        if e is not None:
            e.next_try = now + self.policy.delay(1, self._rand())

    def retry_now(self, now: float) -> None:
        """Make every endpoint due now (the network changed; waits are moot)."""
        for e in self._entries.values():
            e.next_try = min(e.next_try, now)

    def failed(self, endpoint: Endpoint, now: float) -> None:
        """A dial to ``endpoint`` failed (refused, timeout, wrong peer): back off."""
        e = self._entries.get(endpoint)
        if e is None:
            return
        e.failures += 1
        e.next_try = now + self.policy.delay(e.failures, self._rand())

    # --- outputs ------------------------------------------------------------------------------
    def candidates(
        self, now: float, connected_peers: Collection[str] = ()
    ) -> list[DialCandidate]:
        """Endpoints due now, for peers not already connected, best first.

        Order: backup, last-known, mDNS, static; then fewer failures, most recent success,
        IPv4 before IPv6, QUIC before TCP.
        """
        self._expire(now)
        out: list[tuple[tuple[Any, ...], DialCandidate]] = []
        for e in self._entries.values():
            if e.peer_id is not None and (e.peer_id in connected_peers
                                          or e.peer_id == self.self_peer_id):
                continue
            if e.next_try > now + self.policy.cap:
                e.next_try = now  # the clock went backwards: do not wait for ages
            if e.next_try > now:
                continue
            ep = e.endpoint
            key = (
                min(_SOURCE_RANK[s] for s in e.sources),
                e.failures,
                -(e.last_ok or 0.0),
                ":" in ep.host,
                ep.transport != Transport.QUIC,
                str(ep),
            )
            out.append((key, DialCandidate(ep, e.peer_id, frozenset(e.sources), e.failures)))
        out.sort(key=lambda kv: kv[0])
        return [c for _, c in out]

    def next_due(self, now: float, connected_peers: Collection[str] = ()) -> float | None:
        """When the next endpoint becomes due (``now`` if one is due), None if the book is empty."""
        times = [
            max(e.next_try, now)
            for e in self._entries.values()
            if e.peer_id is None
            or (e.peer_id not in connected_peers and e.peer_id != self.self_peer_id)
        ]
        return min(times) if times else None

    def entries(self) -> list[EndpointState]:
        """Every endpoint with its label and backoff (for status), in address order."""
        return [EndpointState(e.endpoint, e.peer_id, frozenset(e.sources), e.failures,
                              e.next_try, e.last_ok, e.proved)
                for e in sorted(self._entries.values(), key=lambda e: e.endpoint)]

    def endpoints_of(self, peer_id: str) -> list[Endpoint]:
        """Every endpoint we associate with ``peer_id`` (for status displays)."""
        return sorted(ep for ep, e in self._entries.items() if e.peer_id == peer_id)

    def _expire(self, now: float) -> None:
        for ep, e in list(self._entries.items()):
            if Source.MDNS in e.sources and e.last_seen is not None and e.failures > 0 \
                    and now - e.last_seen > self.mdns_ttl:
                e.sources.discard(Source.MDNS)  # a stale sighting that keeps failing
            if Source.KNOWN in e.sources and now - (e.last_ok or 0.0) > self.known_ttl:
                e.sources.discard(Source.KNOWN)
            if not e.sources:
                del self._entries[ep]

    def _trim_known(self, peer_id: str) -> None:
        known = [e for e in self._entries.values()
                 if e.peer_id == peer_id and Source.KNOWN in e.sources]
        known.sort(key=lambda e: e.last_ok or 0.0, reverse=True)
        for e in known[self.max_known_per_peer :]:
            e.sources.discard(Source.KNOWN)
            if not e.sources:
                del self._entries[e.endpoint]

    # --- persistence (last-known addresses only) ----------------------------------------------
    def known_to_json(self) -> dict[str, Any]:
        """The last-known addresses as a JSON-able dict. IPv6 link-local addresses are left
        out: their scope (interface index) means nothing after a reboot."""
        peers: dict[str, list[dict[str, Any]]] = {}
        for e in sorted(self._entries.values(), key=lambda e: str(e.endpoint)):
            if Source.KNOWN in e.sources and e.peer_id and not e.endpoint.is_link_local:
                peers.setdefault(e.peer_id, []).append(
                    {"addr": str(e.endpoint), "last_ok": e.last_ok}
                )
        return {"version": _FILE_VERSION, "peers": peers}

    def load_known(self, data: Any) -> int:
        """Merge last-known addresses from :meth:`known_to_json` output; bad entries are
        skipped with a debug log. Returns how many endpoints were loaded."""
        if not isinstance(data, dict) or data.get("version") != _FILE_VERSION:
            log.debug("ignoring known-peers data of unknown shape/version")
            return 0
        peers = data.get("peers")
        if not isinstance(peers, dict):
            return 0
        loaded = 0
        for pid, entries in peers.items():
            try:
                _check_peer_id(pid)
            except BadPeerAddress as exc:
                log.debug("skipping known peer: %s", exc)
                continue
            if not isinstance(entries, list):
                continue
            for item in entries[: self.max_known_per_peer]:
                try:
                    last_ok = float(item["last_ok"])
                    (ep,) = parse_endpoints(str(item["addr"]))
                except (BadPeerAddress, KeyError, TypeError, ValueError) as exc:
                    log.debug("skipping known address of %s: %r", pid, exc)
                    continue
                e = self._add(ep, pid, Source.KNOWN)
                assert e is not None
                e.last_ok = max(e.last_ok or 0.0, last_ok)
                e.proved = True
                loaded += 1
        return loaded


def load_known_file(book: AddressBook, path: Path) -> int:
    """Load last-known addresses from ``path``; a missing or corrupt file means none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return 0
    return book.load_known(data)


def save_known_file(book: AddressBook, path: Path) -> None:
    """Write last-known addresses atomically (temp file, fsync, rename), mode 0600."""
    data = json.dumps(book.known_to_json(), indent=1, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
