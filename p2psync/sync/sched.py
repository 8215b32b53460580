"""Per-peer request scheduling (sans-IO): bounded queues, dedupe, rate limits, retry backoff.

No clocks and no tasks in here: every call takes ``now`` (seconds, monotonic, any origin) and
the engine asks :meth:`PeerScheduler.next_wakeup` when to call :meth:`PeerScheduler.poll`
again. Randomness (jitter) comes from an injectable :class:`random.Random`, so behaviour is
reproducible in tests.

* :class:`PeerScheduler` — our outgoing requests to one peer: a bounded priority queue keyed by
  request identity (a second submit of a queued key is a no-op; of an in-flight key it
  schedules one re-run after it completes), a cap on requests in flight, a token bucket on the
  send rate, and retries with exponential backoff and jitter up to a maximum attempt count.
* :class:`InboundGate` — the peer's requests to us: a token bucket, a concurrency cap, and
  dropping of identical requests already being served (the "same request 10 000 times" case).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from p2psync.backoff import Backoff as Backoff  # re-exported: the engine imports it here

K = TypeVar("K", bound=Hashable)


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, holding at most ``burst``; starts full."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def _available(self, now: float) -> float:
        # a clock going backwards never adds or removes tokens
        return min(self.burst, self._tokens + max(0.0, now - self._stamp) * self.rate)

    def try_take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if available now."""
        if now > self._stamp:
            self._tokens = self._available(now)
            self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def wait_time(self, now: float, cost: float = 1.0) -> float:
        """Seconds after ``now`` until ``cost`` tokens are available (0: now; inf: never).
        Pure: asking about a future time does not change the bucket."""
        if cost > self.burst:
            return math.inf
        return max(0.0, (cost - self._available(now)) / self.rate)


class Submit(Enum):
    """What :meth:`PeerScheduler.submit` did with a request."""

    QUEUED = "queued"
    DUPLICATE = "duplicate"  #: already queued; merged (priority raised if more urgent)
    COALESCED = "coalesced"  #: in flight; it will run once more after it completes
    FULL = "full"  #: the queue is at its bound; dropped (periodic head sync catches up)


@dataclass
class _Job(Generic[K]):
    key: K
    priority: int
    seq: int
    attempts: int = 0
    not_before: float = 0.0
    in_flight: bool = False
    rerun: bool = False
    spacing: float = 0.0  #: runs of this key start at least this many seconds apart


@dataclass
class SchedulerStatus:
    """Truthful counters for the engine's per-peer status."""

    queued: int
    retrying: int  #: failed at least once, waiting for their backoff
    in_flight: int
    dropped_full: int
    given_up: int
    last_success: float | None
    last_error: float | None
    last_error_reason: str | None


