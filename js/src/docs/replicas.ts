/**
 * The spaces a Repo holds, as the sync layer sees them: header, ACL, one object tree per
 * document, listeners that see every ACL record and tree change taken in or made here.
 *
 * `ReplicaSet` / `ReplicaSpace` are the seam between the app layer (src/repo.ts) and sync: they
 * are the subset of the sync layer's `SyncReplicas` / `SyncSpace` (src/sync/replica.ts) the
 * Repo uses. There is one implementation: `LocalReplicas` (a Repo that never syncs: tests, a
 * device that never connected) is `SyncReplicas` with no peer attached, so the offline and the
 * syncing Repo take in, gate, sign and fan out changes by the same code.
 */
import type { AccountKey, DeviceKey } from "../crypto/keys.js";
import type { Acl } from "../replica/acl.js";
import type { Change } from "../replica/change.js";
import type { SpaceHeader } from "../replica/header.js";
import type { ObjectTree } from "../replica/tree.js";
import { type IngestResult, SyncReplicas } from "../sync/replica.js";

export type { IngestResult };

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

/** Spaces in memory with the sync layer's rules and no peers: `SyncReplicas` itself (nothing
 * is pushed while no `PeerSync` is attached). */
export class LocalReplicas extends SyncReplicas {}
