"""Head-sync poisoning (issue 20 item 1): every rule a head-sync answer must satisfy, each with
a lying responder that breaks exactly that rule, and a switch-off proof that the test fails
when the rule is removed (``test_each_rule_bites``). Plus: an honest responder whose set
changes between rounds never trips the exact sum rule, and over a real engine link (memory
carrier, real handshake) a violation disconnects the peer and nothing it claimed is fetched.

The liars answer a requester whose own set is empty (every query says ``(zero hash, 0)``), so
an omitted result means "0 objects here" and every claimed id is made up.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2psync.errors import HeadSyncViolation, ProtocolError
from p2psync.replica.document import ROOT
from p2psync.sync.ldiff import HeadSyncSession, LDiff
from p2psync.sync.messages import (
    AclSyncRequest,
    AclSyncResponse,
    FullSyncRequest,
    HeadSyncRequest,
    HeadSyncResponse,
    RangeQuery,
    RangeResult,
)
from tests.guards import bites
from tests.memory_net import lying_member
from tests.test_memory_hardening import config, node

FAKE = bytes([1]) * 32  #: a fingerprint that differs from every range of ours
#: policy(query, is_anchor) -> (count, listed ids or None) to claim, or None to omit the range
Policy = Callable[[RangeQuery, bool], tuple[int, list[bytes] | None] | None]


def made_up(bits: int, prefix: int, n: int, start: int = 0) -> list[bytes]:
    """``n`` distinct ids inside range ``(bits, prefix)``."""
    head = (prefix << (64 - bits)) if bits else 0
    return [head.to_bytes(8, "big") + (start + i).to_bytes(24, "big") for i in range(n)]


def liar(policy: Policy) -> Callable[[HeadSyncRequest], HeadSyncResponse]:
    def answer(req: HeadSyncRequest) -> HeadSyncResponse:
        keys = {(q.bits, q.prefix) for q in req.ranges}
        out = []
        for q in req.ranges:
            anchor = (q.bits + 4, q.prefix << 4) in keys
            claim = policy(q, anchor)
            if claim is None:
                continue
            count, ids = claim
            els = None if ids is None else tuple((i, FAKE) for i in ids)
            out.append(RangeResult(q.bits, q.prefix, FAKE, count, els))
        return HeadSyncResponse(req.space_id, tuple(out))
    return answer


def drive(session: HeadSyncSession, answer: Callable[[HeadSyncRequest], HeadSyncResponse],
          max_requests: int = 300) -> HeadSyncViolation | None:
    """Run the session against ``answer``; the violation it raised, or None if it finished.
    Fails the test if the session is still going after ``max_requests`` (unbounded work)."""
    sent = 0
    while not session.done:
        flight = []
        while (nxt := session.next_request()) is not None:
            flight.append(nxt)
        for tag, req in flight:
            sent += 1
            assert sent <= max_requests, f"no end after {max_requests} requests"
            try:
                session.receive(tag, answer(req))
            except HeadSyncViolation as exc:
                assert session.failed and session.result.empty and session.pending_ranges == 0
                return exc
    return None


def violation(policy: Policy, **kw: Any) -> tuple[HeadSyncViolation | None, HeadSyncSession]:
    s = HeadSyncSession(LDiff(), "sp", **kw)
    return drive(s, liar(policy)), s


# --- one test per rule ---------------------------------------------------------------------
def test_sum_rule_children_must_add_up_to_their_parent() -> None:
    def policy(q: RangeQuery, anchor: bool) -> tuple[int, None]:
        return 1000, None  # the parent and each of its 16 children: 1000 objects
    exc, s = violation(policy)
    assert exc is not None and exc.rule == "sum"
    assert s.responses == 2 and s.ranges_queried == 1 + 17  # caught at the first split


def test_claim_rule_at_the_root() -> None:
    """The headline attack: 'differs, count 2^40'. Refused on the first answer: one request,
    nothing queued (it used to queue ~350 000 ranges a second)."""
    def policy(q: RangeQuery, anchor: bool) -> tuple[int, None]:
        return (1 << 40) >> q.bits, None  # consistent sums all the way down
    exc, s = violation(policy)
    assert exc is not None and exc.rule == "claim"
    assert s.responses == 1 and s.ranges_queried == 1


def test_claim_rule_below_the_root() -> None:
    def policy(q: RangeQuery, anchor: bool) -> tuple[int, None]:
        if q.bits == 0 and not anchor:
            return 1000, None  # a modest root claim ...
        return 1_000_000 >> q.bits, None  # ... then the parent grows to 10^6, sums consistent
    exc, s = violation(policy)
    assert exc is not None and exc.rule == "claim" and s.responses == 2


def test_enumerate_rule_a_small_range_must_be_listed() -> None:
    def policy(q: RangeQuery, anchor: bool) -> tuple[int, None] | None:
        if q.bits == 0 or anchor:
            return 40, None
        return {0: (5, None), 1: (35, None)}.get(q.prefix & 15)  # 5 <= 32 yet not listed
    exc, s = violation(policy)
    assert exc is not None and exc.rule == "enumerate" and s.responses == 2


def test_enumerate_rule_a_large_range_must_not_be_listed() -> None:
    def policy(q: RangeQuery, anchor: bool) -> tuple[int, list[bytes] | None] | None:
        if q.bits == 0 or anchor:
            return 40, None
        n = {0: 33, 1: 7}.get(q.prefix)  # 33 > threshold 32, listed instead of split
        return None if n is None else (n, made_up(q.bits, q.prefix, n))
    exc, _ = violation(policy)
    assert exc is not None and exc.rule == "enumerate"


@pytest.mark.parametrize("how", ["outside", "twice"])
def test_range_rule_listed_ids_lie_in_their_range_once(how: str) -> None:
    def policy(q: RangeQuery, anchor: bool) -> tuple[int, list[bytes] | None] | None:
        if q.bits == 0 or anchor:
            return 40, None
        if q.prefix not in (0, 1):
            return None
        ids = made_up(q.bits, q.prefix, 20)
        if q.prefix == 0:
            ids[-1] = bytes([0xFF]) * 32 if how == "outside" else ids[0]
        return 20, ids
    exc, _ = violation(policy)
    assert exc is not None and exc.rule == "range"


def test_depth_rule_no_split_below_what_the_claims_allow() -> None:
    """One chain of ranges each claiming 100 objects: consistent sums, but 100 random ids
    never need more than a few levels. Stopped at the budget's depth (32 bits here), long
    before the protocol's 64."""
    def policy(q: RangeQuery, anchor: bool) -> tuple[int, None] | None:
        return (100, None) if q.bits == 0 or anchor or q.prefix & 15 == 0 else None
    exc, s = violation(policy)
    assert exc is not None and exc.rule == "depth"
    assert s.budget is not None and s.budget.max_bits == 32 and s.responses == 1 + 32 // 4


