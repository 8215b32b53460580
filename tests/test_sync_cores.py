"""The sans-IO sync cores without sockets: responder, pulls, bootstrap, ingest, push queue.

Two devices with real stores talk through their :class:`Responder` objects directly: a
requester core's requests are answered by the other side's responder in the same thread, and
the effects are collected and checked. Includes the hostile cases of test_hostile.py and
test_access.py (strangers, bad proofs, forged and orphan changes, liars, head-sync poisoning).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2psync.codec import pack
from p2psync.crypto import AccountKey, DeviceKey
from p2psync.errors import PeerRefused, ProtocolError
from p2psync.replica.acl_records import Role
from p2psync.replica.change import build_change
from p2psync.replica.document import ROOT, encode_payload
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from p2psync.replica.tree import AddResult
from p2psync.sync.bootstrap import BootstrapJoin
from p2psync.sync.effects import Effect, Push, Strike, Submit, Violation
from p2psync.sync.ingest import Ingest
from p2psync.sync.limits import EngineConfig
from p2psync.sync.messages import (
    AclSyncRequest,
    BootstrapRequest,
    ErrorCode,
    ErrorMessage,
    FullSyncRequest,
    FullSyncResponse,
    HeadSyncRequest,
    HeadSyncResponse,
    HeadUpdate,
    Message,
    RangeQuery,
    RangeResult,
    SpaceOffer,
)
from p2psync.sync.peerstate import PeerState
from p2psync.sync.pull import AclPull, Core, SpaceSync, TreePull
from p2psync.sync.push import PushQueue
from p2psync.sync.replicas import Replicas
from p2psync.sync.responder import Responder

NOW = 1_000.0


class _Source:
    """Stands in for the engine as the source of applied input (nothing is pushed)."""

    def push_tree(self, space: Space, tree_id: bytes, result: AddResult) -> None:
        pass

    def push_acl(self, space: Space, record_ids: list[bytes]) -> None:
        pass


class Dev:
    """One device: account, device key, a non-durable store and its replicas."""

    def __init__(self, tmp: Path, name: str, account: AccountKey | None = None) -> None:
        self.account = account or AccountKey.generate()
        self.device = DeviceKey.generate()
        self.store = Store(tmp / f"{name}.sqlite3", durable=False)
        self.replicas = Replicas(self.store, self.account, self.device)


class Pair:
    """``a``'s view of ``b`` and ``b``'s view of ``a`` as on one connection (same binding,
    each side's hello nonce known to the other), each with its responder."""

    def __init__(self, a: Dev, b: Dev, config: EngineConfig | None = None) -> None:
        cfg = config or EngineConfig()
        binding = os.urandom(32)
        self.a, self.b = a, b
        self.sa = PeerState(a.replicas, cfg, b.account.public, b.device.public, binding)
        self.sb = PeerState(b.replicas, cfg, a.account.public, a.device.public, binding)
        self.sa.my_nonce = self.sb.their_nonce = os.urandom(16)
        self.sb.my_nonce = self.sa.their_nonce = os.urandom(16)
        self.ra = Responder(self.sa, _Source())
        self.rb = Responder(self.sb, _Source())


def ask(responder: Responder, req: Message) -> tuple[Message, list[Effect]]:
    """One request answered by ``responder`` (with the changes it carries taken in first)."""
    effects: list[Effect] = []
    ing = responder.prepare(req)
    if ing is not None:
        effects += ing.run()
    reply = responder.answer(req, NOW)
    return reply.message, effects + list(reply.effects)


def drive(core: Core, peer: Responder, *, answer: Callable[[Message], Message] | None = None,
          ) -> list[Effect]:
    """Run ``core`` against ``peer`` (or a hand-written ``answer``) until done."""
    out: list[Effect] = []
    for _ in range(10_000):
        if core.done:
            break
        if core.ingest is not None:
            out += core.ingest.run()
            out += core.ingested(NOW)
        else:
            batch = []
            while (nxt := core.next_request()) is not None:
                batch.append(nxt)
            assert batch, "core stalled"
            for tag, req in batch:
                msg = answer(req) if answer is not None else ask(peer, req)[0]
                if isinstance(msg, ErrorMessage):
                    raise PeerRefused(msg.message, int(msg.code), None)
                out += core.receive(tag, msg, NOW)
        if core.error is not None:
            raise core.error
    assert core.done
    return out


def run_jobs(state: PeerState, peer: Responder, effects: list[Effect]) -> list[Effect]:
    """Carry out Submit effects (as the engine's scheduler would), returning all others."""
    rest: list[Effect] = []
    todo = list(effects)
    seen = 0
    while todo:
        eff = todo.pop(0)
        seen += 1
        assert seen < 10_000
        if not isinstance(eff, Submit):
            rest.append(eff)
            continue
        kind, sid, tid = eff.key
        src = _Source()
        core: Core = (SpaceSync(state, src, sid) if kind == "space" else
                      AclPull(state, src, sid) if kind == "acl" else TreePull(state, src, sid, tid))
        todo += drive(core, peer)
    return rest


def joined(tmp: Path, role: Role = Role.WRITER) -> tuple[Dev, Dev, Pair, Space]:
    """Owner ``a`` with a space holding one document; ``b`` joins it by invite (cores only)."""
    a, b = Dev(tmp, "a"), Dev(tmp, "b")
    space = a.replicas.create_space()
    doc = space.new_document()
    with doc.edit() as e:
        e.put(ROOT, "x", 1)
    raw, code = space.acl.invite(a.account, role, anyone_can_join=True)
    space.commit_acl(raw)
    pair = Pair(a, b)
    boot = BootstrapJoin(pair.sb, _Source(), space.id, code)
    effects = drive(boot, pair.ra)
    assert boot.space is not None
    assert run_jobs(pair.sb, pair.ra, effects) == []
    return a, b, pair, space


def converged(a: Dev, b: Dev, space_id: str) -> bool:
    return a.replicas.ldiff(space_id).hash() == b.replicas.ldiff(space_id).hash()


def strikes(effects: list[Effect]) -> list[str]:
    return [e.why for e in effects if isinstance(e, Strike)]


# --- bootstrap and pulls --------------------------------------------------------------------------
def test_invite_bootstrap_then_space_sync_converges(tmp_path: Path) -> None:
    a, b, pair, space = joined(tmp_path)
    assert converged(a, b, space.id)
    tid = space.tree_ids()[0]
    assert b.replicas.spaces[space.id].document(tid).to_json() == {"x": 1}
    assert pair.sa.shared == {space.id} and pair.sb.shared == {space.id}
    st = pair.sb.space_state(space.id)
    assert st.last_head_sync == NOW and st.pending == set()
    # b edits; a's tree pull brings it back, and a's head sync afterwards agrees
    with b.replicas.spaces[space.id].document(tid).edit() as e:
        e.put(ROOT, "y", 2)
    assert run_jobs(pair.sa, pair.rb, [Submit(("space", space.id, b""))]) == []
    assert converged(a, b, space.id)
    assert pair.sa.space_state(space.id).agreed_hash is None  # it found a difference
    run_jobs(pair.sa, pair.rb, [Submit(("space", space.id, b""))])
    assert pair.sa.space_state(space.id).agreed_hash == a.replicas.ldiff(space.id).hash()


def test_tree_pull_pushes_what_the_peer_lacks(tmp_path: Path) -> None:
    a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    with space.document(tid).edit() as e:
        e.put(ROOT, "a", 1)
    with b.replicas.spaces[space.id].document(tid).edit() as e:
        e.put(ROOT, "b", 1)
    effects = drive(TreePull(pair.sb, _Source(), space.id, tid), pair.ra)
    pushes = [e.message for e in effects if isinstance(e, Push)]
    assert pushes and all(isinstance(m, HeadUpdate) for m in pushes)
    for m in pushes:  # delivered to a as pushes: a now has b's edit too
        ing, eff = pair.ra.head_update(m)  # type: ignore[arg-type]
        assert eff == [] and ing is not None
        assert ing.run() == []
    assert converged(a, b, space.id)


def test_bootstrap_without_code_is_refused_to_a_non_member(tmp_path: Path) -> None:
    a, b = Dev(tmp_path, "a"), Dev(tmp_path, "b")
    space = a.replicas.create_space()
    pair = Pair(a, b)
    with pytest.raises(PeerRefused) as exc:
        drive(BootstrapJoin(pair.sb, _Source(), space.id, None), pair.ra)
    assert exc.value.code == ErrorCode.UNKNOWN_SPACE
    assert space.id not in b.replicas.spaces and pair.sa.shared == set()


def test_bootstrap_proof_is_bound_to_the_session(tmp_path: Path) -> None:
    a, b = Dev(tmp_path, "a"), Dev(tmp_path, "b")
    space = a.replicas.create_space()
    raw, code = space.acl.invite(a.account, Role.WRITER)
    space.commit_acl(raw)
    pair = Pair(a, b)
    boot = BootstrapJoin(pair.sb, _Source(), space.id, code)
    tag_req = boot.next_request()
    assert tag_req is not None
    req = tag_req[1]
    # replayed on another connection (other nonce and binding): refused like a made-up space
    other = Pair(a, b)
    replay, _ = ask(other.ra, req)
    fake, _ = ask(other.ra, BootstrapRequest("made-up.1", req.proof, None, 0))  # type: ignore
    assert replay == fake and isinstance(replay, ErrorMessage)
    assert replay.code == ErrorCode.UNKNOWN_SPACE and other.sa.invited == {}
    # a junk proof and a proof by the wrong key: the same refusal
    junk, _ = ask(pair.ra, BootstrapRequest(space.id, pack([bytes(32), bytes(64)]), None, 0))
    garbage, _ = ask(pair.ra, BootstrapRequest(space.id, b"\xc1", None, 0))
    assert junk == garbage == replay
    # revoked invite: the joiner gets a JoinError
    space.commit_acl(space.acl.revoke_invite(a.account, code.invite_id))
    with pytest.raises(PeerRefused):
        drive(BootstrapJoin(pair.sb, _Source(), space.id, code), pair.ra)


def test_invitee_gets_acl_access_only(tmp_path: Path) -> None:
    a, b = Dev(tmp_path, "a"), Dev(tmp_path, "b")
    space = a.replicas.create_space()
    space.new_document()
    raw, code = space.acl.invite(a.account, Role.WRITER, anyone_can_join=False)
    space.commit_acl(raw)
    pair = Pair(a, b)
    boot = BootstrapJoin(pair.sb, _Source(), space.id, code)
    effects = drive(boot, pair.ra)
    assert effects == []  # a join request, not a member yet: no space sync scheduled
    assert pair.sa.invited == {space.id: code.invite_id}
    head, _ = ask(pair.ra, HeadSyncRequest(space.id, 32, (RangeQuery(0, 0, bytes(32), 0),)))
    assert isinstance(head, ErrorMessage) and head.code == ErrorCode.UNKNOWN_SPACE
    acl, _ = ask(pair.ra, AclSyncRequest(space.id, (), (), 1 << 20))
    assert not isinstance(acl, ErrorMessage)  # the ACL is served while the invite is open
    space.commit_acl(space.acl.revoke_invite(a.account, code.invite_id))
    acl, _ = ask(pair.ra, AclSyncRequest(space.id, (), (), 1 << 20))
    assert isinstance(acl, ErrorMessage) and acl.code == ErrorCode.UNKNOWN_SPACE


# --- access (test_access.py without sockets) ------------------------------------------------------
def test_stranger_gets_identical_refusals_and_strikes_for_pushes(tmp_path: Path) -> None:
    a, s = Dev(tmp_path, "a"), Dev(tmp_path, "s")
    space = a.replicas.create_space()
    doc = space.new_document()
    tid = doc.tree.id
    pair = Pair(a, s)
    assert pair.sa.is_stranger()

    def probes(sid: str) -> list[Message]:
        return [HeadSyncRequest(sid, 32, (RangeQuery(0, 0, bytes(32), 0),)),
                FullSyncRequest(sid, tid, (), (), (), 1 << 20),
                AclSyncRequest(sid, (), (), 1 << 20),
                BootstrapRequest(sid, None, None, 100),
                BootstrapRequest(sid, pack([bytes(32), bytes(64)]), None, 100)]

    real = [ask(pair.ra, m)[0] for m in probes(space.id)]
    fake = [ask(pair.ra, m)[0] for m in probes("doesnotexist.1")]
    assert real == fake
    assert all(isinstance(r, ErrorMessage) and r.code == ErrorCode.UNKNOWN_SPACE for r in real)
    ing, eff = pair.ra.head_update(HeadUpdate(space.id, tid, (tid,), ()))
    assert ing is None and strikes(eff) == ["push for a space the peer may not access"]
    assert pair.sa.shared == set() and pair.sa.is_stranger()


def test_reader_write_is_refused_with_a_strike(tmp_path: Path) -> None:
    _a, b, pair, space = joined(tmp_path, Role.READER)
    bs = b.replicas.spaces[space.id]
    tid = space.tree_ids()[0]
    st = bs.acl.state
    key = bs.acl.read_key(st.current_key_id)
    assert key is not None
    forged = build_change(b.account, key, encode_payload([], []), space_id=space.id,
                          tree_id=tid, prev_ids=bs.heads(tid), acl_head=bs.acl.heads[-1],
                          read_key_id=st.current_key_id)
    ing, eff = pair.ra.head_update(HeadUpdate(space.id, tid, (forged.id,), (forged.raw,)))
    assert eff == [] and ing is not None
    out = ing.run()
    assert any("AccessDenied" in w for w in strikes(out))
    ans, eff2 = ask(pair.ra, FullSyncRequest(space.id, tid, (), (), (forged.raw,), 1 << 20))
    assert isinstance(ans, FullSyncResponse)  # served (a member) …
    assert any("AccessDenied" in w for w in strikes(eff2))
    assert forged.id not in space.tree(tid)  # … but its write refused
    assert "changes refused" in (pair.sa.space_state(space.id).last_error or "")


def test_removed_member_is_refused_and_not_pushed_to(tmp_path: Path) -> None:
    a, b, pair, space = joined(tmp_path)
    space.emit_acl(lambda acl: acl.remove(a.account, [b.account.public]))
    ans, _ = ask(pair.ra, HeadSyncRequest(space.id, 32, (RangeQuery(0, 0, bytes(32), 0),)))
    assert isinstance(ans, ErrorMessage) and ans.code == ErrorCode.UNKNOWN_SPACE
    assert pair.sa.allowed(space.id) is None
    from p2psync.sync.push import may_push
    assert not may_push(pair.sa, space.id)
    assert SpaceSync(pair.sa, _Source(), space.id).done  # nothing to sync with it any more


# --- hostile insider (test_hostile.py without sockets) --------------------------------------------
def _evil_change(b: Dev, space: Space, tid: bytes, prev: tuple[bytes, ...], n: int = 0) -> Any:
    bs = b.replicas.spaces[space.id]
    key = bs.acl.read_key(bs.acl.state.current_key_id)
    assert key is not None
    return build_change(b.account, key, encode_payload([], [b"x" * n]), space_id=space.id,
                        tree_id=tid, prev_ids=prev, acl_head=bs.acl.heads[-1],
                        read_key_id=bs.acl.state.current_key_id)


def test_bad_signature_and_wrong_tree_are_struck_and_not_stored(tmp_path: Path) -> None:
    _a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    good = _evil_change(b, space, tid, space.heads(tid))
    bad = good.raw[:-1] + bytes([good.raw[-1] ^ 1])
    ing, _ = pair.ra.head_update(HeadUpdate(space.id, tid, (good.id,), (bad, b"\xc1junk")))
    assert ing is not None
    out = ing.run()
    assert len(strikes(out)) >= 1
    assert good.id not in space.tree(tid)
    other = space.new_document().tree.id
    ing, _ = pair.ra.head_update(HeadUpdate(space.id, other, (), (good.raw,)))
    assert ing is not None and strikes(ing.run()) == ["change for another object"]


def test_orphans_are_dropped_and_pulls_are_bounded_by_the_stuck_rule(tmp_path: Path) -> None:
    _a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    max_stuck = pair.sa.config.max_stuck

    def liar(req: Message) -> Message:
        assert isinstance(req, FullSyncRequest)
        return FullSyncResponse(req.space_id, req.object_id, (os.urandom(32),), (), False)

    pulls = 0
    for _ in range(50):
        orphan = _evil_change(b, space, tid, (os.urandom(32),))
        msg = HeadUpdate(space.id, tid, (orphan.id,), (orphan.raw,))
        ing, _ = pair.ra.head_update(msg)
        assert ing is not None and ing.run() == [] and ing.missing
        for eff in pair.ra.head_update_done(msg, ing):
            if eff == Submit(("tree", space.id, tid), 1):
                pulls += 1
                drive(TreePull(pair.sa, _Source(), space.id, tid), pair.rb, answer=liar)
        assert orphan.id not in space.tree(tid)
    assert pulls == max_stuck
    assert space.tree(tid).waiting_ids == []
    assert pair.sa.stuck[(space.id, tid)] == max_stuck


def test_full_sync_without_progress_fails_the_job(tmp_path: Path) -> None:
    _a, _b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]

    def stall(req: Message) -> Message:
        assert isinstance(req, FullSyncRequest)
        return FullSyncResponse(req.space_id, req.object_id, (os.urandom(32),), (), True)

    with pytest.raises(ProtocolError, match="no progress"):
        drive(TreePull(pair.sa, _Source(), space.id, tid), pair.rb, answer=stall)

    def other_object(req: Message) -> Message:
        assert isinstance(req, FullSyncRequest)
        return FullSyncResponse(req.space_id, os.urandom(32), (), (), False)

    core = TreePull(pair.sa, _Source(), space.id, tid)
    with pytest.raises(ProtocolError, match="another object"):
        drive(core, pair.rb, answer=other_object)


