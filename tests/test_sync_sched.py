"""Request scheduler core: bounds, dedupe, rate limits, backoff — all on an explicit clock."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.sync.sched import (
    Admission,
    Backoff,
    InboundGate,
    PeerScheduler,
    Submit,
    TokenBucket,
)


def sched(**kw: object) -> PeerScheduler[str]:
    kw.setdefault("backoff", Backoff(rng=random.Random(0)))
    return PeerScheduler(now=0.0, **kw)  # type: ignore[arg-type]


def test_token_bucket_refills_at_rate_and_caps_at_burst() -> None:
    b = TokenBucket(rate=10, burst=3, now=0)
    assert [b.try_take(0) for _ in range(4)] == [True, True, True, False]
    assert b.wait_time(0) == pytest.approx(0.1)
    assert not b.try_take(0.05) and b.try_take(0.1)
    assert b.try_take(100) and b.try_take(100) and b.try_take(100) and not b.try_take(100)
    assert b.wait_time(100, cost=4) == math.inf
    b.try_take(50)  # clock going backwards adds nothing
    assert not b.try_take(50)
    c = TokenBucket(rate=1, burst=2, now=0)
    assert c.try_take(0) and c.try_take(0)
    assert c.wait_time(100) == 0  # asking about the future ...
    assert not c.try_take(0.5)  # ... does not credit tokens early


def test_backoff_grows_caps_and_jitters_within_bounds() -> None:
    bo = Backoff(base=1, factor=2, cap=10, rng=random.Random(1))
    for attempt, full in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (50, 10), (10_000, 10)]:
        delays = {bo.delay(attempt) for _ in range(20)}
        assert all(full / 2 <= d <= full for d in delays)
        assert len(delays) > 1  # jittered
    with pytest.raises(ValueError):
        bo.delay(0)


def test_dedupe_and_coalescing() -> None:
    s = sched()
    assert s.submit("a", 0) is Submit.QUEUED
    assert s.submit("a", 0) is Submit.DUPLICATE
    assert s.poll(0) == ["a"]
    assert s.submit("a", 0) is Submit.COALESCED
    assert s.submit("a", 0) is Submit.COALESCED  # still one re-run, not two
    s.succeeded("a", 1)
    assert s.poll(1) == ["a"]  # the coalesced re-run
    s.succeeded("a", 2)
    assert s.poll(2) == [] and s.next_wakeup(2) is None


def test_queue_is_bounded() -> None:
    s = sched(max_queue=3)
    results = [s.submit(str(i), 0) for i in range(5)]
    assert results == [Submit.QUEUED] * 3 + [Submit.FULL] * 2
    assert s.status().dropped_full == 2
    assert s.submit("0", 0) is Submit.DUPLICATE  # dedupe still works at the bound


def test_in_flight_cap_and_priority_order() -> None:
    s = sched(max_in_flight=2)
    s.submit("headsync", 0, priority=2)
    s.submit("push", 0, priority=0)
    s.submit("fullsync", 0, priority=1)
    assert s.poll(0) == ["push", "fullsync"]
    assert s.poll(0) == [] and s.next_wakeup(0) is None  # waiting on in-flight only
    s.succeeded("push", 1)
    assert s.poll(1) == ["headsync"]


def test_priority_raise_on_duplicate() -> None:
    s = sched(max_in_flight=1)
    s.submit("slow", 0, priority=5)
    s.submit("other", 0, priority=3)
    s.submit("slow", 0, priority=1)
    assert s.poll(0) == ["slow"]


def test_rate_limit_spreads_sends_over_time() -> None:
    s = sched(rate=2, burst=2, max_in_flight=100)
    for i in range(6):
        s.submit(str(i), 0)
    assert len(s.poll(0)) == 2
    wake = s.next_wakeup(0)
    assert wake == pytest.approx(0.5)
    assert s.poll(0.25) == []
    assert len(s.poll(0.5)) == 1
    assert len(s.poll(10)) == 2  # burst cap: only 2 even after a long pause


def test_retry_with_backoff_then_give_up() -> None:
    s = sched(max_attempts=3, backoff=Backoff(base=1, factor=2, cap=60, rng=random.Random(3)))
    s.submit("x", 0)
    now = 0.0
    retries = []
    assert s.poll(now) == ["x"]
    for _ in range(2):
        at = s.failed("x", now, "timeout")
        assert at is not None
        retries.append(at - now)
        assert s.poll(at - 0.01) == []
        assert s.next_wakeup(now) == pytest.approx(at)
        now = at
        assert s.poll(now) == ["x"]
    assert 0.5 <= retries[0] <= 1 and 1 <= retries[1] <= 2
    assert s.failed("x", now, "timeout") is None  # third attempt failed: give up
    st_ = s.status()
    assert st_.given_up == 1 and st_.last_error == now and st_.last_error_reason == "timeout"
    assert s.poll(now + 1000) == []


def test_retry_after_floor_and_non_retryable() -> None:
    s = sched()
    s.submit("x", 0)
    s.poll(0)
    assert s.failed("x", 0, retry_after=30.0) == pytest.approx(30.0)
    assert s.status().retrying == 1
    s.submit("y", 0)
    s.poll(0)
    assert s.failed("y", 0, retryable=False) is None


def test_cancel_and_status() -> None:
    s = sched()
    s.submit("a", 0)
    s.submit("b", 0)
    assert s.cancel("a") and not s.cancel("zzz")
    assert s.poll(0) == ["b"]
    assert not s.cancel("b")  # in flight
    st_ = s.status()
    assert (st_.queued, st_.in_flight) == (0, 1)
    s.succeeded("b", 3)
    assert s.status().last_success == 3
    s.succeeded("b", 4)  # unknown completion is ignored
    assert s.status().last_success == 3


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["submit", "poll", "ok", "fail", "tick"]),
                          st.integers(0, 9)), max_size=150))
def test_invariants_under_random_operations(ops: list[tuple[str, int]]) -> None:
    s = sched(max_queue=4, max_in_flight=2, rate=5, burst=3, max_attempts=3)
    now = 0.0
    in_flight: set[str] = set()
    for op, i in ops:
        key = f"k{i}"
        if op == "submit":
            s.submit(key, now, priority=i % 3)
        elif op == "poll":
            got = s.poll(now)
            assert not (set(got) & in_flight)  # never the same request twice at once
            in_flight |= set(got)
        elif op == "ok" and in_flight:
            s.succeeded(sorted(in_flight)[i % len(in_flight)], now)
            in_flight.discard(sorted(in_flight)[i % len(in_flight)])
        elif op == "fail" and in_flight:
            k = sorted(in_flight)[i % len(in_flight)]
            s.failed(k, now)
            in_flight.discard(k)
        elif op == "tick":
            now += i / 3
        st_ = s.status()
        assert st_.in_flight == len(in_flight) <= 2
        assert st_.queued + st_.retrying <= 4 + 2  # queue bound (+ re-runs of in-flight)
        wake = s.next_wakeup(now)
        if wake is not None and wake <= now:  # a due wakeup is never spurious
            got = s.poll(now)
            assert got and not (set(got) & in_flight)
            in_flight |= set(got)


def test_inbound_gate_drops_identical_requests_and_rate_limits() -> None:
    g: InboundGate[tuple[str, str]] = InboundGate(now=0, rate=10, burst=20, max_concurrent=4)
    same = ("fullsync", "obj1")
    outcomes = [g.admit(same, 0) for _ in range(10_000)]
    assert outcomes[0] is Admission.ACCEPT
    assert set(outcomes[1:]) == {Admission.DUPLICATE}
    assert g.refused == 9_999
    for i in range(3):
        assert g.admit(("x", str(i)), 0) is Admission.ACCEPT
    assert g.admit(("x", "busy"), 0) is Admission.BUSY
    g.finished(same)
    for i in range(3):
        g.finished(("x", str(i)))
    admitted = 0
    for i in range(100):
        if g.admit(("y", str(i)), 0) is Admission.ACCEPT:
            admitted += 1
            g.finished(("y", str(i)))
    assert admitted == 20 - 4  # the burst, minus the 4 already taken
    assert g.admit(("z", "1"), 0) is Admission.RATE_LIMITED
    assert g.retry_after(0) == pytest.approx(0.1)
    assert g.admit(("z", "1"), 0.1) is Admission.ACCEPT
