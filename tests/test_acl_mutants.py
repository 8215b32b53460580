"""replica/acl.py: ``Acl.add``'s bookkeeping that mutation testing left unguarded (issue 21;
docs/testing.md names each mutant and the test here that kills it).

What ``add`` reports (``added``/``duplicate``/``waiting``/``ignored``, released and rejected
waiters) is what the sync layer acts on — a record reported "added" is stored and forwarded, a
rejected one earns its pusher a strike — so each status is pinned against the record's fate.
"""

from __future__ import annotations

import pytest

from p2psync.crypto.keys import AccountKey
from p2psync.errors import AccessDenied, InvalidAclRecord
from p2psync.replica import acl as acl_mod
from p2psync.replica.acl import Acl, InviteCode
from p2psync.replica.acl_records import (
    JOIN_DOMAIN,
    MAX_PREV,
    Accept,
    Merge,
    PermissionChange,
    RequestJoin,
    Role,
    build_record,
    decode_record,
    join_proof_message,
)
from tests.acl_dsl import SPACE, account

OWNER = account("owner")


def _chain(n: int) -> tuple[Acl, list[bytes]]:
    """An ACL at its root, and ``n`` owner records each on the previous (not yet added)."""
    acl = Acl.create(SPACE, OWNER)
    src = Acl.from_records(SPACE, acl.export())
    raws = [src.invite(OWNER, Role.READER)[0] for _ in range(n)]
    return acl, raws


def _id(raw: bytes) -> bytes:
    return decode_record(raw, SPACE).id


def _join_request(joiner: AccountKey, code: InviteCode, prev: list[bytes] | None = None) -> bytes:
    """A join request built by the joiner itself (not admitted anywhere)."""
    proof = code.key.sign(JOIN_DOMAIN, join_proof_message(SPACE, code.invite_id, joiner.public))
    return build_record(joiner, SPACE, prev or [code.invite_id],
                        RequestJoin(code.invite_id, proof))


def test_each_status_is_the_records_fate() -> None:
    acl, (r1, r2, r3) = _chain(3)
    assert acl.add(r3) == acl_mod.AddResult(_id(r3), "waiting")
    assert acl.add(r3) == acl_mod.AddResult(_id(r3), "waiting")  # still waiting, not re-queued
    assert _id(r3) not in acl and acl.waiting == [_id(r3)]
    assert acl.add(r2) == acl_mod.AddResult(_id(r2), "waiting")
    got = acl.add(r1)
    assert got == acl_mod.AddResult(_id(r1), "added", (_id(r2), _id(r3)))  # in causal order
    assert acl.waiting == [] and all(_id(r) in acl for r in (r1, r2, r3))
    assert acl.add(r1) == acl_mod.AddResult(_id(r1), "duplicate")
    assert acl.heads == [_id(r3)]


def test_a_record_waits_until_all_its_parents_are_there() -> None:
    acl = Acl.create(SPACE, OWNER)
    a = Acl.from_records(SPACE, acl.export())
    b = Acl.from_records(SPACE, acl.export())
    x = a.invite(OWNER, Role.READER)[0]
    y = b.invite(OWNER, Role.WRITER)[0]
    a.add(y)
    m = a.merge(OWNER)  # names both x and y
    assert set(decode_record(m, SPACE).prev) == {_id(x), _id(y)}
    assert acl.add(m).status == "waiting"
    assert acl.add(x) == acl_mod.AddResult(_id(x), "added")  # y is still missing
    assert acl.waiting == [_id(m)]
    assert acl.add(y) == acl_mod.AddResult(_id(y), "added", (_id(m),))
    assert acl.heads == [_id(m)]


def test_a_released_waiter_that_is_not_allowed_is_rejected_and_reported() -> None:
    acl, (r1,) = _chain(1)
    # rita is no member: her permission change waits for r1, then fails admission
    bad = build_record(account("rita"), SPACE, [_id(r1)],
                       PermissionChange(account("rita").public, Role.ADMIN))
    assert acl.add(bad).status == "waiting"
    got = acl.add(r1)
    assert got.status == "added" and got.released == ()
    assert [rid for rid, _ in got.rejected] == [_id(bad)]
    assert acl.rejected == {_id(bad): got.rejected[0][1]}
    assert _id(bad) not in acl and acl.waiting == []


def test_the_waiting_cap_is_exactly_max_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acl_mod, "MAX_PENDING", 3)
    acl, raws = _chain(5)
    for r in raws[1:4]:  # all wait for raws[0]
        assert acl.add(r).status == "waiting"
    with pytest.raises(InvalidAclRecord, match="waiting"):
        acl.add(raws[4])
    assert len(acl.waiting) == 3
    assert acl.add(raws[0]).released == tuple(_id(r) for r in raws[1:4])


def test_a_second_root_is_refused() -> None:
    acl = Acl.create(SPACE, OWNER)
    other = Acl.create(SPACE, account("rita"))
    with pytest.raises(InvalidAclRecord, match="root"):
        acl.add(other.export()[0])


