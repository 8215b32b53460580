"""Sync wire messages: round trips, strict refusals, and total decoding under fuzzing."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync.codec import pack
from p2psync.errors import (
    AccessDenied,
    DecodeError,
    MessageTooLarge,
    P2PSyncError,
    ProtocolError,
    RateLimited,
    UnknownMessageType,
    UnknownSpace,
    UnsupportedVersion,
)
from p2psync.sync import messages as m

ids = st.binary(min_size=32, max_size=32)
space_ids = st.text(min_size=1, max_size=m.MAX_SPACE_ID_LEN)
raws = st.lists(st.binary(max_size=300), max_size=5).map(tuple)
heads = st.lists(ids, max_size=4).map(tuple)


@st.composite
def range_queries(draw: st.DrawFn) -> m.RangeQuery:
    bits = draw(st.integers(0, m.MAX_RANGE_BITS))
    prefix = draw(st.integers(0, (1 << bits) - 1))
    return m.RangeQuery(bits, prefix, draw(ids), draw(st.integers(0, m.MAX_RANGE_COUNT)))


@st.composite
def range_results(draw: st.DrawFn) -> m.RangeResult:
    q = draw(range_queries())
    els = draw(st.none() | st.lists(st.tuples(ids, ids), max_size=4).map(tuple))
    count = q.count if els is None else len(els)
    return m.RangeResult(q.bits, q.prefix, q.hash, count, els)


token_lists = st.sampled_from(m.TOKEN_BUCKETS[:2]).flatmap(
    lambda n: st.lists(st.binary(min_size=16, max_size=16), min_size=n, max_size=n).map(tuple)
)

messages = st.one_of(
    st.builds(m.SpaceHello, st.binary(min_size=32, max_size=32)),
    st.builds(m.SpaceTokens, token_lists),
    st.builds(m.HeadSyncRequest, space_ids, st.integers(0, m.MAX_RANGE_ELEMENTS),
              st.lists(range_queries(), max_size=5).map(tuple)),
    st.builds(m.HeadSyncResponse, space_ids, st.lists(range_results(), max_size=5).map(tuple)),
    st.builds(m.HeadUpdate, space_ids, ids, heads, raws),
    st.builds(m.FullSyncRequest, space_ids, ids, heads, heads, raws,
              st.integers(0, m.MAX_BATCH_BYTES), st.booleans()),
    st.builds(m.FullSyncResponse, space_ids, ids, heads, raws, st.booleans()),
    st.builds(m.AclHeadUpdate, space_ids, heads, raws),
    st.builds(m.AclSyncRequest, space_ids, heads, raws, st.integers(0, m.MAX_BATCH_BYTES)),
    st.builds(m.AclSyncResponse, space_ids, heads, raws, st.booleans()),
    st.builds(m.BootstrapRequest, space_ids, st.none() | st.binary(max_size=64),
              st.none() | ids, st.integers(0, m.MAX_OBJECT_PAGE)),
    st.builds(m.BootstrapResponse, space_ids, st.none() | st.binary(max_size=200), raws,
              st.lists(ids, max_size=4).map(tuple), st.none() | ids),
    st.builds(m.ErrorMessage, st.sampled_from(m.ErrorCode), st.text(max_size=50),
              st.none() | st.integers(0, 2**32 - 1)),
)

TYPED = (DecodeError, UnknownMessageType, MessageTooLarge)


@given(messages, st.integers(0, m.MAX_REQUEST_ID))
def test_every_message_round_trips(msg: m.Message, rid: int) -> None:
    raw = m.encode(msg, rid)
    env = m.decode(raw)
    assert env.message == msg and env.request_id == rid
    assert m.encode(env.message, rid) == raw  # canonical: one value, one encoding
    assert m.peek_request_id(raw) == rid


def test_every_type_is_covered_by_the_strategy() -> None:
    assert {int(t) for t in m.MsgType} == set(m._READERS)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decoding_random_bytes_raises_only_typed_errors(raw: bytes) -> None:
    with contextlib.suppress(TYPED):
        m.decode(raw)
    m.peek_request_id(raw)  # total: never raises


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=30,
)


@settings(max_examples=300)
@given(st.integers(0, 70), st.integers(-2, 2**33), msgpack_values)
def test_decoding_structured_garbage_raises_only_typed_errors(
    mtype: int, rid: int, body: object
) -> None:
    raw = pack([m.PROTOCOL_VERSION, mtype, rid, body])
    with contextlib.suppress(TYPED):
        m.decode(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.data())
def test_mutated_messages_never_crash(msg: m.Message, data: st.DataObject) -> None:
    raw = bytearray(m.encode(msg, 7))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[i:]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=3))
    try:
        env = m.decode(bytes(raw))
    except TYPED:
        return
    # whatever still decodes must re-encode to a valid message
    m.decode(m.encode(env.message, env.request_id))


def test_unknown_version_is_refused() -> None:
    raw = pack([2, int(m.MsgType.SPACE_HELLO), 1, [bytes(32)]])
    with pytest.raises(UnsupportedVersion):
        m.decode(raw)
    assert m.error_for(UnsupportedVersion("x")).code == m.ErrorCode.UNSUPPORTED_VERSION


def test_unknown_type_is_refused_and_request_id_recoverable() -> None:
    raw = pack([1, 99, 4242, []])
    with pytest.raises(UnknownMessageType):
        m.decode(raw)
    assert m.peek_request_id(raw) == 4242
    err = m.error_for(UnknownMessageType("type 99"))
    assert err.code == m.ErrorCode.UNKNOWN_MESSAGE_TYPE


@pytest.mark.parametrize(
    "body",
    [
        [bytes(31)],  # nonce too short
        [bytes(32), b"extra"],  # trailing field
        [],  # missing field
        ["not bytes" * 4],
    ],
)
def test_malformed_hello_is_decode_error(body: list[object]) -> None:
    with pytest.raises(DecodeError):
        m.decode(pack([1, int(m.MsgType.SPACE_HELLO), 1, body]))


def test_envelope_fields_are_checked() -> None:
    hello = [bytes(32)]
    for env in (
        [1, 1, -1, hello],  # negative request id
        [1, 1, 2**32, hello],  # request id too big
        [1, 1, 1, hello, "extra"],  # trailing envelope field
        [1, True, 1, hello],  # bool is not an int
        {"v": 1},  # not an array
    ):
        with pytest.raises(DecodeError):
            m.decode(pack(env))


def test_token_list_must_be_a_padding_bucket() -> None:
    for n in (0, 15, 17, 63):
        with pytest.raises(DecodeError):
            m.decode(pack([1, int(m.MsgType.SPACE_TOKENS), 1, [[bytes(16)] * n]]))
    m.decode(pack([1, int(m.MsgType.SPACE_TOKENS), 1, [[bytes(16)] * 16]]))
    with pytest.raises(DecodeError):  # wrong token size
        m.decode(pack([1, int(m.MsgType.SPACE_TOKENS), 1, [[bytes(32)] * 16]]))


def test_range_fields_are_checked() -> None:
    def req(bits: int, prefix: int) -> bytes:
        return pack([1, int(m.MsgType.HEAD_SYNC_REQUEST), 1,
                     ["s", 8, [[bits, prefix, bytes(32), 1]]]])

    m.decode(req(4, 15))
    for bits, prefix in ((4, 16), (65, 0), (-1, 0), (0, 1)):
        with pytest.raises(DecodeError):
            m.decode(req(bits, prefix))
    too_many = pack([1, int(m.MsgType.HEAD_SYNC_REQUEST), 1,
                     ["s", 8, [[0, 0, bytes(32), 0]] * (m.MAX_RANGES + 1)]])
    with pytest.raises(DecodeError):
        m.decode(too_many)
    bad_count = pack([1, int(m.MsgType.HEAD_SYNC_RESPONSE), 1,
                      ["s", [[0, 0, bytes(32), 2, [[bytes(32), bytes(32)]]]]]])
    with pytest.raises(DecodeError):  # elements must match the count
        m.decode(bad_count)


def test_empty_space_id_and_long_space_id_are_refused() -> None:
    for sid in ("", "x" * (m.MAX_SPACE_ID_LEN + 1)):
        with pytest.raises(DecodeError):
            m.decode(pack([1, int(m.MsgType.ACL_HEAD_UPDATE), 1, [sid, [], []]]))


def test_batch_caps() -> None:
    big = bytes(m.MAX_CHANGE_SIZE + 1)
    with pytest.raises(DecodeError):
        m.decode(pack([1, int(m.MsgType.HEAD_UPDATE), 1, ["s", bytes(32), [], [big]]]))
    # five 1 MiB changes are each fine but exceed the 4 MiB batch cap
    five = [bytes(m.MAX_CHANGE_SIZE)] * 5
    with pytest.raises(DecodeError):
        m.decode(pack([1, int(m.MsgType.HEAD_UPDATE), 1, ["s", bytes(32), [], five]]))
    with pytest.raises(MessageTooLarge):
        m.decode(bytes(m.MAX_MESSAGE_SIZE + 1))


def test_encode_refuses_oversize() -> None:
    msg = m.BootstrapResponse("s", None, tuple([bytes(m.MAX_ACL_RECORD_SIZE)] * 40), (), None)
    with pytest.raises(MessageTooLarge):
        m.encode(msg, 1)
    with pytest.raises(ValueError):
        m.encode(m.SpaceHello(bytes(32)), -1)


def test_unknown_error_code_is_refused() -> None:
    with pytest.raises(DecodeError):
        m.decode(pack([1, int(m.MsgType.ERROR), 1, [200, "", None]]))
    with pytest.raises(DecodeError):
        m.decode(pack([1, int(m.MsgType.ERROR), 1, [1, "", -5]]))


def test_error_mapping_both_ways() -> None:
    cases: list[tuple[Exception, m.ErrorCode, type[ProtocolError]]] = [
        (UnknownSpace("x"), m.ErrorCode.UNKNOWN_SPACE, UnknownSpace),
        (RateLimited("x"), m.ErrorCode.RATE_LIMITED, RateLimited),
        (MessageTooLarge("x"), m.ErrorCode.TOO_LARGE, MessageTooLarge),
        (DecodeError("x"), m.ErrorCode.MALFORMED, ProtocolError),
        (AccessDenied("x"), m.ErrorCode.ACCESS_DENIED, ProtocolError),
    ]
    for exc, code, back in cases:
        err = m.error_for(exc)
        assert err.code == code
        assert isinstance(err.to_exception(), back)
    internal = m.error_for(RuntimeError("secret path /home/x"))
    assert internal.code == m.ErrorCode.INTERNAL and internal.message == ""
    assert isinstance(m.error_for(RateLimited("x"), retry_after_ms=500).to_exception(),
                      P2PSyncError)


def test_take_batch_respects_caps_and_always_progresses() -> None:
    items = [b"a" * 10, b"b" * 10, b"c" * 10]
    assert m.take_batch(items, 25) == ([items[0], items[1]], True)
    assert m.take_batch(items, 100) == (items, False)
    assert m.take_batch(items, 5) == ([items[0]], True)  # one item even over the soft cap
    assert m.take_batch(items, 100, max_items=1) == ([items[0]], True)
    assert m.take_batch([], 10) == ([], False)
    with pytest.raises(MessageTooLarge):
        m.take_batch([bytes(m.MAX_BATCH_BYTES + 1)], 10)


def test_msgpack_maps_and_ext_are_refused() -> None:
    for body in (msgpack.packb({"a": 1}), msgpack.packb(msgpack.ExtType(1, b"x"))):
        raw = pack([1, 1, 1, []])[:-1] + body  # replace the empty body with a map / ext
        with pytest.raises(TYPED):
            m.decode(raw)
