/** In-memory storage (tests, and a peer that keeps nothing across restarts). */
import type { Item, Storage } from "./types.js";

interface SpaceData {
  header: Uint8Array | undefined;
  acl: Map<string, Uint8Array>;
  trees: Map<string, Map<string, Uint8Array>>;
}

export class MemoryStorage implements Storage {
  private readonly spaces = new Map<string, SpaceData>();
  private readonly meta = new Map<string, string>();

  private space(id: string): SpaceData {
    let s = this.spaces.get(id);
    if (s === undefined) {
      s = { header: undefined, acl: new Map(), trees: new Map() };
      this.spaces.set(id, s);
    }
    return s;
  }

  putSpace(spaceId: string, header: Uint8Array): Promise<void> {
    this.space(spaceId).header = Uint8Array.from(header);
    return Promise.resolve();
  }

  getSpace(spaceId: string): Promise<Uint8Array | undefined> {
    const h = this.spaces.get(spaceId)?.header;
    return Promise.resolve(h === undefined ? undefined : Uint8Array.from(h));
  }

  listSpaces(): Promise<string[]> {
    return Promise.resolve([...this.spaces].filter(([, s]) => s.header !== undefined).map(([k]) => k).sort());
  }

  deleteSpace(spaceId: string): Promise<void> {
    this.spaces.delete(spaceId);
    return Promise.resolve();
  }

  addAclRecords(spaceId: string, items: readonly Item[]): Promise<void> {
    const acl = this.space(spaceId).acl;
    for (const it of items) if (!acl.has(it.id)) acl.set(it.id, Uint8Array.from(it.raw));
    return Promise.resolve();
  }

  aclRecords(spaceId: string): Promise<Uint8Array[]> {
    return Promise.resolve([...(this.spaces.get(spaceId)?.acl.values() ?? [])].map((r) => Uint8Array.from(r)));
  }

  addChanges(spaceId: string, treeId: string, items: readonly Item[]): Promise<void> {
    const trees = this.space(spaceId).trees;
    let t = trees.get(treeId);
    if (t === undefined) {
      t = new Map();
      trees.set(treeId, t);
    }
    for (const it of items) if (!t.has(it.id)) t.set(it.id, Uint8Array.from(it.raw));
    return Promise.resolve();
  }

  changes(spaceId: string, treeId: string): Promise<Uint8Array[]> {
    return Promise.resolve([...(this.spaces.get(spaceId)?.trees.get(treeId)?.values() ?? [])].map((r) => Uint8Array.from(r)));
  }

  listTrees(spaceId: string): Promise<string[]> {
    return Promise.resolve([...(this.spaces.get(spaceId)?.trees.keys() ?? [])].sort());
  }

  getMeta(key: string): Promise<unknown> {
    const v = this.meta.get(key);
    return Promise.resolve(v === undefined ? undefined : JSON.parse(v));
  }

  putMeta(key: string, value: unknown): Promise<void> {
    this.meta.set(key, JSON.stringify(value));
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
