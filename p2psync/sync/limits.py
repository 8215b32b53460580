"""Limits and timings of one sync engine (plain data; re-exported by :mod:`p2psync.sync.engine`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineConfig:
    """Limits and timings of one engine (defaults suit a LAN; tests shorten the timings)."""

    head_sync_interval: float = 30.0  #: periodic head sync per shared space (safety net)
    request_timeout: float = 30.0
    exchange_timeout: float = 10.0
    batch_bytes: int = 1 << 20  #: byte cap we ask for / send in one batch
    max_push_queue: int = 1024  #: pushes waiting to be sent; past it: drop + resync later
    max_in_flight: int = 8  #: our requests outstanding on the connection
    max_jobs_queued: int = 4096  #: scheduler queue bound (trees to sync etc.)
    max_rounds: int = 1024  #: full-sync rounds per tree job (each makes progress or stops)
    max_stuck: int = 3  #: pulls of one tree that left its announced heads missing
    strikes_to_close: int = 100  #: protocol violations before we drop the peer
    out_rate: float = 500.0  #: our jobs started per second
    out_burst: float = 1000.0
    in_rate: float = 500.0  #: the peer's requests admitted per second
    in_burst: float = 1000.0
    in_concurrency: int = 16
    seed: int | None = None  #: jitter seed (tests)
    #: A peer whose space exchange shows it shares no space with us (not a member or
    #: replicator of any space we hold, not our own account, no invite proved) is disconnected
    #: this many seconds after the exchange; invite bootstrap must happen within it.
    #: ``None`` disables the rule (``-1`` in config.toml).
    stranger_grace: float | None = 10.0
    #: Incoming changes are verified and stored this many at a time, yielding to the event
    #: loop between chunks, so one big legitimate batch never stalls the other peers.
    ingest_chunk: int = 32
    #: A member fetching a tree it does not hold asks for the latest snapshot and the changes
    #: after it (``from_snapshot``), verifying those instead of the whole history
    #: (docs/replica.md "Shallow trees"). Backups never do (they hold no read key).
    snapshot_first: bool = True
