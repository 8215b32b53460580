/**
 * The app-builder API with real sync: a Repo with the WebSocket driver (src/docs/wsDriver.ts
 * over src/sync/) joins a space held by a real Python node by its invite code, reads the
 * Python document as JSON, edits it (the edit appears on the Python side), receives a Python edit
 * through its subscription, both edit concurrently and converge to identical JSON; the status
 * goes synced. Storage is files, so a reopened Repo has it all without the network.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import WebSocket from "ws";
import { renderJson } from "../src/docs/document.js";
import { WsSyncDriver } from "../src/docs/wsDriver.js";
import { Repo } from "../src/repo.js";
import { FileStorage } from "../src/storage/files.js";
import type { WebSocketConstructor } from "../src/transport/websocket.js";
import { startPyNode } from "./fixtures/pynode.js";

/** Every store this file makes lives under one temp folder, removed when the file ends. */
const tmpBase = mkdtempSync(join(tmpdir(), "p2psync-repo-sync-"));
after(() => { rmSync(tmpBase, { recursive: true, force: true }); });

async function until(pred: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a Repo joins a Python node's space by invite, edits both ways, converges; reopens offline", { timeout: 90_000 }, async () => {
  const py = await startPyNode();
  const root = mkdtempSync(join(tmpBase, "t-"));
  const url = `ws://127.0.0.1:${String(py.info.ws)}/p2psync`;
  const driver = WsSyncDriver.factory({ urls: [url], WebSocket: WebSocket as unknown as WebSocketConstructor });
  const repo = await Repo.open({ storage: await FileStorage.open(root), ...driver, windowMs: 0 });
  let spaceId: string | undefined;
  try {
    const space = await repo.join(py.info.invite, "From Python");
    spaceId = space.id;
    assert.equal(space.id, py.info.space_id);
    assert.equal(space.role, "writer");
    await until(() => space.documentIds().includes(py.info.doc), "the Python document");
    const doc = space.find(py.info.doc);
    await until(() => doc.json().title === "from python", "its content");

    const remote: unknown[] = [];
    doc.on((json, m) => { if (m.remote) remote.push(json); });
    doc.change((d) => { d.fromjs = "hello from the repo"; });
    const got = (await py.cmd({ cmd: "wait_key", doc: py.info.doc, key: "fromjs" })).json as Record<string, unknown>;
    assert.equal(got.fromjs, "hello from the repo");

    await py.cmd({ cmd: "edit", doc: py.info.doc, key: "frompy", value: "pushed" });
    await until(() => doc.json().frompy === "pushed", "the Python edit");
    assert.ok(remote.length > 0, "the subscription saw it as remote");

    // concurrent edits of the same key and of different keys converge to one JSON
    doc.change((d) => { d.both = "js"; d.onlyjs = 1; });
    await py.cmd({ cmd: "edit", doc: py.info.doc, key: "both", value: "py" });
    await py.cmd({ cmd: "wait_key", doc: py.info.doc, key: "onlyjs" });
    // both sides hold both edits once Python's JSON equals ours (one of "js"/"py" wins, alike)
    let pyJson: unknown = null;
    const end = Date.now() + 15_000;
    while (Date.now() < end) {
      pyJson = (await py.cmd({ cmd: "get", doc: py.info.doc })).json;
      if (JSON.stringify(renderJson(pyJson)) === JSON.stringify(doc.json()) && doc.json().both !== undefined) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.deepEqual(doc.json(), renderJson(pyJson));
    await until(() => repo.status().state === "synced", "synced status");
    assert.equal(repo.status().peers[0]!.connected, true);
  } finally {
    await repo.close();
    await py.stop();
  }
  // everything synced is in files: a Repo without any peer opens it
  const again = await Repo.open({ storage: await FileStorage.open(root) });
  const d = again.space(spaceId).find(py.info.doc);
  assert.equal(d.json().fromjs, "hello from the repo");
  assert.equal(d.json().frompy, "pushed");
  assert.equal(again.spaces()[0]!.name, "From Python");
  await again.close();
});