def test_an_invite_code_names_its_space() -> None:
    acl = Acl.create(SPACE, OWNER)
    raw, code = acl.invite(OWNER, Role.WRITER)
    assert code.space_id == SPACE and code.invite_id == _id(raw)
    back = InviteCode.decode(code.encode())
    assert (back.space_id, back.invite_id, back.seed) == (SPACE, code.invite_id, code.seed)


def test_a_shelved_merge_offered_again_is_reported_ignored_with_its_id() -> None:
    """The sync layer keys what it did with a record on ``AddResult.id``/``status``; a shelved
    merge (by a removed member) offered again must come back as that id, ``ignored`` — not
    "added" (it would be forwarded) nor an id-less result (mutants ``_add`` 16, 18, 19)."""
    from p2psync.replica.acl_records import Merge
    from tests.test_bite_acl import _forked

    main = _forked()
    junk = build_record(account("rita"), SPACE, main.heads, Merge(), timestamp=1)
    main.remove(OWNER, [account("rita").public])
    jid = _id(junk)
    assert main.add(junk) == acl_mod.AddResult(jid, "ignored")
    assert main.add(junk) == acl_mod.AddResult(jid, "ignored")  # from the shelf this time
    assert jid not in main and jid in main.shelved


def test_a_rejected_waiter_does_not_hold_back_the_others_its_parent_releases() -> None:
    """Two records wait for one parent; the first in release order fails admission. The
    second must still be admitted: a pusher pairing a forged record with a genuine one (say a
    removal) must not leave the genuine one waiting for ever — its parent is there, so nothing
    would release it again (mutant ``_add`` 74, ``continue`` → ``break`` after a rejection)."""
    acl, (r1,) = _chain(1)
    src = Acl.from_records(SPACE, acl.export())
    src.add(r1)
    good = src.invite(OWNER, Role.READER)[0]
    rita = account("rita")
    bad = next(raw for raw in (
        build_record(rita, SPACE, [_id(r1)], PermissionChange(rita.public, Role.ADMIN),
                     timestamp=ts) for ts in range(1, 1000))
        if _id(raw) < _id(good))  # released first (waiters go in id order)
    assert acl.add(bad).status == "waiting" and acl.add(good).status == "waiting"
    got = acl.add(r1)
    assert [rid for rid, _ in got.rejected] == [_id(bad)]
    assert got.released == (_id(good),)
    assert _id(good) in acl and acl.waiting == []


def test_the_shelf_keeps_the_newest_max_shelved_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    """A removed member may flood back-dated merges; the shelf that keeps them aside is bounded
    to exactly MAX_SHELVED, dropping the oldest, and a full shelf is no error (mutants
    ``_settle`` 3, 4, 5: bound off by one, a crash once the bound is reached)."""
    from p2psync.replica.acl_records import Merge
    from tests.test_bite_acl import _forked

    monkeypatch.setattr(acl_mod, "MAX_SHELVED", 2)
    main = _forked()
    rita = account("rita")
    junk = [build_record(rita, SPACE, main.heads, Merge(), timestamp=i) for i in range(1, 5)]
    main.remove(OWNER, [rita.public])
    for raw in junk:
        assert main.add(raw).status == "ignored"
    assert main.shelved == [_id(r) for r in junk[-2:]]


def test_an_invitee_cannot_smuggle_a_record_behind_one_already_held() -> None:
    """Records the replica already holds pass the invitee screen, but only they: a forged
    record after them is still refused (mutant ``check_invitee_push`` 11, ``continue`` →
    ``break``: everything after the first known record went unchecked)."""
    acl = Acl.create(SPACE, OWNER)
    _raw, code = acl.invite(OWNER, Role.WRITER)
    eve = account("eve")
    forged = build_record(eve, SPACE, acl.heads, PermissionChange(eve.public, Role.ADMIN))
    with pytest.raises(AccessDenied, match="own join request"):
        acl.check_invitee_push([*acl.export(), forged], eve.public)
    mine = _join_request(eve, code)
    with pytest.raises(AccessDenied, match="one join request"):
        acl.check_invitee_push([acl.export()[0], mine, mine], eve.public)


def test_a_member_pushing_a_join_request_is_refused() -> None:
    """The screen refuses a join by an account that is already a member (mutant
    ``check_invitee_push`` 38: ``or`` → ``and`` let a member's join through)."""
    acl = Acl.create(SPACE, OWNER)
    _raw, code = acl.invite(OWNER, Role.WRITER)
    bob = account("bob")
    acl.accept(OWNER, decode_record(acl.request_join(bob, code)).id)
    assert acl.state.role(bob.public) is Role.WRITER
    _raw2, code2 = acl.invite(OWNER, Role.READER)
    with pytest.raises(AccessDenied, match="already a member"):
        acl.check_invitee_push([_join_request(bob, code2, acl.heads)], bob.public)


