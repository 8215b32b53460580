/**
 * Sans-IO Noise XX (revision 34 of the Noise Protocol Framework), a port of
 * p2psync/transport/noise.py.
 *
 * p2psync speaks Noise_XX_25519_ChaChaPoly_BLAKE2b; the other 25519 suites (AESGCM; SHA256,
 * SHA512, BLAKE2s) are implemented too so the published test vectors check every code path.
 * Primitives come from @noble/curves, @noble/ciphers and @noble/hashes. Nothing here touches a
 * socket: bytes in, bytes out, HandshakeError / FrameError on defects.
 */
import { x25519 } from "@noble/curves/ed25519.js";
import { gcm } from "@noble/ciphers/aes.js";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { blake2b, blake2s } from "@noble/hashes/blake2.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { randomBytes } from "@noble/hashes/utils.js";
import { FrameError, HandshakeError } from "../errors.js";
import { concat } from "../crypto/keys.js";

/** Largest Noise message (handshake or transport), ciphertext included. */
export const MAX_MESSAGE_LEN = 65535;
export const TAG_LEN = 16;
export const DH_LEN = 32;
export const PROTOCOL_NAME = "Noise_XX_25519_ChaChaPoly_BLAKE2b";
/**
 * Nonces are JS numbers: this side declares the nonce space exhausted at 2^53 - 1 messages
 * (Python: 2^64 - 1); no session gets near either.
 */
const MAX_NONCE = Number.MAX_SAFE_INTEGER;

type HashFn = (data: Uint8Array) => Uint8Array;
interface HashInfo {
  fn: HashFn & Parameters<typeof hmac>[0];
  len: number;
}
const HASHES: Record<string, HashInfo> = {
  BLAKE2b: { fn: blake2b, len: 64 },
  BLAKE2s: { fn: blake2s, len: 32 },
  SHA256: { fn: sha256, len: 32 },
  SHA512: { fn: sha512, len: 64 },
};
const CIPHERS = ["ChaChaPoly", "AESGCM"];

/** A parsed Noise_XX_25519_<cipher>_<hash> protocol name. */
export class Suite {
  constructor(
    readonly cipher = "ChaChaPoly",
    readonly hash = "BLAKE2b",
  ) {}

  get name(): string {
    return `Noise_XX_25519_${this.cipher}_${this.hash}`;
  }

  static parse(name: string): Suite {
    const p = name.split("_");
    if (p.length !== 5 || p[0] !== "Noise" || p[1] !== "XX" || p[2] !== "25519" || !CIPHERS.includes(p[3]!) || !(p[4]! in HASHES)) {
      throw new Error(`unsupported Noise protocol ${JSON.stringify(name)} (only XX over 25519)`);
    }
    return new Suite(p[3], p[4]);
  }
}

export const DEFAULT_SUITE = new Suite();

/** An X25519 key pair. */
export class KeyPair {
  constructor(
    readonly privateKey: Uint8Array,
    readonly publicKey: Uint8Array,
  ) {}

  static fromPrivate(privateKey: Uint8Array): KeyPair {
    if (privateKey.length !== DH_LEN) throw new Error("X25519 private keys are 32 bytes");
    return new KeyPair(Uint8Array.from(privateKey), x25519.getPublicKey(privateKey));
  }

  static generate(): KeyPair {
    return KeyPair.fromPrivate(randomBytes(DH_LEN));
  }
}

/** X25519; a low-order peer key (all-zero output) is refused as a handshake error. */
export function dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  try {
    return x25519.getSharedSecret(privateKey, publicKey);
  } catch {
    throw new HandshakeError("peer sent an invalid X25519 public key");
  }
}

function nonceBytes(n: number, chacha: boolean): Uint8Array {
  const out = new Uint8Array(12);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(4, BigInt(n), chacha);
  return out;
}

/** Noise CipherState: one AEAD key and a strictly increasing 64-bit nonce. */
export class CipherState {
  n = 0;
  k: Uint8Array | null = null;
  private readonly chacha: boolean;

  constructor(k: Uint8Array | null = null, cipher = "ChaChaPoly") {
    this.chacha = cipher === "ChaChaPoly";
    if (k !== null) this.initializeKey(k);
  }

