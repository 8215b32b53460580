"""Head sync: range-based reconciliation of a space's set of (object id, heads hash).

The set is partitioned by **id prefix**: a range ``(bits, prefix)`` holds every object whose id
starts with those ``bits`` bits. Object ids are content hashes, so prefixes split the set evenly
without any coordination, and both sides agree on range boundaries by construction.

* A range's fingerprint is ``(sum of element hashes mod 2^256, count)`` where an element hash is
  BLAKE2b-256 over ``object id || heads hash``. Sums make updates O(1): adding, changing or
  removing one element adjusts one leaf bucket (and the cached total); no tree to rebalance.
* :class:`LDiff` keeps elements in ``2^leaf_bits`` leaf buckets by id prefix, with cached
  per-bucket sums. A range at or above leaf depth is a slice-sum over buckets; a deeper range
  filters one bucket (a few dozen elements at 100 000 objects with the default 12 leaf bits).
* :class:`HeadSyncSession` is the requester's sans-IO state machine: it asks for the whole-set
  range first, then splits each differing range into ``2^divide_bits`` children (16 by
  default); the responder (:meth:`LDiff.answer`, stateless) omits ranges that match the
  requester's fingerprint and enumerates ranges holding at most ``threshold`` elements. The
  result is the exact difference: ids only they have, ids only we have, ids whose heads differ.

Finding one changed object among n costs about ``ceil(log16(n / threshold)) + 1`` round trips:
4 for n = 100 000 (see docs/sync-protocol.md and scripts/bench_headsync.py).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from p2psync.errors import HeadSyncViolation, ProtocolError
from p2psync.sync.messages import (
    ID_SIZE,
    MAX_RANGE_BITS,
    MAX_RANGE_ELEMENTS,
    MAX_RANGES,
    HeadSyncRequest,
    HeadSyncResponse,
    RangeQuery,
    RangeResult,
    decode,
    encode,
)

_MOD = 1 << 256
_MASK = _MOD - 1
_ELEMENT_PERSON = b"p2psync-ldiff-v1"
_HEADS_PERSON = b"p2psync-heads-v1"
DEFAULT_LEAF_BITS = 12
DEFAULT_DIVIDE_BITS = 4  #: split a differing range into 16 children
DEFAULT_THRESHOLD = 32  #: enumerate ranges holding at most this many elements
ZERO_HASH = bytes(ID_SIZE)


def heads_hash(heads: Iterable[bytes]) -> bytes:
    """The 32-byte fingerprint of a tree's heads (order-independent, duplicates ignored)."""
    h = hashlib.blake2b(digest_size=ID_SIZE, person=_HEADS_PERSON)
    for head in sorted(set(heads)):
        h.update(len(head).to_bytes(2, "big"))
        h.update(head)
    return h.digest()


def element_hash(object_id: bytes, heads: bytes) -> int:
    """The additive hash of one element, as an integer below 2^256."""
    digest = hashlib.blake2b(object_id + heads, digest_size=ID_SIZE, person=_ELEMENT_PERSON)
    return int.from_bytes(digest.digest(), "big")


def _prefix_of(object_id: bytes, bits: int) -> int:
    return int.from_bytes(object_id[:8], "big") >> (64 - bits) if bits else 0


def _check_range(bits: int, prefix: int) -> None:
    if not 0 <= bits <= MAX_RANGE_BITS or not 0 <= prefix < (1 << bits):
        raise ValueError(f"bad range ({bits}, {prefix})")


