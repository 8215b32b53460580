/**
 * Framing, Hello handshake and streams: JS ↔ JS over TCP loopback, byte-for-byte against
 * Python's SecureHandshake under fixed keys, and JS ↔ a real Python listener/dialer over TCP.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { AccountKey, DeviceCertificate, DeviceKey } from "../src/crypto/index.js";
import { EndOfStream, FrameError, PeerCertificateInvalid, RefusedByPeer, StrangerRefused, UnexpectedPeer } from "../src/errors.js";
import { connectTcp, listenTcp, type PeerIdentity } from "../src/node/tcp.js";
import type { Connection } from "../src/transport/connection.js";
import { decodeRecord, encodeFrame, encodeRecord, FrameDecoder, RecordType } from "../src/transport/framing.js";
import { Hello, Limits, SecureHandshake } from "../src/transport/handshake.js";
import { KeyPair } from "../src/transport/noise.js";
import { hex, pythonJson, spawnPython, unhex, utf8 } from "./helpers.js";

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

function identity(config: PeerIdentity["config"] = {}): PeerIdentity & { account: AccountKey } {
  const account = AccountKey.generate();
  const deviceKey = DeviceKey.generate();
  return { account, deviceKey, certificate: DeviceCertificate.issue(account, deviceKey), config };
}

test("frame decoder: split input, oversize and garbage lengths, mid-frame EOF", () => {
  const d = new FrameDecoder();
  const f = encodeFrame(utf8("hello"));
  assert.deepEqual(d.feed(f.subarray(0, 2)), []);
  assert.deepEqual(d.feed(f.subarray(2, 7)), []);
  assert.throws(() => { d.eof(); }, FrameError);
  assert.deepEqual(d.feed(f.subarray(7)).map(text), ["hello"]);
  d.eof();
  const two = new Uint8Array([...encodeFrame(utf8("a")), ...encodeFrame(utf8("bc"))]);
  assert.deepEqual(d.feed(two).map(text), ["a", "bc"]);
  assert.throws(() => new FrameDecoder().feed(unhex("00010000")), /frame length 65536/);
  assert.throws(() => new FrameDecoder().feed(unhex("00000000")), /frame length 0/);
  const r = decodeRecord(encodeRecord(RecordType.CREDIT, 7, utf8("x")));
  assert.equal(r.type, RecordType.CREDIT);
  assert.equal(r.stream, 7);
  assert.throws(() => decodeRecord(unhex("0a00000000")), /unknown record type 10/);
  assert.throws(() => decodeRecord(unhex("00000000")), /shorter than its header/);
});

test("Hello and the whole handshake are byte-identical to Python's under fixed keys", () => {
  const seeds = { ia: "01".repeat(32), id: "02".repeat(32), ra: "03".repeat(32), rd: "04".repeat(32), ie: "05".repeat(32), re: "06".repeat(32) };
  const py = pythonJson(`
import json, sys
from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.transport.handshake import SecureHandshake, Limits
from p2psync.transport.noise import KeyPair
a = json.load(sys.stdin); h = bytes.fromhex
def side(acc, dev, eph, initiator):
    d = DeviceKey(h(dev))
    c = DeviceCertificate.issue(AccountKey(h(acc)), d, issued_at=1700000000)
    hs = SecureHandshake(initiator=initiator, device_key=d, certificate=c, binding=b"tcp",
                         limits=Limits(8, 65536, 4096), features=("x", "y"))
    hs._noise.e = KeyPair.from_private(h(eph))
    return hs
i = side(a["ia"], a["id"], a["ie"], True); r = side(a["ra"], a["rd"], a["re"], False)
m1 = i.start(); m2 = r.receive(m1); m3 = i.receive(m2); r.receive(m3)
print(json.dumps({"m": [m1.hex(), m2.hex(), m3.hex()], "hash": i.result.handshake_hash.hex(),
                  "secret": i.result.stream_secret.hex(), "features": sorted(i.result.features)}))`,
  seeds) as { m: string[]; hash: string; secret: string; features: string[] };
  const side = (acc: string, dev: string, eph: string, initiator: boolean): SecureHandshake => {
    const d = new DeviceKey(unhex(dev));
    const c = DeviceCertificate.issue(new AccountKey(unhex(acc)), d, { issuedAt: 1_700_000_000 });
    return new SecureHandshake({
      initiator, deviceKey: d, certificate: c, binding: utf8("tcp"), limits: new Limits(8, 65536, 4096),
      features: ["x", "y"], ephemeral: KeyPair.fromPrivate(unhex(eph)),
    });
  };
  const i = side(seeds.ia, seeds.id, seeds.ie, true);
  const r = side(seeds.ra, seeds.rd, seeds.re, false);
  const m1 = i.start();
  const m2 = r.receive(m1)!;
  const m3 = i.receive(m2)!;
  assert.equal(r.receive(m3), null);
  assert.deepEqual([hex(m1), hex(m2), hex(m3)], py.m);
  assert.equal(hex(i.result!.handshakeHash), py.hash);
  assert.equal(hex(i.result!.streamSecret), py.secret);
  assert.deepEqual([...i.result!.features].sort(), py.features);
  assert.equal(r.result!.certificate!.peerId, i.certificate.peerId);
  assert.throws(() => Hello.decode(utf8("garbage")), /malformed handshake payload/);
});

async function withListener<T>(
  server: PeerIdentity,
  fn: (port: number, accepted: Promise<Connection>) => Promise<T>,
): Promise<T> {
  let resolveAccepted!: (c: Connection) => void;
  const accepted = new Promise<Connection>((r) => (resolveAccepted = r));
  const l = await listenTcp("127.0.0.1", 0, server, (c) => {
    resolveAccepted(c);
  });
  try {
    return await fn(l.port, accepted);
  } finally {
    await l.close();
  }
}

test("JS ↔ JS over TCP: handshake, identities, messages both ways, FIN, large messages under credit", async () => {
  const small = new Limits(16, 4096, 4096);
  const server = identity({ limits: small });
  const client = identity({ limits: small });
  await withListener(server, async (port, accepted) => {
    const conn = await connectTcp("127.0.0.1", port, { ...client, expectedPeer: server.deviceKey.id });
    const sconn = await accepted;
    assert.equal(conn.peerId, server.deviceKey.id);
    assert.equal(conn.accountId, server.account.id);
    assert.equal(sconn.peerId, client.deviceKey.id);
    const st = await conn.openStream();
    assert.equal(st.id, 4);
    // 20 messages of 4 KiB through a 4 KiB window: only works if credit flows back.
    const big = new Uint8Array(4096).fill(7);
    const sending = (async () => {
      for (let k = 0; k < 20; k++) await st.send(big);
      st.finish();
    })();
    const peer = await sconn.acceptStream();
    let got = 0;
    try {
      for (;;) {
        const m = await peer.recv();
        assert.equal(m.length, 4096);
        got += 1;
      }
    } catch (e) {
      assert.ok(e instanceof EndOfStream);
    }
    await sending;
    assert.equal(got, 20);
    await peer.send(utf8("bye"));
    peer.finish();
    assert.equal(text(await st.recv()), "bye");
    await assert.rejects(st.recv(), EndOfStream);
    conn.close("done");
    const reason = await sconn.waitClosed();
    assert.match(reason.message, /closed locally: done/);
  });
});

test("JS ↔ JS: a wrong expected peer, and a deferring listener that refuses strangers", async () => {
  const server = identity();
  await withListener(server, async (port) => {
    await assert.rejects(connectTcp("127.0.0.1", port, { ...identity(), expectedPeer: DeviceKey.generate().id }), UnexpectedPeer);
  });
  const friend = identity();
  const picky = identity({ revealCertificate: (peer) => peer.accountId === friend.account.id });
  await withListener(picky, async (port) => {
    const conn = await connectTcp("127.0.0.1", port, { ...friend, expectedPeer: picky.deviceKey.id });
    assert.equal(conn.accountId, picky.account.id); // certificate arrived with ACCEPT
    conn.close();
    await assert.rejects(connectTcp("127.0.0.1", port, { ...identity(), expectedPeer: picky.deviceKey.id }), RefusedByPeer);
  });
  assert.ok(StrangerRefused);
  assert.ok(PeerCertificateInvalid);
});

test("interop: a Node client completes the handshake with a real Python TCP listener and exchanges stream messages", async () => {
  const py = spawnPython("py_peer.py", ["listen", "tcp"]);
  try {
    const info = await py.next();
    const me = identity();
    const conn = await connectTcp("127.0.0.1", info.port as number, { ...me, expectedPeer: info.peer_id as string });
    assert.equal(conn.peerId, info.peer_id);
    assert.equal(conn.accountId, info.account_id);
    const connected = await py.next();
    assert.deepEqual(connected, { event: "connected", peer_id: me.deviceKey.id, account_id: me.account.id });
    const st = await conn.openStream();
    await st.send(utf8("hello from node"));
    assert.equal(text(await st.recv()), "py:hello from node");
    const big = new Uint8Array(300_000).map((_, i) => i & 0xff); // several records, one message
    await st.send(big);
    const back = await st.recv();
    assert.equal(back.length, big.length + 3);
    assert.deepEqual(back.subarray(3), big);
    st.finish();
    await assert.rejects(st.recv(), EndOfStream); // Python finished its side when we did
    const st2 = await conn.openStream();
    await st2.send(new Uint8Array(0));
    assert.equal(text(await st2.recv()), "py:");
    conn.close("test over");
    let closed = await py.next();
    while (closed.event === "stream-error") closed = await py.next(); // st2's reader saw the close too
    assert.equal(closed.event, "closed");
    assert.match(closed.reason as string, /closed the connection: closed locally: test over/);
  } finally {
    await py.stop();
  }
});

test("interop: a Python client completes the handshake with a Node TCP listener (reverse direction)", async () => {
  const me = identity();
  let resolveAccepted!: (c: Connection) => void;
  const accepted = new Promise<Connection>((r) => (resolveAccepted = r));
  const l = await listenTcp("127.0.0.1", 0, me, (c) => {
    resolveAccepted(c);
    void (async () => {
      const st = await c.acceptStream();
      try {
        for (;;) await st.send(utf8("js:" + text(await st.recv())));
      } catch {
        st.finish();
      }
    })();
  });
  const py = spawnPython("py_peer.py", ["dial", "tcp", String(l.port), me.deviceKey.id]);
  try {
    const result = await py.next();
    const conn = await accepted;
    assert.equal(result.reply, "js:hello from python");
    assert.equal(result.remote, me.deviceKey.id);
    assert.equal(result.remote_account, me.account.id);
    assert.equal(result.ended, true);
    assert.equal(conn.peerId, result.peer_id);
    assert.match((await conn.waitClosed()).message, /peer closed the connection: closed locally: done/);
  } finally {
    await py.stop();
    await l.close();
  }
});
