"""The sync side's security decisions, at unit level: what mutation testing of the responder,
ingest, access checks, inbound gate, member limits and backup quotas found unguarded
(``scripts/mutation.py sync``; docs/testing.md, round 5). Each test names the decision it pins.

Built on the sans-IO pairs of ``tests/test_sync_cores.py``: two devices with real stores whose
responders answer each other in one thread, no sockets.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

from p2psync.backup.config import Quotas
from p2psync.backup.quota import Tally as QuotaTally
from p2psync.backup.quota import Usage
from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import AccountKey
from p2psync.errors import (
    AccessDenied,
    DecodeError,
    InvalidChange,
    MemberLimitExceeded,
    QuotaExceeded,
    ReplicaError,
    StoreError,
    UnknownReadKey,
)
from p2psync.replica.acl import Acl
from p2psync.replica.acl_gate import OwnerOnlyAcl
from p2psync.replica.acl_records import Role
from p2psync.replica.change import build_change
from p2psync.replica.document import ROOT, encode_payload
from p2psync.replica.header import SpaceHeader
from p2psync.replica.space import Space
from p2psync.replica.tree import AddResult
from p2psync.sync.bootstrap import BootstrapJoin
from p2psync.sync.effects import Answer, Befriend, Push, Serve, Strike, Submit
from p2psync.sync.ingest import Ingest
from p2psync.sync.limits import EngineConfig
from p2psync.sync.memberlimits import MemberLimits, MemberUsage
from p2psync.sync.messages import (
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
    RangeQuery,
    ReceiptRequest,
    SpaceTokens,
    StorageRefused,
)
from p2psync.sync.pull import TreePull
from p2psync.sync.replicas import DevicePolicy
from p2psync.sync.responder import Responder
from p2psync.sync.sched import Admission, InboundGate, TokenBucket
from p2psync.sync.spacex import SpaceExchange
from tests.test_sync_cores import NOW, Dev, Pair, _Source, drive, joined, strikes

CLOCK = 50.0  #: monotonic time for the inbound gate


def _request(space_id: str, n: int = 0) -> HeadSyncRequest:
    """A head-sync request; ``n`` makes distinct requests (the gate drops duplicates)."""
    return HeadSyncRequest(space_id, 32 + n, (RangeQuery(0, 0, bytes(32), 0),))


class _Recorder:
    """A pusher that records what it was asked to push (to see who is echoed to)."""

    def __init__(self) -> None:
        self.trees: list[bytes] = []
        self.acl: list[bytes] = []

    def push_tree(self, space: Space, tree_id: bytes, result: AddResult) -> None:
        self.trees.append(tree_id)

    def push_acl(self, space: Space, record_ids: list[bytes]) -> None:
        self.acl += record_ids


def _change(dev: Dev, space: Space, tid: bytes, prev: tuple[bytes, ...], *,
            acl_head: bytes | None = None) -> Any:
    """A change by ``dev`` (a member holding the space) on ``tid``."""
    held = dev.replicas.spaces[space.id]
    key = held.acl.read_key(held.acl.state.current_key_id)
    assert key is not None
    return build_change(dev.account, key, encode_payload([], []), space_id=space.id,
                        tree_id=tid, prev_ids=prev,
                        acl_head=held.acl.heads[-1] if acl_head is None else acl_head,
                        read_key_id=held.acl.state.current_key_id)


# --- the inbound gate: the configured limits, not the gate's defaults ---------------------------
def test_the_gate_refills_at_the_configured_rate(tmp_path: Path) -> None:
    """``in_rate`` is what refills the peer's bucket (the gate's own default is 100/s)."""
    _, _, pair, space = joined(tmp_path)
    cfg = EngineConfig(in_rate=1.0, in_burst=1.0)
    r = Responder(Pair(pair.a, pair.b, cfg).sa, _Source(), clock=CLOCK)
    req = _request(space.id)
    assert r.receive(req, 1, NOW, CLOCK) == [Serve(req, 1)]
    r.served(req)
    empty = r.receive(req, 9, NOW, CLOCK)  # the bucket is empty: one token at 1/s
    assert isinstance(empty[0], Answer) and isinstance(empty[0].message, ErrorMessage)
    assert empty[0].message.retry_after_ms == 1001  # a second in ms, rounded up
    out = r.receive(req, 2, NOW, CLOCK + 0.5)  # half a token back at 1/s: still refused
    assert len(out) == 1 and isinstance(out[0], Answer)
    assert isinstance(out[0].message, ErrorMessage)
    assert out[0].message.code == ErrorCode.RATE_LIMITED
    assert out[0].message.retry_after_ms == 501  # the other half at 1/s, rounded up
    assert r.receive(req, 3, NOW, CLOCK + 1.0) == [Serve(req, 3)]


def test_the_gate_caps_concurrent_requests_at_the_configured_number(tmp_path: Path) -> None:
    """``in_concurrency`` bounds the peer's requests in progress (the gate's default is 16)."""
    _, _, pair, space = joined(tmp_path)
    cfg = EngineConfig(in_concurrency=2)
    r = Responder(Pair(pair.a, pair.b, cfg).sa, _Source(), clock=CLOCK)
    first, second, third = (_request(space.id, n) for n in range(3))
    assert r.receive(first, 1, NOW, CLOCK) == [Serve(first, 1)]
    assert r.receive(second, 2, NOW, CLOCK) == [Serve(second, 2)]
    out = r.receive(third, 3, NOW, CLOCK)
    assert len(out) == 1 and isinstance(out[0], Answer) and out[0].request_id == 3
    assert isinstance(out[0].message, ErrorMessage)
    assert out[0].message.code == ErrorCode.RATE_LIMITED
    r.served(first)
    assert r.receive(third, 4, NOW, CLOCK) == [Serve(third, 4)]


# --- the space exchange: tokens bound to this connection --------------------------------------
def _exchange_with(pair: Pair, b: Dev, binding: bytes) -> frozenset[str] | None:
    """``a``'s responder runs the exchange against a hand-made exchange of ``b`` using
    ``binding``; the spaces ``a`` then finds shared."""
    r = pair.ra
    ours = r.hello()
    theirs = SpaceExchange(b.device.public, pair.a.device.public,
                           b.replicas.exchange_keys_for(pair.a.account.public),
                           channel_binding=binding)
    their_hello = theirs.start()
    (answer,) = r.receive(their_hello, 0, NOW, CLOCK)
    assert isinstance(answer, Answer) and isinstance(answer.message, SpaceTokens)
    replies = theirs.receive(ours)
    theirs.receive(answer.message)
    tokens = [m for m in replies if isinstance(m, SpaceTokens)]
    assert len(tokens) == 1
    assert r.tokens(tokens[0]) == []
    return r.exchanged


def test_the_space_exchange_binds_its_tokens_to_the_channel(tmp_path: Path) -> None:
    """Our hello's exchange uses the connection's channel binding: a peer on this channel
    finds the shared space, tokens made for another channel find nothing."""
    a, b, _pair, space = joined(tmp_path)
    pair = Pair(a, b)
    assert _exchange_with(pair, b, pair.sa.binding) == frozenset({space.id})
    other = Pair(a, b)
    assert _exchange_with(other, b, os.urandom(32)) == frozenset()


# --- pushes ------------------------------------------------------------------------------------
def test_a_push_is_not_echoed_to_the_peer_it_came_from(tmp_path: Path) -> None:
    """The responder applies a push as coming from its engine (``source``): every other
    connection is told, the pushing one is not."""
    a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    engine, other = _Recorder(), _Recorder()
    a.replicas.pushers += [engine, other]
    r = Responder(pair.sa, engine, clock=CLOCK)
    ch = _change(b, space, tid, space.heads(tid))
    assert r.receive(HeadUpdate(space.id, tid, (ch.id,), (ch.raw,)), 0, NOW, CLOCK) == []
    assert r.ingest is not None
    r.ingest.run()
    r.ingested(NOW)
    assert ch.id in space.tree(tid)
    assert other.trees == [tid] and engine.trees == []
    # the same for changes a full-sync request carries (taken in before it is answered)
    ch2 = _change(b, space, tid, space.heads(tid))
    ing = r.prepare(FullSyncRequest(space.id, tid, (), (), (ch2.raw,), 1 << 20))
    assert ing is not None
    ing.run()
    assert ch2.id in space.tree(tid)
    assert other.trees == [tid, tid] and engine.trees == []
    # and ACL records it pushes
    before = set(space.acl_records())
    bs = b.replicas.spaces[space.id]
    bs.emit_acl(lambda acl: acl.leave(b.account))
    raws = [x for x in bs.acl_records() if x not in before]
    out = r.receive(AclHeadUpdate(space.id, tuple(bs.acl.heads), tuple(raws)), 0, NOW, CLOCK)
    assert out == [Submit(("space", space.id, b""), 2)]  # new ACL state: sync the space
    assert len(raws) == 1 and other.acl == [space.acl.heads[-1]] and engine.acl == []


def test_a_push_naming_an_unknown_acl_head_makes_us_pull_the_acl(tmp_path: Path) -> None:
    """What the ingest learnt (a change waits for an ACL record we lack) reaches the
    follow-up: an ACL pull and a tree pull, even when the push's heads are all held."""
    _a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    ch = _change(b, space, tid, space.heads(tid), acl_head=os.urandom(32))
    msg = HeadUpdate(space.id, tid, tuple(space.heads(tid)), (ch.raw,))
    r = pair.ra
    assert r.receive(msg, 0, NOW, CLOCK) == []
    assert r.ingest is not None
    r.ingest.run()
    assert r.ingest.unknown_acl
    out = r.ingested(NOW)
    assert Submit(("acl", space.id, b""), 0) in out
    assert Submit(("tree", space.id, tid), 1) in out
    assert ch.id not in space.tree(tid)



