/**
 * Documents (src/docs/): Automerge 3.x over signed encrypted tree changes, cross-checked with
 * Python's Document in a child process (js/test/fixtures/py_doc.py) both ways: a JS-made
 * document opens in Python with the same JSON, Python's edits on top open here, a Python-made
 * document opens and is edited here; coalescing, snapshots, quarantine of content Python
 * cannot render, decrypt-before-store.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import * as A from "@automerge/automerge";
import { AccountKey, ReadKey } from "../src/crypto/index.js";
import { DecryptionFailed } from "../src/errors.js";
import { Acl } from "../src/replica/acl.js";
import { buildChange } from "../src/replica/change.js";
import { SpaceHeader } from "../src/replica/header.js";
import { ObjectTree } from "../src/replica/tree.js";
import { aclKeys, Document, increment, makeCounter } from "../src/docs/document.js";
import { actorFor, encodePayload, UnsupportedContent } from "../src/docs/payload.js";
import { hex, JS_ROOT, REPO_ROOT, unhex, utf8 } from "./helpers.js";

interface PyOut { json: unknown; new: string[]; heads: string[]; quarantined: string[]; acl?: string[]; changes?: string[] }

function pyDoc(input: Record<string, unknown>): PyOut {
  const r = spawnSync("python3", [join(JS_ROOT, "test", "fixtures", "py_doc.py")], {
    input: JSON.stringify(input),
    env: { ...process.env, PYTHONPATH: process.env.P2PSYNC_PY_ROOT ?? REPO_ROOT },
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`py_doc failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as PyOut;
}

const DEVICE = utf8("js-device-000001");

function space(): { owner: AccountKey; sid: string; acl: Acl } {
  const owner = AccountKey.generate();
  const sid = SpaceHeader.create(owner).spaceId;
  return { owner, sid, acl: Acl.create(sid, owner) };
}

interface Todo { title: string; items: { what: string; done: boolean }[]; notes: string; n: number; tags: string[] }

test("a JS-made document opens in Python with the same JSON; Python's edit on top opens here", () => {
  const { owner, sid, acl } = space();
  const made: string[] = [];
  const doc = Document.create<Todo>(sid, aclKeys(acl), acl.gate(), owner, DEVICE, { windowMs: 0, onLocalChange: (cs) => made.push(...cs.map((c) => hex(c.raw))) });
  doc.change((d) => {
    d.title = "groceries";
    d.items = [{ what: "milk", done: false }];
    d.notes = "héllo 😀";
    d.n = 3;
    d.tags = [];
  });
  doc.change((d) => {
    d.items.push({ what: "eggs", done: true });
    A.splice(d, ["notes"], 0, 0, "> ");
    d.tags.push("a", "b");
  });
  const want = { title: "groceries", items: [{ what: "milk", done: false }, { what: "eggs", done: true }], notes: "> héllo 😀", n: 3, tags: ["a", "b"] };
  assert.deepEqual(doc.toJSON(), want);
  assert.equal(made.length, 3, "root + one tree change per flushed edit");
  const py = pyDoc({
    mode: "open", space_id: sid, seed: hex(owner.seed), acl: acl.export().map(hex), changes: made,
    edit: "ed.put(ROOT, 'from_py', 'yes'); lst = doc.obj(['tags']); ed.insert(lst, 0, 'z'); ed.delete(ROOT, 'n')",
  });
  const { n: _n, ...rest } = want;
  assert.equal(_n, 3);
  assert.deepEqual(py.json, { ...rest, from_py: "yes", tags: ["z", "a", "b"] });
  assert.deepEqual(py.quarantined, []);
  assert.equal(py.new.length, 1);
  // Python's change opens here (same author account, another device: another actor)
  doc.receive(py.new.map(unhex));
  assert.deepEqual(doc.toJSON(), py.json);
  assert.deepEqual(doc.tree.heads.map(hex), py.heads);
  // and a fresh JS replica rebuilt from all changes agrees
  const all = [...made, ...py.new].map(unhex);
  const other = new Document<Todo>(ObjectTree.fromRoot(sid, all[0]!, acl.gate()), aclKeys(acl), owner, utf8("js-device-000002"));
  other.receive(all.slice(1));
  assert.deepEqual(other.toJSON(), py.json);
});

test("a Python-made document opens here, edits here (counters as per-actor maps) open in Python", () => {
  const owner = AccountKey.generate();
  const sid = SpaceHeader.create(owner).spaceId;
  const py = pyDoc({
    mode: "create", space_id: sid, seed: hex(owner.seed),
    edit: "ed.put(ROOT, 'title', 'made in python'); ed.put(ROOT, 'body', Text('abc')); ed.put(ROOT, 'list', [1, 2, {'k': None}]); ed.make_counter(ROOT, 'hits', 2)",
  });
  const acl = Acl.fromRecords(sid, py.acl!.map(unhex), { me: owner });
  const raws = py.changes!.map(unhex);
  const doc = new Document<Record<string, unknown>>(ObjectTree.fromRoot(sid, raws[0]!, acl.gate()), aclKeys(acl), owner, DEVICE, { windowMs: 0 });
  doc.receive(raws.slice(1));
  assert.deepEqual(doc.toJSON(), py.json);
  assert.deepEqual(doc.toJSON(), { title: "made in python", body: "abc", list: [1, 2, { k: null }], hits: 2 });
  const made: Uint8Array[] = [];
  doc.onLocalChange = (cs) => made.push(...cs.map((c) => c.raw));
  doc.change((d) => {
    increment(d, "hits", doc.actor, 5);
    A.splice(d, ["body"], 1, 1, "XY");
    (d.list as unknown[]).push("js");
    makeCounter(d, "fresh", doc.actor, 7);
  });
  const want = { title: "made in python", body: "aXYc", list: [1, 2, { k: null }, "js"], hits: 7, fresh: 7 };
  assert.deepEqual(doc.toJSON(), want);
  const back = pyDoc({ mode: "open", space_id: sid, seed: hex(owner.seed), acl: acl.export().map(hex), changes: [...raws, ...made].map(hex) });
  assert.deepEqual(back.json, want);
  assert.deepEqual(back.heads, doc.tree.heads.map(hex));
});

test("the actor is BLAKE2b-128(author ‖ device, person p2psync-actor) like Python", () => {
  const owner = AccountKey.generate();
  const py = spawnSync("python3", ["-c", `import sys; from p2psync.replica.document import actor_for; print(actor_for(bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])).hex())`, hex(owner.public), hex(DEVICE)], {
    env: { ...process.env, PYTHONPATH: process.env.P2PSYNC_PY_ROOT ?? REPO_ROOT }, encoding: "utf8",
  });
  assert.equal(py.stdout.trim(), hex(actorFor(owner.public, DEVICE)));
});

test("edits coalesce into one tree change per window; poll flushes when it closes", () => {
  const { owner, sid, acl } = space();
  const doc = Document.create<{ a?: number; b?: number }>(sid, aclKeys(acl), acl.gate(), owner, DEVICE, { windowMs: 50 });
  doc.change((d) => { d.a = 1; }, 1000);
  doc.change((d) => { d.b = 2; }, 1020);
  assert.equal(doc.pendingCount, 2);
  assert.equal(doc.dueAt, 1050);
  assert.deepEqual(doc.poll(1049), []);
  const made = doc.poll(1050);
  assert.equal(made.length, 1);
  assert.equal(doc.tree.size, 2);
  assert.equal(doc.pendingCount, 0);
  assert.deepEqual(doc.toJSON(), { a: 1, b: 2 });
});

test("a snapshot is used to open and agrees with a full replay; past heads give past JSON", () => {
  const { owner, sid, acl } = space();
  const raws: Uint8Array[] = [];
  const doc = Document.create<{ n?: number; s?: string }>(sid, aclKeys(acl), acl.gate(), owner, DEVICE, { windowMs: 0, onLocalChange: (cs) => raws.push(...cs.map((c) => c.raw)) });
  doc.change((d) => { d.n = 1; });
  const early = doc.tree.heads;
  doc.change((d) => { d.n = 2; });
  assert.ok(doc.snapshot());
  doc.change((d) => { d.s = "after"; });
  const open = (useSnapshots: boolean): Document<{ n?: number; s?: string }> => {
    const d = new Document<{ n?: number; s?: string }>(ObjectTree.fromRoot(sid, raws[0]!, acl.gate()), aclKeys(acl), owner, DEVICE, { useSnapshots });
    d.receive(raws.slice(1));
    return d;
  };
  const snap = open(true);
  const full = open(false);
  assert.deepEqual(snap.toJSON(), { n: 2, s: "after" });
  assert.deepEqual(full.toJSON(), snap.toJSON());
  assert.notEqual(snap.loadedSnapshot, null);
  assert.equal(full.loadedSnapshot, null);
  assert.deepEqual(full.toJSON(early), { n: 1 });
});

test("native counters are refused locally (nothing signed) and quarantined when a peer writes them, like Python", () => {
  const { owner, sid, acl } = space();
  const raws: Uint8Array[] = [];
  const doc = Document.create(sid, aclKeys(acl), acl.gate(), owner, DEVICE, { windowMs: 0, onLocalChange: (cs) => raws.push(...cs.map((c) => c.raw)) });
  doc.change((d) => { d.ok = 1; });
  assert.throws(() => { doc.change((d) => { d.c = new A.Counter(1); }); }, UnsupportedContent);
  assert.equal(doc.tree.size, 2, "nothing signed");
  assert.deepEqual(doc.toJSON(), { ok: 1 });
  // a foreign writer signs a native counter: left out here and in Python alike
  const keys = aclKeys(acl);
  const pos = keys.writePosition(owner.public);
  let evil = A.change(A.init<Record<string, unknown>>(), (d) => { d.c = new A.Counter(5); });
  evil = A.change(evil, (d) => { d.after = "x"; });
  const items = A.getAllChanges(evil);
  const bad = buildChange(owner, keys.readKey(pos.readKeyId)!, encodePayload([], [items[0]!]), { spaceId: sid, treeId: doc.id, prevIds: doc.tree.heads, ...pos });
  doc.receive([bad.raw]);
  assert.deepEqual(doc.toJSON(), { ok: 1 });
  assert.ok(doc.quarantined.has(hex(bad.id)));
  const py = pyDoc({ mode: "open", space_id: sid, seed: hex(owner.seed), acl: acl.export().map(hex), changes: [...raws, bad.raw].map(hex) });
  assert.deepEqual(py.json, { ok: 1 });
  assert.deepEqual(py.quarantined, [hex(bad.id)]);
});

test("a payload that does not decrypt rejects the batch before the tree takes anything", () => {
  const { owner, sid, acl } = space();
  const doc = Document.create(sid, aclKeys(acl), acl.gate(), owner, DEVICE, { windowMs: 0 });
  const pos = aclKeys(acl).writePosition(owner.public);
  const good = buildChange(owner, aclKeys(acl).readKey(pos.readKeyId)!, encodePayload([], []), { spaceId: sid, treeId: doc.id, prevIds: doc.tree.heads, ...pos });
  const wrong = buildChange(owner, ReadKey.generate(), encodePayload([], []), { spaceId: sid, treeId: doc.id, prevIds: [good.id], ...pos });
  assert.throws(() => doc.receive([good.raw, wrong.raw]), DecryptionFailed);
  assert.equal(doc.tree.size, 1);
  doc.receive([good.raw]);
  assert.equal(doc.tree.size, 2);
});
