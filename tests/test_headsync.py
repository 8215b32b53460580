"""Head sync (ldiff): exact set differences, incremental fingerprints, cost bounds, hostility."""

from __future__ import annotations

import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.errors import ProtocolError
from p2psync.sync import messages as m
from p2psync.sync.ldiff import (
    DiffResult,
    HeadSyncSession,
    LDiff,
    element_hash,
    heads_hash,
    reconcile,
)

ids = st.binary(min_size=32, max_size=32)


def rid(rng: random.Random) -> bytes:
    return rng.randbytes(32)


def expected_diff(local: dict[bytes, bytes], remote: dict[bytes, bytes]) -> DiffResult:
    return DiffResult(
        remote_only={k for k in remote if k not in local},
        local_only={k for k in local if k not in remote},
        changed={k for k in local if k in remote and local[k] != remote[k]},
    )


@st.composite
def set_pairs(draw: st.DrawFn) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """Two overlapping sets; ids may share long prefixes to exercise deep ranges."""
    prefix_pool = draw(st.lists(st.binary(min_size=0, max_size=9), min_size=1, max_size=3))
    def make_id(tail: bytes, p: int) -> bytes:
        pre = prefix_pool[p % len(prefix_pool)]
        return (pre + tail)[:32].ljust(32, b"\0")
    raw = draw(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 5),
                                  st.sampled_from(["both", "same", "local", "remote"]),
                                  ids, ids), max_size=120))
    local: dict[bytes, bytes] = {}
    remote: dict[bytes, bytes] = {}
    for tail, p, where, h1, h2 in raw:
        oid = make_id(tail, p)
        if where in ("both", "same", "local"):
            local[oid] = h1
        if where == "both":
            remote[oid] = h2
        elif where in ("same", "remote"):
            remote[oid] = h1
    return local, remote


@settings(max_examples=150, deadline=None)
@given(set_pairs(), st.sampled_from([1, 2, 4]), st.sampled_from([0, 1, 4, 32]),
       st.sampled_from([0, 3, 12]), st.sampled_from([0, 40, 256]))
def test_head_sync_finds_exactly_the_difference(
    pair: tuple[dict[bytes, bytes], dict[bytes, bytes]],
    divide_bits: int, threshold: int, leaf_bits: int, max_ranges: int,
) -> None:
    local, remote = pair
    # a split range travels with its children: the smallest request holds 2^divide_bits + 1
    max_ranges = max(max_ranges, (1 << divide_bits) + 1)
    a = LDiff(local.items(), leaf_bits=leaf_bits)
    b = LDiff(remote.items(), leaf_bits=12 - leaf_bits)  # the two sides' layouts differ
    # ids here share up to 72-bit prefixes (not hashes): allow the full protocol depth
    result, stats = reconcile(a, b, divide_bits=divide_bits, threshold=threshold,
                              max_ranges=max_ranges, max_outstanding=3, max_bits=64)
    assert result == expected_diff(local, remote)
    if local == remote:
        assert stats.round_trips == 1 and a.hash() == b.hash()
    else:
        assert a.hash() != b.hash()
    # and the other way round
    back, _ = reconcile(b, a, divide_bits=divide_bits, threshold=threshold, max_bits=64)
    assert back.remote_only == result.local_only and back.local_only == result.remote_only
    assert back.changed == result.changed


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "remove"]), st.integers(0, 40), ids),
                max_size=200), st.sampled_from([0, 2, 12]))
def test_incremental_updates_match_a_rebuild(
    ops: list[tuple[str, int, bytes]], leaf_bits: int
) -> None:
    pool = [bytes([i]) * 32 for i in range(41)]  # ids spread over the prefix space
    d = LDiff(leaf_bits=leaf_bits)
    truth: dict[bytes, bytes] = {}
    for op, i, h in ops:
        if op == "set":
            d.set(pool[i], h)
            truth[pool[i]] = h
        else:
            assert d.remove(pool[i]) == (pool[i] in truth)
            truth.pop(pool[i], None)
    rebuilt = LDiff(truth.items(), leaf_bits=leaf_bits)
    assert d.hash() == rebuilt.hash() and len(d) == len(truth)
    assert dict(d.items()) == truth
    for bits in (0, 1, 4, 7, 13, 64):
        for prefix in {0, (1 << bits) - 1, (0x55 << 56) >> (64 - bits) if bits else 0}:
            h, c = d.summary(bits, prefix)
            members = [(k, v) for k, v in truth.items()
                       if (int.from_bytes(k[:8], "big") >> (64 - bits) if bits else 0) == prefix]
            total = sum(element_hash(k, v) for k, v in members) % (1 << 256)
            assert (h, c) == (total.to_bytes(32, "big"), len(members))
            assert d.elements(bits, prefix) == sorted(members)


