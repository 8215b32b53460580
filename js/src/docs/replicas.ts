/**
 * The spaces a Repo holds, as the sync layer sees them: header, ACL, one object tree per
 * document, listeners that see every ACL record and tree change taken in or made here.
 *
 * `ReplicaSet` / `ReplicaSpace` are the seam between the app layer (src/repo.ts) and sync: they
 * are the subset of the sync helper's `SyncReplicas` / `SyncSpace` (src/sync/replica.ts) the
 * Repo uses, so the Repo runs on that class when sync is present, and on `LocalReplicas` below
 * (same rules, no peers) when it is not (tests, a device that never connected).
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import { contentId } from "../codec.js";
import type { AccountKey, DeviceKey } from "../crypto/keys.js";
import { compareBytes } from "../hashes.js";
import { Acl } from "../replica/acl.js";
import { AccessDenied, InvalidAclRecord } from "../replica/aclRecords.js";
import { buildChange, type Change, parseChange } from "../replica/change.js";
import { SpaceHeader } from "../replica/header.js";
import { ObjectTree } from "../replica/tree.js";
import { aclKeys } from "./document.js";

/** The result of taking in one batch of changes for one tree (as src/sync/replica.ts). */
export interface IngestResult {
  attached: Change[];
  missing: boolean;
  unknownAcl: boolean;
  refused: string | null;
}

export interface ReplicaSpace {
  readonly header: SpaceHeader;
  readonly acl: Acl;
  readonly id: string;
  treeIds(): Uint8Array[];
  tree(id: Uint8Array): ObjectTree | undefined;
  addAcl(raws: readonly Uint8Array[], source: null): { added: string[]; rejected: [string, string][] };
  ingest(treeId: Uint8Array, raws: readonly Uint8Array[], source: null): IngestResult;
  /** Sign a change of our own (a new tree when treeId is null), attach it, fan it out. */
  createChange(treeId: Uint8Array | null, plaintext: Uint8Array, o?: { snapshot?: boolean }): Change;
}

export type TreeListener = (space: ReplicaSpace, treeId: Uint8Array, changes: readonly Change[]) => void;
export type AclListener = (space: ReplicaSpace, raws: readonly Uint8Array[]) => void;

export interface ReplicaSet {
  readonly account: AccountKey;
  readonly device: DeviceKey;
  readonly spaces: ReadonlyMap<string, ReplicaSpace>;
  createSpace(spaceType?: string): ReplicaSpace;
  adopt(spaceId: string, headerRaw: Uint8Array, aclRaws: readonly Uint8Array[]): ReplicaSpace;
  onTree(fn: TreeListener): void;
  onAcl(fn: AclListener): void;
}

class LocalSpace implements ReplicaSpace {
  readonly trees = new Map<string, ObjectTree>();

  constructor(readonly header: SpaceHeader, readonly acl: Acl, private readonly owner: LocalReplicas) {}

  get id(): string {
    return this.header.spaceId;
  }

  treeIds(): Uint8Array[] {
    return [...this.trees.values()].map((t) => t.id).sort(compareBytes);
  }

  tree(id: Uint8Array): ObjectTree | undefined {
    return this.trees.get(bytesToHex(id));
  }

  addAcl(raws: readonly Uint8Array[]): { added: string[]; rejected: [string, string][] } {
    const added: string[] = [];
    const rejected: [string, string][] = [];
    const fresh: Uint8Array[] = [];
    for (const raw of raws) {
      const id = bytesToHex(contentId(raw));
      if (this.acl.has(id)) continue;
      try {
        const r = this.acl.add(raw);
        fresh.push(raw);
        added.push(...(r.status === "added" ? [id] : []), ...r.released);
      } catch (e) {
        if (!(e instanceof InvalidAclRecord || e instanceof AccessDenied)) throw e;
        rejected.push([id, e.message]);
      }
    }
    if (added.length > 0) {
      for (const t of this.trees.values()) {
        try {
          const res = t.add([]);
          if (res.attached.length > 0) this.owner.fanTree(this, t.id, res.attached);
        } catch { /* a waiting change the gate now refuses is dropped by the tree */ }
      }
    }
    if (fresh.length > 0) this.owner.fanAcl(this, fresh);
    return { added, rejected };
  }

