/**
 * The sans-IO sync core of one connection (p2psync/sync/peerstate.py, responder.py, pull.py,
 * push.py, bootstrap.py's BootstrapJoin): messages (and the wall time) in, messages and effects
 * out. Nothing here sends, sleeps or reads a clock; `PeerSync` (engine.ts) is the async shell
 * that carries the effects out over a Connection.
 *
 * - `PeerState`: who the peer is, shared spaces, proved invites, stuck counters, strikes.
 * - `Responder`: answers the peer's requests (UNKNOWN_SPACE for every space it may not access,
 *   whether or not it exists here; bootstrap proof check; invitee ACL screen) and judges its
 *   pushes (HEAD_UPDATE, ACL_HEAD_UPDATE).
 * - Requester cores shaped like HeadSyncSession (`nextRequest()` / `receive(tag, msg, now)` /
 *   `done` / `error`): `AclPull`, `TreePull` (progress and stuck rules, push-back of what the
 *   peer lacks), `SpaceSync` (ACL pull → head sync → tree jobs; a head-sync violation is a
 *   Violation effect: strike + disconnect, its claims discarded), `BootstrapJoin`.
 * - `SyncCore`: the space exchange plus the dispatch of every raw message of the peer's stream.
 */
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { contentId } from "../codec.js";
import { equalBytes, verify } from "../crypto/keys.js";
import { BadSignature, DecodeError, P2PSyncError } from "../errors.js";
import { AccessDenied } from "../replica/aclRecords.js";
import type { Change } from "../replica/change.js";
import { preverifyChanges } from "../replica/tree.js";
import {
  BOOTSTRAP_DOMAIN,
  bootstrapMessage,
  checkInviteePush,
  type InviteCode,
  inviteOpen,
  join,
  makeProof,
  parseProof,
  requestJoin,
} from "../bootstrap.js";
import { JoinError, MessageTooLarge, PeerRefused, ProtocolError, UnknownMessageType, UnknownSpace } from "./errors.js";
import { HeadSyncSession } from "./ldiff.js";
import {
  type AclHeadUpdate,
  type AclSyncRequest,
  type BootstrapRequest,
  decode,
  ErrorCode,
  errorFor,
  errorMessage,
  type FullSyncRequest,
  type HeadUpdate,
  MAX_HEADS,
  MAX_OBJECT_PAGE,
  type Message,
  MsgType,
  peekRequestId,
  requestIdOf,
  type SpaceHello,
  takeBatch,
} from "./messages.js";
import type { Pusher, SyncReplicas, SyncSpace } from "./replica.js";
import { Admission, InboundGate } from "./sched.js";
import { SpaceExchange } from "./spacex.js";

export const UNKNOWN = "unknown space";
export const ACL_MAX_ROUNDS = 256;

export interface SyncConfig {
  /** Byte cap we ask for / send in one batch. */
  batchBytes: number;
  maxRounds: number;
  maxStuck: number;
  strikesToClose: number;
  /** Seconds. */
  requestTimeout: number;
  exchangeTimeout: number;
  headSyncInterval: number;
  maxInFlight: number;
  maxPushQueue: number;
  /** Incoming changes verified and added per step; the shell yields to the event loop between
   * steps, so a big batch never freezes a page (Ed25519 in JS costs milliseconds each). */
  ingestChunk: number;
  /**
   * A peer whose space exchange shows it shares nothing with us (not a member or replicator of
   * any space we hold, not our own account, no invite proved) is held to the transport's
   * restricted budget (1 MiB, one pending stream) and disconnected this many seconds after the
   * exchange unless it comes to share something first (invite bootstrap). `null` disables the
   * rule. Python's `EngineConfig.stranger_grace`.
   */
  strangerGrace: number | null;
  /** The peer's requests admitted per second, burst, and at most in progress at once (Python's
   * `in_rate`, `in_burst`, `in_concurrency`); more are answered RATE_LIMITED with a retry time. */
  inRate: number;
  inBurst: number;
  inConcurrency: number;
}

export const DEFAULT_CONFIG: SyncConfig = {
  batchBytes: 1 << 20, maxRounds: 1024, maxStuck: 3, strikesToClose: 100, requestTimeout: 30, exchangeTimeout: 10,
  headSyncInterval: 30, maxInFlight: 8, maxPushQueue: 1024, ingestChunk: 16,
  strangerGrace: 10, inRate: 500, inBurst: 1000, inConcurrency: 16,
};

/**
 * One incoming batch for one tree, taken in `chunk` changes per `step()` (p2psync/sync/ingest.py):
 * each step filters (parents held or earlier in the batch, ACL head known) and adds its slice;
 * orphans are dropped and only reported (`missing`, `unknownAcl`). The first refused slice ends
 * the batch with one strike.
 */
export class Ingest {
  missing = false;
  unknownAcl = false;
  refused: string | null = null;
  attached = 0;
  private pos = 0;

  constructor(readonly space: SyncSpace, readonly treeId: Uint8Array, readonly raws: readonly Uint8Array[],
    readonly source: Pusher | null, readonly chunk = DEFAULT_CONFIG.ingestChunk) {}

  get done(): boolean {
    return this.refused !== null || this.pos >= this.raws.length;
  }

  /** The next step's slice: the shell awaits `prepare()` before each `step()`. */
  private nextSlice(): readonly Uint8Array[] {
    return this.raws.slice(this.pos, this.pos + Math.max(1, this.chunk));
  }

