"""replica/acl.py: the behaviours mutation testing found unguarded (issue 21; the survivors and
why each is killed or accepted are in docs/testing.md)."""

from __future__ import annotations

import pytest

from p2psync.errors import AccessDenied, InvalidAclRecord, RemovedAuthor
from p2psync.replica.acl import Acl
from p2psync.replica.acl_records import MAX_PREV, Leave, Merge, build_record, decode_record
from tests.acl_dsl import SPACE, World, account, forked_world


def _forked() -> Acl:
    """Owner, a reader (rita) and two concurrent invites: two heads a merge may join."""
    return forked_world().acl("main")


def _with_heads(n: int) -> Acl:
    """An ACL with ``n`` heads: rita's merges of the same two heads, each with its own time."""
    acl = _forked()
    heads = acl.heads
    for i in range(n):
        acl.add(build_record(account("rita"), SPACE, heads, Merge(), timestamp=i))
    assert len(acl.heads) == n
    return acl


@pytest.mark.parametrize("n", [2, MAX_PREV, MAX_PREV + 1, 2 * MAX_PREV + 1])
def test_merge_joins_any_number_of_heads_into_one(n: int) -> None:
    """``merge`` with more heads than a record may name merges in groups first; whatever the
    count, the ACL ends with exactly one head, the record it returns (issue 12.3: an admin
    action must always build). With MAX_PREV + 1 heads the groups leave two heads: stopping
    there (mutants ``< 2`` → ``<= 2``/``< 3``) would leave the ACL forked."""
    acl = _with_heads(n)
    raw = acl.merge(account("owner"))
    assert acl.heads == [decode_record(raw).id]
    assert all(len(decode_record(r).prev) <= MAX_PREV for r in acl.take_built())


def test_join_with_an_invite_this_acl_does_not_hold_is_access_denied() -> None:
    """A code for an invite this ACL does not know (another space's, or not yet synced) is a
    typed refusal, not a crash (mutant: ``sealed`` defaulting to None → TypeError)."""
    other = World()
    other.run("owner invites x as reader")
    _raw, code = other.acl("main").invite(account("owner"), anyone_can_join=True)
    acl = _forked()
    with pytest.raises(AccessDenied):
        acl.join(account("zed"), code)


def test_a_change_naming_a_shelved_merge_promotes_it() -> None:
    """A replica that saw rita's merge before her removal may write changes naming it; where
    the merge arrived after the removal it was shelved, and the change must still be judged,
    not wait forever: ``knows_head`` admits the shelved merge (mutants: the promotion skipped,
    or run for the wrong record)."""
    main = _forked()
    junk = build_record(account("rita"), SPACE, main.heads, Merge(), timestamp=1)
    main.remove(account("owner"), [account("rita").public])
    assert main.add(junk).status == "ignored"
    jid = decode_record(junk).id
    assert jid in main.shelved and jid not in main
    assert main.knows_head(jid)
    assert jid in main and jid not in main.shelved
    assert main.take_promoted() == [jid]
    assert not main.knows_head(bytes(32))  # an unknown head stays unknown


def test_the_gate_itself_refuses_a_removed_authors_change_under_strict() -> None:
    """Strict removal is enforced by the space on each incoming batch *and* by the ACL gate:
    a change that waited for its ACL head escapes the batch check (its head was unknown then)
    and meets only the gate when it is released. The gate must look up *this* author at
    *this* head (mutants: ``removed_after(None, head)`` / ``(author, None)`` let it in)."""
    w = World()
    w.run("owner invites ann as writer; ann joins")
    acl = w.acl("main")
    head = acl.heads[0]
    key = acl.state_at(head).current_key_id
    ann = account("ann").public
    acl.check_change(ann, head, key, [])  # ann may write at that head
    w.run("owner removes ann")
    acl.removal_policy = "flag"
    acl.check_change(ann, head, key, [])  # flag: admitted (and flagged elsewhere)
    acl.removal_policy = "strict"
    with pytest.raises(RemovedAuthor):
        acl.check_change(ann, head, key, [])
    acl.check_change(account("owner").public, head, key, [])  # others are unaffected


def test_accept_needs_a_join_request() -> None:
    """``accept`` of an id that is not a join request — unknown, or another record such as
    the invite itself — is a typed refusal before anything is built (mutant: ``or`` → ``and``
    crashes on an unknown id)."""
    w = World()
    w.run("owner invites ann as writer")
    acl = w.acl("main")
    invite_id = acl.heads[0]
    for rid in (bytes(32), invite_id):
        with pytest.raises(InvalidAclRecord, match="no such join request"):
            acl.accept(account("owner"), rid)
    assert acl.heads == [invite_id] and not acl.take_built()[1:]


def test_concurrent_removal_is_about_that_author_only() -> None:
    """A leave by someone else, concurrent with the head, says nothing about this author
    (mutants: ``and`` → ``or``, ``==`` → ``!=`` matched any leave)."""
    w = World()
    w.run("""
        owner invites ann as writer openly; ann joins
        owner invites bob as writer openly; bob joins
        fork r2
        [r2] bob leaves
        owner rotates
        sync main r2
    """)
    acl = w.acl("main")
    leave = next(h for h in acl.heads if isinstance(acl.record(h).payload, Leave))
    others = [h for h in acl.heads if h != leave]
    assert len(others) == 1 and acl.concurrent(leave, others[0])
    assert acl.concurrent_removal(account("bob").public, others[0]) == leave
    assert acl.concurrent_removal(account("ann").public, others[0]) is None


def test_a_record_still_blocked_does_not_hold_back_the_others_its_parent_releases() -> None:
    """When a record arrives, every waiting record it completes is admitted, in one pass —
    also when another record waiting on it still misses a second parent and sorts first
    (mutant: ``continue`` → ``break`` in the release loop left the rest waiting until the
    next sync: availability)."""
    acl = _forked()
    h = acl.heads
    x = build_record(account("rita"), SPACE, h, Merge(), timestamp=0)
    y = build_record(account("rita"), SPACE, h, Merge(), timestamp=1)  # never delivered
    blocked = build_record(account("owner"), SPACE, sorted([decode_record(x).id,
                                                            decode_record(y).id]), Merge(),
                           timestamp=2)
    ts = 3
    while True:  # a ready record that sorts after the blocked one: the order that bites
        ready = build_record(account("rita"), SPACE, [decode_record(x).id], Leave(),
                             timestamp=ts)
        if decode_record(blocked).id < decode_record(ready).id:
            break
        ts += 1
    assert acl.add(blocked).status == "waiting" and acl.add(ready).status == "waiting"
    result = acl.add(x)
    assert result.status == "added" and result.released == (decode_record(ready).id,)
    assert acl.waiting == [decode_record(blocked).id]
