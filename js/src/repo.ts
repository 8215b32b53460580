/**
 * The app-builder API, in the spirit of automerge-repo's `Repo` / `DocHandle`:
 *
 *   const repo = await Repo.open({ storage: await IdbStorage.open(), sync: (r) => mySyncDriver(r) });
 *   const space = await repo.join("p2psync-invite2:…");         // or repo.createSpace("Shopping")
 *   const doc = space.create<{ items: string[] }>((d) => { d.items = []; });
 *   doc.change((d) => { d.items.push("milk"); });
 *   doc.on((json) => render(json));                            // local and remote changes
 *   repo.onStatus((s) => showSync(s));                         // peers and sync state
 *
 * A Repo holds one device's identity (account key from a recovery phrase, a device key), the
 * spaces it is a member of (ReplicaSet: header, ACL, one signed encrypted tree per document) and
 * a Storage that keeps all of it (IndexedDB, files, memory). Everything taken in or made is
 * written to storage in arrival order through one write queue (`repo.flushed()` waits for it);
 * opening a Repo replays storage. Sync is pluggable: a `SyncDriver` (below) connects the replica
 * set to peers; without one the Repo works offline and keeps edits until a driver syncs them.
 */
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { contentId } from "./codec.js";
import { AccountKey, accountFromPhrase, DeviceKey, newRecoveryPhrase } from "./crypto/keys.js";
import type { Change } from "./replica/change.js";
import { Role } from "./replica/aclRecords.js";
import { aclKeys, Document } from "./docs/document.js";
import { encodePayload } from "./docs/payload.js";
import { LocalReplicas, type ReplicaSet, type ReplicaSpace } from "./docs/replicas.js";
import type { Storage } from "./storage/types.js";

/** One peer as the sync driver sees it. */
export interface PeerStatus {
  /** Printable peer id (or the address while not yet known). */
  readonly peer: string;
  readonly address: string;
  readonly connected: boolean;
  /** Spaces synced with this peer at least once since connecting. */
  readonly synced: readonly string[];
  readonly lastError: string | null;
}

export type SyncState = "offline" | "connecting" | "syncing" | "synced";

export interface SyncStatus {
  readonly state: SyncState;
  readonly peers: readonly PeerStatus[];
  /** Local tree changes not yet acknowledged by any peer (0 when unknown). */
  readonly unsent: number;
}

/**
 * What the Repo needs from sync (the `jssync` helper's src/sync/ implements the protocol; an
 * adapter over its PeerSync engine is a SyncDriver). A driver is made once per Repo with the
 * Repo's ReplicaSet and keeps it in step with peers: it reads trees and ACLs from it and adds
 * what peers send through `ReplicaSpace.ingest` / `addAcl` (whose listeners make the Repo store
 * it and notify handles). Local changes made through `ReplicaSpace.createChange` reach the
 * driver the same way (their listeners), so a driver pushes them without the Repo calling it.
 */
export interface SyncDriver {
  /**
   * Join a space by invite code: find a peer holding it (the code's address hints, or the
   * driver's own peers), fetch header and ACL, make and push our join (or join request), and
   * adopt the space into the ReplicaSet. Resolves with its id once held; `pendingApproval` while
   * an admin still has to accept.
   */
  join(invite: string): Promise<{ spaceId: string; pendingApproval: boolean }>;
  /** Start connecting to peers and syncing every space of the ReplicaSet (idempotent). */
  start(): void;
  /** Disconnect; resolves when every connection is closed. */
  stop(): Promise<void>;
  status(): SyncStatus;
  /** Called on every status change; returns an unsubscribe function. */
  onStatus(fn: (s: SyncStatus) => void): () => void;
}

export type SyncDriverFactory = (replicas: ReplicaSet) => SyncDriver;

export interface RepoOptions {
  storage: Storage;
  /** Use this recovery phrase for a new identity (default: a fresh one, kept in storage). */
  phrase?: string;
  /** How to sync (default: none; the Repo works offline). */
  sync?: SyncDriverFactory;
  /** Replica set factory (default LocalReplicas; the sync helper's SyncReplicas plugs in here). */
  replicas?: (account: AccountKey, device: DeviceKey) => ReplicaSet;
  /** Coalescing window of document edits in ms (default 50). */
  windowMs?: number;
}

interface Identity {
  phrase: string;
  device: string;
}

export interface SpaceInfo {
  readonly id: string;
  readonly name: string;
  readonly role: string | null;
  readonly documents: number;
}

const OFFLINE: SyncStatus = { state: "offline", peers: [], unsent: 0 };

export class Repo {
  private readonly handles = new Map<string, SpaceHandle>();
  private readonly names = new Map<string, string>();
  private writes: Promise<void> = Promise.resolve();
  private loading = false;
  private readonly statusListeners = new Set<(s: SyncStatus) => void>();
  /** The last storage write error (null: none). */
  storageError: string | null = null;

