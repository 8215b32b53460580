/**
 * The TS peer as the side that holds a space: a real Python node joins it by invite code over
 * TCP (bootstrap proof, its join record through the invitee screen, head sync and full sync
 * served by our responder) and its own new document reaches us; strangers learn nothing
 * (UNKNOWN_SPACE); and a hostile or garbled peer does not crash us or stop an honest one.
 */
import assert from "node:assert/strict";
import { connect as netConnect } from "node:net";
import { test } from "node:test";
import { pack } from "../src/codec.js";
import { AccountKey, DeviceCertificate, DeviceKey } from "../src/crypto/index.js";
import { connectTcp, listenTcp, type TcpListener } from "../src/node/tcp.js";
import type { Connection, Stream } from "../src/transport/connection.js";
import { Limits } from "../src/transport/handshake.js";
import { accept, invite, InviteCode, join } from "../src/bootstrap.js";
import { Acl } from "../src/replica/acl.js";
import { buildRecord, Kind, Role } from "../src/replica/aclRecords.js";
import { DEFAULT_CONFIG, PeerState, Responder } from "../src/sync/core.js";
import { PeerSync } from "../src/sync/engine.js";
import { JoinError } from "../src/sync/errors.js";
import { decode, encode, ErrorCode, type Message, MsgType } from "../src/sync/messages.js";
import { SyncReplicas, type SyncSpace } from "../src/sync/replica.js";
import { hex, spawnPython, utf8 } from "./helpers.js";

const LIMITS = new Limits(64, 16 << 20, 8 * 1024 * 1024 + 4096);
const EMPTY_DOC = pack([1, [], []]);

function identity(): { account: AccountKey; deviceKey: DeviceKey; certificate: DeviceCertificate; config: { limits: Limits } } {
  const account = AccountKey.generate();
  const deviceKey = DeviceKey.generate();
  return { account, deviceKey, certificate: DeviceCertificate.issue(account, deviceKey), config: { limits: LIMITS } };
}

interface Holder { replicas: SyncReplicas; space: SyncSpace; listener: TcpListener; syncs: PeerSync[]; runs: Promise<void>[]; id: ReturnType<typeof identity> }

/** A TS peer holding a space with two trees, listening on TCP. */
async function holder(strikesToClose = 100): Promise<Holder> {
  const id = identity();
  const replicas = new SyncReplicas(id.account, id.deviceKey);
  const space = replicas.createSpace();
  for (let i = 0; i < 2; i++) {
    const root = space.createChange(null, EMPTY_DOC);
    space.createChange(root.id, utf8(`tree ${i} from typescript`));
  }
  const syncs: PeerSync[] = [];
  const runs: Promise<void>[] = [];
  const listener = await listenTcp("127.0.0.1", 0, id, (conn) => {
    const s = new PeerSync(replicas, conn, { strikesToClose });
    syncs.push(s);
    runs.push(s.run());
  });
  return { replicas, space, listener, syncs, runs, id };
}

async function shutdown(h: Holder): Promise<void> {
  for (const s of h.syncs) s.close("test over");
  await Promise.all(h.runs);
  await h.listener.close();
}

test("a Python node joins a space the TS peer holds, fetches its trees, and its document reaches us", { timeout: 60_000 }, async () => {
  const h = await holder();
  try {
    const [raw, code] = invite(h.space.acl, h.id.account, Role.WRITER, { anyoneCanJoin: true });
    h.replicas.commitAcl(h.space, raw);
    const py = spawnPython("py_join.py", [code.encode(), "tcp", String(h.listener.port), "2"]);
    try {
      const joined = await py.next();
      assert.equal(joined.error, undefined, String(joined.error));
      assert.equal(joined.joined, h.space.id);
      assert.equal(joined.member, true);
      const ours = Object.fromEntries([...h.space.ldiff.items()].map(([t, hh]) => [hex(t), hex(hh)]));
      assert.deepEqual(joined.trees, ours, "same trees at the same heads");
      // its join went through our invitee screen: it is a member in our ACL copy
      assert.ok([...h.space.acl.state.members.keys()].length === 2);
      const { doc } = await py.next() as { doc: string };
      const sync = h.syncs[0]!;
      await sync.waitFor(() => h.space.tree(Buffer.from(doc, "hex"))?.size === 2);
      const plain = h.space.tree(Buffer.from(doc, "hex"))!.attachedChanges().map((c) => h.space.read(c));
      assert.ok(plain.some((p) => Buffer.from(p).includes("python member")), "its change decrypts with our key");
      assert.equal(sync.strikes, 0);
    } finally {
      await py.stop();
    }
  } finally {
    await shutdown(h);
  }
});

