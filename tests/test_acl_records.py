"""ACL records under attack (forged, replayed, truncated, escalating) and the AclGate rules."""

from __future__ import annotations

import pytest

from p2psync.codec import pack
from p2psync.crypto.box import unseal
from p2psync.crypto.signed import make_signed
from p2psync.errors import (
    AccessDenied,
    BadId,
    DecryptionFailed,
    InvalidAclRecord,
    InvalidChange,
    UnknownReadKey,
)
from p2psync.replica.acl import Acl, InviteCode, Role
from p2psync.replica.acl_records import (
    MAX_ACL_RECORD_SIZE,
    RECORD_DOMAIN,
    KeyEntry,
    Kind,
    PermissionChange,
    Remove,
    Rotate,
    Rotation,
    build_record,
    decode_record,
)
from tests.acl_dsl import SPACE, World, account

OWNER, BOB, CARL, MALLORY = (account(n) for n in ("owner", "bob", "carl", "mallory"))


def _space() -> tuple[World, Acl]:
    w = World().run("""
        owner invites alice as admin; alice joins
        owner invites bob as writer; bob joins
        owner invites carl as reader; carl joins
    """)
    return w, w.acl("main")


def _assert_refused(acl: Acl, raw: bytes, err: type[Exception]) -> None:
    before = (acl.state.fingerprint(), acl.export(), acl.waiting)
    with pytest.raises(err):
        acl.add(raw)
    assert (acl.state.fingerprint(), acl.export(), acl.waiting) == before


def test_forged_signature_is_refused() -> None:
    _w, acl = _space()
    raw = build_record(OWNER, SPACE, acl.heads, PermissionChange(BOB.public, Role.ADMIN))
    forged = bytearray(raw)
    forged[-5] ^= 1
    _assert_refused(acl, bytes(forged), InvalidAclRecord)


def test_record_claiming_another_author_is_refused() -> None:
    _w, acl = _space()
    body = pack([1, SPACE, acl.heads, OWNER.public, 0, int(Kind.PERMISSION_CHANGE),
                 [BOB.public, int(Role.ADMIN)]])
    _assert_refused(acl, make_signed(MALLORY, RECORD_DOMAIN, body), InvalidAclRecord)
    # The right key under the wrong domain is a forgery too.
    _assert_refused(acl, make_signed(OWNER, "tree-change", body), InvalidAclRecord)


@pytest.mark.parametrize("cut", [1, 10, 70, 200])
def test_truncated_record_is_refused(cut: int) -> None:
    _w, acl = _space()
    raw = build_record(OWNER, SPACE, acl.heads, PermissionChange(BOB.public, Role.READER))
    _assert_refused(acl, raw[:-cut], InvalidAclRecord)


def test_malformed_bodies_are_refused() -> None:
    _w, acl = _space()
    cases = [
        [1, SPACE, acl.heads, OWNER.public, 0, 99, []],  # unknown kind
        [2, SPACE, acl.heads, OWNER.public, 0, int(Kind.LEAVE), []],  # unknown version
        [1, SPACE, acl.heads, OWNER.public, 0, int(Kind.LEAVE), [], "extra"],
        [1, SPACE, list(reversed(acl.heads)) * 2, OWNER.public, 0, int(Kind.LEAVE), []],
        [1, SPACE, acl.heads, OWNER.public, -1, int(Kind.LEAVE), []],
        [1, SPACE, acl.heads, OWNER.public, 0, int(Kind.PERMISSION_CHANGE), [BOB.public, 9]],
        [1, SPACE, [], OWNER.public, 0, int(Kind.LEAVE), []],  # only the root has no parents
        [1, SPACE, acl.heads, OWNER.public, 0, int(Kind.MERGE), []],  # merge of one head
    ]
    for body in cases:
        _assert_refused(acl, make_signed(OWNER, RECORD_DOMAIN, pack(body)), InvalidAclRecord)
    _assert_refused(acl, b"\x00" * (MAX_ACL_RECORD_SIZE + 1), InvalidAclRecord)


def test_replayed_record_is_a_noop_and_other_spaces_are_refused() -> None:
    w, acl = _space()
    raw = acl.export()[-1]
    before = acl.state.fingerprint()
    assert acl.add(raw).status == "duplicate"
    assert acl.state.fingerprint() == before
    other = Acl.create("other.space", OWNER)
    _assert_refused(other, raw, InvalidAclRecord)
    second_root = Acl.create(SPACE, OWNER).export()[0]
    _assert_refused(acl, second_root, InvalidAclRecord)
    with pytest.raises(AccessDenied):
        Acl(SPACE, acl.export()[0], owner=BOB.public)
    assert w


@pytest.mark.parametrize(("author", "payload"), [
    (BOB, PermissionChange(BOB.public, Role.ADMIN)),  # writer promotes self
    (account("carl"), PermissionChange(account("carl").public, Role.WRITER)),
    (account("alice"), PermissionChange(BOB.public, Role.ADMIN)),  # admin grants admin
    (account("alice"), PermissionChange(OWNER.public, Role.READER)),
    (MALLORY, PermissionChange(BOB.public, Role.READER)),  # stranger
])
def test_privilege_escalation_is_refused(author: object, payload: PermissionChange) -> None:
    _w, acl = _space()
    assert isinstance(author, type(OWNER))
    _assert_refused(acl, build_record(author, SPACE, acl.heads, payload), AccessDenied)


