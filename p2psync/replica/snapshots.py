"""Snapshots: when a writer makes one, and which one a shallow tree may start from (issue 13).

A snapshot change carries an encrypted Automerge ``save()`` of its author's document
(docs/replica.md "Snapshots"). Two uses:

* **opening** a document loads the latest snapshot and applies only the changes after it;
* **snapshot-first fetch**: a fresh member device fetches, per document, the root, the latest
  snapshot S and the changes after S (a *shallow* tree, docs/replica.md "Shallow trees"),
  verifying a handful of signatures instead of one per change of the whole history.

Both help only if writers make snapshots. :class:`SnapshotPolicy` decides when, after each
local flush, once the raw bytes of the changes attached since the last snapshot reach
:data:`BUSY_FACTOR` times the size of that snapshot (and at least :data:`MIN_SNAPSHOT_BYTES`),
the document emits a new one — snapshotting is amortised O(1) per byte written; and when a
document *goes idle* (the space drops it from its open set, or the node closes) it snapshots
if at least :data:`IDLE_MIN_BYTES` (and an eighth of the last snapshot) came since, so that a
document left alone is fetched as root + snapshot. The policy counts every change of the tree
(also other authors' received ones) but only a device that wrote to the document triggers a
snapshot (after its flush, or when the document it wrote goes idle): a device that only
reads never writes one.

:func:`latest_snapshot` (the responder side) and :func:`check_base` (the receiver side) hold
the rule of what a shallow tree may start from: a change whose sealed flag says snapshot, by
an author who was a writer at the change's ACL head (the tree's gate checks that) and has not
been removed at or after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from p2psync.errors import (
    DecodeError,
    DecryptionFailed,
    InvalidChange,
    P2PSyncError,
    RemovedAuthor,
    UnknownReadKey,
)
from p2psync.replica.change import Change

if TYPE_CHECKING:  # pragma: no cover
    from p2psync.replica.acl import Acl
    from p2psync.replica.tree import ObjectTree

log = logging.getLogger("p2psync.document")


class Document(Protocol):
    """What the policy uses of :class:`p2psync.replica.document.Document` (which imports
    this module: named here by shape, not by import)."""

    @property
    def tree(self) -> ObjectTree: ...

    @property
    def loaded_snapshot(self) -> bytes | None: ...

    def snapshot(self) -> Change | None: ...

#: While a document is being written: no snapshot until the changes since the last one weigh
#: this much (a small document's few edits are cheaper to fetch than to snapshot repeatedly)…
MIN_SNAPSHOT_BYTES = 32 * 1024
#: … and :data:`BUSY_FACTOR` times the last snapshot's size: ``save()`` costs ~10× more CPU per
#: output byte than signing a change, so a busy document snapshots every ~8 snapshot-sizes.
BUSY_FACTOR = 8
#: When a document goes idle (dropped from the space's open set, or the node closes): snapshot
#: if the changes since the last one weigh this much and an eighth of that snapshot.
IDLE_MIN_BYTES = 4 * 1024
IDLE_FACTOR = 0.125


class SnapshotPolicy:
    """Per document: when to emit a snapshot (see the module doc). State is a tree position
    and two byte counts; it starts from the snapshot the document was opened from."""

    min_bytes: int = MIN_SNAPSHOT_BYTES
    busy_factor: float = BUSY_FACTOR
    idle_min_bytes: int = IDLE_MIN_BYTES
    idle_factor: float = IDLE_FACTOR

    def __init__(self) -> None:
        self._pos: int | None = None  #: tree attach position counted up to
        self.since = 0  #: raw bytes of changes attached after the last snapshot
        self.base = 0  #: raw size of the last snapshot (0: none known)
        self.made = 0  #: snapshots this policy saw made
        self.wrote = False  #: this device flushed a change of the document since it opened

    def _count(self, tree: ObjectTree, loaded: bytes | None) -> None:
        if self._pos is None:
            changes = tree.changes()
            start = 0
            if loaded is not None and loaded in tree:
                start = next(i for i in range(len(changes) - 1, -1, -1)
                             if changes[i].id == loaded)
                self.base = len(changes[start].raw)
                start += 1
            self.since = sum(len(c.raw) for c in changes[start:])
        else:
            self.since += sum(len(c.raw) for c in tree.changes_from(self._pos))
        self._pos = len(tree)

    def due(self, doc: Document, *, idle: bool = False) -> bool:
        """Whether ``doc`` should snapshot now (counts what attached since the last call)."""
        self._count(doc.tree, doc.loaded_snapshot)
        if idle:
            return self.since >= max(self.idle_min_bytes, self.idle_factor * self.base)
        return self.since >= max(self.min_bytes, self.busy_factor * self.base)

    def after_flush(self, doc: Document) -> Change | None:
        """Called by :meth:`Document.flush` after it signed a change: snapshot if due."""
        self.wrote = True
        return self._make(doc) if self.due(doc) else None

    def on_idle(self, doc: Document) -> Change | None:
        """The document goes idle (the space drops it from its open set, the node closes):
        snapshot if anything worth it was written since the last one, so that a device
        fetching it later verifies the snapshot and nothing after it. Only a materialised
        document this device wrote to since it opened it makes one (a device that only
        reads — even a writer's — leaves snapshots to the writers)."""
        return self._make(doc) if self.wrote and self.due(doc, idle=True) else None

    def _make(self, doc: Document) -> Change | None:
        """A failure is logged, never raised (the flush succeeded; a snapshot only speeds up
        opening and fetching); a snapshot too big for one change is retried only after as
        many new bytes as one change may carry."""
        try:
            snap = doc.snapshot()
        except P2PSyncError as exc:
            log.warning("snapshot of %s failed: %s", doc.tree.id.hex()[:12], exc)
            snap = None
        if snap is None:
            self.base = max(self.base, 1 << 20)
            self.since = 0
            self._pos = len(doc.tree)
        return snap

    def snapshotted(self, tree: ObjectTree, snap: Change) -> None:
        """A snapshot was just made (by this policy or by ``Document.snapshot()``)."""
        self.base = len(snap.raw)
        self.since = 0
        self._pos = len(tree)
        self.made += 1


def is_snapshot(acl: Acl, ch: Change) -> bool:
    """Whether ``ch``'s flag says snapshot: the clear flag (format 1) or the sealed one
    (format 2, opened with the read key it names). False when it cannot be read here."""
    if ch.snapshot is not None:
        return bool(ch.snapshot)
    key = acl.read_key(ch.read_key_id)
    if key is None:
        return False
    try:
        return ch.open(key).snapshot
    except (DecryptionFailed, DecodeError):
        return False


def check_base(acl: Acl, ch: Change) -> None:
    """Raise unless ``ch`` may be the base of a shallow tree on this replica: its flag says
    snapshot (readable with a read key held here) and its author was not removed at or after
    its ACL head (whatever the space's removal policy: a base is trusted for what it says
    about its past, so a removed author's is never taken). The tree checks the rest
    (signature, writer at the ACL head: :meth:`ObjectTree.attach_base`)."""
    if ch.snapshot is None and acl.read_key(ch.read_key_id) is None:
        raise UnknownReadKey("a shallow base must be readable here (its snapshot flag is "
                             "sealed under a read key this replica does not hold)")
    if not is_snapshot(acl, ch):
        raise InvalidChange("a shallow tree starts only from a snapshot change")
    if ch.acl_head in acl and acl.removed_after(ch.author, ch.acl_head) is not None:
        raise RemovedAuthor("a shallow base by an author removed at or after its ACL head")


def latest_snapshot(tree: ObjectTree, acl: Acl,
                    usable: Callable[[Change], bool] | None = None) -> Change | None:
    """The most recently attached snapshot of ``tree`` that :func:`check_base` accepts (and
    ``usable``, if given), or None. Walks back in attach order, opening each change's sealed
    part (only a key holder finds one: format 2 seals the flag)."""
    for ch in reversed(tree.changes()):
        if ch.is_root:
            return None
        try:
            check_base(acl, ch)
        except P2PSyncError:
            continue
        if usable is None or usable(ch):
            return ch
    return None
