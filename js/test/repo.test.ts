/**
 * The app-builder API (src/repo.ts) over memory sync (test/memoryHub.ts) and real storage:
 * two devices converge after concurrent offline edits, subscriptions see remote changes, status
 * follows the driver, and a Repo reopened from files has its spaces, names and documents back.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import * as A from "@automerge/automerge";
import { newRecoveryPhrase } from "../src/crypto/keys.js";
import { Repo, type SyncStatus } from "../src/repo.js";
import { FileStorage } from "../src/storage/files.js";
import { MemoryStorage } from "../src/storage/memory.js";
import { MemoryHub } from "./memoryHub.js";

/** Every store this file makes lives under one temp folder, removed when the file ends. */
const tmpBase = mkdtempSync(join(tmpdir(), "p2psync-repo-"));
after(() => { rmSync(tmpBase, { recursive: true, force: true }); });

interface List { title: string; items: string[]; note: string }

test("two devices of one account: join, concurrent offline edits, converge; subscriptions and status follow", async () => {
  const hub = new MemoryHub();
  const phrase = newRecoveryPhrase();
  const a = await Repo.open({ storage: new MemoryStorage(), phrase, sync: (r) => hub.driver(r), windowMs: 0 });
  const b = await Repo.open({ storage: new MemoryStorage(), phrase, sync: (r) => hub.driver(r), windowMs: 0 });
  assert.equal(a.accountId, b.accountId);
  assert.notEqual(a.deviceId, b.deviceId);
  const sa = await a.createSpace("Shopping");
  const da = sa.create<List>((d) => { d.title = "week"; d.items = ["milk"]; d.note = "hello"; });
  const sb = await b.join(sa.id, "Shopping on B");
  assert.deepEqual(sb.documentIds(), [da.id]);
  const db = sb.find<List>(da.id);
  assert.deepEqual(db.json(), { title: "week", items: ["milk"], note: "hello" });
  const seen: { json: List; remote: boolean }[] = [];
  db.on((json, m) => seen.push({ json, remote: m.remote }));
  const states: SyncStatus["state"][] = [];
  b.onStatus((s) => states.push(s.state));

  hub.setOnline(false);
  da.change((d) => { d.items.push("eggs"); A.splice(d, ["note"], 0, 0, "A:"); });
  db.change((d) => { d.items.unshift("bread"); d.title = "this week"; A.splice(d, ["note"], 5, 0, "!"); });
  assert.notDeepEqual(da.json(), db.json());
  hub.setOnline(true);
  assert.deepEqual(da.json(), db.json());
  assert.deepEqual(da.json(), { title: "this week", items: ["bread", "milk", "eggs"], note: "A:hello!" });
  assert.ok(seen.some((s) => s.remote && s.json.items.includes("eggs")), "B's subscriber saw A's edit as remote");
  assert.ok(seen.some((s) => !s.remote), "and its own edit as local");
  assert.deepEqual(states.filter((s, i) => s !== states[i - 1]), ["offline", "synced"]);
  assert.equal(b.spaces()[0]!.name, "Shopping on B");
  assert.equal(b.spaces()[0]!.role, "owner");
});

test("a Repo reopened from files has its identity, spaces, names and documents; edits continue", async () => {
  const root = mkdtempSync(join(tmpBase, "t-"));
  const r1 = await Repo.open({ storage: await FileStorage.open(root) });
  const s = await r1.createSpace("Notes");
  const d = s.create<{ text: string; n: number }>((x) => { x.text = "draft"; x.n = 1; });
  d.change((x) => { x.n = 2; });
  const id = r1.accountId;
  await r1.close();
  const r2 = await Repo.open({ storage: await FileStorage.open(root) });
  assert.equal(r2.accountId, id);
  assert.deepEqual(r2.spaces().map((x) => [x.name, x.documents]), [["Notes", 1]]);
  const d2 = r2.space(s.id).find<{ text: string; n: number }>(d.id);
  assert.deepEqual(d2.json(), { text: "draft", n: 2 });
  d2.change((x) => { A.splice(x, ["text"], 5, 0, "s"); });
  await r2.close();
  const r3 = await Repo.open({ storage: await FileStorage.open(root) });
  assert.deepEqual(r3.space(s.id).find(d.id).json(), { text: "drafts", n: 2 });
  await r3.close();
});

test("a listener that re-subscribes while being notified (what a re-rendering screen does) is called once", async () => {
  const repo = await Repo.open({ storage: new MemoryStorage(), windowMs: 0 });
  const space = await repo.createSpace();
  let calls = 0;
  let off = (): void => undefined;
  const listen = (): void => {
    off = space.on(() => {
      calls++;
      off();
      listen();
    });
  };
  listen();
  space.create((d: Record<string, unknown>) => { d.x = 1; });
  assert.equal(calls, 1);
  const doc = space.find(space.documentIds()[0]!);
  let docCalls = 0;
  let offDoc = (): void => undefined;
  const listenDoc = (): void => { offDoc = doc.on(() => { docCalls++; offDoc(); listenDoc(); }); };
  listenDoc();
  doc.change((d) => { d.y = 2; });
  assert.equal(docCalls, 1);
});