def test_a_merge_by_a_member_removed_and_back_again_is_admitted() -> None:
    """Only merges by members who are *still* departed are shelved: once re-added, their
    merges are ordinary records (mutant ``_ignorable`` 13: every merge by anyone ever removed
    shelved, so the replicas' ACL heads no longer agree)."""
    from p2psync.replica.acl_records import Merge
    from tests.acl_dsl import World

    w = World()
    w.run("""
        owner invites rita as reader; rita joins
        owner removes rita
        owner invites rita as writer; rita joins
        expect rita is writer
        fork r2
        owner invites ann as writer
        [r2] owner invites bob as writer
        sync main r2
        expect heads 2
    """)
    main = w.acl("main")
    m = build_record(account("rita"), SPACE, main.heads, Merge())
    assert main.add(m) == acl_mod.AddResult(_id(m), "added")
    assert main.heads == [_id(m)] and main.shelved == []


def test_a_removed_members_merge_naming_its_removal_is_refused_not_shelved() -> None:
    """A merge by a departed member whose parents descend from the departure is not
    "ignored": it fails admission (its author is no member in its own past), so the pusher
    gets the error and its strike (mutant ``_ignorable`` 17: shelved silently)."""
    from p2psync.errors import ReplicaError
    from p2psync.replica.acl_records import Merge
    from tests.acl_dsl import World

    w = World()
    w.run("""
        owner invites rita as reader; rita joins
        fork r2
        owner removes rita
        [r2] owner invites bob as writer
        sync main r2
        expect heads 2
    """)
    main = w.acl("main")
    m = build_record(account("rita"), SPACE, main.heads, Merge())
    with pytest.raises(ReplicaError):
        main.add(m)
    assert main.shelved == [] and _id(m) not in main


def test_a_merge_by_an_author_whose_removal_had_no_effect_is_admitted() -> None:
    """Bob's join is vetoed (its invite was revoked concurrently), so the owner's later removal
    of bob has no effect either: bob is in no state's ``departed``. His merge made while he was
    a member (valid in its own past) must be admitted like any record — not crash looking up
    a departure that does not exist (mutant ``_ignorable`` 9: ``or`` → ``and``, a KeyError
    out of ``add``)."""
    from p2psync.replica.acl_records import Merge
    from tests.acl_dsl import World

    w = World()
    w.run("""
        owner invites bob as writer openly
        fork r2; sync all
        owner revokes invite bob
        [r2] bob joins
        fork r3 from r2
        [r2] owner invites ann as writer
        [r3] owner invites carl as writer
        sync r2 r3
        [r2] expect heads 2
    """)
    r2 = w.acl("r2")
    m = build_record(account("bob"), SPACE, r2.heads, Merge())
    w.run("[r2] owner removes bob; sync all; expect bob is gone")
    main = w.acl("main")
    assert account("bob").public not in main.state.departed  # the removal had no effect
    assert main.add(m) == acl_mod.AddResult(_id(m), "added")


def test_a_member_removed_and_back_again_is_not_flagged_for_writing_after_the_return() -> None:
    """``removed_after`` names a removal the change's head does not descend from; a member who
    was removed and re-added writes at a head that descends from the removal: not flagged,
    and accepted under strict (mutant ``removed_after`` 7: ``and`` → ``or`` flagged every
    change of anyone ever removed)."""
    from tests.acl_dsl import World

    w = World()
    w.run("""
        owner invites rita as writer; rita joins
        owner removes rita
        owner invites rita as writer; rita joins
        expect rita is writer
    """)
    acl = w.acl("main")
    rita = account("rita").public
    head = acl.heads[0]
    assert acl.removed_after(rita, head) is None
    acl.removal_policy = "strict"
    acl.check_change(rita, head, acl.state_at(head).current_key_id, [])


def test_a_merge_by_a_removed_member_now_a_replicator_is_admitted() -> None:
    """A departed member who came back as a replicator is "back": a merge it made while a
    member is admitted, not shelved (mutant ``_ignorable`` 8: ``member or replicator`` →
    ``member and replicator``)."""
    from p2psync.replica.acl_records import Merge
    from tests.acl_dsl import forked_world

    w = forked_world()
    main = w.acl("main")
    m = build_record(account("rita"), SPACE, main.heads, Merge())  # while still a member
    w.run("owner removes rita; owner adds replicator rita; expect replicator rita")
    assert account("rita").public in main.state.departed
    assert main.add(m).status == "added" and main.shelved == []


def test_an_invitee_push_of_a_record_for_another_space_is_refused() -> None:
    """The invitee screen decodes each record for *this* space: a join signed for another
    space is refused as malformed before anything is admitted (mutants
    ``check_invitee_push`` 6, 8: decoded without the space id, it passed the screen)."""
    acl = Acl.create(SPACE, OWNER)
    _raw, code = acl.invite(OWNER, Role.WRITER)
    eve = account("eve")
    proof = code.key.sign(JOIN_DOMAIN, join_proof_message("other.space", code.invite_id,
                                                          eve.public))
    foreign = build_record(eve, "other.space", [code.invite_id],
                           RequestJoin(code.invite_id, proof))
    with pytest.raises(AccessDenied, match="malformed"):
        acl.check_invitee_push([foreign], eve.public)
    acl.check_invitee_push([_join_request(eve, code)], eve.public)  # the same join here: ok