  /**
   * Verify the next step's signatures asynchronously (WebCrypto where available), so that the
   * synchronous `step()` finds them verified. Optional: `step()` alone verifies in pure JS.
   */
  async prepare(): Promise<void> {
    if (!this.done) await preverifyChanges(this.nextSlice());
  }

  step(): Effect[] {
    if (this.done) return [];
    const slice = this.nextSlice();
    this.pos += slice.length;
    const res = this.space.ingest(this.treeId, slice, this.source);
    this.missing ||= res.missing;
    this.unknownAcl ||= res.unknownAcl;
    this.attached += res.attached.length;
    if (res.refused !== null) {
      this.refused = res.refused;
      return [strike(res.refused)];
    }
    return [];
  }

  /** Every step at once (tests, small batches). */
  run(): Effect[] {
    const out: Effect[] = [];
    while (!this.done) out.push(...this.step());
    return out;
  }
}

export type JobKind = "space" | "acl" | "tree";
/** [kind, space id, tree id hex or ""]. */
export type JobKey = readonly [JobKind, string, string];
export const jobKey = (k: JobKey): string => k.join("|");

export type Effect =
  | { readonly kind: "strike"; readonly why: string }
  | { readonly kind: "violation"; readonly why: string }
  | { readonly kind: "push"; readonly message: Message; readonly spaceId: string }
  | { readonly kind: "submit"; readonly key: JobKey; readonly priority: number }
  /** The peer shares something with us now: lift the stranger restriction. */
  | { readonly kind: "befriend" };

const strike = (why: string): Effect => ({ kind: "strike", why });
const submit = (key: JobKey, priority = 1): Effect => ({ kind: "submit", key, priority });
const push = (message: Message, spaceId: string): Effect => ({ kind: "push", message, spaceId });

/** Per-space progress with one peer (status). */
export class SpaceState {
  /** Trees head sync listed as theirs and not fetched yet (hex). */
  pending = new Set<string>();
  lastHeadSync: number | null = null;
  headSyncRounds = 0;
  /** The head-sync fingerprint both sides had when the last head sync found no difference. */
  agreedHash: Uint8Array | null = null;
  lastError: string | null = null;
  lastSuccess: number | null = null;
}

/** Everything the cores know about one peer on one connection (plain data). */
export class PeerState {
  readonly shared = new Set<string>();
  /** space -> invite id the peer proved on this connection. */
  readonly invited = new Map<string, Uint8Array>();
  readonly spaces = new Map<string, SpaceState>();
  /** `${space}|${tree hex}` -> pulls that left the peer's announced heads missing. */
  readonly stuck = new Map<string, number>();
  myNonce: Uint8Array = new Uint8Array(0);
  theirNonce: Uint8Array = new Uint8Array(0);
  strikes = 0;
  /** The peer shared nothing at the exchange: the transport holds it to a small receive budget
   * and closes it after `strangerGrace` unless `befriend` lifts that. */
  restricted = false;

  constructor(
    readonly replicas: SyncReplicas,
    readonly config: SyncConfig,
    readonly remoteAccount: Uint8Array,
    readonly remoteDevice: Uint8Array,
    readonly binding: Uint8Array,
  ) {}

  /** Count a broken rule; the reason to close when that is the verdict, else null. */
  punish(why: string, violation = false): string | null {
    this.strikes++;
    if (violation) return `closed: protocol violation: ${why}`;
    if (this.strikes >= this.config.strikesToClose) return `closed after ${this.strikes} protocol violations (last: ${why})`;
    return null;
  }

  /** The space exchange found `shared`: sync those the peer may access (our ACL), and restrict
   * a stranger (see `restricted`). */
  exchanged(shared: Iterable<string>): Effect[] {
    const out: Effect[] = [];
    for (const sid of shared) {
      if (this.mayAccess(sid)) {
        this.shared.add(sid);
        out.push(submit(["space", sid, ""]));
      }
    }
    this.restricted = this.config.strangerGrace !== null && this.isStranger();
    return out;
  }

  /**
   * Lift the stranger restriction once the peer shares something with us (it proved an invite,
   * we bootstrapped from it, the ACL made it a member) or we chose to trust it (`force`). Cheap
   * after every message; the walk over every space's ACL runs only when an ACL changed.
   */
  befriend(o: { force?: boolean; aclChanged?: boolean } = {}): Effect[] {
    if (this.restricted && (o.force === true || this.shared.size > 0 || this.invited.size > 0
      || (o.aclChanged === true && !this.isStranger()))) {
      this.restricted = false;
      return [{ kind: "befriend" }];
    }
    return [];
  }

  spaceState(sid: string): SpaceState {
    let s = this.spaces.get(sid);
    if (s === undefined) this.spaces.set(sid, (s = new SpaceState()));
    return s;
  }

  mayAccess(sid: string): boolean {
    return this.replicas.mayAccess(sid, this.remoteAccount);
  }

  /** The space if we still sync it with this peer. */
  allowed(sid: string): SyncSpace | undefined {
    const space = this.replicas.spaces.get(sid);
    if (space === undefined || !this.shared.has(sid) || !this.mayAccess(sid)) return undefined;
    return space;
  }

  inviteOpen(space: SyncSpace, now: number): boolean {
    const inv = this.invited.get(space.id);
    return inv !== undefined && inviteOpen(space.acl, inv, now) && !space.acl.state.departed.has(bytesToHex(this.remoteAccount));
  }

