/**
 * Sealed boxes to a member's account key, and symmetric read keys (p2psync/crypto/box.py).
 *
 * - seal/unseal: libsodium's crypto_box_seal, byte-compatible: an ephemeral X25519 key,
 *   nonce = BLAKE2b-192(epk || recipient pk), XSalsa20-Poly1305 under HSalsa20(X25519(esk, pk)),
 *   output epk || box. The recipient key is the X25519 twin of an Ed25519 account key.
 * - ReadKey: XChaCha20-Poly1305 with a random 24-byte nonce prefixed to the ciphertext and
 *   associated data binding it to its context.
 */
import { x25519 } from "@noble/curves/ed25519.js";
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { hsalsa, xsalsa20poly1305 } from "@noble/ciphers/salsa.js";
import { blake2b } from "@noble/hashes/blake2.js";
import { randomBytes } from "@noble/hashes/utils.js";
import { DecryptionFailed } from "../errors.js";
import { concat, type SigningKey, x25519Public } from "./keys.js";

export const NONCE_SIZE = 24;
export const TAG_SIZE = 16;
const SEAL_OVERHEAD = 32 + TAG_SIZE;

function words(b: Uint8Array): Uint32Array {
  const out = new Uint32Array(b.length / 4);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = dv.getUint32(i * 4, true);
  return out;
}

function bytesOf(w: Uint32Array): Uint8Array {
  const out = new Uint8Array(w.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < w.length; i++) dv.setUint32(i * 4, w[i]!, true);
  return out;
}

const SIGMA = words(new TextEncoder().encode("expand 32-byte k"));

/** crypto_box_beforenm: HSalsa20 of the X25519 shared secret with a zero nonce. */
function boxKey(secret: Uint8Array, publicKey: Uint8Array): Uint8Array {
  const shared = x25519.getSharedSecret(secret, publicKey);
  const out = new Uint32Array(8);
  hsalsa(SIGMA, words(shared), new Uint32Array(4), out);
  return bytesOf(out);
}

/** Encrypt `plaintext` so only the holder of that account key can read it. */
export function seal(plaintext: Uint8Array, recipientEd25519Public: Uint8Array): Uint8Array {
  const pk = x25519Public(recipientEd25519Public);
  const esk = randomBytes(32);
  const epk = x25519.getPublicKey(esk);
  const nonce = blake2b(concat(epk, pk), { dkLen: 24 });
  return concat(epk, xsalsa20poly1305(boxKey(esk, pk), nonce).encrypt(plaintext));
}

/** Open a seal()-ed box with our account key; DecryptionFailed if not ours. */
export function unseal(ciphertext: Uint8Array, key: SigningKey): Uint8Array {
  const fail = (): never => {
    throw new DecryptionFailed("sealed box is not for this key or was tampered with");
  };
  if (ciphertext.length < SEAL_OVERHEAD) fail();
  const sk = key.x25519Private();
  const pk = x25519.getPublicKey(sk);
  const epk = ciphertext.subarray(0, 32);
  const nonce = blake2b(concat(epk, pk), { dkLen: 24 });
  try {
    return xsalsa20poly1305(boxKey(sk, epk), nonce).decrypt(ciphertext.subarray(32));
  } catch {
    return fail();
  }
}

/** A symmetric key that encrypts change payloads of a space. */
export class ReadKey {
  readonly key: Uint8Array;

  constructor(key: Uint8Array) {
    if (key.length !== 32) throw new Error("read keys are 32 bytes");
    this.key = Uint8Array.from(key);
  }

  static generate(): ReadKey {
    return new ReadKey(randomBytes(32));
  }

  encrypt(plaintext: Uint8Array, aad: Uint8Array = new Uint8Array(0), nonce: Uint8Array = randomBytes(NONCE_SIZE)): Uint8Array {
    return concat(nonce, xchacha20poly1305(this.key, nonce, aad).encrypt(plaintext));
  }

  decrypt(ciphertext: Uint8Array, aad: Uint8Array = new Uint8Array(0)): Uint8Array {
    if (ciphertext.length < NONCE_SIZE + TAG_SIZE) throw new DecryptionFailed("ciphertext too short");
    try {
      return xchacha20poly1305(this.key, ciphertext.subarray(0, NONCE_SIZE), aad).decrypt(ciphertext.subarray(NONCE_SIZE));
    } catch {
      throw new DecryptionFailed("payload does not decrypt under this read key");
    }
  }
}
