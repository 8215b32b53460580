/**
 * The storage conformance suite (src/storage/conformance.ts) on memory, files and IndexedDB
 * (fake-indexeddb here; the real browser's IndexedDB in tests/test_phone_app.py), and the file
 * log's crash behaviour: a torn or garbled last batch is ignored and cut off, a batch is
 * all-or-nothing.
 */
import "fake-indexeddb/auto";
import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { checks, item, type StorageUnderTest } from "../src/storage/conformance.js";
import { FileStorage } from "../src/storage/files.js";
import { IdbStorage } from "../src/storage/idb.js";
import { MemoryStorage } from "../src/storage/memory.js";

/** Every store this file makes lives under one temp folder, removed when the file ends. */
const tmpBase = mkdtempSync(join(tmpdir(), "p2psync-fs-"));
after(() => { rmSync(tmpBase, { recursive: true, force: true }); });

let n = 0;
const roots = new WeakMap<object, string>();
const kinds: Record<string, StorageUnderTest> = {
  memory: { fresh: () => Promise.resolve(new MemoryStorage()) },
  files: {
    fresh: async () => {
      const root = mkdtempSync(join(tmpBase, "t-"));
      const s = await FileStorage.open(root);
      roots.set(s, root);
      return s;
    },
    reopen: async (s) => {
      await s.close();
      return FileStorage.open(roots.get(s)!);
    },
  },
  indexeddb: {
    fresh: () => IdbStorage.open(`conformance-${n++}`),
    reopen: async (s) => {
      await s.close();
      return IdbStorage.open(`conformance-${n - 1}`);
    },
  },
};

for (const [kind, u] of Object.entries(kinds)) {
  describe(`storage conformance: ${kind}`, () => {
    for (const c of checks) test(c.name, () => c.run(u));
  });
}

test("files: a torn last batch is ignored, cut off before the next append, earlier batches kept", async () => {
  const root = mkdtempSync(join(tmpBase, "t-"));
  let s = await FileStorage.open(root);
  await s.addChanges("a.1", "t", [item("one"), item("two")]);
  await s.addChanges("a.1", "t", [item("three")]);
  await s.close();
  const dir = join(root, "spaces", "a%2E1", "trees");
  const log = join(dir, readdirSync(dir)[0]!);
  const whole = readFileSync(log);
  for (const cut of [1, 5, 19, 25]) {
    writeFileSync(log, whole.subarray(0, whole.length - cut)); // the second batch torn
    s = await FileStorage.open(root);
    assert.deepEqual((await s.changes("a.1", "t")).map((r) => new TextDecoder().decode(r)), ["one", "two"], `cut ${cut}`);
    await s.close();
  }
  writeFileSync(log, whole);
  appendFileSync(log, Buffer.from("00000010" + "ff".repeat(40), "hex")); // garbage after good batches
  s = await FileStorage.open(root);
  await s.addChanges("a.1", "t", [item("four")]);
  await s.close();
  s = await FileStorage.open(root);
  assert.deepEqual((await s.changes("a.1", "t")).map((r) => new TextDecoder().decode(r)), ["one", "two", "three", "four"]);
});

test("files: a batch whose body was garbled (hash mismatch) is dropped whole", async () => {
  const root = mkdtempSync(join(tmpBase, "t-"));
  let s = await FileStorage.open(root);
  await s.addAclRecords("a.1", [item("r1")]);
  await s.addAclRecords("a.1", [item("r2"), item("r3")]);
  await s.close();
  const log = join(root, "spaces", "a%2E1", "acl.log");
  const data = readFileSync(log);
  data[data.length - 1] = data[data.length - 1]! ^ 0xff;
  writeFileSync(log, data);
  s = await FileStorage.open(root);
  assert.deepEqual((await s.aclRecords("a.1")).map((r) => new TextDecoder().decode(r)), ["r1"]);
});
