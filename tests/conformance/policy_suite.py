"""Conformance suite of the storage-policy seam (:class:`p2psync.sync.replicas.StoragePolicy`).

Use: subclass :class:`PolicySuite` in a test module providing a ``policy_world`` fixture: a
:class:`PolicyWorld` whose ``holder`` Replicas has the policy under test installed and whose
``owner`` Replicas owns a space that names the holder's account replicator (the space every
policy must admit). Checks: the declared methods exist and are called directly; an admissible
space and batch go through ``Replicas`` and are stored; ``on_offer`` returns at once for a held
and for an unknown space (it may start a task, never block) and never raises; ``receipt``
either returns bytes bound to the nonce or raises ``ProtocolError`` — the two behaviours the
engine relies on.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from p2psync.errors import JoinError, ProtocolError
from p2psync.replica.acl import InviteCode
from p2psync.replica.space import Space
from p2psync.replica.tree import AddResult
from p2psync.sync.replicas import Replicas, StoragePolicy


@dataclass
class PolicyWorld:
    owner: Replicas
    holder: Replicas  #: has the policy under test installed
    issues_receipts: bool


class _Source:
    """A Pusher standing in for the engine whose input is applied (never pushed back)."""

    def push_tree(self, space: Space, tree_id: bytes, result: AddResult) -> None: ...

    def push_acl(self, space: Space, record_ids: list[bytes]) -> None: ...


@dataclass
class FakePeer:
    """An OfferingPeer: records what the policy asked of it."""

    conn: Any = None
    shared: set[str] = field(default_factory=set)
    jobs: list[tuple[tuple[str, str, bytes], int]] = field(default_factory=list)
    bootstraps: list[str] = field(default_factory=list)

    def submit(self, key: tuple[str, str, bytes], priority: int = 1) -> None:
        self.jobs.append((key, priority))

    async def bootstrap(self, space_id: str, code: InviteCode | None = None) -> Space:
        self.bootstraps.append(space_id)
        raise JoinError("this fake peer holds nothing")


class _Conn:
    peer_id = "p-fake-peer"


def _adopt(world: PolicyWorld) -> tuple[Space, Space]:
    """The owner's space and the holder's copy of it (through the policy's admit_space)."""
    mine = next(iter(world.owner.spaces.values()))
    copy = world.holder.adopt(mine.id, mine.header.raw, mine.acl_records())
    return mine, copy


class PolicySuite:
    """Every storage policy passes these. Needs a ``policy_world`` fixture."""

    def test_declares_the_whole_protocol(self, policy_world: PolicyWorld) -> None:
        policy = policy_world.holder.policy
        assert isinstance(policy, StoragePolicy)
        for name in ("admit_space", "admit_changes", "on_offer", "receipt"):
            assert callable(getattr(type(policy), name))

    def test_admissible_space_and_batch_are_stored(self, policy_world: PolicyWorld) -> None:
        mine, copy = _adopt(policy_world)
        assert copy.id in policy_world.holder.spaces
        doc = mine.new_document().tree
        raws = [c.raw for c in mine.tree(doc.id).changes()]
        res = policy_world.holder.apply_changes(_Source(), copy, doc.id, raws)
        assert [c.id for c in res.attached] == [doc.id]
        assert policy_world.holder.store.get_heads(doc.id) == mine.heads(doc.id)

    async def test_offers_return_at_once_and_never_raise(self,
                                                         policy_world: PolicyWorld) -> None:
        _, copy = _adopt(policy_world)
        peer = FakePeer(conn=_Conn())
        policy = policy_world.holder.policy
        assert policy.on_offer(peer, copy.id) is None  # type: ignore[func-returns-value]
        assert policy.on_offer(peer, "unknown.space") is None  # type: ignore[func-returns-value]
        for _ in range(3):  # let any fetch task it started run (and fail) to the end
            await asyncio.sleep(0)
        assert set(peer.bootstraps) <= {"unknown.space"}

    def test_receipt_is_bound_to_the_nonce_or_refused(self, policy_world: PolicyWorld) -> None:
        _, copy = _adopt(policy_world)
        n1, n2 = os.urandom(32), os.urandom(32)
        policy = policy_world.holder.policy
        if policy_world.issues_receipts:
            r1, r2 = policy.receipt(copy, n1), policy.receipt(copy, n2)
            assert isinstance(r1, bytes) and n1 in r1 and n2 in r2 and r1 != r2
        else:
            try:
                policy.receipt(copy, n1)
            except ProtocolError:
                return
            raise AssertionError("a policy without receipts must raise ProtocolError")