def test_head_sync_poisoning_is_a_violation_and_its_claims_are_discarded(tmp_path: Path) -> None:
    _a, _b, pair, space = joined(tmp_path)
    core = SpaceSync(pair.sa, _Source(), space.id)

    def poison(req: Message) -> Message:
        if isinstance(req, HeadSyncRequest):  # a result for a range that was not asked
            return HeadSyncResponse(req.space_id, (RangeResult(
                8, 0xAB, os.urandom(32), 1 << 40, ((os.urandom(32), os.urandom(32)),)),))
        return ask(pair.rb, req)[0]

    with pytest.raises(ProtocolError):
        drive(core, pair.rb, answer=poison)
    assert core.error is not None and core.done
    # step by step: the poisoned answer yields exactly one Violation and no tree jobs
    core = SpaceSync(pair.sa, _Source(), space.id)
    while core.session is None:  # the ACL pull comes first
        nxt = core.next_request()
        assert nxt is not None
        core.receive(nxt[0], ask(pair.rb, nxt[1])[0], NOW)
    nxt = core.next_request()
    assert nxt is not None
    effects = core.receive(nxt[0], poison(nxt[1]), NOW)
    assert [type(e) for e in effects] == [Violation]
    assert core.done and isinstance(core.error, ProtocolError)
    assert pair.sa.space_state(space.id).pending == set()
    assert pair.sa.space_state(space.id).last_head_sync is None


