"""Pushing local news to one peer (sans-IO): what to send, and a bounded queue for it.

:func:`tree_pushes` and :func:`acl_push` turn a new tree result / new ACL records into
``HEAD_UPDATE`` / ``ACL_HEAD_UPDATE`` messages within the byte cap; :func:`offers` lists the
``SPACE_OFFER`` notices for spaces our ACL names the peer replicator of. :class:`PushQueue`
holds them until the engine's push loop sends them; when it is full a push is dropped and a
head sync of its space is scheduled instead (head sync carries whatever was dropped). When the
last tree push of a space has been sent, :meth:`PushQueue.pop` hands back the in-sync check
(:func:`p2psync.sync.jobs.after_push`).
"""

from __future__ import annotations

from collections import Counter, deque

from p2psync.replica.space import Space
from p2psync.replica.tree import AddResult
from p2psync.sync.effects import Effect, Push, Submit
from p2psync.sync.jobs import after_push
from p2psync.sync.messages import (
    MAX_BATCH_ITEMS,
    MAX_HEADS,
    AclHeadUpdate,
    HeadUpdate,
    Message,
    SpaceOffer,
    take_batch,
)
from p2psync.sync.notice import notice
from p2psync.sync.peerstate import PeerState
from p2psync.sync.pull import push_lacking


def may_push(state: PeerState, space_id: str) -> bool:
    """We push a space to the peer only while it shares it and our ACL lets it access it
    (evaluated after the ACL change that triggered the push). A removed member gets only
    its own removal, with its causal past (:mod:`p2psync.sync.notice`)."""
    return space_id in state.shared and state.may_access(space_id)


def tree_pushes(state: PeerState, space: Space, tree_id: bytes,
                result: AddResult) -> list[Effect]:
    if not result.attached or not may_push(state, space.id):
        return []
    return push_lacking(space.id, tree_id, [c.raw for c in result.attached], result.heads,
                        state.config.batch_bytes)


def acl_push(state: PeerState, space: Space, record_ids: list[bytes]) -> list[Effect]:
    if not may_push(state, space.id):
        # a record that removes the peer or refuses its join is still sent (issue 14)
        told = notice(space, record_ids, state.remote_account, state.config.batch_bytes)
        return [Push(told, space.id)] if told is not None else offers(state, space.id)
    raws = [space.acl.record(i).raw for i in record_ids if i in space.acl]
    batch, _ = take_batch(raws, state.config.batch_bytes) if raws else ([], False)
    return [Push(AclHeadUpdate(space.id, tuple(space.acl.heads[:MAX_HEADS]), tuple(batch)),
                 space.id)]


def offers(state: PeerState, space_id: str | None = None) -> list[Effect]:
    """Offer the peer the spaces our ACL names it replicator of that it does not share yet
    (the exchange cannot list a space the peer has never held); it fetches them."""
    out: list[Effect] = []
    for sid in [space_id] if space_id else list(state.replicas.spaces):
        space = state.replicas.spaces.get(sid)
        if (space is None or sid in state.shared or sid in state.offered
                or state.remote_account not in space.acl.state.replicators):
            continue
        state.offered.add(sid)
        out.append(Push(SpaceOffer(sid), sid))
    return out


class PushQueue:
    """Pushes waiting to be sent, at most ``limit``.

    With ``merge_bytes``, :meth:`pop` sends consecutive ``HEAD_UPDATE`` pushes of one tree
    (a burst of local edits made while the previous push was being sent) as one message of
    at most that many change bytes: the later heads, the changes in queue order (causal)."""

    def __init__(self, limit: int, merge_bytes: int = 0) -> None:
        self.limit = limit
        self.merge_bytes = merge_bytes
        self.items: deque[tuple[Message, str]] = deque()
        self._per_space: Counter[str] = Counter()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.items)

    def put(self, message: Message, space_id: str) -> list[Effect]:
        """Queue ``message``; when full, drop it and ask for a head sync of its space."""
        if len(self.items) >= self.limit:
            self.dropped += 1
            return [Submit(("space", space_id, b""), 2)]
        self.items.append((message, space_id))
        self._per_space[space_id] += 1
        return []

    def pop(self) -> tuple[Message, list[Effect]]:
        """The next push to send, and what to do once it is sent (the in-sync check after the
        last queued push of its space)."""
        message, space_id = self.items.popleft()
        if self.merge_bytes and isinstance(message, HeadUpdate):
            message = self._merge(message, space_id)
        self._per_space[space_id] -= 1
        more = self._per_space[space_id] > 0
        if not more:
            del self._per_space[space_id]
        return message, after_push(message, more)

    def _merge(self, first: HeadUpdate, space_id: str) -> HeadUpdate:
        changes, heads = list(first.changes), first.heads
        size = sum(len(c) for c in changes)
        while self.items:
            nxt, sid = self.items[0]
            if not (isinstance(nxt, HeadUpdate) and sid == space_id
                    and nxt.object_id == first.object_id and nxt.space_id == first.space_id):
                break
            more = sum(len(c) for c in nxt.changes)
            if size + more > self.merge_bytes or len(changes) + len(
                    nxt.changes) > MAX_BATCH_ITEMS:
                break
            self.items.popleft()
            self._per_space[space_id] -= 1
            changes.extend(nxt.changes)
            heads = nxt.heads
            size += more
        if len(changes) == len(first.changes):
            return first
        return HeadUpdate(first.space_id, first.object_id, heads, tuple(changes))
