/**
 * The storage conformance suite: what every Storage must do (types.ts), as plain async checks
 * that run anywhere — under node:test for memory, files and IndexedDB (fake-indexeddb), and in
 * a real browser's IndexedDB from the app's self-test page (app/selftest.html).
 */
import { contentId } from "../codec.js";
import type { Item, Storage } from "./types.js";

export interface StorageUnderTest {
  /** A new, empty storage. */
  fresh(): Promise<Storage>;
  /** Close `s` and open the same place again (omit for storage that does not persist). */
  reopen?: (s: Storage) => Promise<Storage>;
}

export interface Check {
  readonly name: string;
  run(u: StorageUnderTest): Promise<void>;
}

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

export function item(text: string | Uint8Array): Item {
  const raw = typeof text === "string" ? new TextEncoder().encode(text) : text;
  return { id: hex(contentId(raw)), raw };
}

function eq(got: unknown, want: unknown, what: string): void {
  const g = JSON.stringify(got, (_k, v: unknown) => (v instanceof Uint8Array ? `bytes:${hex(v)}` : v));
  const w = JSON.stringify(want, (_k, v: unknown) => (v instanceof Uint8Array ? `bytes:${hex(v)}` : v));
  if (g !== w) throw new Error(`${what}: got ${g.slice(0, 200)}, want ${w.slice(0, 200)}`);
}

const texts = (xs: Uint8Array[]): string[] => xs.map((x) => new TextDecoder().decode(x));

export const checks: Check[] = [
  {
    name: "a new storage is empty and unknown things read as empty",
    async run(u) {
      const s = await u.fresh();
      eq(await s.listSpaces(), [], "spaces");
      eq(await s.getSpace("x.1"), undefined, "header");
      eq(await s.aclRecords("x.1"), [], "acl");
      eq(await s.changes("x.1", "aa"), [], "changes");
      eq(await s.listTrees("x.1"), [], "trees");
      eq(await s.getMeta("k"), undefined, "meta");
      await s.close();
    },
  },
  {
    name: "space headers are stored, replaced and listed sorted",
    async run(u) {
      const s = await u.fresh();
      await s.putSpace("b.2", new Uint8Array([2]));
      await s.putSpace("a.1", new Uint8Array([1]));
      await s.putSpace("b.2", new Uint8Array([2, 2]));
      eq(await s.listSpaces(), ["a.1", "b.2"], "spaces");
      eq(await s.getSpace("b.2"), new Uint8Array([2, 2]), "replaced header");
      await s.close();
    },
  },
  {
    name: "ACL records keep arrival order and adds are idempotent by id",
    async run(u) {
      const s = await u.fresh();
      await s.addAclRecords("a.1", [item("r1"), item("r2"), item("r1")]);
      await s.addAclRecords("a.1", [item("r2"), item("r3")]);
      await s.addAclRecords("b.2", [item("r3")]);
      eq(texts(await s.aclRecords("a.1")), ["r1", "r2", "r3"], "a.1");
      eq(texts(await s.aclRecords("b.2")), ["r3"], "b.2");
      await s.close();
    },
  },
  {
    name: "tree changes keep arrival order per tree; trees and spaces are separate",
    async run(u) {
      const s = await u.fresh();
      await s.addChanges("a.1", "t2", [item("c"), item("a")]);
      await s.addChanges("a.1", "t1", [item("x")]);
      await s.addChanges("a.1", "t2", [item("a"), item("b")]);
      await s.addChanges("b.2", "t2", [item("z")]);
      eq(texts(await s.changes("a.1", "t2")), ["c", "a", "b"], "t2");
      eq(texts(await s.changes("a.1", "t1")), ["x"], "t1");
      eq(await s.listTrees("a.1"), ["t1", "t2"], "trees of a.1");
      eq(await s.listTrees("b.2"), ["t2"], "trees of b.2");
      await s.close();
    },
  },
  {
    name: "bytes come back exactly (all 256 values, 1 MiB) and are copies",
    async run(u) {
      const s = await u.fresh();
      const big = new Uint8Array(1 << 20);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 8)) & 255;
      const it = item(big);
      await s.addChanges("a.1", "t", [it]);
      big[0] = big[0]! ^ 1;
      const [got] = await s.changes("a.1", "t");
      eq(hex(contentId(got!)), it.id, "same bytes as added");
      got![1] = got![1]! ^ 1;
      eq(hex(contentId((await s.changes("a.1", "t"))[0]!)), it.id, "stored copy untouched");
      await s.close();
    },
  },
  {
    name: "meta holds JSON values and overwrites",
    async run(u) {
      const s = await u.fresh();
      await s.putMeta("device", { seed: "00ff", n: 1, list: [1, "x", null] });
      await s.putMeta("device", { seed: "11", n: 2, list: [] });
      await s.putMeta("name:a.1", "Shopping");
      eq(await s.getMeta("device"), { seed: "11", n: 2, list: [] }, "device");
      eq(await s.getMeta("name:a.1"), "Shopping", "name");
      await s.close();
    },
  },
  {
    name: "deleting a space removes its header, records and trees only",
    async run(u) {
      const s = await u.fresh();
      for (const sid of ["a.1", "b.2"]) {
        await s.putSpace(sid, new Uint8Array([1]));
        await s.addAclRecords(sid, [item(`r-${sid}`)]);
        await s.addChanges(sid, "t", [item(`c-${sid}`)]);
      }
      await s.deleteSpace("a.1");
      eq(await s.listSpaces(), ["b.2"], "spaces");
      eq(await s.aclRecords("a.1"), [], "acl of a.1");
      eq(await s.listTrees("a.1"), [], "trees of a.1");
      eq(texts(await s.changes("b.2", "t")), ["c-b.2"], "b.2 untouched");
      await s.addChanges("a.1", "t", [item("c-a.1")]);
      eq(texts(await s.changes("a.1", "t")), ["c-a.1"], "a re-added change is new again");
      await s.close();
    },
  },
  {
    name: "concurrent adds all land once",
    async run(u) {
      const s = await u.fresh();
      await Promise.all(Array.from({ length: 40 }, (_, i) => s.addChanges("a.1", "t", [item(`c${i % 20}`), item(`d${i}`)])));
      const got = texts(await s.changes("a.1", "t"));
      eq(got.length, 60, "count");
      eq(new Set(got).size, 60, "no duplicates");
      await s.close();
    },
  },
  {
    name: "everything written is there after reopening",
    async run(u) {
      if (u.reopen === undefined) return;
      let s = await u.fresh();
      await s.putSpace("a.1", new Uint8Array([9]));
      await s.addAclRecords("a.1", [item("r1"), item("r2")]);
      await s.addChanges("a.1", "t", [item("c1")]);
      await s.addChanges("a.1", "t", [item("c2")]);
      await s.putMeta("k", { v: 1 });
      s = await u.reopen(s);
      eq(await s.listSpaces(), ["a.1"], "spaces");
      eq(await s.getSpace("a.1"), new Uint8Array([9]), "header");
      eq(texts(await s.aclRecords("a.1")), ["r1", "r2"], "acl");
      eq(texts(await s.changes("a.1", "t")), ["c1", "c2"], "changes");
      eq(await s.getMeta("k"), { v: 1 }, "meta");
      await s.addChanges("a.1", "t", [item("c1"), item("c3")]);
      eq(texts(await s.changes("a.1", "t")), ["c1", "c2", "c3"], "idempotent after reopen");
      await s.close();
    },
  },
];