class LDiff:
    """The set of (object id, heads hash) of one space, with cheap range fingerprints."""

    def __init__(self, items: Iterable[tuple[bytes, bytes]] = (), *,
                 leaf_bits: int = DEFAULT_LEAF_BITS) -> None:
        if not 0 <= leaf_bits <= 20:
            raise ValueError("leaf_bits must be between 0 and 20")
        self.leaf_bits = leaf_bits
        # Sparse: only occupied leaves exist, so a space with 10 objects costs a few KiB, not
        # 2^leaf_bits empty buckets (a backup holds thousands of spaces).
        # leaf -> {object id -> (heads hash, element hash)}; leaf -> sum of element hashes
        self._buckets: dict[int, dict[bytes, tuple[bytes, int]]] = {}
        self._sums: dict[int, int] = {}
        self._total = 0
        self._n = 0
        for object_id, heads in items:
            self.set(object_id, heads)

    # --- updates -----------------------------------------------------------------------------
    def set(self, object_id: bytes, heads: bytes) -> None:
        """Insert or update one object's heads hash. O(1)."""
        if len(object_id) != ID_SIZE or len(heads) != ID_SIZE:
            raise ValueError("object ids and heads hashes are 32 bytes")
        leaf = _prefix_of(object_id, self.leaf_bits)
        bucket = self._buckets.get(leaf)
        if bucket is None:
            bucket = self._buckets[leaf] = {}
            self._sums[leaf] = 0
        old = bucket.get(object_id)
        if old is not None:
            if old[0] == heads:
                return
            self._sums[leaf] -= old[1]
            self._total -= old[1]
        else:
            self._n += 1
        eh = element_hash(object_id, heads)
        bucket[object_id] = (heads, eh)
        self._sums[leaf] = (self._sums[leaf] + eh) & _MASK
        self._total = (self._total + eh) & _MASK

    def remove(self, object_id: bytes) -> bool:
        """Remove one object; returns whether it was present. O(1)."""
        if len(object_id) != ID_SIZE:
            return False
        leaf = _prefix_of(object_id, self.leaf_bits)
        bucket = self._buckets.get(leaf)
        old = None if bucket is None else bucket.pop(object_id, None)
        if bucket is None or old is None:
            return False
        self._total = (self._total - old[1]) & _MASK
        self._n -= 1
        if bucket:
            self._sums[leaf] = (self._sums[leaf] - old[1]) & _MASK
        else:
            del self._buckets[leaf], self._sums[leaf]
        return True

    # --- queries -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __contains__(self, object_id: object) -> bool:
        return self.get(object_id) is not None if isinstance(object_id, bytes) else False

    def get(self, object_id: bytes) -> bytes | None:
        """The heads hash stored for ``object_id``, or None."""
        if len(object_id) != ID_SIZE:
            return None
        bucket = self._buckets.get(_prefix_of(object_id, self.leaf_bits))
        entry = None if bucket is None else bucket.get(object_id)
        return None if entry is None else entry[0]

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """All (object id, heads hash), in no particular order."""
        for bucket in self._buckets.values():
            for object_id, (heads, _) in bucket.items():
                yield object_id, heads

    def hash(self) -> bytes:
        """Fingerprint of the whole set."""
        return self._total.to_bytes(ID_SIZE, "big")

    def summary(self, bits: int, prefix: int) -> tuple[bytes, int]:
        """``(hash, count)`` of the range of ids starting with ``prefix`` (``bits`` long)."""
        _check_range(bits, prefix)
        if bits == 0:
            return self.hash(), self._n
        if bits <= self.leaf_bits:
            leaves = self._leaves(bits, prefix)
            total = sum(self._sums[leaf] for leaf in leaves) & _MASK
            return total.to_bytes(ID_SIZE, "big"), sum(len(self._buckets[lf]) for lf in leaves)
        total, count = 0, 0
        for _, eh in self._deep(bits, prefix):
            total += eh
            count += 1
        return (total & _MASK).to_bytes(ID_SIZE, "big"), count

    def _leaves(self, bits: int, prefix: int) -> list[int]:
        """Occupied leaves under a range no deeper than the leaves: O(min(range, occupied))."""
        shift = self.leaf_bits - bits
        lo, hi = prefix << shift, (prefix + 1) << shift
        if hi - lo <= len(self._buckets):
            return [leaf for leaf in range(lo, hi) if leaf in self._buckets]
        return [leaf for leaf in self._buckets if lo <= leaf < hi]

    def _deep(self, bits: int, prefix: int) -> Iterator[tuple[bytes, int]]:
        """(object id, element hash) in a range deeper than the leaf buckets."""
        bucket = self._buckets.get(prefix >> (bits - self.leaf_bits), {})
        for object_id, (_, eh) in bucket.items():
            if _prefix_of(object_id, bits) == prefix:
                yield object_id, eh

    def elements(self, bits: int, prefix: int) -> list[tuple[bytes, bytes]]:
        """The (object id, heads hash) of a range, sorted by id."""
        _check_range(bits, prefix)
        if bits >= self.leaf_bits:
            bucket = self._buckets.get(prefix >> (bits - self.leaf_bits), {})
            out = [(oid, entry[0]) for oid, entry in bucket.items()
                   if _prefix_of(oid, bits) == prefix]
        else:
            out = [(oid, entry[0]) for leaf in self._leaves(bits, prefix)
                   for oid, entry in self._buckets[leaf].items()]
        out.sort()
        return out

    # --- responder ---------------------------------------------------------------------------
    def answer(self, request: HeadSyncRequest) -> HeadSyncResponse:
        """Answer a head-sync request (stateless): one result per range that differs from the
        requester's fingerprint, with elements when it holds at most ``threshold`` of them or
        cannot be split further."""
        results: list[RangeResult] = []
        for q in request.ranges:
            h, count = self.summary(q.bits, q.prefix)
            if h == q.hash and count == q.count:
                continue
            elements: tuple[tuple[bytes, bytes], ...] | None = None
            if count <= request.threshold or q.bits == MAX_RANGE_BITS:
                if count > MAX_RANGE_ELEMENTS:
                    raise ProtocolError(
                        f"range ({q.bits}, {q.prefix}) holds {count} elements; cannot enumerate")
                elements = tuple(self.elements(q.bits, q.prefix))
            results.append(RangeResult(q.bits, q.prefix, h, count, elements))
        return HeadSyncResponse(request.space_id, tuple(results))


