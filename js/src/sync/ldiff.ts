/**
 * Head sync (p2psync/sync/ldiff.py): range reconciliation of a space's set of
 * (object id, heads hash).
 *
 * A range (bits, prefix) holds every object whose id starts with those bits; its fingerprint is
 * (sum of element hashes mod 2^256, count), element hash = BLAKE2b-256 (person p2psync-ldiff-v1)
 * of object id || heads hash. `LDiff` keeps elements in 2^leafBits buckets with cached sums;
 * `LDiff.answer` is the stateless responder; `HeadSyncSession` is the requester's sans-IO state
 * machine with the issue-20 bounds (every answer checked against the rules `unasked`, `space`,
 * `range`, `enumerate`, `claim`, `sum`, `depth`, `ranges`, `listed` before anything in it is
 * acted on; a broken rule throws HeadSyncViolation, ends the session and clears its result).
 * docs/sync-protocol.md section 3 has the reasoning; this is a line-by-line port.
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import { compareBytes, elementHash } from "../hashes.js";
import { HeadSyncViolation, ProtocolError } from "./errors.js";
import {
  decode,
  encode,
  type HeadSyncRequest,
  type HeadSyncResponse,
  ID_SIZE,
  MAX_RANGE_BITS,
  MAX_RANGE_ELEMENTS,
  MAX_RANGES,
  MsgType,
  type RangeQuery,
  type RangeResult,
} from "./messages.js";

const MASK = (1n << 256n) - 1n;
export const DEFAULT_LEAF_BITS = 12;
export const DEFAULT_DIVIDE_BITS = 4;
export const DEFAULT_THRESHOLD = 32;
export const DEFAULT_MAX_OBJECTS = 1 << 18;
export const DEPTH_MARGIN_BITS = 24;

const toBig = (b: Uint8Array): bigint => (b.length ? BigInt("0x" + bytesToHex(b)) : 0n);
function toBytes(n: bigint): Uint8Array {
  const hex = n.toString(16).padStart(ID_SIZE * 2, "0");
  const out = new Uint8Array(ID_SIZE);
  for (let i = 0; i < ID_SIZE; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The first `bits` bits of an id, as an integer. */
export function prefixOf(objectId: Uint8Array, bits: number): bigint {
  if (bits === 0) return 0n;
  const dv = new DataView(objectId.buffer, objectId.byteOffset, 8);
  return dv.getBigUint64(0) >> BigInt(64 - bits);
}

function checkRange(bits: number, prefix: bigint): void {
  if (!(bits >= 0 && bits <= MAX_RANGE_BITS) || prefix < 0n || prefix >= 1n << BigInt(bits)) {
    throw new RangeError(`bad range (${bits}, ${prefix})`);
  }
}

interface Entry { readonly id: Uint8Array; readonly heads: Uint8Array; readonly eh: bigint }

/** The set of (object id, heads hash) of one space, with cheap range fingerprints. */
export class LDiff {
  private readonly buckets = new Map<number, Map<string, Entry>>();
  private readonly sums = new Map<number, bigint>();
  private total = 0n;
  private n = 0;

  constructor(items: Iterable<readonly [Uint8Array, Uint8Array]> = [], readonly leafBits = DEFAULT_LEAF_BITS) {
    if (leafBits < 0 || leafBits > 20) throw new RangeError("leafBits must be between 0 and 20");
    for (const [id, heads] of items) this.set(id, heads);
  }

  private leaf(id: Uint8Array): number {
    return Number(prefixOf(id, this.leafBits));
  }