  initializeKey(k: Uint8Array): void {
    this.k = Uint8Array.from(k);
    this.n = 0;
  }

  hasKey(): boolean {
    return this.k !== null;
  }

  private aead(k: Uint8Array, nonce: Uint8Array, ad: Uint8Array) {
    return this.chacha ? chacha20poly1305(k, nonce, ad) : gcm(k, nonce, ad);
  }

  private nonce(): Uint8Array {
    if (this.n >= MAX_NONCE) throw new FrameError("Noise nonce space exhausted; the session must be re-established");
    return nonceBytes(this.n, this.chacha);
  }

  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.k === null) return Uint8Array.from(plaintext);
    const out = this.aead(this.k, this.nonce(), ad).encrypt(plaintext);
    this.n += 1;
    return out;
  }

  /** Decrypt; the nonce advances only on success, so a failed frame cannot desync us. */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.k === null) return Uint8Array.from(ciphertext);
    let out: Uint8Array;
    try {
      out = this.aead(this.k, this.nonce(), ad).decrypt(ciphertext);
    } catch (exc) {
      if (exc instanceof FrameError) throw exc;
      throw new FrameError("frame failed authentication (tampered, replayed or reordered)");
    }
    this.n += 1;
    return out;
  }

  /** Noise REKEY(k) = first 32 bytes of ENCRYPT(k, maxnonce, zerolen, zeros). */
  rekey(): void {
    if (this.k === null) throw new Error("rekey without a key");
    const nonce = new Uint8Array(12).fill(0xff, 4);
    const n = this.n;
    this.initializeKey(this.aead(this.k, nonce, new Uint8Array(0)).encrypt(new Uint8Array(32)).slice(0, 32));
    this.n = n;
  }
}

const EMPTY = new Uint8Array(0);

/** Noise SymmetricState: chaining key ck, handshake hash h and a CipherState. */
export class SymmetricState {
  h: Uint8Array;
  ck: Uint8Array;
  readonly cipher: CipherState;
  private readonly hash: HashInfo;

  constructor(readonly suite: Suite) {
    this.hash = HASHES[suite.hash]!;
    const name = new TextEncoder().encode(suite.name);
    if (name.length <= this.hash.len) {
      this.h = new Uint8Array(this.hash.len);
      this.h.set(name);
    } else {
      this.h = this.hash.fn(name);
    }
    this.ck = this.h;
    this.cipher = new CipherState(null, suite.cipher);
  }

  private mac(key: Uint8Array, data: Uint8Array): Uint8Array {
    return hmac(this.hash.fn, key, data);
  }

  hkdf(ikm: Uint8Array, outputs: 2 | 3): Uint8Array[] {
    const temp = this.mac(this.ck, ikm);
    const out1 = this.mac(temp, new Uint8Array([1]));
    const out2 = this.mac(temp, concat(out1, new Uint8Array([2])));
    if (outputs === 2) return [out1, out2];
    return [out1, out2, this.mac(temp, concat(out2, new Uint8Array([3])))];
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, tempK] = this.hkdf(ikm, 2);
    this.ck = ck!;
    this.cipher.initializeKey(tempK!.slice(0, 32));
  }

  mixHash(data: Uint8Array): void {
    this.h = this.hash.fn(concat(this.h, data));
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ct = this.cipher.encryptWithAd(this.h, plaintext);
    this.mixHash(ct);
    return ct;
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    let pt: Uint8Array;
    try {
      pt = this.cipher.decryptWithAd(this.h, ciphertext);
    } catch (exc) {
      if (exc instanceof FrameError) {
        throw new HandshakeError("handshake message failed authentication: replayed, relayed from another connection, or tampered");
      }
      throw exc;
    }
    this.mixHash(ciphertext);
    return pt;
  }

  split(): [CipherState, CipherState] {
    const [k1, k2] = this.hkdf(EMPTY, 2);
    return [new CipherState(k1!.slice(0, 32), this.suite.cipher), new CipherState(k2!.slice(0, 32), this.suite.cipher)];
  }
}

type Token = "e" | "s" | "ee" | "es" | "se";
/** XX: -> e ; <- e, ee, s, es ; -> s, se */
const XX: readonly (readonly Token[])[] = [["e"], ["e", "ee", "s", "es"], ["s", "se"]];

