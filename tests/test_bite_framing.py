"""Frame decoder end of stream: what mutation testing found unguarded (docs/testing.md)."""

from __future__ import annotations

import pytest

from p2psync.errors import FrameError
from p2psync.transport.framing import (
    MAX_FRAME,
    RECORD_HEADER,
    FrameDecoder,
    RecordType,
    encode_frame,
    encode_record,
)
from p2psync.transport.handshake import Limits
from p2psync.transport.session import Session


@pytest.mark.parametrize("cut", [1, 3, 4, 5])  # inside the header, header only, inside body
def test_stream_ending_mid_frame_is_an_error(cut: int) -> None:
    dec = FrameDecoder()
    assert dec.feed(encode_frame(b"abcdef")[:cut]) == []
    with pytest.raises(FrameError, match="mid-frame"):
        dec.eof()


def test_stream_ending_between_frames_is_clean() -> None:
    dec = FrameDecoder()
    assert dec.feed(encode_frame(b"abc") + encode_frame(b"d")) == [b"abc", b"d"]
    dec.eof()


def test_frame_size_limits_are_exact() -> None:
    assert FrameDecoder().feed(encode_frame(b"x" * MAX_FRAME)) == [b"x" * MAX_FRAME]
    for bad in (b"", b"x" * (MAX_FRAME + 1)):
        with pytest.raises(FrameError):
            encode_frame(bad)


def test_decoder_limit_is_inclusive_and_an_oversize_frame_resets_it() -> None:
    dec = FrameDecoder(max_frame=1024)
    assert dec.feed(encode_frame(b"y" * 1024)) == [b"y" * 1024]
    with pytest.raises(FrameError, match="outside"):
        dec.feed(encode_frame(b"y" * 1025))
    assert dec.pending == 0  # nothing of the refused frame is kept


def test_a_fin_record_is_the_bare_header() -> None:
    """docs/protocol.md: FIN's payload is empty. ``Session.finish`` relies on
    ``encode_record``'s default payload (round 5: a changed default passed every test, and the
    receiving session does not check FIN's payload, so only the sender's bytes show it)."""
    assert encode_record(RecordType.FIN, 7) == RECORD_HEADER.pack(RecordType.FIN, 7)
    lim = Limits(max_streams=4, stream_window=4096, max_message=2048)
    a = Session(initiator=True, local=lim, remote=lim)
    sid = a.open_stream()
    a.finish(sid)
    assert (sid, RECORD_HEADER.pack(RecordType.FIN, sid)) in a.take_outgoing()
