/**
 * The whole TS peer against a real Python node: a Repo (documents, storage) on SyncReplicas with
 * the PeerSyncDriver joins by invite over WebSocket, reads the Python document, both sides edit
 * concurrently, and they converge to identical JSON.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { AccountKey, DeviceCertificate, DeviceKey } from "../src/crypto/index.js";
import { Repo } from "../src/repo.js";
import { MemoryStorage } from "../src/storage/memory.js";
import { Limits } from "../src/transport/handshake.js";
import { connectWebSocket, WS_PATH, type WebSocketConstructor } from "../src/transport/websocket.js";
import { PeerSyncDriver } from "../src/sync/driver.js";
import { SyncReplicas } from "../src/sync/replica.js";
import { startPyNode } from "./fixtures/pynode.js";

test("Repo + PeerSyncDriver: join a Python space over WebSocket, edit concurrently, converge to identical JSON", { timeout: 60_000 }, async () => {
  const py = await startPyNode();
  const made: { replicas?: SyncReplicas; driver?: PeerSyncDriver } = {};
  const repo = await Repo.open({
    storage: new MemoryStorage(),
    windowMs: 0,
    replicas: (a: AccountKey, d: DeviceKey) => (made.replicas = new SyncReplicas(a, d)),
    sync: () => {
      const r = made.replicas!;
      made.driver = new PeerSyncDriver(r, async (carrier, host, port) => {
        if (carrier !== "ws") throw new Error(`no ${carrier} here`);
        return connectWebSocket(`ws://${host}:${port}${WS_PATH}`, {
          deviceKey: r.device, certificate: DeviceCertificate.issue(r.account, r.device), expectedPeer: null,
          WebSocket: WebSocket as unknown as WebSocketConstructor, config: { limits: new Limits(64, 16 << 20, 8 * 1024 * 1024 + 4096) },
        });
      });
      return made.driver;
    },
  });
  try {
    const space = await repo.join(py.info.invite, "from python");
    const sync = made.driver!.syncs[0]!;
    await sync.waitFor(() => space.documentIds().includes(py.info.doc));
    const doc = space.find(py.info.doc);
    await sync.waitFor(() => doc.json().title === "from python");
    // concurrent edits: neither side has seen the other's
    doc.change((x) => { x.ts = "typescript edit"; });
    await py.cmd({ cmd: "edit", doc: py.info.doc, key: "py", value: "python edit" });
    await sync.waitFor(() => doc.json().py === "python edit");
    const pyJson = (await py.cmd({ cmd: "wait_key", doc: py.info.doc, key: "ts" })).json;
    assert.deepEqual(doc.json(), pyJson, "identical JSON on both sides");
    assert.deepEqual(pyJson, { title: "from python", ts: "typescript edit", py: "python edit" });
    assert.ok(["synced", "syncing"].includes(repo.status().state));
  } finally {
    await repo.close();
    await py.stop();
  }
});
