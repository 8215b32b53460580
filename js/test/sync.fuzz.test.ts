/**
 * Garbled input never escapes the sans-IO core: mutated, truncated and random messages (from the
 * golden vectors and from a live space) fed to `decode` raise only typed errors, and fed to
 * `SyncCore.onRequest` never throw, never report an internal error, and get only well-formed
 * replies. Deterministic (seeded), so a failure reproduces.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { AccountKey, DeviceKey } from "../src/crypto/index.js";
import { P2PSyncError } from "../src/errors.js";
import { invite } from "../src/bootstrap.js";
import { Role } from "../src/replica/aclRecords.js";
import { Ingest, SyncCore } from "../src/sync/core.js";
import { decode, encode, MsgType } from "../src/sync/messages.js";
import { SyncReplicas } from "../src/sync/replica.js";
import { goldenVectorsDir, unhex, utf8 } from "./helpers.js";

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

test("mutated, truncated and random messages: typed errors from decode, no throw from SyncCore", () => {
  const account = AccountKey.generate();
  const replicas = new SyncReplicas(account, DeviceKey.generate());
  const space = replicas.createSpace();
  const root = space.createChange(null, utf8("root"));
  space.createChange(root.id, utf8("child"));
  replicas.commitAcl(space, invite(space.acl, account, Role.WRITER, { anyoneCanJoin: true })[0]);
  const peer = AccountKey.generate();
  const core = new SyncCore(replicas, { pushTree: () => undefined, pushAcl: () => undefined }, peer.public, DeviceKey.generate().public, new Uint8Array(32));
  core.start();
  const seeds: Uint8Array[] = [
    encode({ type: MsgType.HEAD_UPDATE, spaceId: space.id, objectId: root.id, heads: space.heads(root.id), changes: space.changesFor(root.id, []) }),
    encode({ type: MsgType.FULL_SYNC_REQUEST, spaceId: space.id, objectId: root.id, heads: [], snapshotPath: [], changes: space.changesFor(root.id, []), maxBytes: 0, fromSnapshot: false }, 3),
    encode({ type: MsgType.ACL_HEAD_UPDATE, spaceId: space.id, heads: [], records: space.acl.export() }),
    encode({ type: MsgType.ACL_SYNC_REQUEST, spaceId: space.id, heads: [], records: space.acl.export(), maxBytes: 100 }, 4),
    encode({ type: MsgType.HEAD_SYNC_REQUEST, spaceId: space.id, threshold: 32, ranges: [{ bits: 0, prefix: 0n, hash: new Uint8Array(32), count: 0 }] }, 5),
    encode({ type: MsgType.BOOTSTRAP_REQUEST, spaceId: space.id, proof: new Uint8Array(100), after: null, maxObjects: 5 }, 6),
  ];
  const dir = goldenVectorsDir();
  const vec = dir === undefined ? undefined : join(dir, "messages.json");
  if (vec !== undefined && existsSync(vec)) {
    const v = JSON.parse(readFileSync(vec, "utf8")) as { messages: { hex: string }[] };
    seeds.push(...v.messages.map((m) => unhex(m.hex)));
  }
  const r = rng(20261203);
  let decoded = 0;
  let strikes = 0;
  for (let i = 0; i < 4000; i++) {
    const base = seeds[Math.floor(r() * seeds.length)]!;
    let raw = Uint8Array.from(base);
    const how = r();
    if (how < 0.5) for (let k = 0; k < 1 + Math.floor(r() * 4); k++) raw[Math.floor(r() * raw.length)] = Math.floor(r() * 256);
    else if (how < 0.75) raw = raw.subarray(0, Math.floor(r() * raw.length));
    else if (how < 0.9) raw = Uint8Array.from({ length: Math.floor(r() * 64) }, () => Math.floor(r() * 256));
    else {
      const extra = Uint8Array.from({ length: 1 + Math.floor(r() * 8) }, () => Math.floor(r() * 256));
      const out = new Uint8Array(raw.length + extra.length);
      out.set(raw);
      out.set(extra, raw.length);
      raw = out;
    }
    try {
      decode(raw);
      decoded++;
    } catch (exc) {
      assert.ok(exc instanceof P2PSyncError, `untyped ${String(exc)} for ${Buffer.from(raw).toString("hex").slice(0, 80)}`);
    }
    const res = core.onRequest(raw, Date.now() / 1000);
    assert.equal(core.internalError, null, `internal error on ${Buffer.from(raw).toString("hex").slice(0, 120)}`);
    for (const [m, rid] of res.replies) decode(encode(m, rid));
    const later = [...(res.ingest?.run() ?? []), ...(res.after?.().effects ?? [])];
    strikes += [...res.effects, ...later].filter((e) => e.kind === "strike").length;
  }
  assert.ok(decoded > 100, `only ${decoded} mutants decoded: the fuzz does not reach the handlers`);
  assert.ok(strikes > 100, `${strikes} strikes`);
});

test("a batch is taken in a chunk per step: orphans dropped and reported, the first refused chunk ends it", () => {
  const account = AccountKey.generate();
  const replicas = new SyncReplicas(account, DeviceKey.generate());
  const space = replicas.createSpace();
  const root = space.createChange(null, utf8("root"));
  for (let i = 0; i < 20; i++) space.createChange(root.id, utf8(`c${i}`));
  const raws = space.changesFor(root.id, []);
  const other = new SyncReplicas(account, DeviceKey.generate()).adopt(space.id, space.header.raw, space.acl.export());
  const ing = new Ingest(other, root.id, raws.slice(0, 15), null, 4);
  let steps = 0;
  while (!ing.done) {
    assert.deepEqual(ing.step(), []);
    steps++;
    assert.equal(other.tree(root.id)!.size, Math.min(15, 4 * steps), "one chunk per step");
  }
  assert.equal(steps, 4);
  assert.equal(ing.missing, false);
  // an orphan (its parent is not sent) is dropped and reported
  const orphan = new Ingest(other, root.id, raws.slice(16), null, 4);
  orphan.run();
  assert.equal(orphan.missing, true);
  assert.equal(other.tree(root.id)!.size, 15);
  // a chunk with a forged change ends the batch with one strike
  const bad = Uint8Array.from(raws[15]!);
  bad[bad.length - 1]! ^= 1;
  const refused = new Ingest(other, root.id, [bad, raws[16]!, raws[17]!], null, 1);
  const effects = refused.run();
  assert.equal(effects.filter((e) => e.kind === "strike").length, 1);
  assert.ok(refused.done && refused.refused !== null);
  assert.equal(other.tree(root.id)!.size, 15);
});
