"""The requester side of the sync protocol (sans-IO): ACL pull, tree pull, space sync.

Each core is shaped like :class:`~p2psync.sync.ldiff.HeadSyncSession`: ask
:meth:`Core.next_request` for ``(tag, request)`` until it returns None, send them, hand every
answer to :meth:`Core.receive` (with the current wall time ``now``), carry out the returned
effects, and when :attr:`Core.ingest` is set, run that batch (chunked) and call
:meth:`Core.ingested`; repeat until :attr:`Core.done`. When :attr:`Core.error` is set the job
failed (the effects returned with it still apply). A core never sends or sleeps:
:class:`~p2psync.sync.engine.PeerEngine` drives it over the connection (``_drive``), and the
tests drive it by hand (tests/test_sync_cores.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from p2psync.codec import content_id
from p2psync.errors import InvalidChange, P2PSyncError, PeerRefused, ProtocolError
from p2psync.replica.change import Change
from p2psync.replica.space import Space
from p2psync.replica.tree import ObjectTree
from p2psync.sync.effects import Effect, Push, Strike, Submit, Violation
from p2psync.sync.ingest import Ingest
from p2psync.sync.ldiff import HeadSyncSession
from p2psync.sync.messages import (
    MAX_HEADS,
    AclSyncRequest,
    AclSyncResponse,
    BootstrapRequest,
    BootstrapResponse,
    ErrorCode,
    FullSyncRequest,
    FullSyncResponse,
    HeadSyncRequest,
    HeadSyncResponse,
    HeadUpdate,
    Message,
    ReceiptRequest,
    ReceiptResponse,
    take_batch,
)
from p2psync.sync.peerstate import PeerState
from p2psync.sync.replicas import Pusher

#: The answer type each request must get (anything else is a strike).
RESPONSE_FOR: dict[type[Message], type[Message]] = {
    HeadSyncRequest: HeadSyncResponse,
    FullSyncRequest: FullSyncResponse,
    AclSyncRequest: AclSyncResponse,
    BootstrapRequest: BootstrapResponse,
    ReceiptRequest: ReceiptResponse,
}

ACL_MAX_ROUNDS = 256  #: ACL sync rounds before we call it a protocol error


def acl_lacking(space: Space, their_heads: Sequence[bytes]) -> list[bytes]:
    """Our ACL records not in the causal past of ``their_heads`` (unknown heads ignored)."""
    acl = space.acl
    known = [h for h in their_heads if h in acl]
    out = []
    for raw in acl.export():
        rid = content_id(raw)
        if not any(acl.is_ancestor(rid, h) for h in known):
            out.append(raw)
    return out


def push_lacking(space_id: str, tree_id: bytes, raws: list[bytes], heads: Sequence[bytes],
                 batch_bytes: int) -> list[Effect]:
    """``HEAD_UPDATE`` pushes carrying ``raws`` in batches (heads only in the last one)."""
    out: list[Effect] = []
    while raws:
        batch, more = take_batch(raws, batch_bytes)
        raws = raws[len(batch):]
        out.append(Push(HeadUpdate(space_id, tree_id, () if more else tuple(heads[:MAX_HEADS]),
                                   tuple(batch)), space_id))
    return out


class Core:
    """Base of the requester cores; handles delegation to one sub-core (an ACL pull)."""

    def __init__(self, state: PeerState, source: Pusher) -> None:
        self.state = state
        self.source = source
        self.done = False
        self.error: P2PSyncError | None = None
        self.ingest: Ingest | None = None
        self.sub: Core | None = None

    def next_request(self) -> tuple[int, Message] | None:
        if self.done:
            return None
        if self.sub is not None:
            return self.sub.next_request()
        return self._next()

    def receive(self, tag: int, msg: Message, now: float) -> list[Effect]:
        if self.done:
            return []
        sub = self.sub
        if sub is None:
            return self._receive(tag, msg, now)
        out = sub.receive(tag, msg, now)
        if sub.error is not None:
            self._fail(sub.error)
        elif sub.done:
            self.sub = None
            out += self._sub_done(sub, now)
        return out

    def ingested(self, now: float) -> list[Effect]:
        """The batch in :attr:`ingest` has been taken in."""
        return []

    def _fail(self, exc: P2PSyncError) -> None:
        self.error = exc
        self.done = True
        self.ingest = None

    def _next(self) -> tuple[int, Message] | None:
        raise NotImplementedError

    def _receive(self, tag: int, msg: Message, now: float) -> list[Effect]:
        raise NotImplementedError

    def _sub_done(self, sub: Core, now: float) -> list[Effect]:
        return []


class AclPull(Core):
    """ACL records both ways: theirs we lack come in answers, ours they lack go in the next
    request. Each round brings new records or sends new ones, so it ends."""

    def __init__(self, state: PeerState, source: Pusher, space_id: str) -> None:
        super().__init__(state, source)
        self.space_id = space_id
        self.space = state.replicas.spaces.get(space_id)
        self.done = self.space is None or space_id not in state.shared
        self.rounds = 0
        self._sent: set[bytes] = set()
        self._send: list[bytes] = []
        self._waiting = False

    def _next(self) -> tuple[int, Message] | None:
        if self._waiting or self.space is None:
            return None
        self._waiting = True
        self.rounds += 1
        return 0, AclSyncRequest(self.space_id, tuple(self.space.acl.heads[:MAX_HEADS]),
                                 tuple(self._send), self.state.config.batch_bytes)

    def _receive(self, tag: int, msg: Message, now: float) -> list[Effect]:
        assert isinstance(msg, AclSyncResponse) and self.space is not None
        self._waiting = False
        out: list[Effect] = []
        if msg.records:
            res = self.state.replicas.apply_acl(self.source, self.space, msg.records)
            if res.rejected:
                out.append(Strike(f"{len(res.rejected)} ACL records refused"))
        lack = [r for r in acl_lacking(self.space, msg.heads) if content_id(r) not in self._sent]
        self._send = take_batch(lack, self.state.config.batch_bytes)[0] if lack else []
        self._sent.update(content_id(r) for r in self._send)
        if not msg.more and not self._send:
            self.done = True
        elif self.rounds >= ACL_MAX_ROUNDS:
            self._fail(ProtocolError("ACL sync did not finish"))
        return out


class TreePull(Core):
    """Full sync of one tree: ask with our heads until the peer says there is no more; a round
    that makes no progress fails the job. Afterwards: the *stuck* rule (the peer's announced
    heads still missing counts against it, see :class:`PeerState`) and, if their heads do not
    cover ours, push what they lack at once (one exchange moves changes both ways)."""

    def __init__(self, state: PeerState, source: Pusher, space_id: str, tree_id: bytes) -> None:
        super().__init__(state, source)
        self.space_id = space_id
        self.tree_id = tree_id
        self.space = state.allowed(space_id)
        self.done = self.space is None
        self.rounds = 0
        self.their: tuple[bytes, ...] = ()
        self._before: tuple[bytes, ...] = ()
        self._resp: FullSyncResponse | None = None
        self._waiting = False
        self._retried_acl = False
        #: head sync listed this object as theirs: an answer without it is a strike
        self.listed = tree_id in state.space_state(space_id).pending

    def _heads(self) -> tuple[bytes, ...]:
        assert self.space is not None
        return tuple(self.space.heads(self.tree_id)) if self.space.has_tree(self.tree_id) else ()

    def _next(self) -> tuple[int, Message] | None:
        if self._waiting or self.ingest is not None:
            return None
        self._waiting = True
        self.rounds += 1
        self._before = self._heads()
        return 0, FullSyncRequest(self.space_id, self.tree_id, self._before[:MAX_HEADS], (), (),
                                  self.state.config.batch_bytes, self._from_snapshot())

    def _from_snapshot(self) -> bool:
        """Ask for the latest snapshot and what follows (docs/replica.md "Shallow trees")
        when we hold nothing of the tree and are a member with a read key (a backup holds
        none: it fetches and vouches for whole trees)."""
        space = self.space
        return (self.state.config.snapshot_first and not self._before and space is not None
                and not space.has_tree(self.tree_id) and space.role() is not None
                and bool(space.acl.state.key_order)
                and space.acl.read_key(space.acl.state.current_key_id) is not None)

    def _receive(self, tag: int, msg: Message, now: float) -> list[Effect]:
        assert isinstance(msg, FullSyncResponse) and self.space is not None
        self._waiting = False
        if msg.space_id != self.space_id or msg.object_id != self.tree_id:
            self._fail(ProtocolError("full sync answer for another object"))
            return [Strike("full sync answer for another object")]
        self.their = msg.heads
        self._resp = msg
        self._retried_acl = False
        self.ingest = Ingest(self.state, self.source, self.space, self.tree_id, msg.changes,
                             base_first=not self._before and self._from_snapshot())
        return []

    def ingested(self, now: float) -> list[Effect]:
        ing, self.ingest = self.ingest, None
        assert ing is not None and self._resp is not None
        if ing.unknown_acl and not self._retried_acl:
            # the batch names ACL heads we lack: ACL sync first, then take the batch again
            self._retried_acl = True
            self.sub = AclPull(self.state, self.source, self.space_id)
            if self.sub.done:  # nothing to pull (cannot happen while the space is allowed)
                self.sub = None
                return self._sub_done(self, now)
            return []
        return self._round_done()

    def _sub_done(self, sub: Core, now: float) -> list[Effect]:
        assert self.space is not None and self._resp is not None
        self.ingest = Ingest(self.state, self.source, self.space, self.tree_id,
                             self._resp.changes,
                             base_first=not self._before and self._from_snapshot())
        return []

    def _round_done(self) -> list[Effect]:
        assert self._resp is not None
        if not self._resp.more or self.rounds >= self.state.config.max_rounds:
            return self._finish()
        if self._heads() == self._before:
            self._fail(ProtocolError("full sync made no progress"))
        return []

    def _finish(self) -> list[Effect]:
        self.done = True
        st, sid, tid, space = self.state, self.space_id, self.tree_id, self.space
        assert space is not None
        st.space_state(sid).pending.discard(tid)
        key = (sid, tid)
        if not space.has_tree(tid):
            st.stuck[key] = st.stuck.get(key, 0) + 1
            if self.listed:
                return [Strike("listed an object in head sync that it does not serve")]
            return []
        tree = space.tree(tid)
        if any(h not in tree for h in self.their):
            st.stuck[key] = st.stuck.get(key, 0) + 1
        else:
            st.stuck.pop(key, None)
        if self.their and not set(tree.heads) <= set(self.their):
            # bidirectional: they lack some of ours; send it now instead of waiting for their
            # own head sync
            lack = [c.raw for c in tree.changes_for(self.their)]
            return push_lacking(sid, tid, lack, tree.heads, st.config.batch_bytes)
        return []


class SpaceSync(Core):
    """One shared space with the peer: ACL pull, then head sync (all requests of one level in
    flight together), then a tree job per object that differs. A head-sync answer that breaks
    the protocol is a :class:`Violation` (strike + disconnect) and its claims are discarded."""

    def __init__(self, state: PeerState, source: Pusher, space_id: str) -> None:
        super().__init__(state, source)
        self.space_id = space_id
        self.done = state.allowed(space_id) is None
        self.session: HeadSyncSession | None = None
        self.rounds = 0
        self._outstanding = 0
        if not self.done:
            self.sub = AclPull(state, source, space_id)
            if self.sub.done:
                self.sub = None
                self._start_head_sync()

    def _start_head_sync(self) -> None:
        self.session = HeadSyncSession(self.state.replicas.ldiff(self.space_id), self.space_id)

    def _sub_done(self, sub: Core, now: float) -> list[Effect]:
        self._start_head_sync()
        return []

    def _next(self) -> tuple[int, Message] | None:
        assert self.session is not None
        nxt = self.session.next_request()
        if nxt is not None:
            if not self._outstanding:
                self.rounds += 1  # a new level: one more round trip
            self._outstanding += 1
        return nxt

    def _receive(self, tag: int, msg: Message, now: float) -> list[Effect]:
        session = self.session
        assert session is not None and isinstance(msg, HeadSyncResponse)
        self._outstanding -= 1
        try:
            session.receive(tag, msg)
        except ProtocolError as exc:
            self._fail(exc)
            return [Violation(f"head sync: {exc}")]  # nothing it claimed is acted on
        if session.done:
            return self._finish(now)
        return []

    def _finish(self, now: float) -> list[Effect]:
        assert self.session is not None
        self.done = True
        st, sid = self.state, self.space_id
        diff = self.session.result
        ss = st.space_state(sid)
        ss.last_head_sync = now
        ss.head_sync_rounds = self.rounds
        todo = diff.remote_only | diff.changed
        ss.pending = set(todo)
        ss.agreed_hash = st.replicas.ldiff(sid).hash() if diff.empty else None
        out: list[Effect] = []
        for tid in sorted(todo):
            st.stuck.pop((sid, tid), None)
            out.append(Submit(("tree", sid, tid), 1))
        return out


@dataclass(frozen=True)
class ChallengeResult:
    """How a peer answered a storage challenge (see :class:`Challenge`)."""

    asked: int  #: changes challenged
    proven: int  #: returned with the right id (the peer holds that ciphertext)
    inconclusive: int  #: not in the first batch, but the peer said there was more
    failed: tuple[bytes, ...]  #: ids the peer did not return

    @property
    def ok(self) -> bool:
        return self.asked > 0 and not self.failed and self.proven > 0


class Challenge(Core):
    """Proof of storage (issue 20.4): ask the peer (a backup) for changes chosen at random
    among those we hold, by asking for the tree "after the change's parents", and check that
    the ciphertext returned hashes to the chosen ids. A receipt alone proves nothing (a backup
    can copy our root and claim any counts); this makes it hand over data it could only have
    by storing it. Nothing returned is stored (we hold all of it already); a failure is
    reported, not struck (a backup may have lost data honestly)."""

    def __init__(self, state: PeerState, source: Pusher, space_id: str, count: int,
                 rng: random.Random) -> None:
        super().__init__(state, source)
        self.space_id = space_id
        space = state.allowed(space_id)
        self.picks: list[tuple[bytes, Change]] = []
        if space is not None:
            tids = sorted(space.tree_ids())
            for tid in rng.sample(tids, min(count, len(tids))):
                changes = list(space.tree(tid).changes())
                self.picks.append((tid, rng.choice(changes)))
        self.done = not self.picks
        self._sent = 0
        self._got = 0
        self.proven = self.inconclusive = 0
        self.failed: list[bytes] = []

    @property
    def result(self) -> ChallengeResult:
        return ChallengeResult(len(self.picks), self.proven, self.inconclusive,
                               tuple(self.failed))

    def _next(self) -> tuple[int, Message] | None:
        if self._sent >= len(self.picks):
            return None
        i = self._sent
        self._sent += 1
        tid, ch = self.picks[i]
        return i, FullSyncRequest(self.space_id, tid, tuple(ch.prev_ids[:MAX_HEADS]), (), (),
                                  self.state.config.batch_bytes)

    def _receive(self, tag: int, msg: Message, now: float) -> list[Effect]:
        assert isinstance(msg, FullSyncResponse)
        tid, ch = self.picks[tag]
        if msg.object_id == tid and any(content_id(raw) == ch.id for raw in msg.changes):
            self.proven += 1
        elif msg.object_id == tid and msg.more:
            self.inconclusive += 1
        else:
            self.failed.append(ch.id)
        self._got += 1
        self.done = self._got >= len(self.picks)
        return []


class HistoryPull(Core):
    """History on demand (docs/replica.md "Shallow trees"): the whole of a tree we hold
    shallow, by ordinary full sync (``from_snapshot = false``) into a separate in-memory tree
    — every change verified as it arrives — which then replaces ours
    (:meth:`Space.complete_history`). A peer that cannot give the whole history (a shallow
    peer) fails the job; nothing held changes then."""

    def __init__(self, state: PeerState, source: Pusher, space_id: str, tree_id: bytes) -> None:
        super().__init__(state, source)
        self.space_id = space_id
        self.tree_id = tree_id
        self.space = state.allowed(space_id)
        self.done = (self.space is None or not self.space.has_tree(tree_id)
                     or not self.space.tree(tree_id).shallow)
        self.full: ObjectTree | None = None
        self.rounds = 0
        self._waiting = False

    def _next(self) -> tuple[int, Message] | None:
        if self._waiting:
            return None
        self._waiting = True
        self.rounds += 1
        heads = self.full.heads if self.full is not None else ()
        return 0, FullSyncRequest(self.space_id, self.tree_id, heads[:MAX_HEADS], (), (),
                                  self.state.config.batch_bytes, False)

    def _receive(self, tag: int, msg: Message, now: float) -> list[Effect]:
        assert isinstance(msg, FullSyncResponse) and self.space is not None
        self._waiting = False
        if msg.space_id != self.space_id or msg.object_id != self.tree_id:
            self._fail(ProtocolError("full sync answer for another object"))
            return [Strike("full sync answer for another object")]
        raws = list(msg.changes)
        before = len(self.full) if self.full is not None else 0
        try:
            if self.full is None:
                root = next((r for r in raws if content_id(r) == self.tree_id), None)
                if root is None:
                    self._fail(ProtocolError("the history answer lacks the root"))
                    return []
                self.full = ObjectTree.from_root(self.space_id, self.space.acl, root)
                raws = [r for r in raws if r is not root]
            self.full.add(raws)
            if not msg.more:
                self.space.complete_history(self.full)
                self.done = True
                return []
        except P2PSyncError as exc:
            self._fail(exc)
            return [] if isinstance(exc, InvalidChange) else [Strike(f"history refused: {exc}")]
        if len(self.full) == before or self.rounds >= self.state.config.max_rounds:
            self._fail(ProtocolError("history sync made no progress"))
        return []


def job_core(state: PeerState, source: Pusher, key: tuple[str, str, bytes]) -> Core:
    """The requester core for one scheduled job ``("space"|"acl"|"tree"|"history", space,
    tree)``."""
    kind, sid, tid = key
    if kind == "space":
        return SpaceSync(state, source, sid)
    if kind == "acl":
        return AclPull(state, source, sid)
    if kind == "history":
        return HistoryPull(state, source, sid, tid)
    return TreePull(state, source, sid, tid)


def job_failure(exc: P2PSyncError | TimeoutError) -> tuple[str, bool, float | None]:
    """How a failed job is retried: ``(text for status, retryable, retry after seconds)``.
    The peer saying the space is unknown to us or denied is final; a rate limit is retried
    when the peer said; anything else is retried with backoff."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if not isinstance(exc, PeerRefused):
        return text, True, None
    final = exc.code in (ErrorCode.UNKNOWN_SPACE, ErrorCode.ACCESS_DENIED)
    return text, not final, exc.retry_after
