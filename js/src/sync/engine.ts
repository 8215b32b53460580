/**
 * The thin async shell over the sans-IO sync core for one Connection (p2psync/sync/engine.py +
 * channel.py, reduced): it owns the two streams, request/answer matching with timeouts, the job
 * queue, the push queue and the periodic head sync, and carries out the core's effects. Every
 * protocol decision is made in core.ts.
 *
 * Streams: each side opens exactly one request stream. On ours we send requests and pushes
 * (SPACE_HELLO first); on the peer's we only answer. A misbehaving peer collects strikes and is
 * disconnected after `strikesToClose` (at once for a head-sync violation); nothing it sends can
 * throw out of `run()`.
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import { ConnectionClosed, DecodeError, EndOfStream, P2PSyncError, PeerMisbehaved, PeerTimeout, TransportError } from "../errors.js";
import type { Change } from "../replica/change.js";
import type { Connection, Stream } from "../transport/connection.js";
import type { InviteCode } from "../bootstrap.js";
import {
  BootstrapJoin,
  type Core,
  DEFAULT_CONFIG,
  type Effect,
  type Ingest,
  type JobKey,
  jobCore,
  jobFailure,
  jobKey,
  type SyncConfig,
  SyncCore,
} from "./core.js";
import { JoinError, MessageTooLarge, PeerRefused, ProtocolError, UnknownMessageType } from "./errors.js";
import { decode, encode, type Message, MsgType, RESPONSE_FOR, toException } from "./messages.js";
import type { Pusher, SyncReplicas, SyncSpace } from "./replica.js";

const wallNow = (): number => Date.now() / 1000;
/** Monotonic seconds (the inbound gate's bucket). */
const monotonic = (): number => performance.now() / 1000;
/** Let the event loop run (other peers, the page) between ingest steps. */
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));

interface Pending {
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** The result of a job, for status and tests. */
export interface JobEvent { readonly key: JobKey; readonly error: string | null }

/** Sync with one connected peer until the connection closes. */
export class PeerSync implements Pusher {
  readonly core: SyncCore;
  readonly config: SyncConfig;
  lastError: string | null = null;
  readonly jobLog: JobEvent[] = [];
  private out: Stream | null = null;
  private inp: Stream | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private readonly sendChains = new Map<number, Promise<void>>();
  private readonly queue = new Map<string, { key: JobKey; priority: number }>();
  private readonly running = new Map<string, boolean>();
  private readonly attempts = new Map<string, number>();
  private readonly pushQueue: Message[] = [];
  private pushing = false;
  private closing = false;
  private readyFlag = false;
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private periodic: ReturnType<typeof setInterval> | null = null;
  private readonly waiters = new Set<() => void>();
  /** Called after every message, job and push (status displays). */
  readonly listeners = new Set<() => void>();
  private readyResolve: () => void = () => undefined;
  /** Resolves once the space exchange is done. */
  readonly ready: Promise<void>;

  constructor(readonly replicas: SyncReplicas, readonly conn: Connection, config: Partial<SyncConfig> = {},
    private readonly now: () => number = wallNow) {
    this.config = { ...DEFAULT_CONFIG, ...config };
    const cert = conn.certificate;
    this.core = new SyncCore(replicas, this, cert.account, cert.device, conn.result.handshakeHash, this.config, undefined, monotonic());
    this.ready = new Promise((resolve) => (this.readyResolve = resolve));
  }

  get strikes(): number {
    return this.core.state.strikes;
  }

  get shared(): Set<string> {
    return this.core.state.shared;
  }

  get isReady(): boolean {
    return this.readyFlag;
  }

  /** No job queued or running and no push waiting. */
  get idle(): boolean {
    return this.readyFlag && this.queue.size === 0 && this.running.size === 0 && this.pushQueue.length === 0 && !this.pushing;
  }