def test_heads_hash_is_order_independent() -> None:
    a, b = bytes(32), bytes([1]) * 32
    assert heads_hash([a, b]) == heads_hash([b, a, b]) != heads_hash([a])
    assert heads_hash([]) != heads_hash([a])


def test_ldiff_rejects_bad_sizes_and_ranges() -> None:
    d = LDiff()
    with pytest.raises(ValueError):
        d.set(b"short", bytes(32))
    with pytest.raises(ValueError):
        d.summary(4, 16)
    assert d.remove(b"short") is False and d.get(b"x") is None and b"x" not in d
    assert d.summary(0, 0) == (bytes(32), 0)


@pytest.fixture(scope="module")
def big() -> tuple[list[tuple[bytes, bytes]], float]:
    rng = random.Random(5)
    items = [(rid(rng), rid(rng)) for _ in range(100_000)]
    t0 = time.perf_counter()
    LDiff(items)
    return items, time.perf_counter() - t0


def test_100k_builds_fast(big: tuple[list[tuple[bytes, bytes]], float]) -> None:
    # ~0.2 s here; the loose bound only catches an accidental O(n log n)+ per-insert cost
    assert big[1] < 5.0


@pytest.mark.parametrize("kind", ["changed", "remote_only", "local_only"])
def test_one_difference_in_100k_is_cheap(
    big: tuple[list[tuple[bytes, bytes]], float], kind: str
) -> None:
    items, _ = big
    a, b = LDiff(items), LDiff(items)
    oid = items[4242][0]
    if kind == "changed":
        b.set(oid, bytes(32))
    elif kind == "remote_only":
        oid = bytes(range(32))
        b.set(oid, bytes(32))
    else:
        b.remove(oid)
    result, stats = reconcile(a, b)
    assert getattr(result, kind) == {oid}
    assert len(result.remote_only) + len(result.local_only) + len(result.changed) == 1
    # Bound from the algorithm: 16-way splits from the root down to a range of <= 32
    # elements (ceil(log16(n / 32)) levels), +1 for the root, +1 slack for an unlucky range.
    bound = math.ceil(math.log(len(items) / 32, 16)) + 2
    assert stats.round_trips <= bound == 5
    assert stats.bytes_sent + stats.bytes_received < 8 * 1024


def test_equal_sets_cost_one_tiny_round_trip(
    big: tuple[list[tuple[bytes, bytes]], float]
) -> None:
    items, _ = big
    result, stats = reconcile(LDiff(items), LDiff(items))
    assert result.empty and stats.round_trips == 1
    assert stats.bytes_sent + stats.bytes_received < 200


def test_empty_side_learns_everything() -> None:
    rng = random.Random(1)
    items = [(rid(rng), rid(rng)) for _ in range(3000)]
    result, stats = reconcile(LDiff(), LDiff(items), max_ranges=64)
    assert result.remote_only == {k for k, _ in items}
    assert stats.round_trips <= 6  # depth 4 levels, pipelined


def test_responder_omits_matching_ranges() -> None:
    rng = random.Random(2)
    items = [(rid(rng), rid(rng)) for _ in range(500)]
    a, b = LDiff(items), LDiff(items)
    b.set(items[0][0], bytes(32))
    s = HeadSyncSession(a, "sp")
    tag, req = s.next_request() or (0, None)
    assert req is not None and s.next_request() is None  # root first, nothing more yet
    s.receive(tag, b.answer(req))
    nxt = s.next_request()
    assert nxt is not None
    resp = b.answer(nxt[1])
    # the 16 children travel with their parent (the anchor their counts must add up to)
    assert len(nxt[1].ranges) == 17 and len(resp.results) == 2


