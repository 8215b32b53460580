"""The contract between an object tree and its space's ACL.

The object tree verifies ids and signatures itself; everything that depends on *who may do
what* is asked of an :class:`AclGate`. The real ACL (``p2psync.replica.acl``) implements it; so
does :class:`OwnerOnlyAcl`, a one-member placeholder used by tests of the tree alone.

Rules the gate enforces for a change (see docs/acl.md):
* its ``acl_head`` is a known ACL record (otherwise the change waits: :meth:`knows_head`);
* the author may write in the ACL state *at that head* (the causal past of the head only, so the
  answer never depends on arrival order);
* ``acl_head`` is not earlier than the ACL heads its parents named (equal or a descendant);
* its ``read_key_id`` names a read key valid at that head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from p2psync.crypto.box import ReadKey
from p2psync.errors import AccessDenied, InvalidChange, UnknownReadKey


class AclGate(Protocol):
    """What an object tree needs from the ACL."""

    def knows_head(self, acl_head: bytes) -> bool:
        """Whether the ACL record ``acl_head`` is known here (else the change must wait)."""
        ...

    def check_change(
        self, author: bytes, acl_head: bytes, read_key_id: bytes,
        parent_acl_heads: Sequence[bytes],
    ) -> None:
        """Raise AccessDenied / InvalidChange / UnknownReadKey if the change is not allowed."""
        ...

    def read_key(self, read_key_id: bytes) -> ReadKey | None:
        """The read key with that id, or None if this replica does not hold it (replicator)."""
        ...

    def write_position(self, author: bytes) -> tuple[bytes, bytes]:
        """``(acl_head, read_key_id)`` a local change by ``author`` should name now."""
        ...

    def removed_after(self, author: bytes, acl_head: bytes) -> bytes | None:
        """Id of a removal (or leave) of ``author`` at or after ``acl_head`` — i.e. one the
        head does not descend from — or None. Changes for which this is set are flagged."""
        ...


class OwnerOnlyAcl:
    """Placeholder ACL: one owner, one ACL record, one read key. For tree-only tests."""

    def __init__(self, owner: bytes, root_id: bytes, read_key: ReadKey | None) -> None:
        self.owner = owner
        self.root_id = root_id
        self._key = read_key

    def knows_head(self, acl_head: bytes) -> bool:
        return acl_head == self.root_id

    def check_change(
        self, author: bytes, acl_head: bytes, read_key_id: bytes,
        parent_acl_heads: Sequence[bytes],
    ) -> None:
        if acl_head != self.root_id or any(h != self.root_id for h in parent_acl_heads):
            raise InvalidChange("change names an unknown ACL head")
        if author != self.owner:
            raise AccessDenied("only the owner may write in this space")
        if read_key_id != self.root_id:
            raise UnknownReadKey("change is encrypted under an unknown read key")

    def read_key(self, read_key_id: bytes) -> ReadKey | None:
        return self._key if read_key_id == self.root_id else None

    def write_position(self, author: bytes) -> tuple[bytes, bytes]:
        return self.root_id, self.root_id

    def removed_after(self, author: bytes, acl_head: bytes) -> bytes | None:
        return None  # one member, never removed
