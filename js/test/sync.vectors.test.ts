/**
 * Golden vectors of the sync half (tests/vectors/messages, headsync, spacex, invites, receipts),
 * checked the way tests/test_vectors.py checks them in Python. An absent file skips its test.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type Value } from "../src/codec.js";
import { SigningKey, verify } from "../src/crypto/keys.js";
import { BadId, P2PSyncError } from "../src/errors.js";
import { joinProofMessage } from "../src/replica/aclRecords.js";
import { SpaceHeader } from "../src/replica/header.js";
import { BOOTSTRAP_DOMAIN, bootstrapMessage, InviteCode, parseProof } from "../src/bootstrap.js";
import { HeadSyncSession, LDiff } from "../src/sync/ldiff.js";
import { decode, encode, ErrorCode, errorFor, fields, MsgType } from "../src/sync/messages.js";
import { receiptBody, verifyReceipt } from "../src/sync/receipt.js";
import { headerExchangeKey, spaceToken } from "../src/sync/spacex.js";
import { hex, loadVector, untag, type Tagged, unhex } from "./helpers.js";




/** Numbers and bigints compared by value (fields() keeps range prefixes as bigint). */
function norm(v: Value): unknown {
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v;
  if (Array.isArray(v)) return v.map(norm);
  return v;
}

test("messages.json: every message decodes, re-encodes byte-for-byte; every refusal gets its error code", (t) => {
  const v = loadVector<{ messages: { type: number; name: string; request_id: number; body: Tagged; hex: string }[]; refuse: { why: string; hex: string; error: string }[] }>(t, "messages");
  if (v === undefined) return;
  for (const c of v.messages) {
    const env = decode(unhex(c.hex));
    assert.equal(env.message.type, c.type, c.name);
    assert.equal(MsgType[env.message.type], c.name);
    assert.equal(env.requestId, c.request_id);
    assert.deepEqual(norm(fields(env.message)), norm(untag(c.body)), c.name);
    assert.equal(hex(encode(env.message, env.requestId)), c.hex, c.name);
  }
  assert.ok(v.messages.length >= 18);
  for (const bad of v.refuse) {
    let err: unknown = null;
    try {
      decode(unhex(bad.hex));
    } catch (exc) {
      err = exc;
    }
    assert.ok(err instanceof P2PSyncError, `${bad.why}: not refused`);
    assert.equal(ErrorCode[errorFor(err).code], bad.error, bad.why);
  }
});

interface HsCase {
  name: string; threshold: number; divide_bits: number;
  local: Record<string, string>; remote: Record<string, string>;
  local_root: { hash: string; count: number }; remote_root: { hash: string; count: number };
  rounds: { request: string; response: string }[][];
  remote_only: string[]; local_only: string[]; changed: string[];
}

const ldiffOf = (m: Record<string, string>): LDiff => new LDiff(Object.entries(m).map(([k, x]) => [unhex(k), unhex(x)] as const));

test("headsync.json: the responder's answers are exact; the session's requests and result are exact", (t) => {
  const v = loadVector<{ cases: HsCase[] }>(t, "headsync");
  if (v === undefined) return;
  for (const c of v.cases) {
    const local = ldiffOf(c.local);
    const remote = ldiffOf(c.remote);
    assert.deepEqual([hex(local.hash()), local.size], [c.local_root.hash, c.local_root.count], c.name);
    assert.deepEqual([hex(remote.hash()), remote.size], [c.remote_root.hash, c.remote_root.count], c.name);
    for (const rnd of c.rounds) {
      for (const ex of rnd) {
        const env = decode(unhex(ex.request));
        assert.equal(env.message.type, MsgType.HEAD_SYNC_REQUEST);
        assert.equal(hex(encode(remote.answer(env.message), env.requestId)), ex.response, c.name);
      }
    }
    // the requester, like scripts/gen_vectors.py run_headsync (request id = tag + 1)
    const s = new HeadSyncSession(local, "space-1.x", { threshold: c.threshold, divideBits: c.divide_bits });
    const rounds: { request: string; response: string }[][] = [];
    while (!s.done) {
      const flight: [number, Uint8Array][] = [];
      const out: { request: string; response: string }[] = [];
      for (let nxt = s.nextRequest(); nxt !== null; nxt = s.nextRequest()) {
        const [tag, req] = nxt;
        const rawReq = encode(req, tag + 1);
        const m = decode(rawReq).message;
        assert.equal(m.type, MsgType.HEAD_SYNC_REQUEST);
        const rawResp = encode(remote.answer(m), tag + 1);
        out.push({ request: hex(rawReq), response: hex(rawResp) });
        flight.push([tag, rawResp]);
      }
      rounds.push(out);
      for (const [tag, raw] of flight) {
        const m = decode(raw).message;
        if (m.type === MsgType.HEAD_SYNC_RESPONSE) s.receive(tag, m);
      }
    }
    assert.deepEqual(rounds, c.rounds, c.name);
    const ids = (m: Map<string, Uint8Array>): string[] => [...m.keys()].sort();
    assert.deepEqual(ids(s.result.remoteOnly), c.remote_only, c.name);
    assert.deepEqual(ids(s.result.localOnly), c.local_only, c.name);
    assert.deepEqual(ids(s.result.changed), c.changed, c.name);
  }
});

