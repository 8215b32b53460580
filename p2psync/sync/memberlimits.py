"""Per-author and per-space limits on an ordinary device (issue 20.7; sans-IO).

Quotas used to exist only on backups, so any writer could make every member's device store
unbounded documents and changes. :class:`MemberLimits` caps, per space, the documents (trees),
changes and bytes of raw changes stored, in total and per author. :class:`MemberUsage` counts
what is stored (from the store once per space, then from the space's tree listeners) and
:meth:`MemberUsage.check` refuses a batch from a peer that would pass a limit with
:class:`~p2psync.errors.MemberLimitExceeded` *before* anything of it is stored (the
``StoragePolicy.admit_changes`` contract), so a refusal never leaves a partial batch. Our own
edits are counted but never refused: the limits are about what others make us store.

:class:`~p2psync.sync.replicas.DevicePolicy` applies them when given limits; the engine's
ingest turns the refusal into ``STORAGE_REFUSED`` to the pusher and the space's ``last_error``
(visible in status), without a strike. 0 means unlimited, the default for every field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from p2psync.codec import content_id
from p2psync.errors import DecodeError, MemberLimitExceeded, ReplicaError
from p2psync.replica.change import parse_change
from p2psync.replica.space import Space
from p2psync.replica.tree import AddResult


@dataclass(frozen=True)
class MemberLimits:
    """What one space, and one author within a space, may make this device store."""

    space_documents: int = 0  #: documents one space may hold here (0: no limit)
    space_changes: int = 0  #: tree changes one space may hold here (0: no limit)
    space_bytes: int = 0  #: bytes of changes one space may hold here (0: no limit)
    author_documents: int = 0  #: documents one author may create in a space (0: no limit)
    author_changes: int = 0  #: tree changes one author may make in a space (0: no limit)
    author_bytes: int = 0  #: bytes of changes one author may make in a space (0: no limit)

    @property
    def enabled(self) -> bool:
        return any((self.space_documents, self.space_changes, self.space_bytes,
                    self.author_documents, self.author_changes, self.author_bytes))


@dataclass
class Tally:
    """Documents, changes and bytes counted for one space or one author in a space."""

    documents: int = 0
    changes: int = 0
    bytes: int = 0

    def add(self, documents: int, changes: int, size: int) -> None:
        self.documents += documents
        self.changes += changes
        self.bytes += size


def _over(kind: str, tally: Tally, docs: int, changes: int, size: int, max_docs: int,
          max_changes: int, max_bytes: int) -> str | None:
    if max_docs and docs and tally.documents + docs > max_docs:
        return f"{kind} document limit ({max_docs})"
    if max_changes and tally.changes + changes > max_changes:
        return f"{kind} change limit ({max_changes})"
    if max_bytes and tally.bytes + size > max_bytes:
        return f"{kind} byte limit ({max_bytes})"
    return None


class MemberUsage:
    """Counts per space and per (space, author), and the check against :class:`MemberLimits`."""

    def __init__(self, limits: MemberLimits) -> None:
        self.limits = limits
        self.spaces: dict[str, Tally] = {}
        self.authors: dict[tuple[str, bytes], Tally] = {}
        self.refusals = 0  #: batches refused since start
        self.last_refusal: dict[str, str] = {}  #: space id -> why its last batch was refused

    def watch(self, space: Space) -> None:
        """Count what ``space`` holds (one scan of its stored changes) and follow it."""
        if space.id in self.spaces:
            return
        self.spaces[space.id] = Tally()
        for tid in space.tree_ids():
            for ch in space.tree(tid).changes():
                self._count(space.id, ch.author, ch.is_root, len(ch.raw))
        space.tree_listeners.append(self._on_tree)

    def _count(self, space_id: str, author: bytes, is_root: bool, size: int) -> None:
        docs = int(is_root)
        self.spaces.setdefault(space_id, Tally()).add(docs, 1, size)
        self.authors.setdefault((space_id, author), Tally()).add(docs, 1, size)

    def _on_tree(self, space_id: str, tree_id: bytes, result: AddResult) -> None:
        for ch in result.attached:
            self._count(space_id, ch.author, ch.is_root, len(ch.raw))

    def check(self, space: Space, tree_id: bytes, raws: Sequence[bytes]) -> None:
        """Raise :class:`MemberLimitExceeded` if storing the new changes of ``raws`` would pass
        a limit (changes already held do not count; unparseable ones are left to the
        replica, which refuses them)."""
        self.watch(space)
        held = space.tree(tree_id) if space.has_tree(tree_id) else None
        per_author: dict[bytes, Tally] = {}
        total = Tally()
        for raw in raws:
            if held is not None and content_id(raw) in held:
                continue
            try:
                ch = parse_change(raw)
            except (DecodeError, ReplicaError):
                continue
            docs = int(ch.is_root)
            per_author.setdefault(ch.author, Tally()).add(docs, 1, len(raw))
            total.add(docs, 1, len(raw))
        lim = self.limits
        why = _over("space", self.spaces[space.id], total.documents, total.changes, total.bytes,
                    lim.space_documents, lim.space_changes, lim.space_bytes)
        for author, t in per_author.items():
            if why is not None:
                break
            why = _over("author", self.authors.get((space.id, author), Tally()), t.documents,
                        t.changes, t.bytes, lim.author_documents, lim.author_changes,
                        lim.author_bytes)
        if why is not None:
            self.refusals += 1
            self.last_refusal[space.id] = why
            raise MemberLimitExceeded(f"this device refuses more: {why} reached")
