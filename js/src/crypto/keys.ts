/**
 * Account and device keys, as p2psync/crypto/keys.py derives and uses them.
 *
 * - The account key is Ed25519, derived from a BIP39 phrase (no BIP39 passphrase) by SLIP-0010
 *   along the hardened path m/44'/7337'/<index>'.
 * - A device key is a random Ed25519 key; its X25519 twin (the standard Ed25519→Curve25519 map)
 *   is the Noise static key, so one key names the device.
 * - Signatures are domain-separated: the signed message is "p2psync/" + domain + "\0" + data.
 *
 * Verification has exactly libsodium's semantics (crypto_sign_verify_detached, which the Python
 * side uses): see ed25519.ts. `verify` is synchronous (pure JS, ~6 ms); `verifyBatch` verifies
 * many signatures asynchronously through WebCrypto where available (~10x faster) and remembers
 * the good ones, so a later `verify` of exactly the same (key, message, signature) is a lookup.
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { randomBytes } from "@noble/hashes/utils.js";
import { generateMnemonic, mnemonicToSeedSync, validateMnemonic } from "@scure/bip39";
import { wordlist } from "@scure/bip39/wordlists/english.js";
import { BadRecoveryPhrase, BadSignature } from "../errors.js";
import { verifyFast, verifyStrict } from "./ed25519.js";
import { accountId, peerId } from "./ids.js";

/** SLIP-0044 coin types are a namespace; 7337 is unregistered and ours. */
export const DERIVATION_PURPOSE = 44;
export const DERIVATION_COIN = 7337;
const HARDENED = 0x80000000;
const enc = new TextEncoder();

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

function signedMessage(domain: string, data: Uint8Array): Uint8Array {
  return concat(enc.encode("p2psync/"), enc.encode(domain), new Uint8Array([0]), data);
}

/**
 * Signatures verified by `verifyBatch`, by signature hex, with the exact key and signed message:
 * `verify` accepts only an exact match (and consumes it). Bounded in entries and in bytes (a
 * peer's batch may hold changes that are never verified synchronously: duplicates, orphans): the
 * oldest entries go first, and a miss simply verifies again.
 */
const verified = new Map<string, { publicKey: Uint8Array; message: Uint8Array }>();
const VERIFIED_MAX = 1024;
const VERIFIED_MAX_BYTES = 32 << 20;
let verifiedBytes = 0;

function forget(k: string): void {
  const e = verified.get(k);
  if (e === undefined) return;
  verified.delete(k);
  verifiedBytes -= e.message.length;
}

function sigKey(signature: Uint8Array): string {
  return Array.from(signature, (x) => x.toString(16).padStart(2, "0")).join("");
}

function takeVerified(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  const k = sigKey(signature);
  const hit = verified.get(k);
  if (hit === undefined || !equalBytes(hit.publicKey, publicKey) || !equalBytes(hit.message, message)) return false;
  forget(k);
  return true;
}

/** Check a signature made by SigningKey.sign; throws BadSignature. */
export function verify(publicKey: Uint8Array, domain: string, data: Uint8Array, signature: Uint8Array): void {
  if (publicKey.length !== 32 || signature.length !== 64) throw new BadSignature(`${domain}: malformed key or signature`);
  const message = signedMessage(domain, data);
  if (takeVerified(publicKey, message, signature)) return;
  if (!verifyStrict(publicKey, message, signature)) throw new BadSignature(`${domain}: signature does not verify`);
}

export interface SignedItem {
  publicKey: Uint8Array;
  domain: string;
  data: Uint8Array;
  signature: Uint8Array;
}

/**
 * Verify many signatures at once, asynchronously (WebCrypto where available, in parallel), with
 * `verify`'s exact semantics. Returns one boolean per item and remembers the good ones, so the
 * synchronous `verify` that later checks the same record (tree.add, ACL replay) costs a lookup.
 * It never throws for a bad signature: the synchronous check still decides.
 */