# --- ingest, push queue, backup notices -----------------------------------------------------------
def test_ingest_stores_a_big_batch_a_chunk_at_a_time(tmp_path: Path) -> None:
    _a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    raws, prev = [], space.heads(tid)
    for _ in range(100):
        ch = _evil_change(b, space, tid, prev)
        raws.append(ch.raw)
        prev = (ch.id,)
    ing = Ingest(pair.sa, _Source(), space, tid, raws, chunk=32)
    sizes = []
    while not ing.done:
        before = len(space.tree(tid).changes())
        assert ing.step() == []
        sizes.append(len(space.tree(tid).changes()) - before)
    assert sizes == [32, 32, 32, 4]
    assert space.heads(tid) == prev


def test_push_queue_drops_and_asks_for_head_sync_when_full() -> None:
    q = PushQueue(2)
    msg = SpaceOffer("s.1")
    assert q.put(msg, "s.1") == [] and q.put(msg, "s.1") == []
    assert q.put(msg, "s.1") == [Submit(("space", "s.1", b""), 2)]
    assert len(q) == 2 and q.dropped == 1


def test_stranger_rule(tmp_path: Path) -> None:
    a, _b, pair, _space = joined(tmp_path)
    assert not pair.sa.is_stranger() and not pair.sb.is_stranger()
    c = Dev(tmp_path, "c")
    assert Pair(a, c).sa.is_stranger()
    same = Dev(tmp_path, "a2", account=a.account)  # our own other device: never a stranger
    assert not Pair(same, a).sa.is_stranger()


