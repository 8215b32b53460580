"""Quota accounting of a backup (sans-IO): bytes and changes per space and per owner account.

:class:`Usage` is fed the store's totals at start and every stored or deleted batch after;
:meth:`Usage.check` decides whether a batch may be stored *before* anything is written, so a
refused batch leaves nothing behind (the tree's add is all-or-nothing as well).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2psync.backup.config import Quotas
from p2psync.errors import QuotaExceeded


@dataclass
class Tally:
    """Bytes of raw changes and number of changes."""

    bytes: int = 0
    changes: int = 0


@dataclass
class Usage:
    """What each space and each owner account stores here, checked against :class:`Quotas`."""

    quotas: Quotas
    spaces: dict[str, Tally] = field(default_factory=dict)
    owners: dict[bytes, Tally] = field(default_factory=dict)
    owner_of: dict[str, bytes] = field(default_factory=dict)
    refusals: int = 0

    def add_space(self, space_id: str, owner: bytes, bytes_: int = 0, changes: int = 0) -> None:
        """Register a space (at start with its stored totals, or when adopted)."""
        if space_id in self.owner_of:
            return
        self.owner_of[space_id] = owner
        self.spaces[space_id] = Tally(bytes_, changes)
        t = self.owners.setdefault(owner, Tally())
        t.bytes += bytes_
        t.changes += changes

    def check(self, space_id: str, bytes_: int, changes: int) -> None:
        """Raise QuotaExceeded if storing this batch would pass a quota (nothing is counted)."""
        q = self.quotas
        s = self.spaces.get(space_id, Tally())
        o = self.owners.get(self.owner_of.get(space_id, b""), Tally())
        for used, add, limit, what in (
                (s.bytes, bytes_, q.space_bytes, "space byte"),
                (s.changes, changes, q.space_changes, "space change"),
                (o.bytes, bytes_, q.account_bytes, "account byte"),
                (o.changes, changes, q.account_changes, "account change")):
            if limit and used + add > limit:
                self.refusals += 1
                raise QuotaExceeded(
                    f"backup {what} quota: {used} + {add} would exceed {limit}; "
                    f"nothing of this batch was stored (delete objects or ask the backup's "
                    f"operator for more)")

    def stored(self, space_id: str, bytes_: int, changes: int) -> None:
        """Count a batch that was stored (negative values for deletions)."""
        s = self.spaces.setdefault(space_id, Tally())
        s.bytes += bytes_
        s.changes += changes
        owner = self.owner_of.get(space_id)
        if owner is not None:
            o = self.owners.setdefault(owner, Tally())
            o.bytes += bytes_
            o.changes += changes

    @property
    def total(self) -> Tally:
        return Tally(sum(t.bytes for t in self.spaces.values()),
                     sum(t.changes for t in self.spaces.values()))
