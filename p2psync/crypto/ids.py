"""Printable, checksummed ids for public keys and content hashes.

Form: a one-letter kind prefix, then lowercase RFC 4648 base32 (no padding) of the 32 key bytes
followed by a 4-byte BLAKE2b checksum over ``kind || key``. The kind is in the checksum, so an
account id pasted where a peer id is expected fails the check instead of meaning something else.
"""

from __future__ import annotations

import base64
import hashlib

from p2psync.errors import BadId

ACCOUNT = "a"  #: account (Ed25519 identity) public key
PEER = "p"  #: device / peer (Ed25519) public key
_KINDS = {ACCOUNT, PEER}
_CHECK = 4


def _checksum(kind: str, key: bytes) -> bytes:
    return hashlib.blake2b(kind.encode() + key, digest_size=_CHECK).digest()


def encode_key(kind: str, key: bytes) -> str:
    """Printable id for a 32-byte public key of the given kind."""
    if kind not in _KINDS:
        raise ValueError(f"unknown id kind {kind!r}")
    if len(key) != 32:
        raise ValueError("public keys are 32 bytes")
    body = base64.b32encode(key + _checksum(kind, key)).decode().rstrip("=").lower()
    return kind + body


def decode_key(kind: str, text: str) -> bytes:
    """Parse a printable id of the given kind back to its 32 key bytes, checking the checksum."""
    if not isinstance(text, str) or not text.startswith(kind) or kind not in _KINDS:
        raise BadId(f"not a{'n account' if kind == ACCOUNT else ' peer'} id: {text!r}")
    body = text[1:].strip().upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (ValueError, base64.binascii.Error) as exc:  # type: ignore[attr-defined]
        raise BadId(f"id {text!r} is not valid base32") from exc
    if len(raw) != 32 + _CHECK:
        raise BadId(f"id {text!r} has the wrong length")
    key, check = raw[:32], raw[32:]
    if _checksum(kind, key) != check:
        raise BadId(f"id {text!r} has a bad checksum (mistyped?)")
    return key


def account_id(key: bytes) -> str:
    return encode_key(ACCOUNT, key)


def peer_id(key: bytes) -> str:
    return encode_key(PEER, key)


def short_hash(content: bytes) -> str:
    """Printable form of a content id (no checksum: content ids are verified by re-hashing)."""
    return base64.b32encode(content).decode().rstrip("=").lower()


def parse_hash(text: str, size: int = 32) -> bytes:
    """Inverse of :func:`short_hash`."""
    body = text.strip().upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (ValueError, base64.binascii.Error) as exc:  # type: ignore[attr-defined]
        raise BadId(f"{text!r} is not a valid content id") from exc
    if len(raw) != size:
        raise BadId(f"{text!r} is not a {size}-byte content id")
    return raw
