/**
 * Ed25519 edge cases: the pure-JS path (verifyStrict), the WebCrypto path (verifyFast) and the
 * batch+cache path (verifyBatch then verify) must all give PyNaCl's (libsodium's) answer, on
 * inputs where implementations are known to differ: non-canonical S, small-order and
 * non-canonical public keys, small-order R, mixed-order R and A (cofactored vs cofactorless).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ed25519 } from "@noble/curves/ed25519.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { randomBytes } from "@noble/hashes/utils.js";
import {
  hasSmallOrder,
  L,
  setWebCryptoEnabled,
  verifyFast,
  verifyStrict,
  webCryptoEd25519,
} from "../src/crypto/ed25519.js";
import { SigningKey, verify, verifyBatch } from "../src/crypto/keys.js";
import { BadSignature } from "../src/errors.js";
import { hex, pythonJson, unhex, utf8 } from "./helpers.js";

const Point = ed25519.Point;
const P = 2n ** 255n - 19n;

function le(n: bigint, len = 32): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

function num(b: Uint8Array): bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  return n;
}

const mod = (a: bigint): bigint => ((a % L) + L) % L;
const randScalar = (): bigint => mod(num(randomBytes(64)));
const challenge = (r: Uint8Array, a: Uint8Array, m: Uint8Array): bigint => mod(num(sha512(new Uint8Array([...r, ...a, ...m]))));

/** An order-8 point (libsodium's blacklist entry). */
const T8 = Point.fromBytes(le(2707385501144840649318225287225658788936804267575313519463743609750303402022n));

interface Case {
  name: string;
  pk: Uint8Array;
  msg: Uint8Array;
  sig: Uint8Array;
}

/** Sign with a known scalar `a` for public point A (which may carry torsion), nonce point R. */
function craft(name: string, a: bigint, A: Uint8Array, msg: Uint8Array, R: Uint8Array, r: bigint, sAdd = 0n): Case {
  const k = challenge(R, A, msg);
  const s = mod(r + k * a) + sAdd;
  return { name, pk: A, msg, sig: new Uint8Array([...R, ...le(s)]) };
}

function edgeCases(): Case[] {
  const cases: Case[] = [];
  const a = randScalar();
  const A = Point.BASE.multiply(a);
  const Ab = A.toBytes();
  const msg = utf8("edge case message");
  const r = randScalar();
  const R = Point.BASE.multiply(r).toBytes();
  cases.push(craft("valid", a, Ab, msg, R, r));
  const key = SigningKey.generate();
  cases.push({ name: "valid (noble signer)", pk: key.public, msg, sig: ed25519.sign(msg, key.seed) });
  cases.push(craft("non-canonical S (S + L)", a, Ab, msg, R, r, L));
  cases.push(craft("S = L exactly", 0n, Ab, msg, Point.ZERO.toBytes(), 0n, L));
  // small-order public keys: identity (y=1), order 2, order 4, order 8; R=[r]B, S=r makes the
  // equation hold for the identity key, and the others are crafted the same way
  for (let i = 0; i < 8; i++) {
    const T = T8.multiply(BigInt(i + 1));
    cases.push(craft(`small-order A (T8*${i + 1})`, 0n, T.toBytes(), msg, R, r));
  }
  // non-canonical identity key (y = p + 1)
  cases.push(craft("non-canonical small-order A (y = p+1)", 0n, le(P + 1n), msg, R, r));
  // non-canonical, non-small-order A: y + p for small y that decodes
  for (let y = 2n; y < 19n; y++) {
    try {
      const pt = Point.fromBytes(le(y + P), true);
      if (pt.isSmallOrder()) continue;
      cases.push({ name: `non-canonical A (y = p+${y})`, pk: le(y + P), msg, sig: new Uint8Array([...R, ...le(r)]) });
      break;
    } catch {
      // not on the curve
    }
  }
  // small-order R: identity, S = k*a makes the cofactorless equation hold
  cases.push(craft("small-order R (identity)", a, Ab, msg, Point.ZERO.toBytes(), 0n));
  cases.push(craft("small-order R (identity, non-canonical y = p+1)", a, Ab, msg, le(P + 1n), 0n));
  cases.push(craft("small-order R (T8)", a, Ab, msg, T8.toBytes(), 0n));
  // mixed-order R: R = [r]B + T8; the cofactored check (noble's) accepts, libsodium does not
  cases.push(craft("mixed-order R", a, Ab, msg, Point.BASE.multiply(r).add(T8).toBytes(), r));
  // mixed-order A: A' = [a]B + T8. Cofactorless verification holds iff 8 | k.
  const Am = A.add(T8).toBytes();
  let found0 = false;
  let foundN = false;
  for (let i = 0; i < 200 && !(found0 && foundN); i++) {
    const m = utf8(`mixed ${i}`);
    const k = challenge(R, Am, m);
    if (k % 8n === 0n && !found0) {
      found0 = true;
      cases.push(craft("mixed-order A, 8 | k", a, Am, m, R, r));
    } else if (k % 8n !== 0n && !foundN) {
      foundN = true;
      cases.push(craft("mixed-order A, 8 ∤ k", a, Am, m, R, r));
    }
  }
  // off-curve A and R, wrong message, flipped bits
  cases.push({ name: "wrong message", pk: Ab, msg: utf8("other"), sig: craft("", a, Ab, msg, R, r).sig });
  for (let y = 2n; ; y++) {
    try {
      Point.fromBytes(le(y));
    } catch {
      cases.push({ name: "off-curve A", pk: le(y), msg, sig: craft("", a, Ab, msg, R, r).sig });
      cases.push({ name: "off-curve R", pk: Ab, msg, sig: new Uint8Array([...le(y), ...le(r)]) });
      break;
    }
  }
  return cases;
}

