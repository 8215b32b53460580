"""The per-connection sync engine: a thin asyncio shell over the sans-IO sync cores.

One :class:`PeerEngine` runs per authenticated connection. It owns only what needs the event
loop: the two streams (:class:`~p2psync.sync.channel.Channel`), tasks, futures and timers.
Every decision is made by a sans-IO core and comes back as a reply and/or
:mod:`effects <p2psync.sync.effects>` that this shell carries out:

* :class:`~p2psync.sync.responder.Responder` — everything on the peer's request stream: the
  space exchange (:mod:`~p2psync.sync.spacex`), the inbound gate, pushes and requests;
* :mod:`~p2psync.sync.jobs` — which core runs a scheduled job, what its outcome changes, and
  the in-sync check after our pushes; :mod:`~p2psync.sync.pull` — ACL pull, head sync + tree
  jobs, tree pull with its "stuck" rule; :mod:`~p2psync.sync.bootstrap` — fetching a space;
* :mod:`~p2psync.sync.ingest` — incoming changes, verified and stored a chunk at a time;
* :mod:`~p2psync.sync.push` — what to push and the bounded push queue;
* :mod:`~p2psync.sync.peerstate` — who the peer is, strikes, the stranger restriction, status.

A misbehaving peer collects strikes and is disconnected (at once for a :class:`Violation`);
a peer that shares no space is disconnected after ``stranger_grace``. Nothing a peer sends
affects other connections. See docs/engine.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

from p2psync.errors import (
    JoinError,
    P2PSyncError,
    PeerRefused,
    ProtocolError,
    StoreError,
    TransportError,
)
from p2psync.replica.acl import InviteCode
from p2psync.replica.space import Space
from p2psync.replica.tree import AddResult
from p2psync.sync import effects as fx
from p2psync.sync import files_io, jobs
from p2psync.sync.bootstrap import BOOTSTRAP_DOMAIN, BootstrapJoin, bootstrap_message
from p2psync.sync.channel import Channel
from p2psync.sync.ingest import Ingest
from p2psync.sync.limits import EngineConfig
from p2psync.sync.messages import (
    Message,
    ReceiptRequest,
    ReceiptResponse,
    SpaceTokens,
    StorageRefused,
    decode,
)
from p2psync.sync.notice import removal_of
from p2psync.sync.peerstate import PeerState
from p2psync.sync.pull import RESPONSE_FOR, Challenge, ChallengeResult, Core
from p2psync.sync.push import PushQueue, acl_push, offers, tree_pushes
from p2psync.sync.replicas import Replicas
from p2psync.sync.responder import UNDECODABLE, Responder
from p2psync.sync.sched import Backoff, PeerScheduler
from p2psync.sync.status import PeerSpaceStatus, PeerStatus
from p2psync.transport.interface import PeerConnection, PeerStream

__all__ = ["BOOTSTRAP_DOMAIN", "EngineConfig", "PeerEngine", "PeerSpaceStatus", "PeerStatus",
           "bootstrap_message"]

log = logging.getLogger("p2psync.sync")
#: loop turns the push loop waits for more local news while it keeps coming (issue 13)
PUSH_GATHER_TURNS = 4


class PeerEngine:
    """Sync with one connected peer until the connection closes."""

    def __init__(self, replicas: Replicas, conn: PeerConnection,
                 config: EngineConfig | None = None) -> None:
        self.replicas = replicas
        self.conn = conn
        self.config = cfg = config or EngineConfig()
        self.remote_account: bytes = conn.certificate.account
        self.remote_device: bytes = conn.certificate.device
        self.binding: bytes = conn.result.handshake_hash
        self.state = PeerState(replicas, cfg, self.remote_account, self.remote_device,
                               self.binding)
        now = time.monotonic()
        self.responder = Responder(self.state, self, clock=now)
        self.channel = Channel(cfg, self._strike)
        self.channel.before_send = replicas.store.commit_group  # grouped writes: docs/replica.md
        rng = random.Random(cfg.seed)
        self.sched: PeerScheduler[fx.JobKey] = PeerScheduler(
            now=now, max_queue=cfg.max_jobs_queued, max_in_flight=cfg.max_in_flight,
            rate=cfg.out_rate, burst=cfg.out_burst, backoff=Backoff(base=0.2, cap=10.0, rng=rng))
        self._exchanged = asyncio.Event()
        self.ready = asyncio.Event()  #: set once the space exchange is done
        self._push_queue = PushQueue(cfg.max_push_queue, cfg.batch_bytes)
        self._push_event = asyncio.Event()
        self._sched_event = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.finished = asyncio.Event()
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"<PeerEngine {self.conn.peer_id}>"

    # --- state the agent, the backup and status read ---------------------------------------------
    @property
    def shared(self) -> set[str]:
        """Spaces both sides hold (the agent adds new ones it may sync)."""
        return self.state.shared

    @property
    def strikes(self) -> int:
        return self.state.strikes

    @property
    def quota_refusals(self) -> int:
        return self.state.quota_refusals

    @property
    def refused_by_peer(self) -> dict[str, StorageRefused]:
        return self.state.refused_by_peer

    @property
    def pushes_dropped(self) -> int:
        return self._push_queue.dropped

    @property
    def traffic(self) -> dict[tuple[str, str], list[int]]:
        return self.channel.traffic

    @property
    def messages_in(self) -> int:
        return self.channel.messages_in

    @property
    def messages_out(self) -> int:
        return self.channel.messages_out

    @property
    def bytes_in(self) -> int:
        return self.channel.bytes_in

    @property
    def bytes_out(self) -> int:
        return self.channel.bytes_out

    # --- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the connection until it closes. Peer misbehaviour never raises from here."""
        self.replicas.pushers.append(self)
        try:
            await self._run()
        except (P2PSyncError, TimeoutError, ConnectionError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.info("sync with %s ended: %s", self.conn.peer_id, self.last_error)
        finally:
            self._closing = True
            if self in self.replicas.pushers:
                self.replicas.pushers.remove(self)
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self.channel.cancel_all()
            if not self.conn.is_closed:
                await self.conn.close("sync engine stopped")
            self.finished.set()
            self.replicas.notify()

    async def close(self, reason: str = "") -> None:
        """Close the connection; :meth:`run` returns soon after."""
        self._closing = True
        await self.conn.close(reason)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("engine task failed: %r", task.exception())

    async def _run(self) -> None:
        cfg, ch = self.config, self.channel
        ch.out = await self.conn.open_stream()
        await ch.send(ch.out, self.responder.hello(), 0)
        async with asyncio.timeout(cfg.exchange_timeout):
            ch.inp = await self.conn.accept_stream()
        readers = [self._spawn(self._read_requests(ch.inp)),
                   self._spawn(self._read_responses(ch.out))]
        self._spawn(files_io.serve_extra_streams(self))  # further streams: chunks (files.md)
        self._spawn(self._push_loop())
        self._spawn(self._sched_loop())
        closed = self._spawn(self.conn.wait_closed())
        async with asyncio.timeout(cfg.exchange_timeout):
            await self._exchanged.wait()
        assert self.responder.exchanged is not None
        self._apply(self.state.exchanged(self.responder.exchanged))
        self.ready.set()
        for sid in sorted(self.responder.exchanged - self.shared):  # held there, lost: say why
            rid = removal_of(self.replicas.spaces.get(sid), self.remote_account)
            if rid is not None:
                self.push_acl(self.replicas.spaces[sid], [rid])
        self.offer_replicated()
        self.replicas.notify()
        self._spawn(self._periodic())
        if self.state.restricted:
            # a small receive budget now; closed by the transport after the grace unless the
            # peer comes to share something first (invite bootstrap): PeerState.befriend
            self.conn.restrict(grace=cfg.stranger_grace)
        await asyncio.wait([closed, *readers], return_when=asyncio.FIRST_COMPLETED)
        reason = self.conn.close_reason
        if self.state.restricted and self.last_error is None and reason is not None:
            self.last_error = str(reason)

    # --- effects -------------------------------------------------------------------------------
    def _apply(self, effects: Iterable[fx.Effect]) -> None:
        """Carry out what a core decided."""
        for eff in effects:
            match eff:
                case fx.Strike(why):
                    self._strike(why)
                case fx.Violation(why):
                    self._strike(why, violation=True)
                case fx.Push(message, space_id):
                    self._enqueue(message, space_id)
                case fx.Submit(key, priority, spacing):
                    self.submit(key, priority, spacing)
                case fx.Offered(space_id):  # only backups fetch offered spaces
                    self.replicas.policy.on_offer(self, space_id)
                case fx.Serve(message, request_id):
                    self._spawn(self._serve(message, request_id))
                case fx.Befriend():
                    self.conn.lift_restriction()
                    log.debug("peer %s shares a space: restriction lifted", self.conn.peer_id)
                case fx.Answer():  # outside the read loop: a task (in the loop: _carry)
                    self._spawn(self._answer(eff))

    async def _carry(self, effects: Iterable[fx.Effect]) -> None:
        """Carry out effects in the read loop: answers are sent in order before it reads on."""
        for eff in effects:
            if isinstance(eff, fx.Answer):
                await self._answer(eff)
            else:
                self._apply((eff,))

    async def _answer(self, eff: fx.Answer) -> None:
        assert self.channel.inp is not None
        with contextlib.suppress(TransportError):
            await self.channel.send(self.channel.inp, eff.message, eff.request_id)

    def _strike(self, why: str, *, violation: bool = False) -> None:
        log.debug("peer %s: %s", self.conn.peer_id, why)
        verdict = self.state.punish(why, violation=violation)
        if verdict is not None and not self._closing:
            log.info("disconnecting %s: %s", self.conn.peer_id, verdict)
            self.last_error, self._closing = verdict, True
            self._spawn(self.conn.close("protocol violation"))

    async def _ingest(self, ing: Ingest) -> None:
        """Take in a batch a chunk at a time, yielding to the loop between chunks."""
        while not ing.done:
            self._apply(ing.step())
            if not ing.done:
                await asyncio.sleep(0)

    async def _drive(self, core: Core) -> None:
        """Run one requester core over the connection until it is done."""
        while not core.done:
            if core.ingest is not None:
                await self._ingest(core.ingest)
                self._apply(core.ingested(time.time()))
            else:
                batch: list[tuple[int, Message]] = []
                while (nxt := core.next_request()) is not None:
                    batch.append(nxt)
                if not batch:
                    raise ProtocolError(f"{type(core).__name__} stalled")  # a bug of ours
                answers = await asyncio.gather(
                    *(self.channel.request(req, RESPONSE_FOR[type(req)]) for _, req in batch))
                now = time.time()
                for (tag, _), ans in zip(batch, answers, strict=True):
                    self._apply(core.receive(tag, ans, now))
            if core.error is not None:
                raise core.error

    # --- reading -------------------------------------------------------------------------------
    async def _read_responses(self, stream: PeerStream) -> None:
        """Our stream: the peer's answers (and its space tokens)."""
        async for raw in self.channel.recv(stream):
            try:
                env = decode(raw)
            except UNDECODABLE as exc:
                self._strike(f"bad response: {exc}")
                continue
            msg = env.message
            self.channel.count("in", msg, len(raw))
            if isinstance(msg, SpaceTokens):
                self._apply(self.responder.tokens(msg))
                if self.responder.exchanged is not None:
                    self._exchanged.set()
            elif not self.channel.resolve(env.request_id, msg):
                self._strike(f"response to unknown request {env.request_id}")

    async def _read_requests(self, stream: PeerStream) -> None:
        """The peer's stream: everything on it goes to the responder, in order (a push's
        changes are in before the next message is read); answers go back on it."""
        r = self.responder
        async for raw in self.channel.recv(stream):
            try:
                env = decode(raw)
            except UNDECODABLE as exc:
                await self._carry(r.undecodable(exc))
                continue
            self.channel.count("in", env.message, len(raw))
            await self._carry(r.receive(env.message, env.request_id, time.time(),
                                        time.monotonic()))
            if r.ingest is not None:
                await self._ingest(r.ingest)
                self._apply(r.ingested(time.time()))

    async def _serve(self, msg: Message, rid: int) -> None:
        try:
            ing = self.responder.prepare(msg)
            if ing is not None:
                try:
                    await self._ingest(ing)
                except StoreError as exc:
                    log.warning("store error while serving %s: %s", self.conn.peer_id, exc)
            reply = self.responder.answer(msg, time.time())
            self._apply(reply.effects)
            await self._answer(fx.Answer(reply.message, rid))
        finally:
            self.responder.served(msg)

    # --- pushing (called synchronously from the replica listeners) ------------------------------
    def _enqueue(self, msg: Message, space_id: str) -> None:
        self._apply(self._push_queue.put(msg, space_id))
        self._push_event.set()

    def _pushing(self) -> bool:
        return not self._closing and self.ready.is_set()

    def push_tree(self, space: Space, tree_id: bytes, result: AddResult) -> None:
        if self._pushing():
            self._apply(tree_pushes(self.state, space, tree_id, result))

    def push_acl(self, space: Space, record_ids: list[bytes]) -> None:
        self._apply(self.state.befriend(acl_changed=True))  # it may have made the peer a member
        if self._pushing():
            self._apply(acl_push(self.state, space, record_ids))

    def offer_replicated(self, space_id: str | None = None) -> None:
        """Offer the peer the spaces our ACL names it replicator of (docs/backup.md)."""
        if self._pushing():
            self._apply(offers(self.state, space_id))

    async def _push_loop(self) -> None:
        assert self.channel.out is not None
        q = self._push_queue
        while not self._closing:
            if not q:
                while not q:
                    self._push_event.clear()
                    await self._push_event.wait()
                # woken by new local news: let the next few loop turns add to it while they
                # do (a burst of edits), so pushes of one tree go as one message after one
                # store commit (PushQueue merging, grouped writes: docs/replica.md)
                for _ in range(PUSH_GATHER_TURNS):
                    n = len(q)
                    await asyncio.sleep(0)
                    if len(q) == n:
                        break
            msg, after = q.pop()
            await self.channel.send(self.channel.out, msg, 0)
            self._apply(after)
            if not q:
                self.replicas.notify()  # idle may have changed

    # --- scheduling (requester side) -----------------------------------------------------------
    def submit(self, key: fx.JobKey, priority: int = 1, spacing: float = 0.0) -> None:
        """Ask for a sync job with this peer (deduped, bounded, rate limited; runs of the key
        at least ``spacing`` seconds apart)."""
        if self._closing:
            return
        self.sched.submit(key, time.monotonic(), priority, spacing)
        self._sched_event.set()

    def sync_now(self, space_id: str | None = None) -> None:
        """Schedule a head sync of one or every shared space (e.g. after reconnecting)."""
        for sid in ([space_id] if space_id else list(self.shared)):
            self.submit(("space", sid, b""), 2)

    async def _sched_loop(self) -> None:
        while not self._closing:
            self._sched_event.clear()
            now = time.monotonic()
            for key in self.sched.poll(now):
                self._spawn(self._job(key))
            wake = self.sched.next_wakeup(now)
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wake is None else max(0.0, wake - now)
                                           + 0.001):
                    await self._sched_event.wait()

    async def _periodic(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.config.head_sync_interval)  # a timer, not synchronisation
            self.sync_now()

    async def _job(self, key: fx.JobKey) -> None:
        try:
            await self._drive(jobs.core_for(self.state, self, key))
        except asyncio.CancelledError:
            raise
        except (P2PSyncError, TimeoutError) as exc:
            why, retryable, retry_after = jobs.failed(self.state, key, exc)
            self.sched.failed(key, time.monotonic(), why, retryable=retryable,
                              retry_after=retry_after)
            log.debug("job %s with %s failed: %s", key[0], self.conn.peer_id, why)
        else:
            self.sched.succeeded(key, time.monotonic())
            self._apply(jobs.succeeded(self.state, key, time.time()))
        finally:
            self._sched_event.set()
            self.replicas.notify()

    # --- bootstrap (joiner side) ---------------------------------------------------------------
    async def bootstrap(self, space_id: str, code: InviteCode | None = None) -> Space:
        """Fetch a space from this peer: with an invite code (proving the invite key by signing
        this session's challenge) or, for a member's new device or a replicator, without.
        With a code, the join record (or join request) is created and pushed."""
        async with asyncio.timeout(self.config.exchange_timeout):
            await self.ready.wait()
        self._apply(self.state.befriend(force=True))  # we chose to fetch from this peer
        core = BootstrapJoin(self.state, self, space_id, code)
        try:
            await self._drive(core)
        except PeerRefused as exc:
            if core.space is not None:
                raise
            raise JoinError(f"peer {self.conn.peer_id} does not offer that space to us "
                            f"(unknown space, or the invite is revoked)") from exc
        assert core.space is not None
        return core.space

    # --- status --------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """No job queued, retrying or in flight, and no push waiting to be sent."""
        st = self.sched.status()
        return (self.ready.is_set() and not self._push_queue
                and st.queued == st.retrying == st.in_flight == 0)

    def status(self) -> PeerStatus:
        ch = self.channel
        return PeerStatus(
            peer_id=self.conn.peer_id, account_id=self.conn.account_id,
            transport=self.conn.transport, connected=not self.conn.is_closed,
            ready=self.ready.is_set(), spaces=self.state.statuses(), scheduler=self.sched.status(),
            push_queue=len(self._push_queue), pushes_dropped=self.pushes_dropped,
            strikes=self.strikes, messages_in=ch.messages_in, messages_out=ch.messages_out,
            bytes_in=ch.bytes_in, bytes_out=ch.bytes_out, last_error=self.last_error)

    # --- backup peers (docs/backup.md) ---------------------------------------------------------
    async def request_receipt(self, space_id: str, nonce: bytes) -> bytes:
        """Ask the peer (a backup) for a signed storage receipt of one space."""
        resp = await self.channel.request(ReceiptRequest(space_id, nonce), ReceiptResponse)
        return resp.receipt

    async def challenge(self, space_id: str, count: int = 3,
                        rng: random.Random | None = None) -> ChallengeResult:
        """Ask the peer (a backup) for ``count`` changes of the space chosen at random among
        ours and check their ids: proof that it stores them (see :class:`Challenge`)."""
        core = Challenge(self.state, self, space_id, count, rng or random.SystemRandom())
        await self._drive(core)
        return core.result
