/**
 * IndexedDB storage for browsers (via `idb`). One database per device profile (default name
 * "p2psync"), schema version 1:
 *
 *   spaces   key space id → header bytes
 *   acl      auto-increment key (= arrival order) → {s: space, id, raw}; unique index [s, id]
 *   changes  auto-increment key (= arrival order) → {s, t: tree, id, raw}; unique [s, t, id],
 *            index [s, t] (reads come back in arrival order: index key, then primary key)
 *   meta     key → JSON text
 *
 * Each add call is one readwrite transaction (all-or-nothing; a duplicate id is skipped inside
 * it). IndexedDB commits durably in Chromium ("relaxed" durability is not asked for), so an edit
 * acknowledged here survives a reload or a crashed tab.
 */
import { type DBSchema, type IDBPDatabase, openDB } from "idb";
import type { Item, Storage } from "./types.js";

interface Schema extends DBSchema {
  spaces: { key: string; value: Uint8Array };
  acl: { key: number; value: { s: string; id: string; raw: Uint8Array }; indexes: { byId: [string, string]; bySpace: string } };
  changes: {
    key: number;
    value: { s: string; t: string; id: string; raw: Uint8Array };
    indexes: { byId: [string, string, string]; byTree: [string, string]; bySpace: string };
  };
  meta: { key: string; value: string };
}

export class IdbStorage implements Storage {
  private constructor(private readonly db: IDBPDatabase<Schema>) {}

  /** Open (or create) the database `name` (in Node tests: after `import "fake-indexeddb/auto"`). */
  static async open(name = "p2psync"): Promise<IdbStorage> {
    {
      const db = await openDB<Schema>(name, 1, {
        upgrade(d) {
          d.createObjectStore("spaces");
          const acl = d.createObjectStore("acl", { autoIncrement: true });
          acl.createIndex("byId", ["s", "id"], { unique: true });
          acl.createIndex("bySpace", "s");
          const ch = d.createObjectStore("changes", { autoIncrement: true });
          ch.createIndex("byId", ["s", "t", "id"], { unique: true });
          ch.createIndex("byTree", ["s", "t"]);
          ch.createIndex("bySpace", "s");
          d.createObjectStore("meta");
        },
      });
      return new IdbStorage(db);
    }
  }

  async putSpace(spaceId: string, header: Uint8Array): Promise<void> {
    await this.db.put("spaces", Uint8Array.from(header), spaceId);
  }

  async getSpace(spaceId: string): Promise<Uint8Array | undefined> {
    const v = await this.db.get("spaces", spaceId);
    return v === undefined ? undefined : new Uint8Array(v);
  }

  async listSpaces(): Promise<string[]> {
    return (await this.db.getAllKeys("spaces")).sort();
  }

  async deleteSpace(spaceId: string): Promise<void> {
    const tx = this.db.transaction(["spaces", "acl", "changes"], "readwrite");
    await tx.objectStore("spaces").delete(spaceId);
    for (const store of ["acl", "changes"] as const) {
      const idx = tx.objectStore(store).index("bySpace");
      for (let c = await idx.openCursor(spaceId); c; c = await c.continue()) await c.delete();
    }
    await tx.done;
  }

  async addAclRecords(spaceId: string, items: readonly Item[]): Promise<void> {
    const tx = this.db.transaction("acl", "readwrite");
    const idx = tx.store.index("byId");
    for (const it of items) {
      if ((await idx.getKey([spaceId, it.id])) !== undefined) continue;
      await tx.store.add({ s: spaceId, id: it.id, raw: Uint8Array.from(it.raw) });
    }
    await tx.done;
  }

  async aclRecords(spaceId: string): Promise<Uint8Array[]> {
    return (await this.db.getAllFromIndex("acl", "bySpace", spaceId)).map((r) => new Uint8Array(r.raw));
  }

  async addChanges(spaceId: string, treeId: string, items: readonly Item[]): Promise<void> {
    const tx = this.db.transaction("changes", "readwrite");
    const idx = tx.store.index("byId");
    for (const it of items) {
      if ((await idx.getKey([spaceId, treeId, it.id])) !== undefined) continue;
      await tx.store.add({ s: spaceId, t: treeId, id: it.id, raw: Uint8Array.from(it.raw) });
    }
    await tx.done;
  }

  async changes(spaceId: string, treeId: string): Promise<Uint8Array[]> {
    return (await this.db.getAllFromIndex("changes", "byTree", [spaceId, treeId])).map((r) => new Uint8Array(r.raw));
  }

  async listTrees(spaceId: string): Promise<string[]> {
    const out = new Set<string>();
    const tx = this.db.transaction("changes");
    for (let c = await tx.store.index("byTree").openKeyCursor(IDBKeyRange.bound([spaceId, ""], [spaceId, "\uffff"]), "nextunique"); c; c = await c.continue()) {
      out.add(c.key[1]);
    }
    await tx.done;
    return [...out].sort();
  }

  async getMeta(key: string): Promise<unknown> {
    const v = await this.db.get("meta", key);
    return v === undefined ? undefined : JSON.parse(v);
  }

  async putMeta(key: string, value: unknown): Promise<void> {
    await this.db.put("meta", JSON.stringify(value), key);
  }

  close(): Promise<void> {
    this.db.close();
    return Promise.resolve();
  }
}