const PY_VERIFY = `
import json, sys
from nacl.signing import VerifyKey
from nacl.exceptions import BadSignatureError
out = []
for c in json.load(sys.stdin):
    try:
        VerifyKey(bytes.fromhex(c["pk"])).verify(bytes.fromhex(c["msg"]), bytes.fromhex(c["sig"]))
        out.append(True)
    except (BadSignatureError, ValueError, TypeError):
        out.append(False)
    except Exception as e:
        out.append(type(e).__name__)
print(json.dumps(out))`;

test("the small-order blacklist is exactly the torsion subgroup (plus libsodium's non-canonical p, p+1)", () => {
  const ys = new Set<bigint>();
  for (let i = 0n; i < 8n; i++) {
    const enc = T8.multiply(i + 1n).toBytes();
    assert.ok(hasSmallOrder(enc));
    enc[31]! ^= 0x80; // sign bit ignored
    assert.ok(hasSmallOrder(enc));
    ys.add(num(T8.multiply(i + 1n).toBytes()) & ((1n << 255n) - 1n));
  }
  assert.equal(ys.size, 5);
  assert.ok(hasSmallOrder(le(P)) && hasSmallOrder(le(P + 1n)));
  assert.ok(!hasSmallOrder(Point.BASE.toBytes()));
  assert.ok(!hasSmallOrder(Point.BASE.add(T8).toBytes()));
});

test("edge cases: pure-JS and WebCrypto paths (and the fallback) all give libsodium's (PyNaCl's) answer", async () => {
  assert.notEqual(await webCryptoEd25519(), null, "this Node has WebCrypto Ed25519 (the fast path is exercised)");
  const cases = edgeCases();
  const expected = pythonJson(
    PY_VERIFY,
    cases.map((c) => ({ pk: hex(c.pk), msg: hex(c.msg), sig: hex(c.sig) })),
  ) as (boolean | string)[];
  const nobleDiffers: string[] = [];
  for (const [i, c] of cases.entries()) {
    const want = expected[i];
    assert.equal(typeof want, "boolean", `${c.name}: python raised ${String(want)}`);
    assert.equal(verifyStrict(c.pk, c.msg, c.sig), want, `verifyStrict: ${c.name}`);
    assert.equal(await verifyFast(c.pk, c.msg, c.sig), want, `verifyFast (WebCrypto): ${c.name}`);
    setWebCryptoEnabled(false);
    try {
      assert.equal(await verifyFast(c.pk, c.msg, c.sig), want, `verifyFast (no WebCrypto): ${c.name}`);
    } finally {
      setWebCryptoEnabled(true);
    }
    let noble: boolean;
    try {
      noble = ed25519.verify(c.sig, c.msg, c.pk, { zip215: false });
    } catch {
      noble = false;
    }
    if (noble !== want) nobleDiffers.push(c.name);
  }
  // the valid cases are valid, and the set is not trivially all-false
  assert.deepEqual(expected.slice(0, 2), [true, true]);
  assert.ok(expected.filter((x) => x === true).length >= 3, "mixed-order A with 8 | k verifies in libsodium");
  // why verifyStrict exists: noble's cofactored check accepts what libsodium refuses
  assert.ok(nobleDiffers.includes("mixed-order R"), `noble differs on: ${nobleDiffers.join(", ")}`);
});

test("verifyBatch remembers only good signatures, and verify accepts only an exact match", async () => {
  const key = SigningKey.generate();
  const data = utf8("batched");
  const good = key.sign("tree-change", data);
  const bad = Uint8Array.from(good);
  bad[0]! ^= 1;
  const oks = await verifyBatch([
    { publicKey: key.public, domain: "tree-change", data, signature: good },
    { publicKey: key.public, domain: "tree-change", data, signature: bad },
    { publicKey: key.public, domain: "other", data, signature: good },
  ]);
  assert.deepEqual(oks, [true, false, false]);
  verify(key.public, "tree-change", data, good);
  assert.throws(() => { verify(key.public, "tree-change", data, bad); }, BadSignature);
  // a cached good signature does not vouch for another domain or message
  await verifyBatch([{ publicKey: key.public, domain: "tree-change", data, signature: good }]);
  assert.throws(() => { verify(key.public, "other", data, good); }, BadSignature);
  assert.throws(() => { verify(key.public, "tree-change", utf8("batchee"), good); }, BadSignature);
  verify(key.public, "tree-change", data, good);
  assert.equal(unhex(hex(good)).length, 64);
});
