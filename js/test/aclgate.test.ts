/**
 * The ACL built and used from TypeScript: lowest role wins whichever of two concurrent
 * permission changes sorts last, and the ACL as the object tree's gate (changes judged at the
 * ACL head they name: strangers and pre-membership heads refused, unknown heads wait, wrong
 * read keys and heads that go back refused).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { AccountKey, ReadKey, seal, SigningKey } from "../src/crypto/index.js";
import { Acl, InvalidAclHead, UnknownReadKey, wrapAad } from "../src/replica/acl.js";
import { AccessDenied, buildRecord, InvalidAclRecord, JOIN_DOMAIN, joinProofMessage, Kind, Role } from "../src/replica/aclRecords.js";
import { buildChange } from "../src/replica/change.js";
import { contentId } from "../src/codec.js";
import { ObjectTree } from "../src/replica/tree.js";
import { hex, pythonJson, unhex, utf8 } from "./helpers.js";

const SID = "testspace.1";

/** Invite `who` with `role` (approval-required), request, accept: the full join as records. */
function join(acl: Acl, admin: AccountKey, who: AccountKey, role: Role): void {
  const ikey = SigningKey.generate();
  acl.emit(admin, { kind: Kind.INVITE, inviteKey: ikey.public, anyoneCanJoin: false, role, keys: [], expiresAt: 0 });
  const inviteId = unhex(acl.heads.at(-1)!);
  const proof = ikey.sign(JOIN_DOMAIN, joinProofMessage(SID, inviteId, who.public));
  acl.emit(who, { kind: Kind.REQUEST_JOIN, inviteId, proof });
  const requestId = unhex(acl.heads.at(-1)!);
  const ring = acl.keysOf(admin);
  const keys = acl.state.tips.map((k) => ({ ref: unhex(k), blob: seal(ring.get(k)!.key, who.public) }));
  acl.emit(admin, { kind: Kind.ACCEPT, requestId, role, keys });
  assert.equal(acl.state.role(hex(who.public)), role);
}

test("lowest role wins between concurrent permission changes, whichever sorts last", () => {
  const alice = AccountKey.generate();
  const frank = AccountKey.generate();
  const dave = AccountKey.generate();
  const acl = Acl.create(SID, alice, 1767225600);
  join(acl, alice, frank, Role.ADMIN);
  join(acl, alice, dave, Role.WRITER);
  const base = acl.export();
  const heads = acl.heads.map((x) => unhex(x));
  const seen = new Set<boolean>();
  for (let ts = 1767225700; seen.size < 2 && ts < 1767225900; ts++) {
    // Both records vary with ts, so which one sorts last (larger id) is a fair coin each time.
    const lower = buildRecord(frank, SID, heads, { kind: Kind.PERMISSION_CHANGE, member: dave.public, role: Role.READER }, ts);
    const raise = buildRecord(alice, SID, heads, { kind: Kind.PERMISSION_CHANGE, member: dave.public, role: Role.ADMIN }, ts);
    for (const order of [[lower, raise], [raise, lower]]) {
      const replica = Acl.fromRecords(SID, base);
      for (const r of order) replica.add(r);
      assert.equal(replica.state.role(hex(dave.public)), Role.READER);
      assert.equal(replica.heads.length, 2);
    }
    seen.add(hex(contentId(raise)) > hex(contentId(lower)));
  }
  assert.equal(seen.size, 2, "both replay orders of the two changes were exercised");
});

