"""The responder side of the sync protocol (sans-IO): a message in, effects out.

:class:`Responder` takes every message the peer sends on its request stream
(:meth:`Responder.receive`): the space exchange's hello, its pushes (``HEAD_UPDATE``,
``ACL_HEAD_UPDATE``, backup notices) and its requests, which pass the inbound gate
(:class:`~p2psync.sync.sched.InboundGate`: duplicates dropped, rate and concurrency limited)
and are then answered from our replicas (head sync, full sync, ACL sync, bootstrap,
receipts). Every request is checked against our ACL copy first; anything about a space the
peer may not access gets the same ``ERROR(UNKNOWN_SPACE, "unknown space")`` whether or not the
space exists here. Nothing here sends, sleeps or reads a clock (``now`` is wall time for
invite expiry, ``clock`` monotonic time for the gate):
:class:`~p2psync.sync.engine.PeerEngine` carries out the effects
(:mod:`p2psync.sync.effects`: answers, serve tasks, strikes, jobs…) and, while
:attr:`Responder.ingest` is set, takes that batch in and calls :meth:`Responder.ingested`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from p2psync.crypto.keys import verify
from p2psync.errors import (
    AccessDenied,
    BadSignature,
    DecodeError,
    MessageTooLarge,
    P2PSyncError,
    ProtocolError,
    ReplicaError,
    StoreError,
    UnknownMessageType,
    UnknownSpace,
)
from p2psync.replica.space import AclAddResult, Space
from p2psync.sync.bootstrap import BOOTSTRAP_DOMAIN, bootstrap_message, parse_proof
from p2psync.sync.effects import Answer, Effect, Offered, Serve, Strike, Submit
from p2psync.sync.ingest import Ingest
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
    HeadUpdate,
    Message,
    ReceiptRequest,
    ReceiptResponse,
    SpaceHello,
    SpaceOffer,
    SpaceTokens,
    StorageRefused,
    error_for,
    request_id_of,
    take_batch,
)
from p2psync.sync.peerstate import UNKNOWN, PeerState
from p2psync.sync.pull import acl_lacking
from p2psync.sync.replicas import Pusher
from p2psync.sync.sched import Admission, InboundGate
from p2psync.sync.spacex import SpaceExchange
from p2psync.sync.status import PushSnapshot

log = logging.getLogger("p2psync.sync")

#: What ``decode`` raises for bytes that are not a message (a strike, never fatal by itself).
UNDECODABLE = (DecodeError, UnknownMessageType, MessageTooLarge)
#: Requests the responder answers (anything else on the peer's stream is a push or a strike).
REQUESTS = (HeadSyncRequest, FullSyncRequest, AclSyncRequest, BootstrapRequest, ReceiptRequest)


@dataclass(frozen=True)
class Reply:
    """The answer to one request and what else it leads to."""

    message: Message
    effects: tuple[Effect, ...] = ()


@dataclass
class _Collect:
    effects: list[Effect] = field(default_factory=list)


class Responder:
    """Everything one peer sends on its request stream, on one connection: the exchange's
    hello, the gate, its pushes (judged) and its requests (answered)."""

    def __init__(self, state: PeerState, source: Pusher, *, clock: float = 0.0) -> None:
        self.state = state
        self.source = source  #: the engine (what we store from it is not pushed back to it)
        cfg = state.config
        self.gate: InboundGate[Message] = InboundGate(
            now=clock, rate=cfg.in_rate, burst=cfg.in_burst, max_concurrent=cfg.in_concurrency)
        self.exchange: SpaceExchange | None = None  #: made by :meth:`hello`
        #: a pushed batch to take in (chunked) before :meth:`ingested` is called
        self.ingest: Ingest | None = None
        self._push: tuple[HeadUpdate, PushSnapshot] | None = None

    # --- the space exchange ----------------------------------------------------------------------
    def hello(self) -> SpaceHello:
        """Our ``SPACE_HELLO``, the first message on our request stream (the exchange lists
        the spaces our ACL lets the peer receive at this moment)."""
        st = self.state
        self.exchange = SpaceExchange(
            st.replicas.device.public, st.remote_device,
            st.replicas.exchange_keys_for(st.remote_account), channel_binding=st.binding)
        hello = self.exchange.start()
        self.state.my_nonce = hello.nonce
        return hello

    def tokens(self, msg: SpaceTokens) -> list[Effect]:
        """The peer's token list (on our stream): :attr:`exchanged` once it is taken."""
        assert self.exchange is not None
        try:
            self.exchange.receive(msg)
        except ProtocolError as exc:
            return [Strike(str(exc))]
        return []

    @property
    def exchanged(self) -> frozenset[str] | None:
        """The spaces both sides listed, once the exchange is done."""
        return None if self.exchange is None else self.exchange.shared

    # --- the peer's request stream ---------------------------------------------------------------
    def undecodable(self, exc: P2PSyncError) -> list[Effect]:
        """A message on the peer's stream that does not decode: a strike, and an error answer
        to the request id ``decode`` found in the envelope (0 if none)."""
        return [Strike(f"bad request: {exc}"), Answer(error_for(exc), request_id_of(exc) or 0)]

    def receive(self, msg: Message, rid: int, now: float, clock: float) -> list[Effect]:
        """One message from the peer's request stream. A push that carries changes sets
        :attr:`ingest`; the caller takes it in, then calls :meth:`ingested` (the next message
        is read only after that, so pushes apply in order)."""
        if isinstance(msg, SpaceHello):
            out = self._hello(msg, rid)
        elif isinstance(msg, HeadUpdate):
            ing, out = self.head_update(msg)
            if not out:  # admitted (a refused push comes back as a strike only)
                self._push = msg, PushSnapshot.take(self.state.replicas.ldiff(msg.space_id),
                                                    msg.object_id)
                self.ingest = ing
                if ing is None:
                    out = self.ingested(now)
        elif isinstance(msg, AclHeadUpdate):
            out = self.acl_update(msg, now)
        elif isinstance(msg, (SpaceOffer, StorageRefused)):
            out = self.backup_push(msg)
            self.state.replicas.notify()
        elif isinstance(msg, REQUESTS):
            out = self._admit(msg, rid, clock)
        else:
            out = [Strike(f"{type(msg).__name__} is not a request"),
                   Answer(ErrorMessage(ErrorCode.MALFORMED, "not a request"), rid)]
        return out + self.state.befriend()

    def ingested(self, now: float) -> list[Effect]:
        """The pushed batch in :attr:`ingest` is in (or there was none)."""
        ing, self.ingest = self.ingest, None
        assert self._push is not None
        (msg, before), self._push = self._push, None
        out = self.head_update_done(msg, ing)
        st, sid = self.state, msg.space_id
        if sid in st.replicas.spaces:
            st.space_state(sid).confirm_push(st.replicas.ldiff(sid), msg.object_id, msg.heads,
                                             before)
        return out + st.befriend()

    def _hello(self, msg: SpaceHello, rid: int) -> list[Effect]:
        assert self.exchange is not None
        try:
            replies = self.exchange.receive(msg)
        except ProtocolError as exc:
            return [Strike(str(exc)), Answer(error_for(exc), rid)]
        self.state.their_nonce = msg.nonce
        return [Answer(reply, rid) for reply in replies]

    def _admit(self, msg: Message, rid: int, clock: float) -> list[Effect]:
        verdict = self.gate.admit(msg, clock)
        if verdict is Admission.DUPLICATE:
            return []  # the same request is being answered: one answer for all copies
        if verdict is not Admission.ACCEPT:
            retry = int(self.gate.retry_after(clock) * 1000) + 1
            return [Answer(ErrorMessage(ErrorCode.RATE_LIMITED, "slow down", retry), rid)]
        return [Serve(msg, rid)]

    def served(self, msg: Message) -> None:
        """A request admitted by :meth:`receive` (a :class:`Serve`) is answered or given up."""
        self.gate.finished(msg)

    # --- requests ------------------------------------------------------------------------------
    def prepare(self, msg: Message) -> Ingest | None:
        """Changes a request carries that must be taken in (chunked) before :meth:`answer`."""
        if isinstance(msg, FullSyncRequest) and msg.changes:
            space = self._space_or_none(msg.space_id)
            if space is not None:
                return Ingest(self.state, self.source, space, msg.object_id, msg.changes)
        return None

    def answer(self, msg: Message, now: float) -> Reply:
        """The reply to one admitted request at wall time ``now`` (invite expiry); errors
        become typed ``ERROR`` replies (and a strike when the request was the peer's fault).
        Never raises for the peer's input."""
        out = _Collect()
        try:
            reply = self._answer(msg, out, now)
        except UnknownSpace:
            reply = ErrorMessage(ErrorCode.UNKNOWN_SPACE, UNKNOWN)
        except (ProtocolError, ReplicaError, DecodeError) as exc:
            if isinstance(exc, StoreError):
                log.warning("store error while serving a request: %s", exc)
                reply = ErrorMessage(ErrorCode.INTERNAL)
            else:
                out.effects.append(Strike(f"request failed: {exc}"))
                reply = error_for(exc)
        except Exception:  # a bug of ours: answer, log, keep serving
            log.exception("internal error while serving a request")
            reply = ErrorMessage(ErrorCode.INTERNAL)
        return Reply(reply, (*out.effects, *self.state.befriend()))

    def _answer(self, msg: Message, out: _Collect, now: float) -> Message:
        if isinstance(msg, HeadSyncRequest):
            self._space_for(msg.space_id)
            return self.state.replicas.ldiff(msg.space_id).answer(msg)
        if isinstance(msg, FullSyncRequest):
            return self._answer_full(msg)
        if isinstance(msg, AclSyncRequest):
            return self._answer_acl(msg, out, now)
        if isinstance(msg, BootstrapRequest):
            return self._answer_bootstrap(msg, now)
        if isinstance(msg, ReceiptRequest):
            return self._answer_receipt(msg)
        raise ProtocolError("not a request")

    def _space_or_none(self, space_id: str) -> Space | None:
        try:
            return self._space_for(space_id)
        except UnknownSpace:
            return None

    def _space_for(self, space_id: str, *, acl_only: bool = False,
                   now: float | None = None) -> Space:
        """The space if the peer may access it, else UnknownSpace (same as non-existence)."""
        st = self.state
        space = st.replicas.spaces.get(space_id)
        if space is None:
            raise UnknownSpace(UNKNOWN)
        if st.may_access(space_id):
            st.shared.add(space_id)
            st.invited.pop(space_id, None)
            return space
        if acl_only and now is not None and st.invite_open(space, now):
            return space
        raise UnknownSpace(UNKNOWN)

    def _cap(self, asked: int) -> int:
        limit = self.state.config.batch_bytes
        return min(asked or limit, limit)

    def _answer_full(self, msg: FullSyncRequest) -> FullSyncResponse:
        space = self._space_for(msg.space_id)
        tid = msg.object_id
        if not space.has_tree(tid):
            return FullSyncResponse(msg.space_id, tid, (), (), False)
        cap = self._cap(msg.max_bytes)
        answer = (space.snapshot_answer(tid, cap) if msg.from_snapshot and not msg.heads
                  else None)
        if answer is not None:  # root, latest snapshot, what follows (docs/replica.md)
            heads, lack = answer
        elif msg.heads:
            tree = space.tree(tid)
            heads, lack = tree.heads, [c.raw for c in tree.changes_for(msg.heads)]
        else:  # the peer has nothing: stored bytes in order, no ObjectTree built (perf)
            heads, lack = space.full_sync_raws(tid)
        batch, more = take_batch(lack, cap)
        return FullSyncResponse(msg.space_id, tid, heads[:MAX_HEADS], tuple(batch), more)

    def _answer_acl(self, msg: AclSyncRequest, out: _Collect, now: float) -> AclSyncResponse:
        space = self._space_for(msg.space_id, acl_only=True, now=now)
        if msg.records:
            out.effects += self._take_acl(space, msg.records, now)[1]
        lack = acl_lacking(space, msg.heads)
        batch, more = take_batch(lack, self._cap(msg.max_bytes)) if lack else ([], False)
        return AclSyncResponse(msg.space_id, tuple(space.acl.heads[:MAX_HEADS]), tuple(batch),
                               more)

    def _answer_bootstrap(self, msg: BootstrapRequest, now: float) -> BootstrapResponse:
        st = self.state
        sid = msg.space_id
        space = st.replicas.spaces.get(sid)
        if space is None:
            raise UnknownSpace(UNKNOWN)
        member = st.may_access(sid)
        if not member:
            invite_id = None if msg.proof is None else self.proof_ok(space, msg.proof, now)
            if invite_id is None or st.remote_account in space.acl.state.departed:
                raise UnknownSpace(UNKNOWN)
            st.invited[sid] = invite_id
        st.shared.add(sid)
        header = space.header.raw if msg.after is None else None
        records, _ = take_batch(space.acl_records(), st.config.batch_bytes)
        ids: list[bytes] = []
        next_after = None
        if member and msg.max_objects:
            after = msg.after or b""
            ids = [t for t in space.tree_ids() if t > after][:min(msg.max_objects,
                                                                  MAX_OBJECT_PAGE)]
            if len(ids) == msg.max_objects:
                next_after = ids[-1]
        return BootstrapResponse(sid, header, tuple(records), tuple(ids), next_after)

    def proof_ok(self, space: Space, proof: bytes, now: float) -> bytes | None:
        """The invite id if ``proof`` is a signature by an open (not revoked, not expired at
        ``now``) invite's key over this session's challenge, else None."""
        st = self.state
        try:
            invite_id, sig = parse_proof(proof)
        except DecodeError:
            return None
        if not space.acl.invite_open(invite_id, now):
            return None
        inv = space.acl.state.invites[invite_id]
        data = bootstrap_message(space.id, invite_id, st.my_nonce, st.remote_device,
                                 st.replicas.device.public, st.binding)
        try:
            verify(inv.invite_key, BOOTSTRAP_DOMAIN, data, sig)
        except BadSignature:
            return None
        return invite_id

    def _answer_receipt(self, msg: ReceiptRequest) -> ReceiptResponse:
        space = self._space_for(msg.space_id)
        if len(msg.nonce) != NONCE_SIZE:
            raise ProtocolError(f"a receipt nonce is {NONCE_SIZE} bytes")
        return ReceiptResponse(self.state.replicas.policy.receipt(space, msg.nonce))

    # --- pushes --------------------------------------------------------------------------------
    def head_update(self, msg: HeadUpdate) -> tuple[Ingest | None, list[Effect]]:
        """Admit a ``HEAD_UPDATE``: the batch to take in (None if it carries no changes) and no
        effects — then call :meth:`head_update_done` — or ``(None, [Strike])`` when the peer
        may not access the space (then nothing more happens)."""
        st = self.state
        sid = msg.space_id
        space = st.replicas.spaces.get(sid)
        if space is None or not st.may_access(sid):
            return None, [Strike("push for a space the peer may not access")]
        st.shared.add(sid)
        ing = Ingest(st, self.source, space, msg.object_id, msg.changes) if msg.changes else None
        return ing, []

    def head_update_done(self, msg: HeadUpdate, ing: Ingest | None) -> list[Effect]:
        """After the push's changes are in: pull what its heads show we still lack (bounded by
        the stuck rule: a peer announcing heads it never delivers costs few requests)."""
        st = self.state
        sid, tid = msg.space_id, msg.object_id
        space = st.replicas.spaces.get(sid)
        if space is None:
            return []
        missing = ing is not None and ing.missing
        unknown_acl = ing is not None and ing.unknown_acl
        if not space.has_tree(tid):
            missing = missing or bool(msg.heads)
        else:
            tree = space.tree(tid)
            missing = missing or any(h not in tree for h in msg.heads)
        out: list[Effect] = []
        if unknown_acl:
            out.append(Submit(("acl", sid, b""), 0))
        if (missing or unknown_acl) and st.stuck.get((sid, tid), 0) < st.config.max_stuck:
            out.append(Submit(("tree", sid, tid), 1))
        return out

    def _take_acl(self, space: Space, raws: Sequence[bytes], now: float,
                  ) -> tuple[AclAddResult | None, list[Effect]]:
        """Admit ACL records the peer sent. A peer that is not a member or replicator (an
        invitee) may send only its own join, signed by its connection's account
        (``Acl.check_invitee_push``): anything else is refused whole, with a strike. Merges
        the merge rule ignores (by departed members) are not refusals: no strike. Returns
        what was admitted (None when the push was refused before admission) and effects."""
        st = self.state
        if not st.may_access(space.id):
            try:
                space.acl.check_invitee_push(raws, st.remote_account, now)
            except AccessDenied as exc:
                return None, [Strike(f"ACL push refused: {exc}")]
        res = st.replicas.apply_acl(self.source, space, raws)
        if res.rejected:
            return res, [Strike(f"{len(res.rejected)} ACL records refused")]
        return res, []

    def acl_update(self, msg: AclHeadUpdate, now: float) -> list[Effect]:
        """Judge an ``ACL_HEAD_UPDATE`` at wall time ``now`` (invite expiry)."""
        st = self.state
        sid = msg.space_id
        space = st.replicas.spaces.get(sid)
        if space is None or not (st.may_access(sid) or st.invite_open(space, now)):
            return [Strike("ACL push for a space the peer may not access")]
        res, out = self._take_acl(space, msg.records, now)
        if res is None:  # refused before admission
            return out
        if res.waiting or any(h not in space.acl for h in msg.heads):
            out.append(Submit(("acl", sid, b""), 0))
        if res.added:
            # new ACL state may unblock trees or make us a member: sync the space again
            st.shared.add(sid)
            out.append(Submit(("space", sid, b""), 2))
        return out

    def backup_push(self, msg: SpaceOffer | StorageRefused) -> list[Effect]:
        st = self.state
        if isinstance(msg, StorageRefused):
            if msg.space_id in st.shared:
                st.refused_by_peer[msg.space_id] = msg
                st.space_state(msg.space_id).last_error = (
                    f"peer refused to store: {msg.code.name.lower()}: {msg.message}")
            return []
        return [Offered(msg.space_id)]