def test_listing_an_object_it_does_not_serve_is_a_strike(tmp_path: Path) -> None:
    _, _, pair, space = joined(tmp_path)
    from p2psync.sync.ldiff import LDiff, heads_hash

    fake = LDiff()  # b's real set plus one made-up object
    for tid in space.tree_ids():
        fake.set(tid, heads_hash(space.heads(tid)))
    made_up = os.urandom(32)
    fake.set(made_up, os.urandom(32))

    def liar(req: Message) -> Message:
        if isinstance(req, HeadSyncRequest):
            return fake.answer(req)
        return ask(pair.rb, req)[0]  # honest otherwise: it has no such object to give

    effects = drive(SpaceSync(pair.sa, _Source(), space.id), pair.rb, answer=liar)
    assert effects == [Submit(("tree", space.id, made_up), 1)]
    out = drive(TreePull(pair.sa, _Source(), space.id, made_up), pair.rb)
    assert strikes(out) == ["listed an object in head sync that it does not serve"]
    assert not space.has_tree(made_up)
    # a pull that head sync did not ask for (a push's announced heads) is only "stuck"
    assert strikes(drive(TreePull(pair.sa, _Source(), space.id, made_up), pair.rb)) == []


# --- joins (issue 20.3): what an invitee may push ----------------------------------------------
def _fresh_request(space: Space, code: Any) -> bytes:
    """A join request through ``code`` signed by a freshly made account."""
    from p2psync.replica.acl_records import (
        JOIN_DOMAIN,
        RequestJoin,
        build_record,
        join_proof_message,
    )

    joiner = AccountKey.generate()
    proof = code.key.sign(JOIN_DOMAIN, join_proof_message(space.id, code.invite_id,
                                                           joiner.public))
    return build_record(joiner, space.id, [code.invite_id], RequestJoin(code.invite_id, proof))


