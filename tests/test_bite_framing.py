"""Frame decoder end of stream: what mutation testing found unguarded (docs/testing.md)."""

from __future__ import annotations

import pytest

from p2psync.errors import FrameError
from p2psync.transport.framing import FrameDecoder, encode_frame


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
