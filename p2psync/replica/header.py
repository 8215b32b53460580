"""Space header and space id.

The header is signed by the space owner: ``body = pack([1, owner, created, seed, replication_key,
space_type])``. The space id is ``<base32 content id of the signed header>.<replication key in
base36>`` as in Any-Sync, so a header can be checked against its id by anyone, without keys.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cached_property

from p2psync.codec import Reader, content_id, pack, unpack
from p2psync.crypto.ids import account_id, short_hash
from p2psync.crypto.keys import SigningKey, verify
from p2psync.crypto.signed import make_signed, open_signed
from p2psync.errors import BadSignature, BadSpaceHeader, DecodeError

HEADER_DOMAIN = "space-header"
_VERSION = 1
MAX_HEADER_SIZE = 1024
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


@dataclass(frozen=True)
class SpaceHeader:
    """A verified space header."""

    owner: bytes
    created: int
    seed: bytes
    replication_key: int
    space_type: str
    raw: bytes

    @cached_property
    def space_id(self) -> str:
        return space_id_of(self.raw, self.replication_key)

    @property
    def owner_id(self) -> str:
        return account_id(self.owner)

    @classmethod
    def create(cls, owner: SigningKey, space_type: str = "default", *,
               created: int | None = None, seed: bytes | None = None,
               replication_key: int | None = None) -> SpaceHeader:
        """A new signed header; ``created``/``seed``/``replication_key`` are fixed only by the
        golden vectors (scripts/gen_vectors.py): by default now, and fresh random values."""
        created = int(time.time()) if created is None else created
        seed = os.urandom(16) if seed is None else seed
        rkey = int.from_bytes(os.urandom(8), "big") if replication_key is None else replication_key
        body = pack([_VERSION, owner.public, created, seed, rkey, space_type])
        raw = make_signed(owner, HEADER_DOMAIN, body)
        return cls(owner.public, created, seed, rkey, space_type, raw)

    @classmethod
    def verify(cls, raw: bytes, expected_space_id: str | None = None) -> SpaceHeader:
        """Parse and verify a signed header (and its id, when one is expected)."""
        try:
            body, sig = open_signed(raw, "space header", MAX_HEADER_SIZE)
            r = Reader(unpack(body, what="space header body"), "space header body")
            r.version([_VERSION])
            owner = r.blob("owner", size=32)
            created = r.integer("created", min_value=0)
            seed = r.blob("seed", size=16)
            rkey = r.integer("replication_key", min_value=0, max_value=2**64 - 1)
            stype = r.text("space_type", max_len=64)
            r.end()
        except DecodeError as exc:
            raise BadSpaceHeader(f"malformed space header: {exc}") from exc
        try:
            verify(owner, HEADER_DOMAIN, body, sig)
        except BadSignature as exc:
            raise BadSpaceHeader("space header is not signed by its owner") from exc
        header = cls(owner, created, seed, rkey, stype, bytes(raw))
        if expected_space_id is not None and header.space_id != expected_space_id:
            raise BadSpaceHeader(
                f"space header does not match space id {expected_space_id} "
                f"(it hashes to {header.space_id})"
            )
        return header


def space_id_of(raw_header: bytes, replication_key: int) -> str:
    return f"{short_hash(content_id(raw_header))}.{_base36(replication_key)}"
