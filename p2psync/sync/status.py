"""Status of one peer connection, derived only from live state (no I/O, no clock)."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2psync.sync.sched import SchedulerStatus


@dataclass
class SpaceState:
    """What one engine remembers about one space with its peer (fed by the pull cores)."""

    pending: set[bytes] = field(default_factory=set)
    agreed_hash: bytes | None = None
    last_head_sync: float | None = None
    head_sync_rounds: int = 0
    last_success: float | None = None
    last_error: str | None = None


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