  // --- lifecycle -------------------------------------------------------------------------------
  /** Serve the connection until it closes; never throws for the peer's behaviour. */
  async run(): Promise<void> {
    this.replicas.pushers.add(this);
    try {
      this.out = await this.conn.openStream();
      await this.send(this.out, this.core.start(), 0);
      const accept = this.conn.acceptStream();
      this.inp = await this.withTimeout(accept, this.config.exchangeTimeout, "the peer opened no stream");
      const readers = [this.readRequests(this.inp), this.readResponses(this.out)];
      // Python waits `exchange_timeout` for the exchange too: a peer that never sends its token
      // list would otherwise keep the full budget, never restricted and never closed
      const exchangeTimer = setTimeout(() => {
        this.timers.delete(exchangeTimer);
        if (!this.readyFlag && !this.closing) {
          const why = `the space exchange did not finish within ${this.config.exchangeTimeout} s`;
          this.lastError ??= why;
          this.conn.closeWith(new PeerTimeout(why));
        }
      }, this.config.exchangeTimeout * 1000);
      this.timers.add(exchangeTimer);
      this.periodic = setInterval(() => {
        this.syncNow();
      }, this.config.headSyncInterval * 1000);
      (this.periodic as { unref?: () => void }).unref?.();
      await Promise.race([this.conn.waitClosed(), ...readers]);
      if (this.core.state.restricted) {
        // a stranger closed by the grace, or its stream reset by the restricted budget: say why
        if (this.conn.isClosed) this.lastError ??= (await this.conn.waitClosed()).message;
        else if (this.inp.error !== null) this.lastError ??= this.inp.error.message;
      }
    } catch (exc) {
      // the peer's behaviour never escapes run(); a bug of ours is reported, not thrown
      this.lastError ??= exc instanceof Error ? `${exc.name}: ${exc.message}` : String(exc);
    } finally {
      this.stop();
      this.conn.close("sync engine stopped");
    }
  }

