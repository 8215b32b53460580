"""The agent: one home's node, kept connected to its peers, with a local API for apps.

:class:`Agent` wraps a :class:`~p2psync.node.Node` (store, keys, spaces, listeners, engines)
and adds what a long-running device needs: mDNS advertise/browse, an address book of static,
backup, last-known and sighted endpoints dialled with per-endpoint backoff, one connection per
peer, newly created or joined spaces offered to connected members, change notifications for
subscribers, truthful status, and a clean shutdown (pending edits flushed, goodbye sent, store
closed). It is an asyncio shell; the decisions live in :mod:`p2psync.agent.links`, the address
book and the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from p2psync import __version__
from p2psync.agent import backups, ops
from p2psync.agent.links import PeerLink, duplicates_to_close
from p2psync.backoff import Backoff
from p2psync.config import DEFAULT_PORT, AgentConfig
from p2psync.crypto.ids import short_hash
from p2psync.crypto.keystore import Keystore
from p2psync.device import LocalDevice
from p2psync.dialer import DIAL_TIMEOUT, DialState
from p2psync.discovery.mdns import (
    DiscoveryEvent,
    MdnsConfig,
    MdnsDiscovery,
    NetworkChanged,
    PeerGone,
    PeerSeen,
)
from p2psync.discovery.netwatch import local_addresses
from p2psync.discovery.peers import (
    KNOWN_PEERS_FILE,
    AddressBook,
    Endpoint,
    Transport,
    load_known_file,
    parse_endpoints,
    save_known_file,
)
from p2psync.discovery.records import Advert
from p2psync.errors import JoinError, P2PSyncError, TransportError
from p2psync.home import Home
from p2psync.hostport import bracket
from p2psync.node import Node, NodeConfig
from p2psync.replica.acl import InviteCode
from p2psync.replica.space import Space
from p2psync.replica.tree import AddResult
from p2psync.sync.engine import PeerEngine
from p2psync.transport.api import TransportName
from p2psync.transport.registry import split_hint

log = logging.getLogger("p2psync.agent")
POKE_INTERVAL = 1.0  #: seconds between head-sync pokes of one peer while waiting for sync
ACL_PULL_FIRST = 2.0  #: seconds before a pending join first pulls the ACL (for a decline)
ACL_PULL_CAP = 30.0  #: longest wait between a pending join's ACL pulls


def kv(event: str, **fields: Any) -> str:
    """A structured log line: ``event=... key=value ...`` (values with spaces are quoted)."""
    parts = [f"event={event}"]
    for k, v in fields.items():
        text = str(v)
        parts.append(f'{k}="{text}"' if (" " in text or not text) else f"{k}={text}")
    return " ".join(parts)


@dataclass
class Subscription:
    """A subscriber to document changes of one space (or every space), optionally one doc."""

    sub_id: int
    space_id: str | None
    doc: bytes | None
    patches: bool = False  #: change events carry ``patches`` (path, action, value)
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=4096))
    dropped: int = 0

    def offer(self, event: dict[str, Any]) -> None:
        if self.space_id is not None and event.get("space_id") != self.space_id:
            return
        if self.doc is not None and event.get("doc") != short_hash(self.doc):
            return
        try:
            self.queue.put_nowait(dict(event, subscription=self.sub_id))
        except asyncio.QueueFull:
            self.dropped += 1


class Agent:
    """A running device: ``await Agent(home, keys, config).start()`` … ``await agent.close()``."""

    def __init__(self, home: Home, keys: Keystore, config: AgentConfig | None = None, *,
                 setup: Callable[[Node], None] | None = None,
                 store: str | None = None) -> None:
        self.home = home
        #: called right after the node opened its store, before any peer is served (a backup
        #: installs its storage policy here)
        self.setup = setup
        self.keys = keys
        self.config = config or AgentConfig()
        c = self.config
        listen: list[tuple[str, int, TransportName]] = []
        if c.quic_port is not None:
            listen.append((c.listen, c.quic_port, "quic"))
        if c.tcp_port is not None:
            listen.append((c.listen, c.tcp_port, "tcp"))
        if c.ws_port is not None:
            listen.append((c.listen, c.ws_port, "ws"))
        self.book = AddressBook(static=c.peers, backup=c.backup,
                                backup_peer_id=c.backup_peer_id,
                                self_peer_id=keys.device.id, default_port=DEFAULT_PORT,
                                policy=Backoff(base=0.5, cap=c.reconnect_cap, jitter=0.2))
        #: ``store``: what the node opens instead of the home's SQLite file (a store URL, e.g.
        #: the backup's ``[replicator] store = "postgresql://…"``)
        self.node = Node(store or home.store_path, keys.account, keys.device,
                         certificate=home.certificate(keys),
                         config=NodeConfig(listen=listen, durable=c.durable,
                                           engine=c.engine, transport=c.transport,
                                           reconnect_cap=c.reconnect_cap,
                                           hide_identity=True,  # issue 12.6
                                           limits=c.limits),
                         book=self.book, on_connected=self._on_dialled)
        self.mdns: MdnsDiscovery | None = None
        self.device: LocalDevice | None = None
        self.started_at = 0.0
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hooked: set[str] = set()
        self._subs: dict[int, Subscription] = {}
        self._next_sub = 0
        self.events_seen: list[str] = []  #: peer ids sighted on mDNS (for status)
        #: set when a device is sighted or a connection made (a waiting join retries)
        self._news = asyncio.Event()
        self.first_sync: dict[str, float] = {}  #: space id -> monotonic time first in sync

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> Agent:
        """Open the store, listen, load known peers, start mDNS and the dial loop."""
        self.started_at = time.monotonic()
        await self.node.start()
        # The store is open now (its -wal/-shm exist): nothing in the home may be readable by
        # others, whatever umask the process started with, and what the agent writes from now
        # on (names, config, peers, receipts) is private too. The umask is only tightened
        # (`p2psync run` already set 0077), never loosened.
        os.umask(os.umask(0o077) | 0o077)
        self.home.secure()
        if self.setup is not None:
            self.setup(self.node)
        self.device = LocalDevice(self.home, self.keys, window=0,
                                  replicas=self.node.replicas)
        load_known_file(self.book, self.home.path / KNOWN_PEERS_FILE)
        from p2psync.agent.pairing import revoked_peers  # `device remove` (issue 14)

        self.node.refused_peers |= revoked_peers(self.home.path)
        self._hook_spaces()
        if self.config.mdns:
            quic = self._port("quic")
            tcp = self._port("tcp")
            self.mdns = MdnsDiscovery(
                Advert(self.keys.device.id, quic_port=quic, tcp_port=tcp,
                       ws_port=self._port("ws")),
                on_event=self._on_discovery,
                config=MdnsConfig(poll_interval=self.config.mdns_poll,
                                  interfaces=self.config.interfaces or None))
            await self.mdns.start()
        self._spawn(self._watch_loop())
        log.info(kv("started", peer=self.keys.device.id, listening=",".join(
            self.node.addresses), mdns=self.config.mdns))
        return self

    async def close(self) -> None:
        """Graceful stop: flush edits, say goodbye on mDNS, close connections and the store."""
        if self.closed:
            return
        self.closed = True
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in list(self._subs.values()):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait({"event": "closed", "subscription": sub.sub_id})
        if self.node.store is not None:
            for space in list(self.node.spaces.values()):
                space.settle()  # flush, and snapshot idle documents
        if self.mdns is not None:
            await self.mdns.close()
        with contextlib.suppress(OSError):
            save_known_file(self.book, self.home.path / KNOWN_PEERS_FILE)
        await self.node.close()
        log.info(kv("stopped", peer=self.keys.device.id))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _port(self, transport: str) -> int | None:
        for s in self.node.servers:
            if s.transport == transport:
                return s.port
        return None

    # --- addresses -----------------------------------------------------------------------------
    def reachable_addresses(self) -> list[str]:
        """``transport:host:port`` others can dial (invite hints): LAN addresses first, then
        loopback (useful on this machine; harmless elsewhere: the handshake checks who answers).
        """
        hosts: list[str] = []
        host = self.config.listen
        unspecified = host in ("0.0.0.0", "::", "")
        if unspecified:
            with contextlib.suppress(OSError):
                for a in local_addresses(self.config.interfaces or None, ipv6=False):
                    if a.version == 4 and a.ip not in hosts:
                        hosts.append(a.ip)
            hosts.append("127.0.0.1")
        else:
            hosts.append(host)
        out = []
        for h in hosts[:4]:
            for s in self.node.servers:
                out.append(f"{s.transport}:{bracket(h)}:{s.port}")
        return out[:InviteCode.MAX_ADDRESSES]

    # --- discovery -----------------------------------------------------------------------------
    def _on_discovery(self, ev: DiscoveryEvent) -> None:
        now = time.time()
        if isinstance(ev, PeerSeen):
            if ev.peer_id not in self.events_seen:
                self.events_seen.append(ev.peer_id)
            self.book.mdns_seen(ev.peer_id, ev.addresses, ev.quic_port, ev.tcp_port, now)
            self._news.set()
            log.info(kv("mdns_seen", peer=ev.peer_id, addresses=",".join(ev.addresses)))
        elif isinstance(ev, PeerGone):
            self.book.mdns_gone(ev.peer_id)
            log.info(kv("mdns_gone", peer=ev.peer_id))
        elif isinstance(ev, NetworkChanged):
            log.info(kv("network_changed", addresses=",".join(ev.addresses) or "none"))
            if ev.addresses:
                self.node.reconnect_now()
        self.node.dialer.wake()

    # --- connections ---------------------------------------------------------------------------
    def connected_peers(self) -> set[str]:
        return {e.conn.peer_id for e in self.node.engines if not e.conn.is_closed}

    def _on_dialled(self, engine: PeerEngine, ep: Endpoint) -> None:
        """The node's dialler connected (to whoever the handshake proved is at ``ep``)."""
        log.info(kv("connected", peer=engine.conn.peer_id, endpoint=ep))
        self._news.set()
        self._offer_spaces()
        self._close_duplicates()

    def _close_duplicates(self) -> None:
        outgoing = self.node.dialer.outgoing
        links = [PeerLink(id(e), e.conn.peer_id, id(e) in outgoing)
                 for e in self.node.engines if not e.conn.is_closed and e.ready.is_set()]
        by_key = {id(e): e for e in self.node.engines}
        for key in duplicates_to_close(self.keys.device.id, links):
            engine = by_key.get(key)
            if engine is not None:
                self._spawn(engine.close("duplicate connection"))

    def _offer_spaces(self) -> None:
        """Sync spaces the space exchange could not list (created or joined after the peer
        connected) with every connected peer our ACL lets have them."""
        for engine in list(self.node.engines):
            if not engine.ready.is_set() or engine.conn.is_closed:
                continue
            for sid in self.node.spaces:
                if sid not in engine.shared and self.node.replicas.may_access(
                        sid, engine.remote_account):
                    engine.shared.add(sid)
                    engine.submit(("space", sid, b""), 2)

    async def _watch_loop(self) -> None:
        """On every sync event: hook new spaces, offer spaces, drop duplicate connections,
        note first convergence, and wake the dial loop when connections changed."""
        peers = self.connected_peers()
        while True:
            await self.node.replicas.changed()
            self._hook_spaces()
            self._offer_spaces()
            self._close_duplicates()
            now_peers = self.connected_peers()
            if now_peers != peers:
                peers = now_peers
                self.node.dialer.wake()
                self._news.set()
            for engine in self.node.engines:
                for ps in engine.status().spaces:
                    if ps.in_sync and ps.space_id not in self.first_sync:
                        self.first_sync[ps.space_id] = time.monotonic()
                        log.info(kv("first_sync", space=ps.space_id, peer=engine.conn.peer_id,
                                    seconds=round(time.monotonic() - self.started_at, 3)))

    # --- change notifications ------------------------------------------------------------------
    def _hook_spaces(self) -> None:
        for sid, space in list(self.node.spaces.items()):
            if sid not in self._hooked:
                self._hooked.add(sid)
                space.tree_listeners.append(self._on_tree)

    def _on_tree(self, space_id: str, tree_id: bytes, result: AddResult) -> None:
        if not self._subs:
            return
        origin = "peer" if self.node.replicas.source is not None else "local"
        ev = {"event": "change", "space_id": space_id, "doc": short_hash(tree_id),
              "heads": [short_hash(h) for h in result.heads], "origin": origin,
              "changes": len(result.attached)}
        space = self.node.spaces.get(space_id)
        if space is not None:
            flagged = [short_hash(c.id) for c in result.attached
                       if space.removed_after(c) is not None]
            if flagged:  # by an author removed at or after their ACL head (docs/acl.md)
                ev["removed_after"] = flagged
        asyncio.get_running_loop().call_soon(self._file_event, space_id, tree_id, origin)
        later = []
        for sub in list(self._subs.values()):
            if sub.patches:
                later.append(sub)
            else:
                sub.offer(ev)
        if later:
            # this runs inside the store's persist hook: render after it, at fixed heads
            attached = {c.id for c in result.attached}
            before = list(dict.fromkeys(
                [h for h in result.heads if h not in attached]
                + [p for c in result.attached for p in c.prev_ids if p not in attached]))
            asyncio.get_running_loop().call_soon(
                self._offer_patches, later, ev, space_id, tree_id, before, list(result.heads))

    def _file_event(self, space_id: str, tree_id: bytes, origin: str) -> None:
        """A change to a file's document is also a ``file`` event (docs/files.md)."""
        from p2psync.agent.fileops import file_event  # fileops registers ops into ops.py

        space = self.node.spaces.get(space_id)
        ev = file_event(space, tree_id, origin) if space is not None else None
        if ev is not None:
            for sub in list(self._subs.values()):
                sub.offer(ev)

    def _offer_patches(self, subs: list[Subscription], ev: dict[str, Any], space_id: str,
                       tree_id: bytes, before: list[bytes], after: list[bytes]) -> None:
        """The change event with ``patches``: the JSON view at the heads before the change
        diffed with the view after it (p2psync/replica/patches.py)."""
        from p2psync.replica.patches import diff

        space = self.node.spaces.get(space_id)
        try:
            if space is None:
                raise P2PSyncError("the space is gone")
            doc = space.document(tree_id)
            old = doc.to_json(before) if before else {}
            ev = dict(ev, patches=diff(old, doc.to_json(after)))
        except P2PSyncError as exc:  # unreadable here (no key, quarantined): say so, no patch
            ev = dict(ev, patches=None, patch_error=str(exc))
        for sub in subs:
            sub.offer(ev)

    def subscribe(self, space: str | None = None, doc: str | None = None,
                  patches: bool = False) -> Subscription:
        """Change events of one space (by id/name/prefix) or all, optionally one document;
        ``patches``: each event carries the patches that turn the old view into the new."""
        assert self.device is not None
        sid = tid = None
        if space is not None:
            sp = self.device.resolve_space(space)
            sid = sp.id
            if doc is not None:
                from p2psync.device import doc_ref

                tid = doc_ref(sp, doc)
        self._next_sub += 1
        sub = Subscription(self._next_sub, sid, tid, patches)
        self._subs[sub.sub_id] = sub
        return sub

    def unsubscribe(self, sub_id: int) -> bool:
        return self._subs.pop(sub_id, None) is not None

    # --- operations ----------------------------------------------------------------------------
    async def join(self, code: str, peers: list[str] | None = None, name: str | None = None,
                   timeout: float = 30.0) -> Space:
        """Join a space by invite: ask connected peers first, then ``peers``, the code's hints,
        then every endpoint in the address book; the first that offers the space wins."""
        ic = ops.parse_invite(code)
        if not ic.space_id:
            raise JoinError("this invite code does not name its space (old format)")
        held = self.node.spaces.get(ic.space_id)
        if held is not None and self.node.replicas.may_access(held.id,
                                                              self.keys.account.public):
            return self._joined(held, name)
        # held without access (a pending, refused or failed join): bootstrap again with this
        # code — the ACL pull it makes shows a decision we missed (a revoked invite is not
        # pushed to a non-member), and then this code's join or request is made
        try:
            return await self._join(ic, peers, name, timeout)
        except (JoinError, TimeoutError):
            # nothing half-joined left behind: a space adopted here that we neither belong to
            # nor wait for is dropped (it would show as role "none" and could not be used)
            space = self.node.spaces.get(ic.space_id)
            if space is not None and ops.join_state(
                    space, self.keys.account.public)["state"] not in ("member", "pending"):
                self.leave(space.id)
            raise

    async def _join(self, ic: InviteCode, peers: list[str] | None, name: str | None,
                    timeout: float) -> Space:
        """Ask every ready connection, then every endpoint we can name; when nobody could be
        asked at all (no connection, nothing reachable yet), wait for mDNS to sight a device
        or the dialler to connect one, and try again — up to ``timeout``. A peer that answered
        and refused ends the join at once (waiting would not change its answer)."""
        errors: list[str] = []
        asked: set[int] = set()
        tried: set[tuple[str, int]] = set()
        answered = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._news.clear()
                    for engine in [e for e in self.node.engines if e.ready.is_set()
                                   and id(e) not in asked]:
                        asked.add(id(engine))
                        space = await self._try_bootstrap(engine, ic, errors)
                        if space is not None:
                            return self._joined(space, name)
                        answered += not engine.conn.is_closed  # closed: it did not answer
                    endpoints: list[Endpoint] = []
                    for text in peers or []:
                        endpoints += parse_endpoints(text, DEFAULT_PORT)
                    for hint in ic.addresses:
                        endpoints += _hint_endpoints(hint)
                    for cand in self.book.candidates(time.time() + 3600, ()):
                        endpoints.append(cand.endpoint)
                    for ep in endpoints:
                        if (ep.host, ep.port) in tried or _is_self(ep, self):
                            continue
                        tried.add((ep.host, ep.port))
                        try:
                            engine = await asyncio.wait_for(self.node.connect_endpoint(ep),
                                                            DIAL_TIMEOUT)
                        except (TransportError, OSError, TimeoutError) as exc:
                            errors.append(f"{ep}: {type(exc).__name__}: {exc}")
                            continue
                        self.node.dialer.adopt(ep, engine)
                        asked.add(id(engine))
                        space = await self._try_bootstrap(engine, ic, errors)
                        if space is not None:
                            return self._joined(space, name)
                        # a connection closed under us (e.g. a duplicate of the dialler's)
                        # did not answer: keep looking
                        answered += not engine.conn.is_closed
                    if answered:
                        break
                    log.info(kv("join_waiting", space=ic.space_id, reason="no peer yet"))
                    await self._news.wait()  # a device sighted on mDNS, or a connection
                    tried.clear()  # what failed before may answer now
        except TimeoutError:
            if answered:
                raise
            raise JoinError(f"no device holding the space was found in {timeout:g} s"
                            + (f" ({'; '.join(errors[-3:])})" if errors else "")
                            + ": is it on and on this network? (or give --peer HOST:PORT)"
                            ) from None
        raise JoinError("could not join: " + "; ".join(errors[-4:]))

    async def _try_bootstrap(self, engine: PeerEngine, ic: InviteCode,
                             errors: list[str]) -> Space | None:
        try:
            return await engine.bootstrap(ic.space_id, ic)
        except (P2PSyncError, TimeoutError) as exc:
            errors.append(f"{engine.conn.peer_id[:12]}…: {exc}")
            return None

    def _joined(self, space: Space, name: str | None) -> Space:
        assert self.device is not None
        if name:
            self.device.set_name(space.id, name)
        self._hook_spaces()
        self._offer_spaces()
        log.info(kv("joined", space=space.id, role=ops.role_name(space.role())))
        return space

    async def replicate(self, space_id: str, timeout: float = 30.0) -> Space:
        """Fetch a space this account replicates (or a member's space on a new device) from
        a connected peer that holds it."""
        if space_id in self.node.spaces:
            return self.node.spaces[space_id]
        errors: list[str] = []
        async with asyncio.timeout(timeout):
            for engine in [e for e in self.node.engines if e.ready.is_set()]:
                try:
                    space = await self.node.fetch_space(space_id, engine)
                except (P2PSyncError, TimeoutError) as exc:
                    errors.append(str(exc))
                    continue
                return self._joined(space, None)
        raise JoinError("no connected peer offers that space: " + "; ".join(errors[-3:]))

    def join_state(self, space_id: str) -> dict[str, Any]:
        """Where this account stands in a space it holds (see :func:`ops.join_state`), with
        the command an admin runs to accept a pending request."""
        space = self.node.spaces.get(space_id)
        if space is None:
            return {"space_id": space_id, "state": "none"}
        out = dict(ops.join_state(space, self.keys.account.public), space_id=space_id)
        if out["state"] == "pending":
            out["accept_command"] = ops.accept_command(space_id, out["request"])
        return out

    async def wait_access(self, space_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until a pending join is decided: returns the join state once we are a member;
        :class:`JoinRefused` if the request was declined, its invite revoked or expired (the
        local copy is dropped); TimeoutError if still pending after ``timeout``.

        The admin's Accept arrives as an ACL push (or in the space sync the admin's agent
        offers once we may have it) and wakes this at once. A decline is not pushed to a
        non-member, so the ACL is also pulled from the peers sharing the space, first after
        ``ACL_PULL_FIRST`` s then backing off to one pull per ``ACL_PULL_CAP`` s: a pending
        join costs well under one message per second."""
        from p2psync.errors import JoinRefused

        replicas = self.node.replicas
        pull = Backoff(base=ACL_PULL_FIRST, cap=ACL_PULL_CAP, jitter=0.1)
        tries = 1
        next_pull = time.monotonic() + pull.delay(tries)
        async with asyncio.timeout(timeout):
            while self.join_state(space_id)["state"] == "pending":
                changed = replicas.changed()
                now = time.monotonic()
                if now >= next_pull:
                    # pushes reach members only: a decline arrives when we ask for the ACL
                    for e in list(self.node.engines):
                        if space_id in e.shared and e.ready.is_set():
                            e.submit(("acl", space_id, b""), 2)
                    tries += 1
                    next_pull = now + pull.delay(tries)
                await asyncio.wait([changed], timeout=max(0.0, next_pull - now))
                changed.cancel()
        st = self.join_state(space_id)
        if st["state"] == "member":
            self._offer_spaces()
            return st
        if st["state"] != "none" or space_id in self.node.spaces:
            self.leave(space_id)
        raise JoinRefused({"declined": "an admin declined the join request",
                           "revoked": "the invite was revoked (its requests are void)",
                           "expired": "the invite expired before an admin accepted",
                           }.get(st["state"], "the join request is gone")
                          + f" ({space_id}); ask for a new invite code")

    def leave(self, space_ref: str) -> dict[str, Any]:
        """``space leave``: see :func:`ops.space_leave`; a dropped space also leaves every
        connection's shared set (no more head syncs for it)."""
        assert self.device is not None
        sid = self.device.resolve_space(space_ref).id
        out = ops.space_leave(self.device, sid)
        if out["forgotten"]:
            for e in self.node.engines:
                e.shared.discard(sid)
            self._hooked.discard(sid)
        return out

    def sync_state(self, space_id: str) -> dict[str, Any]:
        """How far one space is with the connected peers that share it (for progress)."""
        peers = [ps for e in self.node.engines for ps in e.status().spaces
                 if ps.space_id == space_id]
        space = self.node.spaces.get(space_id)
        return {"space_id": space_id, "documents": len(space.tree_ids()) if space else 0,
                "peers": len(peers), "in_sync": sum(1 for p in peers if p.in_sync),
                "pending": sum(p.pending_trees for p in peers)}

    async def wait_synced(self, space_id: str, timeout: float = 30.0,
                          on_progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Until at least one connected peer agrees with us on the space (nothing pending).

        An idle peer that is not yet in sync is asked for a head sync, at most once per
        ``POKE_INTERVAL`` each (a sync that fails at once, e.g. refused, must not turn into a
        request loop: that was ~550 messages/s while a join waited for approval), and never
        while we have no access to the space."""
        poked: dict[int, float] = {}
        replicas = self.node.replicas
        async with asyncio.timeout(timeout):
            while True:
                changed = replicas.changed()
                st = self.sync_state(space_id)
                if on_progress is not None:
                    on_progress(st)
                if st["in_sync"] > 0 and st["pending"] == 0:
                    changed.cancel()
                    return
                now = time.monotonic()
                wake: float | None = None
                if replicas.may_access(space_id, self.keys.account.public):
                    for e in list(self.node.engines):
                        if space_id not in e.shared or not e.idle:
                            continue
                        last = poked.get(id(e))
                        if last is None or now - last >= POKE_INTERVAL:
                            e.sync_now(space_id)  # announced all, not compared again: confirm
                            poked[id(e)] = now
                        else:
                            due = last + POKE_INTERVAL
                            wake = due if wake is None else min(wake, due)
                await asyncio.wait([changed], timeout=None if wake is None
                                   else max(0.0, wake - now))
                changed.cancel()

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers and every endpoint we know, with dial state."""
        rows: list[dict[str, Any]] = []
        for e in sorted(self.node.engines, key=lambda e: e.conn.peer_id):
            st = e.status()
            rows.append({"peer_id": st.peer_id, "account_id": st.account_id,
                         "transport": st.transport, "connected": st.connected,
                         "outgoing": id(e) in self.node.dialer.outgoing,
                         "shared_spaces": [s.space_id for s in st.spaces],
                         "last_error": st.last_error})
        return rows

    def status(self) -> dict[str, Any]:
        """Everything in one JSON-able dict, read from live state."""
        ns = self.node.status()
        endpoints = []
        connected = self.connected_peers()
        # entries(), not candidates(far future): that expires (deletes) every mDNS sighting
        # with a failed dial — with issue 12.6's refusals, each status call emptied the book
        for cand in self.book.entries():
            if cand.peer_id is not None and cand.peer_id == self.keys.device.id:
                continue
            ds = self.node.dialer.state.get(cand.endpoint, DialState())
            pid = cand.peer_id or self.node.dialer.aliases.get(
                (cand.endpoint.host, cand.endpoint.port))
            endpoints.append({"endpoint": str(cand.endpoint), "peer_id": pid,
                              "sources": sorted(s.value for s in cand.sources),
                              "failures": cand.failures, "connected": pid in connected,
                              "last_ok": ds.last_ok, "last_error": ds.last_error,
                              # expected one peer there, the handshake proved another
                              "relabelled_from": ds.relabelled[0] if ds.relabelled else None})
        names = self.device.names() if self.device else {}
        spaces = []
        for s in ns.spaces:
            row = dict(asdict(s), name=names.get(s.space_id, ""))
            if s.role is None:  # not a member: where our join (or membership) stands
                js = self.join_state(s.space_id)
                row["join"] = js
                row["role"] = js["state"]
            spaces.append(row)
        return {"version": __version__, "peer_id": ns.peer_id, "account_id": ns.account_id,
                "home": str(self.home.path), "listening": ns.listening,
                "uptime": round(time.monotonic() - self.started_at, 3),
                "mdns": {"enabled": self.mdns is not None,
                         "local_addresses": list(self.mdns.local_addresses) if self.mdns
                         else [], "sighted": list(self.events_seen)},
                "spaces": spaces, "peers": [asdict(p) for p in ns.peers],
                "endpoints": endpoints, "backup_receipts": backups.load_receipts(self.home.path)}

    # --- backups -------------------------------------------------------------------------------
    async def add_backup(self, space_ref: str, address: str) -> dict[str, Any]:
        """Make the device answering at ``address`` a backup of a space: identify it by
        handshake, write the AddReplicator record for its account, remember and dial it (the
        engine then offers it the space, which it fetches)."""
        assert self.device is not None
        space = self.device.resolve_space(space_ref)
        who = await backups.identify(address, self.keys.device, self.node.certificate)
        written = backups.add_replicator_record(space, self.keys.account, who.account)
        backups.write_backup_config(self.home.config_path, who.address, who.peer_id)
        self.remember_backup(who.address, who.peer_id)
        return {"space_id": space.id, "backup_peer": who.peer_id,
                "backup_account": who.account_id, "address": who.address,
                "record_written": written}

    def remember_backup(self, address: str, peer_id: str | None) -> None:
        """Dial the backup at ``address`` from now on (config and address book)."""
        self.book.set_backup(parse_endpoints(address, DEFAULT_PORT), peer_id)
        self.config.backup, self.config.backup_peer_id = address, peer_id
        self.node.dialer.wake()

    async def backup_status(self, space_ref: str, timeout: float = 10.0) -> dict[str, Any]:
        """Ask every connected replicator of the space for a signed receipt, verify it and
        compare it with our own state; a checked result is kept for ``status``."""
        assert self.device is not None
        space = self.device.resolve_space(space_ref)
        engines = backups.backup_engines(self.node.engines, space)
        previous = backups.load_receipts(self.home.path).get(space.id)
        out = await backups.collect_receipts(engines, space, self.node.replicas.ldiff(space.id),
                                             timeout, previous)
        if engines:
            backups.save_receipt(self.home.path, space.id, out)
        return out


def _hint_endpoints(hint: str) -> list[Endpoint]:
    """``tcp:host:port`` / ``quic:host:port`` / ``ws:…`` (invite hints) as endpoints; bad
    ones skipped."""
    try:
        name, rest = split_hint(hint)
        transport = Transport(name)
    except (P2PSyncError, ValueError):
        return []
    try:
        return [Endpoint(ep.host, ep.port, transport) for ep in parse_endpoints(
            f"{transport.value}://{rest}")]
    except P2PSyncError:
        return []


def _is_self(ep: Endpoint, agent: Agent) -> bool:
    """Whether ``ep`` is one of our own listeners (an invite made here, used here)."""
    ports = {s.port for s in agent.node.servers}
    if ep.port not in ports:
        return False
    try:
        ip = ipaddress.ip_address(ep.host)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    try:
        mine = {str(a.ip) for a in local_addresses(None, ipv6=True)}
    except OSError:
        return False
    return ep.host in mine
