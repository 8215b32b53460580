/**
 * The space ACL (p2psync/replica/acl.py): a causal DAG of signed records, replayed
 * deterministically, sans-IO. Same rules as Python (docs/acl.md):
 *
 * - Admission: a record is stored only if well formed, signed, and valid in the state of its
 *   own causal past; records whose parents are missing wait.
 * - Replay order: topological by (depth, id), intrinsic to each record, so the state of any
 *   head is the same on every replica.
 * - Conflicts: records by an author removed/demoted by a concurrent record are vetoed (as are
 *   joins through a concurrently revoked invite); among concurrent permission changes of one
 *   member the lowest role wins; a second removal of the same member is skipped.
 * - Read keys: every root/remove/rotate adds a key to the key graph; the current key is the
 *   latest clean tip.
 *
 * Maps are keyed by lowercase hex of ids/account keys. Down-closed record sets are bigint
 * bitmasks (bit = admission index), like Python's int masks.
 */
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { contentId } from "../codec.js";
import { ReadKey, seal, unseal } from "../crypto/box.js";
import { concat, type SigningKey, verify } from "../crypto/keys.js";
import { BadSignature, DecryptionFailed, P2PSyncError } from "../errors.js";
import {
  AccessDenied, type AclRecord, buildRecord, decodeAclRecord, type Payload, introducesKey, InvalidAclRecord, JOIN_DOMAIN,
  joinProofMessage, Kind, Role, rotationOf,
} from "./aclRecords.js";
import type { AclGate } from "./tree.js";

export const MAX_PENDING = 4096;
export const MAX_SHELVED = 1024;
export const MAX_REQUESTS_PER_INVITE = 32;

/** A change names an unknown/earlier ACL head (Python InvalidChange). */
export class InvalidAclHead extends P2PSyncError {}
/** A change is not under a current read key of its head (Python UnknownReadKey). */
export class UnknownReadKey extends P2PSyncError {}

const MEMBER = 0;
const INVITE = 1;
type Holder = `${0 | 1}:${string}`;
const holder = (kind: 0 | 1, who: string): Holder => `${kind}:${who}`;
type Order = [number, string];
type Failure = [new (msg: string) => Error, string];

const h = bytesToHex;
const enc = new TextEncoder();

/** Associated data binding a wrapped old key to its space and id. */
export function wrapAad(spaceId: string, oldKeyId: Uint8Array): Uint8Array {
  return concat(enc.encode("p2psync/acl-wrap\0"), enc.encode(spaceId), new Uint8Array([0]), oldKeyId);
}

/** May actor grant role, or act on something holding it? Owner only for admin; admins for
 * writer/reader; nobody for owner (ownership moves only by transfer). */
function mayAct(actor: Role | undefined, role: Role): boolean {
  if (actor === undefined || role === Role.OWNER) return false;
  if (role === Role.ADMIN) return actor === Role.OWNER;
  return actor >= Role.ADMIN;
}

const cmpOrder = (a: Order, b: Order): number => (a[0] !== b[0] ? a[0] - b[0] : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);

export interface InviteInfo {
  readonly recordId: string;
  readonly inviteKey: Uint8Array;
  readonly anyoneCanJoin: boolean;
  readonly role: Role;
  readonly author: string;
  readonly expiresAt: number;
}

const expired = (inv: InviteInfo, at: number): boolean => inv.expiresAt !== 0 && at > inv.expiresAt;

export interface RequestInfo { readonly recordId: string; readonly joiner: string; readonly inviteId: string }

/** ACL state after replaying a down-closed set of records (mutable only during replay). */
export class AclState {
  owner = "";
  members = new Map<string, Role>();
  replicators = new Set<string>();
  invites = new Map<string, InviteInfo>();
  requests = new Map<string, RequestInfo>();
  roleSetBy = new Map<string, string>();
  /** account -> id of the record that removed it (or its leave). */
  departed = new Map<string, string>();
  /** record id -> why it had no effect at its replay position. */
  skipped = new Map<string, string>();
  keyOrder = new Map<string, Order>();
  wrapped = new Set<string>();
  holders = new Map<string, Set<Holder>>();
  deleted = new Map<string, string>();
  spaceDeleted: string | null = null;
  /** id (hex) of the space's current metadata record (SPACE_META), if any */
  meta: string | null = null;

  copy(): AclState {
    const s = new AclState();
    s.owner = this.owner;
    s.members = new Map(this.members);
    s.replicators = new Set(this.replicators);
    s.invites = new Map(this.invites);
    s.requests = new Map(this.requests);
    s.roleSetBy = new Map(this.roleSetBy);
    s.departed = new Map(this.departed);
    s.skipped = new Map(this.skipped);
    s.keyOrder = new Map(this.keyOrder);
    s.wrapped = new Set(this.wrapped);
    s.holders = new Map([...this.holders].map(([k, v]) => [k, new Set(v)]));
    s.deleted = new Map(this.deleted);
    s.spaceDeleted = this.spaceDeleted;
    s.meta = this.meta;
    return s;
  }

  isDeleted(objectId: string): boolean {
    return this.spaceDeleted !== null || this.deleted.has(objectId);
  }

  role(account: string): Role | undefined {
    return this.members.get(account);
  }

