/**
 * The TS peer against a real Python node (test/fixtures/py_node.py) over TCP and WebSocket:
 * join by invite code, receive the Python side's document and its later edits, push our own
 * tree changes (an edit of the Python document and a new document of our own, whose payloads
 * are real Automerge changes made by Python for our actor), then be removed by the owner and
 * receive nothing new. And the approval flow: a join request the owner accepts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { unpack } from "../src/codec.js";
import { AccountKey, DeviceCertificate, DeviceKey } from "../src/crypto/index.js";
import { connectTcp } from "../src/node/tcp.js";
import type { Connection } from "../src/transport/connection.js";
import { Limits } from "../src/transport/handshake.js";
import { connectWebSocket, WS_PATH, type WebSocketConstructor } from "../src/transport/websocket.js";
import { InviteCode } from "../src/bootstrap.js";
import { PeerSync } from "../src/sync/engine.js";
import { SyncReplicas, type SyncSpace } from "../src/sync/replica.js";
import { hex, unhex, utf8 } from "./helpers.js";
import { type PyNode, startPyNode } from "./fixtures/pynode.js";

const LIMITS = new Limits(64, 16 << 20, 8 * 1024 * 1024 + 4096);

function me(): { replicas: SyncReplicas; id: { deviceKey: DeviceKey; certificate: DeviceCertificate; config: { limits: Limits } } } {
  const account = AccountKey.generate();
  const deviceKey = DeviceKey.generate();
  return {
    replicas: new SyncReplicas(account, deviceKey),
    id: { deviceKey, certificate: DeviceCertificate.issue(account, deviceKey), config: { limits: LIMITS } },
  };
}

async function dial(py: PyNode, transport: "tcp" | "ws", id: ReturnType<typeof me>["id"]): Promise<Connection> {
  if (transport === "tcp") return connectTcp("127.0.0.1", py.info.tcp, { ...id, expectedPeer: py.info.peer_id });
  return connectWebSocket(`ws://127.0.0.1:${py.info.ws}${WS_PATH}`, { ...id, expectedPeer: py.info.peer_id, WebSocket: WebSocket as unknown as WebSocketConstructor });
}

/** Every plaintext of a tree, decrypted with the keys our ACL copy gives us. */
function plaintexts(space: SyncSpace, treeId: string): Uint8Array[] {
  const tree = space.tree(unhex(treeId));
  return tree === undefined ? [] : tree.attachedChanges().map((c) => space.read(c));
}

const contains = (hay: Uint8Array, needle: string): boolean => Buffer.from(hay).includes(Buffer.from(utf8(needle)));

for (const transport of ["tcp", "ws"] as const) {
  test(`${transport}: join by invite, receive, push own changes, removal stops everything`, { timeout: 60_000 }, async () => {
    const py = await startPyNode();
    const { replicas, id } = me();
    const conn = await dial(py, transport, id);
    const sync = new PeerSync(replicas, conn);
    const running = sync.run();
    try {
      const code = InviteCode.decode(py.info.invite);
      assert.equal(code.spaceId, py.info.space_id);
      const { space, pendingApproval } = await sync.bootstrap(code.spaceId, code);
      assert.equal(pendingApproval, false);
      assert.ok(replicas.mayAccess(space.id, replicas.account.public), "our join made us a member");

      // the Python document arrives, and its content decrypts with the key our join unsealed
      const doc = py.info.doc;
      await sync.waitFor(() => plaintexts(space, doc).some((p) => contains(p, "from python")));
      const members = (await py.cmd({ cmd: "members" })).members as string[];
      assert.ok(members.includes(hex(replicas.account.public)), "the Python owner sees our join");

      // a Python edit is pushed to us
      await py.cmd({ cmd: "edit", doc, key: "k1", value: "pushed by python" });
      await sync.waitFor(() => plaintexts(space, doc).some((p) => contains(p, "pushed by python")));

      // our own change to the Python document: a real Automerge change for our actor
      const acct = hex(replicas.account.public);
      const dev = hex(replicas.device.public);
      const p1 = await py.cmd({ cmd: "payload", doc, key: "fromts", value: `hello over ${transport}`, account: acct, device: dev });
      space.createChange(unhex(doc), unhex(p1.payload as string));
      const got = (await py.cmd({ cmd: "wait_key", doc, key: "fromts" })).json as Record<string, unknown>;
      assert.equal(got.fromts, `hello over ${transport}`);
      assert.equal(got.k1, "pushed by python");

      // a new document of our own: root (empty payload) + one change
      const p2 = await py.cmd({ cmd: "payload", doc: null, key: "made", value: "in typescript", account: acct, device: dev });
      const root = space.createChange(null, unhex(p2.root as string));
      space.createChange(root.id, unhex(p2.payload as string));
      const mine = (await py.cmd({ cmd: "wait_key", doc: hex(root.id), key: "made" })).json as Record<string, unknown>;
      assert.deepEqual(mine, { made: "in typescript" });
      assert.equal(sync.strikes, 0);

      // the owner removes us: nothing new reaches us, and asking gets UNKNOWN_SPACE
      await py.cmd({ cmd: "remove", account: acct });
      await py.cmd({ cmd: "edit", doc, key: "after", value: "secret after removal" });
      const before = space.tree(unhex(doc))!.size;
      const jobs = sync.jobLog.length;
      sync.syncNow(space.id);
      await sync.waitFor(() => sync.jobLog.slice(jobs).some((j) => j.key[0] === "space" && j.error !== null));
      const failed = sync.jobLog.slice(jobs).find((j) => j.key[0] === "space")!;
      assert.match(failed.error!, /unknown_space|unknown space/);
      assert.equal(space.tree(unhex(doc))!.size, before);
      assert.ok(!plaintexts(space, doc).some((p) => contains(p, "secret after removal")));
      const pyDoc = (await py.cmd({ cmd: "get", doc })).json as Record<string, unknown>;
      assert.equal(pyDoc.after, "secret after removal", "the edit happened on the Python side");
    } finally {
      sync.close("test over");
      await running;
      await py.stop();
    }
  });
}

test("tcp: a join request waits for the owner, who accepts it; then the space syncs", { timeout: 60_000 }, async () => {
  const py = await startPyNode(["approve"]);
  const { replicas, id } = me();
  const conn = await dial(py, "tcp", id);
  const sync = new PeerSync(replicas, conn);
  const running = sync.run();
  try {
    const code = InviteCode.decode(py.info.invite);
    const { space, pendingApproval } = await sync.bootstrap(code.spaceId, code);
    assert.equal(pendingApproval, true);
    assert.ok(!replicas.mayAccess(space.id, replicas.account.public));
    assert.equal(space.trees.size, 0, "nothing but the ACL before the owner accepts");
    const acc = await py.cmd({ cmd: "wait_request" });
    assert.equal(acc.accepted, hex(replicas.account.public));
    // the owner pushes its ACCEPT; we are a member, sync the space and read the document
    await sync.waitFor(() => plaintexts(space, py.info.doc).some((p) => contains(p, "from python")));
    assert.ok(replicas.mayAccess(space.id, replicas.account.public));
    const plain = unpack(plaintexts(space, py.info.doc)[0]!);
    assert.ok(Array.isArray(plain) && plain[0] === 1, "payload is the document layer's [1, heads, items]");
  } finally {
    sync.close("test over");
    await running;
    await py.stop();
  }
});