def test_a_rotation_wraps_the_old_key_under_the_documented_aad() -> None:
    """The wrap of an old key under the new one uses the AAD of docs/protocol.md
    (``"p2psync/acl-wrap\\0" || space_id || "\\0" || old_key_id``), which js/src/replica/acl.ts
    builds too: computed here independently, it must open the wrap (mutants ``wrap_aad``
    4, 6, 7 changed the domain string or the separator — symmetric in Python, so only a
    fixed expectation sees them; other implementations and stored spaces would not open it)."""
    from p2psync.replica.acl_records import Rotate

    acl = Acl.create(SPACE, OWNER)
    old_id = acl.state.current_key_id
    old = acl.keys_of(OWNER)[old_id]
    rec = decode_record(acl.rotate(OWNER), SPACE)
    assert isinstance(rec.payload, Rotate)
    new = acl.keys_of(OWNER)[rec.id]
    (wrap,) = rec.payload.rotation.wraps
    assert wrap.ref == old_id
    aad = b"p2psync/acl-wrap\0" + SPACE.encode() + b"\0" + old_id
    assert new.decrypt(wrap.blob, aad) == old.key


def test_promoting_a_shelved_merge_admits_all_its_shelved_ancestors_once_parents_first() -> None:
    """Shelved merges may build on each other (a removed member's back-dated diamond, three
    levels deep). When an honest record names the top one, ``_promote`` admits it and every
    shelved ancestor exactly once, parents first (mutants ``_promote`` 3, 7, 8, 11, 12, 16,
    17: the walk not expanded, stopped early, or visiting a shared ancestor twice — the
    promotion failed or left ancestors shelved)."""
    from p2psync.replica.acl_records import Merge
    from tests.test_bite_acl import _forked

    main = _forked()
    rita = account("rita")
    base = main.heads
    m1 = [build_record(rita, SPACE, base, Merge(), timestamp=t) for t in (1, 2)]
    m2 = [build_record(rita, SPACE, [_id(r) for r in m1], Merge(), timestamp=t) for t in (3, 4)]
    m3 = build_record(rita, SPACE, [_id(r) for r in m2], Merge(), timestamp=5)
    main.remove(OWNER, [rita.public])
    for raw in [*m1, *m2, m3]:
        assert main.add(raw).status == "ignored"
    assert len(main.shelved) == 5
    honest = build_record(OWNER, SPACE, [*main.heads, _id(m3)], Merge())
    assert main.add(honest).status == "added"
    assert main.shelved == []
    promoted = main.take_promoted()
    assert sorted(promoted) == sorted(_id(r) for r in [*m1, *m2, m3])  # each exactly once
    pos = {rid: i for i, rid in enumerate(promoted)}
    for raw in [*m2, m3]:
        assert all(pos[p] < pos[_id(raw)] for p in decode_record(raw, SPACE).prev)
    assert main.heads == [_id(honest)]


def test_pending_requests_are_listed_oldest_first() -> None:
    """``pending_requests`` lists join requests in replay order (mutant
    ``pending_requests`` 12: no sort key — TypeError as soon as two are pending)."""
    acl = Acl.create(SPACE, OWNER)
    _raw, code = acl.invite(OWNER, Role.WRITER)
    names = ["bob", "eve", "carl", "ann"]
    for n in names:
        acl.request_join(account(n), code)
    assert [q.joiner for q in acl.pending_requests()] == [account(n).public for n in names]


def test_a_late_joiner_unwraps_the_whole_chain_of_old_keys() -> None:
    """A member who joins after several rotations is sealed only the newest key; each older
    key is wrapped under the next. The keyring must walk the keys newest first to open the
    whole chain, unwrapping each (mutants ``_keyring`` 32, 36, 40, 41: no wrap ever opened —
    no other test has a member who needs one; 10, 13, 14, 16: walked in id order or oldest
    first, a key met before the key wrapping
    it stayed out — the late joiner could not read older history; with 7 keys, id order is
    rarely the right one by chance: failed 5 of 5 runs with the mutant applied)."""
    from tests.acl_dsl import World

    w = World()
    w.run("owner writes" + "; owner rotates; owner writes" * 6)
    w.run("owner invites dan as reader; dan joins; expect dan reads all")
    acl = w.acl("main")
    assert set(acl.keys_of(account("dan"))) == set(acl.state.key_order)
    assert len(acl.state.key_order) == 7


def _roles() -> tuple[Acl, AccountKey, AccountKey, AccountKey]:
    """owner, admin alice, writer bob, reader carl."""
    from tests.acl_dsl import World

    w = World()
    w.run("owner invites alice as admin; alice joins; owner invites bob as writer; bob joins;"
          " owner invites carl as reader; carl joins")
    return w.acl("main"), account("alice"), account("bob"), account("carl")


def test_only_the_owner_transfers_ownership_and_only_to_another_member() -> None:
    """``_check``'s rule for TransferOwnership (mutant ``_check`` 16: the case removed, so
    the match fell through to "allowed" — **an admin could make itself owner**)."""
    acl, alice, bob, _carl = _roles()
    with pytest.raises(AccessDenied, match="only the owner"):
        acl.transfer_ownership(alice, alice.public)
    with pytest.raises(InvalidAclRecord, match="another member"):
        acl.transfer_ownership(OWNER, account("stranger").public)
    with pytest.raises(InvalidAclRecord, match="another member"):
        acl.transfer_ownership(OWNER, OWNER.public)
    acl.transfer_ownership(OWNER, bob.public)
    assert acl.state.owner == bob.public


