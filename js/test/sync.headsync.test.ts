/**
 * Head-sync poisoning (issue 20 item 1) in the TS requester: every rule an answer must satisfy,
 * each with a lying responder that breaks exactly that rule, and, in the same test, the rule
 * switched off on that session to see the liar get through (the switch-off proof, kept). Plus:
 * honest sets (also drifting between rounds) never trip a rule, and JS ↔ JS reconcile finds the
 * exact difference. Port of tests/test_headsync_rules.py.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { HeadSyncViolation } from "../src/sync/errors.js";
import { HeadSyncSession, LDiff, reconcile } from "../src/sync/ldiff.js";
import { type HeadSyncRequest, type HeadSyncResponse, MsgType, type RangeQuery, type RangeResult } from "../src/sync/messages.js";

const FAKE = new Uint8Array(32).fill(1);
type Claim = [number, Uint8Array[] | null] | null;
type Policy = (q: RangeQuery, anchor: boolean) => Claim;

/** n distinct ids inside range (bits, prefix). */
function madeUp(bits: number, prefix: bigint, n: number): Uint8Array[] {
  const head = bits ? prefix << BigInt(64 - bits) : 0n;
  return Array.from({ length: n }, (_, i) => {
    const id = new Uint8Array(32);
    new DataView(id.buffer).setBigUint64(0, head);
    new DataView(id.buffer).setUint32(28, i);
    return id;
  });
}

function liar(policy: Policy): (req: HeadSyncRequest) => HeadSyncResponse {
  return (req) => {
    const keys = new Set(req.ranges.map((q) => `${q.bits}:${q.prefix}`));
    const results: RangeResult[] = [];
    for (const q of req.ranges) {
      const claim = policy(q, keys.has(`${q.bits + 4}:${q.prefix << 4n}`));
      if (claim === null) continue;
      const [count, ids] = claim;
      results.push({ bits: q.bits, prefix: q.prefix, hash: FAKE, count, elements: ids === null ? null : ids.map((i) => [i, FAKE] as const) });
    }
    return { type: MsgType.HEAD_SYNC_RESPONSE, spaceId: req.spaceId, results };
  };
}

/** Run the session against answer; the violation it raised, or null when it finished. */
function drive(s: HeadSyncSession, answer: (r: HeadSyncRequest) => HeadSyncResponse, maxRequests = 300): HeadSyncViolation | null {
  let sent = 0;
  while (!s.done) {
    const flight: [number, HeadSyncRequest][] = [];
    for (let n = s.nextRequest(); n !== null; n = s.nextRequest()) flight.push(n);
    for (const [tag, req] of flight) {
      assert.ok(++sent <= maxRequests, `no end after ${maxRequests} requests`);
      try {
        s.receive(tag, answer(req));
      } catch (exc) {
        if (!(exc instanceof HeadSyncViolation)) throw exc;
        assert.ok(s.failed && s.result.empty);
        return exc;
      }
    }
  }
  return null;
}

type RuleName = "ruleSum" | "ruleClaimRoot" | "ruleClaim" | "ruleEnumerate" | "ruleRange" | "ruleDepth" | "ruleRanges" | "ruleListed";

/** The violation a fresh session (empty set) gets from the liar, optionally with one rule off. */
function violation(policy: Policy, off?: RuleName): [HeadSyncViolation | null, HeadSyncSession] {
  const s = new HeadSyncSession(new LDiff(), "sp");
  if (off !== undefined) (s as unknown as Record<RuleName, () => void>)[off] = () => undefined;
  // with a rule off, 40 requests are enough to see the liar get past where the rule stops it
  return [drive(s, liar(policy), off === undefined ? 3000 : 40), s];
}

/** The rule bites: the liar is caught with it on, and not by that rule with it off. */
function bites(policy: Policy, rule: string, method: RuleName): [HeadSyncViolation, HeadSyncSession] {
  const [exc, s] = violation(policy);
  assert.ok(exc !== null, `liar not caught (rule ${rule})`);
  assert.equal(exc.rule, rule);
  let offExc: HeadSyncViolation | null = null;
  try {
    offExc = violation(policy, method)[0];
  } catch (e) {
    // with the rule off the liar may make the session run away (the cap in drive)
    assert.ok(e instanceof assert.AssertionError, String(e));
  }
  assert.ok(offExc?.rule !== rule, `switched off, rule ${rule} still fired: the test does not depend on it`);
  return [exc, s];
}

test("sum: children must add up to their parent, in the same answer", () => {
  const [, s] = bites(() => [1000, null], "sum", "ruleSum");
  assert.equal(s.responses, 2);
  assert.equal(s.rangesQueried, 1 + 17);
});

test("claim at the root: 'differs, count 2^40' is refused on the first answer", () => {
  const [, s] = bites((q) => [2 ** 40 / 2 ** q.bits, null], "claim", "ruleClaimRoot");
  assert.equal(s.responses, 1);
  assert.equal(s.rangesQueried, 1);
});

