/**
 * A SyncDriver (src/repo.ts) over the sync core (src/sync/: `SyncReplicas`, `PeerSync`) and the
 * WebSocket carrier: what the web app and Node apps use.
 *
 * - `SyncReplicaSet` adapts the sync layer's `SyncReplicas` to the Repo's `ReplicaSet` seam, so
 *   what peers send lands in the same trees the Repo's documents read (and is stored by it).
 * - `WsSyncDriver` keeps one connection per configured peer URL (the agent that served the web
 *   app: `ws(s)://<host>/p2psync`), reconnecting with backoff (1 s doubling to 15 s); each
 *   connection runs one `PeerSync`, which syncs every space both sides hold. Joining by invite
 *   dials the code's `ws:host:port` hints (then the configured peers) and runs the bootstrap.
 * - Status is recomputed every 250 ms and on every connect/close; listeners get it when it
 *   changes: offline (no peer URL / none reachable), connecting, syncing (jobs or pushes in
 *   flight), synced (every connection idle).
 */
import { InviteCode } from "../bootstrap.js";
import { DeviceCertificate } from "../crypto/cert.js";
import type { AccountKey, DeviceKey } from "../crypto/keys.js";
import { Limits } from "../transport/handshake.js";
import type { Connection } from "../transport/connection.js";
import { connectWebSocket, type WebSocketConstructor, WS_PATH } from "../transport/websocket.js";
import { PeerSync } from "../sync/engine.js";
import { SyncReplicas, type SyncSpace } from "../sync/replica.js";
import type { PeerStatus, SyncDriver, SyncState, SyncStatus } from "../repo.js";
import type { AclListener, ReplicaSet, ReplicaSpace, TreeListener } from "./replicas.js";

/** The sync layer's replicas as the Repo's ReplicaSet (SyncSpace already has the right shape). */
export class SyncReplicaSet implements ReplicaSet {
  readonly sync: SyncReplicas;

  constructor(account: AccountKey, device: DeviceKey) {
    this.sync = new SyncReplicas(account, device);
  }

  get account(): AccountKey {
    return this.sync.account;
  }

  get device(): DeviceKey {
    return this.sync.device;
  }

  get spaces(): ReadonlyMap<string, ReplicaSpace> {
    return this.sync.spaces;
  }

  createSpace(spaceType?: string): ReplicaSpace {
    return this.sync.createSpace(spaceType);
  }

  adopt(spaceId: string, headerRaw: Uint8Array, aclRaws: readonly Uint8Array[]): ReplicaSpace {
    return this.sync.adopt(spaceId, headerRaw, aclRaws);
  }

  onTree(fn: TreeListener): void {
    this.sync.treeListeners.push((space: SyncSpace, treeId, changes) => { fn(space, treeId, changes); });
  }

  onAcl(fn: AclListener): void {
    this.sync.aclListeners.push((space: SyncSpace, raws) => { fn(space, raws); });
  }
}

/** The transport limits the sync tests use: big enough for one full sync message. */
const LIMITS = new Limits(64, 16 << 20, 8 * 1024 * 1024 + 4096);

export interface WsDriverOptions {
  /** Peers to keep connected (e.g. `ws://192.168.1.20:4434/p2psync`). */
  urls?: readonly string[];
  /** WebSocket implementation (default: the global one; in Node 20 pass `ws`). */
  WebSocket?: WebSocketConstructor;
  /** Longest wait between reconnection attempts, ms (default 15 000). */
  maxBackoffMs?: number;
}

interface Peer {
  url: string;
  conn: Connection | null;
  sync: PeerSync | null;
  lastError: string | null;
  connecting: Promise<PeerSync | null> | null;
  timer: ReturnType<typeof setTimeout> | null;
  backoff: number;
}

/** `ws:host:port` / `wss:host:port` hints of an invite code as WebSocket URLs. */
export function hintUrls(addresses: readonly string[]): string[] {
  const out: string[] = [];
  for (const a of addresses) {
    const m = /^(wss?):(.+)$/.exec(a);
    if (m !== null) out.push(`${m[1]!}://${m[2]!}${WS_PATH}`);
  }
  return out;
}

export class WsSyncDriver implements SyncDriver {
  private readonly peers = new Map<string, Peer>();
  private readonly listeners = new Set<(s: SyncStatus) => void>();
  private last = "";
  private ticker: ReturnType<typeof setInterval> | null = null;
  private stopped = false;
  private readonly certificate: DeviceCertificate;
  private readonly urls: string[];

  constructor(readonly replicas: SyncReplicaSet, private readonly o: WsDriverOptions = {}) {
    this.certificate = DeviceCertificate.issue(replicas.account, replicas.device);
    this.urls = [...(o.urls ?? [])];
  }

  /** Keep `url` connected from now on (e.g. the peer a space was joined through). */
  addPeer(url: string): void {
    if (!this.urls.includes(url)) this.urls.push(url);
    if (!this.stopped) void this.connect(this.peer(url));
  }

  /** The peer URLs kept connected. */
  get peerUrls(): readonly string[] {
    return this.urls;
  }

