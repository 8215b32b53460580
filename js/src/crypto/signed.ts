/**
 * Signed envelopes: pack([body, signature]), the outer form of every signed record
 * (p2psync/crypto/signed.py). The id of a signed record is contentId of the whole envelope.
 */
import { pack, Reader, unpack } from "../codec.js";
import type { SigningKey } from "./keys.js";

export function makeSigned(key: SigningKey, domain: string, body: Uint8Array): Uint8Array {
  return pack([body, key.sign(domain, body)]);
}

/** Split an envelope into [body, signature]; throws DecodeError on a bad shape. */
export function openSigned(raw: Uint8Array, what: string, maxSize: number): [Uint8Array, Uint8Array] {
  const r = new Reader(unpack(raw, { maxSize, what }), what);
  const body = r.blob("body", { maxLen: maxSize });
  const sig = r.blob("signature", { size: 64 });
  r.end();
  return [body, sig];
}