def _session_with_request(n: int = 300) -> tuple[HeadSyncSession, LDiff, int, m.HeadSyncRequest]:
    rng = random.Random(3)
    items = [(rid(rng), rid(rng)) for _ in range(n)]
    a, b = LDiff(items), LDiff(items[1:])
    s = HeadSyncSession(a, "sp", threshold=0)
    nxt = s.next_request()
    assert nxt is not None
    return s, b, nxt[0], nxt[1]


def test_hostile_responses_are_refused() -> None:
    s, b, tag, req = _session_with_request()
    bogus = m.RangeResult(4, 3, bytes(32), 1, None)  # a range that was never asked
    with pytest.raises(ProtocolError):
        s.receive(tag, m.HeadSyncResponse("sp", (bogus,)))
    assert s.done and s.failed and s.next_request() is None

    s, b, tag, req = _session_with_request()
    with pytest.raises(ProtocolError):
        s.receive(tag, m.HeadSyncResponse("other-space", ()))

    s, b, tag, req = _session_with_request()
    with pytest.raises(ProtocolError):
        s.receive(tag + 5, b.answer(req))

    s, b, tag, req = _session_with_request()
    dup = b.answer(req).results * 2
    with pytest.raises(ProtocolError):
        s.receive(tag, m.HeadSyncResponse("sp", dup))


def test_elements_outside_their_range_are_refused() -> None:
    s, b, tag, req = _session_with_request()
    s.receive(tag, b.answer(req))  # root differs -> 16 children asked
    tag, req = s.next_request() or (0, req)
    q = req.ranges[1]  # ranges[0] is the parent (the anchor)
    outsider = (bytes([0xFF]) * 32, bytes(32))  # prefix 0xF..., not in range (4, 0)
    lie = m.RangeResult(q.bits, q.prefix, bytes(32), 1, (outsider,))
    with pytest.raises(ProtocolError):
        s.receive(tag, m.HeadSyncResponse("sp", (lie,)))


def test_responder_must_enumerate_at_full_depth() -> None:
    a = LDiff([(bytes(32), bytes(32))])
    s = HeadSyncSession(a, "sp", threshold=0)
    s._pending.clear()
    s._pending.append((64, 0, False))
    tag, req = s.next_request() or (0, None)  # type: ignore[misc]
    assert req is not None
    lazy = m.RangeResult(64, 0, bytes([1]) * 32, 3, None)
    with pytest.raises(ProtocolError):
        s.receive(tag, m.HeadSyncResponse("sp", (lazy,)))


def test_full_depth_ranges_are_enumerated_even_above_threshold() -> None:
    base = bytes(8)
    items = [(base + bytes([i]) * 24, bytes([i]) * 32) for i in range(10)]
    a = LDiff(items[:5])
    b = LDiff(items)
    result, stats = reconcile(a, b, threshold=2, max_bits=64)  # crafted ids: full depth
    assert result.remote_only == {k for k, _ in items[5:]}
    assert stats.round_trips == 1 + 64 // 4  # every level down to the 64-bit prefix


def test_small_spaces_cost_memory_in_proportion_to_their_objects() -> None:
    """A backup holds thousands of spaces: an index of 10 objects must not preallocate every
    leaf bucket; emptying it releases its leaves."""
    import os
    import tracemalloc

    pairs = [(os.urandom(32), os.urandom(32)) for _ in range(10)]
    tracemalloc.start()
    try:
        small = [LDiff(pairs) for _ in range(50)]
        per_space = tracemalloc.get_traced_memory()[0] / len(small)
    finally:
        tracemalloc.stop()
    assert per_space < 32 * 1024, f"{per_space / 1024:.0f} KiB for a 10-object space"
    d = small[0]
    for oid, _ in pairs:
        d.remove(oid)
    assert len(d) == 0 and d.summary(4, 3) == (bytes(32), 0) and not d.elements(2, 1)
    assert d.hash() == LDiff().hash()
