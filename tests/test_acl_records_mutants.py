"""ACL record codec: what the mutation run of ``replica/acl_records.py`` found unguarded
(issue 21, round 3; docs/testing.md lists each mutant and the test here that kills it).
"""

from __future__ import annotations

import pytest

from p2psync.codec import pack
from p2psync.crypto.keys import AccountKey
from p2psync.crypto.signed import make_signed
from p2psync.errors import InvalidAclRecord
from p2psync.replica.acl_records import (
    MAX_ENTRIES,
    MAX_META_SIZE,
    MAX_PREV,
    RECORD_DOMAIN,
    SEALED_KEY_SIZE,
    VERSION,
    Accept,
    DeleteObjects,
    Invite,
    InviteJoin,
    KeyEntry,
    Kind,
    PermissionChange,
    Remove,
    RequestJoin,
    Role,
    Rotation,
    SpaceMeta,
    build_record,
    decode_record,
)

AUTHOR = AccountKey(b"\x13" * 32)
PREV = [b"\x0a" * 32]
KEY_ID = b"\x0c" * 32
A = b"\x01" * 32
PROOF = b"\x07" * 64
SEALED = b"\x05" * SEALED_KEY_SIZE


@pytest.mark.parametrize("size", [40, MAX_META_SIZE])
def test_space_meta_round_trips_at_both_size_bounds(size: int) -> None:
    """A SPACE_META record (the space's sealed name) builds and decodes (mutant: its case
    dropped from the encoder, every rename crashes)."""
    meta = SpaceMeta(KEY_ID, bytes(range(256)) * (size // 256) + b"\x01" * (size % 256))
    rec = decode_record(build_record(AUTHOR, "s.1", PREV, meta, timestamp=5))
    assert rec.payload == meta and rec.author == AUTHOR.public


@pytest.mark.parametrize("meta", [
    SpaceMeta(KEY_ID, b"\x01" * 39),  # shorter than nonce + tag
    SpaceMeta(KEY_ID, b"\x01" * (MAX_META_SIZE + 1)),
    SpaceMeta(KEY_ID[:31], b"\x01" * 40),
], ids=["short", "long", "key-id"])
def test_space_meta_sizes_are_enforced(meta: SpaceMeta) -> None:
    with pytest.raises(InvalidAclRecord):
        decode_record(build_record(AUTHOR, "s.1", PREV, meta))


@pytest.mark.parametrize("payload", [
    RequestJoin(A[:31], PROOF), RequestJoin(A, PROOF[:63]),
    InviteJoin(A + b"\x00", PROOF, ()), InviteJoin(A, PROOF + b"\x00", ()),
    InviteJoin(A, PROOF, (KeyEntry(A[:31], SEALED),)),
    InviteJoin(A, PROOF, (KeyEntry(A, SEALED[:-1]),)),
    Accept(A[:31], Role.READER, ()),
    Accept(A, Role.READER, (KeyEntry(A + b"\x00", SEALED),)),
    Accept(A, Role.READER, (KeyEntry(A, SEALED + b"\x00"),)),
], ids=["request-invite", "request-proof", "join-invite", "join-proof", "join-key-ref",
        "join-key-blob", "accept-request", "accept-key-ref", "accept-key-blob"])
def test_join_and_accept_field_sizes_are_enforced(payload: object) -> None:
    """Every sized field of the join records is checked on decode (mutants: a size dropped —
    the record decodes, a 31-byte invite id or a 63-byte proof then reaches the ACL)."""
    with pytest.raises(InvalidAclRecord):
        decode_record(build_record(AUTHOR, "s.1", PREV, payload))  # type: ignore[arg-type]


MANY = tuple(sorted(i.to_bytes(32, "big") for i in range(1, MAX_ENTRIES + 2)))
NO_ROTATION = Rotation((), (), ())


@pytest.mark.parametrize("payload", [
    PermissionChange(A[:31], Role.WRITER),
    Remove((A + b"\x00",), NO_ROTATION), Remove(MANY, NO_ROTATION),
    DeleteObjects((A[:31],)), DeleteObjects(MANY),
], ids=["permission-member", "remove-member", "remove-many", "delete-id", "delete-many"])
def test_member_and_object_lists_are_sized_and_bounded(payload: object) -> None:
    """Sizes and the item bound of the permission, removal and deletion records (mutants: the
    size or ``max_items`` dropped — a removal naming MAX_ENTRIES + 1 members, or an account
    that is not one, decodes)."""
    with pytest.raises(InvalidAclRecord):
        decode_record(build_record(AUTHOR, "s.1", PREV, payload))  # type: ignore[arg-type]


def test_the_largest_lists_still_decode() -> None:
    """Control for the bound above: exactly MAX_ENTRIES items are fine."""
    for payload in (Remove(MANY[:-1], NO_ROTATION), DeleteObjects(MANY[:-1])):
        assert decode_record(build_record(AUTHOR, "s.1", PREV, payload)).payload == payload


def _record(*, space: object = "s.1", prev: object = PREV, author: object = None,
            timestamp: object = 5, kind: object = int(Kind.DECLINE),
            fields: object = (A,)) -> bytes:
    """A record signed by AUTHOR whose outer fields may be anything (build_record cannot
    make wrong ones)."""
    return make_signed(AUTHOR, RECORD_DOMAIN, pack([
        VERSION, space, prev, AUTHOR.public if author is None else author, timestamp, kind,
        list(fields)]))  # type: ignore[call-overload]


def test_the_outer_fields_at_their_bounds_decode() -> None:
    """Controls for the refusals below: each bound itself is accepted."""
    prevs = sorted(i.to_bytes(32, "big") for i in range(1, MAX_PREV + 1))
    for raw in (_record(space="s" * 128), _record(prev=prevs), _record(timestamp=0),
                _record(timestamp=2**63 - 1)):
        rec = decode_record(raw)
        assert rec.payload.request_id == A  # type: ignore[union-attr]
    rec = decode_record(_record(timestamp=1234))
    assert (rec.space_id, rec.prev, rec.author, rec.timestamp) == (
        "s.1", tuple(PREV), AUTHOR.public, 1234)  # what admission and expiry checks read


@pytest.mark.parametrize("raw", [
    _record(space="s" * 129),
    _record(prev=[A[:31]]), _record(prev=[A + b"\x00"]),
    _record(prev=sorted(i.to_bytes(32, "big") for i in range(1, MAX_PREV + 2))),
    _record(author=AUTHOR.public[:31]), _record(author=AUTHOR.public + b"\x00"),
    _record(timestamp=2**63), _record(timestamp=-1),
    _record(kind=-1), _record(kind=max(Kind) + 1),
], ids=["space-129", "prev-31", "prev-33", "prev-65", "author-31", "author-33", "time-2^63",
        "time-negative", "kind-negative", "kind-unknown"])
def test_outer_fields_out_of_bounds_are_an_invalid_record(raw: bytes) -> None:
    """The record's own fields are strictly sized and bounded, and a bad one is an
    InvalidAclRecord — not a crash (mutants: a size, a bound or ``min_value`` dropped; a
    negative kind then raised ValueError out of ``decode_record``)."""
    with pytest.raises(InvalidAclRecord):
        decode_record(raw)


@pytest.mark.parametrize("expires_at", [1, 2**63 - 1])
def test_invite_expiry_round_trips_at_its_bounds(expires_at: int) -> None:
    inv = Invite(A, False, Role.READER, (), expires_at)
    assert decode_record(build_record(AUTHOR, "s.1", PREV, inv)).payload == inv


def test_invite_expiry_beyond_int63_or_an_explicit_zero_is_refused() -> None:
    """Expiry is absent when unset, never 0 on the wire (canonical form)."""
    inv = Invite(A, False, Role.READER, (), 2**63)
    with pytest.raises(InvalidAclRecord):
        decode_record(build_record(AUTHOR, "s.1", PREV, inv))
    with pytest.raises(InvalidAclRecord):
        decode_record(_record(kind=int(Kind.INVITE), fields=(A, False, int(Role.READER), [], 0)))