  /** Insert or update one object's heads hash. O(1). */
  set(objectId: Uint8Array, heads: Uint8Array): void {
    if (objectId.length !== ID_SIZE || heads.length !== ID_SIZE) throw new RangeError("object ids and heads hashes are 32 bytes");
    const leaf = this.leaf(objectId);
    let bucket = this.buckets.get(leaf);
    if (bucket === undefined) {
      bucket = new Map();
      this.buckets.set(leaf, bucket);
      this.sums.set(leaf, 0n);
    }
    const k = bytesToHex(objectId);
    const old = bucket.get(k);
    let sum = this.sums.get(leaf)!;
    if (old !== undefined) {
      if (compareBytes(old.heads, heads) === 0) return;
      sum -= old.eh;
      this.total -= old.eh;
    } else {
      this.n++;
    }
    const eh = toBig(elementHash(objectId, heads));
    bucket.set(k, { id: Uint8Array.from(objectId), heads: Uint8Array.from(heads), eh });
    this.sums.set(leaf, (sum + eh) & MASK);
    this.total = (this.total + eh) & MASK;
  }

  /** Remove one object; whether it was present. */
  remove(objectId: Uint8Array): boolean {
    if (objectId.length !== ID_SIZE) return false;
    const leaf = this.leaf(objectId);
    const bucket = this.buckets.get(leaf);
    const k = bytesToHex(objectId);
    const old = bucket?.get(k);
    if (bucket === undefined || old === undefined) return false;
    bucket.delete(k);
    this.total = (this.total - old.eh) & MASK;
    this.n--;
    if (bucket.size) this.sums.set(leaf, (this.sums.get(leaf)! - old.eh) & MASK);
    else {
      this.buckets.delete(leaf);
      this.sums.delete(leaf);
    }
    return true;
  }

  get size(): number {
    return this.n;
  }

  get(objectId: Uint8Array): Uint8Array | undefined {
    if (objectId.length !== ID_SIZE) return undefined;
    return this.buckets.get(this.leaf(objectId))?.get(bytesToHex(objectId))?.heads;
  }

  has(objectId: Uint8Array): boolean {
    return this.get(objectId) !== undefined;
  }

  *items(): IterableIterator<[Uint8Array, Uint8Array]> {
    for (const b of this.buckets.values()) for (const e of b.values()) yield [e.id, e.heads];
  }

  /** Fingerprint of the whole set. */
  hash(): Uint8Array {
    return toBytes(this.total);
  }

  /** (hash, count) of the range of ids starting with `prefix` (`bits` long). */
  summary(bits: number, prefix: bigint): [Uint8Array, number] {
    checkRange(bits, prefix);
    if (bits === 0) return [this.hash(), this.n];
    if (bits <= this.leafBits) {
      let total = 0n;
      let count = 0;
      for (const leaf of this.leaves(bits, prefix)) {
        total += this.sums.get(leaf)!;
        count += this.buckets.get(leaf)!.size;
      }
      return [toBytes(total & MASK), count];
    }
    let total = 0n;
    let count = 0;
    for (const e of this.deep(bits, prefix)) {
      total += e.eh;
      count++;
    }
    return [toBytes(total & MASK), count];
  }

  private leaves(bits: number, prefix: bigint): number[] {
    const shift = this.leafBits - bits;
    const lo = Number(prefix) * 2 ** shift;
    const hi = (Number(prefix) + 1) * 2 ** shift;
    if (hi - lo <= this.buckets.size) {
      const out: number[] = [];
      for (let leaf = lo; leaf < hi; leaf++) if (this.buckets.has(leaf)) out.push(leaf);
      return out;
    }
    return [...this.buckets.keys()].filter((leaf) => leaf >= lo && leaf < hi);
  }

  private *deep(bits: number, prefix: bigint): IterableIterator<Entry> {
    const bucket = this.buckets.get(Number(prefix >> BigInt(bits - this.leafBits)));
    if (bucket === undefined) return;
    for (const e of bucket.values()) if (prefixOf(e.id, bits) === prefix) yield e;
  }

  /** The (object id, heads hash) of a range, sorted by id. */
  elements(bits: number, prefix: bigint): [Uint8Array, Uint8Array][] {
    checkRange(bits, prefix);
    const out: [Uint8Array, Uint8Array][] = [];
    if (bits >= this.leafBits) {
      for (const e of this.deep(bits, prefix)) out.push([e.id, e.heads]);
    } else {
      for (const leaf of this.leaves(bits, prefix)) for (const e of this.buckets.get(leaf)!.values()) out.push([e.id, e.heads]);
    }
    return out.sort((a, b) => compareBytes(a[0], b[0]));
  }