interface Side { device: string; spaces: Record<string, string>; hello: string; nonce: string; tokens: Record<string, string>; tokens_message: string }

test("spacex.json: exchange keys from headers, tokens, each side's message, the shared set", (t) => {
  const v = loadVector<{ handshake_hash: string; a: Side; b: Side; headers: Record<string, string>; shared: string[] }>(t, "spacex");
  if (v === undefined) return;
  const binding = unhex(v.handshake_hash);
  for (const [sid, raw] of Object.entries(v.headers)) SpaceHeader.verify(unhex(raw), sid);
  const nonceOf = (h: string): Uint8Array => {
    const m = decode(unhex(h)).message;
    assert.equal(m.type, MsgType.SPACE_HELLO);
    return m.nonce;
  };
  for (const [me, peer] of [[v.a, v.b], [v.b, v.a]] as const) {
    const myNonce = nonceOf(me.hello);
    const peerNonce = nonceOf(peer.hello);
    assert.equal(hex(myNonce), me.nonce);
    for (const [sid, key] of Object.entries(me.spaces)) {
      assert.equal(hex(headerExchangeKey(unhex(v.headers[sid]!), sid)), key);
      assert.equal(hex(spaceToken(unhex(key), unhex(me.device), unhex(peer.device), myNonce, peerNonce, binding)), me.tokens[sid]);
    }
    const sent = decode(unhex(me.tokens_message)).message;
    assert.equal(sent.type, MsgType.SPACE_TOKENS);
    assert.equal(sent.tokens.length, 16);
    const got = sent.tokens.map(hex);
    assert.deepEqual(got, [...got].sort());
    for (const tok of Object.values(me.tokens)) assert.ok(got.includes(tok));
    const expected = new Map(Object.entries(peer.spaces).map(([sid, k]) =>
      [hex(spaceToken(unhex(k), unhex(me.device), unhex(peer.device), myNonce, peerNonce, binding)), sid]));
    assert.deepEqual(got.filter((x) => expected.has(x)).map((x) => expected.get(x)).sort(), v.shared);
  }
});

test("invites.json: codes both ways (and lower case), bad codes refused, join and bootstrap proofs verify", (t) => {
  interface Inv {
    invite_key: { seed: string; public: string };
    codes: { text: string; invite_id: string; seed: string; space_id: string; addresses: string[] }[];
    bad_codes: { text: string; why: string }[];
    join_proof: { space_id: string; invite_id: string; joiner: string; message: string; signature: string };
    bootstrap_proof: { space_id: string; invite_id: string; responder_nonce: string; joiner_device: string; responder_device: string; handshake_hash: string; message: string; proof: string };
  }
  const v = loadVector<Inv>(t, "invites");
  if (v === undefined) return;
  for (const c of v.codes) {
    const code = InviteCode.decode(c.text);
    assert.deepEqual([hex(code.inviteId), hex(code.seed), code.spaceId, [...code.addresses]], [c.invite_id, c.seed, c.space_id, c.addresses]);
    assert.equal(code.encode(), c.text);
    assert.equal(InviteCode.decode(c.text.toLowerCase()).encode(), c.text);
  }
  for (const bad of v.bad_codes) assert.throws(() => InviteCode.decode(bad.text), BadId, bad.why);
  const ikey = new SigningKey(unhex(v.invite_key.seed));
  assert.equal(hex(ikey.public), v.invite_key.public);
  const j = v.join_proof;
  const msg = joinProofMessage(j.space_id, unhex(j.invite_id), unhex(j.joiner));
  assert.equal(hex(msg), j.message);
  verify(ikey.public, "acl-join", msg, unhex(j.signature));
  const p = v.bootstrap_proof;
  const bmsg = bootstrapMessage(p.space_id, unhex(p.invite_id), unhex(p.responder_nonce), unhex(p.joiner_device), unhex(p.responder_device), unhex(p.handshake_hash));
  assert.equal(hex(bmsg), p.message);
  const [inviteId, sig] = parseProof(unhex(p.proof));
  assert.equal(hex(inviteId), p.invite_id);
  verify(ikey.public, BOOTSTRAP_DOMAIN, bmsg, sig);
});

test("receipts.json: each receipt verifies for its device, space and nonce; its body and objects match", (t) => {
  interface Rc { device: string; space_id: string; nonce: string; body: string; raw: string; root: string; objects: Record<string, string> | null }
  const v = loadVector<{ receipts: Rc[] }>(t, "receipts");
  if (v === undefined) return;
  for (const r of v.receipts) {
    const rc = verifyReceipt(unhex(r.raw), { device: unhex(r.device), spaceId: r.space_id, nonce: unhex(r.nonce) });
    assert.equal(hex(rc.body), r.body);
    assert.equal(hex(receiptBody(rc)), r.body);
    assert.equal(hex(rc.root), r.root);
    assert.deepEqual(rc.objects === null ? null : Object.fromEntries([...rc.objects].map(([k, x]) => [k, hex(x)])), r.objects);
    const other = new Uint8Array(32);
    assert.throws(() => verifyReceipt(unhex(r.raw), { device: unhex(r.device), spaceId: r.space_id, nonce: other }), /another space or request/);
  }
});