  ingest(treeId: Uint8Array, raws: readonly Uint8Array[]): IngestResult {
    const res: IngestResult = { attached: [], missing: false, unknownAcl: false, refused: null };
    let tree = this.tree(treeId);
    try {
      const parsed = raws.map((r) => parseChange(r));
      if (parsed.some((c) => compareBytes(c.tree, treeId) !== 0)) {
        res.refused = "change for another object";
        return res;
      }
      if (tree === undefined) {
        const root = parsed.find((c) => c.isRoot);
        if (root === undefined) {
          res.missing = true;
          return res;
        }
        tree = ObjectTree.fromRoot(this.id, root.raw, this.acl.gate());
        this.trees.set(bytesToHex(tree.id), tree);
        res.attached.push(tree.root);
      }
      const added = tree.add(parsed.filter((c) => !c.isRoot).map((c) => c.raw));
      res.attached.push(...added.attached);
      res.missing = added.waiting.length > 0;
    } catch (e) {
      res.refused = `changes refused: ${(e as Error).message}`;
    }
    if (tree !== undefined && res.attached.length > 0) this.owner.fanTree(this, tree.id, res.attached);
    return res;
  }

  createChange(treeId: Uint8Array | null, plaintext: Uint8Array, o: { snapshot?: boolean } = {}): Change {
    const keys = aclKeys(this.acl);
    const { aclHead, readKeyId } = keys.writePosition(this.owner.account.public);
    const key = keys.readKey(readKeyId);
    if (key === undefined) throw new AccessDenied("you do not hold the current read key");
    const tree = treeId === null ? undefined : this.tree(treeId);
    if (treeId !== null && tree === undefined) throw new AccessDenied("no such object here");
    const ch = buildChange(this.owner.account, key, plaintext, {
      spaceId: this.id, treeId, prevIds: tree?.heads ?? [], aclHead, readKeyId, snapshot: o.snapshot ?? false,
    });
    const res = this.ingest(ch.tree, [ch.raw]);
    if (res.refused !== null) throw new AccessDenied(res.refused);
    return ch;
  }
}

/** Spaces in memory with the sync layer's rules and no peers. */
export class LocalReplicas implements ReplicaSet {
  readonly spaces = new Map<string, LocalSpace>();
  private readonly treeListeners: TreeListener[] = [];
  private readonly aclListeners: AclListener[] = [];

  constructor(readonly account: AccountKey, readonly device: DeviceKey) {}

  createSpace(spaceType = "default"): ReplicaSpace {
    const header = SpaceHeader.create(this.account, spaceType);
    const acl = Acl.create(header.spaceId, this.account);
    const space = new LocalSpace(header, acl, this);
    this.spaces.set(space.id, space);
    return space;
  }

  adopt(spaceId: string, headerRaw: Uint8Array, aclRaws: readonly Uint8Array[]): ReplicaSpace {
    const existing = this.spaces.get(spaceId);
    if (existing !== undefined) {
      existing.addAcl(aclRaws);
      return existing;
    }
    const header = SpaceHeader.verify(headerRaw, spaceId);
    const acl = Acl.fromRecords(spaceId, aclRaws, { me: this.account, owner: header.owner });
    const space = new LocalSpace(header, acl, this);
    this.spaces.set(spaceId, space);
    return space;
  }

  onTree(fn: TreeListener): void {
    this.treeListeners.push(fn);
  }

  onAcl(fn: AclListener): void {
    this.aclListeners.push(fn);
  }

  fanTree(space: ReplicaSpace, treeId: Uint8Array, changes: readonly Change[]): void {
    for (const l of this.treeListeners) l(space, treeId, changes);
  }

  fanAcl(space: ReplicaSpace, raws: readonly Uint8Array[]): void {
    for (const l of this.aclListeners) l(space, raws);
  }
}