def test_only_writers_and_up_delete_objects_and_not_twice() -> None:
    """``_check``'s rule for DeleteObjects (mutant ``_check`` 21: the case removed — **a reader
    could delete the space's documents**)."""
    acl, _alice, bob, carl = _roles()
    obj = b"\x07" * 32
    with pytest.raises(AccessDenied, match="only writers"):
        acl.delete_objects(carl, [obj])
    acl.delete_objects(bob, [obj])
    assert acl.state.is_deleted(obj)
    with pytest.raises(InvalidAclRecord, match="already deleted"):
        acl.delete_objects(bob, [obj])


def test_only_admins_and_up_set_the_space_metadata_under_a_known_key() -> None:
    """``_check``'s rule for SpaceMeta (mutant ``_check`` 23: the case removed — a writer or
    reader could rename the space, or name a key nobody holds)."""
    from p2psync.replica.acl_records import SpaceMeta

    acl, alice, bob, carl = _roles()
    for who in (bob, carl):
        with pytest.raises(AccessDenied, match="only admins"):
            acl.set_meta(who, {"name": "mine now"})
    acl.set_meta(alice, {"name": "Family"})
    assert acl.meta(alice) == {"name": "Family"}
    bogus = build_record(alice, SPACE, acl.heads, SpaceMeta(b"\x09" * 32, b"\x00" * 40))
    with pytest.raises(InvalidAclRecord, match="unknown read key"):
        acl.add(bogus)


def test_only_the_owner_deletes_the_space_and_only_once() -> None:
    """``_check``'s rule for DeleteSpace (mutant ``_check`` 22: the case removed — **any
    member could delete the space**)."""
    acl, alice, bob, _carl = _roles()
    for who in (alice, bob):
        with pytest.raises(AccessDenied, match="only the owner"):
            acl.delete_space(who)
    acl.delete_space(OWNER)
    assert acl.state.space_deleted is not None
    with pytest.raises(InvalidAclRecord, match="already deleted"):
        acl.delete_space(OWNER)


def test_an_admin_cannot_accept_a_joiner_as_admin() -> None:
    """Accepting grants the accepted role, under the same rule as inviting: only the owner
    grants admin (mutant ``_check`` 67: the role left out of ``_may_act`` — **an admin could
    make any joiner an admin**)."""
    acl, alice, _bob, _carl = _roles()
    _raw, code = acl.invite(OWNER, Role.WRITER)
    req = _id(acl.request_join(account("dan"), code))
    with pytest.raises(AccessDenied, match="may not accept as admin"):
        acl.accept(alice, req, Role.ADMIN)
    acl.accept(alice, req, Role.WRITER)
    assert acl.state.role(account("dan").public) is Role.WRITER


def test_only_admins_decline_join_requests() -> None:
    """(mutant ``_check`` 84: ``or`` → ``and`` — a writer could decline every join request.)"""
    acl, alice, bob, _carl = _roles()
    _raw, code = acl.invite(OWNER, Role.WRITER)
    req = _id(acl.request_join(account("dan"), code))
    with pytest.raises(AccessDenied, match="only admins decline"):
        acl.decline(bob, req)
    acl.decline(alice, req)
    assert acl.state.requests == {}


def test_an_admin_cannot_revoke_the_owners_admin_invite() -> None:
    """Revoking acts on the invite's role under the one rule: only the owner acts on admin
    (mutant ``_check`` 96: the role left out — an admin could revoke the owner's admin
    invites)."""
    acl, alice, _bob, _carl = _roles()
    _raw, code = acl.invite(OWNER, Role.ADMIN)
    with pytest.raises(AccessDenied):
        acl.revoke_invite(alice, code.invite_id)
    _raw2, code2 = acl.invite(OWNER, Role.WRITER)
    acl.revoke_invite(alice, code2.invite_id)
    assert code.invite_id in acl.state.invites and code2.invite_id not in acl.state.invites



# --- round 4 (mutacl2): ``_apply``'s bookkeeping --------------------------------------------


def test_the_state_names_the_owner_and_each_invites_id_author_and_pending_requests() -> None:
    """What ``_apply`` records for the root, an invite and a join request, as the API
    (``space.invites``, ``space.requests``, node.py's owner check) reads it (mutants ``_apply``
    23: the root's owner ``None``; 54, 58: an invite's id or author ``None``; the pending
    request's fields are pinned too)."""
    acl = Acl.create(SPACE, OWNER)
    assert acl.state.owner == OWNER.public
    _raw, code = acl.invite(OWNER, Role.WRITER)
    inv = acl.state.invites[code.invite_id]
    assert (inv.record_id, inv.author, inv.role) == (code.invite_id, OWNER.public, Role.WRITER)
    bob = account("bob")
    rid = _id(acl.request_join(bob, code))
    assert acl.state.requests[rid] == acl_mod.RequestInfo(rid, bob.public, code.invite_id)
    acl.accept(OWNER, rid)
    assert acl.state.role(bob.public) == Role.WRITER


