"""Space header: signed by the owner, id derived from the exact bytes."""

from __future__ import annotations

import pytest

from p2psync.codec import pack, unpack
from p2psync.crypto import AccountKey
from p2psync.errors import BadSpaceHeader
from p2psync.replica.header import HEADER_DOMAIN, SpaceHeader


def test_create_verify_and_id() -> None:
    owner = AccountKey.generate()
    h = SpaceHeader.create(owner)
    v = SpaceHeader.verify(h.raw, h.space_id)
    assert v.owner == owner.public and v.space_id == h.space_id
    assert SpaceHeader.create(owner).space_id != h.space_id


def test_header_of_another_space_is_refused() -> None:
    owner = AccountKey.generate()
    a, b = SpaceHeader.create(owner), SpaceHeader.create(owner)
    with pytest.raises(BadSpaceHeader, match="does not match"):
        SpaceHeader.verify(b.raw, a.space_id)


def test_tampered_and_resigned_by_stranger_refused() -> None:
    owner, mallory = AccountKey.generate(), AccountKey.generate()
    h = SpaceHeader.create(owner)
    for i in range(len(h.raw)):
        flipped = bytearray(h.raw)
        flipped[i] ^= 0x80
        with pytest.raises(BadSpaceHeader):
            SpaceHeader.verify(bytes(flipped), h.space_id)
    body, _ = unpack(h.raw)
    fields = unpack(body)
    fields[1] = owner.public
    stolen = pack([pack(fields), mallory.sign(HEADER_DOMAIN, pack(fields))])
    with pytest.raises(BadSpaceHeader, match="not signed"):
        SpaceHeader.verify(stolen)
