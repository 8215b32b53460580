"""The per-connection sync engine: a thin asyncio shell over the sans-IO sync cores.

One :class:`PeerEngine` runs per authenticated connection. Streams: each side opens **one**
stream, its *request stream*; on it the opener sends requests and pushes, the other side
sends only responses and errors (matched by request id). Two streams per connection, no
head-of-line blocking between one side's pushes and the other side's big answers, and a
message's role is known from the stream it arrived on.

Order of work (see docs/engine.md): space exchange (:mod:`spacex`, tokens keyed from the
space header, listed only for spaces the peer's account may access) → per shared space: ACL
sync, head sync (:mod:`ldiff`), full sync of each differing tree. Local edits are pushed at
once (``HEAD_UPDATE`` / ``ACL_HEAD_UPDATE``); a periodic head sync is the safety net. Every
request is checked against our ACL copy before it is served; anything about a space the peer
may not access is answered ``UNKNOWN_SPACE`` whether or not it exists here. Outgoing work goes
through :class:`~p2psync.sync.sched.PeerScheduler` (dedupe, rate, backoff); incoming through
:class:`~p2psync.sync.sched.InboundGate`. A misbehaving peer collects strikes and is
disconnected; it never affects other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from p2psync.codec import Reader, content_id, pack, unpack
from p2psync.crypto.keys import verify
from p2psync.errors import (
    AccessDenied,
    BadSignature,
    DecodeError,
    EndOfStream,
    JoinError,
    MessageTooLarge,
    P2PSyncError,
    PeerRefused,
    ProtocolError,
    QuotaExceeded,
    ReplicaError,
    StoreError,
    TransportError,
    UnknownMessageType,
    UnknownSpace,
)
from p2psync.replica.acl import InviteCode
from p2psync.replica.change import Change, parse_change
from p2psync.replica.space import Space
from p2psync.replica.tree import AddResult
from p2psync.sync.ldiff import HeadSyncSession
from p2psync.sync.messages import (
    MAX_HEADS,
    MAX_OBJECT_PAGE,
    NONCE_SIZE,
    AclHeadUpdate,
    AclSyncRequest,
    AclSyncResponse,
    BootstrapRequest,
    BootstrapResponse,
    ErrorCode,
    ErrorMessage,
    FullSyncRequest,
    FullSyncResponse,
    HeadSyncRequest,
    HeadSyncResponse,
    HeadUpdate,
    Message,
    ReceiptRequest,
    ReceiptResponse,
    SpaceHello,
    SpaceOffer,
    SpaceTokens,
    StorageRefused,
    decode,
    encode,
    error_for,
    peek_request_id,
    take_batch,
)
from p2psync.sync.replicas import Replicas
from p2psync.sync.sched import Admission, Backoff, InboundGate, PeerScheduler, SchedulerStatus
from p2psync.sync.spacex import SpaceExchange
from p2psync.transport.connection import Connection, Stream

log = logging.getLogger("p2psync.sync")

BOOTSTRAP_DOMAIN = "sync-bootstrap-v1"
_UNKNOWN = "unknown space"  #: the one refusal text, so it never names a space
M = TypeVar("M")
JobKey = tuple[str, str, bytes]  #: ("space"|"acl"|"tree", space id, tree id or b"")


@dataclass
class EngineConfig:
    """Limits and timings of one engine (defaults suit a LAN; tests shorten the timings)."""

    head_sync_interval: float = 30.0  #: periodic head sync per shared space (safety net)
    request_timeout: float = 30.0
    exchange_timeout: float = 10.0
    batch_bytes: int = 1 << 20  #: byte cap we ask for / send in one batch
    max_push_queue: int = 1024  #: pushes waiting to be sent; past it: drop + resync later
    max_in_flight: int = 8  #: our requests outstanding on the connection
    max_jobs_queued: int = 4096  #: scheduler queue bound (trees to sync etc.)
    max_rounds: int = 1024  #: full-sync rounds per tree job (each makes progress or stops)
    max_stuck: int = 3  #: pulls of one tree that left its announced heads missing
    strikes_to_close: int = 100  #: protocol violations before we drop the peer
    out_rate: float = 500.0  #: our jobs started per second
    out_burst: float = 1000.0
    in_rate: float = 500.0  #: the peer's requests admitted per second
    in_burst: float = 1000.0
    in_concurrency: int = 16
    seed: int | None = None  #: jitter seed (tests)


@dataclass
class PeerSpaceStatus:
    """What we know about one space with one peer — all derived from real state."""

    space_id: str
    local_hash: str = ""  #: our head-sync set fingerprint now (hex)
    agreed_hash: str | None = None  #: fingerprint both sides had at the last empty diff
    in_sync: bool = False  #: agreed_hash is our current fingerprint
    pending_trees: int = 0  #: trees head sync found different and not yet synced
    last_head_sync: float | None = None  #: wall time of the last completed head sync
    head_sync_rounds: int = 0  #: round trips the last head sync we ran took
    last_success: float | None = None  #: wall time of the last completed job
    last_error: str | None = None


@dataclass
class PeerStatus:
    """One connected peer: identity, traffic and per-space state."""

    peer_id: str
    account_id: str
    transport: str
    connected: bool
    ready: bool
    spaces: list[PeerSpaceStatus]
    scheduler: SchedulerStatus
    push_queue: int
    pushes_dropped: int
    strikes: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    last_error: str | None


@dataclass
class _SpaceState:
    pending: set[bytes] = field(default_factory=set)
    agreed_hash: bytes | None = None
    last_head_sync: float | None = None
    head_sync_rounds: int = 0
    last_success: float | None = None
    last_error: str | None = None


def bootstrap_message(space_id: str, invite_id: bytes, responder_nonce: bytes,
                      joiner_device: bytes, responder_device: bytes, binding: bytes) -> bytes:
    """What the invite key signs to prove possession to one responder in one session."""
    return pack([space_id, invite_id, responder_nonce, joiner_device, responder_device, binding])


def _parse_proof(proof: bytes) -> tuple[bytes, bytes]:
    r = Reader(unpack(proof, max_size=4096, what="bootstrap proof"), "bootstrap proof")
    invite_id = r.blob("invite_id", size=32)
    sig = r.blob("signature", size=64)
    r.end()
    return invite_id, sig


class PeerEngine:
    """Sync with one connected peer until the connection closes."""

    def __init__(self, replicas: Replicas, conn: Connection,
                 config: EngineConfig | None = None) -> None:
        self.replicas = replicas
        self.conn = conn
        self.config = cfg = config or EngineConfig()
        self.remote_account: bytes = conn.certificate.account
        self.remote_device: bytes = conn.certificate.device
        self.binding: bytes = conn.result.handshake_hash
        now = time.monotonic()
        rng = random.Random(cfg.seed)
        self.sched: PeerScheduler[JobKey] = PeerScheduler(
            now=now, max_queue=cfg.max_jobs_queued, max_in_flight=cfg.max_in_flight,
            rate=cfg.out_rate, burst=cfg.out_burst, backoff=Backoff(base=0.2, cap=10.0, rng=rng))
        self.gate: InboundGate[Any] = InboundGate(
            now=now, rate=cfg.in_rate, burst=cfg.in_burst, max_concurrent=cfg.in_concurrency)
        #: Spaces both sides hold (space exchange, bootstrap, or pushes from an allowed peer).
        self.shared: set[str] = set()
        #: space -> invite the peer proved on this connection (ACL access only, while the
        #: invite stays open and the peer has not been a member that left or was removed)
        self._invited: dict[str, bytes] = {}
        self._state: dict[str, _SpaceState] = {}
        self._stuck: dict[tuple[str, bytes], int] = {}
        self._out: Stream | None = None
        self._in: Stream | None = None
        self._send_locks: dict[int, asyncio.Lock] = {}
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._next_id = 0
        self._inflight = asyncio.Semaphore(cfg.max_in_flight)
        self._exchange: SpaceExchange | None = None
        self._my_nonce = b""
        self._their_nonce = b""
        self._exchanged = asyncio.Event()
        self.ready = asyncio.Event()  #: set once the space exchange is done
        self._push_queue: deque[Message] = deque()
        self._push_event = asyncio.Event()
        self._sched_event = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.finished = asyncio.Event()
        self.pushes_dropped = 0
        self.strikes = 0
        self.messages_in = self.messages_out = 0
        self.bytes_in = self.bytes_out = 0
        #: (direction, message type name) -> [messages, bytes]; for status and benchmarks
        self.traffic: dict[tuple[str, str], list[int]] = {}
        self.last_error: str | None = None
        #: backup peers: refusals we sent (quota) and the last the peer sent us, per space
        self.quota_refusals = 0
        self.refused_by_peer: dict[str, StorageRefused] = {}
        self._offered: set[str] = set()

    def __repr__(self) -> str:
        return f"<PeerEngine {self.conn.peer_id}>"

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
            for fut in self._pending.values():
                if not fut.done():
                    fut.cancel()
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
            exc = task.exception()
            log.debug("engine task failed: %r", exc)

    async def _run(self) -> None:
        cfg = self.config
        self._out = await self.conn.open_stream()
        self._exchange = SpaceExchange(
            self.replicas.device.public, self.remote_device,
            self.replicas.exchange_keys_for(self.remote_account), channel_binding=self.binding)
        hello = self._exchange.start()
        self._my_nonce = hello.nonce
        await self._send(self._out, hello, 0)
        async with asyncio.timeout(cfg.exchange_timeout):
            self._in = await self.conn.accept_stream()
        readers = [self._spawn(self._read_requests(self._in)),
                   self._spawn(self._read_responses(self._out))]
        self._spawn(self._push_loop())
        self._spawn(self._sched_loop())
        closed = self._spawn(self.conn.wait_closed())
        async with asyncio.timeout(cfg.exchange_timeout):
            await self._exchanged.wait()
        assert self._exchange.shared is not None
        for sid in self._exchange.shared:
            if self.replicas.may_access(sid, self.remote_account):
                self.shared.add(sid)
                self.submit(("space", sid, b""))
        self.ready.set()
        self.offer_replicated()
        self.replicas.notify()
        self._spawn(self._periodic())
        await asyncio.wait([closed, *readers], return_when=asyncio.FIRST_COMPLETED)

    # --- sending and requests ------------------------------------------------------------------
    async def _send(self, stream: Stream, message: Message, request_id: int) -> None:
        raw = encode(message, request_id)
        lock = self._send_locks.setdefault(stream.id, asyncio.Lock())
        async with lock:
            await stream.send(raw)
        self.messages_out += 1
        self.bytes_out += len(raw)
        self._count("out", message, len(raw))

    def _count(self, direction: str, message: Message, size: int) -> None:
        slot = self.traffic.setdefault((direction, message.TYPE.name), [0, 0])
        slot[0] += 1
        slot[1] += size

    async def _request(self, message: Message, expect: type[M]) -> M:
        """Send one request on our stream and wait for its answer (typed errors on refusal)."""
        assert self._out is not None
        async with self._inflight:
            self._next_id = self._next_id % 0xFFFFFFFE + 1
            rid = self._next_id
            fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            self._pending[rid] = fut
            try:
                await self._send(self._out, message, rid)
                async with asyncio.timeout(self.config.request_timeout):
                    resp = await fut
            finally:
                self._pending.pop(rid, None)
        if isinstance(resp, ErrorMessage):
            retry = None if resp.retry_after_ms is None else resp.retry_after_ms / 1000
            raise PeerRefused(str(resp.to_exception()), int(resp.code), retry)
        if not isinstance(resp, expect):
            self._strike(f"answered {type(message).__name__} with {type(resp).__name__}")
            raise ProtocolError(f"unexpected {type(resp).__name__}")
        return resp

    def _strike(self, why: str) -> None:
        self.strikes += 1
        log.debug("peer %s: %s", self.conn.peer_id, why)
        if self.strikes >= self.config.strikes_to_close and not self._closing:
            self.last_error = f"closed after {self.strikes} protocol violations (last: {why})"
            self._closing = True
            self._spawn(self.conn.close("too many protocol violations"))

    # --- reading -------------------------------------------------------------------------------
    async def _recv_loop(self, stream: Stream) -> Any:
        try:
            while True:
                raw = await stream.recv()
                self.messages_in += 1
                self.bytes_in += len(raw)
                yield raw
        except EndOfStream:
            return

    async def _read_responses(self, stream: Stream) -> None:
        """Our stream: the peer's answers (and its space tokens)."""
        async for raw in self._recv_loop(stream):
            try:
                env = decode(raw)
            except (DecodeError, UnknownMessageType, MessageTooLarge) as exc:
                self._strike(f"bad response: {exc}")
                continue
            msg = env.message
            self._count("in", msg, len(raw))
            if isinstance(msg, SpaceTokens):
                await self._on_tokens(msg)
                continue
            fut = self._pending.get(env.request_id)
            if fut is None or fut.done():
                self._strike(f"response to unknown request {env.request_id}")
                continue
            fut.set_result(msg)

    async def _on_tokens(self, msg: SpaceTokens) -> None:
        assert self._exchange is not None
        if self._exchanged.is_set():
            self._strike("second token list")
            return
        try:
            self._exchange.receive(msg)
        except ProtocolError as exc:
            self._strike(str(exc))
            return
        self._exchanged.set()

    async def _read_requests(self, stream: Stream) -> None:
        """The peer's stream: its requests and pushes; we answer on the same stream."""
        async for raw in self._recv_loop(stream):
            try:
                env = decode(raw)
            except (DecodeError, UnknownMessageType, MessageTooLarge) as exc:
                self._strike(f"bad request: {exc}")
                await self._send(stream, error_for(exc), peek_request_id(raw) or 0)
                continue
            msg, rid = env.message, env.request_id
            self._count("in", msg, len(raw))
            if isinstance(msg, SpaceHello):
                await self._on_hello(stream, msg, rid)
            elif isinstance(msg, HeadUpdate):
                await self._on_head_update(msg)
            elif isinstance(msg, AclHeadUpdate):
                self._on_acl_update(msg)
            elif isinstance(msg, (SpaceOffer, StorageRefused)):
                self._on_backup_push(msg)
            elif isinstance(msg, (HeadSyncRequest, FullSyncRequest, AclSyncRequest,
                                  BootstrapRequest, ReceiptRequest)):
                await self._admit(stream, msg, rid)
            else:
                self._strike(f"{type(msg).__name__} is not a request")
                await self._send(stream, ErrorMessage(ErrorCode.MALFORMED, "not a request"), rid)

    async def _on_hello(self, stream: Stream, msg: SpaceHello, rid: int) -> None:
        assert self._exchange is not None
        try:
            replies = self._exchange.receive(msg)
        except ProtocolError as exc:
            self._strike(str(exc))
            await self._send(stream, error_for(exc), rid)
            return
        self._their_nonce = msg.nonce
        for reply in replies:
            await self._send(stream, reply, rid)

    async def _admit(self, stream: Stream, msg: Message, rid: int) -> None:
        now = time.monotonic()
        verdict = self.gate.admit(msg, now)
        if verdict is Admission.DUPLICATE:
            return  # the same request is being answered: one answer for all copies
        if verdict is not Admission.ACCEPT:
            retry = int(self.gate.retry_after(now) * 1000) + 1
            await self._send(stream, ErrorMessage(ErrorCode.RATE_LIMITED, "slow down", retry),
                             rid)
            return
        self._spawn(self._serve(stream, msg, rid))

    async def _serve(self, stream: Stream, msg: Message, rid: int) -> None:
        try:
            try:
                reply = self._answer(msg)
            except UnknownSpace:
                reply = ErrorMessage(ErrorCode.UNKNOWN_SPACE, _UNKNOWN)
            except (ProtocolError, ReplicaError, DecodeError) as exc:
                self._strike(f"request failed: {exc}")
                reply = error_for(exc)
            except StoreError as exc:
                log.warning("store error while serving %s: %s", self.conn.peer_id, exc)
                reply = ErrorMessage(ErrorCode.INTERNAL)
            except Exception:  # a bug of ours: answer, log, keep serving
                log.exception("internal error while serving %s", self.conn.peer_id)
                reply = ErrorMessage(ErrorCode.INTERNAL)
            await self._send(stream, reply, rid)
        except TransportError:
            pass
        finally:
            self.gate.finished(msg)

    # --- answering (responder side; synchronous: state in, message out) ------------------------
    def _space_for(self, space_id: str, *, acl_only: bool = False) -> Space:
        """The space if the peer may access it, else UnknownSpace (same as non-existence)."""
        space = self.replicas.spaces.get(space_id)
        if space is None:
            raise UnknownSpace(_UNKNOWN)
        if self.replicas.may_access(space_id, self.remote_account):
            self.shared.add(space_id)
            self._invited.pop(space_id, None)
            return space
        if acl_only and self._invite_open(space):
            return space
        raise UnknownSpace(_UNKNOWN)

    def _invite_open(self, space: Space) -> bool:
        """The peer proved an invite for this space here, the invite is still open, and the
        peer was never removed from (or left) the space."""
        invite_id = self._invited.get(space.id)
        st = space.acl.state
        return (invite_id is not None and invite_id in st.invites
                and self.remote_account not in st.departed)

    def _answer(self, msg: Message) -> Message:
        if isinstance(msg, HeadSyncRequest):
            self._space_for(msg.space_id)
            return self.replicas.ldiff(msg.space_id).answer(msg)
        if isinstance(msg, FullSyncRequest):
            return self._answer_full(msg)
        if isinstance(msg, AclSyncRequest):
            return self._answer_acl(msg)
        if isinstance(msg, BootstrapRequest):
            return self._answer_bootstrap(msg)
        if isinstance(msg, ReceiptRequest):
            return self._answer_receipt(msg)
        raise ProtocolError("not a request")

    def _answer_full(self, msg: FullSyncRequest) -> FullSyncResponse:
        space = self._space_for(msg.space_id)
        tid = msg.object_id
        if msg.changes:
            self._ingest_now(space, tid, msg.changes)
        if not space.has_tree(tid):
            return FullSyncResponse(msg.space_id, tid, (), (), False)
        tree = space.tree(tid)
        lack = [c.raw for c in tree.changes_for(msg.heads)]
        cap = min(msg.max_bytes or self.config.batch_bytes, self.config.batch_bytes)
        batch, more = take_batch(lack, cap)
        return FullSyncResponse(msg.space_id, tid, tree.heads[:MAX_HEADS], tuple(batch), more)

    def _answer_acl(self, msg: AclSyncRequest) -> AclSyncResponse:
        space = self._space_for(msg.space_id, acl_only=True)
        if msg.records:
            res = self.replicas.apply_acl(self, space, msg.records)
            if res.rejected:
                self._strike(f"{len(res.rejected)} ACL records refused")
        lack = self._acl_lacking(space, msg.heads)
        cap = min(msg.max_bytes or self.config.batch_bytes, self.config.batch_bytes)
        batch, more = take_batch(lack, cap) if lack else ([], False)
        return AclSyncResponse(msg.space_id, tuple(space.acl.heads[:MAX_HEADS]), tuple(batch),
                               more)

    def _answer_bootstrap(self, msg: BootstrapRequest) -> BootstrapResponse:
        sid = msg.space_id
        space = self.replicas.spaces.get(sid)
        if space is None:
            raise UnknownSpace(_UNKNOWN)
        member = self.replicas.may_access(sid, self.remote_account)
        if not member:
            invite_id = None if msg.proof is None else self._proof_ok(space, msg.proof)
            if invite_id is None or self.remote_account in space.acl.state.departed:
                raise UnknownSpace(_UNKNOWN)
            self._invited[sid] = invite_id
        self.shared.add(sid)
        header = space.header.raw if msg.after is None else None
        records, _ = take_batch(space.acl_records(), self.config.batch_bytes)
        ids: list[bytes] = []
        next_after = None
        if member and msg.max_objects:
            after = msg.after or b""
            ids = [t for t in space.tree_ids() if t > after][:min(msg.max_objects,
                                                                  MAX_OBJECT_PAGE)]
            if len(ids) == msg.max_objects:
                next_after = ids[-1]
        return BootstrapResponse(sid, header, tuple(records), tuple(ids), next_after)

    def _proof_ok(self, space: Space, proof: bytes) -> bytes | None:
        """The invite id if ``proof`` is a signature by an open invite's key over this
        session's challenge, else None."""
        try:
            invite_id, sig = _parse_proof(proof)
        except DecodeError:
            return None
        inv = space.acl.state.invites.get(invite_id)
        if inv is None:
            return None
        data = bootstrap_message(space.id, invite_id, self._my_nonce, self.remote_device,
                                 self.replicas.device.public, self.binding)
        try:
            verify(inv.invite_key, BOOTSTRAP_DOMAIN, data, sig)
        except BadSignature:
            return None
        return invite_id

    def _acl_lacking(self, space: Space, their_heads: Sequence[bytes]) -> list[bytes]:
        """Our ACL records not in the causal past of ``their_heads`` (unknown heads ignored)."""
        acl = space.acl
        known = [h for h in their_heads if h in acl]
        out = []
        for raw in acl.export():
            rid = content_id(raw)
            if not any(acl.is_ancestor(rid, h) for h in known):
                out.append(raw)
        return out

    # --- ingesting changes ---------------------------------------------------------------------
    def _connectable(self, space: Space, tid: bytes, raws: Sequence[bytes],
                     ) -> tuple[list[bytes], bool, bool]:
        """Split a batch: the changes that can attach now (parents known or earlier in the
        batch, ACL head known), and whether some lacked parents / an ACL head. Orphans are
        dropped, never parked, so a peer cannot fill memory with changes that never attach."""
        tree = space.tree(tid) if space.has_tree(tid) else None
        ok: list[bytes] = []
        seen: set[bytes] = set()
        missing = unknown_acl = False
        for raw in raws:
            try:
                ch: Change = parse_change(raw)
            except (DecodeError, ReplicaError) as exc:
                self._strike(f"unparseable change: {exc}")
                continue
            if ch.tree != tid:
                self._strike("change for another object")
                continue
            if tree is not None and ch.id in tree:
                continue  # already held: skip cheaply
            if not ch.is_root and any(p not in seen and (tree is None or p not in tree)
                                      for p in ch.prev_ids):
                missing = True
                continue
            if not space.acl.knows_head(ch.acl_head):
                unknown_acl = True
                continue
            seen.add(ch.id)
            ok.append(raw)
        return ok, missing, unknown_acl

    def _ingest_now(self, space: Space, tid: bytes, raws: Sequence[bytes]) -> tuple[bool, bool]:
        """Add what can attach; returns (missing parents, unknown ACL head)."""
        ok, missing, unknown_acl = self._connectable(space, tid, raws)
        if ok:
            try:
                self.replicas.apply_changes(self, space, tid, ok)
            except StoreError:
                raise
            except QuotaExceeded as exc:
                # a backup's quota: not misbehaviour; tell the pushing device why (nothing stored)
                self._state_of(space.id).last_error = f"QuotaExceeded: {exc}"
                self.quota_refusals += 1
                self._enqueue(StorageRefused(space.id, tid, ErrorCode.QUOTA_EXCEEDED,
                                             str(exc)[:256]), space.id)
            except P2PSyncError as exc:
                # all-or-nothing: nothing of this batch was stored
                self._strike(f"changes refused: {type(exc).__name__}: {exc}")
                if isinstance(exc, AccessDenied):
                    self._state_of(space.id).last_error = f"changes refused: {exc}"
        return missing, unknown_acl

    async def _on_head_update(self, msg: HeadUpdate) -> None:
        sid, tid = msg.space_id, msg.object_id
        space = self.replicas.spaces.get(sid)
        if space is None or not self.replicas.may_access(sid, self.remote_account):
            self._strike("push for a space the peer may not access")
            return
        self.shared.add(sid)
        missing = unknown_acl = False
        if msg.changes:
            missing, unknown_acl = self._ingest_now(space, tid, msg.changes)
        if not space.has_tree(tid):
            missing = missing or bool(msg.heads)
        else:
            tree = space.tree(tid)
            missing = missing or any(h not in tree for h in msg.heads)
        if unknown_acl:
            self.submit(("acl", sid, b""), 0)
        if (missing or unknown_acl) and self._stuck.get((sid, tid), 0) < self.config.max_stuck:
            self.submit(("tree", sid, tid), 1)

    def _on_acl_update(self, msg: AclHeadUpdate) -> None:
        sid = msg.space_id
        space = self.replicas.spaces.get(sid)
        if space is None or not (self.replicas.may_access(sid, self.remote_account)
                                 or self._invite_open(space)):
            self._strike("ACL push for a space the peer may not access")
            return
        was_member = self.replicas.may_access(sid, self.replicas.account.public)
        res = self.replicas.apply_acl(self, space, msg.records)
        if res.rejected:
            self._strike(f"{len(res.rejected)} ACL records refused")
        if res.waiting or any(h not in space.acl for h in msg.heads):
            self.submit(("acl", sid, b""), 0)
        if res.added:
            # new ACL state may unblock trees or make us a member: sync the space again
            if not was_member or sid not in self.shared:
                self.shared.add(sid)
            self.submit(("space", sid, b""), 2)

    # --- pushing (called synchronously from the replica listeners) ------------------------------
    def _enqueue(self, msg: Message, space_id: str) -> None:
        if len(self._push_queue) >= self.config.max_push_queue:
            self.pushes_dropped += 1
            self.submit(("space", space_id, b""), 2)  # head sync will carry it instead
            return
        self._push_queue.append(msg)
        self._push_event.set()

    def _may_push(self, space_id: str) -> bool:
        return (not self._closing and self.ready.is_set() and space_id in self.shared
                and self.replicas.may_access(space_id, self.remote_account))

    def push_tree(self, space: Space, tree_id: bytes, result: AddResult) -> None:
        if not result.attached or not self._may_push(space.id):
            return
        raws = [c.raw for c in result.attached]
        heads = tuple(result.heads[:MAX_HEADS])
        while raws:
            batch, more = take_batch(raws, self.config.batch_bytes)
            raws = raws[len(batch):]
            self._enqueue(HeadUpdate(space.id, tree_id, () if more else heads, tuple(batch)),
                          space.id)

    def push_acl(self, space: Space, record_ids: list[bytes]) -> None:
        if not self._may_push(space.id):
            self.offer_replicated(space.id)
            return
        raws = [space.acl.record(i).raw for i in record_ids if i in space.acl]
        batch, _ = take_batch(raws, self.config.batch_bytes) if raws else ([], False)
        self._enqueue(AclHeadUpdate(space.id, tuple(space.acl.heads[:MAX_HEADS]), tuple(batch)),
                      space.id)

    async def _push_loop(self) -> None:
        assert self._out is not None
        while not self._closing:
            while not self._push_queue:
                self._push_event.clear()
                await self._push_event.wait()
            msg = self._push_queue.popleft()
            await self._send(self._out, msg, 0)
            if not self._push_queue:
                self.replicas.notify()  # idle may have changed

    # --- scheduling (requester side) -----------------------------------------------------------
    def submit(self, key: JobKey, priority: int = 1) -> None:
        """Ask for a sync job with this peer (deduped, bounded, rate limited)."""
        if self._closing:
            return
        self.sched.submit(key, time.monotonic(), priority)
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

    async def _job(self, key: JobKey) -> None:
        kind, sid, tid = key
        st = self._state_of(sid)
        try:
            if kind == "space":
                await self._sync_space(sid)
            elif kind == "acl":
                await self._sync_acl(sid)
            else:
                await self._sync_tree(sid, tid)
        except asyncio.CancelledError:
            raise
        except (P2PSyncError, TimeoutError) as exc:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            st.last_error = text
            retryable = not (isinstance(exc, PeerRefused) and exc.code in (
                ErrorCode.UNKNOWN_SPACE, ErrorCode.ACCESS_DENIED))
            retry_after = exc.retry_after if isinstance(exc, PeerRefused) else None
            if isinstance(exc, PeerRefused) and exc.code == ErrorCode.RATE_LIMITED:
                retryable = True
            self.sched.failed(key, time.monotonic(), text, retryable=retryable,
                              retry_after=retry_after)
            log.debug("job %s with %s failed: %s", kind, self.conn.peer_id, text)
        else:
            st.last_success = time.time()
            self.sched.succeeded(key, time.monotonic())
        finally:
            self._sched_event.set()
            self.replicas.notify()

    def _state_of(self, space_id: str) -> _SpaceState:
        st = self._state.get(space_id)
        if st is None:
            st = self._state[space_id] = _SpaceState()
        return st

    def _allowed(self, space_id: str) -> Space | None:
        """The space if we still sync it with this peer (it may access it by our ACL)."""
        space = self.replicas.spaces.get(space_id)
        if space is None or space_id not in self.shared:
            return None
        if not self.replicas.may_access(space_id, self.remote_account):
            return None
        return space

    async def _sync_space(self, sid: str) -> None:
        if self._allowed(sid) is None:
            return
        await self._sync_acl(sid)
        ld = self.replicas.ldiff(sid)
        session = HeadSyncSession(ld, sid)
        rounds = 0
        while not session.done:
            rounds += 1
            batch = []
            while (nxt := session.next_request()) is not None:
                batch.append(nxt)
            answers = await asyncio.gather(
                *(self._request(req, HeadSyncResponse) for _, req in batch))
            for (tag, _), ans in zip(batch, answers, strict=True):
                session.receive(tag, ans)
        diff = session.result
        st = self._state_of(sid)
        st.last_head_sync = time.time()
        st.head_sync_rounds = rounds
        todo = diff.remote_only | diff.changed
        st.pending = set(todo)
        st.agreed_hash = ld.hash() if diff.empty else None
        for tid in sorted(todo):
            self._stuck.pop((sid, tid), None)
            self.submit(("tree", sid, tid), 1)

    async def _sync_acl(self, sid: str) -> None:
        """ACL records both ways: theirs we lack come in answers, ours they lack go in the next
        request. Each round brings new records or sends new ones, so it ends."""
        space = self.replicas.spaces.get(sid)
        if space is None or sid not in self.shared:
            return
        sent: set[bytes] = set()
        send: list[bytes] = []
        for _ in range(256):
            resp = await self._request(AclSyncRequest(
                sid, tuple(space.acl.heads[:MAX_HEADS]), tuple(send), self.config.batch_bytes),
                AclSyncResponse)
            if resp.records:
                res = self.replicas.apply_acl(self, space, resp.records)
                if res.rejected:
                    self._strike(f"{len(res.rejected)} ACL records refused")
            lack = [r for r in self._acl_lacking(space, resp.heads)
                    if content_id(r) not in sent]
            send = take_batch(lack, self.config.batch_bytes)[0] if lack else []
            sent.update(content_id(r) for r in send)
            if not resp.more and not send:
                return
        raise ProtocolError("ACL sync did not finish")

    async def _sync_tree(self, sid: str, tid: bytes) -> None:
        space = self._allowed(sid)
        if space is None:
            return
        their: tuple[bytes, ...] = ()
        for _ in range(self.config.max_rounds):
            before = space.heads(tid) if space.has_tree(tid) else ()
            resp = await self._request(FullSyncRequest(
                sid, tid, before[:MAX_HEADS], (), (), self.config.batch_bytes), FullSyncResponse)
            if resp.space_id != sid or resp.object_id != tid:
                self._strike("full sync answer for another object")
                raise ProtocolError("full sync answer for another object")
            their = resp.heads
            _, unknown_acl = self._ingest_now(space, tid, resp.changes)
            if unknown_acl:
                await self._sync_acl(sid)
                _, unknown_acl = self._ingest_now(space, tid, resp.changes)
            after = space.heads(tid) if space.has_tree(tid) else ()
            if not resp.more:
                break
            if after == before:
                raise ProtocolError("full sync made no progress")
        st = self._state_of(sid)
        st.pending.discard(tid)
        if not space.has_tree(tid):
            self._stuck[(sid, tid)] = self._stuck.get((sid, tid), 0) + 1
            return
        tree = space.tree(tid)
        if any(h not in tree for h in their):
            self._stuck[(sid, tid)] = self._stuck.get((sid, tid), 0) + 1
        else:
            self._stuck.pop((sid, tid), None)
        if their and not set(tree.heads) <= set(their):
            # bidirectional: they lack some of ours; send it now instead of waiting for their
            # own head sync
            lack = [c.raw for c in tree.changes_for(their)]
            while lack:
                batch, more = take_batch(lack, self.config.batch_bytes)
                lack = lack[len(batch):]
                heads = () if more else tree.heads[:MAX_HEADS]
                self._enqueue(HeadUpdate(sid, tid, heads, tuple(batch)), sid)

    # --- bootstrap (joiner side) ---------------------------------------------------------------
    async def bootstrap(self, space_id: str, code: InviteCode | None = None) -> Space:
        """Fetch a space from this peer: with an invite code (proving the invite key by signing
        this session's challenge) or, for a member's new device or a replicator, without.
        With a code, the join record (or join request) is created and pushed."""
        async with asyncio.timeout(self.config.exchange_timeout):
            await self.ready.wait()
        proof = None
        if code is not None:
            data = bootstrap_message(space_id, code.invite_id, self._their_nonce,
                                     self.replicas.device.public, self.remote_device,
                                     self.binding)
            proof = pack([code.invite_id, code.key.sign(BOOTSTRAP_DOMAIN, data)])
        try:
            resp = await self._request(BootstrapRequest(space_id, proof, None, 0),
                                       BootstrapResponse)
        except PeerRefused as exc:
            raise JoinError(f"peer {self.conn.peer_id} does not offer that space to us "
                            f"(unknown space, or the invite is revoked)") from exc
        if resp.header is None or resp.space_id != space_id:
            raise JoinError("peer sent no space header")
        space = self.replicas.adopt(space_id, resp.header, resp.acl_records)
        self.shared.add(space_id)
        await self._sync_acl(space_id)
        me = self.replicas.account
        if code is not None and not self.replicas.may_access(space_id, me.public):
            inv = space.acl.state.invites.get(code.invite_id)
            if inv is None:
                raise JoinError("the invite is no longer valid (revoked or already used)")
            raw = (space.acl.join(me, code) if inv.anyone_can_join
                   else space.acl.request_join(me, code))
            space.commit_acl(raw)  # pushes it to every engine sharing the space
            await self._sync_acl(space_id)
        if self.replicas.may_access(space_id, me.public):
            self.submit(("space", space_id, b""), 0)
        return space

    # --- status --------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """No job queued, retrying or in flight, and no push waiting to be sent."""
        st = self.sched.status()
        return (self.ready.is_set() and not self._push_queue
                and st.queued == st.retrying == st.in_flight == 0)

    def status(self) -> PeerStatus:
        spaces = []
        for sid in sorted(self.shared):
            st = self._state_of(sid)
            ld = self.replicas.ldiff(sid) if sid in self.replicas.spaces else None
            local = ld.hash() if ld is not None else b""
            spaces.append(PeerSpaceStatus(
                space_id=sid, local_hash=local.hex(),
                agreed_hash=None if st.agreed_hash is None else st.agreed_hash.hex(),
                in_sync=st.agreed_hash is not None and st.agreed_hash == local,
                pending_trees=len(st.pending), last_head_sync=st.last_head_sync,
                head_sync_rounds=st.head_sync_rounds,
                last_success=st.last_success, last_error=st.last_error))
        return PeerStatus(
            peer_id=self.conn.peer_id, account_id=self.conn.account_id,
            transport=self.conn.transport, connected=not self.conn.is_closed,
            ready=self.ready.is_set(), spaces=spaces, scheduler=self.sched.status(),
            push_queue=len(self._push_queue), pushes_dropped=self.pushes_dropped,
            strikes=self.strikes, messages_in=self.messages_in, messages_out=self.messages_out,
            bytes_in=self.bytes_in, bytes_out=self.bytes_out, last_error=self.last_error)

    # --- backup peers (docs/backup.md) ---------------------------------------------------------
    def offer_replicated(self, space_id: str | None = None) -> None:
        """Offer the peer the spaces our ACL names it replicator of that it does not share yet
        (the exchange cannot list a space the peer has never held); it fetches them."""
        if self._closing or not self.ready.is_set():
            return
        for sid in [space_id] if space_id else list(self.replicas.spaces):
            space = self.replicas.spaces.get(sid)
            if (space is None or sid in self.shared or sid in self._offered
                    or self.remote_account not in space.acl.state.replicators):
                continue
            self._offered.add(sid)
            self._enqueue(SpaceOffer(sid), sid)

    def _on_backup_push(self, msg: SpaceOffer | StorageRefused) -> None:
        policy = self.replicas.policy
        if isinstance(msg, StorageRefused):
            if msg.space_id in self.shared:
                self.refused_by_peer[msg.space_id] = msg
                self._state_of(msg.space_id).last_error = (
                    f"peer refused to store: {msg.code.name.lower()}: {msg.message}")
                self.replicas.notify()
            return
        on_offer = getattr(policy, "on_offer", None)
        if on_offer is None:
            return  # only backups fetch offered spaces; members join by invite
        on_offer(self, msg.space_id)

    def _answer_receipt(self, msg: ReceiptRequest) -> ReceiptResponse:
        space = self._space_for(msg.space_id)
        sign = getattr(self.replicas.policy, "receipt", None)
        if sign is None or len(msg.nonce) != NONCE_SIZE:
            raise ProtocolError("this peer issues no storage receipts")
        return ReceiptResponse(sign(space, msg.nonce))

    async def request_receipt(self, space_id: str, nonce: bytes) -> bytes:
        """Ask the peer (a backup) for a signed storage receipt of one space."""
        resp = await self._request(ReceiptRequest(space_id, nonce), ReceiptResponse)
        return resp.receipt