def test_an_invitee_may_push_only_its_own_join_request(tmp_path: Path) -> None:
    from p2psync.sync.messages import AclHeadUpdate

    a, b = Dev(tmp_path, "a"), Dev(tmp_path, "b")
    space = a.replicas.create_space()
    raw, code = space.acl.invite(a.account, Role.WRITER, anyone_can_join=False)
    space.commit_acl(raw)
    pair = Pair(a, b)
    assert drive(BootstrapJoin(pair.sb, _Source(), space.id, code), pair.ra) == []
    mine = [q.joiner for q in space.acl.pending_requests()]
    assert mine == [b.account.public]  # its own request went in through the ACL pull
    # the flood: requests signed by fresh accounts, over b's connection, both ways of pushing
    flood = [_fresh_request(space, code) for _ in range(5)]
    eff = pair.ra.acl_update(AclHeadUpdate(space.id, tuple(space.acl.heads), tuple(flood)), NOW)
    assert [s for s in strikes(eff) if "ACL push refused" in s]
    _, eff2 = ask(pair.ra, AclSyncRequest(space.id, tuple(space.acl.heads), tuple(flood[:1]),
                                          1 << 20))
    assert [s for s in strikes(eff2) if "ACL push refused" in s]
    assert [q.joiner for q in space.acl.pending_requests()] == mine  # none stored