def re_inflating(leaf: Callable[[RangeQuery], tuple[int, list[bytes] | None]],
                 levels: int) -> Policy:
    """Root 1000; every parent asked again claims 16 x its children, though a round earlier it
    claimed less (honest sets drift between rounds, so only the same-request sum is exact)."""
    def policy(q: RangeQuery, anchor: bool) -> tuple[int, list[bytes] | None]:
        if q.bits == 0 and not anchor:
            return 1000, None
        child_bits = q.bits + 4 if anchor else q.bits
        child = leaf(q) if child_bits > 4 * levels else (40, None)
        return (16 * child[0], None) if anchor else child
    return policy


def test_ranges_rule_total_work_is_capped() -> None:
    exc, s = violation(re_inflating(lambda q: (40, None), levels=99))
    assert exc is not None and exc.rule == "ranges"
    assert s.budget is not None and s.ranges_queried <= s.budget.max_ranges < 5000


def test_listed_rule_total_listed_ids_are_capped() -> None:
    def leaf(q: RangeQuery) -> tuple[int, list[bytes]]:
        return 32, made_up(q.bits, q.prefix, 32)
    exc, s = violation(re_inflating(leaf, levels=1))
    assert exc is not None and exc.rule == "listed"
    assert s.budget is not None and s.listed <= s.budget.objects  # nothing past the cap taken


# --- honest peers never trip the rules -----------------------------------------------------
def test_an_honest_set_changing_between_rounds_passes_the_exact_sum_rule() -> None:
    """The responder gains and loses objects between every answer, so a parent's count from
    one round differs from its children's next round; the children's sum is checked against
    the parent asked again in the same request, which is answered from one state."""
    rng = random.Random(7)
    items = [(rng.randbytes(32), rng.randbytes(32)) for _ in range(3000)]
    local, remote = LDiff(items[:1000]), LDiff(items)
    s = HeadSyncSession(local, "sp")
    claimed: dict[tuple[int, int], int] = {}
    drifted = 0

    def answer(req: HeadSyncRequest) -> HeadSyncResponse:
        nonlocal drifted
        for _ in range(40):  # the set changes between answers
            remote.set(rng.randbytes(32), rng.randbytes(32))
        for oid, _ in list(remote.items())[:3]:
            remote.remove(oid)
        resp = remote.answer(req)
        for r in resp.results:
            key = (r.bits, r.prefix)
            drifted += key in claimed and claimed[key] != r.count
            claimed[key] = r.count
        return resp

    assert drive(s, answer) is None
    assert drifted > 0  # parents really were re-asked with a different count
    assert len(s.result.remote_only) >= 1500