  /** Answer a head-sync request (stateless, from one state of the set): one result per range
   * that differs from the requester's fingerprint, listed when it holds at most `threshold`
   * elements or cannot be split further. */
  answer(request: HeadSyncRequest): HeadSyncResponse {
    const results: RangeResult[] = [];
    for (const q of request.ranges) {
      const [h, count] = this.summary(q.bits, q.prefix);
      if (compareBytes(h, q.hash) === 0 && count === q.count) continue;
      let elements: [Uint8Array, Uint8Array][] | null = null;
      if (count <= request.threshold || q.bits === MAX_RANGE_BITS) {
        if (count > MAX_RANGE_ELEMENTS) throw new ProtocolError(`range (${q.bits}, ${q.prefix}) holds ${count} elements; cannot enumerate`);
        elements = this.elements(q.bits, q.prefix);
      }
      results.push({ bits: q.bits, prefix: q.prefix, hash: h, count, elements });
    }
    return { type: MsgType.HEAD_SYNC_RESPONSE, spaceId: request.spaceId, results };
  }
}

/** What head sync found, from the requester's side (hex id -> id). */
export class DiffResult {
  readonly remoteOnly = new Map<string, Uint8Array>();
  readonly localOnly = new Map<string, Uint8Array>();
  readonly changed = new Map<string, Uint8Array>();

  get empty(): boolean {
    return this.remoteOnly.size === 0 && this.localOnly.size === 0 && this.changed.size === 0;
  }
}