def test_an_expired_invite_proves_nothing(tmp_path: Path) -> None:
    a, b = Dev(tmp_path, "a"), Dev(tmp_path, "b")
    space = a.replicas.create_space()
    raw, code = space.acl.invite(a.account, Role.WRITER, anyone_can_join=True,
                                 expires_at=int(NOW) + 10)
    space.commit_acl(raw)
    pair = Pair(a, b)
    boot = BootstrapJoin(pair.sb, _Source(), space.id, code)
    nxt = boot.next_request()
    assert nxt is not None
    late = pair.ra.answer(nxt[1], NOW + 11).message
    assert isinstance(late, ErrorMessage) and late.code == ErrorCode.UNKNOWN_SPACE
    assert pair.sa.invited == {}
    ok = pair.ra.answer(nxt[1], NOW).message  # before the expiry the same proof works
    assert not isinstance(ok, ErrorMessage) and pair.sa.invited == {space.id: code.invite_id}
    # and the ACL access it gave ends with the invite
    acl = pair.ra.answer(AclSyncRequest(space.id, (), (), 1 << 20), NOW + 11).message
    assert isinstance(acl, ErrorMessage) and acl.code == ErrorCode.UNKNOWN_SPACE


def test_removal_policy_refusals_are_not_strikes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A member relaying an edit that the space's strict removal policy refuses (its author
    was removed at or after the edit's ACL head) is not misbehaving: no strike."""
    from p2psync.errors import AccessDenied, RemovedAuthor

    a, b, pair, space = joined(tmp_path)
    tid = space.tree_ids()[0]
    bs = b.replicas.spaces[space.id]
    with bs.document(tid).edit() as e:
        e.put(ROOT, "y", 2)
    raws = [c.raw for c in bs.tree(tid).changes()]

    def refuse(exc: Exception) -> None:
        def apply(*_: Any, **__: Any) -> Any:
            raise exc
        monkeypatch.setattr(a.replicas, "apply_changes", apply)

    refuse(RemovedAuthor("removed at or after the change's ACL head (strict)"))
    ing = Ingest(pair.sa, _Source(), space, tid, raws)
    assert strikes(ing.run()) == [] and ing.refused
    assert "removed" in (pair.sa.space_state(space.id).last_error or "")
    refuse(AccessDenied("the author may not write at this ACL head"))  # still a strike
    assert strikes(Ingest(pair.sa, _Source(), space, tid, raws).run())


