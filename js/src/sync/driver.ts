/**
 * The Repo's `SyncDriver` (src/repo.ts) over PeerSync: joins by invite code through the code's
 * address hints, then keeps one PeerSync per peer address it knows (the one it joined through,
 * plus any given), and reports status. Reduced: each address is dialled once per `start()` (no
 * reconnect loop yet: call `start()` again after a network change).
 */
import type { Connection } from "../transport/connection.js";
import type { SyncDriver, SyncState, SyncStatus } from "../repo.js";
import type { SyncConfig } from "./core.js";
import { PeerSync } from "./engine.js";
import { type Dialer, joinByInvite, splitHint } from "./join.js";
import type { SyncReplicas } from "./replica.js";

interface Peer { address: string; sync: PeerSync | null; running: Promise<void> | null; lastError: string | null; connecting: boolean }

export class PeerSyncDriver implements SyncDriver {
  private readonly peers = new Map<string, Peer>();
  private readonly listeners = new Set<(s: SyncStatus) => void>();
  private stopped = false;

  constructor(readonly replicas: SyncReplicas, readonly dial: Dialer, o: { addresses?: readonly string[]; config?: Partial<SyncConfig> } = {}) {
    this.config = o.config ?? {};
    for (const a of o.addresses ?? []) this.peers.set(a, { address: a, sync: null, running: null, lastError: null, connecting: false });
  }

  private readonly config: Partial<SyncConfig>;

  async join(invite: string): Promise<{ spaceId: string; pendingApproval: boolean }> {
    const joined = await joinByInvite(this.replicas, invite, this.dial, { config: this.config });
    this.adopt(joined.address, joined.sync, joined.running);
    return { spaceId: joined.space.id, pendingApproval: joined.pendingApproval };
  }

  private adopt(address: string, sync: PeerSync, running: Promise<void>): void {
    const peer: Peer = { address, sync, running, lastError: null, connecting: false };
    this.peers.set(address, peer);
    sync.listeners.add(() => {
      this.emit();
    });
    void running.then(() => {
      peer.lastError = sync.lastError;
      peer.sync = null;
      this.emit();
    });
    this.emit();
  }

  /** The live PeerSync of every connected peer. */
  get syncs(): PeerSync[] {
    return [...this.peers.values()].flatMap((p) => (p.sync === null ? [] : [p.sync]));
  }

  start(): void {
    this.stopped = false;
    for (const peer of this.peers.values()) {
      if (peer.sync !== null || peer.connecting) continue;
      peer.connecting = true;
      void this.connect(peer);
    }
  }

  private async connect(peer: Peer): Promise<void> {
    let conn: Connection;
    try {
      const [carrier, host, port] = splitHint(peer.address);
      conn = await this.dial(carrier, host, port);
    } catch (exc) {
      peer.lastError = exc instanceof Error ? exc.message : String(exc);
      peer.connecting = false;
      this.emit();
      return;
    }
    peer.connecting = false;
    if (this.stopped) {
      conn.close("driver stopped");
      return;
    }
    const sync = new PeerSync(this.replicas, conn, this.config);
    this.adopt(peer.address, sync, sync.run());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const runs: Promise<void>[] = [];
    for (const p of this.peers.values()) {
      p.sync?.close("sync stopped");
      if (p.running !== null) runs.push(p.running);
    }
    await Promise.all(runs);
  }

  status(): SyncStatus {
    const peers = [...this.peers.values()].map((p) => ({
      peer: p.sync?.conn.peerId ?? p.address,
      address: p.address,
      connected: p.sync !== null,
      synced: p.sync === null ? [] : [...p.sync.shared].filter((sid) => p.sync!.core.state.spaceState(sid).lastSuccess !== null),
      lastError: p.sync?.lastError ?? p.lastError,
    }));
    const live = [...this.peers.values()].filter((p) => p.sync !== null);
    let state: SyncState = "offline";
    if (live.length) state = live.every((p) => p.sync!.idle) ? "synced" : "syncing";
    else if ([...this.peers.values()].some((p) => p.connecting)) state = "connecting";
    return { state, peers, unsent: 0 };
  }

  onStatus(fn: (s: SyncStatus) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(): void {
    if (!this.listeners.size) return;
    const s = this.status();
    for (const l of this.listeners) l(s);
  }
}