# --- what a peer makes us store: the storage policy sees every batch ---------------------------
def test_a_snapshot_first_base_passes_the_storage_policy(tmp_path: Path) -> None:
    """The shallow base (root + snapshot) of a snapshot-first fetch is admitted by the storage
    policy like any batch: over the member limits, nothing of the tree is stored."""
    _a, b, pair, space = joined(tmp_path)  # b holds the space's first document
    doc = space.new_document()
    doc.snapshot_policy = None
    for j in range(6):
        with doc.edit() as e:
            e.put(ROOT, f"k{j}", j)
    assert doc.snapshot() is not None
    with doc.edit() as e:
        e.put(ROOT, "after", 1)
    tid = doc.tree.id
    b.replicas.policy = DevicePolicy(MemberLimits(space_documents=1))
    out = drive(TreePull(pair.sb, _Source(), space.id, tid), pair.ra)
    assert strikes(out) == []
    assert not b.replicas.spaces[space.id].has_tree(tid)
    assert "space document limit" in (pair.sb.space_state(space.id).last_error or "")
    # without the limit the same fetch takes the snapshot as a shallow base
    b.replicas.policy = DevicePolicy()
    drive(TreePull(pair.sb, _Source(), space.id, tid), pair.ra)
    held = b.replicas.spaces[space.id].tree(tid)
    assert held.shallow and held.heads == doc.tree.heads
    # a peer that does not ask for the snapshot (a backup) gets the whole history
    whole = pair.ra.answer(FullSyncRequest(space.id, tid, (), (), (), 1 << 20), NOW).message
    assert isinstance(whole, FullSyncResponse) and not whole.more
    assert len(whole.changes) == len(doc.tree.changes()) > len(held.changes())