  canWrite(account: string): boolean {
    const r = this.members.get(account);
    return r !== undefined && r >= Role.WRITER;
  }

  /** Read keys not wrapped by a newer key, oldest first in replay order. */
  get tips(): string[] {
    return [...this.keyOrder.keys()].filter((k) => !this.wrapped.has(k))
      .sort((a, b) => cmpOrder(this.keyOrder.get(a)!, this.keyOrder.get(b)!));
  }

  private clean(keyId: string): boolean {
    for (const hd of this.holders.get(keyId) ?? []) {
      const who = hd.slice(2);
      if (hd.startsWith(`${MEMBER}:`) && !this.members.has(who)) return false;
      if (hd.startsWith(`${INVITE}:`) && !(this.invites.get(who)?.anyoneCanJoin ?? false)) return false;
    }
    return true;
  }

  /** The key new content is encrypted under: the latest clean tip, else the latest tip. */
  get currentKeyId(): string {
    const tips = this.tips;
    const clean = tips.filter((k) => this.clean(k));
    return (clean.length ? clean : tips).at(-1)!;
  }

  /** Why an admin should rotate now (empty when the current key is fine). */
  get rotationReasons(): string[] {
    const reasons: string[] = [];
    const tips = this.tips;
    if (tips.length > 1) reasons.push(`${tips.length} concurrent read keys must be merged`);
    const cur = this.currentKeyId;
    if (!this.clean(cur)) reasons.push("the current read key is held by someone who is no longer a member");
    const held = new Set([...this.holders.get(cur) ?? []].filter((x) => x.startsWith(`${MEMBER}:`)).map((x) => x.slice(2)));
    if ([...this.members.keys()].some((m) => !held.has(m))) reasons.push("a member does not hold the current read key");
    return reasons;
  }

  get rotationNeeded(): boolean {
    return this.rotationReasons.length > 0;
  }
}

export interface AclAddResult {
  readonly id: string;
  readonly status: "added" | "duplicate" | "waiting" | "ignored";
  readonly released: readonly string[];
  readonly rejected: readonly [string, string][];
}

/** All known ACL records of one space, their replayed states, and the tree's ACL gate. */
export class Acl {
  readonly spaceId: string;
  readonly rootId: string;
  me: SigningKey | undefined;
  removalPolicy: "flag" | "strict" = "flag";
  readonly rejected = new Map<string, string>();
  private readonly records = new Map<string, AclRecord>();
  private readonly bit = new Map<string, number>();
  private readonly anc = new Map<string, bigint>();
  private readonly order = new Map<string, Order>();
  private readonly headSet = new Set<string>();
  private readonly stateAtCache = new Map<string, AclState>();
  private readonly setStates = new Map<bigint, AclState>();
  private readonly pending = new Map<string, AclRecord>();
  private readonly waitingOn = new Map<string, Set<string>>();
  private readonly sealed = new Map<string, [string, Uint8Array][]>();
  private readonly wraps = new Map<string, [string, Uint8Array][]>();
  private readonly byBit: string[] = [];
  private effective = 0n;
  private readonly shelf = new Map<string, AclRecord>();
  private readonly departures = new Map<string, string[]>();
  private promoted: string[] = [];

  constructor(spaceId: string, rootRaw: Uint8Array, opts: { me?: SigningKey; owner?: Uint8Array } = {}) {
    const root = decodeAclRecord(rootRaw, spaceId);
    if (root.payload.kind !== Kind.ROOT) throw new InvalidAclRecord("the first ACL record must be the root");
    if (opts.owner !== undefined && h(root.author) !== h(opts.owner)) {
      throw new AccessDenied("the ACL root is not signed by the space owner");
    }
    this.spaceId = spaceId;
    this.me = opts.me;
    this.rootId = h(root.id);
    this.register(root);
  }