def test_a_joiner_holds_the_current_key_so_no_rotation_is_due() -> None:
    """After a join through either kind of invite the joiner is recorded as a holder of the
    current key: no rotation is asked for (mutant ``_apply`` 16: the joiner recorded as
    ``None`` — the key looked held by a non-member and every join asked for a rotation)."""
    acl = Acl.create(SPACE, OWNER)
    _raw, code = acl.invite(OWNER, Role.WRITER, anyone_can_join=True)
    acl.join(account("bob"), code)
    assert acl.state.role(account("bob").public) == Role.WRITER
    assert acl.state.rotation_reasons == []
    _raw, code = acl.invite(OWNER, Role.READER)
    acl.accept(OWNER, _id(acl.request_join(account("carl"), code)))
    assert acl.state.role(account("carl").public) == Role.READER
    assert acl.state.rotation_reasons == []


def test_departures_and_tombstones_name_the_record_that_made_them() -> None:
    """``state.departed`` and ``state.deleted`` map to the record that removed, left or
    deleted — what ``space.join_state`` ("left" or "removed"), the departure notice and the
    backup's deletion read (mutants ``_apply`` 109: a leave recorded as ``None``, the account
    then looked never departed; 133, 135: a tombstone recorded as ``None``)."""
    acl = Acl.create(SPACE, OWNER)
    _raw, code = acl.invite(OWNER, Role.WRITER, anyone_can_join=True)
    bob, carl = account("bob"), account("carl")
    acl.join(bob, code)
    acl.join(carl, code)
    gone = _id(acl.leave(bob))
    assert acl.state.departed[bob.public] == gone
    removed = _id(acl.remove(OWNER, [carl.public]))
    assert acl.state.departed[carl.public] == removed
    tomb = _id(acl.delete_objects(OWNER, [b"o" * 32, b"p" * 32]))
    assert acl.state.deleted == {b"o" * 32: tomb, b"p" * 32: tomb}


def test_an_accept_naming_no_join_request_is_an_invalid_record() -> None:
    """An accept whose ``request_id`` is unknown, or names a record that is not a join
    request, is refused as invalid (mutant ``_check_structure`` 36: ``or`` → ``and`` — the
    unknown id raised AttributeError out of ``add``, a crash on a peer's record)."""
    acl = Acl.create(SPACE, OWNER)
    _raw, code = acl.invite(OWNER, Role.WRITER)
    for target in (b"\x07" * 32, code.invite_id):
        keys = acl._sealed_tips(OWNER, account("bob").public)  # the keys right: only the id wrong
        raw = build_record(OWNER, SPACE, acl.heads, Accept(target, Role.WRITER, keys))
        with pytest.raises(InvalidAclRecord, match="accept names no join request"):
            acl.add(raw)


def test_a_merge_naming_a_parent_and_its_ancestor_is_refused_in_either_id_order() -> None:
    """A merge may only join heads it saw: none of its parents an ancestor of another,
    whichever comes first on the wire (parents are sent sorted by id) (mutant
    ``_check_structure`` 43: ``below =`` instead of ``|=`` — only the last parent's
    ancestors were looked at, so a merge of a record and its ancestor passed when the
    ancestor's id sorted last)."""
    orders = set()
    for _ in range(40):
        acl = Acl.create(SPACE, OWNER)
        old = _id(acl.invite(OWNER, Role.READER)[0])
        new = _id(acl.invite(OWNER, Role.READER)[0])
        orders.add(old > new)
        raw = build_record(OWNER, SPACE, [old, new], Merge())
        with pytest.raises(InvalidAclRecord):
            acl.add(raw)
        if len(orders) == 2:
            break
    assert orders == {True, False}


@pytest.mark.parametrize("action", ["removes {b}", "sets {b} to reader"])
def test_a_concurrent_removal_or_demotion_of_the_new_owner_leaves_the_space_an_owner(
        action: str) -> None:
    """Found triaging ``_apply`` 116/124 (``role_set_by`` of a transfer): ``_role_seen``
    judges the admin's record against the role it saw (writer), so when the transfer replays
    first the admin removes or demotes the *new owner* — in about half of the id orders the
    space ends with ``state.owner`` a removed account or a reader and no member holding
    OWNER (nobody can delete the space or transfer it again). The outcome must not depend on
    the id tie-break: exactly one member is owner, and ``state.owner`` names it."""
    from tests.acl_dsl import World

    for n in range(8):
        b = f"bob{n}"
        w = World()
        w.run(f"owner invites alice as admin; alice joins; owner invites {b} as writer;"
              f" {b} joins; fork r2; sync all")
        w.run("alice " + action.format(b=b))
        w.run(f"[r2] owner transfers ownership to {b}")
        w.run("sync all; expect converged")
        st = w.acl("main").state
        owners = [m for m, r in st.members.items() if r == Role.OWNER]
        assert owners == [st.owner], n