# --- backup quotas (backup/quota.py: mutmut skips its dataclass, mutated by hand) ---------------
def test_backup_quotas_hold_at_their_exact_limits() -> None:
    """Each of the four quotas admits a batch that reaches it exactly and refuses one byte or
    change more, per space and per owner account (summed over the owner's spaces)."""
    u = Usage(Quotas(space_bytes=100, space_changes=4, account_bytes=120, account_changes=5))
    u.add_space("s.1", b"A", 40, 1)
    u.add_space("s.2", b"A", 50, 2)
    u.add_space("s.1", b"B", 999, 999)  # registered once: a second call changes nothing
    u.add_space("s.3", b"B")
    assert u.owner_of == {"s.1": b"A", "s.2": b"A", "s.3": b"B"}
    assert u.spaces["s.1"] == QuotaTally(40, 1) and u.spaces["s.3"] == QuotaTally(0, 0)
    assert u.owners == {b"A": QuotaTally(90, 3), b"B": QuotaTally(0, 0)}
    u.check("s.1", 30, 2)  # owner A reaches 120 bytes and 5 changes exactly
    u.check("s.3", 100, 4)  # space s.3 reaches 100 bytes and 4 changes exactly
    for sid, size, n, what in (("s.1", 31, 0, "account byte"), ("s.1", 0, 3, "account change"),
                               ("s.3", 101, 0, "space byte"), ("s.3", 0, 5, "space change"),
                               ("s.9", 101, 0, "space byte")):
        with pytest.raises(QuotaExceeded, match=f"backup {what} quota"):
            u.check(sid, size, n)
    assert u.refusals == 5
    with pytest.raises(QuotaExceeded) as exc:
        u.check("s.3", 101, 0)
    assert str(exc.value).startswith("backup space byte quota: 0 + 101 would exceed 100;")
    Usage(Quotas()).check("s.1", 1 << 40, 1 << 30)  # 0 = unlimited


def test_backup_usage_counts_what_is_stored_per_space_and_owner() -> None:
    u = Usage(Quotas(account_changes=4))
    u.add_space("s.1", b"A", 10, 1)
    u.add_space("s.2", b"A", 20, 2)
    u.stored("s.1", 5, 1)
    assert u.spaces["s.1"] == QuotaTally(15, 2) and u.owners[b"A"] == QuotaTally(35, 4)
    with pytest.raises(QuotaExceeded, match="account change"):
        u.check("s.2", 0, 1)  # the owner's changes in both spaces count
    u.stored("s.2", -20, -2)  # a deletion frees the owner's quota
    assert u.spaces["s.2"] == QuotaTally(0, 0) and u.owners[b"A"] == QuotaTally(15, 2)
    u.check("s.2", 0, 2)
    u.stored("s.9", 7, 3)  # a space not registered: counted for itself, no owner
    assert u.spaces["s.9"] == QuotaTally(7, 3) and u.owners == {b"A": QuotaTally(15, 2)}
    assert u.total == QuotaTally(22, 5)


# --- the one refusal --------------------------------------------------------------------------
def test_a_refused_request_gets_the_one_unknown_space_answer(tmp_path: Path) -> None:
    """Every request about a space the peer may not access is answered exactly
    ``ERROR(UNKNOWN_SPACE, "unknown space")``, the answer for a space that does not exist."""
    a, s = Dev(tmp_path, "a"), Dev(tmp_path, "s")
    space = a.replicas.create_space()
    tid = space.new_document().tree.id
    pair = Pair(a, s)
    refusal = ErrorMessage(ErrorCode.UNKNOWN_SPACE, "unknown space")
    for sid in (space.id, "doesnotexist.1"):
        for req in (_request(sid), FullSyncRequest(sid, tid, (), (), (), 1 << 20),
                    AclSyncRequest(sid, (), (), 1 << 20), BootstrapRequest(sid, None, None, 9),
                    ReceiptRequest(sid, bytes(32))):
            reply = pair.ra.answer(req, NOW)
            assert reply.message == refusal, req
            assert reply.effects == ()  # no strike: asking is not misbehaviour


def test_how_a_failed_request_is_answered(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer's fault (bad input) is a strike and a typed error; our disk's fault and our
    own bugs are ``INTERNAL`` without a strike (and say nothing about our internals)."""
    _a, _b, pair, space = joined(tmp_path)
    req = _request(space.id)

    def failing(exc: Exception) -> None:
        def ldiff(_sid: str) -> Any:
            raise exc
        monkeypatch.setattr(pair.a.replicas, "ldiff", ldiff)

    for exc, code, text in ((DecodeError("bad bytes"), ErrorCode.MALFORMED, "bad bytes"),
                            (AccessDenied("no writes"), ErrorCode.ACCESS_DENIED, "no writes")):
        failing(exc)
        reply = pair.ra.answer(req, NOW)
        assert reply.message == ErrorMessage(code, text)
        assert reply.effects == (Strike(f"request failed: {exc}"),)
    for exc in (StoreError("disk full at /secret/path"), RuntimeError("a bug of ours")):
        failing(exc)
        reply = pair.ra.answer(req, NOW)
        assert reply.message == ErrorMessage(ErrorCode.INTERNAL)
        assert reply.effects == ()


def test_a_member_that_proved_an_invite_is_no_longer_counted_as_invited(
        tmp_path: Path) -> None:
    """Once the ACL makes the invitee a member, its first request moves the space from
    ``invited`` (ACL access through the invite) to ``shared``."""
    a, b = Dev(tmp_path, "a"), Dev(tmp_path, "b")
    space = a.replicas.create_space()
    raw, code = space.acl.invite(a.account, Role.WRITER, anyone_can_join=False)
    space.commit_acl(raw)
    pair = Pair(a, b)
    assert drive(BootstrapJoin(pair.sb, _Source(), space.id, code), pair.ra) == []
    assert pair.sa.invited == {space.id: code.invite_id}
    (request,) = space.acl.pending_requests()
    space.emit_acl(lambda acl: acl.accept(a.account, request.record_id))
    assert not isinstance(pair.ra.answer(_request(space.id), NOW).message, ErrorMessage)
    assert pair.sa.invited == {} and pair.sa.shared == {space.id}


def test_a_full_sync_batch_is_capped_by_the_peer_and_by_us(tmp_path: Path) -> None:
    """``max_bytes`` of a request bounds the answer (0: our ``batch_bytes``), and our own
    ``batch_bytes`` bounds it whatever the peer asks."""
    a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    for j in range(3):
        with space.document(tid).edit() as e:
            e.put(ROOT, "j", j)
    n = len(space.tree(tid).changes())

    def batch(r: Responder, max_bytes: int) -> tuple[int, bool]:
        reply = r.answer(FullSyncRequest(space.id, tid, (), (), (), max_bytes), NOW).message
        assert isinstance(reply, FullSyncResponse)
        return len(reply.changes), reply.more

    assert batch(pair.ra, 1) == (1, True)  # the peer's cap (one change always goes)
    assert batch(pair.ra, 0) == (n, False)  # no cap asked: ours, 1 MiB
    assert batch(pair.ra, 1 << 20) == (n, False)
    small = Pair(a, b, EngineConfig(batch_bytes=1))
    assert batch(small.ra, 1 << 20) == (1, True)  # ours wins
    # an object we do not hold: an empty, final answer (not an error)
    absent = os.urandom(32)
    reply = pair.ra.answer(FullSyncRequest(space.id, absent, (), (), (), 0), NOW).message
    assert reply == FullSyncResponse(space.id, absent, (), (), False)


# --- adopting a space from a peer: verified before the storage policy is asked ----------------
class _AskedPolicy(DevicePolicy):
    """The default policy, recording what ``admit_space`` was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, bytes, bytes]] = []

    def admit_space(self, space_id: str, header: SpaceHeader, acl: Acl) -> None:
        self.asked.append((space_id, header.owner, acl.root_id))


