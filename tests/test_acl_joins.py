"""Issue 20.3: join requests through one approval invite cannot flood the ACL.

Before: after proving an approval invite once, a stranger could push any number of
``RequestJoin`` records signed by freshly made accounts; all were stored for good and revoking
the invite left them. Now a non-member's push is screened (only its own join, signed by the
connection's account), pending requests are capped per invite and per account, and revoking or
expiring an invite voids its pending requests.
"""

from __future__ import annotations

import pytest

from p2psync.crypto.keys import AccountKey
from p2psync.errors import AccessDenied, InvalidAclRecord
from p2psync.replica.acl import MAX_REQUESTS_PER_INVITE, Acl, InviteCode, Role
from p2psync.replica.acl_records import (
    JOIN_DOMAIN,
    Invite,
    PermissionChange,
    RequestJoin,
    build_record,
    decode_record,
    join_proof_message,
)
from tests.acl_dsl import SPACE, account

OWNER = account("owner")
T0 = 1_700_000_000


def _request(acl: Acl, joiner: AccountKey, code: InviteCode, *, prev: list[bytes] | None = None,
             timestamp: int | None = None) -> bytes:
    """A join request built by the joiner (naming ``prev``, default the invite)."""
    proof = code.key.sign(JOIN_DOMAIN, join_proof_message(SPACE, code.invite_id, joiner.public))
    return build_record(joiner, SPACE, prev or [code.invite_id],
                        RequestJoin(code.invite_id, proof), timestamp=timestamp)


def _space(expires_at: int = 0) -> tuple[Acl, InviteCode]:
    acl = Acl.create(SPACE, OWNER)
    _raw, code = acl.invite(OWNER, Role.WRITER, expires_at=expires_at)
    return acl, code


def test_an_invitee_may_push_only_its_own_request() -> None:
    acl, code = _space()
    eve = account("eve")
    mine = _request(acl, eve, code)
    acl.check_invitee_push([*acl.export(), mine], eve.public)  # known records + its own: ok
    # The flood: requests signed by freshly made accounts, pushed over eve's connection.
    fresh = [_request(acl, AccountKey.generate(), code) for _ in range(50)]
    for raw in fresh:
        with pytest.raises(AccessDenied, match="own join request"):
            acl.check_invitee_push([raw], eve.public)
    with pytest.raises(AccessDenied, match="one join request"):
        acl.check_invitee_push([mine, _request(acl, eve, code, timestamp=5)], eve.public)
    with pytest.raises(AccessDenied, match="own join request"):  # nothing else either
        acl.check_invitee_push(
            [build_record(eve, SPACE, acl.heads, PermissionChange(eve.public, Role.ADMIN))],
            eve.public)
    with pytest.raises(AccessDenied, match="malformed"):
        acl.check_invitee_push([mine[:-2]], eve.public)
    acl.add(mine)
    with pytest.raises(AccessDenied, match="already has a pending"):
        acl.check_invitee_push([_request(acl, eve, code, timestamp=7)], eve.public)
    assert [q.joiner for q in acl.pending_requests()] == [eve.public]


def test_pending_requests_are_capped_per_invite_and_per_account() -> None:
    acl, code = _space()
    joiners = [AccountKey.generate() for _ in range(MAX_REQUESTS_PER_INVITE + 8)]
    # Each names only the invite, so in its own causal past nothing is pending: admission
    # cannot see the others; replay caps them, the same on every replica.
    raws = [_request(acl, j, code) for j in joiners]
    raws.append(_request(acl, joiners[0], code, timestamp=1))  # a second one by one account
    for raw in raws:
        acl.add(raw)
    pending = acl.state.requests
    assert len(pending) == MAX_REQUESTS_PER_INVITE
    assert len({q.joiner for q in pending.values()}) == len(pending)
    reasons = set(acl.state.skipped.values())
    assert "too many pending join requests for this invite" in reasons
    # Same state whatever the arrival order.
    assert Acl.from_records(SPACE, reversed(acl.export())).state.fingerprint() == \
        acl.state.fingerprint()
    # The edge refuses the 33rd outright.
    late = AccountKey.generate()
    with pytest.raises(AccessDenied, match="too many"):
        acl.check_invitee_push([_request(acl, late, code)], late.public)


