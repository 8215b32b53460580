"""Tree change records: round trip, strict parsing, signatures, payload binding."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.codec import content_id, pack, unpack
from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import AccountKey
from p2psync.crypto.signed import make_signed
from p2psync.errors import (
    BadSignature,
    DecodeError,
    DecryptionFailed,
    IdMismatch,
    InvalidChange,
    P2PSyncError,
)
from p2psync.replica.change import (
    CHANGE_DOMAIN,
    MAX_PREV_IDS,
    build_change,
    parse_change,
    verify_change,
)

AUTHOR = AccountKey(b"\x01" * 32)
KEY = ReadKey(b"\x02" * 32)
ACL = b"\x03" * 32


def _change(prev: tuple[bytes, ...] = (b"\x04" * 32,), plain: bytes = b"hello") -> bytes:
    return build_change(AUTHOR, KEY, plain, space_id="s.1", tree_id=b"\x05" * 32,
                        prev_ids=prev, acl_head=ACL, read_key_id=ACL, timestamp=7).raw


def test_round_trip_fields_and_id() -> None:
    raw = _change()
    ch = verify_change(raw)
    assert ch.id == content_id(raw) and ch.raw == raw
    assert (ch.space_id, ch.tree_id, ch.prev_ids, ch.acl_head, ch.author) == (
        "s.1", b"\x05" * 32, (b"\x04" * 32,), ACL, AUTHOR.public)
    assert not ch.is_root and ch.tree == b"\x05" * 32
    assert ch.timestamp is None and ch.snapshot is None  # format 2: sealed with the content
    sealed = ch.open(KEY)
    assert (sealed.timestamp, sealed.snapshot, sealed.plaintext) == (7, False, b"hello")
    assert ch.decrypt(KEY) == b"hello"
    assert b"hello" not in raw  # encrypted


def test_verify_without_read_key_and_expected_id() -> None:
    raw = _change()
    ch = verify_change(raw, expected_id=content_id(raw))  # no key needed
    assert ch.id == content_id(raw)
    with pytest.raises(IdMismatch):
        parse_change(raw, expected_id=b"\x00" * 32)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_flipped_bit_is_rejected(data: st.DataObject) -> None:
    raw = bytearray(_change())
    i = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[i // 8] ^= 1 << (i % 8)
    with pytest.raises(P2PSyncError) as info:
        ch = verify_change(bytes(raw))
        ch.decrypt(KEY)  # a flip that still verifies must at least fail decryption
    assert isinstance(info.value, (DecodeError, BadSignature, InvalidChange, DecryptionFailed))


def test_signed_by_someone_else_than_the_claimed_author() -> None:
    good = verify_change(_change())
    mallory = AccountKey(b"\x09" * 32)
    forged = make_signed(mallory, CHANGE_DOMAIN, good.body)  # author field still says AUTHOR
    with pytest.raises(BadSignature):
        verify_change(forged)


def test_wrong_signature_and_wrong_domain() -> None:
    good = verify_change(_change())
    with pytest.raises(BadSignature):
        verify_change(pack([good.body, bytes(64)]))
    other_domain = make_signed(AUTHOR, "acl-record", good.body)
    with pytest.raises(BadSignature):
        verify_change(other_domain)


def test_payload_cannot_be_moved_to_another_change() -> None:
    a = verify_change(_change(prev=(b"\x04" * 32,)))
    b = verify_change(_change(prev=(b"\x06" * 32,)))
    body = pack([b.header, a.payload])  # a's ciphertext under b's header, validly signed
    moved = verify_change(make_signed(AUTHOR, CHANGE_DOMAIN, body))
    with pytest.raises(DecryptionFailed):
        moved.decrypt(KEY)
    with pytest.raises(DecryptionFailed):
        a.decrypt(ReadKey(os.urandom(32)))


def test_strict_structure_and_limits() -> None:
    with pytest.raises(DecodeError):
        verify_change(_change() + b"\x00")  # trailing byte
    prevs = tuple(bytes([i]) * 32 for i in range(MAX_PREV_IDS + 1))
    with pytest.raises(DecodeError):
        verify_change(_change(prev=prevs))
    with pytest.raises(InvalidChange):
        verify_change(_change(prev=(b"\x04" * 32, b"\x04" * 32)))
    # a header with an extra field is refused, even when correctly signed
    good = verify_change(_change())
    fields = [*unpack(good.header), 1]
    body = pack([pack(fields), good.payload])
    with pytest.raises(DecodeError):
        verify_change(make_signed(AUTHOR, CHANGE_DOMAIN, body))
    with pytest.raises(InvalidChange):  # non-root change without parents
        verify_change(_change(prev=()))