  isStranger(): boolean {
    if (this.shared.size || this.invited.size || equalBytes(this.remoteAccount, this.replicas.account.public)) return false;
    return ![...this.replicas.spaces.keys()].some((sid) => this.mayAccess(sid));
  }
}

export interface Reply { readonly message: Message; readonly effects: readonly Effect[] }

/** Answers one peer's requests and judges its pushes, on one connection. */
export class Responder {
  constructor(readonly state: PeerState, readonly source: Pusher) {}

  /** Changes a FULL_SYNC_REQUEST carries that must be taken in (step by step, yielding) before
   * `answer(msg, now, true)` (Python `Responder.prepare`); null when there are none or the
   * peer may not access the space (the answer then says UNKNOWN_SPACE). */
  prepare(msg: Message): Ingest | null {
    if (msg.type !== MsgType.FULL_SYNC_REQUEST || !msg.changes.length) return null;
    const space = this.state.replicas.spaces.get(msg.spaceId);
    if (space === undefined || !this.state.mayAccess(msg.spaceId)) return null;
    return new Ingest(space, msg.objectId, msg.changes, this.source, this.state.config.ingestChunk);
  }

  /** The reply to one request at wall time `now` (seconds); never throws for the peer's input.
   * `prepared`: the request's changes were already taken in through `prepare`. */
  answer(msg: Message, now: number, prepared = false): Reply {
    const effects: Effect[] = [];
    let reply: Message;
    try {
      reply = this.dispatch(msg, effects, now, prepared);
    } catch (exc) {
      if (exc instanceof UnknownSpace) reply = errorMessage(ErrorCode.UNKNOWN_SPACE, UNKNOWN);
      else if (exc instanceof P2PSyncError) {
        effects.push(strike(`request failed: ${exc.message}`));
        reply = errorFor(exc);
      } else reply = errorMessage(ErrorCode.INTERNAL);
    }
    return { message: reply, effects };
  }

  private dispatch(msg: Message, out: Effect[], now: number, prepared: boolean): Message {
    switch (msg.type) {
      case MsgType.HEAD_SYNC_REQUEST:
        return this.spaceFor(msg.spaceId).ldiff.answer(msg);
      case MsgType.FULL_SYNC_REQUEST:
        return this.answerFull(msg, out, prepared);
      case MsgType.ACL_SYNC_REQUEST:
        return this.answerAcl(msg, out, now);
      case MsgType.BOOTSTRAP_REQUEST:
        return this.answerBootstrap(msg, now);
      case MsgType.RECEIPT_REQUEST:
        this.spaceFor(msg.spaceId);
        throw new ProtocolError("this peer gives no storage receipts");
      default:
        throw new ProtocolError("not a request");
    }
  }

  /** The space if the peer may access it, else UnknownSpace (same as non-existence). */
  private spaceFor(sid: string, aclOnly = false, now?: number): SyncSpace {
    const st = this.state;
    const space = st.replicas.spaces.get(sid);
    if (space === undefined) throw new UnknownSpace(UNKNOWN);
    if (st.mayAccess(sid)) {
      st.shared.add(sid);
      st.invited.delete(sid);
      return space;
    }
    if (aclOnly && now !== undefined && st.inviteOpen(space, now)) return space;
    throw new UnknownSpace(UNKNOWN);
  }

  private cap(asked: number): number {
    const limit = this.state.config.batchBytes;
    return Math.min(asked || limit, limit);
  }

  private answerFull(msg: FullSyncRequest, out: Effect[], prepared: boolean): Message {
    const space = this.spaceFor(msg.spaceId);
    if (msg.changes.length && !prepared) {
      const res = space.ingest(msg.objectId, msg.changes, this.source);
      if (res.refused !== null) out.push(strike(res.refused));
    }
    if (!space.hasTree(msg.objectId)) {
      return { type: MsgType.FULL_SYNC_RESPONSE, spaceId: msg.spaceId, objectId: msg.objectId, heads: [], changes: [], more: false };
    }
    const lack = space.changesFor(msg.objectId, msg.heads);
    const [batch, more] = lack.length ? takeBatch(lack, this.cap(msg.maxBytes)) : [[], false];
    return {
      type: MsgType.FULL_SYNC_RESPONSE, spaceId: msg.spaceId, objectId: msg.objectId,
      heads: space.heads(msg.objectId).slice(0, MAX_HEADS), changes: batch, more,
    };
  }

  private answerAcl(msg: AclSyncRequest, out: Effect[], now: number): Message {
    const space = this.spaceFor(msg.spaceId, true, now);
    if (msg.records.length) out.push(...this.takeAcl(space, msg.records, now)[1]);
    const lack = space.aclLacking(msg.heads);
    const [batch, more] = lack.length ? takeBatch(lack, this.cap(msg.maxBytes)) : [[], false];
    return { type: MsgType.ACL_SYNC_RESPONSE, spaceId: msg.spaceId, heads: space.acl.heads.slice(0, MAX_HEADS).map(hexToBytes), records: batch, more };
  }