def test_revoking_an_invite_voids_its_pending_requests() -> None:
    acl, code = _space()
    bob, eve = account("bob"), account("eve")
    rb = decode_record(acl.request_join(bob, code)).id
    acl.request_join(eve, code)
    other, code2 = acl.invite(OWNER, Role.READER)
    rc = decode_record(acl.request_join(account("carl"), code2)).id
    assert len(acl.state.requests) == 3
    acl.revoke_invite(OWNER, code.invite_id)
    assert set(acl.state.requests) == {rc}  # the other invite's request stays
    with pytest.raises(InvalidAclRecord, match="not pending"):
        acl.accept(OWNER, rb)
    with pytest.raises(AccessDenied, match="revoked"):
        acl.check_invitee_push([_request(acl, account("dan"), code)], account("dan").public)
    del other


def test_an_expired_invite_admits_no_joins_and_voids_its_requests() -> None:
    acl, code = _space(expires_at=T0)
    bob = account("bob")
    req = _request(acl, bob, code, timestamp=T0 - 10)
    acl.add(req)
    assert acl.invite_open(code.invite_id, T0 - 1) and not acl.invite_open(code.invite_id, T0 + 1)
    assert [q.joiner for q in acl.pending_requests(T0 - 1)] == [bob.public]
    assert acl.pending_requests(T0 + 1) == []  # void once expired
    with pytest.raises(InvalidAclRecord, match="expired"):
        acl.add(_request(acl, account("eve"), code, timestamp=T0 + 1))
    with pytest.raises(AccessDenied, match="expired"):
        acl.check_invitee_push([_request(acl, account("eve"), code, timestamp=T0 - 1)],
                               account("eve").public, now=T0 + 1)
    # An accept made after the expiry is refused (its requests are void).
    from p2psync.crypto.box import seal
    from p2psync.replica.acl_records import Accept, KeyEntry

    keys = tuple(KeyEntry(k, seal(acl.keys_of(OWNER)[k].key, bob.public)) for k in acl.state.tips)
    late = build_record(OWNER, SPACE, acl.heads, Accept(decode_record(req).id, Role.WRITER, keys),
                        timestamp=T0 + 5)
    with pytest.raises(InvalidAclRecord, match="expired"):
        acl.add(late)


def test_expiry_is_optional_on_the_wire() -> None:
    acl, _code = _space()
    inv = decode_record(acl.export()[1])
    assert isinstance(inv.payload, Invite) and inv.payload.expires_at == 0
    acl2, _ = _space(expires_at=T0)
    inv2 = decode_record(acl2.export()[1])
    assert isinstance(inv2.payload, Invite) and inv2.payload.expires_at == T0
    assert len(inv2.raw) > len(inv.raw)  # the field is present only when set


def test_a_joiner_can_request_whatever_the_head_count() -> None:
    """A joiner cannot merge; with more heads than a record may name it names the newest
    heads that hold its invite."""
    from p2psync.replica.acl_records import MAX_PREV, Merge

    acl, code = _space()
    fork = Acl.from_records(SPACE, acl.export())
    acl.invite(OWNER, Role.READER)
    fork.invite(OWNER, Role.READER)
    for raw in fork.export():
        acl.add(raw)
    heads = acl.heads
    for i in range(MAX_PREV + 6):  # the owner's own merges of the same two heads: many heads
        acl.add(build_record(OWNER, SPACE, heads, Merge(), timestamp=i))
    assert len(acl.heads) > MAX_PREV
    req = decode_record(acl.request_join(account("zoe"), code))
    assert len(req.prev) == MAX_PREV and req.id in acl