/** A raw client: handshake, open a stream, send raw messages, read raw answers. */
async function rawClient(h: Holder): Promise<{ conn: Connection; st: Stream; ask(raw: Uint8Array): Promise<Message> }> {
  const id = identity();
  const conn = await connectTcp("127.0.0.1", h.listener.port, { ...id, expectedPeer: h.id.deviceKey.id });
  const st = await conn.openStream();
  await conn.acceptStream(); // the TS peer's request stream (its SPACE_HELLO): not read
  return {
    conn, st,
    ask: async (raw) => {
      await st.send(raw);
      return decode(await st.recv()).message;
    },
  };
}

test("strangers learn nothing: UNKNOWN_SPACE for a space we hold and for one we do not", { timeout: 30_000 }, async () => {
  const h = await holder();
  try {
    const c = await rawClient(h);
    for (const sid of [h.space.id, "nosuchspace.1"]) {
      const answers = await Promise.all([
        c.ask(encode({ type: MsgType.HEAD_SYNC_REQUEST, spaceId: sid, threshold: 32, ranges: [] }, 7)),
        c.ask(encode({ type: MsgType.BOOTSTRAP_REQUEST, spaceId: sid, proof: null, after: null, maxObjects: 10 }, 8)),
        c.ask(encode({ type: MsgType.ACL_SYNC_REQUEST, spaceId: sid, heads: [], records: [], maxBytes: 0 }, 9)),
      ]);
      for (const m of answers) assert.deepEqual([m.type, m.type === MsgType.ERROR ? m.code : 0], [MsgType.ERROR, ErrorCode.UNKNOWN_SPACE]);
    }
    c.conn.close();
    // and a TS joiner without the invite's key cannot bootstrap either
    const id = identity();
    const r = new SyncReplicas(id.account, id.deviceKey);
    const conn = await connectTcp("127.0.0.1", h.listener.port, { ...id, expectedPeer: h.id.deviceKey.id });
    const s = new PeerSync(r, conn);
    const run = s.run();
    const [, code] = invite(h.space.acl, h.id.account, Role.READER, { anyoneCanJoin: true });
    const forged = new InviteCode(code.inviteId, new Uint8Array(32).fill(7), h.space.id);
    await assert.rejects(s.bootstrap(h.space.id, forged), JoinError);
    s.close();
    await run;
  } finally {
    await shutdown(h);
  }
});

test("TS ↔ TS: a join request, accepted by the owner, then the trees sync", { timeout: 30_000 }, async () => {
  const h = await holder();
  try {
    const [raw, code] = invite(h.space.acl, h.id.account, Role.WRITER);
    h.replicas.commitAcl(h.space, raw);
    const id = identity();
    const r = new SyncReplicas(id.account, id.deviceKey);
    const conn = await connectTcp("127.0.0.1", h.listener.port, { ...id, expectedPeer: h.id.deviceKey.id });
    const s = new PeerSync(r, conn);
    const run = s.run();
    const { space, pendingApproval } = await s.bootstrap(h.space.id, code);
    assert.equal(pendingApproval, true);
    const owner = h.syncs[0]!;
    await owner.waitFor(() => h.space.acl.state.requests.size === 1);
    const req = [...h.space.acl.state.requests.values()][0]!;
    h.replicas.commitAcl(h.space, accept(h.space.acl, h.id.account, Buffer.from(req.recordId, "hex")));
    await s.waitFor(() => space.trees.size === 2 && [...space.trees.values()].every((t) => t.size === 2));
    assert.deepEqual(space.ldiff.hash(), h.space.ldiff.hash());
    // and an edit of ours reaches the owner by push
    const tid = space.treeIds()[0]!;
    space.createChange(tid, utf8("edit from the joiner"));
    await owner.waitFor(() => h.space.tree(tid)!.size === 3);
    assert.equal(h.space.read(h.space.tree(tid)!.heads.map((x) => h.space.tree(tid)!.get(x)!)[0]!).toString(), utf8("edit from the joiner").toString());
    s.close();
    await run;
  } finally {
    await shutdown(h);
  }
});

