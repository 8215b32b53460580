/**
 * Printable, checksummed ids (p2psync/crypto/ids.py): a one-letter kind prefix, then lowercase
 * RFC 4648 base32 (no padding) of the 32 key bytes followed by a 4-byte BLAKE2b checksum over
 * kind || key — so an account id pasted where a peer id is expected fails the check.
 */
import { blake2b } from "@noble/hashes/blake2.js";
import { base32nopad } from "@scure/base";
import { BadId } from "../errors.js";

export const ACCOUNT = "a";
export const PEER = "p";
const KINDS = new Set([ACCOUNT, PEER]);
const CHECK = 4;
const enc = new TextEncoder();

function checksum(kind: string, key: Uint8Array): Uint8Array {
  const data = new Uint8Array(kind.length + key.length);
  data.set(enc.encode(kind));
  data.set(key, kind.length);
  return blake2b(data, { dkLen: CHECK });
}

function b32decode(body: string): Uint8Array | undefined {
  try {
    return base32nopad.decode(body.replace(/=+$/, ""));
  } catch {
    return undefined;
  }
}

export function encodeKey(kind: string, key: Uint8Array): string {
  if (!KINDS.has(kind)) throw new Error(`unknown id kind ${kind}`);
  if (key.length !== 32) throw new Error("public keys are 32 bytes");
  const raw = new Uint8Array(32 + CHECK);
  raw.set(key);
  raw.set(checksum(kind, key), 32);
  return kind + base32nopad.encode(raw).toLowerCase();
}

export function decodeKey(kind: string, text: string): Uint8Array {
  if (!KINDS.has(kind) || !text.startsWith(kind)) {
    throw new BadId(`not a${kind === ACCOUNT ? "n account" : " peer"} id: ${JSON.stringify(text)}`);
  }
  const raw = b32decode(text.slice(1).trim().toUpperCase());
  if (raw === undefined) throw new BadId(`id ${JSON.stringify(text)} is not valid base32`);
  if (raw.length !== 32 + CHECK) throw new BadId(`id ${JSON.stringify(text)} has the wrong length`);
  const key = raw.slice(0, 32);
  const check = raw.slice(32);
  const want = checksum(kind, key);
  if (!check.every((b, i) => b === want[i])) throw new BadId(`id ${JSON.stringify(text)} has a bad checksum (mistyped?)`);
  return key;
}

export const accountId = (key: Uint8Array): string => encodeKey(ACCOUNT, key);
export const peerId = (key: Uint8Array): string => encodeKey(PEER, key);

/** Printable form of a content id (no checksum: content ids are verified by re-hashing). */
export function shortHash(content: Uint8Array): string {
  return base32nopad.encode(content).toLowerCase();
}

/** Inverse of shortHash. */
export function parseHash(text: string, size = 32): Uint8Array {
  const raw = b32decode(text.trim().toUpperCase());
  if (raw === undefined) throw new BadId(`${JSON.stringify(text)} is not a valid content id`);
  if (raw.length !== size) throw new BadId(`${JSON.stringify(text)} is not a ${size}-byte content id`);
  return raw;
}