def test_merges_by_a_removed_member_relayed_by_a_member_are_ignored_without_a_strike(
        tmp_path: Path) -> None:
    from p2psync.replica.acl_records import Merge, build_record
    from p2psync.sync.messages import AclHeadUpdate

    a, _b, pair, space = joined(tmp_path)
    bob = AccountKey.generate()  # a member who is then removed
    raw, code = space.acl.invite(a.account, Role.WRITER, anyone_can_join=True)
    space.commit_acl(raw)
    space.commit_acl(space.acl.join(bob, code))
    join_id = space.acl.heads[0]
    before = list(space.acl.export())
    space.emit_acl(lambda acl: acl.remove(a.account, [bob.public]))
    # bob, on his old copy, merges two records he knew (back-dated, with new timestamps)
    merges = [build_record(bob, space.id, [join_id, space.acl.root_id], Merge(), timestamp=i)
              for i in range(5)]
    eff = pair.ra.acl_update(AclHeadUpdate(space.id, (), tuple(merges)), NOW)  # b relays
    assert strikes(eff) == []
    assert all(m not in before for m in merges) and len(space.acl.heads) == 1
    assert len(space.acl.shelved) == len(merges)


# --- member limits (issue 20.7) -----------------------------------------------------------------
def test_member_limits_refuse_a_whole_batch_without_a_strike(tmp_path: Path) -> None:
    from p2psync.sync.memberlimits import MemberLimits
    from p2psync.sync.messages import StorageRefused
    from p2psync.sync.replicas import DevicePolicy

    a, b, pair, space = joined(tmp_path)
    a.replicas.policy = DevicePolicy(MemberLimits(author_changes=3, space_documents=2))
    tid = space.tree_ids()[0]
    bs = b.replicas.spaces[space.id]
    for i in range(5):  # b, a writer, makes a's device store 5 changes: over its limit of 3
        with bs.document(tid).edit() as e:
            e.put(ROOT, "n", i)
    before = len(list(space.tree(tid).changes()))
    effects = drive(TreePull(pair.sa, _Source(), space.id, tid), pair.rb)
    assert strikes(effects) == []
    refusals = [e.message for e in effects if isinstance(e, Push)
                and isinstance(e.message, StorageRefused)]
    assert [r.code for r in refusals] == [ErrorCode.QUOTA_EXCEEDED]
    assert "author change limit" in refusals[0].message
    assert len(list(space.tree(tid).changes())) == before  # nothing of the batch stored
    last = pair.sa.space_state(space.id).last_error or ""
    assert last.startswith("MemberLimitExceeded:") and "author change limit" in last
    # documents: a holds 1, the space may hold 2: b's first new one goes in, the next not
    d1, d2 = bs.new_document().tree.id, bs.new_document().tree.id
    assert strikes(drive(TreePull(pair.sa, _Source(), space.id, d1), pair.rb)) == []
    assert space.has_tree(d1)
    eff = drive(TreePull(pair.sa, _Source(), space.id, d2), pair.rb)
    assert not space.has_tree(d2) and strikes(eff) == []
    assert any(isinstance(e, Push) and isinstance(e.message, StorageRefused)
               and "space document limit" in e.message.message for e in eff)
    # our own edits are never refused
    with space.document(tid).edit() as e:
        e.put(ROOT, "mine", 1)