test("claim below the root: a parent growing past the budget", () => {
  bites((q, anchor) => (q.bits === 0 && !anchor ? [1000, null] : [Math.floor(1_000_000 / 2 ** q.bits), null]), "claim", "ruleClaim");
});

test("enumerate: a small range must be listed, a large one must not", () => {
  bites((q, anchor) => {
    if (q.bits === 0 || anchor) return [40, null];
    const p = Number(q.prefix & 15n);
    return p === 0 ? [5, null] : p === 1 ? [35, null] : null;
  }, "enumerate", "ruleEnumerate");
  bites((q, anchor) => {
    if (q.bits === 0 || anchor) return [40, null];
    const n = q.prefix === 0n ? 33 : q.prefix === 1n ? 7 : null;
    return n === null ? null : [n, madeUp(q.bits, q.prefix, n)];
  }, "enumerate", "ruleEnumerate");
});

for (const how of ["outside", "twice"] as const) {
  test(`range: listed ids lie in their range, once each (${how})`, () => {
    bites((q, anchor) => {
      if (q.bits === 0 || anchor) return [40, null];
      if (q.prefix !== 0n && q.prefix !== 1n) return null;
      const ids = madeUp(q.bits, q.prefix, 20);
      if (q.prefix === 0n) ids[19] = how === "outside" ? new Uint8Array(32).fill(0xff) : ids[0]!;
      return [20, ids];
    }, "range", "ruleRange");
  });
}

test("depth: no split below what the claims allow", () => {
  const [, s] = bites((q, anchor) => (q.bits === 0 || anchor || (q.prefix & 15n) === 0n ? [100, null] : null), "depth", "ruleDepth");
  assert.equal(s.budget?.maxBits, 32);
  assert.equal(s.responses, 1 + 32 / 4);
});

function reInflating(leaf: (q: RangeQuery) => [number, Uint8Array[] | null], levels: number): Policy {
  return (q, anchor) => {
    if (q.bits === 0 && !anchor) return [1000, null];
    const childBits = anchor ? q.bits + 4 : q.bits;
    const child = childBits > 4 * levels ? leaf(q) : [40, null] as [number, null];
    return anchor ? [16 * child[0], null] : child;
  };
}

test("ranges: total work is capped", () => {
  const [, s] = bites(reInflating(() => [40, null], 99), "ranges", "ruleRanges");
  assert.ok(s.budget !== null && s.rangesQueried <= s.budget.maxRanges && s.budget.maxRanges < 5000);
});

test("listed: total listed ids are capped", () => {
  const [, s] = bites(reInflating((q) => [32, madeUp(q.bits, q.prefix, 32)], 1), "listed", "ruleListed");
  assert.ok(s.budget !== null && s.listed <= s.budget.objects);
});

const rnd = (n: number): [Uint8Array, Uint8Array][] => Array.from({ length: n }, () => [randomBytes(32), randomBytes(32)]);

test("honest: a set changing between rounds passes the exact sum rule", () => {
  const items = rnd(3000);
  const local = new LDiff(items.slice(0, 1000));
  const remote = new LDiff(items);
  const s = new HeadSyncSession(local, "sp");
  const exc = drive(s, (req) => {
    for (const [a, b] of rnd(40)) remote.set(a, b);
    let i = 0;
    for (const [oid] of remote.items()) {
      if (i++ >= 3) break;
      remote.remove(oid);
    }
    return remote.answer(req);
  });
  assert.equal(exc, null);
  assert.ok(s.result.remoteOnly.size >= 1500);
});

test("honest: 5 000 new objects stay far inside the budget; reconcile finds the exact difference", () => {
  const items = rnd(5000);
  const s = new HeadSyncSession(new LDiff(), "sp");
  assert.equal(drive(s, new LDiff(items).answer.bind(new LDiff(items)), 10_000), null);
  assert.equal(s.result.remoteOnly.size, 5000);
  assert.ok(s.budget !== null && s.rangesQueried * 4 < s.budget.maxRanges);
  const common = rnd(2000);
  const a = new LDiff(common);
  const b = new LDiff(common);
  const onlyB = rnd(7);
  for (const [x, y] of onlyB) b.set(x, y);
  const onlyA = rnd(5);
  for (const [x, y] of onlyA) a.set(x, y);
  b.set(common[0]![0], randomBytes(32));
  const [diff, stats] = reconcile(a, b);
  assert.equal(diff.remoteOnly.size, 7);
  assert.equal(diff.localOnly.size, 5);
  assert.equal(diff.changed.size, 1);
  assert.ok(stats.roundTrips <= 4, `${stats.roundTrips} round trips`);
  const [same] = reconcile(a, new LDiff([...a.items()]));
  assert.ok(same.empty);
});