  private answerBootstrap(msg: BootstrapRequest, now: number): Message {
    const st = this.state;
    const sid = msg.spaceId;
    const space = st.replicas.spaces.get(sid);
    if (space === undefined) throw new UnknownSpace(UNKNOWN);
    const member = st.mayAccess(sid);
    if (!member) {
      const inviteId = msg.proof === null ? null : this.proofOk(space, msg.proof, now);
      if (inviteId === null || space.acl.state.departed.has(bytesToHex(st.remoteAccount))) throw new UnknownSpace(UNKNOWN);
      st.invited.set(sid, inviteId);
    }
    st.shared.add(sid);
    const [records] = takeBatch(space.acl.export(), st.config.batchBytes);
    let ids: Uint8Array[] = [];
    let nextAfter: Uint8Array | null = null;
    if (member && msg.maxObjects) {
      const after = msg.after ?? new Uint8Array(0);
      ids = space.treeIds().filter((t) => bytesToHex(t) > bytesToHex(after)).slice(0, Math.min(msg.maxObjects, MAX_OBJECT_PAGE));
      if (ids.length === msg.maxObjects) nextAfter = ids.at(-1)!;
    }
    return {
      type: MsgType.BOOTSTRAP_RESPONSE, spaceId: sid, header: msg.after === null ? space.header.raw : null,
      aclRecords: records, objectIds: ids, nextAfter,
    };
  }

  /** The invite id if `proof` signs this session's challenge with an open invite's key. */
  proofOk(space: SyncSpace, proof: Uint8Array, now: number): Uint8Array | null {
    let inviteId: Uint8Array, sig: Uint8Array;
    try {
      [inviteId, sig] = parseProof(proof);
    } catch (exc) {
      if (exc instanceof DecodeError) return null;
      throw exc;
    }
    if (!inviteOpen(space.acl, inviteId, now)) return null;
    const inv = space.acl.state.invites.get(bytesToHex(inviteId))!;
    const st = this.state;
    const data = bootstrapMessage(space.id, inviteId, st.myNonce, st.remoteDevice, st.replicas.device.public, st.binding);
    try {
      verify(inv.inviteKey, BOOTSTRAP_DOMAIN, data, sig);
    } catch (exc) {
      if (exc instanceof BadSignature) return null;
      throw exc;
    }
    return inviteId;
  }

  /** Admit ACL records from the peer; an invitee may send only its own join. */
  private takeAcl(space: SyncSpace, raws: readonly Uint8Array[], now: number): [boolean, Effect[]] {
    const st = this.state;
    if (!st.mayAccess(space.id)) {
      try {
        checkInviteePush(space.acl, raws, st.remoteAccount, now);
      } catch (exc) {
        if (exc instanceof AccessDenied) return [false, [strike(`ACL push refused: ${exc.message}`)]];
        throw exc;
      }
    }
    const res = space.addAcl(raws, this.source);
    return [res.added.length > 0, res.rejected.length ? [strike(`${res.rejected.length} ACL records refused`)] : []];
  }

  /** Admit a HEAD_UPDATE: the batch to take in (null when it carries no changes), then call
   * `headUpdateDone`; or [null, [strike]] when the peer may not access the space. */
  headUpdate(msg: HeadUpdate): [Ingest | null, Effect[]] {
    const st = this.state;
    const sid = msg.spaceId;
    const space = st.replicas.spaces.get(sid);
    if (space === undefined || !st.mayAccess(sid)) return [null, [strike("push for a space the peer may not access")]];
    st.shared.add(sid);
    return [msg.changes.length ? new Ingest(space, msg.objectId, msg.changes, this.source, st.config.ingestChunk) : null, []];
  }

  /** After a push's changes are in: pull what its heads show we still lack (bounded by the
   * stuck rule). */
  headUpdateDone(msg: HeadUpdate, ing: Ingest | null): Effect[] {
    const st = this.state;
    const sid = msg.spaceId;
    const space = st.replicas.spaces.get(sid);
    if (space === undefined) return [];
    const out: Effect[] = [];
    let missing = ing?.missing ?? false;
    const unknownAcl = ing?.unknownAcl ?? false;
    const tree = space.tree(msg.objectId);
    missing ||= tree === undefined ? msg.heads.length > 0 : msg.heads.some((h) => !tree.has(h));
    const tid = bytesToHex(msg.objectId);
    if (unknownAcl) out.push(submit(["acl", sid, ""], 0));
    if ((missing || unknownAcl) && (st.stuck.get(`${sid}|${tid}`) ?? 0) < st.config.maxStuck) out.push(submit(["tree", sid, tid], 1));
    return out;
  }

  /** An ACL_HEAD_UPDATE at wall time `now`. */
  aclUpdate(msg: AclHeadUpdate, now: number): Effect[] {
    const st = this.state;
    const sid = msg.spaceId;
    const space = st.replicas.spaces.get(sid);
    if (space === undefined || !(st.mayAccess(sid) || st.inviteOpen(space, now))) return [strike("ACL push for a space the peer may not access")];
    const before = space.acl.size;
    const [, out] = this.takeAcl(space, msg.records, now);
    if (out.length && out[0]!.kind === "strike" && out[0]!.why.startsWith("ACL push refused")) return out;
    if (space.acl.waiting.length || msg.heads.some((h) => !space.acl.has(bytesToHex(h)))) out.push(submit(["acl", sid, ""], 0));
    if (space.acl.size > before) {
      st.shared.add(sid);
      out.push(submit(["space", sid, ""], 2));
    }
    return out;
  }
}

