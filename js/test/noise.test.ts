/**
 * Noise XX against the published cacophony/snow vectors (../shared/vectors, as the Python
 * tests use them), plus the same misuse checks as tests/test_noise.py, plus a byte-for-byte
 * comparison with the Python HandshakeState under fixed keys.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { FrameError, HandshakeError } from "../src/errors.js";
import { CipherState, HandshakeState, KeyPair, PROTOCOL_NAME, Suite } from "../src/transport/noise.js";
import { hex, pythonJson, sharedVectorsDir, unhex, utf8 } from "./helpers.js";

interface Vector {
  protocol_name: string;
  init_static?: string;
  init_ephemeral: string;
  resp_static?: string;
  resp_ephemeral: string;
  init_prologue: string;
  resp_prologue: string;
  handshake_hash?: string;
  init_psks?: string[];
  resp_psks?: string[];
  messages: { payload: string; ciphertext: string }[];
}

function loadVectors(): [string, Vector][] {
  const dir = sharedVectorsDir();
  if (dir === undefined) return [];
  const files = readdirSync(dir).filter((f) => f.startsWith("noise-") && f.endsWith(".json")).sort();
  const out: [string, Vector][] = [];
  for (const f of files) {
    const doc = JSON.parse(readFileSync(join(dir, f), "utf8")) as { vectors: Vector[] };
    for (const v of doc.vectors) {
      try {
        Suite.parse(v.protocol_name);
      } catch {
        continue;
      }
      if ((v.init_psks?.length ?? 0) > 0 || (v.resp_psks?.length ?? 0) > 0) continue;
      out.push([`${f}:${v.protocol_name}`, v]);
    }
  }
  return out;
}

const VECTORS = loadVectors();
const NO_VECTORS = "no Noise vectors: ../shared/vectors/ missing and P2PSYNC_NOISE_VECTORS unset";

test("vectors present for our suite", (t) => {
  if (VECTORS.length === 0) {
    t.skip(NO_VECTORS);
    return;
  }
  assert.ok(VECTORS.some(([, v]) => v.protocol_name === PROTOCOL_NAME));
});

test("every XX/25519 vector: handshake, transport messages and handshake hash", (t) => {
  if (VECTORS.length === 0) {
    t.skip(NO_VECTORS);
    return;
  }
  let checked = 0;
  for (const [name, v] of VECTORS) {
    const suite = Suite.parse(v.protocol_name);
    const init = new HandshakeState({
      initiator: true, suite, prologue: unhex(v.init_prologue),
      static: KeyPair.fromPrivate(unhex(v.init_static!)), ephemeral: KeyPair.fromPrivate(unhex(v.init_ephemeral)),
    });
    const resp = new HandshakeState({
      initiator: false, suite, prologue: unhex(v.resp_prologue),
      static: KeyPair.fromPrivate(unhex(v.resp_static!)), ephemeral: KeyPair.fromPrivate(unhex(v.resp_ephemeral)),
    });
    assert.ok(v.messages.length > 3, `${name}: vector should include transport messages`);
    v.messages.forEach((m, i) => {
      const [sender, receiver] = i % 2 === 0 ? [init, resp] : [resp, init];
      const payload = unhex(m.payload);
      const ct = unhex(m.ciphertext);
      if (i < 3) {
        assert.equal(hex(sender.writeMessage(payload)), m.ciphertext, `${name} message ${i}`);
        assert.deepEqual(receiver.readMessage(ct), payload);
      } else {
        assert.equal(hex(sender.sendCipher!.encryptWithAd(new Uint8Array(0), payload)), m.ciphertext, `${name} message ${i}`);
        assert.deepEqual(receiver.recvCipher!.decryptWithAd(new Uint8Array(0), ct), payload);
      }
    });
    assert.deepEqual(init.handshakeHash, resp.handshakeHash);
    if (v.handshake_hash !== undefined) assert.equal(hex(init.handshakeHash), v.handshake_hash, name);
    assert.deepEqual(init.remoteStatic, resp.s.publicKey);
    assert.deepEqual(resp.remoteStatic, init.s.publicKey);
    checked += 1;
  }
  assert.ok(checked >= 8, `checked ${checked} vectors`);
});

function pair(pa = utf8("p"), pb = utf8("p")): [HandshakeState, HandshakeState] {
  return [
    new HandshakeState({ initiator: true, static: KeyPair.generate(), prologue: pa }),
    new HandshakeState({ initiator: false, static: KeyPair.generate(), prologue: pb }),
  ];
}

test("replayed and relayed handshake messages are refused", () => {
  const [i1, r1] = pair();
  r1.readMessage(i1.writeMessage());
  const m2 = r1.writeMessage(utf8("hello"));
  i1.readMessage(m2);
  const m3 = i1.writeMessage(utf8("me"));
  r1.readMessage(m3);
  assert.throws(() => r1.readMessage(m3), HandshakeError);
  const [i2, r2] = pair();
  r2.readMessage(i2.writeMessage());
  r2.writeMessage();
  assert.throws(() => r2.readMessage(m3), HandshakeError);
  const [i3] = pair();
  i3.writeMessage();
  assert.throws(() => i3.readMessage(m2), HandshakeError);
});

test("a prologue mismatch fails the handshake", () => {
  const [i, r] = pair(utf8("conn-A"), utf8("conn-B"));
  r.readMessage(i.writeMessage());
  assert.throws(() => i.readMessage(r.writeMessage()), HandshakeError);
});

test("out-of-turn and truncated messages are refused", () => {
  const [i, r] = pair();
  assert.throws(() => i.readMessage(new Uint8Array(48)), HandshakeError);
  assert.throws(() => r.writeMessage(), HandshakeError);
  assert.throws(() => r.readMessage(utf8("short")), HandshakeError);
});

test("transport nonces are strict and a failed decrypt does not advance", () => {
  const a = new CipherState(new Uint8Array(32));
  const b = new CipherState(new Uint8Array(32));
  const e = new Uint8Array(0);
  const c1 = a.encryptWithAd(e, utf8("one"));
  const c2 = a.encryptWithAd(e, utf8("two"));
  assert.throws(() => b.decryptWithAd(e, c2), FrameError);
  assert.deepEqual(b.decryptWithAd(e, c1), utf8("one"));
  assert.throws(() => b.decryptWithAd(e, c1), FrameError);
  assert.deepEqual(b.decryptWithAd(e, c2), utf8("two"));
});

test("the same keys give the same bytes as Python's HandshakeState (our suite and prologue)", () => {
  const keys = { is: "11".repeat(32), ie: "22".repeat(32), rs: "33".repeat(32), re: "44".repeat(32) };
  const prologue = hex(utf8("p2psync/noise/1\0tcp"));
  const py = pythonJson(`
import json, sys
from p2psync.transport.noise import HandshakeState, KeyPair
a = json.load(sys.stdin); h = bytes.fromhex
i = HandshakeState(initiator=True, static=KeyPair.from_private(h(a["is"])), ephemeral=KeyPair.from_private(h(a["ie"])), prologue=h(a["p"]))
r = HandshakeState(initiator=False, static=KeyPair.from_private(h(a["rs"])), ephemeral=KeyPair.from_private(h(a["re"])), prologue=h(a["p"]))
m1 = i.write_message(b""); r.read_message(m1)
m2 = r.write_message(b"resp-hello"); i.read_message(m2)
m3 = i.write_message(b"init-hello"); r.read_message(m3)
t = i.send_cipher.encrypt_with_ad(None, b"record")
print(json.dumps([m1.hex(), m2.hex(), m3.hex(), t.hex(), i.handshake_hash.hex()]))`,
  { ...keys, p: prologue }) as string[];
  const h = unhex;
  const i = new HandshakeState({ initiator: true, static: KeyPair.fromPrivate(h(keys.is)), ephemeral: KeyPair.fromPrivate(h(keys.ie)), prologue: h(prologue) });
  const r = new HandshakeState({ initiator: false, static: KeyPair.fromPrivate(h(keys.rs)), ephemeral: KeyPair.fromPrivate(h(keys.re)), prologue: h(prologue) });
  const m1 = i.writeMessage();
  r.readMessage(m1);
  const m2 = r.writeMessage(utf8("resp-hello"));
  i.readMessage(m2);
  const m3 = i.writeMessage(utf8("init-hello"));
  r.readMessage(m3);
  const t = i.sendCipher!.encryptWithAd(new Uint8Array(0), utf8("record"));
  assert.deepEqual([hex(m1), hex(m2), hex(m3), hex(t), hex(i.handshakeHash)], py);
});