def test_a_vetoed_record_is_skipped_with_its_reason() -> None:
    """A record vetoed by a concurrent removal of its author is skipped *with the reason*
    (``state.skipped`` is what the UI and the conflict report show) (mutant ``_apply`` 27:
    the reason recorded as ``None``)."""
    from tests.acl_dsl import World

    w = World()
    w.run("owner invites alice as admin; alice joins; owner invites bob as writer; bob joins;"
          " fork r2; sync all; owner removes alice; [r2] alice removes bob; sync all")
    reasons = list(w.acl("main").state.skipped.values())
    assert reasons and all(isinstance(r, str) and r for r in reasons)
    assert any(r.startswith("vetoed: its author is removed") for r in reasons)


def test_a_promotion_does_not_veto_the_members_concurrent_records() -> None:
    """Only a removal or a demotion below admin vetoes the member's concurrent records
    (mutant ``_replay`` 28: ``<=`` ADMIN — a promotion to admin vetoed them too: a writer's
    tombstone written while the owner promoted them was skipped)."""
    acl = Acl.create(SPACE, OWNER)
    _raw, code = acl.invite(OWNER, Role.WRITER, anyone_can_join=True)
    bob = account("bob")
    acl.join(bob, code)
    r2 = Acl.from_records(SPACE, acl.export())
    acl.change_permission(OWNER, bob.public, Role.ADMIN)
    tomb = _id(r2.delete_objects(bob, [b"o" * 32]))
    acl.add(r2.record(tomb).raw)
    assert tomb not in acl.state.skipped
    assert acl.state.deleted == {b"o" * 32: tomb}
    assert acl.state.role(bob.public) == Role.ADMIN


def test_an_admin_demoted_concurrently_cannot_remove_in_any_replay_order() -> None:
    """A demotion below admin vetoes the member's concurrent records, whichever replays
    first (mutants ``_replay`` 30: the demotion filed under ``None``, not the member; 42: the
    veto applied to roots, leaves and merges *only* — when the admin's removal replayed
    before the demotion it took effect: a demoted admin removed a writer)."""
    from tests.acl_dsl import World

    orders = set()
    for n in range(12):
        b = f"bob{n}"
        w = World()
        w.run(f"owner invites alice as admin; alice joins; owner invites {b} as writer;"
              f" {b} joins; fork r2; sync all")
        w.run("owner sets alice to writer")
        w.run(f"[r2] alice removes {b}")
        w.run(f"sync all; expect converged; expect alice is writer; expect {b} is writer")
        acl = w.acl("main")
        demote, remove = sorted(acl.heads, key=lambda h: isinstance(acl.record(h).payload,
                                                                   acl_mod.Remove))
        orders.add(acl._order[demote] < acl._order[remove])
        assert acl.state.skipped[remove].startswith("vetoed"), n
    assert orders == {True, False}


def test_remove_wins_over_a_concurrent_promotion_to_admin_in_any_replay_order() -> None:
    """An admin's removal of a writer concurrent with the owner promoting that writer to
    admin: the removal is judged against the role its author saw (writer), so remove wins
    whichever replays first (mutant ``_check`` 161: the removal judged against the current
    role — when the promotion replayed first the removal was refused and the removed
    member stayed admin; the existing remove-vs-promote scenario promotes only to writer)."""
    from tests.acl_dsl import World

    orders = set()
    for n in range(12):
        b = f"bob{n}"
        w = World()
        w.run(f"owner invites alice as admin; alice joins; owner invites {b} as writer;"
              f" {b} joins; fork r2; sync all")
        w.run(f"alice removes {b}")
        w.run(f"[r2] owner sets {b} to admin")
        w.run(f"sync all; expect converged; expect {b} is gone")
        acl = w.acl("main")
        remove, promote = sorted(acl.heads, key=lambda h: isinstance(acl.record(h).payload,
                                                                    PermissionChange))
        orders.add(acl._order[promote] < acl._order[remove])
    assert orders == {True, False}


def test_history_keys_unwrap_the_whole_chain_from_the_newest_key() -> None:
    """From the newest key alone every older key is reached, unwrapping newest first
    (mutants ``history_keys`` 3, 6: the rotations walked in id order — a key met before
    the key wrapping it stayed out, older history unreadable; 7 keys make id order right
    by chance rarely)."""
    from tests.acl_dsl import World

    w = World()
    w.run("owner writes" + "; owner rotates; owner writes" * 6)
    acl = w.acl("main")
    cur = acl.state.current_key_id
    ring = acl.history_keys(cur, acl.keys_of(OWNER)[cur])
    assert set(ring) == set(acl.state.key_order) and len(ring) == 7
    assert all(ring[k].key == acl.keys_of(OWNER)[k].key for k in ring)