/**
 * Noise XX HandshakeState; call writeMessage / readMessage in turn. After the third message
 * `complete` is true and sendCipher, recvCipher, remoteStatic and handshakeHash are set.
 * Messages are accepted only in pattern order.
 */
export class HandshakeState {
  readonly ss: SymmetricState;
  e: KeyPair | null;
  re: Uint8Array | null = null;
  rs: Uint8Array | null = null;
  step = 0;
  sendCipher: CipherState | null = null;
  recvCipher: CipherState | null = null;
  handshakeHash: Uint8Array = EMPTY;
  readonly initiator: boolean;
  readonly s: KeyPair;

  constructor(opts: { initiator: boolean; static: KeyPair; prologue?: Uint8Array; suite?: Suite; ephemeral?: KeyPair | null }) {
    this.initiator = opts.initiator;
    this.ss = new SymmetricState(opts.suite ?? DEFAULT_SUITE);
    this.ss.mixHash(opts.prologue ?? EMPTY);
    this.s = opts.static;
    this.e = opts.ephemeral ?? null;
  }

  get complete(): boolean {
    return this.step >= XX.length;
  }

  get remoteStatic(): Uint8Array | null {
    return this.rs;
  }

  private myTurn(): boolean {
    return (this.step % 2 === 0) === this.initiator;
  }

  private dhToken(token: Token): Uint8Array {
    const e = this.e!;
    const re = this.re!;
    if (token === "ee") return dh(e.privateKey, re);
    // es: initiator's e with responder's s; se: initiator's s with responder's e.
    if ((token === "es") === this.initiator) return dh(e.privateKey, this.rs!);
    return dh(this.s.privateKey, re);
  }

  writeMessage(payload: Uint8Array = EMPTY): Uint8Array {
    if (this.complete || !this.myTurn()) throw new HandshakeError("handshake message written out of turn");
    const parts: Uint8Array[] = [];
    for (const token of XX[this.step]!) {
      if (token === "e") {
        this.e ??= KeyPair.generate();
        parts.push(this.e.publicKey);
        this.ss.mixHash(this.e.publicKey);
      } else if (token === "s") {
        parts.push(this.ss.encryptAndHash(this.s.publicKey));
      } else {
        this.ss.mixKey(this.dhToken(token));
      }
    }
    parts.push(this.ss.encryptAndHash(payload));
    const out = concat(...parts);
    if (out.length > MAX_MESSAGE_LEN) throw new HandshakeError("handshake payload too large for one Noise message");
    this.advance();
    return out;
  }

  readMessage(message: Uint8Array): Uint8Array {
    if (this.complete || this.myTurn()) throw new HandshakeError("unexpected handshake message (replayed or out of order)");
    if (message.length > MAX_MESSAGE_LEN) throw new HandshakeError("handshake message longer than the Noise limit");
    let pos = 0;
    for (const token of XX[this.step]!) {
      if (token === "e") {
        if (message.length - pos < DH_LEN) throw new HandshakeError("handshake message truncated (ephemeral key)");
        this.re = message.slice(pos, pos + DH_LEN);
        pos += DH_LEN;
        this.ss.mixHash(this.re);
      } else if (token === "s") {
        const n = DH_LEN + (this.ss.cipher.hasKey() ? TAG_LEN : 0);
        if (message.length - pos < n) throw new HandshakeError("handshake message truncated (static key)");
        this.rs = this.ss.decryptAndHash(message.slice(pos, pos + n));
        pos += n;
      } else {
        this.ss.mixKey(this.dhToken(token));
      }
    }
    const rest = message.slice(pos);
    if (this.ss.cipher.hasKey() && rest.length < TAG_LEN) throw new HandshakeError("handshake message truncated (payload tag)");
    const payload = this.ss.decryptAndHash(rest);
    this.advance();
    return payload;
  }

  private advance(): void {
    this.step += 1;
    if (this.complete) {
      const [c1, c2] = this.ss.split();
      [this.sendCipher, this.recvCipher] = this.initiator ? [c1, c2] : [c2, c1];
      this.handshakeHash = this.ss.h;
    }
  }
}
