/**
 * Hashes over sets of heads (docs/protocol.md sections 3 and 11):
 * - headsHash: BLAKE2b-256, person "p2psync-heads-v1", over the sorted unique heads, each
 *   prefixed by its u16 length (head sync, receipts);
 * - headsDigest: BLAKE2b-256 of the sorted heads concatenated (local status only);
 * - elementHash: BLAKE2b-256, person "p2psync-ldiff-v1", of object id || heads hash (the head
 *   sync set element, read as a 256-bit big-endian integer by the fingerprint sum).
 */
import { blake2b } from "@noble/hashes/blake2.js";

function person(s: string): Uint8Array {
  const out = new Uint8Array(16);
  out.set(new TextEncoder().encode(s));
  return out;
}

const HEADS = person("p2psync-heads-v1");
const LDIFF = person("p2psync-ldiff-v1");

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function sortedUnique(heads: readonly Uint8Array[]): Uint8Array[] {
  const seen = new Map<string, Uint8Array>();
  for (const h of heads) seen.set(Array.from(h).join(","), h);
  return [...seen.values()].sort(compareBytes);
}

export function headsHash(heads: readonly Uint8Array[]): Uint8Array {
  const h = blake2b.create({ dkLen: 32, personalization: HEADS });
  for (const head of sortedUnique(heads)) {
    h.update(new Uint8Array([head.length >> 8, head.length & 0xff]));
    h.update(head);
  }
  return h.digest();
}

/** Local status digest; duplicates ignored (a head set). */
export function headsDigest(heads: readonly Uint8Array[]): Uint8Array {
  const h = blake2b.create({ dkLen: 32 });
  for (const head of sortedUnique(heads)) h.update(head);
  return h.digest();
}

export function elementHash(objectId: Uint8Array, hh: Uint8Array): Uint8Array {
  const h = blake2b.create({ dkLen: 32, personalization: LDIFF });
  h.update(objectId);
  h.update(hh);
  return h.digest();
}