  /** A driver factory for Repo.open (it makes the SyncReplicaSet the Repo must use). */
  static factory(o: WsDriverOptions = {}): { replicas: (a: AccountKey, d: DeviceKey) => ReplicaSet; sync: (r: ReplicaSet) => SyncDriver } {
    return {
      replicas: (a, d) => new SyncReplicaSet(a, d),
      sync: (r) => {
        if (!(r instanceof SyncReplicaSet)) throw new Error("WsSyncDriver needs the SyncReplicaSet its factory makes");
        return new WsSyncDriver(r, o);
      },
    };
  }

  private dial(url: string): Promise<Connection> {
    return connectWebSocket(url, {
      deviceKey: this.replicas.device, certificate: this.certificate, config: { limits: LIMITS },
      ...(this.o.WebSocket === undefined ? {} : { WebSocket: this.o.WebSocket }),
    });
  }

  private peer(url: string): Peer {
    let p = this.peers.get(url);
    if (p === undefined) {
      p = { url, conn: null, sync: null, lastError: null, connecting: null, timer: null, backoff: 1000 };
      this.peers.set(url, p);
    }
    return p;
  }

  /** Connect to `url` now (if not connected or connecting); resolves when synced or failed. */
  private connect(p: Peer): Promise<PeerSync | null> {
    if (p.sync !== null) return Promise.resolve(p.sync);
    if (this.stopped) return Promise.resolve(null);
    p.connecting ??= this.attempt(p);
    return p.connecting;
  }

  private async attempt(p: Peer): Promise<PeerSync | null> {
    await Promise.resolve(); // p.connecting is set before anything below runs
    this.emit();
    try {
      const conn = await this.dial(p.url);
      const sync = new PeerSync(this.replicas.sync, conn);
      p.conn = conn;
      p.sync = sync;
      p.lastError = null;
      p.backoff = 1000;
      void sync.run().then(() => {
        p.lastError = sync.lastError ?? "connection closed";
        p.conn = null;
        p.sync = null;
        this.emit();
        this.retry(p);
      });
      return sync;
    } catch (e) {
      p.lastError = e instanceof Error ? e.message : String(e);
      this.retry(p);
      return null;
    } finally {
      p.connecting = null;
      this.emit();
    }
  }

  private retry(p: Peer): void {
    if (this.stopped || p.timer !== null || !this.urls.includes(p.url)) return;
    p.timer = setTimeout(() => {
      p.timer = null;
      void this.connect(p);
    }, p.backoff);
    p.backoff = Math.min(p.backoff * 2, this.o.maxBackoffMs ?? 15_000);
  }

  start(): void {
    this.stopped = false;
    for (const url of this.urls) void this.connect(this.peer(url));
    this.ticker ??= setInterval(() => { this.emit(); }, 250);
    (this.ticker as { unref?: () => void }).unref?.();
  }

  async join(invite: string): Promise<{ spaceId: string; pendingApproval: boolean }> {
    const code = InviteCode.decode(invite);
    if (code.spaceId === "") throw new Error("this invite code names no space (format 1): ask for a new one");
    const candidates = [...hintUrls(code.addresses), ...this.urls];
    const errors: string[] = [];
    for (const url of [...new Set(candidates)]) {
      const sync = await this.connect(this.peer(url));
      if (sync === null) {
        errors.push(`${url}: ${this.peers.get(url)?.lastError ?? "not reachable"}`);
        continue;
      }
      try {
        const { space, pendingApproval } = await sync.bootstrap(code.spaceId, code);
        this.addPeer(url); // the peer we joined through holds the space: keep syncing with it
        // other connections learn about the new space on their next exchange
        for (const p of this.peers.values()) if (p.sync !== null && p.sync !== sync) p.sync.syncNow();
        this.emit();
        return { spaceId: space.id, pendingApproval };
      } catch (e) {
        errors.push(`${url}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    throw new Error(candidates.length === 0 ? "no peer to join through: the invite has no ws: address and none is configured" : `could not join: ${errors.join("; ")}`);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    const closing: Promise<unknown>[] = [];
    for (const p of this.peers.values()) {
      if (p.timer !== null) clearTimeout(p.timer);
      p.timer = null;
      if (p.conn !== null) {
        closing.push(p.conn.waitClosed());
        p.sync?.close("app closed");
      }
    }
    await Promise.allSettled(closing);
  }

  status(): SyncStatus {
    const peers: PeerStatus[] = [...this.peers.values()].map((p) => {
      const st = p.sync?.status();
      return {
        peer: p.conn?.peerId ?? p.url,
        address: p.url,
        connected: p.sync !== null,
        synced: st === undefined ? [] : Object.entries(st.spaces).filter(([, s]) => s.pending === 0 && s.lastError === null).map(([k]) => k),
        lastError: st?.lastError ?? p.lastError,
      };
    });
    const live = [...this.peers.values()].filter((p) => p.sync !== null);
    let state: SyncState;
    if (live.length > 0) state = live.every((p) => p.sync!.idle) ? "synced" : "syncing";
    else state = [...this.peers.values()].some((p) => p.connecting !== null) ? "connecting" : "offline";
    return { state, peers, unsent: 0 };
  }

  onStatus(fn: (s: SyncStatus) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(): void {
    const s = this.status();
    const key = JSON.stringify(s);
    if (key === this.last) return;
    this.last = key;
    for (const l of [...this.listeners]) l(s);
  }
}

