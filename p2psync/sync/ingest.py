"""Taking in a batch of changes from a peer, a chunk at a time (sans-IO).

An :class:`Ingest` walks one batch of raw changes for one tree: a change is kept if its parents
are in the tree or earlier in the batch and its ACL head is known; orphans are dropped (never
parked, so a peer cannot fill memory with changes that never attach) and only reported as
``missing`` / ``unknown_acl`` so the caller can pull. Kept changes are verified and stored
``chunk`` at a time by :meth:`Ingest.step`; the engine yields to the event loop between steps,
so a big legitimate batch never blocks the loop for long. The first chunk the store refuses
ends the batch (one strike, not one per chunk).
"""

from __future__ import annotations

from collections.abc import Sequence

from p2psync.errors import (
    AccessDenied,
    DecodeError,
    P2PSyncError,
    QuotaExceeded,
    RemovedAuthor,
    ReplicaError,
    StoreError,
)
from p2psync.replica.change import Change, parse_change
from p2psync.replica.space import Space
from p2psync.sync.effects import Effect, Push, Strike
from p2psync.sync.messages import ErrorCode, StorageRefused
from p2psync.sync.peerstate import PeerState
from p2psync.sync.replicas import Pusher


class Ingest:
    """One incoming batch for one tree; call :meth:`step` until :attr:`done`."""

    def __init__(self, state: PeerState, source: Pusher, space: Space, tree_id: bytes,
                 raws: Sequence[bytes], *, chunk: int | None = None,
                 base_first: bool = False) -> None:
        self.state = state
        self.source = source  #: the engine the batch came from (not echoed back to it)
        self.space = space
        self.tree_id = tree_id
        self.raws = raws
        self.chunk = max(1, chunk or state.config.ingest_chunk)
        self.missing = False  #: some change lacked parents (neither held nor in the batch)
        self.unknown_acl = False  #: some change named an ACL head we do not know
        self.refused = False  #: the store refused a chunk (the rest was not tried)
        self._pos = 0
        self._seen: set[bytes] = set()
        #: a snapshot-first answer (we asked ``from_snapshot``): if the tree is new and the
        #: batch opens with its root and a change whose parents we lack, that change is taken
        #: as a shallow base (every base check applies: :meth:`Space.add_base`)
        self.base_first = base_first
        self.based = False  #: a shallow base was taken from this batch

    @property
    def done(self) -> bool:
        return self.refused or self._pos >= len(self.raws)

    def step(self) -> list[Effect]:
        """Filter and store the next chunk of connectable changes."""
        effects: list[Effect] = []
        ok: list[bytes] = []
        parsed: dict[bytes, Change] = {}  #: what the replica need not parse again
        space, tid = self.space, self.tree_id
        tree = space.tree(tid) if space.has_tree(tid) else None
        if tree is None and self.base_first and self._pos == 0:
            self.base_first = False
            effects += self._base()
            if self.refused:
                return effects
            tree = space.tree(tid) if space.has_tree(tid) else None
        while self._pos < len(self.raws) and len(ok) < self.chunk:
            raw = self.raws[self._pos]
            self._pos += 1
            try:
                ch: Change = parse_change(raw)
            except (DecodeError, ReplicaError) as exc:
                effects.append(Strike(f"unparseable change: {exc}"))
                continue
            if ch.tree != tid:
                effects.append(Strike("change for another object"))
                continue
            if tree is not None and tree.holds_or_vouches(ch.id):
                continue  # already held (or before our shallow base): skip cheaply
            if not ch.is_root and any(p not in self._seen and (
                    tree is None or not tree.holds_or_vouches(p)) for p in ch.prev_ids):
                self.missing = True
                continue
            if not space.acl.knows_head(ch.acl_head):
                self.unknown_acl = True
                continue
            self._seen.add(ch.id)
            ok.append(raw)
            parsed[raw] = ch
        if ok:
            effects += self._store(ok, parsed)
        return effects

    def _base(self) -> list[Effect]:
        """Take the batch's first two changes as root and shallow base when they look so
        (a responder that found no snapshot sends the whole tree: then nothing happens here).
        A base that fails a check is the responder's fault: one strike, batch refused."""
        if len(self.raws) < 2:
            return []
        try:
            root, base = parse_change(self.raws[0]), parse_change(self.raws[1])
        except (DecodeError, ReplicaError):
            return []  # the ordinary filter strikes it
        if not root.is_root or root.id != self.tree_id or base.is_root or (
                base.prev_ids == (root.id,)):
            return []
        try:
            self.state.replicas.apply_base(self.source, self.space, self.tree_id,
                                           self.raws[0], self.raws[1],
                                           parsed={self.raws[0]: root, self.raws[1]: base})
        except StoreError:
            raise
        except QuotaExceeded as exc:
            self.refused = True
            self.state.space_state(self.space.id).last_error = f"{type(exc).__name__}: {exc}"
            return []
        except P2PSyncError as exc:
            self.refused = True
            self.state.space_state(self.space.id).last_error = f"shallow base refused: {exc}"
            return [Strike(f"shallow base refused: {type(exc).__name__}: {exc}")]
        self.based = True
        self._pos = 2
        self._seen.update((root.id, base.id))
        return []

    def run(self) -> list[Effect]:
        """All steps at once (tests, small batches)."""
        out: list[Effect] = []
        while not self.done:
            out += self.step()
        return out

    def _store(self, ok: list[bytes], parsed: dict[bytes, Change] | None = None,
               ) -> list[Effect]:
        st = self.state
        sid = self.space.id
        try:
            st.replicas.apply_changes(self.source, self.space, self.tree_id, ok, parsed=parsed)
        except StoreError:
            raise  # our disk, not the peer: the caller logs it
        except QuotaExceeded as exc:
            # a backup's quota: not misbehaviour; tell the pushing device why
            self.refused = True
            st.space_state(sid).last_error = f"{type(exc).__name__}: {exc}"
            st.quota_refusals += 1
            return [Push(StorageRefused(sid, self.tree_id, ErrorCode.QUOTA_EXCEEDED,
                                        str(exc)[:256]), sid)]
        except RemovedAuthor as exc:
            # the space's removal policy ("strict") refuses the author, not the relaying peer:
            # a member may honestly hold an edit made before the removal reached it
            self.refused = True
            st.space_state(sid).last_error = f"changes refused: {exc}"
            return []
        except P2PSyncError as exc:
            # nothing of this chunk was stored
            self.refused = True
            if isinstance(exc, AccessDenied):
                st.space_state(sid).last_error = f"changes refused: {exc}"
            return [Strike(f"changes refused: {type(exc).__name__}: {exc}")]
        return []