/** What to push to the peer after a tree change here (split by the byte cap; heads last). */
export function pushLacking(spaceId: string, treeId: Uint8Array, raws: Uint8Array[], heads: readonly Uint8Array[], batchBytes: number): Effect[] {
  const out: Effect[] = [];
  while (raws.length) {
    const [batch, more] = takeBatch(raws, batchBytes);
    raws = raws.slice(batch.length);
    out.push(push({ type: MsgType.HEAD_UPDATE, spaceId, objectId: treeId, heads: more ? [] : heads.slice(0, MAX_HEADS), changes: batch }, spaceId));
  }
  return out;
}

/** Base of the requester cores; delegates to one sub-core (an ACL pull) when set. */
export abstract class Core {
  done = false;
  error: P2PSyncError | null = null;
  sub: Core | null = null;
  /** A batch the shell must take in (step by step) and then report with `ingested`. */
  ingest: Ingest | null = null;

  constructor(readonly state: PeerState, readonly source: Pusher) {}

  nextRequest(): [number, Message] | null {
    if (this.done || this.ingest !== null) return null;
    if (this.sub !== null) return this.sub.nextRequest();
    return this.next();
  }

  receive(tag: number, msg: Message, now: number): Effect[] {
    if (this.done) return [];
    const sub = this.sub;
    if (sub === null) return this.take(tag, msg, now);
    const out = sub.receive(tag, msg, now);
    if (sub.error !== null) this.fail(sub.error);
    else if (sub.done) {
      this.sub = null;
      out.push(...this.subDone(sub, now));
    }
    return out;
  }

  /** The batch in `ingest` has been taken in. */
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  ingested(_now: number): Effect[] {
    return [];
  }

  protected fail(exc: P2PSyncError): void {
    this.error = exc;
    this.done = true;
    this.ingest = null;
  }

  protected abstract next(): [number, Message] | null;
  protected abstract take(tag: number, msg: Message, now: number): Effect[];
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  protected subDone(_sub: Core, _now: number): Effect[] {
    return [];
  }
}

/** ACL records both ways: theirs we lack come in answers, ours they lack go in the next request. */
export class AclPull extends Core {
  readonly space: SyncSpace | undefined;
  rounds = 0;
  private readonly sent = new Set<string>();
  private send: Uint8Array[] = [];
  private waiting = false;

  constructor(state: PeerState, source: Pusher, readonly spaceId: string) {
    super(state, source);
    this.space = state.replicas.spaces.get(spaceId);
    this.done = this.space === undefined || !state.shared.has(spaceId);
  }

  protected next(): [number, Message] | null {
    if (this.waiting || this.space === undefined) return null;
    this.waiting = true;
    this.rounds++;
    return [0, {
      type: MsgType.ACL_SYNC_REQUEST, spaceId: this.spaceId, heads: this.space.acl.heads.slice(0, MAX_HEADS).map(hexToBytes),
      records: this.send, maxBytes: this.state.config.batchBytes,
    }];
  }

  protected take(_tag: number, msg: Message): Effect[] {
    if (msg.type !== MsgType.ACL_SYNC_RESPONSE || this.space === undefined) throw new ProtocolError("expected an ACL sync response");
    this.waiting = false;
    const out: Effect[] = [];
    if (msg.records.length) {
      const res = this.space.addAcl(msg.records, this.source);
      if (res.rejected.length) out.push(strike(`${res.rejected.length} ACL records refused`));
    }
    const lack = this.space.aclLacking(msg.heads).filter((r) => !this.sent.has(bytesToHex(contentId(r))));
    this.send = lack.length ? takeBatch(lack, this.state.config.batchBytes)[0] : [];
    for (const r of this.send) this.sent.add(bytesToHex(contentId(r)));
    if (!msg.more && !this.send.length) this.done = true;
    else if (this.rounds >= ACL_MAX_ROUNDS) this.fail(new ProtocolError("ACL sync did not finish"));
    return out;
  }
}

/** Full sync of one tree: ask with our heads until the peer says there is no more. */
export class TreePull extends Core {
  readonly space: SyncSpace | undefined;
  readonly tid: string;
  rounds = 0;
  their: readonly Uint8Array[] = [];
  private before = "";
  private waiting = false;
  private retriedAcl = false;
  private pendingChanges: readonly Uint8Array[] = [];
  private more = false;
  readonly listed: boolean;

  constructor(state: PeerState, source: Pusher, readonly spaceId: string, readonly treeId: Uint8Array) {
    super(state, source);
    this.space = state.allowed(spaceId);
    this.done = this.space === undefined;
    this.tid = bytesToHex(treeId);
    this.listed = state.spaceState(spaceId).pending.has(this.tid);
  }

  private heads(): Uint8Array[] {
    return this.space!.heads(this.treeId);
  }

  protected next(): [number, Message] | null {
    if (this.waiting) return null;
    this.waiting = true;
    this.rounds++;
    const heads = this.heads();
    this.before = heads.map(bytesToHex).join();
    return [0, {
      type: MsgType.FULL_SYNC_REQUEST, spaceId: this.spaceId, objectId: this.treeId, heads: heads.slice(0, MAX_HEADS),
      snapshotPath: [], changes: [], maxBytes: this.state.config.batchBytes, fromSnapshot: false,
    }];
  }

  protected take(_tag: number, msg: Message): Effect[] {
    if (msg.type !== MsgType.FULL_SYNC_RESPONSE) throw new ProtocolError("expected a full sync response");
    this.waiting = false;
    if (msg.spaceId !== this.spaceId || !equalBytes(msg.objectId, this.treeId)) {
      this.fail(new ProtocolError("full sync answer for another object"));
      return [strike("full sync answer for another object")];
    }
    this.their = msg.heads;
    this.pendingChanges = msg.changes;
    this.more = msg.more;
    this.retriedAcl = false;
    this.ingest = new Ingest(this.space!, this.treeId, msg.changes, this.source, this.state.config.ingestChunk);
    return [];
  }