test("the ACL gates the object tree: changes are judged at the ACL head they name", () => {
  const alice = AccountKey.generate();
  const bob = AccountKey.generate();
  const acl = Acl.create(SID, alice);
  const rootHead = unhex(acl.rootId);
  const k0 = acl.keysOf(alice).get(acl.rootId)!;
  const opts = { spaceId: SID, aclHead: rootHead, readKeyId: rootHead };
  const root = buildChange(alice, k0, utf8("root"), { ...opts, treeId: null, prevIds: [] });
  const tree = ObjectTree.fromRoot(SID, root.raw, acl.gate());
  // A stranger may not write at any head.
  const stranger = buildChange(bob, k0, utf8("x"), { ...opts, treeId: root.id, prevIds: [root.id] });
  assert.throws(() => tree.add([stranger.raw]), AccessDenied);
  // Bob joins as writer; at the head that admits him he may write, at the root head not.
  join(acl, alice, bob, Role.WRITER);
  const head = unhex(acl.heads[0]!);
  const ok = buildChange(bob, k0, utf8("ok"), { ...opts, aclHead: head, treeId: root.id, prevIds: [root.id] });
  assert.equal(tree.add([ok.raw]).attached.length, 1);
  const early = buildChange(bob, k0, utf8("early"), { ...opts, treeId: root.id, prevIds: [root.id] });
  assert.throws(() => tree.add([early.raw]), AccessDenied);
  // A change may not name an ACL head earlier than its parents'.
  const back = buildChange(alice, k0, utf8("back"), { ...opts, treeId: root.id, prevIds: [ok.id] });
  assert.throws(() => tree.add([back.raw]), InvalidAclHead);
  // Not under a current read key of its head.
  const wrongKey = buildChange(bob, ReadKey.generate(), utf8("k"), { ...opts, aclHead: head, readKeyId: new Uint8Array(32).fill(9), treeId: root.id, prevIds: [ok.id] });
  assert.throws(() => tree.add([wrongKey.raw]), UnknownReadKey);
  // A change naming an ACL head this replica does not know yet waits, and attaches after.
  const rot = buildRecord(alice, SID, [head], { kind: Kind.DELETE_OBJECTS, objects: [new Uint8Array(32).fill(1)] });
  const future = new Acl(SID, acl.export()[0]!);
  for (const r of acl.export().slice(1)) future.add(r);
  future.add(rot);
  const futureHead = unhex(future.heads[0]!);
  const waits = buildChange(bob, k0, utf8("waits"), { ...opts, aclHead: futureHead, treeId: root.id, prevIds: [ok.id] });
  const r1 = tree.add([waits.raw]);
  assert.equal(r1.attached.length, 0);
  assert.equal(r1.waiting.length, 1);
  acl.add(rot);
  assert.equal(tree.add([]).attached.length, 1);
});

test("a JS-built ACL (joins, concurrent role changes, merge, remove with rotation) replays identically in Python", () => {
  const [alice, frank, bob, dave] = [AccountKey.generate(), AccountKey.generate(), AccountKey.generate(), AccountKey.generate()];
  const acl = Acl.create(SID, alice);
  join(acl, alice, frank, Role.ADMIN);
  join(acl, alice, bob, Role.WRITER);
  join(acl, alice, dave, Role.WRITER);
  const heads = acl.heads.map((x) => unhex(x));
  acl.add(buildRecord(frank, SID, heads, { kind: Kind.PERMISSION_CHANGE, member: dave.public, role: Role.READER }));
  acl.add(buildRecord(alice, SID, heads, { kind: Kind.PERMISSION_CHANGE, member: dave.public, role: Role.ADMIN }));
  acl.emit(alice, { kind: Kind.MERGE });
  const st = acl.state;
  const nk = ReadKey.generate();
  const ring = acl.keysOf(alice);
  const stay = [...st.members.keys()].filter((m) => m !== hex(frank.public)).map((m) => unhex(m));
  acl.emit(alice, { kind: Kind.REMOVE, members: [frank.public], rotation: {
    members: stay.map((m) => ({ ref: m, blob: seal(nk.key, m) })),
    invites: [],
    wraps: st.tips.map((k) => ({ ref: unhex(k), blob: nk.encrypt(ring.get(k)!.key, wrapAad(SID, unhex(k))) })),
  } });
  const js = acl.state;
  assert.equal(js.role(hex(dave.public)), Role.READER);
  assert.equal(js.members.has(hex(frank.public)), false);
  const jsKeys = Object.fromEntries([...acl.keysOf(bob)].map(([k, v]) => [k, hex(v.key)]));
  assert.equal(Object.keys(jsKeys).length, 2);
  const py = pythonJson(`
import json, sys
from p2psync.crypto.keys import AccountKey
from p2psync.replica.acl import Acl
d = json.load(sys.stdin)
bob = AccountKey(bytes.fromhex(d["bob"]))
acl = Acl.from_records(d["sid"], [bytes.fromhex(r) for r in reversed(d["raws"])], me=bob)
st = acl.state
print(json.dumps({"rejected": len(acl.rejected), "heads": [h.hex() for h in acl.heads],
  "members": {k.hex(): int(v) for k, v in st.members.items()},
  "departed": {k.hex(): v.hex() for k, v in st.departed.items()},
  "skipped": {k.hex(): v for k, v in st.skipped.items()},
  "tips": [t.hex() for t in st.tips], "current": st.current_key_id.hex(),
  "rotation_needed": st.rotation_needed,
  "keys": {k.hex(): v.key.hex() for k, v in acl.keys_of(bob).items()}}))
`, { sid: SID, bob: hex(bob.seed), raws: acl.export().map(hex) }) as Record<string, unknown>;
  assert.deepEqual(py, {
    rejected: 0, heads: acl.heads,
    members: Object.fromEntries(js.members), departed: Object.fromEntries(js.departed),
    skipped: Object.fromEntries(js.skipped), tips: js.tips, current: js.currentKeyId,
    rotation_needed: js.rotationNeeded, keys: jsKeys,
  });
});