  private constructor(
    readonly storage: Storage,
    readonly replicas: ReplicaSet,
    readonly phrase: string,
    readonly windowMs: number,
    readonly driver: SyncDriver | null,
  ) {
    replicas.onAcl((space, raws) => {
      if (this.loading) return;
      this.write(() => this.storage.addAclRecords(space.id, raws.map((raw) => ({ id: bytesToHex(contentId(raw)), raw }))));
      this.handles.get(space.id)?.notifyAcl();
    });
    replicas.onTree((space, treeId, changes) => {
      if (!this.loading) {
        this.write(() => this.storage.addChanges(space.id, bytesToHex(treeId), changes.map((c) => ({ id: bytesToHex(c.id), raw: c.raw }))));
      }
      this.handle(space.id).notifyTree(treeId, changes);
    });
    driver?.onStatus((s) => { for (const l of this.statusListeners) l(s); });
  }

  /** Open the Repo kept in `storage` (made on first use: a new identity unless `phrase`). */
  static async open(o: RepoOptions): Promise<Repo> {
    let id = (await o.storage.getMeta("identity")) as Identity | undefined;
    if (id === undefined) {
      id = { phrase: o.phrase ?? newRecoveryPhrase(), device: bytesToHex(DeviceKey.generate().seed) };
      await o.storage.putMeta("identity", id);
    }
    const account = accountFromPhrase(id.phrase);
    const device = new DeviceKey(hexToBytes(id.device));
    const replicas = (o.replicas ?? ((a, d) => new LocalReplicas(a, d)))(account, device);
    const driver = o.sync?.(replicas) ?? null;
    const repo = new Repo(o.storage, replicas, id.phrase, o.windowMs ?? 50, driver);
    await repo.load();
    driver?.start();
    return repo;
  }

  private async load(): Promise<void> {
    this.loading = true;
    try {
      for (const sid of await this.storage.listSpaces()) {
        const header = await this.storage.getSpace(sid);
        if (header === undefined) continue;
        const space = this.replicas.adopt(sid, header, await this.storage.aclRecords(sid));
        const name = (await this.storage.getMeta(`name:${sid}`)) as string | undefined;
        if (name !== undefined) this.names.set(sid, name);
        for (const tid of await this.storage.listTrees(sid)) {
          space.ingest(hexToBytes(tid), await this.storage.changes(sid, tid), null);
        }
      }
    } finally {
      this.loading = false;
    }
  }

  private write(fn: () => Promise<void>): void {
    this.writes = this.writes.then(fn).catch((e: unknown) => {
      this.storageError = e instanceof Error ? e.message : String(e);
    });
  }

  /** Resolves once everything made or received so far is in storage. */
  async flushed(): Promise<void> {
    for (const h of this.handles.values()) h.flushAll();
    await this.writes;
  }

  get account(): AccountKey {
    return this.replicas.account;
  }

  /** The account's printable id (`a…`) and this device's (`p…`). */
  get accountId(): string {
    return this.replicas.account.id;
  }

  get deviceId(): string {
    return this.replicas.device.id;
  }

  spaces(): SpaceInfo[] {
    return [...this.replicas.spaces.values()].map((s) => this.handle(s.id).info()).sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  }

  space(id: string): SpaceHandle {
    if (!this.replicas.spaces.has(id)) throw new Error(`no space ${id} on this device`);
    return this.handle(id);
  }

  private handle(id: string): SpaceHandle {
    let h = this.handles.get(id);
    if (h === undefined) {
      h = new SpaceHandle(this, this.replicas.spaces.get(id)!);
      this.handles.set(id, h);
    }
    return h;
  }

  /** Local label of a space (never sent to peers); default: the space id. */
  nameOf(spaceId: string): string {
    return this.names.get(spaceId) ?? spaceId;
  }

  async rename(spaceId: string, name: string): Promise<void> {
    this.names.set(spaceId, name);
    await this.storage.putMeta(`name:${spaceId}`, name);
  }

  /** A new space owned by this account. */
  async createSpace(name?: string): Promise<SpaceHandle> {
    const space = this.replicas.createSpace();
    await this.storage.putSpace(space.id, space.header.raw);
    await this.storage.addAclRecords(space.id, space.acl.export().map((raw) => ({ id: bytesToHex(contentId(raw)), raw })));
    if (name !== undefined) await this.rename(space.id, name);
    return this.handle(space.id);
  }

  /** Join a space by invite code through the sync driver; the header is stored once held. */
  async join(invite: string, name?: string): Promise<SpaceHandle> {
    if (this.driver === null) throw new Error("this Repo has no sync driver: joining needs a peer");
    const { spaceId } = await this.driver.join(invite);
    const space = this.replicas.spaces.get(spaceId)!;
    await this.storage.putSpace(spaceId, space.header.raw);
    await this.storage.addAclRecords(spaceId, space.acl.export().map((raw) => ({ id: bytesToHex(contentId(raw)), raw })));
    if (name !== undefined) await this.rename(spaceId, name);
    return this.handle(spaceId);
  }

