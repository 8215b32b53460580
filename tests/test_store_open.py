"""Store open (issue 13): the fast parser for stored changes accepts exactly what the strict
parser accepts, with the same result, and refuses the rest with the same typed error."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from p2psync.codec import content_id, pack
from p2psync.crypto.signed import make_signed
from p2psync.errors import DecodeError, ReplicaError
from p2psync.replica import tree as tree_mod
from p2psync.replica.change import CHANGE_DOMAIN, parse_change
from p2psync.replica.tree import ObjectTree, parse_stored_change
from tests.replica_helpers import SPACE_ID, make_owner, random_dag


def _case_ids() -> Iterator[str]:
    """Stable test ids (case0, case1, ...) for byte-string parameters: their default ids
    hold random ciphertext, so they differ between runs and a mutation run's recorded
    test names are not found (pytest exit 4: the mutant is left unjudged)."""
    return map("case{}".format, itertools.count())


OWNER = make_owner(1)
BASE = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"root", timestamp=0)
DAG = random_dag(OWNER, BASE.id, 30, seed=7)
I32 = b"\x01" * 32
GOOD = [1, SPACE_ID, BASE.id, [I32], I32, I32, False, OWNER.account.public, 5]  # format 1
GOOD2 = [2, SPACE_ID, BASE.id, [I32], I32, I32, OWNER.account.public]  # format 2


def _raw(header: list[object] | None = None, *, body: object = None,
         sig: bytes | None = None, envelope: object = None) -> bytes:
    """A change envelope with any shape (signed by the owner; parsing never checks that)."""
    if envelope is not None:
        return pack(envelope)
    if body is None:
        body = [pack(GOOD if header is None else header), b"ciphertext"]
    b = pack(body)
    return make_signed(OWNER.account, CHANGE_DOMAIN, b) if sig is None else pack([b, sig])


def _outcome(f: object, raw: bytes) -> object:
    try:
        return f(raw, content_id(raw))  # type: ignore[operator]
    except (DecodeError, ReplicaError) as exc:
        return type(exc)


def _strict(raw: bytes, cid: bytes) -> object:
    return parse_change(raw, expected_id=cid)


def test_valid_changes_parse_the_same() -> None:
    assert tree_mod._FAST  # the fast path is on for the formats this build reads
    v2_root = _raw([2, SPACE_ID, None, [], *GOOD2[4:]])
    for raw in [BASE.root.raw, *DAG, _raw(), _raw(GOOD2), v2_root]:
        assert parse_stored_change(raw, content_id(raw)) == _strict(raw, content_id(raw))


@pytest.mark.parametrize("raw", [
    _raw([2, *GOOD[1:]]),  # unknown version
    _raw([True, *GOOD[1:]]),  # bool for the version
    _raw([1, b"space", *GOOD[2:]]),  # bytes for the space id
    _raw([1, "s" * 129, *GOOD[2:]]),  # space id too long
    _raw([*GOOD[:2], b"\x01" * 31, *GOOD[3:]]),  # short tree id
    _raw([*GOOD[:2], None, *GOOD[3:]]),  # root naming a parent
    _raw([*GOOD[:3], [], *GOOD[4:]]),  # non-root without a parent
    _raw([*GOOD[:3], [I32, I32], *GOOD[4:]]),  # the same parent twice
    _raw([*GOOD[:3], [I32[:31]], *GOOD[4:]]),  # short parent id
    _raw([*GOOD[:3], [bytes([i]) * 32 for i in range(65)], *GOOD[4:]]),  # too many parents
    _raw([*GOOD[:3], "x", *GOOD[4:]]),  # parents not a list
    _raw([*GOOD[:4], I32[:31], *GOOD[5:]]),  # short ACL head
    _raw([*GOOD[:5], b"\x01" * 33, *GOOD[6:]]),  # long read-key id
    _raw([*GOOD[:6], 0, *GOOD[7:]]),  # int for the snapshot flag
    _raw([*GOOD[:7], b"\x02" * 31, GOOD[8]]),  # short author
    _raw([*GOOD[:8], -1]),  # negative timestamp
    _raw([*GOOD[:8], True]),  # bool timestamp
    _raw([*GOOD[:8], 2**63]),  # timestamp out of range
    _raw([*GOOD, 0]),  # a trailing field
    _raw(GOOD[:8]),  # a missing field
    _raw([*GOOD2, 0]),  # format 2 with a trailing field
    _raw(GOOD2[:6]),  # format 2 without the author
    _raw([2, *GOOD[1:]]),  # format 2 with format 1's clear fields
    _raw([1, *GOOD2[1:]]),  # format 1 without its clear fields
    _raw([*GOOD2[:6], b"\x02" * 33]),  # format 2, long author
    _raw([*GOOD2[:2], None, *GOOD2[3:]]),  # format 2, root naming a parent
    _raw([3, *GOOD2[1:]]),  # a future format
    _raw(body=[pack(GOOD)]),  # body without payload
    _raw(body=[pack(GOOD), "text"]),  # str payload
    _raw(body=[pack(GOOD), b"x", b"y"]),  # extra body field
    _raw(body={"h": pack(GOOD)}),  # a map for the body
    _raw(sig=b"\x00" * 63),  # short signature
    _raw(envelope=[pack([pack(GOOD), b"x"])]),  # no signature
    _raw(envelope="text"),
    b"\xc1",  # not msgpack at all
    _raw() + b"\x00",  # trailing bytes
], ids=_case_ids())
def test_malformed_rows_fail_as_the_strict_parser_says(raw: bytes) -> None:
    strict = _outcome(_strict, raw)
    assert isinstance(strict, type), "the case must be one the strict parser refuses"
    assert _outcome(parse_stored_change, raw) is strict


def test_changed_bytes_are_an_id_mismatch() -> None:
    raw = DAG[0]
    with pytest.raises(ReplicaError, match="hash to"):
        parse_stored_change(raw[:-1] + bytes([raw[-1] ^ 1]), content_id(raw))