def test_honest_sessions_stay_far_inside_the_budget() -> None:
    rng = random.Random(8)
    items = [(rng.randbytes(32), rng.randbytes(32)) for _ in range(20_000)]
    s = HeadSyncSession(LDiff(), "sp")
    assert drive(s, LDiff(items).answer, max_requests=10_000) is None
    assert s.result.remote_only == {k for k, _ in items}
    assert s.budget is not None
    assert s.ranges_queried * 4 < s.budget.max_ranges and s.listed == len(items)


# --- switch-off proofs ---------------------------------------------------------------------
def _off(rule: str) -> Callable[[pytest.MonkeyPatch], None]:
    def switch(mp: pytest.MonkeyPatch) -> None:
        mp.setattr(HeadSyncSession, rule, lambda *a, **k: None)
    switch.__name__ = f"{rule}_off"
    return switch


@pytest.mark.parametrize(("rule", "guard"), [
    ("_rule_sum", test_sum_rule_children_must_add_up_to_their_parent),
    ("_rule_claim_root", test_claim_rule_at_the_root),
    ("_rule_claim", test_claim_rule_below_the_root),
    ("_rule_enumerate", test_enumerate_rule_a_small_range_must_be_listed),
    ("_rule_enumerate", test_enumerate_rule_a_large_range_must_not_be_listed),
    ("_rule_range", lambda: test_range_rule_listed_ids_lie_in_their_range_once("outside")),
    ("_rule_range", lambda: test_range_rule_listed_ids_lie_in_their_range_once("twice")),
    ("_rule_depth", test_depth_rule_no_split_below_what_the_claims_allow),
    ("_rule_ranges", test_ranges_rule_total_work_is_capped),
    ("_rule_listed", test_listed_rule_total_listed_ids_are_capped),
])
async def test_each_rule_bites(rule: str, guard: Callable[[], None]) -> None:
    await bites(guard, _off(rule))


# --- over a real engine link -----------------------------------------------------------------
async def test_a_member_breaking_head_sync_is_disconnected_and_nothing_it_listed_is_fetched(
        tmp_path: Path) -> None:
    """A real member of the space, over the memory carrier with the real handshake, answers
    head sync with children that do not add up: the engine (unchanged: it already turns a
    head-sync ProtocolError into a Violation) disconnects it at once, sends no fetch for the
    ids it listed alongside, and keeps nothing pending."""
    a, evil = node(tmp_path, "a"), node(tmp_path, "evil")
    assert a.replicas is not None
    space = a.replicas.create_space()
    doc = space.new_document()
    with doc.edit() as e:
        e.put(ROOT, "x", 1)
    raw, code = space.acl.invite(a.account, anyone_can_join=True)
    space.commit_acl(raw)
    space.commit_acl(space.acl.join(evil.account, code))

    def policy(q: RangeQuery, anchor: bool) -> tuple[int, list[bytes] | None] | None:
        if q.bits == 0 or anchor:
            return 1000, None
        if q.prefix == 0:
            return 32, made_up(q.bits, q.prefix, 32)  # listed, valid on its own ...
        return 40, None  # ... but 32 + 15 x 40 != 1000
    lie = liar(policy)

    def answer(msg: Any) -> Any:
        if isinstance(msg, HeadSyncRequest):
            return lie(msg)
        if isinstance(msg, AclSyncRequest):
            return AclSyncResponse(msg.space_id, msg.heads, (), False)
        return None

    async with lying_member(a, evil, space, answer,
                            config(strikes_to_close=10_000)) as (ea, peer):
        await asyncio.wait_for(ea.finished.wait(), 5)
        assert ea.last_error is not None and "protocol violation" in ea.last_error
        assert "head sync rule 'sum'" in ea.last_error
        assert not any(isinstance(m, FullSyncRequest) for m in peer.requests_seen)
        assert ea.state.space_state(space.id).pending == set()


def test_head_sync_violation_is_a_protocol_error() -> None:
    """The engine catches ProtocolError from the session; the typed error must stay one."""
    assert issubclass(HeadSyncViolation, ProtocolError)