# --- storage challenge (issue 20.4) -------------------------------------------------------------
def test_a_challenge_needs_the_stored_ciphertext(tmp_path: Path) -> None:
    import random

    from p2psync.sync.pull import Challenge

    a, b, pair, space = joined(tmp_path)
    for _ in range(3):
        d = space.new_document()
        with d.edit() as e:
            e.put(ROOT, "k", 1)
    run_jobs(pair.sb, pair.ra, [Submit(("space", space.id, b""))])
    assert converged(a, b, space.id)
    honest = Challenge(pair.sa, _Source(), space.id, 3, random.Random(1))
    assert drive(honest, pair.rb) == [] and honest.result.ok
    assert honest.result.proven == honest.result.asked == 3
    # a backup that stores nothing (answers "no changes") fails every pick
    liar = Challenge(pair.sa, _Source(), space.id, 3, random.Random(1))

    def nothing(req: Message) -> Message:
        assert isinstance(req, FullSyncRequest)
        return FullSyncResponse(req.space_id, req.object_id, (), (), False)

    drive(liar, pair.rb, answer=nothing)
    assert not liar.result.ok and len(liar.result.failed) == 3


def test_job_failure_rule_and_the_strike_verdict(tmp_path: Path) -> None:
    from p2psync.sync.pull import job_failure

    assert job_failure(PeerRefused("unknown space", int(ErrorCode.UNKNOWN_SPACE), None))[1:] \
        == (False, None)
    assert job_failure(PeerRefused("slow down", int(ErrorCode.RATE_LIMITED), 0.5))[1:] \
        == (True, 0.5)
    assert job_failure(TimeoutError())[:2] == ("TimeoutError", True)
    a, b = Dev(tmp_path, "a"), Dev(tmp_path, "b")
    state = Pair(a, b, EngineConfig(strikes_to_close=3)).sa
    assert state.punish("x") is None and state.punish("y") is None
    assert "after 3 protocol violations (last: z)" in (state.punish("z") or "")
    assert "protocol violation: w" in (state.punish("w", violation=True) or "")
    assert state.strikes == 4
