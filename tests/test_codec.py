"""Canonical codec: strict decoding and content ids over exact bytes."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync.codec import Reader, content_id, pack, unpack, unpack_bounded
from p2psync.errors import DecodeError, UnsupportedVersion

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=64)
    | st.text(max_size=32),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


@given(values)
def test_roundtrip_is_exact(value: object) -> None:
    raw = pack(value)
    assert unpack(raw) == value
    assert pack(unpack(raw)) == raw


def test_trailing_bytes_rejected() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        unpack(pack([1, 2]) + b"\x00")


def test_oversize_rejected_before_parsing() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        unpack(pack(b"x" * 100), max_size=50)


def test_maps_with_non_str_keys_and_ext_types_rejected() -> None:
    with pytest.raises(DecodeError):
        unpack(msgpack.packb({1: 2}))
    with pytest.raises(DecodeError):
        unpack(msgpack.packb(msgpack.ExtType(1, b"abc")))


@given(st.binary(max_size=200))
def test_garbage_never_crashes(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        unpack(data)


def test_content_id_is_hash_of_exact_bytes() -> None:
    a = pack([1, b"x"])
    # A non-canonical encoding of the same value (bin8 with a str-typed field) hashes differently.
    b = msgpack.packb([1, "x"])
    assert content_id(a) != content_id(b)
    assert len(content_id(a)) == 32
    assert content_id(a) == content_id(bytes(a))


def test_reader_checks_types_sizes_and_versions() -> None:
    r = Reader([1, b"ab", "s", True, [b"12"]], "rec")
    assert r.version([1]) == 1
    assert r.blob("b", size=2) == b"ab"
    assert r.text("s") == "s"
    assert r.boolean("flag") is True
    assert r.blob_list("l", size=2) == [b"12"]
    r.end()
    with pytest.raises(UnsupportedVersion):
        Reader([2], "rec").version([1])
    with pytest.raises(DecodeError, match="expected bytes"):
        Reader(["x"], "rec").blob("b")
    with pytest.raises(DecodeError, match="expected 3 bytes"):
        Reader([b"ab"], "rec").blob("b", size=3)
    with pytest.raises(DecodeError, match="expected int"):
        Reader([True], "rec").integer("i")
    with pytest.raises(DecodeError, match="trailing field"):
        r2 = Reader([1, 2], "rec")
        r2.integer("a")
        r2.end()
    with pytest.raises(DecodeError, match="missing field"):
        Reader([], "rec").integer("a")
    with pytest.raises(DecodeError, match="expected an array"):
        Reader({"a": 1}, "rec")


NON_CANONICAL = [
    ("uint8 holding a fixint", "cc05"),
    ("uint16 holding a uint8", "cd00ff"),
    ("int8 holding a positive value", "d005"),
    ("int16 holding a negative fixint", "d1ffff"),
    ("str8 holding a fixstr", "d90161"),
    ("bin16 holding 1 byte", "c5000161"),
    ("array16 holding 1 item", "dc000101"),
    ("float32", "ca3fc00000"),
    ("map with a duplicate key", "82a16101a16102"),
]


@pytest.mark.parametrize(("why", "hexraw"), NON_CANONICAL)
def test_non_canonical_encodings_are_refused(why: str, hexraw: str) -> None:
    raw = bytes.fromhex(hexraw)
    msgpack.unpackb(raw)  # valid msgpack: only the canonical rule refuses it
    with pytest.raises(DecodeError, match="not canonical"):
        unpack(raw)
    unpack_bounded(raw, canonical=False)  # the rule is what refuses it


def test_non_canonical_envelope_would_be_a_second_record() -> None:
    """Why the rule exists: re-encoding a signed envelope changes its id, not its signature."""
    body = pack([1, "x"])
    canonical = pack([body, bytes(64)])
    longer = bytes.fromhex("dc0002") + canonical[1:]  # array16 header instead of fixarray
    assert unpack_bounded(longer, canonical=False) == unpack(canonical)
    assert content_id(longer) != content_id(canonical)
    with pytest.raises(DecodeError):
        unpack(longer)