test("an invitee may push only its own join: anything else is refused with a strike", () => {
  const owner = identity();
  const replicas = new SyncReplicas(owner.account, owner.deviceKey);
  const space = replicas.createSpace();
  const [raw, code] = invite(space.acl, owner.account, Role.WRITER, { anyoneCanJoin: true });
  replicas.commitAcl(space, raw);
  const evil = AccountKey.generate();
  const st = new PeerState(replicas, DEFAULT_CONFIG, evil.public, DeviceKey.generate().public, new Uint8Array(32));
  st.invited.set(space.id, code.inviteId);
  st.shared.add(space.id);
  const responder = new Responder(st, { pushTree: () => undefined, pushAcl: () => undefined });
  const push = (records: Uint8Array[]): ReturnType<Responder["aclUpdate"]> => {
    const m = decode(encode({ type: MsgType.ACL_HEAD_UPDATE, spaceId: space.id, heads: [], records })).message;
    assert.equal(m.type, MsgType.ACL_HEAD_UPDATE);
    return responder.aclUpdate(m, Date.now() / 1000);
  };
  const held = space.acl.size;
  // the invitee makes itself admin: signed by its own account, but not a join
  const heads = space.acl.heads.map((x) => Buffer.from(x, "hex"));
  const grab = buildRecord(evil, space.id, heads, { kind: Kind.PERMISSION_CHANGE, member: evil.public, role: Role.ADMIN });
  const refused = push([grab]);
  assert.ok(refused.some((e) => e.kind === "strike" && e.why.startsWith("ACL push refused")), JSON.stringify(refused));
  assert.equal(space.acl.size, held, "nothing admitted");
  // someone else's join relayed by the invitee: refused too
  const other = AccountKey.generate();
  const otherJoin = join(Acl.fromRecords(space.id, space.acl.export(), { me: other }), other, code);
  assert.ok(push([otherJoin]).some((e) => e.kind === "strike" && e.why.startsWith("ACL push refused")));
  // its own join passes the screen and makes it a member
  const own = join(Acl.fromRecords(space.id, space.acl.export(), { me: evil }), evil, code);
  assert.ok(!push([own]).some((e) => e.kind === "strike"));
  assert.equal(space.acl.size, held + 1);
  assert.ok(replicas.mayAccess(space.id, evil.public));
});

test("a hostile or garbled peer gets typed errors, is disconnected after its strikes, and an honest peer still syncs", { timeout: 30_000 }, async () => {
  const h = await holder(20);
  try {
    const c = await rawClient(h);
    const answers: [number, number][] = [];
    const ask = async (raw: Uint8Array): Promise<void> => {
      const m = await c.ask(raw);
      answers.push([m.type, m.type === MsgType.ERROR ? m.code : -1]);
    };
    await ask(new Uint8Array([0xc1, 0xff, 0x00]));
    await ask(pack([1, 99, 5, []]));
    await ask(pack([2, 1, 5, [new Uint8Array(32)]]));
    await ask(pack([1, 1, 5, [new Uint8Array(31)]]));
    await ask(encode({ type: MsgType.ERROR, code: ErrorCode.INTERNAL, message: "", retryAfterMs: null }, 3));
    assert.deepEqual(answers, [
      [MsgType.ERROR, ErrorCode.MALFORMED], [MsgType.ERROR, ErrorCode.UNKNOWN_MESSAGE_TYPE],
      [MsgType.ERROR, ErrorCode.UNSUPPORTED_VERSION], [MsgType.ERROR, ErrorCode.MALFORMED], [MsgType.ERROR, ErrorCode.MALFORMED],
    ]);
    // pushes for spaces it may not access: strikes, no answer; then garbage until it is dropped
    await c.st.send(encode({ type: MsgType.HEAD_UPDATE, spaceId: h.space.id, objectId: new Uint8Array(32), heads: [], changes: [new Uint8Array(10)] }));
    for (let i = 0; i < 30; i++) {
      try {
        await c.st.send(new Uint8Array([0x93, i]));
      } catch {
        break;
      }
    }
    await c.conn.waitClosed();
    const victim = h.syncs[0]!;
    assert.match(victim.lastError ?? "", /protocol violations/);
    // garbled bytes straight on the socket (no handshake): the listener survives
    await new Promise<void>((resolve) => {
      const sock = netConnect({ host: "127.0.0.1", port: h.listener.port }, () => {
        sock.write(Buffer.alloc(4096, 0x5a));
      });
      sock.on("close", () => {
        resolve();
      });
      sock.on("error", () => undefined);
    });
    // an honest TS member still syncs with the same listener
    const id = identity();
    const r = new SyncReplicas(id.account, id.deviceKey);
    const [raw, code] = invite(h.space.acl, h.id.account, Role.READER, { anyoneCanJoin: true });
    h.replicas.commitAcl(h.space, raw);
    const conn = await connectTcp("127.0.0.1", h.listener.port, { ...id, expectedPeer: h.id.deviceKey.id });
    const s = new PeerSync(r, conn);
    const run = s.run();
    const { space } = await s.bootstrap(h.space.id, code);
    await s.waitFor(() => space.ldiff.size === 2 && [...space.trees.values()].every((t) => t.size === 2));
    s.close();
    await run;
  } finally {
    await shutdown(h);
  }
});
