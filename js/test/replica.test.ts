/**
 * Space headers and tree changes built by the TypeScript side are accepted by the Python
 * implementation (verify, decrypt, tree heads), and the other way round.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { AccountKey, ReadKey } from "../src/crypto/index.js";
import { DecryptionFailed } from "../src/errors.js";
import { buildChange, verifyChange } from "../src/replica/change.js";
import { SpaceHeader } from "../src/replica/header.js";
import { ObjectTree, WrongTree } from "../src/replica/tree.js";
import { hex, pythonJson, unhex, utf8 } from "./helpers.js";

test("a JS-built header and tree are verified, decrypted and replayed by Python identically", () => {
  const owner = AccountKey.generate();
  const header = SpaceHeader.create(owner);
  const rk = ReadKey.generate();
  const aclHead = new Uint8Array(32).fill(1);
  const opts = { spaceId: header.spaceId, aclHead, readKeyId: aclHead };
  const root = buildChange(owner, rk, utf8("root"), { ...opts, treeId: null, prevIds: [] });
  const a = buildChange(owner, rk, utf8("a"), { ...opts, treeId: root.id, prevIds: [root.id] });
  const b = buildChange(owner, rk, utf8("b"), { ...opts, treeId: root.id, prevIds: [root.id] });
  const m = buildChange(owner, rk, utf8("merge"), { ...opts, treeId: root.id, prevIds: [b.id, a.id], snapshot: true });
  const tree = ObjectTree.fromRoot(header.spaceId, root.raw);
  tree.add([m.raw, a.raw, b.raw]);
  const py = pythonJson(`
import json, sys
from p2psync.crypto.box import ReadKey
from p2psync.replica.change import verify_change
from p2psync.replica.header import SpaceHeader
a = json.load(sys.stdin)
h = SpaceHeader.verify(bytes.fromhex(a["header"]), a["space_id"])
rk = ReadKey(bytes.fromhex(a["rk"]))
out = []
for raw in a["changes"]:
    c = verify_change(bytes.fromhex(raw))
    out.append({"id": c.id.hex(), "pt": c.decrypt(rk).decode(), "prev": [p.hex() for p in c.prev_ids], "snap": c.open(rk).snapshot, "clear_snap": c.snapshot, "ts": c.open(rk).timestamp})
ids = {o["id"] for o in out}
heads = sorted(ids - {p for o in out for p in o["prev"]})
print(json.dumps({"owner": h.owner_id, "changes": out, "heads": heads}))`,
  { header: hex(header.raw), space_id: header.spaceId, rk: hex(rk.key), changes: [root, a, b, m].map((c) => hex(c.raw)) }) as {
    owner: string; changes: { id: string; pt: string; prev: string[]; snap: boolean; clear_snap: boolean | null; ts: number }[]; heads: string[];
  };
  assert.equal(py.owner, owner.id);
  assert.deepEqual(py.changes.map((c) => c.pt), ["root", "a", "b", "merge"]);
  assert.deepEqual(py.changes.map((c) => c.id), [root, a, b, m].map((c) => hex(c.id)));
  assert.deepEqual(py.changes[3]!.prev, [hex(a.id), hex(b.id)].sort());
  assert.equal(py.changes[3]!.snap, true);
  assert.equal(py.changes[3]!.clear_snap, null); // format 2: sealed, not in the clear header
  assert.equal(py.changes[3]!.ts, m.open(rk).timestamp);
  assert.deepEqual(tree.heads.map(hex), py.heads);
});

test("Python-built changes verify and decrypt here; wrong key, moved ciphertext and foreign trees are refused", () => {
  const py = pythonJson(`
import json
from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import AccountKey
from p2psync.replica.change import build_change
k = AccountKey.generate(); rk = ReadKey.generate(); acl = bytes(32)
root = build_change(k, rk, b"py-root", space_id="s.1", tree_id=None, prev_ids=[], acl_head=acl, read_key_id=acl)
child = build_change(k, rk, b"py-child", space_id="s.1", tree_id=root.id, prev_ids=[root.id], acl_head=acl, read_key_id=acl)
other = build_change(k, rk, b"other-root", space_id="s.1", tree_id=None, prev_ids=[], acl_head=acl, read_key_id=acl)
print(json.dumps({"rk": rk.key.hex(), "root": root.raw.hex(), "child": child.raw.hex(), "other": other.raw.hex()}))`) as Record<string, string>;
  const rk = new ReadKey(unhex(py.rk!));
  const root = verifyChange(unhex(py.root!));
  const child = verifyChange(unhex(py.child!));
  assert.equal(new TextDecoder().decode(child.decrypt(rk)), "py-child");
  assert.throws(() => child.decrypt(ReadKey.generate()), DecryptionFailed);
  const tree = ObjectTree.fromRoot("s.1", root.raw);
  assert.deepEqual(tree.add([child.raw]).attached.map((c) => hex(c.id)), [hex(child.id)]);
  assert.throws(() => tree.add([unhex(py.other!)]), WrongTree);
  assert.throws(() => ObjectTree.fromRoot("s.2", root.raw), WrongTree);
});