export async function verifyBatch(items: readonly SignedItem[]): Promise<boolean[]> {
  return Promise.all(
    items.map(async (it) => {
      if (it.publicKey.length !== 32 || it.signature.length !== 64) return false;
      const message = signedMessage(it.domain, it.data);
      const ok = await verifyFast(it.publicKey, message, it.signature);
      if (ok && message.length <= VERIFIED_MAX_BYTES) {
        const k = sigKey(it.signature);
        forget(k);
        while (verified.size >= VERIFIED_MAX || verifiedBytes + message.length > VERIFIED_MAX_BYTES) {
          forget(verified.keys().next().value!);
        }
        verified.set(k, { publicKey: Uint8Array.from(it.publicKey), message });
        verifiedBytes += message.length;
      }
      return ok;
    }),
  );
}

/** An Ed25519 key pair with domain-separated signing and the X25519 twin for key exchange. */
export class SigningKey {
  readonly seed: Uint8Array;
  readonly public: Uint8Array;
  private x25519?: Uint8Array;

  constructor(seed: Uint8Array) {
    if (seed.length !== 32) throw new Error("Ed25519 seeds are 32 bytes");
    this.seed = Uint8Array.from(seed);
    this.public = ed25519.getPublicKey(this.seed);
  }

  sign(domain: string, data: Uint8Array): Uint8Array {
    return ed25519.sign(signedMessage(domain, data), this.seed);
  }

  /** Curve25519 private scalar matching x25519Public(this.public) (libsodium sk_to_curve25519). */
  x25519Private(): Uint8Array {
    this.x25519 ??= ed25519.utils.toMontgomerySecret(this.seed);
    return this.x25519;
  }

  static generate<T extends SigningKey>(this: new (seed: Uint8Array) => T): T {
    return new this(randomBytes(32));
  }
}

/** The X25519 public key of an Ed25519 public key (sealing, Noise static keys). */
export function x25519Public(ed25519Public: Uint8Array): Uint8Array {
  try {
    return ed25519.utils.toMontgomery(ed25519Public);
  } catch {
    throw new BadSignature("not a valid Ed25519 public key");
  }
}

/** The account identity: signs device certificates, ACL records and tree changes. */
export class AccountKey extends SigningKey {
  get id(): string {
    return accountId(this.public);
  }
}

/** A device's own key: authenticates the device in the transport handshake. */
export class DeviceKey extends SigningKey {
  get id(): string {
    return peerId(this.public);
  }
}

/** A fresh BIP39 phrase (24 words = 256 bits of entropy by default). */
export function newRecoveryPhrase(words = 24): string {
  const strength = ({ 12: 128, 15: 160, 18: 192, 21: 224, 24: 256 } as Record<number, number>)[words];
  if (strength === undefined) throw new Error("a recovery phrase has 12, 15, 18, 21 or 24 words");
  return generateMnemonic(wordlist, strength);
}

/** Lowercase, single-spaced words; throws BadRecoveryPhrase if it does not check. */
export function normalizePhrase(phrase: string): string {
  const words = phrase.toLowerCase().split(/\s+/).filter((w) => w.length > 0);
  const known = new Set(wordlist);
  const unknown = words.filter((w) => !known.has(w));
  if (unknown.length > 0) {
    throw new BadRecoveryPhrase(`unknown word(s) in recovery phrase: ${unknown.slice(0, 3).join(", ")}`);
  }
  const norm = words.join(" ");
  if (![12, 15, 18, 21, 24].includes(words.length) || !validateMnemonic(norm, wordlist)) {
    throw new BadRecoveryPhrase("recovery phrase checksum does not match (a word is wrong?)");
  }
  return norm;
}

/** SLIP-0010 Ed25519 derivation (every step hardened). */
export function slip10Ed25519(seed: Uint8Array, path: readonly number[]): Uint8Array {
  let digest = hmac(sha512, enc.encode("ed25519 seed"), seed);
  let key = digest.slice(0, 32);
  let chain = digest.slice(32);
  for (const index of path) {
    const data = new Uint8Array(37);
    data.set(key, 1);
    new DataView(data.buffer).setUint32(33, (index | HARDENED) >>> 0);
    digest = hmac(sha512, chain, data);
    key = digest.slice(0, 32);
    chain = digest.slice(32);
  }
  return key;
}

/** Derive the account key from a BIP39 phrase (no BIP39 passphrase), SLIP-0010 path. */
export function accountFromPhrase(phrase: string, index = 0): AccountKey {
  const seed = mnemonicToSeedSync(normalizePhrase(phrase), "");
  return new AccountKey(slip10Ed25519(seed, [DERIVATION_PURPOSE, DERIVATION_COIN, index]));
}