test("records Python refuses at admission (escalations, strangers, bad rotations) JS refuses with the same error", () => {
  const py = pythonJson(`
import json
from p2psync.crypto.keys import AccountKey
from p2psync.errors import ReplicaError
from p2psync.replica.acl import Acl, Role
from p2psync.replica.acl_records import (build_record, DeleteObjects, DeleteSpace, Invite, Remove,
    Rotate, Rotation, PermissionChange, TransferOwnership, AddReplicator)
sid = "testspace.1"
alice, bob, carol = AccountKey.generate(), AccountKey.generate(), AccountKey.generate()
acl = Acl.create(sid, alice)
_, code = acl.invite(alice, Role.WRITER)
acl.request_join(bob, code)
acl.accept(alice, acl.pending_requests()[0].record_id)
st = acl.state
heads = acl.heads
good_rot = acl._rotation(alice, st, st.members)
bad = {
  "writer invites as admin": build_record(bob, sid, heads, Invite(bytes(32), False, Role.ADMIN, ())),
  "writer removes the owner": build_record(bob, sid, heads, Remove((alice.public,), acl._rotation(bob, st, [bob.public]))),
  "rotation leaves out a member": build_record(alice, sid, heads, Rotate(Rotation(good_rot.members[:1], (), good_rot.wraps))),
  "writer deletes the space": build_record(bob, sid, heads, DeleteSpace()),
  "stranger deletes objects": build_record(carol, sid, heads, DeleteObjects((bytes(32),))),
  "writer makes himself admin": build_record(bob, sid, heads, PermissionChange(bob.public, Role.ADMIN)),
  "admin-less transfer": build_record(bob, sid, heads, TransferOwnership(bob.public)),
  "writer adds a replicator": build_record(bob, sid, heads, AddReplicator(carol.public)),
}
out = {}
for why, raw in bad.items():
    try:
        Acl.from_records(sid, acl.export()).add(raw)
        out[why] = [raw.hex(), "accepted"]
    except ReplicaError as e:
        out[why] = [raw.hex(), type(e).__name__]
print(json.dumps({"raws": [r.hex() for r in acl.export()], "bad": out}))
`) as { raws: string[]; bad: Record<string, [string, string]> };
  const acl = Acl.fromRecords(SID, py.raws.map(unhex));
  assert.equal(acl.rejected.size, 0);
  const before = acl.state;
  for (const [why, [raw, err]] of Object.entries(py.bad)) {
    assert.notEqual(err, "accepted", why);
    const want = err === "AccessDenied" ? AccessDenied : InvalidAclRecord;
    assert.throws(() => acl.add(unhex(raw)), want, why);
    assert.equal(acl.state, before, `${why}: state unchanged`);
  }
  assert.equal(acl.size, py.raws.length);
});