def test_adopting_a_space_verifies_header_and_acl_before_the_policy_is_asked(
        tmp_path: Path) -> None:
    a, b = Dev(tmp_path, "a"), Dev(tmp_path, "b")
    space, other = a.replicas.create_space(), a.replicas.create_space()
    policy = _AskedPolicy()
    b.replicas.policy = policy
    forged = Acl.create(space.id, AccountKey.generate()).export()  # rooted by a stranger
    for header, acl in ((other.header.raw, space.acl_records()),  # another space's header
                        (space.header.raw, forged),
                        (space.header.raw, other.acl_records())):  # another space's ACL
        with pytest.raises(ReplicaError):
            b.replicas.adopt(space.id, header, acl)
        assert policy.asked == [] and space.id not in b.replicas.spaces
    held = b.replicas.adopt(space.id, space.header.raw, space.acl_records())
    assert policy.asked == [(space.id, a.account.public, space.acl.root_id)]
    assert held.acl.root_id == space.acl.root_id and b.replicas.spaces[space.id] is held
    # a space held already is returned as it is: not rebuilt from what a peer sent again
    assert b.replicas.adopt(space.id, space.header.raw, space.acl_records()) is held
    assert len(policy.asked) == 1


# --- the member limits count only what is new -------------------------------------------------
def test_member_limits_do_not_count_changes_already_held(tmp_path: Path) -> None:
    """A batch re-sending what we hold plus one new change passes a limit with room for one
    (the tree named by the batch is what is looked up)."""
    _a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    held = [c.raw for c in space.tree(tid).changes()]
    pair.a.replicas.policy = DevicePolicy(MemberLimits(space_changes=len(held) + 1))
    ch = _change(b, space, tid, space.heads(tid))
    pair.a.replicas.apply_changes(_Source(), space, tid, [*held, ch.raw])
    assert ch.id in space.tree(tid)
    more = _change(b, space, tid, space.heads(tid))
    with pytest.raises(QuotaExceeded, match="space change limit"):
        pair.a.replicas.apply_changes(_Source(), space, tid, [more.raw])


# --- the placeholder gate of tree-only tests --------------------------------------------------
def test_the_owner_only_gate_admits_only_the_owner_at_its_one_record() -> None:
    owner, root = os.urandom(32), os.urandom(32)
    key = ReadKey.generate()
    gate = OwnerOnlyAcl(owner, root, key)
    gate.check_change(owner, root, root, [root])
    for author, head, kid, parents, err in (
            (owner, os.urandom(32), root, [root], InvalidChange),
            (owner, root, root, [root, os.urandom(32)], InvalidChange),
            (os.urandom(32), root, root, [root], AccessDenied),
            (owner, root, os.urandom(32), [root], UnknownReadKey)):
        with pytest.raises(err):
            gate.check_change(author, head, kid, parents)
    assert gate.knows_head(root) and not gate.knows_head(owner)
    assert gate.read_key(root) is key and gate.read_key(owner) is None
    assert OwnerOnlyAcl(owner, root, None).read_key(root) is None
    assert gate.write_position(owner) == (root, root)
    assert gate.removed_after(owner, root) is None


# --- ACL sync: what is served, and what an invitee may push -----------------------------------
def test_acl_sync_serves_the_records_the_peer_lacks_within_its_cap(tmp_path: Path) -> None:
    """A member's ACL pull gets every record its heads lack (removals and rotations travel
    this way too), at most ``max_bytes`` of them per answer."""
    a, b, pair, space = joined(tmp_path)
    heads = tuple(space.acl.heads)
    space.emit_acl(lambda acl: acl.rotate(a.account))
    space.emit_acl(lambda acl: acl.change_permission(a.account, b.account.public, Role.READER))
    new = [r for r in space.acl_records() if r not in set(
        b.replicas.spaces[space.id].acl_records())]
    assert len(new) == 2
    reply = pair.ra.answer(AclSyncRequest(space.id, heads, (), 1 << 20), NOW).message
    assert isinstance(reply, AclSyncResponse) and not reply.more
    assert sorted(reply.records) == sorted(new) and reply.heads == tuple(space.acl.heads)
    one = pair.ra.answer(AclSyncRequest(space.id, heads, (), 1), NOW).message
    assert isinstance(one, AclSyncResponse) and len(one.records) == 1 and one.more
    none = pair.ra.answer(AclSyncRequest(space.id, tuple(space.acl.heads), (), 1), NOW).message
    assert isinstance(none, AclSyncResponse) and none.records == () and not none.more


