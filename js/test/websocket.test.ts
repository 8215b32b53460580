/**
 * The WebSocket carrier: the same Noise session, framing and streams as TCP inside binary
 * WebSocket messages. JS ↔ JS over loopback here; JS ↔ Python once the Python agent has its
 * WebSocket carrier (skipped with the reason until then).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { AccountKey, DeviceCertificate, DeviceKey } from "../src/crypto/index.js";
import { EndOfStream } from "../src/errors.js";
import { listenWebSocket } from "../src/node/ws.js";
import type { Connection } from "../src/transport/connection.js";
import { Limits } from "../src/transport/handshake.js";
import { connectWebSocket, type WebSocketConstructor, WS_PATH } from "../src/transport/websocket.js";
import { spawnPython, utf8 } from "./helpers.js";

const WS = WebSocket as unknown as WebSocketConstructor;
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

function identity(): { account: AccountKey; deviceKey: DeviceKey; certificate: DeviceCertificate } {
  const account = AccountKey.generate();
  const deviceKey = DeviceKey.generate();
  return { account, deviceKey, certificate: DeviceCertificate.issue(account, deviceKey) };
}

test("JS ↔ JS over WebSocket: handshake, streams, credit-limited bulk, close reason", async () => {
  const server = identity();
  const client = identity();
  const limits = new Limits(8, 8192, 8192);
  let resolveAccepted!: (c: Connection) => void;
  const accepted = new Promise<Connection>((r) => (resolveAccepted = r));
  const l = await listenWebSocket("127.0.0.1", 0, { ...server, config: { limits } }, (c) => {
    resolveAccepted(c);
  });
  try {
    const conn = await connectWebSocket(`ws://127.0.0.1:${l.port}/`, { ...client, expectedPeer: server.deviceKey.id, WebSocket: WS, config: { limits } });
    const sconn = await accepted;
    assert.equal(conn.peerId, server.deviceKey.id);
    assert.equal(sconn.accountId, client.account.id);
    assert.equal(conn.transport, "ws");
    const st = await conn.openStream();
    const sending = (async () => {
      for (let k = 0; k < 30; k++) await st.send(new Uint8Array(8000).fill(k));
      st.finish();
    })();
    const peer = await sconn.acceptStream();
    for (let k = 0; k < 30; k++) assert.equal((await peer.recv())[0], k);
    await assert.rejects(peer.recv(), EndOfStream);
    await sending;
    await peer.send(utf8("done"));
    assert.equal(text(await st.recv()), "done");
    sconn.close("bye");
    assert.match((await conn.waitClosed()).message, /peer closed the connection: closed locally: bye/);
  } finally {
    await l.close();
  }
});

test("interop: a Node client over WebSocket completes the handshake with a real Python WebSocket listener", async (t) => {
  const py = spawnPython("py_peer.py", ["listen", "ws"]);
  try {
    const info = await py.next();
    if ("unsupported" in info) {
      t.skip(`the Python side has no WebSocket carrier yet: ${String(info.unsupported)}`);
      return;
    }
    const me = identity();
    const conn = await connectWebSocket(`ws://127.0.0.1:${String(info.port)}${WS_PATH}`, { ...me, expectedPeer: info.peer_id as string, WebSocket: WS });
    assert.equal(conn.peerId, info.peer_id);
    assert.equal(conn.accountId, info.account_id);
    const st = await conn.openStream();
    await st.send(utf8("hello over ws"));
    assert.equal(text(await st.recv()), "py:hello over ws");
    const big = new Uint8Array(700_000).map((_, i) => (i * 7) & 0xff); // > 256 KiB: needs message chunking
    await st.send(big);
    const back = await st.recv();
    assert.deepEqual(back.subarray(3), big);
    conn.close("ws test over");
  } finally {
    await py.stop();
  }
});