  override ingested(): Effect[] {
    const ing = this.ingest!;
    this.ingest = null;
    if (ing.unknownAcl && !this.retriedAcl) {
      // the batch names ACL heads we lack: ACL sync first, then take the batch again
      this.retriedAcl = true;
      const sub = new AclPull(this.state, this.source, this.spaceId);
      if (!sub.done) {
        this.sub = sub;
        return [];
      }
    }
    return this.roundDone();
  }

  protected override subDone(): Effect[] {
    this.ingest = new Ingest(this.space!, this.treeId, this.pendingChanges, this.source, this.state.config.ingestChunk);
    return [];
  }

  private roundDone(): Effect[] {
    if (!this.more || this.rounds >= this.state.config.maxRounds) return this.finish();
    if (this.heads().map(bytesToHex).join() === this.before) this.fail(new ProtocolError("full sync made no progress"));
    return [];
  }

  private finish(): Effect[] {
    this.done = true;
    const st = this.state;
    const space = this.space!;
    st.spaceState(this.spaceId).pending.delete(this.tid);
    const key = `${this.spaceId}|${this.tid}`;
    const tree = space.tree(this.treeId);
    if (tree === undefined) {
      st.stuck.set(key, (st.stuck.get(key) ?? 0) + 1);
      return this.listed ? [strike("listed an object in head sync that it does not serve")] : [];
    }
    if (this.their.some((h) => !tree.has(h))) st.stuck.set(key, (st.stuck.get(key) ?? 0) + 1);
    else st.stuck.delete(key);
    const theirs = new Set(this.their.map(bytesToHex));
    if (this.their.length && !tree.heads.every((h) => theirs.has(bytesToHex(h)))) {
      return pushLacking(this.spaceId, this.treeId, space.changesFor(this.treeId, this.their), tree.heads, st.config.batchBytes);
    }
    return [];
  }
}

/** One shared space: ACL pull, then head sync, then a tree job per object that differs. */
export class SpaceSync extends Core {
  session: HeadSyncSession | null = null;
  rounds = 0;
  private outstanding = 0;

  constructor(state: PeerState, source: Pusher, readonly spaceId: string) {
    super(state, source);
    this.done = state.allowed(spaceId) === undefined;
    if (!this.done) {
      const sub = new AclPull(state, source, spaceId);
      if (sub.done) this.startHeadSync();
      else this.sub = sub;
    }
  }

  private startHeadSync(): void {
    this.session = new HeadSyncSession(this.state.replicas.spaces.get(this.spaceId)!.ldiff, this.spaceId);
  }

  protected override subDone(): Effect[] {
    if (this.state.allowed(this.spaceId) === undefined) {
      this.done = true; // the ACL we just learnt says the peer (or we) may not access it any more
      return [];
    }
    this.startHeadSync();
    return [];
  }

  protected next(): [number, Message] | null {
    const nxt = this.session!.nextRequest();
    if (nxt !== null) {
      if (!this.outstanding) this.rounds++;
      this.outstanding++;
    }
    return nxt;
  }

  protected take(tag: number, msg: Message, now: number): Effect[] {
    const s = this.session!;
    if (msg.type !== MsgType.HEAD_SYNC_RESPONSE) throw new ProtocolError("expected a head sync response");
    this.outstanding--;
    try {
      s.receive(tag, msg);
    } catch (exc) {
      if (!(exc instanceof ProtocolError)) throw exc;
      this.fail(exc);
      return [{ kind: "violation", why: `head sync: ${exc.message}` }];
    }
    return s.done ? this.finish(now) : [];
  }

  private finish(now: number): Effect[] {
    this.done = true;
    const st = this.state;
    const diff = this.session!.result;
    const ss = st.spaceState(this.spaceId);
    ss.lastHeadSync = now;
    ss.headSyncRounds = this.rounds;
    const todo = new Map([...diff.remoteOnly, ...diff.changed]);
    ss.pending = new Set(todo.keys());
    ss.agreedHash = diff.empty ? st.replicas.spaces.get(this.spaceId)!.ldiff.hash() : null;
    return [...todo.keys()].sort().map((tid) => {
      st.stuck.delete(`${this.spaceId}|${tid}`);
      return submit(["tree", this.spaceId, tid], 1);
    });
  }
}

/** Joiner side of one bootstrap: request → adopt header and ACL → ACL pull → (with a code, not
 * a member yet) our join record or join request → ACL pull → a space job. */
export class BootstrapJoin extends Core {
  space: SyncSpace | null = null;
  private asked = false;
  private joined = false;
  /** True when our join request waits for an admin to accept it. */
  pendingApproval = false;

  constructor(state: PeerState, source: Pusher, readonly spaceId: string, readonly code: InviteCode | null,
    readonly now: () => number) {
    super(state, source);
  }

  protected next(): [number, Message] | null {
    if (this.asked) return null;
    this.asked = true;
    const st = this.state;
    const proof = this.code === null ? null
      : makeProof(this.code, this.spaceId, st.theirNonce, st.replicas.device.public, st.remoteDevice, st.binding);
    return [0, { type: MsgType.BOOTSTRAP_REQUEST, spaceId: this.spaceId, proof, after: null, maxObjects: 0 }];
  }

