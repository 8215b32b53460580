"""ACL record codec: what the mutation run of ``replica/acl_records.py`` found unguarded
(issue 21, round 3; docs/testing.md lists each mutant and the test here that kills it).
"""

from __future__ import annotations

import pytest

from p2psync.crypto.keys import AccountKey
from p2psync.errors import InvalidAclRecord
from p2psync.replica.acl_records import (
    MAX_META_SIZE,
    SpaceMeta,
    build_record,
    decode_record,
)

AUTHOR = AccountKey(b"\x13" * 32)
PREV = [b"\x0a" * 32]
KEY_ID = b"\x0c" * 32


@pytest.mark.parametrize("size", [40, MAX_META_SIZE])
def test_space_meta_round_trips_at_both_size_bounds(size: int) -> None:
    """A SPACE_META record (the space's sealed name) builds and decodes (mutant: its case
    dropped from the encoder, every rename crashes)."""
    meta = SpaceMeta(KEY_ID, bytes(range(256)) * (size // 256) + b"\x01" * (size % 256))
    rec = decode_record(build_record(AUTHOR, "s.1", PREV, meta, timestamp=5))
    assert rec.payload == meta and rec.author == AUTHOR.public


@pytest.mark.parametrize("meta", [
    SpaceMeta(KEY_ID, b"\x01" * 39),  # shorter than nonce + tag
    SpaceMeta(KEY_ID, b"\x01" * (MAX_META_SIZE + 1)),
    SpaceMeta(KEY_ID[:31], b"\x01" * 40),
], ids=["short", "long", "key-id"])
def test_space_meta_sizes_are_enforced(meta: SpaceMeta) -> None:
    with pytest.raises(InvalidAclRecord):
        decode_record(build_record(AUTHOR, "s.1", PREV, meta))