def test_an_invitee_cannot_join_through_an_invite_that_has_expired(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An invitee (proved an open approval invite, request pending) pushes a join through
    another, anyone-can-join invite that has expired, back-dated to before the expiry (the
    ACL judges a record by its own timestamp): refused with a strike, by ACL sync and by ACL
    push alike — the push is judged at the time it arrives."""
    a, b = Dev(tmp_path, "a"), Dev(tmp_path, "b")
    space = a.replicas.create_space()
    raw, code = space.acl.invite(a.account, Role.WRITER, anyone_can_join=False)
    space.commit_acl(raw)
    raw2, code2 = space.acl.invite(a.account, Role.READER, anyone_can_join=True,
                                   expires_at=int(NOW) + 10)
    space.commit_acl(raw2)
    pair = Pair(a, b)
    assert drive(BootstrapJoin(pair.sb, _Source(), space.id, code), pair.ra) == []
    late = NOW + 20
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: NOW)  # the record's timestamp: before the expiry
        join = b.replicas.spaces[space.id].acl.join(b.account, code2)
    heads = tuple(space.acl.heads)
    reply = pair.ra.answer(AclSyncRequest(space.id, heads, (join,), 1 << 20), late)
    assert isinstance(reply.message, AclSyncResponse)
    assert [s for s in strikes(list(reply.effects)) if "expired" in s]
    out = pair.ra.receive(AclHeadUpdate(space.id, heads, (join,)), 0, late, CLOCK)
    assert [s for s in strikes(out) if "expired" in s]
    assert b.account.public not in space.acl.state.members
    # before the expiry the same join is taken: the invite was open then
    pair.ra.receive(AclHeadUpdate(space.id, heads, (join,)), 0, NOW, CLOCK)
    assert space.acl.state.members.get(b.account.public) == Role.READER


# --- bootstrap: what a member and an invitee are given ----------------------------------------
def test_bootstrap_pages_object_ids_to_members_only(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A member's bootstrap lists the space's object ids in ascending pages of
    ``max_objects`` (capped at ``MAX_OBJECT_PAGE``), ``next_after`` continuing a full page;
    the header comes with the first page only. An invitee gets the header and ACL, no ids."""
    from p2psync.sync import responder

    a, _b, pair, space = joined(tmp_path)
    for _ in range(4):
        space.new_document()
    ids = sorted(space.tree_ids())
    assert len(ids) == 5

    def page(after: bytes | None, n: int) -> BootstrapResponse:
        reply = pair.ra.answer(BootstrapRequest(space.id, None, after, n), NOW).message
        assert isinstance(reply, BootstrapResponse)
        return reply

    first = page(None, 2)
    assert first.header == space.header.raw and first.acl_records
    assert first.object_ids == tuple(ids[:2]) and first.next_after == ids[1]
    second = page(first.next_after, 2)
    assert second.header is None
    assert second.object_ids == tuple(ids[2:4]) and second.next_after == ids[3]
    last = page(second.next_after, 2)
    assert last.object_ids == (ids[4],) and last.next_after is None
    assert page(None, 9).object_ids == tuple(ids) and page(None, 9).next_after is None
    assert page(None, 0).object_ids == ()
    monkeypatch.setattr(responder, "MAX_OBJECT_PAGE", 3)
    capped = page(None, 4)
    assert capped.object_ids == tuple(ids[:3]) and capped.next_after is None
    # an invitee (an approval invite, not a member yet)
    c = Dev(tmp_path, "c")
    raw, code = space.acl.invite(a.account, Role.WRITER, anyone_can_join=False)
    space.commit_acl(raw)
    invitee = Pair(a, c)
    boot = BootstrapJoin(invitee.sb, _Source(), space.id, code)
    nxt = boot.next_request()
    assert nxt is not None and isinstance(nxt[1], BootstrapRequest)
    asking = BootstrapRequest(space.id, nxt[1].proof, None, 9)  # its proof, asking for ids
    reply = invitee.ra.answer(asking, NOW).message
    assert isinstance(reply, BootstrapResponse)
    assert reply.header == space.header.raw and reply.acl_records
    assert reply.object_ids == () and reply.next_after is None


def test_an_acl_push_with_gaps_makes_us_pull_the_acl(tmp_path: Path) -> None:
    """An ACL push whose records wait for parents we lack, or whose heads we do not know,
    is followed by an ACL pull (a removal or rotation must not wait for the next sync)."""
    a, b, pair, space = joined(tmp_path)
    copy = Acl.from_records(space.id, space.acl_records(), me=a.account,
                            owner=a.account.public)
    copy.rotate(a.account)
    child = copy.change_permission(a.account, b.account.public, Role.READER)
    pull = Submit(("acl", space.id, b""), 0)
    out = pair.ra.receive(AclHeadUpdate(space.id, (), (child,)), 0, NOW, CLOCK)
    assert out == [pull]  # waits for its parent
    out = pair.ra.receive(AclHeadUpdate(space.id, (os.urandom(32),), ()), 0, NOW, CLOCK)
    assert out == [pull]  # a head we do not know
    assert pair.ra.receive(AclHeadUpdate(space.id, tuple(space.acl.heads), ()), 0, NOW,
                           CLOCK) == []


def test_a_push_never_starts_a_shallow_tree(tmp_path: Path) -> None:
    """Only a snapshot-first answer we asked for may start a tree at a snapshot: a pushed
    batch that opens with a root and a snapshot whose parents we lack stores nothing."""
    _a, b, pair, space = joined(tmp_path)
    doc = space.new_document()
    doc.snapshot_policy = None
    for j in range(4):
        with doc.edit() as e:
            e.put(ROOT, f"k{j}", j)
    snap = doc.snapshot()
    assert snap is not None
    tid = doc.tree.id
    msg = HeadUpdate(space.id, tid, (snap.id,), (doc.tree.root.raw, snap.raw))
    ing, out = pair.rb.head_update(msg)
    assert out == [] and ing is not None
    ing.run()
    held = b.replicas.spaces[space.id]
    assert ing.missing and not ing.based
    assert held.has_tree(tid) and not held.tree(tid).shallow and snap.id not in held.tree(tid)
    # one change at a time when asked so
    raws = [c.raw for c in doc.tree.changes()]
    one = Ingest(pair.sb, _Source(), held, tid, raws, chunk=1)
    stored = []
    while not one.done:
        before = len(held.tree(tid).changes())
        one.step()
        stored.append(len(held.tree(tid).changes()) - before)
    assert set(stored) == {1}


def test_a_bad_change_in_a_batch_is_a_strike_and_the_rest_is_still_taken(
        tmp_path: Path) -> None:
    """Each unparseable change, or one for another object, is one strike; the batch's good
    changes after it are still stored."""
    _a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    other = space.new_document().tree.id
    wrong = _change(b, space, other, space.heads(other))
    good = _change(b, space, tid, space.heads(tid))
    ing = Ingest(pair.sa, _Source(), space, tid, [b"\xc1junk", wrong.raw, good.raw])
    out = ing.run()
    assert [type(e) for e in out] == [Strike, Strike]
    assert strikes(out)[0].startswith("unparseable change: ")
    assert strikes(out)[1] == "change for another object"
    assert good.id in space.tree(tid) and wrong.id not in space.tree(other)


# --- which spaces the exchange lists to a peer ------------------------------------------------
def test_the_exchange_lists_a_space_to_members_and_removed_members_only(
        tmp_path: Path) -> None:
    """Exchange keys (so tokens) for a space go to its members and replicators, and to an
    account removed from it (so it learns why); a stranger gets none, nor does a member that
    left on its own."""
    a = Dev(tmp_path, "a")
    space = a.replicas.create_space()
    other = a.replicas.create_space()
    member, removed, left, stranger = (AccountKey.generate() for _ in range(4))
    raw, code = space.acl.invite(a.account, Role.WRITER, anyone_can_join=True)
    space.commit_acl(raw)
    for acct in (member, removed, left):
        space.commit_acl(space.acl.join(acct, code))
    space.emit_acl(lambda acl: acl.remove(a.account, [removed.public]))
    space.commit_acl(space.acl.leave(left))
    keys = a.replicas.exchange_keys_for
    assert set(keys(member.public)) == {space.id}
    assert set(keys(removed.public)) == {space.id}
    assert keys(left.public) == {} and keys(stranger.public) == {}
    assert set(keys(a.account.public)) == {space.id, other.id}


# --- the token bucket and the inbound gate (sync/sched.py) -------------------------------------
def test_the_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    for rate, burst in ((0.0, 1.0), (1.0, 0.0), (-1.0, 1.0), (1.0, -1.0)):
        with pytest.raises(ValueError):
            TokenBucket(rate, burst, 0.0)
    b = TokenBucket(2.0, 1.0, 10.0)  # a burst of one is allowed; starts full
    assert b.wait_time(10.0) == 0.0
    assert b.try_take(10.0) and not b.try_take(10.0)
    assert b.wait_time(10.0) == 0.5 and b.wait_time(10.25) == 0.25
    assert b.wait_time(10.0, cost=2.0) == math.inf  # more than the burst: never
    assert not b.try_take(10.25)  # half a token
    assert b.try_take(10.5)
    assert not b.try_take(5.0)  # a clock going backwards adds nothing …
    assert b.wait_time(5.0) == 0.5
    assert b.try_take(11.0)  # … and takes nothing away: 0.5 s at 2/s since 10.5
    big = TokenBucket(1.0, 3.0, 0.0)
    assert big.try_take(0.0, cost=2.0) and not big.try_take(0.0, cost=2.0)
    assert big.try_take(100.0, cost=3.0) and not big.try_take(100.0)  # capped at the burst


def test_the_inbound_gate_drops_duplicates_and_limits_concurrency_and_rate() -> None:
    g: InboundGate[str] = InboundGate(now=0.0, rate=1.0, burst=3.0, max_concurrent=2)
    assert g.admit("a", 0.0) is Admission.ACCEPT
    assert g.admit("a", 0.0) is Admission.DUPLICATE
    assert g.admit("b", 0.0) is Admission.ACCEPT
    assert g.admit("c", 0.0) is Admission.BUSY
    g.finished("a")
    assert g.admit("c", 0.0) is Admission.ACCEPT
    g.finished("b")
    g.finished("c")
    assert g.admit("d", 0.0) is Admission.RATE_LIMITED  # three taken, none back yet
    assert g.refused == 3
    assert g.retry_after(0.0) == 1.0 and g.retry_after(0.5) == 0.5
    assert g.retry_after(0.0, cost=9.0) == 1.0  # never possible: "try in a second"
    assert g.admit("d", 1.0) is Admission.ACCEPT
    assert g.admit("d", 1.0) is Admission.DUPLICATE
    assert g.refused == 4  # every refusal counted
    g.finished("d")
    assert g.admit("e", 2.0, cost=2.0) is Admission.RATE_LIMITED  # one token back, two asked
    assert g.admit("e", 2.0) is Admission.ACCEPT


# --- member limits (sync/memberlimits.py): each limit, per space and per author ----------------
def test_member_limits_hold_at_their_exact_limits_per_space_and_per_author(
        tmp_path: Path) -> None:
    """Every limit admits a batch that reaches it exactly and refuses one more; authors are
    counted apart (what the store held at start and what was stored since); held and
    unparseable changes in a batch are skipped, not the rest of the batch after them."""
    a, b, _pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    held = space.tree(tid).changes()
    n0, bytes0 = len(held), sum(len(c.raw) for c in held)
    assert {c.author for c in held} == {a.account.public}
    prev: tuple[bytes, ...] = tuple(space.heads(tid))
    chain = []
    for _ in range(3):
        ch = _change(b, space, tid, prev)
        chain.append(ch)
        prev = (ch.id,)
    raws = [c.raw for c in chain]
    size = sum(map(len, raws))

    def verdict(limits: MemberLimits, batch: list[bytes], tree: bytes = tid) -> str | None:
        u = MemberUsage(limits)
        try:
            u.check(space, tree, batch)
        except MemberLimitExceeded as exc:
            assert u.refusals == 1 and u.last_refusal == {space.id: str(exc).split(": ")[1]
                                                          .removesuffix(" reached")}
            return str(exc)
        assert u.refusals == 0 and u.last_refusal == {}
        return None

    for ok, over, what in (
            (MemberLimits(space_changes=n0 + 3), MemberLimits(space_changes=n0 + 2),
             f"space change limit ({n0 + 2})"),
            (MemberLimits(space_bytes=bytes0 + size), MemberLimits(space_bytes=bytes0 + size - 1),
             f"space byte limit ({bytes0 + size - 1})"),
            (MemberLimits(author_changes=3), MemberLimits(author_changes=2),
             "author change limit (2)"),
            (MemberLimits(author_bytes=size), MemberLimits(author_bytes=size - 1),
             f"author byte limit ({size - 1})")):
        assert verdict(ok, raws) is None
        assert verdict(over, raws) == f"this device refuses more: {what} reached"
    # held changes and junk are skipped, the new change after them still counts
    tight = MemberLimits(space_changes=n0)
    assert verdict(tight, [*(c.raw for c in held), raws[0]]) is not None
    assert verdict(MemberLimits(space_changes=n0 + 1), [*(c.raw for c in held), raws[0]]) \
        is None
    assert verdict(tight, [b"\xc1junk", raws[0]]) is not None
    # what the store held at start counts for its author (a), not for b
    assert verdict(MemberLimits(author_changes=n0), [_change(a, space, tid, prev).raw]) \
        is not None
    assert verdict(MemberLimits(author_changes=3), raws) is None
    # what is stored later counts too, for its author
    u = MemberUsage(MemberLimits(author_changes=3, author_bytes=size + 10_000))
    u.watch(space)
    space.add_changes(tid, raws)
    assert u.spaces[space.id].changes == n0 + 3
    assert u.authors[(space.id, b.account.public)].changes == 3
    with pytest.raises(MemberLimitExceeded, match="author change limit"):
        u.check(space, tid, [_change(b, space, tid, space.heads(tid)).raw])
    # documents: per space and per author
    root = space.new_document().tree.root  # a's second document, held
    doc_b = _root_by(b, space)
    assert verdict(MemberLimits(space_documents=3), [doc_b.raw], doc_b.id) is None
    assert verdict(MemberLimits(space_documents=2), [doc_b.raw], doc_b.id) is not None
    assert verdict(MemberLimits(author_documents=1), [doc_b.raw], doc_b.id) is None
    assert root.author == a.account.public
    assert verdict(MemberLimits(author_documents=2),
                   [_root_by(a, space).raw], doc_b.id) is not None


def _root_by(dev: Dev, space: Space) -> Any:
    """A new document's root change by ``dev`` (not stored)."""
    held = dev.replicas.spaces[space.id]
    kid = held.acl.state.current_key_id
    key = held.acl.read_key(kid)
    assert key is not None
    return build_change(dev.account, key, encode_payload([], []), space_id=space.id,
                        tree_id=None, prev_ids=(), acl_head=held.acl.heads[-1],
                        read_key_id=kid)


# --- mutsync2: the ingest's store refusals, the shallow base and the pull after a push ----------
def _stranger_change(tmp_path: Path, space: Space, tid: bytes) -> Any:
    """A well-formed change on ``tid`` signed by an account that is no member of ``space``."""
    c = Dev(tmp_path, "c")
    kid = space.acl.state.current_key_id
    key = space.acl.read_key(kid)
    assert key is not None
    return build_change(c.account, key, encode_payload([], []), space_id=space.id,
                        tree_id=tid, prev_ids=tuple(space.heads(tid)),
                        acl_head=space.acl.heads[-1], read_key_id=kid)


def test_the_first_chunk_the_store_refuses_ends_the_batch(tmp_path: Path) -> None:
    """A chunk the store refuses (a non-member's change) is one strike and ends the batch: the
    rest is not verified nor stored, and a quota refusal is one ``StorageRefused`` push (to
    the pushing space's queue), counted once."""
    a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    bad = _stranger_change(tmp_path, space, tid)
    good = _change(b, space, tid, space.heads(tid))
    ing = Ingest(pair.sa, _Source(), space, tid, [bad.raw, good.raw], chunk=1)
    out = ing.step()
    assert len(strikes(out)) == 1 and strikes(out)[0].startswith("changes refused: ")
    assert ing.done and ing.refused
    assert ing.run() == [] and bad.id not in space.tree(tid) and good.id not in space.tree(tid)
    # the quota path: the first chunk over the member limits ends the batch with one push
    held = len(space.tree(tid).changes())
    a.replicas.policy = DevicePolicy(MemberLimits(space_changes=held + 1))
    c1 = _change(b, space, tid, space.heads(tid))
    c2 = _change(b, space, tid, (c1.id,))
    c3 = _change(b, space, tid, (c2.id,))
    ing = Ingest(pair.sa, _Source(), space, tid, [c1.raw, c2.raw, c3.raw], chunk=1)
    out = ing.run()
    assert len(out) == 1 and isinstance(out[0], Push) and out[0].space_id == space.id
    msg = out[0].message
    assert isinstance(msg, StorageRefused) and msg.code == ErrorCode.QUOTA_EXCEEDED
    assert ing.refused and pair.sa.quota_refusals == 1
    assert c1.id in space.tree(tid) and c2.id not in space.tree(tid)
    assert (pair.sa.space_state(space.id).last_error or "").startswith("MemberLimitExceeded")
    again = Ingest(pair.sa, _Source(), space, tid, [c2.raw])
    assert len(again.run()) == 1 and pair.sa.quota_refusals == 2  # counted per refusal


def _snapshotted(space: Space) -> tuple[bytes, Any]:
    """A new document of ``space`` whose last change is a snapshot (tree id, snapshot)."""
    doc = space.new_document()
    doc.snapshot_policy = None
    for j in range(4):
        with doc.edit() as e:
            e.put(ROOT, f"k{j}", j)
    snap = doc.snapshot()
    assert snap is not None
    return doc.tree.id, snap


def test_a_shallow_base_is_taken_only_from_a_root_and_a_snapshot(tmp_path: Path) -> None:
    """A snapshot-first answer of exactly root + snapshot starts a shallow tree (not echoed to
    the engine it came from); a base that is no snapshot is one strike and ends the batch
    with nothing stored; a batch opening with another tree's root is the ordinary filter's
    "another object" strike, not a base attempt."""
    _a, b, pair, space = joined(tmp_path)
    tid, snap = _snapshotted(space)
    root = space.tree(tid).root
    held = b.replicas.spaces[space.id]
    src, other = _Recorder(), _Recorder()
    b.replicas.pushers += [src, other]
    ing = Ingest(pair.sb, src, held, tid, [root.raw, snap.raw], base_first=True)
    assert ing.run() == [] and ing.based
    assert held.tree(tid).shallow and tuple(held.tree(tid).heads) == (snap.id,)
    assert other.trees == [tid] and src.trees == []
    # a base that is an ordinary change (its parent is not the root, it is no snapshot)
    tid2, _snap2 = _snapshotted(space)
    changes = space.tree(tid2).changes()
    mid = next(c for c in changes if not c.is_root and c.prev_ids != (tid2,))
    ing = Ingest(pair.sb, _Source(), held, tid2, [changes[0].raw, mid.raw], base_first=True)
    out = ing.step()
    assert len(strikes(out)) == 1 and strikes(out)[0].startswith("shallow base refused: ")
    assert ing.done and not ing.based and not held.has_tree(tid2)
    assert (pair.sb.space_state(space.id).last_error or "").startswith("shallow base refused")
    # another tree's root first: not a base; the filter strikes it, the snapshot is missing
    tid3, snap3 = _snapshotted(space)
    ing = Ingest(pair.sb, _Source(), held, tid3, [root.raw, snap3.raw], base_first=True)
    out = ing.run()
    assert strikes(out) == ["change for another object"] and ing.missing
    assert not ing.refused and not held.has_tree(tid3)


def test_a_base_over_the_member_limits_ends_the_batch_quietly(tmp_path: Path) -> None:
    """A shallow base the storage policy refuses ends the batch at once: no strike (not
    misbehaviour) and no second try of the same changes through the ordinary path."""
    _a, b, pair, space = joined(tmp_path)
    tid, snap = _snapshotted(space)
    b.replicas.policy = DevicePolicy(MemberLimits(space_documents=1))
    held = b.replicas.spaces[space.id]
    raws = [space.tree(tid).root.raw, snap.raw]
    ing = Ingest(pair.sb, _Source(), held, tid, raws, base_first=True)
    assert ing.step() == [] and ing.done and ing.refused
    assert pair.sb.quota_refusals == 0 and not held.has_tree(tid)


def test_a_push_makes_us_pull_what_its_heads_show_we_lack(tmp_path: Path) -> None:
    """After a push: a tree we lack, a head we lack, or a change whose parents we lack makes a
    tree pull (priority 1); heads all held make none; the stuck rule stops it at
    ``max_stuck`` pulls, counting from zero for a tree never pulled."""
    _a, _b, pair, space = joined(tmp_path)
    r, sid = pair.ra, space.id
    tid = space.tree_ids()[0]
    pull = [Submit(("tree", sid, tid), 1)]
    new = os.urandom(32)
    assert r.head_update_done(HeadUpdate(sid, new, (os.urandom(32),), ()), None) == [
        Submit(("tree", sid, new), 1)]
    assert r.head_update_done(HeadUpdate(sid, new, (), ()), None) == []
    assert r.head_update_done(HeadUpdate(sid, tid, (os.urandom(32),), ()), None) == pull
    heads = tuple(space.heads(tid))
    assert r.head_update_done(HeadUpdate(sid, tid, heads, ()), None) == []
    orphan = _change(_b, space, tid, (os.urandom(32),))
    msg = HeadUpdate(sid, tid, heads, (orphan.raw,))
    ing, _ = r.head_update(msg)
    assert ing is not None
    ing.run()
    assert ing.missing and r.head_update_done(msg, ing) == pull
    r.state.config = dataclasses.replace(r.state.config, max_stuck=1)
    lacking = HeadUpdate(sid, tid, (os.urandom(32),), ())
    assert r.head_update_done(lacking, None) == pull
    r.state.stuck[(sid, tid)] = 1
    assert r.head_update_done(lacking, None) == []


# --- the stranger restriction and ``allowed`` (PeerState: a dataclass, mutated by hand) ---------
def test_the_stranger_restriction_is_lifted_by_sharing_only(tmp_path: Path) -> None:
    """A restricted stranger stays restricted when some ACL changes but it is still no member
    of anything here; an invite it proves lifts it; a member is lifted when the ACL changed."""
    a, _b, pair, space = joined(tmp_path)
    stranger = Pair(a, Dev(tmp_path, "c")).sa
    assert stranger.exchanged([space.id]) == [] and stranger.restricted
    assert stranger.befriend(acl_changed=True) == [] and stranger.restricted
    stranger.invited[space.id] = os.urandom(32)
    assert stranger.befriend() == [Befriend()] and not stranger.restricted
    member = pair.sa
    member.shared.clear()
    member.restricted = True
    assert member.befriend(acl_changed=True) == [Befriend()] and not member.restricted


def test_only_spaces_the_exchange_found_and_our_acl_allows_are_synced(tmp_path: Path) -> None:
    """``allowed`` (what our pulls sync with this peer) needs both: the space in ``shared`` and
    the peer's access by our ACL; the exchange adds exactly the accessible spaces it found."""
    _a, _b, pair, space = joined(tmp_path)
    st = pair.sa
    st.shared.clear()
    assert st.allowed(space.id) is None  # accessible, but not shared on this connection
    assert st.exchanged([space.id, "s.unknown"]) == [Submit(("space", space.id, b""))]
    assert st.shared == {space.id} and st.allowed(space.id) is space


def test_a_created_space_keeps_its_type(tmp_path: Path) -> None:
    """The space type (which document type, hence which validation, its documents get) is
    signed into the header of a space created through the replicas."""
    dev = Dev(tmp_path, "a")
    assert dev.replicas.create_space("x-custom").header.space_type == "x-custom"
    assert dev.replicas.create_space().header.space_type == "default"
