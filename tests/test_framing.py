"""Sans-IO framing, session and handshake parser: unit tests and hypothesis fuzzing.

Example counts are sized so the whole file runs in a few seconds yet feeds tens of thousands of
inputs; ``scripts/fuzz_transport.py`` runs the same properties much longer.
"""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import (
    FlowControlError,
    FrameError,
    HandshakeError,
    IncompatibleVersion,
    StreamLimitExceeded,
    TransportError,
    UnexpectedPeer,
)
from p2psync.transport.framing import (
    HEADER,
    MAX_FRAME,
    FrameDecoder,
    Record,
    RecordType,
    SecureFramer,
    decode_record,
    encode_record,
)
from p2psync.transport.handshake import Hello, Limits, SecureHandshake
from p2psync.transport.noise import CipherState
from p2psync.transport.session import Session

N = int(os.environ.get("P2PSYNC_FUZZ_EXAMPLES", "2500"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck))


def identity() -> tuple[DeviceKey, DeviceCertificate]:
    dev = DeviceKey.generate()
    return dev, DeviceCertificate.issue(AccountKey.generate(), dev)


# --- frame decoder ---------------------------------------------------------------------------
@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=70000), min_size=1, max_size=6),
       st.lists(st.integers(1, 9000), min_size=1, max_size=20))
def test_decoder_roundtrip_any_split(bodies: list[bytes], cuts: list[int]) -> None:
    bodies = [b[:MAX_FRAME] for b in bodies]
    wire = b"".join(HEADER.pack(len(b)) + b for b in bodies)
    dec, out, pos = FrameDecoder(), [], 0
    for c in cuts * (len(wire) // max(1, sum(cuts)) + 1):
        out += dec.feed(wire[pos:pos + c])
        pos += c
        assert dec.pending <= MAX_FRAME + 4  # never more than one frame buffered
        if pos >= len(wire):
            break
    out += dec.feed(wire[pos:])
    assert out == bodies
    dec.eof()


@FUZZ
@given(st.binary(max_size=4096), st.integers(1, MAX_FRAME))
def test_decoder_garbage_only_frame_errors(data: bytes, max_frame: int) -> None:
    dec = FrameDecoder(max_frame)
    try:
        for body in dec.feed(data):
            assert 1 <= len(body) <= max_frame
        dec.eof()
    except FrameError:
        pass


def test_decoder_limits() -> None:
    with pytest.raises(FrameError, match="oversize"):
        FrameDecoder().feed(HEADER.pack(MAX_FRAME + 1))
    with pytest.raises(FrameError):
        FrameDecoder().feed(HEADER.pack(0))
    dec = FrameDecoder()
    dec.feed(HEADER.pack(10) + b"abc")
    with pytest.raises(FrameError, match="mid-frame"):
        dec.eof()


# --- secure framer ---------------------------------------------------------------------------
KEY = bytes(range(32))


@FUZZ
@given(st.binary(max_size=3000))
def test_secure_framer_rejects_forgeries(data: bytes) -> None:
    framer = SecureFramer(CipherState(KEY), CipherState(KEY))
    try:
        framer.open(data)
    except FrameError:
        return
    # only possible if no complete frame was present
    assert framer.decoder.pending == len(data) or not data


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(list(RecordType)), st.integers(0, 2**32 - 1),
                          st.binary(max_size=200)), max_size=8))
def test_secure_framer_roundtrip(records: list[tuple[RecordType, int, bytes]]) -> None:
    a = SecureFramer(CipherState(KEY), CipherState(KEY))
    b = SecureFramer(CipherState(KEY), CipherState(KEY))
    wire = b"".join(a.seal(encode_record(t, s, p)) for t, s, p in records)
    assert b.open(wire) == [Record(t, s, p) for t, s, p in records]
    if wire:  # replaying the same bytes fails: nonces moved on
        with pytest.raises(FrameError):
            b.open(wire)


# --- session ---------------------------------------------------------------------------------
LIM = Limits(max_streams=4, stream_window=4096, max_message=2048)


def pair() -> tuple[Session, Session]:
    return (Session(initiator=True, local=LIM, remote=LIM),
            Session(initiator=False, local=LIM, remote=LIM))


def deliver(src: Session, dst: Session) -> list[object]:
    recs = [decode_record(r) for _, r in src.take_outgoing()]
    return list(dst.receive(recs, None, 0.0))


def test_credit_bounds_sender_and_receiver() -> None:
    a, b = pair()
    sid = a.open_stream()
    data = memoryview(b"x" * 2048)
    assert a.write(sid, data, True) == 2048
    assert a.write(sid, data, True) == 2048
    assert a.credit(sid) == 0 and a.write(sid, data, True) == 0  # window used up
    evs = deliver(a, b)
    assert sum(1 for e in evs if type(e).__name__ == "MessageReceived") == 2
    b.consumed(sid, 2048)
    b.consumed(sid, 2048)
    deliver(b, a)
    assert a.credit(sid) == 4096
    # a peer that ignores credit is cut off
    a.streams[sid].send_limit = 10**9
    a.write(sid, memoryview(b"y" * 2048), True)
    a.write(sid, memoryview(b"y" * 2048), True)
    a.write(sid, memoryview(b"y" * 2048), True)
    with pytest.raises(FlowControlError):
        deliver(a, b)