function lgamma(x: number): number {
  // Lanczos approximation (g = 7, n = 9); x > 0. Exact enough for a bound rounded up to bits.
  const c = [0.9999999999998099, 676.5203681218851, -1259.1392167224028, 771.3234287776531, -176.61503916999186,
    12.507343278686905, -0.13857109526572012, 0.000009984369578019572, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lgamma(1 - x);
  x -= 1;
  let a = c[0]!;
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i]! / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Depth below which, among n random ids, no range holds more than threshold of them except
 * with probability < 2^-40 (64 when threshold is 0). */
export function honestBits(n: number, threshold: number): number {
  if (threshold === 0) return MAX_RANGE_BITS;
  const lg = (threshold + 1) * Math.log2(Math.max(n, 1)) - lgamma(threshold + 2) / Math.log(2) + 40;
  return Math.max(0, Math.ceil(lg / threshold));
}

export interface HeadSyncBudget {
  readonly objects: number;
  readonly maxBits: number;
  readonly maxRanges: number;
}

export interface HeadSyncOptions {
  divideBits?: number;
  threshold?: number;
  maxRanges?: number;
  maxOutstanding?: number;
  maxObjects?: number;
  maxBits?: number | null;
}

type Key = string; // `${bits}:${prefix}`
const keyOf = (bits: number, prefix: bigint): Key => `${bits}:${prefix}`;
interface Group { readonly bits: number; readonly prefix: bigint; readonly split: boolean }

/**
 * Requester side of one head sync of one space with one peer (sans-IO):
 * `[tag, req] = s.nextRequest()` → send (up to maxOutstanding in flight) →
 * `s.receive(tag, response)` → … until `s.done`; then read `s.result`. A split range travels in
 * one request together with its children (its anchor), so the children's counts must add up to
 * the anchor's count in that same answer.
 */
export class HeadSyncSession {
  readonly divideBits: number;
  readonly threshold: number;
  readonly maxRanges: number;
  readonly maxOutstanding: number;
  readonly maxObjects: number;
  readonly maxBitsOverride: number | null;
  result = new DiffResult();
  responses = 0;
  failed = false;
  budget: HeadSyncBudget | null = null;
  rangesQueried = 1;
  listed = 0;
  private pending: Group[] = [{ bits: 0, prefix: 0n, split: false }];
  private readonly outstanding = new Map<number, { asked: Map<Key, RangeQuery>; groups: Group[] }>();
  private nextTag = 0;

  constructor(readonly local: LDiff, readonly spaceId: string, o: HeadSyncOptions = {}) {
    this.divideBits = o.divideBits ?? DEFAULT_DIVIDE_BITS;
    this.threshold = o.threshold ?? DEFAULT_THRESHOLD;
    this.maxRanges = o.maxRanges ?? MAX_RANGES;
    this.maxOutstanding = o.maxOutstanding ?? 8;
    this.maxObjects = o.maxObjects ?? DEFAULT_MAX_OBJECTS;
    this.maxBitsOverride = o.maxBits ?? null;
    const db = this.divideBits;
    if (!(db >= 1 && db <= 8) || MAX_RANGE_BITS % db) throw new RangeError("divideBits must be in 1..8 and divide 64");
    if (!(this.threshold >= 0 && this.threshold <= MAX_RANGE_ELEMENTS) || !(this.maxRanges >= 1 && this.maxRanges <= MAX_RANGES)) {
      throw new RangeError("threshold or maxRanges out of range");
    }
    if (this.maxRanges < (1 << db) + 1) throw new RangeError("maxRanges must fit a range's children and the range itself");
    if (this.maxOutstanding < 1) throw new RangeError("maxOutstanding must be at least 1");
    if (this.maxBitsOverride !== null && !(this.maxBitsOverride >= 0 && this.maxBitsOverride <= MAX_RANGE_BITS)) {
      throw new RangeError("maxBits out of range");
    }
  }

  get done(): boolean {
    return this.failed || (this.pending.length === 0 && this.outstanding.size === 0);
  }

  /** The budget once the peer claims `claimed` objects at the root. */
  budgetFor(claimed: number): HeadSyncBudget {
    const n = Math.max(claimed, this.local.size);
    const objects = n + Math.floor(n / 4) + 2 * (this.threshold + 1);
    const db = this.divideBits;
    let maxBits: number;
    if (this.maxBitsOverride !== null) maxBits = this.maxBitsOverride;
    else {
      const bits = honestBits(objects, this.threshold) + DEPTH_MARGIN_BITS;
      maxBits = Math.min(MAX_RANGE_BITS, Math.ceil(bits / db) * db);
    }
    const perLevel = Math.floor(objects / (this.threshold + 1));
    let splits = 0;
    for (let level = 0; level < Math.floor(maxBits / db); level++) splits += Math.min(2 ** (db * level), perLevel);
    return { objects, maxBits, maxRanges: 1 + ((1 << db) + 1) * splits };
  }

  private children(bits: number, prefix: bigint): [number, bigint][] {
    const base = prefix << BigInt(this.divideBits);
    const out: [number, bigint][] = [];
    for (let i = 0; i < 1 << this.divideBits; i++) out.push([bits + this.divideBits, base + BigInt(i)]);
    return out;
  }

  /** The next [tag, request] to send, or null (done, window full, or waiting for answers). */
  nextRequest(): [number, HeadSyncRequest] | null {
    if (this.failed || this.pending.length === 0 || this.outstanding.size >= this.maxOutstanding) return null;
    const groupSize = (1 << this.divideBits) + 1;
    const asked = new Map<Key, RangeQuery>();
    const groups: Group[] = [];
    while (this.pending.length) {
      const g = this.pending[0]!;
      if (asked.size + (g.split ? groupSize : 1) > this.maxRanges) break;
      this.pending.shift();
      groups.push(g);
      const keys: [number, bigint][] = g.split ? [[g.bits, g.prefix], ...this.children(g.bits, g.prefix)] : [[g.bits, g.prefix]];
      for (const [bits, prefix] of keys) {
        const [hash, count] = this.local.summary(bits, prefix);
        asked.set(keyOf(bits, prefix), { bits, prefix, hash, count });
      }
    }
    const tag = this.nextTag++;
    this.outstanding.set(tag, { asked, groups });
    return [tag, { type: MsgType.HEAD_SYNC_REQUEST, spaceId: this.spaceId, threshold: this.threshold, ranges: [...asked.values()] }];
  }

  /** Take the answer to request `tag`; every rule is checked before anything is acted on. */
  receive(tag: number, response: HeadSyncResponse): void {
    const sent = this.outstanding.get(tag);
    this.outstanding.delete(tag);
    if (sent === undefined) throw this.fail("unasked", `response for unknown request ${tag}`);
    const { asked, groups } = sent;
    if (response.spaceId !== this.spaceId) throw this.fail("space", "response names another space");
    this.responses++;
    const got = new Map<Key, RangeResult>();
    for (const res of response.results) {
      const k = keyOf(res.bits, res.prefix);
      if (!asked.has(k) || got.has(k)) throw this.fail("unasked", `result for range (${res.bits}, ${res.prefix}) that was not asked`);
      got.set(k, res);
    }
    const differ = new Map<Key, RangeResult>();
    for (const [k, r] of got) {
      const q = asked.get(k)!;
      if (!(compareBytes(r.hash, q.hash) === 0 && r.count === q.count)) differ.set(k, r);
    }
    const root = differ.get(keyOf(0, 0n));
    if (this.budget === null && root !== undefined) {
      this.ruleClaimRoot(root.count);
      this.budget = this.budgetFor(root.count);
    }
    for (const res of differ.values()) {
      this.ruleRange(res);
      this.ruleEnumerate(res);
      this.ruleClaim(res);
    }
    const count = (k: Key): number => got.get(k)?.count ?? asked.get(k)!.count;
    const anchors = new Set<Key>();
    for (const g of groups) {
      if (!g.split) continue;
      const k = keyOf(g.bits, g.prefix);
      anchors.add(k);
      let sum = 0;
      for (const [b, p] of this.children(g.bits, g.prefix)) sum += count(keyOf(b, p));
      this.ruleSum(k, count(k), sum);
    }
    if (this.budget === null) return; // the root matched: nothing differs
    const act = [...differ].filter(([k]) => !anchors.has(k)).map(([, r]) => r)
      .sort((a, b) => a.bits - b.bits || (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0));
    let listed = 0;
    for (const r of act) if (r.elements !== null) listed += r.elements.length;
    this.ruleListed(this.listed + listed);
    const splits = act.filter((r) => r.elements === null);
    for (const r of splits) this.ruleDepth(r.bits + this.divideBits);
    const ranges = this.rangesQueried + splits.length * ((1 << this.divideBits) + 1);
    this.ruleRanges(ranges);
    // every rule held: act
    this.listed += listed;
    this.rangesQueried = ranges;
    for (const r of act) if (r.elements !== null) this.compare(r);
    for (const r of splits) this.pending.push({ bits: r.bits, prefix: r.prefix, split: true });
  }

  // --- the rules ------------------------------------------------------------------------------
  private ruleRange(res: RangeResult): void {
    if (res.elements === null) return;
    const seen = new Set<string>();
    for (const [oid] of res.elements) {
      const k = bytesToHex(oid);
      if (prefixOf(oid, res.bits) !== res.prefix || seen.has(k)) {
        throw this.fail("range", `element outside range (${res.bits}, ${res.prefix}) or listed twice`);
      }
      seen.add(k);
    }
  }

  private ruleEnumerate(res: RangeResult): void {
    const key = `(${res.bits}, ${res.prefix})`;
    if (res.elements === null) {
      if (res.bits + this.divideBits > MAX_RANGE_BITS) throw this.fail("enumerate", `did not list full-depth range ${key}`);
      if (res.count <= this.threshold) throw this.fail("enumerate", `range ${key} holds ${res.count} <= threshold ${this.threshold} but was not listed`);
      return;
    }
    if (res.elements.length !== res.count) throw this.fail("enumerate", `range ${key} lists ${res.elements.length} ids but claims ${res.count}`);
    if (res.count > this.threshold && res.bits < MAX_RANGE_BITS) throw this.fail("enumerate", `range ${key} holds ${res.count} > threshold ${this.threshold} but was listed`);
  }

  private ruleClaimRoot(claimed: number): void {
    const limit = Math.max(this.maxObjects, 2 * this.local.size);
    if (claimed > limit) throw this.fail("claim", `claims ${claimed} objects; we accept at most ${limit}`);
  }

  private ruleClaim(res: RangeResult): void {
    const limit = this.budget!.objects;
    if (res.count > limit) throw this.fail("claim", `range (${res.bits}, ${res.prefix}) claims ${res.count} objects; the budget is ${limit}`);
  }

  private ruleSum(anchor: Key, claimed: number, children: number): void {
    if (children !== claimed) throw this.fail("sum", `children of range ${anchor} hold ${children} objects, the range itself ${claimed}`);
  }

  private ruleDepth(bits: number): void {
    if (bits > this.budget!.maxBits) throw this.fail("depth", `would split to ${bits} bits; the budget is ${this.budget!.maxBits}`);
  }

  private ruleRanges(ranges: number): void {
    if (ranges > this.budget!.maxRanges) throw this.fail("ranges", `would query ${ranges} ranges; the budget is ${this.budget!.maxRanges}`);
  }

  private ruleListed(listed: number): void {
    if (listed > this.budget!.objects) throw this.fail("listed", `listed ${listed} ids; the budget is ${this.budget!.objects}`);
  }

  private fail(rule: string, msg: string): HeadSyncViolation {
    this.failed = true;
    this.pending = [];
    this.outstanding.clear();
    this.result = new DiffResult(); // a violating peer's claims are discarded
    return new HeadSyncViolation(rule, msg);
  }

  private compare(res: RangeResult): void {
    const theirs = new Map(res.elements!.map(([o, hh]) => [bytesToHex(o), [o, hh] as const]));
    const ours = new Map(this.local.elements(res.bits, res.prefix).map(([o, hh]) => [bytesToHex(o), hh]));
    for (const [k, [oid, hh]] of theirs) {
      const mine = ours.get(k);
      if (mine === undefined) this.result.remoteOnly.set(k, oid);
      else if (compareBytes(mine, hh) !== 0) this.result.changed.set(k, oid);
    }
    for (const [k, [oid]] of this.local.elements(res.bits, res.prefix).map(([o, hh]) => [bytesToHex(o), [o, hh]] as const)) {
      if (!theirs.has(k)) this.result.localOnly.set(k, oid);
    }
  }
}

/** Cost of one in-memory head sync, counted on encoded messages. */
export interface SyncStats { roundTrips: number; messages: number; bytesSent: number; bytesReceived: number }

/** Run a full head sync between two in-memory sets through real encode/decode (tests, bench). */
export function reconcile(local: LDiff, remote: LDiff, spaceId = "space", o: HeadSyncOptions = {}): [DiffResult, SyncStats] {
  const s = new HeadSyncSession(local, spaceId, o);
  const stats: SyncStats = { roundTrips: 0, messages: 0, bytesSent: 0, bytesReceived: 0 };
  while (!s.done) {
    const flight: [number, Uint8Array][] = [];
    for (let nxt = s.nextRequest(); nxt !== null; nxt = s.nextRequest()) {
      const raw = encode(nxt[1], nxt[0]);
      stats.bytesSent += raw.length;
      stats.messages++;
      const got = decode(raw);
      if (got.message.type !== MsgType.HEAD_SYNC_REQUEST) throw new ProtocolError("not a head sync request");
      flight.push([got.requestId, encode(remote.answer(got.message), got.requestId)]);
    }
    stats.roundTrips++;
    for (const [, raw] of flight) {
      stats.bytesReceived += raw.length;
      const env = decode(raw);
      if (env.message.type !== MsgType.HEAD_SYNC_RESPONSE) throw new ProtocolError("not a head sync response");
      s.receive(env.requestId, env.message);
    }
  }
  return [s.result, stats];
}
