"""ACL record codec: every payload kind round-trips, every sized field is enforced, and the
join proof covers exactly (space, invite, joiner) — what mutation testing found unguarded
(docs/testing.md)."""

from __future__ import annotations

import pytest

from p2psync.codec import pack
from p2psync.crypto.keys import AccountKey, verify
from p2psync.errors import BadSignature, InvalidAclRecord
from p2psync.replica.acl_records import (
    JOIN_DOMAIN,
    MAX_ENTRIES,
    SEALED_KEY_SIZE,
    Accept,
    AddReplicator,
    Decline,
    DeleteObjects,
    DeleteSpace,
    Invite,
    InviteJoin,
    KeyEntry,
    Leave,
    Merge,
    PermissionChange,
    Remove,
    RemoveReplicator,
    RequestJoin,
    RevokeInvite,
    Role,
    Root,
    Rotate,
    Rotation,
    TransferOwnership,
    build_record,
    decode_record,
    join_proof_message,
)

AUTHOR = AccountKey(b"\x11" * 32)
A, B = b"\x01" * 32, b"\x02" * 32
SEALED = b"\x05" * SEALED_KEY_SIZE
ROT = Rotation(members=(KeyEntry(A, SEALED),), invites=(KeyEntry(B, SEALED),),
               wraps=(KeyEntry(A, b"\x06" * 72),))
PREV = [b"\x0a" * 32]
PAYLOADS = [
    Invite(A, True, Role.WRITER, (KeyEntry(A, SEALED),)), RequestJoin(A, b"\x07" * 64),
    InviteJoin(A, b"\x07" * 64, (KeyEntry(A, SEALED),)), Accept(A, Role.READER, ()),
    Decline(A), RevokeInvite(B), PermissionChange(A, Role.ADMIN), Remove((A, B), ROT),
    Leave(), TransferOwnership(B), AddReplicator(A), RemoveReplicator(B), Rotate(ROT),
    DeleteObjects((A, B)), DeleteSpace(),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_every_payload_kind_round_trips(payload: object) -> None:
    rec = decode_record(build_record(AUTHOR, "s.1", PREV, payload, timestamp=3))  # type: ignore[arg-type]
    assert rec.payload == payload and rec.prev == tuple(PREV) and rec.author == AUTHOR.public


def test_root_and_merge_round_trip() -> None:
    assert decode_record(build_record(AUTHOR, "s.1", [], Root(SEALED))).payload == Root(SEALED)
    two = sorted([b"\x0a" * 32, b"\x0b" * 32])
    assert decode_record(build_record(AUTHOR, "s.1", two, Merge())).payload == Merge()


@pytest.mark.parametrize("payload", [
    Decline(A[:31]), RevokeInvite(B + b"\x00"), TransferOwnership(A[:31]),
    AddReplicator(A[:31]), RemoveReplicator(B + b"\x00"),
    Rotate(Rotation((KeyEntry(A[:31], SEALED),), (), ())),
    Rotate(Rotation((KeyEntry(A, SEALED[:79]),), (), ())),
    Rotate(Rotation((), (KeyEntry(A[:31], SEALED),), ())),
    Rotate(Rotation((), (KeyEntry(A, SEALED + b"\x00"),), ())),
    Rotate(Rotation((), (), (KeyEntry(A[:31], b"\x06" * 72),))),
    Rotate(Rotation((), (), (KeyEntry(A, b"\x06" * 71),))),
    PermissionChange(A, 0),  # type: ignore[arg-type]
    Invite(A[:31], True, Role.WRITER, ()),
    Invite(A, True, Role.WRITER, (KeyEntry(A[:31], SEALED),)),
    Invite(A, True, Role.WRITER, (KeyEntry(A, SEALED[:79]),)),
], ids=lambda p: type(p).__name__)
def test_wrong_sizes_and_roles_are_refused(payload: object) -> None:
    with pytest.raises(InvalidAclRecord):
        decode_record(build_record(AUTHOR, "s.1", PREV, payload))  # type: ignore[arg-type]


def test_root_sealed_key_size_is_enforced() -> None:
    for bad in (SEALED[:79], SEALED + b"\x00"):
        with pytest.raises(InvalidAclRecord):
            decode_record(build_record(AUTHOR, "s.1", [], Root(bad)))


def test_key_entry_lists_are_bounded() -> None:
    refs = sorted(i.to_bytes(32, "big") for i in range(MAX_ENTRIES + 1))
    ok = Rotate(Rotation((), (), tuple(KeyEntry(r, b"\x06" * 72) for r in refs[:-1])))
    assert decode_record(build_record(AUTHOR, "s.1", PREV, ok)).payload == ok
    big = Rotate(Rotation((), (), tuple(KeyEntry(r, b"\x06" * 72) for r in refs)))
    with pytest.raises(InvalidAclRecord):
        decode_record(build_record(AUTHOR, "s.1", PREV, big))


def test_join_proof_covers_space_invite_and_joiner() -> None:
    invite_key = AccountKey(b"\x12" * 32)
    msg = join_proof_message("s.1", A, B)
    assert msg == pack(["s.1", A, B])
    sig = invite_key.sign(JOIN_DOMAIN, msg)
    verify(invite_key.public, JOIN_DOMAIN, pack(["s.1", A, B]), sig)
    for other in (join_proof_message("s.2", A, B), join_proof_message("s.1", B, B),
                  join_proof_message("s.1", A, A)):
        with pytest.raises(BadSignature):
            verify(invite_key.public, JOIN_DOMAIN, other, sig)