  status(): SyncStatus {
    return this.driver?.status() ?? OFFLINE;
  }

  onStatus(fn: (s: SyncStatus) => void): () => void {
    this.statusListeners.add(fn);
    return () => this.statusListeners.delete(fn);
  }

  async close(): Promise<void> {
    await this.flushed();
    await this.driver?.stop();
    await this.storage.close();
  }
}

/** One space: its documents and members. */
export class SpaceHandle {
  private readonly docs = new Map<string, DocHandle<object>>();
  private readonly listeners = new Set<() => void>();

  constructor(readonly repo: Repo, readonly replica: ReplicaSpace) {}

  get id(): string {
    return this.replica.id;
  }

  get name(): string {
    return this.repo.nameOf(this.id);
  }

  /** Our role here (null: not, or no longer, a member). */
  get role(): string | null {
    const r = this.replica.acl.state.role(bytesToHex(this.repo.account.public));
    return r === undefined ? null : Role[r].toLowerCase();
  }

  info(): SpaceInfo {
    return { id: this.id, name: this.name, role: this.role, documents: this.replica.treeIds().length };
  }

  /** Members as [account id hex, role name]. */
  members(): [string, string][] {
    const st = this.replica.acl.state;
    return [...st.members.entries()].map(([k, r]): [string, string] => [k, Role[r].toLowerCase()]).sort();
  }

  /** Ids (hex) of the documents held here. */
  documentIds(): string[] {
    return this.replica.treeIds().map(bytesToHex);
  }

  /** A new document (a new tree), optionally with a first change. */
  create<T extends object = Record<string, unknown>>(init?: (d: T) => void): DocHandle<T> {
    const root = this.replica.createChange(null, encodePayload([], []));
    const h = this.find<T>(bytesToHex(root.id));
    if (init !== undefined) h.change(init);
    return h;
  }

  find<T extends object = Record<string, unknown>>(docId: string): DocHandle<T> {
    let h = this.docs.get(docId);
    if (h === undefined) {
      const tree = this.replica.tree(hexToBytes(docId));
      if (tree === undefined) throw new Error(`no document ${docId} in space ${this.id}`);
      const doc = new Document<T>(tree, aclKeys(this.replica.acl), this.repo.account, this.repo.replicas.device.public, {
        windowMs: this.repo.windowMs,
        write: (plaintext, snapshot) => this.replica.createChange(tree.id, plaintext, { snapshot }),
      });
      h = new DocHandle<T>(this, doc) as unknown as DocHandle<object>;
      this.docs.set(docId, h);
    }
    return h as unknown as DocHandle<T>;
  }

  /** Called on new documents, removed access, ACL changes. */
  on(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  notifyTree(treeId: Uint8Array, changes: readonly Change[]): void {
    const h = this.docs.get(bytesToHex(treeId));
    h?.notify(changes.some((c) => !h.ownChange(c)));
    if (changes.some((c) => c.isRoot)) for (const l of this.listeners) l();
  }

  notifyAcl(): void {
    for (const l of this.listeners) l();
  }

  flushAll(): void {
    for (const d of this.docs.values()) d.flush();
  }
}

export type DocListener<T> = (json: T, meta: { remote: boolean }) => void;

/** One document: read it, change it, subscribe to it. */
export class DocHandle<T extends object> {
  private readonly listeners = new Set<DocListener<T>>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly mine = new Set<string>();

  constructor(readonly space: SpaceHandle, readonly document: Document<T>) {
    document.onLocalChange = (cs) => { for (const c of cs) this.mine.add(bytesToHex(c.id)); };
  }

  get id(): string {
    return bytesToHex(this.document.id);
  }

  /** The document as plain JSON (counters summed, text as strings). */
  json(): T {
    return this.document.toJSON() as T;
  }

  /** The Automerge document itself (read-only). */
  get doc(): T {
    return this.document.doc;
  }

  /** Change the document (Automerge proxy API); signed and sent when the window closes. */
  change(fn: (d: T) => void): void {
    this.document.change(fn);
    this.notify(false);
    this.schedule();
  }

  private schedule(): void {
    const due = this.document.dueAt;
    if (due === null || this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.document.poll(Date.now());
      this.schedule();
    }, Math.max(0, due - Date.now()));
  }

  /** Sign pending edits now. */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.document.flush();
  }

  ownChange(c: Change): boolean {
    return this.mine.has(bytesToHex(c.id));
  }

  /** Subscribe to changes (local and remote); returns an unsubscribe function. */
  on(fn: DocListener<T>): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  notify(remote: boolean): void {
    if (this.listeners.size === 0) return;
    const json = this.json();
    for (const l of this.listeners) l(json, { remote });
  }
}

export { AccountKey, DeviceKey };