# --- requester ---------------------------------------------------------------------------------
@dataclass
class DiffResult:
    """What head sync found, from the requester's point of view."""

    remote_only: set[bytes] = field(default_factory=set)  #: objects new on their side
    local_only: set[bytes] = field(default_factory=set)  #: objects new on ours
    changed: set[bytes] = field(default_factory=set)  #: both have them, heads differ

    @property
    def empty(self) -> bool:
        return not (self.remote_only or self.local_only or self.changed)


#: Largest set a peer may claim for one space (unless ours is larger: then twice ours). A
#: peer that claims more is refused rather than explored; raise it for giant spaces.
DEFAULT_MAX_OBJECTS = 1 << 18
#: Extra depth allowed beyond where honest (random) ids stop splitting, so that a member who
#: grinds ids sharing a long prefix cannot make honest peers look like liars cheaply: pushing
#: a range past the cap needs threshold + 1 ids sharing at least this many more bits.
DEPTH_MARGIN_BITS = 24
_ROOT = (0, 0)


def honest_bits(n: int, threshold: int) -> int:
    """Depth (bits) below which, among ``n`` random ids, no range holds more than
    ``threshold`` of them except with probability < 2^-40 (union bound over the 2^b ranges of
    C(n, t+1) 2^(-b t)). 64 when ``threshold`` is 0 (every differing element is split to the
    bottom)."""
    if threshold == 0:
        return MAX_RANGE_BITS
    lg = ((threshold + 1) * math.log2(max(n, 1))
          - math.lgamma(threshold + 2) / math.log(2) + 40)
    return max(0, math.ceil(lg / threshold))


@dataclass(frozen=True)
class HeadSyncBudget:
    """What one session lets the peer cost, fixed when its root answer arrives from the count
    it claims and our own set size (see :meth:`HeadSyncSession.budget_for`)."""

    objects: int  #: no range may claim more; also the cap on ids listed in the whole session
    max_bits: int  #: deepest range we query (so at most max_bits / divide_bits + 1 rounds)
    max_ranges: int  #: ranges queried in the whole session, anchors included