  protected take(_tag: number, msg: Message, now: number): Effect[] {
    if (msg.type !== MsgType.BOOTSTRAP_RESPONSE) throw new ProtocolError("expected a bootstrap response");
    if (msg.header === null || msg.spaceId !== this.spaceId) {
      this.fail(new JoinError("peer sent no space header"));
      return [];
    }
    this.space = this.state.replicas.adopt(this.spaceId, msg.header, msg.aclRecords);
    this.state.shared.add(this.spaceId);
    return this.pullAcl(now);
  }

  private pullAcl(now: number): Effect[] {
    const sub = new AclPull(this.state, this.source, this.spaceId);
    if (sub.done) return this.subDone(sub, now);
    this.sub = sub;
    return [];
  }

  protected override subDone(_sub: Core, now: number): Effect[] {
    const st = this.state;
    const space = this.space!;
    const me = st.replicas.account;
    if (this.code !== null && !this.joined && !st.replicas.mayAccess(this.spaceId, me.public)) {
      this.joined = true;
      const inv = space.acl.state.invites.get(bytesToHex(this.code.inviteId));
      if (inv === undefined) {
        this.fail(new JoinError("the invite is no longer valid (revoked or already used)"));
        return [];
      }
      const mine = bytesToHex(me.public);
      if (!inv.anyoneCanJoin && [...space.acl.state.requests.values()].some((q) => q.joiner === mine)) {
        this.pendingApproval = true;
        this.done = true;
        return [];
      }
      const ts = Math.floor(this.now());
      const raw = inv.anyoneCanJoin ? join(space.acl, me, this.code, ts) : requestJoin(space.acl, me, this.code, ts);
      st.replicas.commitAcl(space, raw);
      if (!inv.anyoneCanJoin) this.pendingApproval = true;
      return this.pullAcl(now);
    }
    this.done = true;
    if (st.replicas.mayAccess(this.spaceId, me.public)) {
      this.pendingApproval = false;
      return [submit(["space", this.spaceId, ""], 0)];
    }
    return [];
  }
}

/** The requester core for one scheduled job. */
export function jobCore(state: PeerState, source: Pusher, key: JobKey): Core {
  const [kind, sid, tid] = key;
  if (kind === "space") return new SpaceSync(state, source, sid);
  if (kind === "acl") return new AclPull(state, source, sid);
  return new TreePull(state, source, sid, hexToBytes(tid));
}

/** What the shell must do with one raw message from the peer's request stream. */
export interface Inbound {
  /** Messages to send back on the peer's stream, with the request id to answer. */
  readonly replies: [Message, number][];
  readonly effects: Effect[];
  /** A batch to take in step by step (yielding between steps), then call `after`. */
  readonly ingest?: Ingest;
  /** What follows once `ingest` is in: more effects, and the answer when the batch came with a
   * request (FULL_SYNC_REQUEST). */
  readonly after?: () => { readonly effects: Effect[]; readonly replies: [Message, number][] };
}

/**
 * The sans-IO core of one connection: the space exchange and everything that arrives on the
 * peer's request stream (its hello, its requests, its pushes). Our own requests are run by the
 * requester cores above (`jobCore`, `BootstrapJoin`), driven by the shell.
 */
export class SyncCore {
  readonly state: PeerState;
  readonly responder: Responder;
  readonly exchange: SpaceExchange;
  /** Admission of the peer's requests (rate, burst, in progress): Python's `InboundGate`. The
   * key is the request id: the shell answers one request at a time, so identical requests are
   * never in progress together (Python's dedupe has nothing to catch here). */
  readonly gate: InboundGate<number>;

  constructor(replicas: SyncReplicas, readonly source: Pusher, remoteAccount: Uint8Array, remoteDevice: Uint8Array, binding: Uint8Array,
    config: SyncConfig = DEFAULT_CONFIG, random?: (n: number) => Uint8Array, clock = 0) {
    this.state = new PeerState(replicas, config, remoteAccount, remoteDevice, binding);
    this.responder = new Responder(this.state, source);
    this.exchange = new SpaceExchange(replicas.device.public, remoteDevice, replicas.exchangeKeysFor(remoteAccount), binding, random);
    this.gate = new InboundGate({ now: clock, rate: config.inRate, burst: config.inBurst, maxConcurrent: config.inConcurrency });
  }

  /** Our SPACE_HELLO (the first message on our request stream). */
  start(): SpaceHello {
    const hello = this.exchange.start();
    this.state.myNonce = hello.nonce;
    return hello;
  }

  /** The peer's SPACE_TOKENS arrived (on our stream): the shared spaces get a space job. */
  onTokens(msg: Message): Effect[] {
    if (this.exchange.done) return [strike("second token list")];
    try {
      this.exchange.receive(msg);
    } catch (exc) {
      if (exc instanceof ProtocolError) return [strike(exc.message)];
      throw exc;
    }
    return this.state.exchanged(this.exchange.shared!);
  }

  /** One raw message from the peer's request stream, at wall time `now` and monotonic time
   * `clock` (seconds; the gate's bucket). Never throws: a bug of ours while handling it answers
   * INTERNAL (requests) and is reported as `internalError`, not held against the peer. */
  onRequest(raw: Uint8Array, now: number, clock: number = now): Inbound {
    try {
      return this.dispatch(raw, now, clock);
    } catch (exc) {
      this.internalError = exc instanceof Error ? `${exc.name}: ${exc.message}` : String(exc);
      return { replies: [[errorMessage(ErrorCode.INTERNAL), peekRequestId(raw) ?? 0]], effects: [] };
    }
  }