def test_rotation_must_not_seal_to_the_removed_member() -> None:
    _w, acl = _space()
    st = acl.state
    good = decode_record(acl.remove(OWNER, [BOB.public]))
    assert isinstance(good.payload, Remove)
    leaky = Rotation((*good.payload.rotation.members, KeyEntry(BOB.public, b"\x00" * 80)),
                     (), good.payload.rotation.wraps)
    raw = build_record(OWNER, SPACE, good.prev, Remove((CARL.public,), leaky))
    _assert_refused(acl, raw, InvalidAclRecord)
    # A rotation that forgets to wrap the current key would strand history.
    no_wrap = Rotation(tuple(KeyEntry(m, b"\x00" * 80) for m in sorted(st.members)), (), ())
    _assert_refused(acl, build_record(OWNER, SPACE, good.prev, Rotate(no_wrap)),
                    InvalidAclRecord)


def test_records_wait_for_parents_and_are_released() -> None:
    _w, acl = _space()
    raws = acl.export()
    fresh = Acl(SPACE, raws[0])
    for raw in reversed(raws[1:]):
        fresh.add(raw)
    assert fresh.waiting == []
    assert fresh.state.fingerprint() == acl.state.fingerprint()
    assert fresh.export() == raws


def test_removed_member_cannot_read_after_rotation_and_others_read_with_newest_key() -> None:
    w, acl = _space()
    w.run("owner writes; bob writes; owner removes bob; owner writes; alice writes")
    w.run("owner rotates; owner writes")
    st = acl.state
    bob_keys = acl.keys_of(BOB)
    for kid, ct, _plain in w.messages[2:]:
        assert kid not in bob_keys
        for key in bob_keys.values():
            with pytest.raises(DecryptionFailed):
                key.decrypt(ct)
    # carl unseals only the newest key from the last rotation; it unlocks everything.
    last = acl.record(st.current_key_id)
    assert last.rotation is not None
    sealed = next(e.blob for e in last.rotation.members if e.ref == CARL.public)
    from p2psync.crypto.box import ReadKey

    newest = ReadKey(unseal(sealed, CARL))
    ring = acl.history_keys(st.current_key_id, newest)
    for kid, ct, plain in w.messages:
        assert ring[kid].decrypt(ct) == plain


def test_gate_rules() -> None:
    w, acl = _space()
    head0, key0 = acl.write_position(BOB.public)
    acl.check_change(BOB.public, head0, key0, [head0])
    with pytest.raises(AccessDenied):
        acl.check_change(CARL.public, head0, key0, [])  # reader
    with pytest.raises(InvalidChange):
        acl.check_change(BOB.public, b"\x01" * 32, key0, [])
    w.run("owner removes carl")
    head1, key1 = acl.write_position(BOB.public)
    assert key1 != key0
    with pytest.raises(UnknownReadKey):
        acl.check_change(BOB.public, head1, key0, [head0])  # old key after a rotation
    with pytest.raises(InvalidChange):
        acl.check_change(BOB.public, head0, key0, [head1])  # ACL head goes backwards
    acl.check_change(BOB.public, head1, key1, [head0, head1])
    assert acl.knows_head(head1) and not acl.knows_head(b"\x02" * 32)
    assert acl.read_key(key1) is not None  # main replica runs as the owner


def test_weak_removal_is_flagged_for_backdated_changes() -> None:
    w, acl = _space()
    before = acl.heads[-1]
    w.run("owner removes bob")
    # Bob names the head before his removal: allowed by the gate (Any-Sync semantics) ...
    acl.check_change(BOB.public, before, acl.state_at(before).current_key_id, [])
    # ... but it is not concurrent with the removal (it precedes it), so not flagged; a
    # head on a branch concurrent with the removal is.
    assert acl.concurrent_removal(BOB.public, before) is None
    w.run("fork r2 from main")
    r2 = w.acl("r2")
    w2 = World()
    w2.replicas = {"main": Acl.from_records(SPACE, acl.export()[:-1])}
    w2.codes = w.codes
    w2.run("owner rotates")
    for raw in w2.acl("main").export():
        r2.add(raw)
    side = w2.acl("main").heads[-1]
    assert r2.concurrent_removal(BOB.public, side) is not None


def test_invite_code_roundtrip() -> None:
    code = InviteCode(b"\x01" * 32, b"\x02" * 32)
    assert InviteCode.decode(code.encode()) == code
    for bad in ("nope", InviteCode.PREFIX + "AAAA", code.encode()[:-3]):
        with pytest.raises(BadId):
            InviteCode.decode(bad)


def test_state_at_is_cached_along_a_chain() -> None:
    _w, acl = _space()
    for _ in range(150):
        acl.change_permission(OWNER, BOB.public, Role.READER)
        acl.change_permission(OWNER, BOB.public, Role.WRITER)
    heads = [decode_record(r).id for r in acl.export()]
    for h in heads:
        acl.state_at(h)
    assert all(acl.state_at(h) is acl.state_at(h) for h in heads)
