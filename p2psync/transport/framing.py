"""Sans-IO framing: length-prefixed Noise messages and the typed records inside them.

Wire frame: ``u32 length (big-endian) | body`` with ``1 <= length <= max_frame`` (at most 65535,
the Noise message limit). Before the handshake completes the body is a Noise handshake message;
after, it is a Noise transport message whose plaintext is a *record*:
``u8 type | u32 stream id | payload``. The decoder never buffers more than one frame, so a
peer cannot balloon memory, and any defect raises :class:`~p2psync.errors.FrameError`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from p2psync.errors import FrameError
from p2psync.transport.noise import MAX_MESSAGE_LEN, TAG_LEN, CipherState

HEADER = struct.Struct(">I")
RECORD_HEADER = struct.Struct(">BI")
#: Hard ceiling on a frame body (the Noise limit).
MAX_FRAME = MAX_MESSAGE_LEN
#: Largest record payload that fits one encrypted frame.
MAX_RECORD_PAYLOAD = MAX_FRAME - TAG_LEN - RECORD_HEADER.size


class RecordType(enum.IntEnum):
    """Record kinds. DATA/DATA_END/FIN travel on their stream; the rest on the control path."""

    DATA = 0  #: a chunk of a message; more chunks follow
    DATA_END = 1  #: the last chunk of a message
    FIN = 2  #: the sender will send nothing more on this stream
    RESET = 3  #: abort the stream both ways; payload = UTF-8 reason
    CREDIT = 4  #: payload u64: total message bytes the receiver now accepts on this stream
    STREAMS = 5  #: payload u32: total streams the receiver now lets the peer open
    PING = 6  #: payload: opaque 8 bytes, answered by PONG
    PONG = 7
    CLOSE = 8  #: payload: u16 code | UTF-8 reason; the connection ends
    ACCEPT = 9  #: responder → initiator: handshake accepted, session is live


DATA_PATH = frozenset({RecordType.DATA, RecordType.DATA_END, RecordType.FIN})


@dataclass(frozen=True, slots=True)
class Record:
    """One decrypted record."""

    type: RecordType
    stream: int
    payload: bytes


def encode_record(rtype: int, stream: int, payload: bytes = b"") -> bytes:
    return RECORD_HEADER.pack(rtype, stream) + payload


def decode_record(plaintext: bytes) -> Record:
    """Parse a record; unknown types and short records are frame errors."""
    if len(plaintext) < RECORD_HEADER.size:
        raise FrameError("record shorter than its header")
    rtype, stream = RECORD_HEADER.unpack_from(plaintext)
    try:
        kind = RecordType(rtype)
    except ValueError as exc:
        raise FrameError(f"unknown record type {rtype}") from exc
    return Record(kind, stream, plaintext[RECORD_HEADER.size:])


class FrameDecoder:
    """Splits a byte stream into frame bodies; holds at most one partial frame."""

    __slots__ = ("_buf", "_need", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        if not 1 <= max_frame <= MAX_FRAME:
            raise ValueError(f"max_frame must be within 1..{MAX_FRAME}")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need = 0  # body length of the frame being read, 0 while reading a header

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (non-zero means the peer stopped mid-frame)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return every complete frame body, in order."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while True:
            if not self._need:
                if end - pos < 4:
                    break
                (n,) = HEADER.unpack_from(buf, pos)
                if n == 0 or n > self.max_frame:
                    self._buf = bytearray()
                    raise FrameError(
                        f"frame length {n} outside 1..{self.max_frame}: oversize or garbage")
                self._need = n
                pos += 4
            if end - pos < self._need:
                break
            out.append(bytes(buf[pos:pos + self._need]))
            pos += self._need
            self._need = 0
        if pos:
            del buf[:pos]
        return out

    def eof(self) -> None:
        """The byte stream ended; a partial frame means the peer stopped mid-frame."""
        if self._buf or self._need:
            raise FrameError(f"connection ended mid-frame ({len(self._buf)} bytes pending)")


def encode_frame(body: bytes) -> bytes:
    if not 0 < len(body) <= MAX_FRAME:
        raise FrameError(f"frame body of {len(body)} bytes outside 1..{MAX_FRAME}")
    return HEADER.pack(len(body)) + body


class SecureFramer:
    """Encrypts records into frames and back with one Noise CipherState per direction."""

    __slots__ = ("decoder", "recv", "send")

    def __init__(self, send: CipherState, recv: CipherState, max_frame: int = MAX_FRAME) -> None:
        self.send = send
        self.recv = recv
        self.decoder = FrameDecoder(max_frame)

    def seal(self, record: bytes) -> bytes:
        """Frame one record (len(record) <= MAX_FRAME - 16)."""
        ct = self.send.encrypt_with_ad(None, record)
        return HEADER.pack(len(ct)) + ct

    def open(self, data: bytes | bytearray | memoryview) -> list[Record]:
        """Feed received bytes; return the authenticated records they complete."""
        return [decode_record(self.recv.decrypt_with_ad(None, body))
                for body in self.decoder.feed(data)]