def test_stream_limit_and_reuse() -> None:
    a, b = pair()
    sids = [a.open_stream() for _ in range(4)]
    assert not a.can_open()
    for s in sids:
        a.write(s, memoryview(b"hi"), True)
        a.finish(s)
    deliver(a, b)
    for s in sids:
        b.finish(s)
    deliver(b, a)  # FINs + STREAMS grant
    assert a.can_open()
    a._may_open = 100
    for _ in range(5):
        s = a.open_stream()
        a.write(s, memoryview(b"x"), True)
    with pytest.raises(StreamLimitExceeded):
        deliver(a, b)


def test_message_too_large_and_fin_mid_message() -> None:
    a, b = pair()
    s = a.open_stream()
    a.write(s, memoryview(b"z" * 1500), False)
    a.write(s, memoryview(b"z" * 1500), True)
    with pytest.raises(FrameError, match="exceeds"):
        deliver(a, b)
    a, b = pair()
    s = a.open_stream()
    a.write(s, memoryview(b"z" * 10), False)
    a.finish(s)
    with pytest.raises(FrameError, match="middle of a message"):
        deliver(a, b)


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_session_survives_any_records(raws: list[bytes]) -> None:
    _, b = pair()
    # FrameError / StreamLimitExceeded / FlowControlError close the connection; nothing else
    with contextlib.suppress(TransportError):
        b.receive([decode_record(r) for r in raws], None, 0.0)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(list(RecordType)), st.sampled_from([0, 1, 4, 5, 9, 8]),
                          st.binary(max_size=12)), max_size=12))
def test_session_survives_typed_records(recs: list[tuple[RecordType, int, bytes]]) -> None:
    _, b = pair()
    with contextlib.suppress(TransportError):
        b.receive([Record(t, s, p) for t, s, p in recs], None, 0.0)


# --- handshake parser ------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=600))
def test_hello_parser_only_handshake_errors(raw: bytes) -> None:
    with contextlib.suppress(HandshakeError):
        Hello.decode(raw)


DEV, CERT = identity()


@FUZZ
@given(st.binary(max_size=400))
def test_handshake_receive_garbage(raw: bytes) -> None:
    hs = SecureHandshake(initiator=False, device_key=DEV, certificate=CERT)
    try:
        out = hs.receive(raw)
    except HandshakeError:
        return
    assert out is not None and len(raw) == 32  # a bare ephemeral key is a valid message 1


def _run(i: SecureHandshake, r: SecureHandshake) -> None:
    m2 = r.receive(i.start())
    assert m2 is not None
    m3 = i.receive(m2)
    assert m3 is not None
    r.receive(m3)


def test_handshake_ok_and_version_and_expected_peer() -> None:
    (d1, c1), (d2, c2) = identity(), identity()
    i = SecureHandshake(initiator=True, device_key=d1, certificate=c1, expected_peer=d2.id)
    r = SecureHandshake(initiator=False, device_key=d2, certificate=c2)
    _run(i, r)
    assert i.result and r.result and i.result.peer_id == d2.id and r.result.peer_id == d1.id
    assert i.result.stream_secret == r.result.stream_secret
    i = SecureHandshake(initiator=True, device_key=d1, certificate=c1, expected_peer=d1.id)
    with pytest.raises(UnexpectedPeer):
        _run(i, SecureHandshake(initiator=False, device_key=d2, certificate=c2))
    i = SecureHandshake(initiator=True, device_key=d1, certificate=c1, min_version=7,
                        max_version=9)
    with pytest.raises(IncompatibleVersion, match="update p2psync on the peer"):
        _run(i, SecureHandshake(initiator=False, device_key=d2, certificate=c2))


def test_handshake_replayed_message3_rejected() -> None:
    (d1, c1), (d2, c2) = identity(), identity()
    i = SecureHandshake(initiator=True, device_key=d1, certificate=c1)
    r = SecureHandshake(initiator=False, device_key=d2, certificate=c2)
    m1 = i.start()
    m2 = r.receive(m1)
    assert m2 is not None
    m3 = i.receive(m2)
    assert m3 is not None
    r.receive(m3)
    r2 = SecureHandshake(initiator=False, device_key=d2, certificate=c2)
    r2.receive(m1)  # replayed message 1 gets a fresh ephemeral reply ...
    with pytest.raises(HandshakeError, match="authentication"):
        r2.receive(m3)  # ... so the replayed message 3 cannot authenticate


def test_fin_with_a_payload_is_a_protocol_error() -> None:
    """protocol.md: a FIN record is empty. A peer that puts bytes there (which no one reads)
    breaks the protocol: FrameError, like data after FIN; the bare FIN finishes the stream."""
    a, b = pair()
    s = a.open_stream()
    a.write(s, memoryview(b"hi"), True)
    deliver(a, b)
    with pytest.raises(FrameError, match="FIN on stream"):
        b.receive([Record(RecordType.FIN, s, b"junk")], None, 0.0)
    a, b = pair()
    s = a.open_stream()
    a.write(s, memoryview(b"hi"), True)
    deliver(a, b)
    assert any(type(e).__name__ == "StreamFinished"
               for e in b.receive([Record(RecordType.FIN, s, b"")], None, 0.0))
