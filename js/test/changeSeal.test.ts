/**
 * Change format 2 (issue 20 item 6): the author's claimed time and the snapshot flag are sealed
 * with the content, so a replicator — which verifies and stores changes without the read key —
 * never sees them. The clear, signed header holds only what verification needs.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { pack, unpack } from "../src/codec.js";
import { AccountKey, ReadKey } from "../src/crypto/index.js";
import { buildChange, FORMAT_VERSION, LEGACY_VERSION, verifyChange } from "../src/replica/change.js";
import { hex, pythonJson, unhex } from "./helpers.js";

const TS = 0x0123_4567_89ab; // 1 250 999 896 491 ms: its msgpack form is 9 distinctive bytes
const contains = (hay: Uint8Array, needle: Uint8Array): boolean => Buffer.from(hay).indexOf(Buffer.from(needle)) >= 0;

test("the clear header of a format-2 change holds no timestamp and no snapshot flag", () => {
  const author = AccountKey.generate();
  const rk = ReadKey.generate();
  const acl = new Uint8Array(32).fill(3);
  const opts = { spaceId: "s.1", treeId: new Uint8Array(32).fill(5), prevIds: [new Uint8Array(32).fill(4)], aclHead: acl, readKeyId: acl };
  const a = buildChange(author, rk, new Uint8Array([1]), { ...opts, timestamp: TS, snapshot: true });
  const b = buildChange(author, rk, new Uint8Array([1]), { ...opts, timestamp: 7, snapshot: false });
  assert.equal(a.version, FORMAT_VERSION);
  // the same change at another time and without the flag has the very same clear header
  assert.equal(hex(a.header), hex(b.header));
  assert.equal((unpack(a.header) as unknown[]).length, 7);
  assert.ok(!contains(a.raw, pack(TS)), "timestamp bytes visible in the signed envelope");
  assert.equal(a.timestamp, null);
  assert.equal(a.snapshot, null);
  const sealed = a.open(rk);
  assert.deepEqual([sealed.timestamp, sealed.snapshot, hex(sealed.plaintext)], [TS, true, "01"]);
  // control: the legacy format did show it, so the byte search above can find it
  const old = buildChange(author, rk, new Uint8Array([1]), { ...opts, timestamp: TS, version: LEGACY_VERSION });
  assert.ok(contains(old.header, pack(TS)));
  assert.equal(verifyChange(old.raw).timestamp, TS);
});

test("a Python-built change seals its time too, and JS opens it", () => {
  const py = pythonJson(`
import json
from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import AccountKey
from p2psync.replica.change import build_change
k = AccountKey.generate(); rk = ReadKey.generate(); acl = bytes(32)
c = build_change(k, rk, b"x", space_id="s.1", tree_id=None, prev_ids=[], acl_head=acl, read_key_id=acl, snapshot=True, timestamp=${TS})
print(json.dumps({"rk": rk.key.hex(), "raw": c.raw.hex()}))`) as Record<string, string>;
  const ch = verifyChange(unhex(py.raw!));
  assert.ok(!contains(ch.header, pack(TS)));
  assert.equal(ch.timestamp, null);
  const sealed = ch.open(new ReadKey(unhex(py.rk!)));
  assert.deepEqual([sealed.timestamp, sealed.snapshot], [TS, true]);
});
