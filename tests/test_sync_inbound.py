"""The decisions the engine shell no longer makes, without sockets: the peer's request stream
through :meth:`Responder.receive` (exchange hello, gate, pushes, strikes, answers as
effects), the stranger restriction, job outcomes and the in-sync check (:mod:`sync.jobs`,
:meth:`SpaceState.confirm_push`).

The two-node version of the in-sync check over real loopback sockets is at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.errors import DecodeError
from p2psync.replica.document import ROOT
from p2psync.replica.space import Space
from p2psync.replica.tree import AddResult
from p2psync.sync import jobs
from p2psync.sync.effects import Answer, Befriend, Push, Serve, Submit
from p2psync.sync.limits import EngineConfig
from p2psync.sync.messages import (
    AclHeadUpdate,
    ErrorCode,
    ErrorMessage,
    HeadSyncRequest,
    HeadSyncResponse,
    HeadUpdate,
    RangeQuery,
    SpaceHello,
    SpaceOffer,
    SpaceTokens,
)
from p2psync.sync.peerstate import PeerState
from p2psync.sync.push import PushQueue, tree_pushes
from p2psync.sync.responder import Responder
from p2psync.sync.sched import PeerScheduler
from p2psync.sync.status import PushSnapshot
from tests.sync_helpers import close_all, converged, fast_config, make_node, wait_any
from tests.test_sync_cores import NOW, Dev, Pair, _Source, drive, joined, strikes
from tests.test_sync_cores import converged as devs_converged

CLOCK = 50.0  # monotonic time for the inbound gate


def _request(space_id: str) -> HeadSyncRequest:
    return HeadSyncRequest(space_id, 32, (RangeQuery(0, 0, bytes(32), 0),))


def _edit(space: Space, tid: bytes, key: str, value: int) -> None:
    with space.document(tid).edit() as e:
        e.put(ROOT, key, value)


# --- the peer's request stream -------------------------------------------------------------------
def test_hello_is_answered_with_tokens_once(tmp_path: Path) -> None:
    pair = Pair(Dev(tmp_path, "a"), Dev(tmp_path, "b"))
    r = Responder(pair.sa, _Source(), clock=CLOCK)
    r.hello()
    out = r.receive(SpaceHello(b"n" * 16), 0, NOW, CLOCK)
    assert len(out) == 1 and isinstance(out[0], Answer)
    assert isinstance(out[0].message, SpaceTokens) and out[0].request_id == 0
    assert pair.sa.their_nonce == b"n" * 16
    again = r.receive(SpaceHello(b"m" * 16), 7, NOW, CLOCK)
    assert strikes(again) and isinstance(again[-1], Answer) and again[-1].request_id == 7
    assert isinstance(again[-1].message, ErrorMessage)


def test_token_list_once_then_exchanged(tmp_path: Path) -> None:
    pair = Pair(Dev(tmp_path, "a"), Dev(tmp_path, "b"))
    r = Responder(pair.sa, _Source(), clock=CLOCK)
    r.hello()
    assert r.exchanged is None
    r.receive(SpaceHello(b"n" * 16), 0, NOW, CLOCK)
    assert r.tokens(SpaceTokens(())) == [] and r.exchanged == frozenset()
    assert strikes(r.tokens(SpaceTokens(())))  # a second list is a strike


def test_requests_pass_the_gate_duplicates_dropped_rate_limited(tmp_path: Path) -> None:
    _, _, pair, space = joined(tmp_path)
    cfg = EngineConfig(in_rate=1.0, in_burst=2.0)
    r = Responder(Pair(pair.a, pair.b, cfg).sa, _Source(), clock=CLOCK)
    req = _request(space.id)
    assert r.receive(req, 1, NOW, CLOCK) == [Serve(req, 1)]
    assert r.receive(req, 2, NOW, CLOCK) == []  # the same request is being answered
    r.served(req)
    assert r.receive(req, 3, NOW, CLOCK) == [Serve(req, 3)]
    r.served(req)
    out = r.receive(req, 4, NOW, CLOCK)  # the burst of 2 is spent
    assert len(out) == 1 and isinstance(out[0], Answer) and out[0].request_id == 4
    assert isinstance(out[0].message, ErrorMessage)
    assert out[0].message.code == ErrorCode.RATE_LIMITED and out[0].message.retry_after_ms


def test_an_answer_on_the_request_stream_is_a_strike_and_malformed(tmp_path: Path) -> None:
    _, _, pair, space = joined(tmp_path)
    out = pair.ra.receive(HeadSyncResponse(space.id, ()), 9, NOW, CLOCK)
    assert strikes(out)
    assert out[-1] == Answer(ErrorMessage(ErrorCode.MALFORMED, "not a request"), 9)


def test_undecodable_input_is_a_strike_and_an_error_answer(tmp_path: Path) -> None:
    pair = Pair(Dev(tmp_path, "a"), Dev(tmp_path, "b"))
    out = pair.ra.undecodable(DecodeError("junk"))
    assert strikes(out) and isinstance(out[1], Answer) and out[1].request_id == 0


def test_a_push_is_taken_in_before_its_follow_up(tmp_path: Path) -> None:
    a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    pushes = _pushes(pair.sa, space, tid, "y", 2)
    assert pushes
    rb = pair.rb
    for msg in pushes:
        assert rb.receive(msg, 0, NOW, CLOCK) == []
        assert rb.ingest is not None  # the engine takes it in before reading on
        rb.ingest.run()
        assert rb.ingested(NOW) == []
        assert rb.ingest is None
    assert devs_converged(a, b, space.id)


def test_a_push_from_a_stranger_to_the_space_is_a_strike(tmp_path: Path) -> None:
    _, _, _, space = joined(tmp_path)
    pair = Pair(Dev(tmp_path, "c"), Dev(tmp_path, "d"))
    out = pair.ra.receive(HeadUpdate(space.id, bytes(32), (), ()), 0, NOW, CLOCK)
    assert strikes(out) and pair.ra.ingest is None
    out = pair.ra.receive(AclHeadUpdate(space.id, (), ()), 0, NOW, CLOCK)
    assert strikes(out)


# --- the stranger restriction ------------------------------------------------------------------
def test_exchange_restricts_a_stranger_and_a_shared_space_lifts_it(tmp_path: Path) -> None:
    a, _, pair, space = joined(tmp_path)
    stranger = Pair(a, Dev(tmp_path, "c"))
    assert stranger.sa.exchanged([space.id]) == []  # not a member: no job, restricted
    assert stranger.sa.restricted
    assert stranger.sa.befriend() == []
    assert stranger.sa.befriend(force=True) == [Befriend()]
    assert not stranger.sa.restricted and stranger.sa.befriend(force=True) == []
    member = pair
    assert member.sa.exchanged([space.id]) == [Submit(("space", space.id, b""))]
    assert not member.sa.restricted
    # a restricted peer that pushes to a space it may access is lifted by that message
    member.sa.shared.clear()
    member.sa.restricted = True
    out = Responder(member.sa, _Source()).receive(HeadUpdate(space.id, bytes(32), (), ()), 0,
                                                  NOW, CLOCK)
    assert Befriend() in out


def test_offers_are_effects(tmp_path: Path) -> None:
    pair = Pair(Dev(tmp_path, "a"), Dev(tmp_path, "b"))
    out = pair.ra.receive(SpaceOffer("s.1"), 0, NOW, CLOCK)
    assert [type(e).__name__ for e in out] == ["Offered"]


# --- the in-sync check ---------------------------------------------------------------------------
def test_push_queue_asks_for_the_check_after_the_last_push_of_a_space() -> None:
    q = PushQueue(8)
    h1 = HeadUpdate("s.1", bytes(32), (), ())
    h2 = HeadUpdate("s.2", bytes(32), (), ())
    q.put(h1, "s.1")
    q.put(AclHeadUpdate("s.1", (), ()), "s.1")
    q.put(h2, "s.2")
    q.put(h1, "s.1")
    check1 = Submit(("heads", "s.1", b""), jobs.CHECK_PRIORITY, jobs.CHECK_SPACING)
    assert q.pop() == (h1, [])  # more of s.1 queued
    assert q.pop()[1] == []  # an ACL push is not a tree push
    assert q.pop() == (h2, [Submit(("heads", "s.2", b""), jobs.CHECK_PRIORITY,
                                   jobs.CHECK_SPACING)])
    assert q.pop() == (h1, [check1])


def test_a_spaced_job_runs_at_once_then_at_most_once_per_spacing() -> None:
    s: PeerScheduler[str] = PeerScheduler(now=0.0)
    s.submit("check", 0.0, 0, spacing=0.05)
    assert s.poll(0.0) == ["check"]  # the first at once
    for t in (0.01, 0.02, 0.03):  # a burst while it runs: one re-run
        assert s.submit("check", t, 0, spacing=0.05).name == "COALESCED"
    s.succeeded("check", 0.035)
    assert s.poll(0.04) == []  # not before 0.05 after the last start
    assert s.next_wakeup(0.04) == pytest.approx(0.05)
    assert s.poll(0.05) == ["check"]
    s.succeeded("check", 0.06)
    s.submit("check", 0.08, 0, spacing=0.05)  # queued, not yet due: later submits merge
    s.submit("check", 0.09, 0, spacing=0.05)
    assert s.poll(0.099) == [] and s.poll(0.1) == ["check"]
    s.succeeded("check", 0.11)
    s.submit("check", 0.5, 0, spacing=0.05)  # long after: at once again
    assert s.poll(0.5) == ["check"]
    s.submit("other", 0.5, 1)  # no spacing: at once, as before
    assert s.poll(0.5) == ["other"]


def test_head_check_skips_the_acl_pull_and_records_agreement(tmp_path: Path) -> None:
    a, _, pair, space = joined(tmp_path)
    core = jobs.core_for(pair.sb, _Source(), ("heads", space.id, b""))
    first = core.next_request()
    assert first is not None and isinstance(first[1], HeadSyncRequest)
    pair.sb.space_state(space.id).agreed_hash = None
    core = jobs.core_for(pair.sb, _Source(), ("heads", space.id, b""))
    drive(core, pair.ra)
    assert pair.sb.space_state(space.id).agreed_hash == a.replicas.ldiff(space.id).hash()


def test_a_push_that_leaves_us_with_its_heads_keeps_the_agreement(tmp_path: Path) -> None:
    a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    sid = space.id
    st = pair.sb.space_state(sid)
    drive(jobs.core_for(pair.sb, _Source(), ("heads", sid, b"")), pair.ra)
    assert st.agreed_hash == b.replicas.ldiff(sid).hash()  # b's head sync agreed
    (push,) = _pushes(pair.sa, space, tid, "y", 2)  # a edits and pushes to b
    _take(pair.rb, push)
    assert devs_converged(a, b, sid)
    assert st.agreed_hash == b.replicas.ldiff(sid).hash()  # in sync at once

    # b changed another tree meanwhile: the push proves nothing about that one
    other = b.replicas.spaces[sid].new_document()
    (push,) = _pushes(pair.sa, space, tid, "z", 3)
    before = PushSnapshot.take(b.replicas.ldiff(sid), tid)
    _edit(b.replicas.spaces[sid], other.tree.id, "k", 1)
    st.agreed_hash = before.total
    _take(pair.rb, push, before)
    assert st.agreed_hash == before.total != b.replicas.ldiff(sid).hash()


def test_follow_up_checks_are_bounded(tmp_path: Path) -> None:
    _, _, pair, space = joined(tmp_path)
    st = pair.sa.space_state(space.id)
    tree = ("tree", space.id, bytes(32))
    check = [Submit(("heads", space.id, b""), jobs.CHECK_PRIORITY)]
    got = []
    for _ in range(5):  # a peer whose head sync always differs, its pulls bringing nothing
        st.agreed_hash = None
        assert jobs.succeeded(pair.sa, ("heads", space.id, b""), NOW) == []
        got.append(jobs.succeeded(pair.sa, tree, NOW))
    assert got == [check] * jobs.MAX_RECHECKS + [[]] * (5 - jobs.MAX_RECHECKS)
    st.agreed_hash = b"x"  # agreement resets the count
    jobs.succeeded(pair.sa, ("heads", space.id, b""), NOW)
    st.agreed_hash = None
    jobs.succeeded(pair.sa, ("heads", space.id, b""), NOW)
    assert jobs.succeeded(pair.sa, tree, NOW) == check
    st.pending.add(bytes(32))  # not while pulls of that head sync are still pending
    st.differed = True
    assert jobs.succeeded(pair.sa, tree, NOW) == []


def _pushes(state: PeerState, space: Space, tid: bytes, key: str, value: int,
            ) -> list[HeadUpdate]:
    """Edit a tree and return what its listener would push to the peer of ``state``."""
    results: list[AddResult] = []
    space.tree_listeners.append(lambda _s, _t, res: results.append(res))
    try:
        _edit(space, tid, key, value)
    finally:
        space.tree_listeners.pop()
    return [e.message for res in results for e in tree_pushes(state, space, tid, res)
            if isinstance(e, Push) and isinstance(e.message, HeadUpdate)]


def _take(r: Responder, push: HeadUpdate, before: PushSnapshot | None = None) -> None:
    assert r.receive(push, 0, NOW, CLOCK) == []
    if before is not None:  # replace the snapshot receive took (a change lands in between)
        assert r._push is not None
        r._push = (push, before)
    assert r.ingest is not None
    r.ingest.run()
    r.ingested(NOW)


# --- two nodes on loopback -----------------------------------------------------------------------
NO_PERIODIC = 3600.0


async def test_a_peer_that_took_our_push_is_in_sync_at_once(tmp_path: Path) -> None:
    """With the periodic head sync off, both sides show each other in sync right after an
    edit: the pusher by the check its push is followed by, the receiver because the push left
    it with exactly the announced heads."""
    cfg = fast_config(head_sync_interval=NO_PERIODIC)
    a = await make_node(tmp_path, "a", config=cfg)
    b = await make_node(tmp_path, "b", config=fast_config(head_sync_interval=NO_PERIODIC))
    try:
        space = a.create_space()
        await b.join(a.invite(space.id))

        def both_in_sync() -> bool:
            return converged([a, b], space.id) and all(
                n.status().spaces[0].peers_in_sync == 1 for n in (a, b))

        await wait_any([a, b], both_in_sync)
        doc = space.new_document()
        for i in range(3):
            with doc.edit() as e:
                e.put(ROOT, "k", i)
            assert not both_in_sync()  # our fingerprint moved on
            await wait_any([a, b], both_in_sync, timeout=10)
        hs = sum(e.traffic.get(("in", "HEAD_SYNC_REQUEST"), [0])[0] for e in b.engines)
        assert hs >= 3  # b answered a check after each push
    finally:
        await close_all([a, b])
