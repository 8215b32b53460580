"""Shared fixtures-as-functions for replica tests: a one-owner space with real keys."""

from __future__ import annotations

import os
from dataclasses import dataclass

from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.replica.acl_gate import OwnerOnlyAcl

SPACE_ID = "testspace.1"


@dataclass
class Owner:
    """An owner account, a device of it, and the placeholder ACL of their space."""

    account: AccountKey
    device: DeviceKey
    key: ReadKey
    acl_root: bytes

    def gate(self, *, with_key: bool = True) -> OwnerOnlyAcl:
        """A fresh gate for another replica (without the read key = a replicator)."""
        return OwnerOnlyAcl(self.account.public, self.acl_root, self.key if with_key else None)


def make_owner(seed: int | None = None) -> Owner:
    if seed is None:
        return Owner(AccountKey.generate(), DeviceKey.generate(), ReadKey.generate(),
                     os.urandom(32))
    b = seed.to_bytes(2, "big")
    return Owner(AccountKey(b * 16), DeviceKey(b"d" * 30 + b), ReadKey(b"k" * 30 + b),
                 b"r" * 30 + b)
