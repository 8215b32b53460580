"""Tree changes: every bound of the strict parser, field by field (mutation testing found them
unguarded; docs/testing.md). Raw changes here are hand-built with valid signatures, so only the
parser's own checks stand between them and acceptance."""

from __future__ import annotations

import time

import pytest

from p2psync.codec import pack
from p2psync.crypto.box import NONCE_SIZE, TAG_SIZE, ReadKey
from p2psync.crypto.keys import AccountKey
from p2psync.crypto.signed import make_signed
from p2psync.errors import DecodeError, IdMismatch
from p2psync.replica.change import (
    CHANGE_DOMAIN,
    FORMAT_VERSION,
    LEGACY_VERSION,
    MAX_CHANGE_SIZE,
    MAX_PAYLOAD_SIZE,
    MAX_SPACE_ID_LEN,
    build_change,
    parse_change,
    verify_change,
)

AUTHOR = AccountKey(b"\x01" * 32)
KEY = ReadKey(b"\x02" * 32)
ID = b"\x03" * 32
#: header fields of the legacy format 1 (still read) and of format 2 (written)
FIELDS = {
    LEGACY_VERSION: ["version", "space_id", "tree_id", "prev_ids", "acl_head", "read_key_id",
                     "snapshot", "author", "timestamp"],
    FORMAT_VERSION: ["version", "space_id", "tree_id", "prev_ids", "acl_head", "read_key_id",
                     "author"],
}


def header(version: int = LEGACY_VERSION, **over: object) -> list[object]:
    good: dict[str, object] = dict(
        version=version, space_id="s.1", tree_id=ID, prev_ids=[ID], acl_head=ID,
        read_key_id=ID, snapshot=False, author=AUTHOR.public, timestamp=7)
    good.update(over)
    return [good[f] for f in FIELDS[version]]


def raw_change(hdr: list[object], payload: bytes = b"p" * 40) -> bytes:
    return make_signed(AUTHOR, CHANGE_DOMAIN, pack([pack(hdr), payload]))


def test_hand_built_change_parses_and_verifies() -> None:
    ch = verify_change(raw_change(header(snapshot=True)))
    assert ch.snapshot is True and ch.timestamp == 7 and ch.author == AUTHOR.public


def test_hand_built_format_2_change_has_no_clear_time_or_flag() -> None:
    ch = verify_change(raw_change(header(FORMAT_VERSION)))
    assert ch.version == FORMAT_VERSION and ch.author == AUTHOR.public
    assert ch.snapshot is None and ch.timestamp is None
    with pytest.raises(DecodeError):  # a format-2 header with the legacy tail is malformed
        parse_change(raw_change([*header(FORMAT_VERSION), True, 7]))
    with pytest.raises(DecodeError):  # and a legacy header without it too
        parse_change(raw_change(header(LEGACY_VERSION)[:7]))
    with pytest.raises(DecodeError, match="version"):
        parse_change(raw_change([FORMAT_VERSION + 1, *header(FORMAT_VERSION)[1:]]))


@pytest.mark.parametrize("version", [LEGACY_VERSION, FORMAT_VERSION])
@pytest.mark.parametrize("field", ["tree_id", "acl_head", "read_key_id", "author"])
@pytest.mark.parametrize("size", [31, 33])
def test_every_id_field_has_its_exact_size(version: int, field: str, size: int) -> None:
    with pytest.raises(DecodeError, match=field):
        parse_change(raw_change(header(version, **{field: b"\x04" * size})))


@pytest.mark.parametrize("version", [LEGACY_VERSION, FORMAT_VERSION])
@pytest.mark.parametrize("size", [31, 33])
def test_parent_ids_have_their_exact_size(version: int, size: int) -> None:
    with pytest.raises(DecodeError, match="prev_ids"):
        parse_change(raw_change(header(version, prev_ids=[b"\x04" * size])))


def test_timestamp_bounds() -> None:
    assert parse_change(raw_change(header(timestamp=2**63 - 1))).timestamp == 2**63 - 1
    assert parse_change(raw_change(header(timestamp=0))).timestamp == 0  # the epoch is valid
    for bad in (-1, 2**63):
        with pytest.raises(DecodeError, match="timestamp"):
            parse_change(raw_change(header(timestamp=bad)))