@pytest.mark.parametrize("how", ["openly", ""])
def test_a_rejoin_sets_the_role_a_concurrent_promotion_cannot_raise(how: str) -> None:
    """A member removed and invited back holds the role of the new invite; the owner's
    concurrent promotion of the old membership (made before it saw the removal) is skipped by
    "lowest role wins" — the rejoin is what set the role (mutants ``_apply`` 76 / 86: the
    invite join / accept recorded as ``None`` setter, so the promotion, replayed after the
    rejoin, raised the re-joined writer to admin). The r2 invites only make the promotion
    replay after the rejoin (deeper in the DAG)."""
    from tests.acl_dsl import World

    for n in range(3):
        b = f"bob{n}"
        w = World()
        w.run(f"owner invites alice as admin; alice joins; owner invites {b} as reader openly;"
              f" {b} joins; fork r2; sync all")
        w.run(f"owner removes {b}; owner invites {b} as writer {how}; {b} joins")
        w.run("[r2] owner invites x as reader; [r2] owner invites y as reader;"
              " [r2] owner invites z as reader; [r2] owner invites v as reader;"
              f" [r2] owner sets {b} to admin")
        w.run(f"sync all; expect converged; expect {b} is writer")
        skipped = list(w.acl("main").state.skipped.values())
        assert skipped == ["a concurrent change set a lower role (lowest role wins)"], n


def test_merge_down_joins_many_heads_in_the_fewest_groups() -> None:
    """130 heads merge as three groups of ≤ MAX_PREV in id order (64, 64, 2) and one final
    merge: four records, each naming ≤ MAX_PREV heads (mutants ``_merge_down`` 7, 8, 9, 12,
    13: overlapping groups — 8 builds O(n²) merges, a hang on a real flood —, a first head
    left out, or pairs left unmerged; each still ends in one head, with more records or
    another shape)."""
    from tests.acl_dsl import forked_world

    w = forked_world()
    acl = w.acl("main")
    heads = acl.heads
    n = 2 * MAX_PREV + 2
    for i in range(n):
        acl.add(build_record(account("rita"), SPACE, heads, Merge(), timestamp=i))
    assert len(acl.heads) == n
    before = acl.heads
    acl.take_built()
    last = acl.merge(OWNER)
    built = [decode_record(r, SPACE) for r in acl.take_built()]
    assert [len(r.prev) for r in built[:3]] == [MAX_PREV, MAX_PREV, 2]
    assert [list(r.prev) for r in built[:3]] == [list(before[i:i + MAX_PREV])
                                                 for i in range(0, n, MAX_PREV)]
    assert len(built) == 4 and built[-1].raw == last
    assert list(acl.heads) == [built[-1].id]


def test_admins_add_replicators_but_not_members_and_not_twice() -> None:
    """An admin may add a replicator; an account that is already a replicator or a member
    may not be added (mutants ``_check`` 185: ``<=`` ADMIN — admins refused; 188: ``and`` —
    a member made a replicator too, or a replicator added twice)."""
    from tests.acl_dsl import scenario

    w = scenario("owner invites alice as admin; alice joins; owner invites bob as writer;"
                 " bob joins; alice adds replicator backup; expect replicator backup")
    w.run("alice adds replicator backup -> InvalidAclRecord")
    w.run("alice adds replicator bob -> InvalidAclRecord")
    w.run("owner adds replicator alice -> InvalidAclRecord")
    w.run("bob adds replicator other -> AccessDenied")
    assert w.acl("main").state.replicators == {w.pub("backup")}
    w.run("bob removes replicator backup -> AccessDenied; expect replicator backup")
    w.run("alice removes replicator backup; expect replicator backup gone")


def test_only_admins_remove_replicators() -> None:
    """A writer may not remove the space's replicator (mutant ``_check`` 193: ``and`` — the
    rank check never true: any member, a reader too, could remove the backup)."""
    from tests.acl_dsl import scenario

    w = scenario("owner invites bob as writer; bob joins; owner invites rita as reader;"
                 " rita joins; owner adds replicator backup")
    w.run("bob removes replicator backup -> AccessDenied")
    w.run("rita removes replicator backup -> AccessDenied; expect replicator backup")


def test_admins_rotate_the_read_key_writers_do_not() -> None:
    """An admin rotates; a writer may not (mutant ``_check`` 203: ``<=`` ADMIN — only the
    owner could rotate, so an admin who removed a writer could not follow up with a
    rotation)."""
    from tests.acl_dsl import scenario

    w = scenario("owner invites alice as admin; alice joins; owner invites bob as writer;"
                 " bob joins")
    before = w.acl("main").state.current_key_id
    w.run("bob rotates -> AccessDenied")
    assert w.acl("main").state.current_key_id == before
    w.run("alice rotates")
    assert w.acl("main").state.current_key_id != before


def test_from_records_rejects_a_merge_of_a_record_and_its_ancestor_without_crashing() -> None:
    """A record set (a store, or what an inviter hands a joining device) holding a merge
    that names a record and that record's ancestor: the merge is rejected and the rest
    loads, in every id order (mutant ``_depths`` 11: ``continue`` → ``break`` — the depth walk
    gave up at the doubly-pushed ancestor and left the merge without a depth: KeyError out
    of ``from_records`` in about half of the orders; 15: ``p in depth`` — an endless loop)."""
    for t in range(8):
        acl = Acl.create(SPACE, OWNER)
        a = _id(acl.invite(OWNER, Role.READER)[0])
        b = _id(acl.invite(OWNER, Role.READER)[0])  # on top of a
        bad = build_record(OWNER, SPACE, [a, b], Merge(), timestamp=t)
        got = Acl.from_records(SPACE, [bad, *acl.export()])
        assert list(got.rejected) == [_id(bad)], t
        assert set(got.heads) == {b}