class PeerScheduler(Generic[K]):
    """Outgoing requests to one peer. ``K`` identifies a request (e.g. ``("tree", space,
    object)``); equal keys are the same request. Lower ``priority`` runs first."""

    def __init__(self, *, now: float, max_queue: int = 1024, max_in_flight: int = 8,
                 rate: float = 50.0, burst: float = 100.0, max_attempts: int = 6,
                 backoff: Backoff | None = None) -> None:
        if max_queue < 1 or max_in_flight < 1 or max_attempts < 1:
            raise ValueError("limits must be at least 1")
        self.max_queue = max_queue
        self.max_in_flight = max_in_flight
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.bucket = TokenBucket(rate, burst, now)
        self._jobs: dict[K, _Job[K]] = {}
        self._ready: list[tuple[int, int, K]] = []  # (priority, seq, key), lazily invalidated
        self._delayed: list[tuple[float, int, K]] = []  # (not_before, seq, key)
        self._spaced: dict[K, float] = {}  # key -> earliest next start (keys with spacing)
        self._seq = 0
        self._in_flight = 0
        self.dropped_full = 0
        self.given_up = 0
        self.last_success: float | None = None
        self.last_error: float | None = None
        self.last_error_reason: str | None = None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _waiting(self) -> int:
        return len(self._jobs) - self._in_flight

    def submit(self, key: K, now: float, priority: int = 0, spacing: float = 0.0) -> Submit:
        """Ask for ``key`` to be sent; never blocks, never grows past ``max_queue``.

        ``spacing`` > 0 throttles the key: its runs start at least ``spacing`` seconds apart
        (the first at once). Submits while one is queued or running merge into it or its one
        re-run, so a burst of submits costs one run per ``spacing``, the last one after the
        burst's last submit."""
        job = self._jobs.get(key)
        if job is not None:
            job.spacing = max(job.spacing, spacing)
            if job.in_flight:
                job.rerun = True
                job.priority = min(job.priority, priority)
                return Submit.COALESCED
            if priority < job.priority:
                job.priority = priority
                if job.not_before <= now:  # in the ready heap: re-file it at the new priority
                    job.seq = self._next_seq()
                    heapq.heappush(self._ready, (priority, job.seq, key))
            return Submit.DUPLICATE
        if self._waiting() >= self.max_queue:
            self.dropped_full += 1
            return Submit.FULL
        at = max(now, self._spaced.get(key, now)) if spacing > 0 else now
        job = _Job(key, priority, self._next_seq(), not_before=at, spacing=spacing)
        self._jobs[key] = job
        if at > now:
            heapq.heappush(self._delayed, (at, job.seq, key))
        else:
            heapq.heappush(self._ready, (priority, job.seq, key))
        return Submit.QUEUED

    def poll(self, now: float) -> list[K]:
        """Requests to send now (marked in flight), most urgent first, within the in-flight
        cap and the rate limit."""
        while self._delayed and self._delayed[0][0] <= now:
            _, seq, key = heapq.heappop(self._delayed)
            job = self._jobs.get(key)
            if job is not None and job.seq == seq and not job.in_flight:
                heapq.heappush(self._ready, (job.priority, seq, key))
        out: list[K] = []
        while self._ready and self._in_flight < self.max_in_flight:
            _, seq, key = self._ready[0]
            job = self._jobs.get(key)
            if job is None or job.seq != seq or job.in_flight:
                heapq.heappop(self._ready)  # stale entry
                continue
            if not self.bucket.try_take(now):
                break
            heapq.heappop(self._ready)
            if job.spacing > 0:
                self._spaced[key] = now + job.spacing
            job.in_flight = True
            job.attempts += 1
            self._in_flight += 1
            out.append(key)
        return out

    def next_wakeup(self, now: float) -> float | None:
        """When ``poll`` may next return something (<= now: call it now), or None if idle or
        only waiting for in-flight requests to finish."""
        times: list[float] = []
        live_ready = any(
            (j := self._jobs.get(k)) is not None and j.seq == s and not j.in_flight
            for _, s, k in self._ready
        )
        if live_ready and self._in_flight < self.max_in_flight:
            times.append(now + self.bucket.wait_time(now))
        if self._delayed and self._in_flight < self.max_in_flight:
            live = [t for t, s, k in self._delayed
                    if (j := self._jobs.get(k)) is not None and j.seq == s and not j.in_flight]
            if live:
                at = max(min(live), now)
                times.append(at + self.bucket.wait_time(at))
        return min(times) if times else None

    def succeeded(self, key: K, now: float) -> None:
        """The request for ``key`` completed; re-run it once if it was submitted meanwhile."""
        job = self._finish(key)
        if job is None:
            return
        self.last_success = now
        if job.rerun:
            self._requeue(job, max(now, self._spaced.get(key, now)), attempts=0)

    def failed(self, key: K, now: float, reason: str = "", *, retryable: bool = True,
               retry_after: float | None = None) -> float | None:
        """The request for ``key`` failed. Returns when it will be retried, or None if it was
        dropped (not retryable, or out of attempts). ``retry_after`` (e.g. from a peer's
        RATE_LIMITED error) is a floor on the backoff delay."""
        job = self._finish(key)
        if job is None:
            return None
        self.last_error = now
        self.last_error_reason = reason or None
        if not retryable or job.attempts >= self.max_attempts:
            self.given_up += 1
            if job.rerun:  # new work arrived while it ran: start afresh
                self._requeue(job, now, attempts=0)
            return None
        delay = max(self.backoff.delay(job.attempts), retry_after or 0.0)
        self._requeue(job, now + delay, attempts=job.attempts)
        return now + delay

    def cancel(self, key: K) -> bool:
        """Forget a queued or delayed request (in-flight ones finish normally)."""
        job = self._jobs.get(key)
        if job is None or job.in_flight:
            return False
        del self._jobs[key]
        return True

    def _finish(self, key: K) -> _Job[K] | None:
        job = self._jobs.get(key)
        if job is None or not job.in_flight:
            return None
        job.in_flight = False
        self._in_flight -= 1
        del self._jobs[key]
        return job

    def _requeue(self, job: _Job[K], at: float, attempts: int) -> None:
        job.seq = self._next_seq()
        job.attempts = attempts
        job.not_before = at
        job.rerun = False
        self._jobs[job.key] = job
        heapq.heappush(self._delayed, (at, job.seq, job.key))

    def status(self) -> SchedulerStatus:
        retrying = sum(1 for j in self._jobs.values() if not j.in_flight and j.attempts > 0)
        return SchedulerStatus(
            queued=self._waiting() - retrying, retrying=retrying, in_flight=self._in_flight,
            dropped_full=self.dropped_full, given_up=self.given_up,
            last_success=self.last_success, last_error=self.last_error,
            last_error_reason=self.last_error_reason,
        )


class Admission(Enum):
    """What :meth:`InboundGate.admit` decided about a peer's request."""

    ACCEPT = "accept"
    DUPLICATE = "duplicate"  #: the same request is already being served: drop this copy
    RATE_LIMITED = "rate_limited"  #: answer RATE_LIMITED with :meth:`InboundGate.retry_after`
    BUSY = "busy"  #: too many of this peer's requests in progress: answer RATE_LIMITED too


class InboundGate(Generic[K]):
    """Admission control for one peer's requests to us."""

    def __init__(self, *, now: float, rate: float = 100.0, burst: float = 200.0,
                 max_concurrent: int = 16) -> None:
        self.bucket = TokenBucket(rate, burst, now)
        self.max_concurrent = max_concurrent
        self._active: set[K] = set()
        self.refused = 0

    def admit(self, key: K, now: float, cost: float = 1.0) -> Admission:
        """Decide about one incoming request identified by ``key``; ACCEPT means the caller
        must call :meth:`finished` when done."""
        if key in self._active:
            self.refused += 1
            return Admission.DUPLICATE
        if len(self._active) >= self.max_concurrent:
            self.refused += 1
            return Admission.BUSY
        if not self.bucket.try_take(now, cost):
            self.refused += 1
            return Admission.RATE_LIMITED
        self._active.add(key)
        return Admission.ACCEPT

    def finished(self, key: K) -> None:
        self._active.discard(key)

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds the peer should wait before its next request is likely admitted."""
        w = self.bucket.wait_time(now, cost)
        return w if math.isfinite(w) else 1.0