def test_space_id_length_bound() -> None:
    parse_change(raw_change(header(space_id="s" * MAX_SPACE_ID_LEN)))
    with pytest.raises(DecodeError, match="space_id"):
        parse_change(raw_change(header(space_id="s" * (MAX_SPACE_ID_LEN + 1))))


def test_payload_bound_is_the_payload_limit_not_only_the_record_limit() -> None:
    ok = raw_change(header(), b"p" * MAX_PAYLOAD_SIZE)
    assert len(parse_change(ok).payload) == MAX_PAYLOAD_SIZE
    big = raw_change(header(), b"p" * (MAX_PAYLOAD_SIZE + 1))
    assert len(big) < MAX_CHANGE_SIZE  # only the payload bound can refuse it
    with pytest.raises(DecodeError, match="payload"):
        parse_change(big)


def test_record_of_exactly_the_size_limit_passes_the_size_check() -> None:
    raw = raw_change(header(), b"p" * (MAX_PAYLOAD_SIZE + 1))
    raw = raw_change(header(), b"p" * (MAX_PAYLOAD_SIZE + 1 + MAX_CHANGE_SIZE - len(raw)))
    assert len(raw) == MAX_CHANGE_SIZE
    with pytest.raises(DecodeError, match="payload"):  # refused later, not for its size
        parse_change(raw)
    with pytest.raises(DecodeError, match="limit"):
        parse_change(raw + b"\x00")


def test_build_change_accepts_a_payload_of_exactly_the_limit() -> None:
    # format 2 seals [timestamp, snapshot, plaintext]: 8 bytes of wrapper for timestamp=1
    wrapper = len(pack([1, False, b"\x00" * 70_000])) - 70_000
    plain = b"\x00" * (MAX_PAYLOAD_SIZE - NONCE_SIZE - TAG_SIZE - wrapper)
    ch = build_change(AUTHOR, KEY, plain, space_id="s.1", tree_id=ID, prev_ids=[ID],
                      acl_head=ID, read_key_id=ID, timestamp=1)
    assert len(ch.payload) == MAX_PAYLOAD_SIZE
    legacy = b"\x00" * (MAX_PAYLOAD_SIZE - NONCE_SIZE - TAG_SIZE)
    ch = build_change(AUTHOR, KEY, legacy, space_id="s.1", tree_id=ID, prev_ids=[ID],
                      acl_head=ID, read_key_id=ID, timestamp=1, version=LEGACY_VERSION)
    assert len(ch.payload) == MAX_PAYLOAD_SIZE


def test_build_change_stamps_milliseconds_since_the_epoch() -> None:
    ch = build_change(AUTHOR, KEY, b"x", space_id="s.1", tree_id=ID, prev_ids=[ID],
                      acl_head=ID, read_key_id=ID)
    assert abs(ch.open(KEY).timestamp - time.time() * 1000) < 60_000


def test_verify_change_checks_the_expected_id() -> None:
    raw = raw_change(header())
    with pytest.raises(IdMismatch):
        verify_change(raw, expected_id=b"\x00" * 32)


@pytest.mark.parametrize("snapshot", [False, True])
def test_a_legacy_change_opens_with_its_clear_snapshot_flag(snapshot: bool) -> None:
    # Change.open is not mutated by mutmut (a method of a dataclass): hand mutants showed the
    # legacy branch could drop the clear flag (a snapshot read as an increment) unnoticed
    ch = build_change(AUTHOR, KEY, b"x", space_id="s.1", tree_id=ID, prev_ids=[ID],
                      acl_head=ID, read_key_id=ID, snapshot=snapshot, timestamp=9,
                      version=LEGACY_VERSION)
    sealed = parse_change(ch.raw).open(KEY)
    assert (sealed.timestamp, sealed.snapshot, sealed.plaintext) == (9, snapshot, b"x")


def test_the_sealed_timestamp_bounds_are_those_of_the_clear_one() -> None:
    for ts in (0, 2**63 - 1):
        ch = build_change(AUTHOR, KEY, b"x", space_id="s.1", tree_id=ID, prev_ids=[ID],
                          acl_head=ID, read_key_id=ID, timestamp=ts)
        assert parse_change(ch.raw).open(KEY).timestamp == ts
