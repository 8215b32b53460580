"""Status of one peer connection, derived only from live state (no I/O, no clock).

**In sync.** A peer is in sync for a space when the fingerprint of its head-sync set (see
:mod:`p2psync.sync.ldiff`) is known to equal ours now: :attr:`SpaceState.agreed_hash` is the
fingerprint both sides had at the last moment we know they agreed, and the peer is in sync
while that is still our fingerprint. Three things establish agreement: a head sync that
found no difference; the same, run right after our pushes of a space drained from the push
queue (the ``("heads", …)`` job: its answer comes after the peer took our push in, so it is
the peer's acknowledgement); and a push from the peer that leaves us with exactly the heads it
announced when we agreed just before it and nothing else of ours changed meanwhile
(:meth:`SpaceState.confirm_push`; the element hashes are additive, so this is exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from p2psync.sync.ldiff import LDiff, element_hash, heads_hash
from p2psync.sync.messages import ID_SIZE
from p2psync.sync.sched import SchedulerStatus


@dataclass(frozen=True)
class PushSnapshot:
    """Our head-sync set just before a peer's push to one tree is taken in."""

    total: bytes  #: our fingerprint then
    tree: bytes | None  #: our heads hash of the pushed tree then (None: we lacked it)

    @staticmethod
    def take(ld: LDiff, tree_id: bytes) -> PushSnapshot:
        return PushSnapshot(ld.hash(), ld.get(tree_id))


@dataclass
class SpaceState:
    """What one engine remembers about one space with its peer (fed by the pull cores)."""

    pending: set[bytes] = field(default_factory=set)
    agreed_hash: bytes | None = None
    last_head_sync: float | None = None
    head_sync_rounds: int = 0
    last_success: float | None = None
    last_error: str | None = None
    #: the last head sync found differences and its tree jobs are not all done yet
    differed: bool = False
    #: follow-up checks run since we last agreed (bounded: see p2psync.sync.jobs)
    rechecks: int = 0

    def confirm_push(self, ld: LDiff, tree_id: bytes, heads: Sequence[bytes],
                     before: PushSnapshot) -> None:
        """After a push from the peer: if we agreed just before it, our tree now has exactly
        the heads it announced, and nothing else of ours changed meanwhile, we agree now."""
        if self.agreed_hash is None or self.agreed_hash != before.total or not heads:
            return
        mine = ld.get(tree_id)
        if mine is None or mine != heads_hash(heads):
            return
        old = 0 if before.tree is None else element_hash(tree_id, before.tree)
        expected = (int.from_bytes(before.total, "big") - old
                    + element_hash(tree_id, mine)) % (1 << (8 * ID_SIZE))
        now = ld.hash()
        if int.from_bytes(now, "big") == expected:
            self.agreed_hash = now


@dataclass
class PeerSpaceStatus:
    """What we know about one space with one peer — all derived from real state."""

    space_id: str
    local_hash: str = ""  #: our head-sync set fingerprint now (hex)
    agreed_hash: str | None = None  #: fingerprint both sides had at the last empty diff
    in_sync: bool = False  #: agreed_hash is our current fingerprint
    pending_trees: int = 0  #: trees head sync found different and not yet synced
    last_head_sync: float | None = None  #: wall time of the last completed head sync
    head_sync_rounds: int = 0  #: round trips the last head sync we ran took
    last_success: float | None = None  #: wall time of the last completed job
    last_error: str | None = None


@dataclass
class PeerStatus:
    """One connected peer: identity, traffic and per-space state."""

    peer_id: str
    account_id: str
    transport: str
    connected: bool
    ready: bool
    spaces: list[PeerSpaceStatus]
    scheduler: SchedulerStatus
    push_queue: int
    pushes_dropped: int
    strikes: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    last_error: str | None


def space_status(space_id: str, st: SpaceState, local: bytes) -> PeerSpaceStatus:
    """One space's status from the engine's state and our current fingerprint ``local``."""
    return PeerSpaceStatus(
        space_id=space_id, local_hash=local.hex(),
        agreed_hash=None if st.agreed_hash is None else st.agreed_hash.hex(),
        in_sync=st.agreed_hash is not None and st.agreed_hash == local,
        pending_trees=len(st.pending), last_head_sync=st.last_head_sync,
        head_sync_rounds=st.head_sync_rounds,
        last_success=st.last_success, last_error=st.last_error)