  /** The last internal error (a bug of ours) met while handling the peer's input. */
  internalError: string | null = null;

  private dispatch(raw: Uint8Array, now: number, clock: number): Inbound {
    let msg: Message, rid: number;
    try {
      ({ message: msg, requestId: rid } = decode(raw));
    } catch (exc) {
      if (!(exc instanceof DecodeError || exc instanceof UnknownMessageType || exc instanceof MessageTooLarge)) throw exc;
      return { replies: [[errorFor(exc), requestIdOf(exc) ?? 0]], effects: [strike(`bad request: ${exc.message}`)] };
    }
    switch (msg.type) {
      case MsgType.SPACE_HELLO: {
        let replies: Message[];
        try {
          replies = this.exchange.receive(msg);
        } catch (exc) {
          if (!(exc instanceof ProtocolError)) throw exc;
          return { replies: [[errorFor(exc), rid]], effects: [strike(exc.message)] };
        }
        this.state.theirNonce = msg.nonce;
        return { replies: replies.map((m) => [m, rid]), effects: [] };
      }
      case MsgType.HEAD_UPDATE: {
        const [ing, effects] = this.responder.headUpdate(msg);
        if (effects.length) return { replies: [], effects }; // refused: nothing more happens
        const done = (): Effect[] => this.responder.headUpdateDone(msg, ing);
        return ing === null ? { replies: [], effects: done() } : { replies: [], effects: [], ingest: ing, after: () => ({ effects: done(), replies: [] }) };
      }
      case MsgType.ACL_HEAD_UPDATE:
        return { replies: [], effects: this.responder.aclUpdate(msg, now) };
      case MsgType.SPACE_OFFER:
      case MsgType.STORAGE_REFUSED:
        return { replies: [], effects: [] }; // backup notices: a phone is no backup
      case MsgType.HEAD_SYNC_REQUEST:
      case MsgType.FULL_SYNC_REQUEST:
      case MsgType.ACL_SYNC_REQUEST:
      case MsgType.BOOTSTRAP_REQUEST:
      case MsgType.RECEIPT_REQUEST:
        return this.admit(msg, rid, now, clock);
      default:
        return { replies: [[errorMessage(ErrorCode.MALFORMED, "not a request"), rid]], effects: [strike(`${MsgType[msg.type]} is not a request`)] };
    }
  }

  /** A request through the gate: answered now, or after the changes it carries are in (a
   * FULL_SYNC_REQUEST's, step by step), or refused with RATE_LIMITED and a retry time. */
  private admit(msg: Message, rid: number, now: number, clock: number): Inbound {
    const verdict = this.gate.admit(rid, clock);
    if (verdict === Admission.DUPLICATE) return { replies: [], effects: [] };
    if (verdict !== Admission.ACCEPT) {
      const retry = Math.floor(this.gate.retryAfter(clock) * 1000) + 1;
      return { replies: [[errorMessage(ErrorCode.RATE_LIMITED, "slow down", retry), rid]], effects: [] };
    }
    const answer = (prepared: boolean): { effects: Effect[]; replies: [Message, number][] } => {
      try {
        const reply = this.responder.answer(msg, now, prepared);
        return { replies: [[reply.message, rid]], effects: [...reply.effects] };
      } finally {
        this.gate.finished(rid);
      }
    };
    let ing: Ingest | null;
    try {
      ing = this.responder.prepare(msg);
    } catch (exc) {
      this.gate.finished(rid);
      throw exc;
    }
    if (ing === null) return answer(false);
    return { replies: [], effects: [], ingest: ing, after: () => answer(true) };
  }

  /** Pushes for a tree change taken in or made here (not from this peer). */
  pushTree(space: SyncSpace, treeId: Uint8Array, changes: readonly Change[]): Effect[] {
    if (!changes.length || !this.state.shared.has(space.id) || !this.state.mayAccess(space.id)) return [];
    return pushLacking(space.id, treeId, changes.map((c) => c.raw), space.heads(treeId), this.state.config.batchBytes);
  }

  /** An ACL_HEAD_UPDATE for new records, to a peer that shares the space and may access it by
   * our ACL (evaluated after the change: a removed member is not sent its own removal). */
  pushAcl(space: SyncSpace, raws: readonly Uint8Array[]): Effect[] {
    const st = this.state;
    if (!st.shared.has(space.id) || !st.mayAccess(space.id)) return [];
    const [batch] = takeBatch(raws, st.config.batchBytes);
    return [push({ type: MsgType.ACL_HEAD_UPDATE, spaceId: space.id, heads: space.acl.heads.slice(0, MAX_HEADS).map(hexToBytes), records: batch }, space.id)];
  }
}

/** How a failed job is retried: [text for status, retryable, retry after seconds]. */
export function jobFailure(exc: unknown): [string, boolean, number | null] {
  const text = exc instanceof Error ? `${exc.name}: ${exc.message}` : String(exc);
  if (!(exc instanceof PeerRefused)) return [text, true, null];
  const final = exc.code === (ErrorCode.UNKNOWN_SPACE as number) || exc.code === (ErrorCode.ACCESS_DENIED as number);
  return [text, !final, exc.retryAfter];
}
