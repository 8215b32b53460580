/**
 * Ed25519 verification with exactly libsodium's semantics (crypto_sign_verify_detached, which the
 * Python side uses through PyNaCl), in two implementations that must agree:
 *
 * - `verifyStrict` (synchronous, pure JS on @noble/curves primitives): libsodium's checks, then the
 *   cofactorless equation compared byte-wise, as libsodium does: encode([S]B - [k]A) == R.
 *   noble's own `ed25519.verify` is not used: even with `zip215: false` it checks the cofactored
 *   equation, so it accepts signatures whose R (or A) carries a small-order component that
 *   libsodium rejects.
 * - `verifyFast` (asynchronous, WebCrypto `Ed25519`, ~10x faster where available): the same
 *   byte-level pre-checks, then WebCrypto (OpenSSL in Node, BoringSSL in Chromium), which checks
 *   S < L and the cofactorless equation by comparing encodings, i.e. libsodium's answer once the
 *   pre-checks have passed. Any doubt (no WebCrypto, import or verify error) falls back to
 *   `verifyStrict`.
 *
 * libsodium's rules (strict RFC 8032, no ZIP-215 leniency): S canonical (S < L); A canonical
 * (y < p) and not of small order; R not of small order (by its encoding, sign bit ignored);
 * R is never decoded, a non-canonical or off-curve R simply never equals a computed encoding.
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { sha512 } from "@noble/hashes/sha2.js";

const Point = ed25519.Point;
/** Group order L and field prime p. */
export const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const P = 2n ** 255n - 19n;

function leNumber(b: Uint8Array): bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  return n;
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/**
 * libsodium's ge25519_has_small_order blacklist (the y coordinates of the 8 torsion points,
 * including the non-canonical encodings p and p+1), compared with the sign bit masked off.
 */
const SMALL_ORDER_Y: readonly bigint[] = [
  0n, // order 4
  1n, // order 1 (identity)
  2707385501144840649318225287225658788936804267575313519463743609750303402022n, // order 8
  55188659117513257062467267217118295137698188065244968500265048394206261417927n, // order 8
  P - 1n, // order 2
  P, // = 0, order 4 (non-canonical)
  P + 1n, // = 1, order 1 (non-canonical)
];

/** y of a 32-byte point encoding (sign bit masked). */
function encodedY(enc: Uint8Array): bigint {
  const b = Uint8Array.from(enc);
  b[31]! &= 0x7f;
  return leNumber(b);
}

export function hasSmallOrder(enc: Uint8Array): boolean {
  const y = encodedY(enc);
  return SMALL_ORDER_Y.includes(y);
}

/** libsodium's pre-checks on (A, R, S), before any curve arithmetic. */
export function passesPrechecks(publicKey: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  if (leNumber(signature.subarray(32)) >= L) return false; // S canonical
  if (hasSmallOrder(signature.subarray(0, 32))) return false; // R not small order
  if (encodedY(publicKey) >= P) return false; // A canonical
  return !hasSmallOrder(publicKey); // A not small order
}

/** Pure-JS verification with libsodium's exact semantics (see the module comment). */
export function verifyStrict(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (!passesPrechecks(publicKey, signature)) return false;
  let A: InstanceType<typeof Point>;
  try {
    A = Point.fromBytes(publicKey, false);
  } catch {
    return false; // not on the curve
  }
  const r = signature.subarray(0, 32);
  const s = leNumber(signature.subarray(32));
  const k = leNumber(sha512(concat3(r, publicKey, message))) % L;
  const sB = s === 0n ? Point.ZERO : Point.BASE.multiplyUnsafe(s);
  const kA = k === 0n ? Point.ZERO : A.multiplyUnsafe(k);
  const check = sB.subtract(kA).toBytes();
  let d = 0;
  for (let i = 0; i < 32; i++) d |= check[i]! ^ r[i]!;
  return d === 0;
}

function concat3(a: Uint8Array, b: Uint8Array, c: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length + c.length);
  out.set(a, 0);
  out.set(b, a.length);
  out.set(c, a.length + b.length);
  return out;
}

// --- WebCrypto fast path --------------------------------------------------------------------

type Subtle = {
  importKey(f: "raw", k: Uint8Array, a: { name: string }, x: boolean, u: string[]): Promise<unknown>;
  verify(a: { name: string }, k: unknown, s: Uint8Array, m: Uint8Array): Promise<boolean>;
};

let subtlePromise: Promise<Subtle | null> | null = null;
let forceSlow = false;

/** Detected once: a WebCrypto with Ed25519 that verifies a known-good signature. */
export function webCryptoEd25519(): Promise<Subtle | null> {
  subtlePromise ??= (async () => {
    const subtle = (globalThis.crypto as { subtle?: Subtle } | undefined)?.subtle;
    if (subtle === undefined) return null;
    try {
      const seed = new Uint8Array(32).fill(7);
      const msg = new TextEncoder().encode("p2psync/ed25519-probe");
      const pub = ed25519.getPublicKey(seed);
      const sig = ed25519.sign(msg, seed);
      const key = await subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
      const good = await subtle.verify({ name: "Ed25519" }, key, sig, msg);
      const bad = await subtle.verify({ name: "Ed25519" }, key, sig, msg.subarray(1));
      return good && !bad ? subtle : null;
    } catch {
      return null;
    }
  })();
  return subtlePromise;
}

/** Tests and benchmarks: disable the WebCrypto path (everything goes through verifyStrict). */
export function setWebCryptoEnabled(on: boolean): void {
  forceSlow = !on;
}

const keyCache = new Map<string, Promise<unknown>>();
const KEY_CACHE_MAX = 1024;

function importKey(subtle: Subtle, publicKey: Uint8Array): Promise<unknown> {
  const k = hex(publicKey);
  let p = keyCache.get(k);
  if (p === undefined) {
    p = subtle.importKey("raw", Uint8Array.from(publicKey), { name: "Ed25519" }, false, ["verify"]);
    if (keyCache.size >= KEY_CACHE_MAX) keyCache.delete(keyCache.keys().next().value!);
    keyCache.set(k, p);
    p.catch(() => keyCache.delete(k));
  }
  return p;
}

/** Asynchronous verification, same answer as verifyStrict, via WebCrypto when available. */
export async function verifyFast(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
  if (!passesPrechecks(publicKey, signature)) return false;
  const subtle = forceSlow ? null : await webCryptoEd25519();
  if (subtle !== null) {
    try {
      const key = await importKey(subtle, publicKey);
      return await subtle.verify({ name: "Ed25519" }, key, signature, message);
    } catch {
      // an implementation that refuses an input we accept: let the reference decide
    }
  }
  return verifyStrict(publicKey, message, signature);
}
