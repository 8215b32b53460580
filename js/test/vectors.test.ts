/**
 * The protocol's golden vectors (tests/vectors/*.json, written by scripts/gen_vectors.py and
 * described in tests/vectors/README.md), checked by the TypeScript implementation the way
 * tests/test_vectors.py checks them in Python. A vector file that is absent skips its test
 * with the reason; $P2PSYNC_GOLDEN_VECTORS points at another directory.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { contentId, pack, unpack } from "../src/codec.js";
import {
  AccountKey,
  decodeKey,
  DeviceCertificate,
  DeviceKey,
  encodeKey,
  accountFromPhrase,
  normalizePhrase,
  shortHash,
  slip10Ed25519,
  verify,
  x25519Public,
} from "../src/crypto/index.js";
import { BadCertificate, BadId, BadRecoveryPhrase, DecodeError } from "../src/errors.js";
import { elementHash, headsDigest, headsHash } from "../src/hashes.js";
import { decodeRecord, FrameDecoder } from "../src/transport/framing.js";
import { Hello, SecureHandshake } from "../src/transport/handshake.js";
import { CipherState, KeyPair } from "../src/transport/noise.js";
import { hex, loadVector, untag, type Tagged, unhex } from "./helpers.js";
import { ReadKey } from "../src/crypto/box.js";
import { BadSpaceHeader, SpaceHeader } from "../src/replica/header.js";
import { buildChange, FORMAT_VERSION, LEGACY_VERSION, verifyChange } from "../src/replica/change.js";
import { ObjectTree } from "../src/replica/tree.js";
import { mnemonicToSeedSync } from "@scure/bip39";




test("codec.json: every encoding reproduces and decodes back; every refusal is refused", (t) => {
  const v = loadVector<{ encode: { value: Tagged; hex: string }[]; refuse: { why: string; hex: string }[] }>(t, "codec");
  if (v === undefined) return;
  for (const e of v.encode) {
    const value = untag(e.value);
    assert.equal(hex(pack(value)), e.hex, JSON.stringify(e.value).slice(0, 80));
    assert.deepEqual(unpack(unhex(e.hex)), value);
  }
  for (const r of v.refuse) assert.throws(() => unpack(unhex(r.hex)), DecodeError, r.why);
});

test("ids.json: key ids, content ids, heads hashes, element hash, bad ids", (t) => {
  interface Ids {
    key_ids: { kind: string; public: string; id: string }[];
    content_ids: { bytes: string; id: string; printable: string }[];
    heads: { heads: string[]; heads_hash: string; heads_digest: string };
    element: { object_id: string; heads_hash: string; element_hash: string };
    bad_ids: { kind: string; id: string; why: string }[];
  }
  const v = loadVector<Ids>(t, "ids");
  if (v === undefined) return;
  for (const k of v.key_ids) {
    assert.equal(encodeKey(k.kind, unhex(k.public)), k.id);
    assert.equal(hex(decodeKey(k.kind, k.id)), k.public);
  }
  for (const c of v.content_ids) {
    assert.equal(hex(contentId(unhex(c.bytes))), c.id);
    assert.equal(shortHash(unhex(c.id)), c.printable);
  }
  const heads = v.heads.heads.map(unhex);
  assert.equal(hex(headsHash(heads)), v.heads.heads_hash);
  assert.equal(hex(headsDigest(heads)), v.heads.heads_digest);
  assert.equal(hex(elementHash(unhex(v.element.object_id), unhex(v.element.heads_hash))), v.element.element_hash);
  for (const b of v.bad_ids) assert.throws(() => decodeKey(b.kind, b.id), BadId, b.why);
});

test("keys.json: phrase → BIP39 seed → SLIP-0010 accounts, bad phrases, device key, signature", (t) => {
  interface Keys {
    phrases: { phrase: string; normalized: string; bip39_seed: string; accounts: { index: number; seed: string; public: string; id: string; x25519_private: string; x25519_public: string }[] }[];
    bad_phrases: { phrase: string; why: string }[];
    device: { seed: string; public: string; id: string; x25519_private: string; x25519_public: string };
    signature: { key_seed: string; public: string; domain: string; data: string; signed_message: string; signature: string };
  }
  const v = loadVector<Keys>(t, "keys");
  if (v === undefined) return;
  for (const p of v.phrases) {
    assert.equal(normalizePhrase(p.phrase), p.normalized);
    const seed = mnemonicToSeedSync(p.normalized, "");
    assert.equal(hex(seed), p.bip39_seed);
    for (const a of p.accounts) {
      const k = accountFromPhrase(p.phrase, a.index);
      assert.equal(hex(slip10Ed25519(seed, [44, 7337, a.index])), a.seed);
      assert.equal(hex(k.seed), a.seed);
      assert.equal(hex(k.public), a.public);
      assert.equal(k.id, a.id);
      assert.equal(hex(k.x25519Private()), a.x25519_private);
      assert.equal(hex(x25519Public(k.public)), a.x25519_public);
    }
  }
  for (const b of v.bad_phrases) assert.throws(() => normalizePhrase(b.phrase), BadRecoveryPhrase, b.why);
  const d = new DeviceKey(unhex(v.device.seed));
  assert.equal(hex(d.public), v.device.public);
  assert.equal(d.id, v.device.id);
  assert.equal(hex(d.x25519Private()), v.device.x25519_private);
  assert.equal(hex(x25519Public(d.public)), v.device.x25519_public);
  const s = v.signature;
  const key = new AccountKey(unhex(s.key_seed));
  assert.equal(hex(key.public), s.public);
  assert.equal(hex(key.sign(s.domain, unhex(s.data))), s.signature);
  verify(unhex(s.public), s.domain, unhex(s.data), unhex(s.signature));
  assert.equal(hex(new TextEncoder().encode(`p2psync/${s.domain}\0`)) + s.data, s.signed_message);
});

test("certificates.json: valid ones verify and re-issue to the same bytes; refusals fail", (t) => {
  interface Certs {
    now: number;
    valid: { account_seed: string; account: string; device_seed: string; device: string; issued_at: number; expires_at: number; body: string; raw: string; id: string; account_id: string; peer_id: string }[];
    refuse: { why: string; raw: string; now?: number }[];
  }
  const v = loadVector<Certs>(t, "certificates");
  if (v === undefined) return;
  for (const c of v.valid) {
    const cert = DeviceCertificate.verify(unhex(c.raw), v.now);
    assert.equal(hex(cert.account), c.account);
    assert.equal(hex(cert.device), c.device);
    assert.equal(cert.accountId, c.account_id);
    assert.equal(cert.peerId, c.peer_id);
    assert.equal(hex(contentId(cert.raw)), c.id);
    const again = DeviceCertificate.issue(new AccountKey(unhex(c.account_seed)), new DeviceKey(unhex(c.device_seed)), { issuedAt: c.issued_at, expiresAt: c.expires_at });
    assert.equal(hex(again.raw), c.raw);
  }
  for (const r of v.refuse) assert.throws(() => DeviceCertificate.verify(unhex(r.raw), r.now ?? v.now), BadCertificate, r.why);
});

test("handshake.json: the Noise + Hello transcript reproduces byte for byte and every record frame opens", (t) => {
  interface Side { device_seed: string; ephemeral_private: string; static_public: string; certificate: string; peer_id: string; hello: string }
  interface Hs {
    prologue: string;
    initiator: Side;
    responder: Side;
    messages: { from: string; message: string; frame: string }[];
    handshake_hash: string;
    initiator_send_key: string;
    responder_send_key: string;
    stream_secret: string;
    version: number;
    records: { from: string; what: string; record: string; frame: string }[];
  }
  const v = loadVector<Hs>(t, "handshake");
  if (v === undefined) return;
  assert.equal(hex(new TextEncoder().encode("p2psync/noise/1\0tcp")), v.prologue);
  const side = (s: Side, initiator: boolean): SecureHandshake => {
    const hello = Hello.decode(unhex(s.hello));
    const device = new DeviceKey(unhex(s.device_seed));
    assert.equal(hex(x25519Public(device.public)), s.static_public);
    return new SecureHandshake({
      initiator,
      deviceKey: device,
      certificate: DeviceCertificate.verify(unhex(s.certificate)),
      binding: new TextEncoder().encode("tcp"),
      limits: hello.limits,
      features: hello.features,
      maxVersion: hello.maxVersion,
      minVersion: hello.minVersion,
      ephemeral: KeyPair.fromPrivate(unhex(s.ephemeral_private)),
    });
  };
  const i = side(v.initiator, true);
  const r = side(v.responder, false);
  assert.equal(hex(i.hello.encode()), v.initiator.hello);
  assert.equal(hex(r.hello.encode()), v.responder.hello);
  const m1 = i.start();
  const m2 = r.receive(m1)!;
  const m3 = i.receive(m2)!;
  r.receive(m3);
  const sent = [m1, m2, m3];
  v.messages.forEach((m, k) => {
    assert.equal(hex(sent[k]!), m.message, `handshake message ${k + 1}`);
    assert.deepEqual(new FrameDecoder().feed(unhex(m.frame)), [sent[k]]);
  });
  const res = i.result!;
  assert.equal(hex(res.handshakeHash), v.handshake_hash);
  assert.equal(hex(res.streamSecret), v.stream_secret);
  assert.equal(res.version, v.version);
  assert.equal(res.certificate!.peerId, v.responder.peer_id);
  assert.equal(r.result!.certificate!.peerId, v.initiator.peer_id);
  const recvFrom = {
    initiator: new CipherState(unhex(v.initiator_send_key)),
    responder: new CipherState(unhex(v.responder_send_key)),
  };
  const sendBy = { initiator: i.result!.sendCipher, responder: r.result!.sendCipher };
  for (const rec of v.records) {
    const from = rec.from as "initiator" | "responder";
    const bodies = new FrameDecoder().feed(unhex(rec.frame));
    assert.equal(bodies.length, 1);
    const plain = recvFrom[from].decryptWithAd(new Uint8Array(0), bodies[0]!);
    assert.equal(hex(plain), rec.record, rec.what);
    decodeRecord(plain);
    // our own send cipher, in the same order, writes the same frame
    assert.equal(hex(sendBy[from].encryptWithAd(new Uint8Array(0), plain)), hex(bodies[0]!), rec.what);
  }
});

test("space_header.json: verifies against its space id and re-creates to the same bytes", (t) => {
  interface H { owner_seed: string; owner: string; created: number; seed: string; replication_key: string; space_type: string; body: string; raw: string; header_id: string; space_id: string }
  const v = loadVector<H>(t, "space_header");
  if (v === undefined) return;
  const h = SpaceHeader.verify(unhex(v.raw), v.space_id);
  assert.equal(hex(h.owner), v.owner);
  assert.equal(h.replicationKey, BigInt(v.replication_key));
  assert.equal(hex(contentId(h.raw)), v.header_id);
  const again = SpaceHeader.create(new AccountKey(unhex(v.owner_seed)), v.space_type, { created: v.created, seed: unhex(v.seed), replicationKey: BigInt(v.replication_key) });
  assert.equal(hex(again.raw), v.raw);
  assert.equal(again.spaceId, v.space_id);
  assert.throws(() => SpaceHeader.verify(unhex(v.raw), v.space_id.replace(/.$/, "0")), BadSpaceHeader);
});

test("tree.json: each change verifies and decrypts; all added in any order give the heads and replay order", (t) => {
  interface Ch { name: string; id: string; raw: string; body: string; header: string; signature: string; payload: string; nonce: string; aad: string; sealed: string; plaintext: string; fields: { version: number; space_id: string; tree_id: string | null; prev_ids: string[]; acl_head: string; read_key_id: string; snapshot: boolean; author: string; timestamp_ms: number } }
  interface Tree { space_id: string; read_key_id: string; read_key: string; authors: Record<string, { seed: string; public: string }>; tree_id: string; changes: Ch[]; legacy: Ch; heads: string[]; replay_order: string[]; refuse: { why: string; raw: string }[] }
  const v = loadVector<Tree>(t, "tree");
  if (v === undefined) return;
  const rk = new ReadKey(unhex(v.read_key));
  assert.deepEqual(v.changes.map((c) => c.fields.version), v.changes.map(() => FORMAT_VERSION));
  assert.equal(v.legacy.fields.version, LEGACY_VERSION);
  for (const c of [...v.changes, v.legacy]) {
    const ch = verifyChange(unhex(c.raw), unhex(c.id));
    assert.equal(hex(ch.header), c.header, c.name);
    assert.equal(hex(ch.body), c.body);
    assert.equal(hex(ch.signature), c.signature);
    assert.equal(hex(ch.payload), c.payload);
    assert.equal(hex(ch.payload.subarray(0, 24)), c.nonce);
    assert.equal(hex(rk.decrypt(ch.payload, unhex(c.aad))), c.sealed, c.name);
    assert.equal(hex(ch.decrypt(rk)), c.plaintext, c.name);
    const f = c.fields;
    const sealed = ch.open(rk);
    assert.equal(ch.version, f.version);
    assert.equal(sealed.snapshot, f.snapshot);
    assert.equal(sealed.timestamp, f.timestamp_ms);
    // format 2 keeps both out of the clear header; format 1 had them there
    assert.equal(ch.snapshot, f.version === LEGACY_VERSION ? f.snapshot : null);
    assert.equal(ch.timestamp, f.version === LEGACY_VERSION ? f.timestamp_ms : null);
    assert.equal(ch.spaceId, f.space_id);
    assert.equal(ch.treeId === null ? null : hex(ch.treeId), f.tree_id);
    assert.deepEqual(ch.prevIds.map(hex), f.prev_ids);
    assert.equal(hex(ch.aclHead), f.acl_head);
    assert.equal(hex(ch.readKeyId), f.read_key_id);
    assert.equal(hex(ch.author), f.author);
    // rebuilding with the same nonce reproduces the exact change (Ed25519 is deterministic)
    const author = Object.values(v.authors).find((a) => a.public === f.author)!;
    const again = buildChange(new AccountKey(unhex(author.seed)), rk, unhex(c.plaintext), {
      spaceId: f.space_id, treeId: f.tree_id === null ? null : unhex(f.tree_id), prevIds: f.prev_ids.map(unhex),
      aclHead: unhex(f.acl_head), readKeyId: unhex(f.read_key_id), snapshot: f.snapshot, timestamp: f.timestamp_ms, nonce: unhex(c.nonce),
      version: f.version,
    });
    assert.equal(hex(again.raw), c.raw, `${c.name} rebuilt`);
  }
  const root = v.changes.find((c) => c.fields.tree_id === null)!;
  assert.equal(root.id, v.tree_id);
  const others = v.changes.filter((c) => c !== root).map((c) => unhex(c.raw)).reverse(); // children first: they wait
  const tree = ObjectTree.fromRoot(v.space_id, unhex(root.raw));
  const res = tree.add(others);
  assert.equal(res.waiting.length, 0);
  assert.deepEqual(tree.heads.map(hex), v.heads);
  assert.deepEqual(tree.replayOrder().map((c) => hex(c.id)), v.replay_order);
  // a format-1 change still attaches among format-2 ones
  assert.deepEqual(tree.add([unhex(v.legacy.raw)]).attached.map((c) => hex(c.id)), [v.legacy.id]);
  for (const r of v.refuse) assert.throws(() => verifyChange(unhex(r.raw)), r.why);
});