class HeadSyncSession:
    """Requester side of one head sync of one space with one peer (sans-IO).

    Loop: ``tag, req = s.next_request()`` → send (up to ``max_outstanding`` in flight) →
    ``s.receive(tag, response)`` → … until ``s.done``; then read ``s.result``. Each request
    holds at most ``max_ranges`` ranges; requests of one level go out together, so the number
    of round trips is the depth of the search, not the number of messages.

    **A split range is asked again with its children.** When a range differs and is not
    listed, its ``2^divide_bits`` children go out *in one request together with the range
    itself* (its *anchor*). The responder answers a request from one state of its set, so the
    children's counts must add up to the anchor's count exactly — an honest peer whose set
    changes between rounds still passes, a liar does not. Every answer is checked against the
    rules below before anything in it is acted on; a broken rule raises
    :class:`~p2psync.errors.HeadSyncViolation`, ends the session and clears its result (the
    engine then disconnects the peer):

    ``unasked``/``space``: results only for ranges asked, once each, of this space.
    ``range``: listed ids lie inside their range, once each.
    ``enumerate``: a range holding at most ``threshold`` ids (or at full depth) is listed,
    with exactly ``count`` ids; a larger one is not.
    ``claim``: no count above the budget (:class:`HeadSyncBudget`, from the root claim).
    ``sum``: children's counts add up to their anchor's, exactly.
    ``depth``: no split below ``budget.max_bits``.
    ``ranges``: at most ``budget.max_ranges`` ranges queried in all.
    ``listed``: at most ``budget.objects`` ids listed in all.
    """

    def __init__(self, local: LDiff, space_id: str, *, divide_bits: int = DEFAULT_DIVIDE_BITS,
                 threshold: int = DEFAULT_THRESHOLD, max_ranges: int = MAX_RANGES,
                 max_outstanding: int = 8, max_objects: int = DEFAULT_MAX_OBJECTS,
                 max_bits: int | None = None) -> None:
        if not 1 <= divide_bits <= 8 or MAX_RANGE_BITS % divide_bits:
            raise ValueError("divide_bits must be in 1..8 and divide 64")
        if not 0 <= threshold <= MAX_RANGE_ELEMENTS or not 1 <= max_ranges <= MAX_RANGES:
            raise ValueError("threshold or max_ranges out of range")
        if max_ranges < (1 << divide_bits) + 1:
            raise ValueError("max_ranges must fit a range's children and the range itself")
        if max_outstanding < 1:
            raise ValueError("max_outstanding must be at least 1")
        if max_bits is not None and not 0 <= max_bits <= MAX_RANGE_BITS:
            raise ValueError("max_bits out of range")
        self.local = local
        self.space_id = space_id
        self.divide_bits = divide_bits
        self.threshold = threshold
        self.max_ranges = max_ranges
        self.max_outstanding = max_outstanding
        self.max_objects = max_objects
        self.max_bits = max_bits  #: override of the derived depth cap (tests with crafted ids)
        self.result = DiffResult()
        self.responses = 0
        self.failed = False
        self.budget: HeadSyncBudget | None = None
        self.ranges_queried = 1  #: ranges sent or queued so far (counted against the budget)
        self.listed = 0  #: ids the peer listed so far
        #: groups to ask: (bits, prefix, split) — split: the range and its children, else the
        #: range alone (the root). Children are made when the request is built (memory: one
        #: small tuple per split range, not 2^divide_bits).
        self._pending: deque[tuple[int, int, bool]] = deque([(0, 0, False)])
        self._outstanding: dict[int, tuple[dict[tuple[int, int], RangeQuery],
                                           list[tuple[int, int, bool]]]] = {}
        self._next_tag = 0

    @property
    def done(self) -> bool:
        return self.failed or (not self._pending and not self._outstanding)

    @property
    def pending_ranges(self) -> int:
        """Ranges queued, not yet sent (for benchmarks and status)."""
        group = (1 << self.divide_bits) + 1
        return sum(group if split else 1 for _, _, split in self._pending)

    def budget_for(self, claimed: int) -> HeadSyncBudget:
        """The budget once the peer claims ``claimed`` objects at the root: counts up to the
        larger set plus room for honest growth during the session; depth where honest ids
        stop splitting plus :data:`DEPTH_MARGIN_BITS`; ranges as if at every level each split
        range really held more than ``threshold`` ids (disjoint ranges of one level cannot hold
        more than the set)."""
        n = max(claimed, len(self.local))
        objects = n + n // 4 + 2 * (self.threshold + 1)
        db = self.divide_bits
        if self.max_bits is not None:
            max_bits = self.max_bits
        else:
            bits = honest_bits(objects, self.threshold) + DEPTH_MARGIN_BITS
            max_bits = min(MAX_RANGE_BITS, -(-bits // db) * db)
        per_level = objects // (self.threshold + 1)
        splits = sum(min(1 << (db * level), per_level) for level in range(max_bits // db))
        return HeadSyncBudget(objects, max_bits, 1 + ((1 << db) + 1) * splits)

    def next_request(self) -> tuple[int, HeadSyncRequest] | None:
        """The next ``(tag, request)`` to send, or None if nothing can be sent now (done, or
        the window of outstanding requests is full, or waiting for answers). A split range
        travels with all its children in one request."""
        if self.failed or not self._pending or len(self._outstanding) >= self.max_outstanding:
            return None
        group_size = (1 << self.divide_bits) + 1
        queries: dict[tuple[int, int], RangeQuery] = {}
        groups: list[tuple[int, int, bool]] = []
        while self._pending:
            bits, prefix, split = self._pending[0]
            if len(queries) + (group_size if split else 1) > self.max_ranges:
                break
            self._pending.popleft()
            groups.append((bits, prefix, split))
            for key in self._group_keys(bits, prefix, split):
                h, count = self.local.summary(*key)
                queries[key] = RangeQuery(key[0], key[1], h, count)
        tag = self._next_tag
        self._next_tag += 1
        self._outstanding[tag] = (queries, groups)
        return tag, HeadSyncRequest(self.space_id, self.threshold, tuple(queries.values()))

    def _group_keys(self, bits: int, prefix: int, split: bool) -> list[tuple[int, int]]:
        if not split:
            return [(bits, prefix)]
        return [(bits, prefix), *self._children(bits, prefix)]

    def _children(self, bits: int, prefix: int) -> list[tuple[int, int]]:
        base = prefix << self.divide_bits
        return [(bits + self.divide_bits, base + i) for i in range(1 << self.divide_bits)]

    def receive(self, tag: int, response: HeadSyncResponse) -> None:
        """Take the answer to request ``tag``. Checks every rule (class docstring) before
        acting on anything in it; on a violation raises :class:`HeadSyncViolation`, marks the
        session failed and discards its result."""
        sent = self._outstanding.pop(tag, None)
        if sent is None:
            raise self._fail("unasked", f"response for unknown request {tag}")
        asked, groups = sent
        if response.space_id != self.space_id:
            raise self._fail("space", "response names another space")
        self.responses += 1
        got: dict[tuple[int, int], RangeResult] = {}
        for res in response.results:
            key = (res.bits, res.prefix)
            if key not in asked or key in got:
                raise self._fail("unasked", f"result for range {key} that was not asked")
            got[key] = res
        differ = {k: r for k, r in got.items()
                  if not (r.hash == asked[k].hash and r.count == asked[k].count)}
        if self.budget is None and _ROOT in differ:
            self._rule_claim_root(differ[_ROOT].count)
            self.budget = self.budget_for(differ[_ROOT].count)
        for res in differ.values():
            self._rule_range(res)
            self._rule_enumerate(res)
            self._rule_claim(res)

        def count(key: tuple[int, int]) -> int:
            res = got.get(key)
            return asked[key].count if res is None else res.count

        anchors: set[tuple[int, int]] = set()
        for bits, prefix, split in groups:
            if split:
                anchors.add((bits, prefix))
                self._rule_sum((bits, prefix), count((bits, prefix)),
                               sum(count(k) for k in self._children(bits, prefix)))
        if self.budget is None:  # the root matched: nothing differs
            return
        # acted on: listed ranges and splits of every range but the anchors (an anchor only
        # vouches for its children's counts; its own answer was acted on a round earlier)
        act = [r for k, r in sorted(differ.items()) if k not in anchors]
        listed = sum(len(r.elements) for r in act if r.elements is not None)
        self._rule_listed(self.listed + listed)
        splits = [r for r in act if r.elements is None]
        for res in splits:
            self._rule_depth(res.bits + self.divide_bits)
        ranges = self.ranges_queried + len(splits) * ((1 << self.divide_bits) + 1)
        self._rule_ranges(ranges)
        # every rule held: act
        self.listed += listed
        self.ranges_queried = ranges
        for res in act:
            if res.elements is not None:
                self._compare(res)
        self._pending.extend((res.bits, res.prefix, True) for res in splits)

    # --- the rules (one method each, so a test can switch one off and see its guard fail) ---
    def _rule_range(self, res: RangeResult) -> None:
        if res.elements is None:
            return
        seen: set[bytes] = set()
        for oid, _ in res.elements:
            if _prefix_of(oid, res.bits) != res.prefix or oid in seen:
                raise self._fail("range", f"element outside range ({res.bits}, {res.prefix})"
                                          " or listed twice")
            seen.add(oid)

    def _rule_enumerate(self, res: RangeResult) -> None:
        key = (res.bits, res.prefix)
        if res.elements is None:
            if res.bits + self.divide_bits > MAX_RANGE_BITS:
                raise self._fail("enumerate", f"did not list full-depth range {key}")
            if res.count <= self.threshold:
                raise self._fail("enumerate", f"range {key} holds {res.count} <= threshold "
                                              f"{self.threshold} but was not listed")
            return
        if len(res.elements) != res.count:
            raise self._fail("enumerate", f"range {key} lists {len(res.elements)} ids but "
                                          f"claims {res.count}")
        if res.count > self.threshold and res.bits < MAX_RANGE_BITS:
            raise self._fail("enumerate", f"range {key} holds {res.count} > threshold "
                                          f"{self.threshold} but was listed")

    def _rule_claim_root(self, claimed: int) -> None:
        limit = max(self.max_objects, 2 * len(self.local))
        if claimed > limit:
            raise self._fail("claim", f"claims {claimed} objects; we accept at most {limit}")

    def _rule_claim(self, res: RangeResult) -> None:
        assert self.budget is not None  # set by the root answer, before any other range
        limit = self.budget.objects
        if res.count > limit:
            raise self._fail("claim", f"range ({res.bits}, {res.prefix}) claims {res.count} "
                                      f"objects; the budget is {limit}")

    def _rule_sum(self, anchor: tuple[int, int], claimed: int, children: int) -> None:
        if children != claimed:
            raise self._fail("sum", f"children of range {anchor} hold {children} objects, "
                                    f"the range itself {claimed}")

    def _rule_depth(self, bits: int) -> None:
        assert self.budget is not None
        if bits > self.budget.max_bits:
            raise self._fail("depth", f"would split to {bits} bits; the budget is "
                                      f"{self.budget.max_bits}")

    def _rule_ranges(self, ranges: int) -> None:
        assert self.budget is not None
        if ranges > self.budget.max_ranges:
            raise self._fail("ranges", f"would query {ranges} ranges; the budget is "
                                       f"{self.budget.max_ranges}")

    def _rule_listed(self, listed: int) -> None:
        assert self.budget is not None
        limit = self.budget.objects
        if listed > limit:
            raise self._fail("listed", f"listed {listed} ids; the budget is {limit}")

    def _fail(self, rule: str, msg: str) -> HeadSyncViolation:
        self.failed = True
        self._pending.clear()
        self._outstanding.clear()
        self.result = DiffResult()  # a violating peer's claims are discarded
        return HeadSyncViolation(rule, msg)

    def _compare(self, res: RangeResult) -> None:
        assert res.elements is not None
        theirs = dict(res.elements)
        ours = dict(self.local.elements(res.bits, res.prefix))
        for oid, heads in theirs.items():
            mine = ours.get(oid)
            if mine is None:
                self.result.remote_only.add(oid)
            elif mine != heads:
                self.result.changed.add(oid)
        self.result.local_only.update(oid for oid in ours if oid not in theirs)


# --- in-memory two-party driver ----------------------------------------------------------------
@dataclass
class SyncStats:
    """Cost of one head sync, counted on encoded messages."""

    round_trips: int = 0  #: windows of requests answered (latency-bound rounds)
    messages: int = 0  #: requests sent
    bytes_sent: int = 0  #: requester -> responder
    bytes_received: int = 0  #: responder -> requester


def reconcile(local: LDiff, remote: LDiff, *, space_id: str = "space",
              divide_bits: int = DEFAULT_DIVIDE_BITS, threshold: int = DEFAULT_THRESHOLD,
              max_ranges: int = MAX_RANGES, max_outstanding: int = 8,
              max_bits: int | None = None) -> tuple[DiffResult, SyncStats]:
    """Run a full head sync between two in-memory sets through real encode/decode, counting
    round trips (one per window of requests sent together) and bytes. For tests and bench."""
    session = HeadSyncSession(local, space_id, divide_bits=divide_bits, threshold=threshold,
                              max_ranges=max_ranges, max_outstanding=max_outstanding,
                              max_bits=max_bits)
    stats = SyncStats()
    while not session.done:
        flight: list[tuple[int, bytes]] = []
        while (nxt := session.next_request()) is not None:
            tag, req = nxt
            raw_req = encode(req, tag)
            stats.bytes_sent += len(raw_req)
            stats.messages += 1
            got = decode(raw_req)
            assert isinstance(got.message, HeadSyncRequest)
            flight.append((got.request_id, encode(remote.answer(got.message), got.request_id)))
        stats.round_trips += 1
        for _, raw_resp in flight:
            stats.bytes_received += len(raw_resp)
            env = decode(raw_resp)
            assert isinstance(env.message, HeadSyncResponse)
            session.receive(env.request_id, env.message)
    return session.result, stats
