"""Decoding is bounded by each message type's schema, not by the message size (issue 12.2).

The attack: an 8 MiB sync message whose body (or one of its fields) is an array of millions of
empty arrays. The old generic decoder built every one of them (~4 s, ~500 MB) before any check
ran, then decoded the message a second time to find its request id. Each test measures the
peak allocation with tracemalloc rather than time, so it is deterministic on a loaded machine.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from p2psync import codec
from p2psync.errors import DecodeError, UnknownMessageType, UnsupportedVersion
from p2psync.sync import messages as m

EIGHT_MIB = m.MAX_MESSAGE_SIZE
#: Peak allocation a refused message may cause: far below the 8 MiB input, nothing like the
#: ~500 MB the generic decoder built.
PEAK_LIMIT = 1024 * 1024


def _array32(n: int) -> bytes:
    return b"\xdd" + n.to_bytes(4, "big")


def _empty_arrays_envelope(mtype: int, *, prefix: bytes = b"", rid: int = 77) -> bytes:
    """An envelope of type ``mtype`` whose body is ``prefix`` then an array of as many empty
    arrays as fit in 8 MiB."""
    head = bytes([0x94, 1, mtype]) + b"\xce" + rid.to_bytes(4, "big") + prefix
    n = EIGHT_MIB - len(head) - 5
    return head + _array32(n) + b"\x90" * n


def _peak(fn: Callable[[], Any]) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        fn()
        err: BaseException | None = None
    except Exception as exc:
        err = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return err, peak


@pytest.mark.parametrize("mtype", [int(t) for t in m.MsgType])
def test_body_of_empty_arrays_is_refused_without_allocating(mtype: int) -> None:
    raw = _empty_arrays_envelope(mtype)
    assert len(raw) == EIGHT_MIB
    err, peak = _peak(lambda: m.decode(raw))
    assert isinstance(err, DecodeError)
    assert peak < PEAK_LIMIT, f"refusing cost {peak} bytes"
    assert m.request_id_of(err) == 77  # parsed once: the error names the request


@pytest.mark.parametrize(("mtype", "prefix"), [
    # a batch field of a head update: [space, object id, heads, <changes>]
    (int(m.MsgType.HEAD_UPDATE), b"\x94\xa1s\xc4\x20" + bytes(32) + b"\x90"),
    # the ranges of a head-sync request: [space, threshold, <ranges>]
    (int(m.MsgType.HEAD_SYNC_REQUEST), b"\x93\xa1s\x08"),
    # the object page of a bootstrap response: [space, header, records, <objects>, next]
    (int(m.MsgType.BOOTSTRAP_RESPONSE), b"\x95\xa1s\xc0\x90"),
])
def test_field_of_empty_arrays_is_refused_without_allocating(mtype: int, prefix: bytes) -> None:
    raw = _empty_arrays_envelope(mtype, prefix=prefix)
    err, peak = _peak(lambda: m.decode(raw))
    assert isinstance(err, DecodeError), err
    assert peak < PEAK_LIMIT, f"refusing cost {peak} bytes"
    assert m.request_id_of(err) == 77


def test_envelope_of_empty_arrays_is_refused_without_allocating() -> None:
    n = EIGHT_MIB - 5
    raw = _array32(n) + b"\x90" * n
    err, peak = _peak(lambda: m.decode(raw))
    assert isinstance(err, DecodeError)
    assert peak < PEAK_LIMIT
    assert m.request_id_of(err) is None and m.peek_request_id(raw) is None


def test_errors_carry_the_request_id() -> None:
    unknown = codec.pack([1, 99, 4242, []])
    with pytest.raises(UnknownMessageType) as info:
        m.decode(unknown)
    assert m.request_id_of(info.value) == 4242
    old = codec.pack([2, 1, 9, [bytes(32)]])
    with pytest.raises(UnsupportedVersion) as info2:
        m.decode(old)
    assert m.request_id_of(info2.value) == 9
    bad_rid = codec.pack([1, 1, 2**40, [bytes(32)]])
    with pytest.raises(DecodeError) as info3:
        m.decode(bad_rid)
    assert m.request_id_of(info3.value) is None


def test_largest_legitimate_message_still_decodes() -> None:
    """The schema caps are the protocol's own: the biggest valid head-sync response (256
    enumerated ranges of 256 elements) and a full 4 MiB change batch both decode."""
    pair = (bytes(32), bytes(32))
    results = tuple(m.RangeResult(16, i, bytes(32), m.MAX_RANGE_ELEMENTS,
                                  (pair,) * m.MAX_RANGE_ELEMENTS) for i in range(m.MAX_RANGES))
    big = m.HeadSyncResponse("s", results)
    assert m.decode(m.encode(big, 5)).message == big
    batch = m.FullSyncResponse("s", bytes(32), (), (bytes(1024),) * 4096, False)
    assert m.decode(m.encode(batch, 6)).message == batch


def test_signed_record_decoder_caps_total_containers() -> None:
    """Signed records (ACL records, changes, certificates) are decoded by unpack_bounded: the
    total number of arrays it builds is capped while decoding, not after."""
    n = 1024 * 1024 - 5
    raw = _array32(n) + b"\x90" * n  # a 1 MiB "change body" of empty arrays
    err, peak = _peak(lambda: codec.unpack(raw))
    assert isinstance(err, DecodeError)
    assert peak < 4 * PEAK_LIMIT, f"refusing cost {peak} bytes"
    # nested lists, each short, count too
    nested = codec.pack([[[]] * 15] * 15)  # 241 short lists
    with pytest.raises(DecodeError):
        codec.unpack_bounded(nested, max_containers=100)
    assert codec.unpack_bounded(codec.pack([[1], [2, [3]]]), max_containers=4) == [[1], [2, [3]]]


def test_acl_record_of_empty_arrays_is_refused_cheaply() -> None:
    from p2psync.errors import InvalidAclRecord
    from p2psync.replica.acl_records import MAX_ACL_RECORD_SIZE, decode_record

    n = MAX_ACL_RECORD_SIZE - 128  # the whole signed record stays within its size cap
    body = _array32(n) + b"\x90" * n
    raw = codec.pack([body, bytes(64)])
    err, peak = _peak(lambda: decode_record(raw))
    assert isinstance(err, InvalidAclRecord)
    assert peak < 4 * PEAK_LIMIT
