/**
 * Where a JS peer keeps what it holds, behind one small async interface so the same peer runs
 * on IndexedDB in a browser (idb.ts), files in Node (files.ts) and memory in tests (memory.ts).
 *
 * What is stored is what Python's store keeps (docs/replica.md, "Store"): per space its signed
 * header, its ACL records and its tree changes — raw bytes exactly as received (ids are content
 * ids of those bytes; they are verified again when loaded, never trusted from storage) — plus
 * small JSON values (`meta`: this device's keys, space names, app settings).
 *
 * Rules every implementation keeps (checked by conformance.ts on each of them):
 * - adds are idempotent by id and keep first-arrival order (a tree's order is a topological
 *   order because a change is only added after its parents: loading replays it as is);
 * - one `addChanges` / `addAclRecords` call is all-or-nothing;
 * - what a call wrote is there for a new instance on the same place once the promise resolved;
 * - spaces and trees are listed sorted; unknown spaces and trees read as empty.
 */

/** One record or change: its content id (lowercase hex) and the exact bytes. */
export interface Item {
  readonly id: string;
  readonly raw: Uint8Array;
}

export interface Storage {
  /** Store (or replace) a space's header bytes. */
  putSpace(spaceId: string, header: Uint8Array): Promise<void>;
  getSpace(spaceId: string): Promise<Uint8Array | undefined>;
  listSpaces(): Promise<string[]>;
  /** Forget a space and everything in it. */
  deleteSpace(spaceId: string): Promise<void>;

  addAclRecords(spaceId: string, items: readonly Item[]): Promise<void>;
  aclRecords(spaceId: string): Promise<Uint8Array[]>;

  addChanges(spaceId: string, treeId: string, items: readonly Item[]): Promise<void>;
  changes(spaceId: string, treeId: string): Promise<Uint8Array[]>;
  listTrees(spaceId: string): Promise<string[]>;

  /** Small JSON-able values under string keys (undefined: absent). */
  getMeta(key: string): Promise<unknown>;
  putMeta(key: string, value: unknown): Promise<void>;

  close(): Promise<void>;
}

export class StorageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StorageError";
  }
}
