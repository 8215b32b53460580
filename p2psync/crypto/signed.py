"""Signed envelopes: ``pack([body, signature])``, the outer form of every signed record.

The id of a signed record is :func:`p2psync.codec.content_id` of the whole envelope as received.
Who signed is inside the body, so callers parse the body, then call :func:`p2psync.crypto.verify`.
"""

from __future__ import annotations

from p2psync.codec import Reader, pack, unpack
from p2psync.crypto.keys import SigningKey


def make_signed(key: SigningKey, domain: str, body: bytes) -> bytes:
    """Sign ``body`` under ``domain`` and wrap both in an envelope."""
    return pack([body, key.sign(domain, body)])


def open_signed(raw: bytes, what: str, max_size: int) -> tuple[bytes, bytes]:
    """Split an envelope into ``(body, signature)``; raises DecodeError on bad shape."""
    r = Reader(unpack(raw, max_size=max_size, what=what), what)
    body = r.blob("body", max_len=max_size)
    sig = r.blob("signature", size=64)
    r.end()
    return body, sig