  private stop(): void {
    this.closing = true;
    this.replicas.pushers.delete(this);
    if (this.periodic !== null) clearInterval(this.periodic);
    for (const t of this.timers) clearTimeout(t);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new ConnectionClosed("connection closed"));
    }
    this.pending.clear();
    this.notify();
  }

  close(reason = ""): void {
    this.closing = true;
    this.conn.close(reason);
  }

  /** Resolves when `pred()` holds, re-checked after every message, job and push. */
  waitFor(pred: () => boolean, timeoutSeconds = 10): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (pred()) {
          clearTimeout(timer);
          this.waiters.delete(check);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new PeerTimeout(`condition not reached within ${timeoutSeconds} s (last error: ${this.lastError})`));
      }, timeoutSeconds * 1000);
      this.waiters.add(check);
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
    for (const l of [...this.listeners]) l();
  }

  private withTimeout<T>(p: Promise<T>, seconds: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => {
        reject(new PeerTimeout(what));
      }, seconds * 1000);
      p.then((v) => {
        clearTimeout(t);
        resolve(v);
      }, (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      });
    });
  }

  // --- sending -----------------------------------------------------------------------------------
  /** Send one whole message; sends on one stream are serialised. */
  private send(stream: Stream, message: Message, requestId: number): Promise<void> {
    const raw = encode(message, requestId);
    const prev = this.sendChains.get(stream.id) ?? Promise.resolve();
    const next = prev.then(() => stream.send(raw));
    this.sendChains.set(stream.id, next.catch(() => undefined));
    return next;
  }

  /** Send a request on our stream and wait for its answer (typed errors on refusal). */
  private async request(message: Message): Promise<Message> {
    if (this.out === null) throw new ConnectionClosed("not started");
    this.nextId = (this.nextId % 0xfffffffe) + 1;
    const rid = this.nextId;
    const answer = new Promise<Message>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(rid);
        reject(new PeerTimeout(`no answer to ${MsgType[message.type]} within ${this.config.requestTimeout} s`));
      }, this.config.requestTimeout * 1000);
      this.pending.set(rid, { resolve, reject, timer });
    });
    await this.send(this.out, message, rid);
    const resp = await answer;
    if (resp.type === MsgType.ERROR) {
      throw new PeerRefused(toException(resp).message, resp.code, resp.retryAfterMs === null ? null : resp.retryAfterMs / 1000);
    }
    if (resp.type !== RESPONSE_FOR[message.type]) {
      this.apply([{ kind: "strike", why: `answered ${MsgType[message.type]} with ${MsgType[resp.type]}` }]);
      throw new ProtocolError(`unexpected ${MsgType[resp.type]}`);
    }
    return resp;
  }

  // --- reading -----------------------------------------------------------------------------------
  private async *messages(stream: Stream): AsyncGenerator<Uint8Array> {
    for (;;) {
      try {
        yield await stream.recv();
      } catch (exc) {
        if (exc instanceof EndOfStream || exc instanceof TransportError) return;
        throw exc;
      }
    }
  }

  /** Our stream: the peer's answers and its space tokens. */
  private async readResponses(stream: Stream): Promise<void> {
    for await (const raw of this.messages(stream)) {
      let rid: number, msg: Message;
      try {
        ({ requestId: rid, message: msg } = decode(raw));
      } catch (exc) {
        if (!(exc instanceof DecodeError || exc instanceof UnknownMessageType || exc instanceof MessageTooLarge)) throw exc;
        this.apply([{ kind: "strike", why: `bad response: ${exc.message}` }]);
        continue;
      }
      if (msg.type === MsgType.SPACE_TOKENS) {
        try {
          this.apply(this.core.onTokens(msg));
        } catch (exc) {
          this.lastError = `space exchange failed: ${String(exc)}`;
        }
        if (this.core.exchange.done && !this.readyFlag) {
          this.readyFlag = true;
          if (this.core.state.restricted) {
            // a small receive budget now; closed by the transport after the grace unless the
            // peer comes to share something first (invite bootstrap): PeerState.befriend
            this.conn.restrict(undefined, { grace: this.config.strangerGrace });
          }
          this.readyResolve();
        }
      } else {
        const p = this.pending.get(rid);
        if (p === undefined) this.apply([{ kind: "strike", why: `response to unknown request ${rid}` }]);
        else {
          this.pending.delete(rid);
          clearTimeout(p.timer);
          p.resolve(msg);
        }
      }
      this.notify();
    }
  }

  /** The peer's stream: its requests and pushes; we answer on the same stream. */
  private async readRequests(stream: Stream): Promise<void> {
    for await (const raw of this.messages(stream)) {
      const inbound = this.core.onRequest(raw, this.now(), monotonic());
      let replies = inbound.replies;
      this.apply(inbound.effects);
      if (inbound.ingest !== undefined) {
        await this.ingest(inbound.ingest);
        if (inbound.after !== undefined) {
          const late = inbound.after();
          this.apply(late.effects);
          replies = [...replies, ...late.replies];
        }
      }
      for (const [m, rid] of replies) {
        try {
          await this.send(stream, m, rid);
        } catch (exc) {
          if (!(exc instanceof TransportError)) this.lastError = `reply failed: ${String(exc)}`;
        }
      }
      this.notify();
    }
  }

  // --- effects, pushes, jobs ---------------------------------------------------------------------
  private apply(effects: readonly Effect[], aclChanged = false): void {
    for (const e of effects) {
      if (e.kind === "strike" || e.kind === "violation") {
        const verdict = this.core.state.punish(e.why, e.kind === "violation");
        if (verdict !== null && !this.closing) {
          this.lastError = verdict;
          this.closing = true;
          this.conn.closeWith(new PeerMisbehaved("closed locally: protocol violation"));
        }
      } else if (e.kind === "push") this.enqueue(e.message);
      else if (e.kind === "befriend") this.conn.liftRestriction();
      else this.submit(e.key, e.priority);
    }
    // after every message, job step and push: the peer may share something now (Python's
    // cores append PeerState.befriend() to their effects; one place here)
    for (const e of this.core.state.befriend({ aclChanged })) if (e.kind === "befriend") this.conn.liftRestriction();
  }

  private enqueue(m: Message): void {
    if (this.pushQueue.length >= this.config.maxPushQueue) {
      if ("spaceId" in m) this.submit(["space", m.spaceId, ""], 2);
      return;
    }
    this.pushQueue.push(m);
    if (!this.pushing) void this.pumpPushes();
  }

  private async pumpPushes(): Promise<void> {
    this.pushing = true;
    try {
      while (this.pushQueue.length && !this.closing && this.out !== null) {
        await this.send(this.out, this.pushQueue.shift()!, 0);
      }
    } catch (exc) {
      if (!(exc instanceof TransportError)) this.lastError = `push failed: ${String(exc)}`;
    } finally {
      this.pushing = false;
      this.notify();
    }
  }

  /** Called synchronously by the replicas (e.g. inside an app's edit): never throws into it. */
  pushTree(space: SyncSpace, treeId: Uint8Array, changes: readonly Change[]): void {
    if (this.closing || !this.readyFlag) return;
    try {
      this.apply(this.core.pushTree(space, treeId, changes));
    } catch (exc) {
      this.lastError = `push failed: ${String(exc)}`;
      this.submit(["space", space.id, ""], 2);
    }
  }

  pushAcl(space: SyncSpace, raws: readonly Uint8Array[]): void {
    if (this.closing) return;
    this.apply([], true); // the new ACL state may have made the peer a member
    if (!this.readyFlag) return;
    try {
      this.apply(this.core.pushAcl(space, raws));
    } catch (exc) {
      this.lastError = `push failed: ${String(exc)}`;
      this.submit(["space", space.id, ""], 2);
    }
  }

  /** Ask for a sync job with this peer (deduped; one re-run if it is running). */
  submit(key: JobKey, priority = 1): void {
    if (this.closing) return;
    const k = jobKey(key);
    if (this.running.has(k)) {
      this.running.set(k, true);
      return;
    }
    const q = this.queue.get(k);
    if (q === undefined || priority < q.priority) this.queue.set(k, { key, priority });
    this.schedule();
  }

  /** Schedule a head sync of one or every shared space. */
  syncNow(spaceId?: string): void {
    for (const sid of spaceId !== undefined ? [spaceId] : [...this.shared]) this.submit(["space", sid, ""], 2);
  }

  private schedule(): void {
    while (!this.closing && this.running.size < this.config.maxInFlight && this.queue.size) {
      const [k, { key }] = [...this.queue].sort((a, b) => a[1].priority - b[1].priority)[0]!;
      this.queue.delete(k);
      this.running.set(k, false);
      void this.job(k, key);
    }
  }

  private async job(k: string, key: JobKey): Promise<void> {
    const st = this.core.state.spaceState(key[1]);
    let error: string | null = null;
    try {
      await this.drive(jobCore(this.core.state, this, key));
      st.lastSuccess = this.now();
      this.attempts.delete(k);
    } catch (exc) {
      const [text, retryable, after] = exc instanceof P2PSyncError ? jobFailure(exc)
        : [`internal error: ${exc instanceof Error ? exc.message : String(exc)}`, false, null];
      st.lastError = error = text;
      const n = (this.attempts.get(k) ?? 0) + 1;
      this.attempts.set(k, n);
      if (retryable && n < 5 && !this.closing) {
        const t = setTimeout(() => {
          this.timers.delete(t);
          this.submit(key);
        }, 1000 * Math.max(after ?? 0, Math.min(10, 0.2 * 2 ** (n - 1))));
        this.timers.add(t);
      }
    } finally {
      const rerun = this.running.get(k);
      this.running.delete(k);
      this.jobLog.push({ key, error });
      if (this.jobLog.length > 1000) this.jobLog.shift();
      if (rerun) this.submit(key);
      this.schedule();
      this.notify();
    }
  }

  /** Take in a batch a step at a time, yielding to the event loop between steps; each step's
   * signatures are verified first, asynchronously (Ingest.prepare). */
  private async ingest(ing: Ingest): Promise<void> {
    while (!ing.done && !this.closing) {
      await ing.prepare();
      this.apply(ing.step());
      await yieldToLoop();
    }
  }

  /** Run one requester core over the connection until it is done. */
  private async drive(core: Core): Promise<void> {
    while (!core.done) {
      if (core.ingest !== null) {
        await this.ingest(core.ingest);
        this.apply(core.ingested(this.now()));
        if (core.error !== null) throw core.error;
        continue;
      }
      const batch: [number, Message][] = [];
      for (let nxt = core.nextRequest(); nxt !== null; nxt = core.nextRequest()) batch.push(nxt);
      if (!batch.length) throw new ProtocolError(`${core.constructor.name} stalled`);
      const answers = await Promise.all(batch.map(([, req]) => this.request(req)));
      const now = this.now();
      batch.forEach(([tag], i) => {
        this.apply(core.receive(tag, answers[i]!, now));
      });
      if (core.error !== null) throw core.error;
    }
  }

  // --- bootstrap (joiner side) -------------------------------------------------------------------
  /**
   * Fetch a space from this peer: with an invite code (proving the invite key for this session)
   * or, as a member's new device, without. With a code our join record (or join request) is made
   * and pushed. Returns the space and whether our join request still waits for an admin.
   */
  async bootstrap(spaceId: string, code: InviteCode | null = null): Promise<{ space: SyncSpace; pendingApproval: boolean }> {
    await this.withTimeout(this.ready, this.config.exchangeTimeout, "space exchange did not finish");
    // we chose to fetch from this peer: no stranger budget or grace for it (Python does the
    // same; its answer may be bigger than the restricted budget)
    this.apply(this.core.state.befriend({ force: true }));
    const core = new BootstrapJoin(this.core.state, this, spaceId, code, this.now);
    try {
      await this.drive(core);
    } catch (exc) {
      if (exc instanceof PeerRefused && core.space === null) {
        throw new JoinError(`peer ${this.conn.peerId} does not offer that space to us (unknown space, or the invite is revoked)`);
      }
      throw exc;
    }
    this.apply([]);
    this.notify();
    return { space: core.space!, pendingApproval: core.pendingApproval };
  }

  /** Per-space status with this peer. */
  status(): { peerId: string; ready: boolean; strikes: number; lastError: string | null; spaces: Record<string, { pending: number; lastError: string | null; agreed: string | null }> } {
    const spaces: Record<string, { pending: number; lastError: string | null; agreed: string | null }> = {};
    for (const sid of [...this.shared].sort()) {
      const s = this.core.state.spaceState(sid);
      spaces[sid] = { pending: s.pending.size, lastError: s.lastError, agreed: s.agreedHash === null ? null : bytesToHex(s.agreedHash) };
    }
    return { peerId: this.conn.peerId, ready: this.readyFlag, strikes: this.strikes, lastError: this.lastError, spaces };
  }
}