  /** Rebuild from stored records in any order; bad ones are recorded in rejected. */
  static fromRecords(spaceId: string, raws: Iterable<Uint8Array>, opts: { me?: SigningKey; owner?: Uint8Array } = {}): Acl {
    const decoded = new Map<string, AclRecord>();
    const bad = new Map<string, string>();
    for (const raw of raws) {
      try {
        const rec = decodeAclRecord(raw, spaceId);
        decoded.set(h(rec.id), rec);
      } catch (e) {
        if (!(e instanceof InvalidAclRecord)) throw e;
        bad.set(h(contentId(raw)), e.message);
      }
    }
    const roots = [...decoded.values()].filter((r) => r.payload.kind === Kind.ROOT);
    if (roots.length !== 1) throw new InvalidAclRecord(`expected exactly one ACL root, found ${roots.length}`);
    const acl = new Acl(spaceId, roots[0]!.raw, opts);
    for (const [k, v] of bad) acl.rejected.set(k, v);
    const depth = depths(decoded);
    const gone = new Set<string>();
    for (const rec of decoded.values()) {
      if (rec.payload.kind === Kind.REMOVE) rec.payload.members.forEach((m) => gone.add(h(m)));
      else if (rec.payload.kind === Kind.LEAVE) gone.add(h(rec.author));
    }
    const suspect = new Set([...decoded].filter(([, r]) => r.payload.kind === Kind.MERGE && gone.has(h(r.author))).map(([k]) => k));
    const needed = new Set<string>();
    const stack = [...decoded.keys()].filter((k) => !suspect.has(k));
    while (stack.length) {
      const cur = stack.pop()!;
      if (needed.has(cur)) continue;
      needed.add(cur);
      for (const p of decoded.get(cur)!.prev) if (decoded.has(h(p)) && !needed.has(h(p))) stack.push(h(p));
    }
    const key = (r: string): [number, number, string] => [needed.has(r) ? 0 : 1, depth.get(r)!, r];
    const ids = [...decoded.keys()].sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      return x[0] - y[0] || x[1] - y[1] || (x[2] < y[2] ? -1 : x[2] > y[2] ? 1 : 0);
    });
    for (const rid of ids) {
      try {
        acl.addRecord(decoded.get(rid)!);
      } catch (e) {
        if (!(e instanceof InvalidAclRecord || e instanceof AccessDenied)) throw e;
        acl.rejected.set(rid, e.message);
      }
    }
    return acl;
  }

  /** Admit one raw record; throws InvalidAclRecord / AccessDenied and changes nothing if it is
   * malformed, forged, for another space, or not allowed in its own causal past. */
  add(raw: Uint8Array): AclAddResult {
    return this.addRecord(decodeAclRecord(raw, this.spaceId));
  }

  private addRecord(rec: AclRecord): AclAddResult {
    const id = h(rec.id);
    const res = (status: AclAddResult["status"], released: string[] = [], rejected: [string, string][] = []): AclAddResult =>
      ({ id, status, released, rejected });
    if (this.records.has(id)) return res("duplicate");
    if (this.pending.has(id)) return res("waiting");
    if (this.shelf.has(id)) return res("ignored");
    if (rec.payload.kind === Kind.ROOT) throw new InvalidAclRecord("a space has exactly one ACL root");
    const prev = rec.prev.map(h);
    if (prev.some((p) => !this.records.has(p) && !this.shelf.has(p))) {
      if (this.pending.size >= MAX_PENDING) throw new InvalidAclRecord("too many ACL records waiting for missing parents");
      this.pending.set(id, rec);
      for (const p of prev) {
        if (!this.records.has(p)) {
          if (!this.waitingOn.has(p)) this.waitingOn.set(p, new Set());
          this.waitingOn.get(p)!.add(id);
        }
      }
      return res("waiting");
    }
    const status = this.settle(rec);
    const released: string[] = [];
    const rejected: [string, string][] = [];
    const queue = [id];
    while (queue.length) {
      const done = queue.pop()!;
      const ws = [...this.waitingOn.get(done) ?? []].sort();
      this.waitingOn.delete(done);
      for (const wid of ws) {
        const w = this.pending.get(wid);
        if (w === undefined || w.prev.some((p) => !this.records.has(h(p)) && !this.shelf.has(h(p)))) continue;
        this.pending.delete(wid);
        let got: "added" | "ignored";
        try {
          got = this.settle(w);
        } catch (e) {
          if (!(e instanceof InvalidAclRecord || e instanceof AccessDenied)) throw e;
          this.rejected.set(wid, e.message);
          rejected.push([wid, e.message]);
          continue;
        }
        if (got === "added") released.push(wid);
        queue.push(wid);
      }
    }
    return res(status, released, rejected);
  }

  private settle(rec: AclRecord): "added" | "ignored" {
    if (this.ignorable(rec)) {
      this.shelf.set(h(rec.id), rec);
      while (this.shelf.size > MAX_SHELVED) this.shelf.delete(this.shelf.keys().next().value!);
      return "ignored";
    }
    for (const p of rec.prev) if (this.shelf.has(h(p))) this.promote(h(p));
    this.admit(rec);
    return "added";
  }

  /** A merge by a departed author, shelved unless its admitted parents descend from the departure. */
  private ignorable(rec: AclRecord): boolean {
    const a = h(rec.author);
    if (rec.payload.kind !== Kind.MERGE || !this.departures.has(a)) return false;
    const st = this.state;
    const gone = st.departed.get(a);
    if (gone === undefined || st.members.has(a) || st.replicators.has(a)) return false;
    return !rec.prev.some((p) => this.records.has(h(p)) && this.isAncestor(gone, h(p)));
  }

  private promote(rid: string): void {
    const order: string[] = [];
    const stack: [string, boolean][] = [[rid, false]];
    const seen = new Set<string>();
    while (stack.length) {
      const [cur, expanded] = stack.pop()!;
      if (expanded) {
        order.push(cur);
        continue;
      }
      if (seen.has(cur) || !this.shelf.has(cur)) continue;
      seen.add(cur);
      stack.push([cur, true]);
      for (const p of this.shelf.get(cur)!.prev) if (this.shelf.has(h(p))) stack.push([h(p), false]);
    }
    for (const cur of order) {
      const rec = this.shelf.get(cur)!;
      this.shelf.delete(cur);
      this.admit(rec);
      this.promoted.push(cur);
    }
  }

  get shelved(): string[] {
    return [...this.shelf.keys()];
  }

  takePromoted(): string[] {
    const out = this.promoted;
    this.promoted = [];
    return out;
  }

  /** Every admitted record, raw, in causal (replay) order. */
  export(): Uint8Array[] {
    return [...this.records.keys()].sort((a, b) => cmpOrder(this.order.get(a)!, this.order.get(b)!))
      .map((i) => this.records.get(i)!.raw);
  }

  record(id: string): AclRecord | undefined {
    return this.records.get(id);
  }

  has(id: string): boolean {
    return this.records.has(id);
  }

  get size(): number {
    return this.records.size;
  }

  get heads(): string[] {
    return [...this.headSet].sort((a, b) => cmpOrder(this.order.get(a)!, this.order.get(b)!));
  }

  get waiting(): string[] {
    return [...this.pending.keys()].sort();
  }

  /** The state after replaying every admitted record. */
  get state(): AclState {
    if (this.headSet.size === 1) return this.stateAt(this.headSet.values().next().value!);
    return this.replay((1n << BigInt(this.bit.size)) - 1n);
  }

  /** The state of the causal past of recordId (itself included); cached. */
  stateAt(recordId: string): AclState {
    if (!this.records.has(recordId)) throw new InvalidAclHead("unknown ACL head");
    const chain: string[] = [];
    let cur = recordId;
    while (!this.stateAtCache.has(cur)) {
      const prev = this.records.get(cur)!.prev;
      if (prev.length !== 1) break;
      chain.push(cur);
      cur = h(prev[0]!);
    }
    if (!this.stateAtCache.has(cur)) this.stateAtCache.set(cur, this.replay(this.anc.get(cur)!));
    let state = this.stateAtCache.get(cur)!;
    for (const rid of chain.reverse()) {
      state = state.copy();
      this.apply(state, this.records.get(rid)!, undefined);
      this.stateAtCache.set(rid, state);
    }
    return state;
  }

  isAncestor(ancestor: string, descendant: string): boolean {
    return ((this.anc.get(descendant)! >> BigInt(this.bit.get(ancestor)!)) & 1n) === 1n;
  }

  concurrent(a: string, b: string): boolean {
    return !this.isAncestor(a, b) && !this.isAncestor(b, a);
  }

  /** A new space ACL: the root record names owner and seals the first read key to it. */
  static create(spaceId: string, owner: SigningKey, timestamp?: number): Acl {
    const key = ReadKey.generate();
    const raw = buildRecord(owner, spaceId, [], { kind: Kind.ROOT, sealedKey: seal(key.key, owner.public) }, timestamp);
    return new Acl(spaceId, raw, { me: owner, owner: owner.public });
  }

  /** Build a record naming every current head, admit it, and return it raw (the caller stores
   * and sends it). Throws like add() when the author may not do this. */
  emit(author: SigningKey, payload: Payload, timestamp?: number): Uint8Array {
    const raw = buildRecord(author, this.spaceId, this.heads.map((x) => hexToBytes(x)), payload, timestamp);
    this.add(raw);
    return raw;
  }

  /** This ACL as the object tree's gate: changes are judged at the ACL head they name. */
  gate(): AclGate {
    return {
      knowsHead: (aclHead) => this.knowsHead(h(aclHead)),
      checkChange: (author, aclHead, readKeyId, prevs) => {
        this.checkChange(author, aclHead, readKeyId, prevs.map((c) => c.aclHead));
      },
    };
  }

  // --- the ACL gate for object trees --------------------------------------------------------
  /** Known and admitted; a shelved merge that a tree change names is admitted now. */
  knowsHead(aclHead: string): boolean {
    if (this.shelf.has(aclHead)) this.promote(aclHead);
    return this.records.has(aclHead);
  }

  /** A tree change is allowed iff its author may write at aclHead, the head does not go back
   * from its parents' heads, and its read key is a current key tip at the head. */
  checkChange(author: Uint8Array, aclHead: Uint8Array, readKeyId: Uint8Array, parentAclHeads: readonly Uint8Array[]): void {
    const head = h(aclHead);
    if (!this.knowsHead(head)) throw new InvalidAclHead("change names an unknown ACL head");
    for (const ph of parentAclHeads.map(h)) {
      if (!this.knowsHead(ph)) throw new InvalidAclHead("a parent change names an unknown ACL head");
      if (!this.isAncestor(ph, head)) {
        throw new InvalidAclHead("change's ACL head is earlier than (or concurrent with) its parents' ACL heads");
      }
    }
    const st = this.stateAt(head);
    if (!st.canWrite(h(author))) throw new AccessDenied("the author may not write at this ACL head");
    const kid = h(readKeyId);
    if (!st.keyOrder.has(kid) || st.wrapped.has(kid)) {
      throw new UnknownReadKey("change is not encrypted under a current read key of its head");
    }
    if (this.removalPolicy === "strict" && this.removedAfter(author, aclHead) !== undefined) {
      throw new AccessDenied("the author was removed at or after the ACL head this change names (strict)");
    }
  }

  /** Id of an effective removal (or leave) of author that aclHead does not descend from. */
  removedAfter(author: Uint8Array, aclHead: Uint8Array): string | undefined {
    const ids = this.departures.get(h(author));
    const head = h(aclHead);
    if (!ids || !this.records.has(head)) return undefined;
    const skipped = this.state.skipped;
    return ids.find((rid) => !skipped.has(rid) && !this.isAncestor(rid, head));
  }

  // --- keys -------------------------------------------------------------------------------
  /** Every read key who can open: sealed to it, or wrapped by a key it holds (key id hex -> key). */
  keysOf(who: SigningKey): Map<string, ReadKey> {
    const ring = new Map<string, ReadKey>();
    const me = h(who.public);
    const kids = [...new Set([...this.sealed.keys(), ...this.wraps.keys()])]
      .sort((a, b) => cmpOrder(this.order.get(b)!, this.order.get(a)!));
    for (const kid of kids) {
      if (!ring.has(kid)) {
        for (const [to, blob] of this.sealed.get(kid) ?? []) {
          if (to !== me) continue;
          try {
            ring.set(kid, new ReadKey(unseal(blob, who)));
            break;
          } catch (e) {
            if (!(e instanceof DecryptionFailed)) throw e;
          }
        }
      }
      const k = ring.get(kid);
      if (k === undefined) continue;
      for (const [old, ct] of this.wraps.get(kid) ?? []) {
        if (ring.has(old)) continue;
        try {
          ring.set(old, new ReadKey(k.decrypt(ct, wrapAad(this.spaceId, hexToBytes(old)))));
        } catch (e) {
          if (!(e instanceof DecryptionFailed)) throw e;
        }
      }
    }
    return ring;
  }

  readKey(readKeyId: Uint8Array): ReadKey | undefined {
    return this.me === undefined ? undefined : this.keysOf(this.me).get(h(readKeyId));
  }

  // --- admission, replay ------------------------------------------------------------------
  private stateBefore(rec: AclRecord): AclState {
    if (rec.prev.length === 1) return this.stateAt(h(rec.prev[0]!));
    let mask = 0n;
    for (const p of rec.prev) mask |= this.anc.get(h(p))!;
    return this.replay(mask);
  }

  private admit(rec: AclRecord): void {
    const past = this.stateBefore(rec);
    const fail = this.checkStructure(past, rec) ?? this.check(past, rec);
    if (fail !== undefined) throw new fail[0](fail[1]);
    this.register(rec);
  }

  private register(rec: AclRecord): void {
    const id = h(rec.id);
    const bit = this.bit.size;
    this.bit.set(id, bit);
    this.byBit.push(id);
    const p = rec.payload;
    if (p.kind !== Kind.MERGE) this.effective |= 1n << BigInt(bit);
    const depart = (who: string): void => {
      if (!this.departures.has(who)) this.departures.set(who, []);
      this.departures.get(who)!.push(id);
    };
    if (p.kind === Kind.REMOVE) p.members.forEach((m) => { depart(h(m)); });
    else if (p.kind === Kind.LEAVE) depart(h(rec.author));
    let anc = 1n << BigInt(bit);
    let depth = 0;
    for (const parent of rec.prev.map(h)) {
      anc |= this.anc.get(parent)!;
      depth = Math.max(depth, this.order.get(parent)![0] + 1);
      this.headSet.delete(parent);
    }
    this.anc.set(id, anc);
    this.order.set(id, [depth, id]);
    this.headSet.add(id);
    this.records.set(id, rec);
    const seal = (kid: string, to: string, blob: Uint8Array): void => {
      if (!this.sealed.has(kid)) this.sealed.set(kid, []);
      this.sealed.get(kid)!.push([to, blob]);
    };
    if (p.kind === Kind.ROOT) seal(id, h(rec.author), p.sealedKey);
    const rot = rotationOf(rec);
    if (rot !== undefined) {
      rot.members.forEach((e) => { seal(id, h(e.ref), e.blob); });
      this.wraps.set(id, rot.wraps.map((e) => [h(e.ref), e.blob]));
    }
    if (p.kind === Kind.ACCEPT || p.kind === Kind.INVITE_JOIN) {
      const joiner = this.joiner(rec);
      p.keys.forEach((e) => { seal(h(e.ref), joiner, e.blob); });
    }
  }

  private joiner(rec: AclRecord): string {
    const p = rec.payload;
    if (p.kind === Kind.ACCEPT) return h(this.records.get(h(p.requestId))!.author);
    return h(rec.author);
  }

  /** Replay the records in mask (a down-closed set) in (depth, id) order; cached by the
   * non-merge records (merges have no effect). */
  private replay(mask: bigint): AclState {
    mask &= this.effective;
    const cached = this.setStates.get(mask);
    if (cached !== undefined) return cached;
    const ids: string[] = [];
    for (let b = 0, m = mask; m > 0n; b++, m >>= 1n) if (m & 1n) ids.push(this.byBit[b]!);
    ids.sort((a, b) => cmpOrder(this.order.get(a)!, this.order.get(b)!));
    const vetoers = new Map<string, string[]>();
    const revokes = new Map<string, string[]>();
    const push = (m: Map<string, string[]>, k: string, v: string): void => {
      if (!m.has(k)) m.set(k, []);
      m.get(k)!.push(v);
    };
    for (const rid of ids) {
      const p = this.records.get(rid)!.payload;
      if (p.kind === Kind.REMOVE) p.members.forEach((m) => { push(vetoers, h(m), rid); });
      else if (p.kind === Kind.PERMISSION_CHANGE && p.role < Role.ADMIN) push(vetoers, h(p.member), rid);
      else if (p.kind === Kind.REVOKE_INVITE) push(revokes, h(p.inviteId), rid);
    }
    const state = new AclState();
    for (const rid of ids) {
      const rec = this.records.get(rid)!;
      const p = rec.payload;
      let veto: string | undefined;
      if (p.kind !== Kind.ROOT && p.kind !== Kind.LEAVE && p.kind !== Kind.MERGE) {
        const d = (vetoers.get(h(rec.author)) ?? []).find((x) => this.concurrent(x, rid));
        if (d !== undefined) veto = `vetoed: its author is removed or demoted by concurrent ${d}`;
      }
      if (p.kind === Kind.REQUEST_JOIN || p.kind === Kind.INVITE_JOIN) {
        const d = (revokes.get(h(p.inviteId)) ?? []).find((x) => this.concurrent(x, rid));
        if (d !== undefined) veto = `vetoed: its invite is revoked by concurrent ${d}`;
      }
      this.apply(state, rec, veto);
    }
    if (this.setStates.size > 256) this.setStates.clear();
    this.setStates.set(mask, state);
    return state;
  }

  /** Apply one record at its replay position: key-graph facts always, effects if valid. */
  private apply(s: AclState, rec: AclRecord, veto: string | undefined): void {
    const p = rec.payload;
    const rid = h(rec.id);
    const addHolder = (kid: string, hd: Holder): void => {
      if (!s.holders.has(kid)) s.holders.set(kid, new Set());
      s.holders.get(kid)!.add(hd);
    };
    if (introducesKey(rec)) {
      s.keyOrder.set(rid, this.order.get(rid)!);
      const holders = new Set<Holder>([holder(MEMBER, h(rec.author))]);
      const rot = rotationOf(rec);
      if (rot !== undefined) {
        rot.wraps.forEach((e) => s.wrapped.add(h(e.ref)));
        rot.members.forEach((e) => holders.add(holder(MEMBER, h(e.ref))));
        rot.invites.forEach((e) => holders.add(holder(INVITE, h(e.ref))));
      }
      s.holders.set(rid, holders);
    }
    if (p.kind === Kind.INVITE) p.keys.forEach((e) => { addHolder(h(e.ref), holder(INVITE, rid)); });
    if (p.kind === Kind.ACCEPT || p.kind === Kind.INVITE_JOIN) {
      const joiner = this.joiner(rec);
      p.keys.forEach((e) => { addHolder(h(e.ref), holder(MEMBER, joiner)); });
    }
    const author = h(rec.author);
    if (p.kind === Kind.ROOT) {
      s.owner = author;
      s.members.set(author, Role.OWNER);
      s.roleSetBy.set(author, rid);
      return;
    }
    if (veto !== undefined) {
      s.skipped.set(rid, veto);
      return;
    }
    const fail = this.check(s, rec);
    if (fail !== undefined) {
      s.skipped.set(rid, fail[1]);
      return;
    }
    switch (p.kind) {
      case Kind.INVITE:
        s.invites.set(rid, { recordId: rid, inviteKey: p.inviteKey, anyoneCanJoin: p.anyoneCanJoin, role: p.role, author, expiresAt: p.expiresAt });
        break;
      case Kind.REQUEST_JOIN:
        s.requests.set(rid, { recordId: rid, joiner: author, inviteId: h(p.inviteId) });
        break;
      case Kind.INVITE_JOIN:
        setRole(s, author, s.invites.get(h(p.inviteId))!.role, rid);
        break;
      case Kind.ACCEPT: {
        const req = s.requests.get(h(p.requestId))!;
        s.requests.delete(h(p.requestId));
        setRole(s, req.joiner, p.role, rid);
        break;
      }
      case Kind.DECLINE:
        s.requests.delete(h(p.requestId));
        break;
      case Kind.REVOKE_INVITE: {
        const inv = h(p.inviteId);
        s.invites.delete(inv);
        for (const [q, info] of [...s.requests]) if (info.inviteId === inv) s.requests.delete(q);
        break;
      }
      case Kind.PERMISSION_CHANGE:
        setRole(s, h(p.member), p.role, rid);
        break;
      case Kind.REMOVE:
        for (const m of p.members.map(h)) if (s.members.has(m)) depart(s, m, rid);
        break;
      case Kind.LEAVE:
        depart(s, author, rid);
        break;
      case Kind.TRANSFER_OWNERSHIP:
        setRole(s, author, Role.ADMIN, rid);
        setRole(s, h(p.newOwner), Role.OWNER, rid);
        s.owner = h(p.newOwner);
        break;
      case Kind.ADD_REPLICATOR:
        s.replicators.add(h(p.account));
        break;
      case Kind.REMOVE_REPLICATOR:
        s.replicators.delete(h(p.account));
        break;
      case Kind.DELETE_OBJECTS:
        for (const o of p.objects.map(h)) if (!s.deleted.has(o)) s.deleted.set(o, rid);
        break;
      case Kind.DELETE_SPACE:
        s.spaceDeleted = rid;
        break;
      case Kind.SPACE_META:
        s.meta = rid;
        break;
      default:
        break;
    }
  }

  /** The member's role for judging rec's right to act on them: if a record concurrent with
   * rec set the current role, judge against the role in rec's own causal past instead. */
  private roleSeen(s: AclState, rec: AclRecord, member: string, current: Role): Role {
    if (current === Role.OWNER) return current; // no admin acts on the owner (acl.py)
    const setter = s.roleSetBy.get(member);
    const rid = h(rec.id);
    if (setter === undefined || !this.bit.has(rid) || !this.concurrent(setter, rid)) return current;
    return this.stateBefore(rec).role(member) ?? current;
  }

  /** Is rec allowed in state s? undefined if yes, else [error class, reason]. */
  private check(s: AclState, rec: AclRecord): Failure | undefined {
    const p = rec.payload;
    const a = h(rec.author);
    const ra = s.role(a);
    const denied = AccessDenied;
    const bad = InvalidAclRecord;
    const rid = h(rec.id);
    switch (p.kind) {
      case Kind.ROOT:
        return [bad, "a space has exactly one ACL root"];
      case Kind.INVITE:
        if (!mayAct(ra, p.role)) return [denied, `author may not invite as ${Role[p.role].toLowerCase()}`];
        if (p.anyoneCanJoin && p.role > Role.WRITER) return [bad, "anyone-can-join invites grant reader or writer only"];
        break;
      case Kind.REQUEST_JOIN:
      case Kind.INVITE_JOIN: {
        const invId = h(p.inviteId);
        const inv = s.invites.get(invId);
        if (inv === undefined) return [bad, "the invite does not exist or was revoked"];
        if (inv.anyoneCanJoin !== (p.kind === Kind.INVITE_JOIN)) return [bad, "wrong join kind for this invite"];
        if (ra !== undefined) return [bad, "the joiner is already a member"];
        if (expired(inv, rec.timestamp)) return [bad, "the invite has expired"];
        if (p.kind === Kind.REQUEST_JOIN) {
          const reqs = [...s.requests.values()];
          if (reqs.some((q) => q.joiner === a)) return [bad, "this account already has a pending join request"];
          if (reqs.filter((q) => q.inviteId === invId).length >= MAX_REQUESTS_PER_INVITE) {
            return [bad, "too many pending join requests for this invite"];
          }
        }
        break;
      }
      case Kind.ACCEPT: {
        const req = s.requests.get(h(p.requestId));
        if (req === undefined) return [bad, "the join request is not pending"];
        if (!mayAct(ra, p.role)) return [denied, `author may not accept as ${Role[p.role].toLowerCase()}`];
        if (s.members.has(req.joiner)) return [bad, "the joiner is already a member"];
        const inv = s.invites.get(req.inviteId);
        if (inv !== undefined && expired(inv, rec.timestamp)) return [bad, "the invite has expired (its requests are void)"];
        break;
      }
      case Kind.DECLINE:
        if (!s.requests.has(h(p.requestId))) return [bad, "the join request is not pending"];
        if (ra === undefined || ra < Role.ADMIN) return [denied, "only admins decline join requests"];
        break;
      case Kind.REVOKE_INVITE: {
        const inv = s.invites.get(h(p.inviteId));
        if (inv === undefined) return [bad, "the invite does not exist or was revoked"];
        if (!mayAct(ra, inv.role)) return [denied, "author may not revoke this invite"];
        break;
      }
      case Kind.PERMISSION_CHANGE: {
        const m = h(p.member);
        const target = s.role(m);
        if (target === undefined) return [bad, "not a member"];
        if (!mayAct(ra, this.roleSeen(s, rec, m, target)) || !mayAct(ra, p.role)) {
          return [denied, "author may not change this member's role"];
        }
        if (target === p.role) return [bad, "role unchanged"];
        const setter = s.roleSetBy.get(m);
        if (setter !== undefined && target < p.role && this.bit.has(rid) && this.concurrent(setter, rid)) {
          return [bad, "a concurrent change set a lower role (lowest role wins)"];
        }
        break;
      }
      case Kind.REMOVE: {
        if (ra === undefined || ra < Role.ADMIN) return [denied, "only admins and the owner remove members"];
        const present = p.members.map(h).filter((m) => s.members.has(m));
        if (present.length === 0) return [bad, "every named member is already gone"];
        for (const m of present) {
          if (!mayAct(ra, this.roleSeen(s, rec, m, s.members.get(m)!))) {
            return [denied, "author may not remove a member of equal or higher rank"];
          }
        }
        break;
      }
      case Kind.LEAVE:
        if (ra === undefined) return [bad, "not a member"];
        if (ra === Role.OWNER) return [denied, "the owner must transfer ownership before leaving"];
        break;
      case Kind.TRANSFER_OWNERSHIP: {
        const n = h(p.newOwner);
        if (ra !== Role.OWNER) return [denied, "only the owner transfers ownership"];
        if (!s.members.has(n) || n === a) return [bad, "the new owner must be another member"];
        break;
      }
      case Kind.ADD_REPLICATOR: {
        const acc = h(p.account);
        if (ra === undefined || ra < Role.ADMIN) return [denied, "only admins and the owner add replicators"];
        if (s.replicators.has(acc) || s.members.has(acc)) return [bad, "already a replicator or a member"];
        break;
      }
      case Kind.REMOVE_REPLICATOR:
        if (ra === undefined || ra < Role.ADMIN) return [denied, "only admins and the owner remove replicators"];
        if (!s.replicators.has(h(p.account))) return [bad, "not a replicator"];
        break;
      case Kind.ROTATE:
        if (ra === undefined || ra < Role.ADMIN) return [denied, "only admins and the owner rotate the read key"];
        break;
      case Kind.MERGE:
        if (ra === undefined && !s.replicators.has(a)) return [denied, "only members and replicators merge ACL heads"];
        break;
      case Kind.DELETE_OBJECTS:
        if (ra === undefined || ra < Role.WRITER) return [denied, "only writers, admins and the owner delete objects"];
        if (p.objects.every((o) => s.deleted.has(h(o)))) return [bad, "every named object is already deleted"];
        break;
      case Kind.DELETE_SPACE:
        if (ra !== Role.OWNER) return [denied, "only the owner deletes the space"];
        if (s.spaceDeleted !== null) return [bad, "the space is already deleted"];
        break;
      case Kind.SPACE_META:
        if (ra === undefined || ra < Role.ADMIN) return [denied, "only admins and the owner rename the space"];
        if (!s.keyOrder.has(h(p.keyId))) return [bad, "space metadata under an unknown read key"];
        break;
    }
    return undefined;
  }

  /** Checks that only make sense against the author's own causal past (done once, at admission). */
  private checkStructure(past: AclState, rec: AclRecord): Failure | undefined {
    const p = rec.payload;
    const bad = InvalidAclRecord;
    const tips = new Set(past.tips);
    const sameSet = (xs: Iterable<string>, want: Set<string>): boolean => {
      const got = new Set(xs);
      return got.size === want.size && [...got].every((x) => want.has(x));
    };
    if (p.kind === Kind.INVITE && !sameSet(p.keys.map((e) => h(e.ref)), p.anyoneCanJoin ? tips : new Set())) {
      return [bad, "invite must seal exactly the current read key(s) (anyone-can-join)"];
    }
    if (p.kind === Kind.REQUEST_JOIN || p.kind === Kind.INVITE_JOIN) {
      const inv = past.invites.get(h(p.inviteId));
      if (inv === undefined) return [bad, "the invite does not exist or was revoked"];
      try {
        verify(inv.inviteKey, JOIN_DOMAIN, joinProofMessage(this.spaceId, p.inviteId, rec.author), p.proof);
      } catch (e) {
        if (!(e instanceof BadSignature)) throw e;
        return [AccessDenied, "join proof does not match the invite (wrong invite code)"];
      }
    }
    if ((p.kind === Kind.INVITE_JOIN || p.kind === Kind.ACCEPT) && !sameSet(p.keys.map((e) => h(e.ref)), tips)) {
      return [bad, "must seal exactly the current read key(s) to the joiner"];
    }
    if (p.kind === Kind.ACCEPT && this.records.get(h(p.requestId))?.payload.kind !== Kind.REQUEST_JOIN) {
      return [bad, "accept names no join request"];
    }
    if (p.kind === Kind.MERGE) {
      let below = 0n;
      for (const q of rec.prev.map(h)) below |= this.anc.get(q)! & ~(1n << BigInt(this.bit.get(q)!));
      if (rec.prev.some((q) => ((below >> BigInt(this.bit.get(h(q))!)) & 1n) === 1n)) {
        return [bad, "a merge must join heads it saw: none of its parents may be an ancestor of another"];
      }
    }
    if (p.kind === Kind.REMOVE && p.members.some((m) => !past.members.has(h(m)))) {
      return [bad, "remove names an account that is not a member"];
    }
    const rot = rotationOf(rec);
    if (rot !== undefined) {
      const gone = new Set(p.kind === Kind.REMOVE ? p.members.map(h) : []);
      const stay = new Set([...past.members.keys()].filter((m) => !gone.has(m)));
      if (!sameSet(rot.members.map((e) => h(e.ref)), stay)) {
        return [bad, "rotation must seal the new key to exactly the remaining members"];
      }
      const openInv = new Set([...past.invites].filter(([, inv]) => inv.anyoneCanJoin).map(([i]) => i));
      if (!sameSet(rot.invites.map((e) => h(e.ref)), openInv)) {
        return [bad, "rotation must seal the new key to exactly the open invites"];
      }
      if (!sameSet(rot.wraps.map((e) => h(e.ref)), tips)) return [bad, "rotation must wrap exactly the current read key tips"];
    }
    return undefined;
  }
}

function setRole(s: AclState, who: string, role: Role, rid: string): void {
  s.members.set(who, role);
  s.roleSetBy.set(who, rid);
  s.departed.delete(who);
}

function depart(s: AclState, who: string, rid: string): void {
  s.members.delete(who);
  s.roleSetBy.delete(who);
  s.departed.set(who, rid);
}

/** Depth of each record within records (a parent outside the set counts as very deep, so
 * records that will wait sort last). */
function depths(records: Map<string, AclRecord>): Map<string, number> {
  const far = 2 ** 52;
  const depth = new Map<string, number>();
  for (const start of records.keys()) {
    const stack = [start];
    while (stack.length) {
      const cur = stack.at(-1)!;
      if (depth.has(cur)) {
        stack.pop();
        continue;
      }
      const prev = records.get(cur)!.prev.map(h);
      const todo = prev.filter((p) => records.has(p) && !depth.has(p));
      if (todo.length) {
        stack.push(...todo);
        continue;
      }
      stack.pop();
      depth.set(cur, 1 + Math.max(-1, ...prev.map((p) => (records.has(p) ? depth.get(p)! : far))));
    }
  }
  return depth;
}
