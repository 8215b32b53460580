/**
 * A SyncDriver over memory for Repo tests: every connected ReplicaSet gets every ACL record and
 * tree change of the spaces it holds from every other one, at once while the hub is online and
 * all at reconnection otherwise. `join(spaceId)` adopts the space from a peer that holds it
 * (a second device of a member: the real invite flow is the sync layer's).
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import type { ReplicaSet, ReplicaSpace } from "../src/docs/replicas.js";
import type { SyncDriver, SyncStatus } from "../src/repo.js";

export class MemoryHub {
  readonly sets = new Set<ReplicaSet>();
  online = true;
  private readonly drivers = new Set<MemoryDriver>();

  driver(r: ReplicaSet): MemoryDriver {
    const d = new MemoryDriver(this, r);
    this.drivers.add(d);
    return d;
  }

  private copy(from: ReplicaSpace, to: ReplicaSpace): void {
    to.addAcl(from.acl.export(), null);
    for (const id of from.treeIds()) to.ingest(id, from.tree(id)!.attachedChanges().map((c) => c.raw), null);
  }

  /** Bring every pair of holders of each space in step. */
  syncAll(): void {
    if (!this.online) return;
    const sets = [...this.sets];
    for (const a of sets) for (const b of sets) {
      if (a === b) continue;
      for (const [sid, sa] of a.spaces) {
        const sb = b.spaces.get(sid);
        if (sb !== undefined) this.copy(sa, sb);
      }
    }
    for (const d of this.drivers) d.emit();
  }

  setOnline(on: boolean): void {
    this.online = on;
    if (on) this.syncAll();
    else for (const d of this.drivers) d.emit();
  }
}

export class MemoryDriver implements SyncDriver {
  private readonly listeners = new Set<(s: SyncStatus) => void>();
  private busy = false;

  constructor(private readonly hub: MemoryHub, private readonly replicas: ReplicaSet) {
    const forward = (): void => {
      if (this.busy || !this.hub.online) return;
      this.busy = true;
      try {
        this.hub.syncAll();
      } finally {
        this.busy = false;
      }
    };
    replicas.onTree(forward);
    replicas.onAcl(forward);
  }

  join(invite: string): Promise<{ spaceId: string; pendingApproval: boolean }> {
    for (const other of this.hub.sets) {
      const s = other.spaces.get(invite);
      if (s !== undefined && other !== this.replicas && this.hub.online) {
        this.replicas.adopt(invite, s.header.raw, s.acl.export());
        this.hub.syncAll();
        return Promise.resolve({ spaceId: invite, pendingApproval: false });
      }
    }
    return Promise.reject(new Error("nobody offers that space"));
  }

  start(): void {
    this.hub.sets.add(this.replicas);
    this.hub.syncAll();
  }

  stop(): Promise<void> {
    this.hub.sets.delete(this.replicas);
    return Promise.resolve();
  }

  status(): SyncStatus {
    const others = [...this.hub.sets].filter((s) => s !== this.replicas);
    return {
      state: this.hub.online && others.length > 0 ? "synced" : "offline",
      peers: others.map((o) => ({ peer: o.device.id, address: "memory", connected: this.hub.online, synced: [...o.spaces.keys()].map(String), lastError: null })),
      unsent: 0,
    };
  }

  onStatus(fn: (s: SyncStatus) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(): void {
    const s = this.status();
    for (const l of this.listeners) l(s);
  }
}

export const hexId = bytesToHex;
