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


def random_dag(owner: Owner, root_id: bytes, n: int, seed: int) -> list[bytes]:
    """``n`` raw changes of one tree with random concurrent branches, in causal order."""
    import random

    from p2psync.replica.change import build_change

    rng = random.Random(seed)
    ids: list[bytes] = [root_id]
    children: set[bytes] = set()
    out: list[bytes] = []
    for i in range(n):
        tips = [x for x in ids if x not in children] or ids
        k = rng.choice([1, 1, 1, 2, 3])
        prev = rng.sample(tips, min(k, len(tips))) if rng.random() < 0.6 else [rng.choice(ids)]
        ch = build_change(owner.account, owner.key, b"p%d" % i, space_id=SPACE_ID,
                          tree_id=root_id, prev_ids=prev, acl_head=owner.acl_root,
                          read_key_id=owner.acl_root, timestamp=i)
        children.update(prev)
        ids.append(ch.id)
        out.append(ch.raw)
    return out


class GrowingAcl(OwnerOnlyAcl):
    """Owner-only ACL whose set of known records can grow (to test ACL-head waiting)."""

    def __init__(self, owner: bytes, root_id: bytes, read_key: ReadKey | None) -> None:
        super().__init__(owner, root_id, read_key)
        self.known = {root_id}

    def knows_head(self, acl_head: bytes) -> bool:
        return acl_head in self.known

    def check_change(self, author: bytes, acl_head: bytes, read_key_id: bytes,
                     parent_acl_heads: object = ()) -> None:
        from p2psync.errors import AccessDenied, UnknownReadKey

        if author != self.owner:
            raise AccessDenied("only the owner may write in this space")
        if read_key_id != self.root_id:
            raise UnknownReadKey("unknown read key")
