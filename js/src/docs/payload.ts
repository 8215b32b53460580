/**
 * The plaintext inside a tree change's encrypted payload (docs/replica.md, "Payload plaintext";
 * p2psync/replica/document.py encode_payload/decode_payload):
 *
 *   pack([1, automerge_heads_after, items])
 *
 * `items` are Automerge change bytes (a normal change) or one Automerge `save()` (a snapshot
 * change); `automerge_heads_after` are the Automerge heads of the author's document right after
 * the change, sorted (how a past *tree* state maps to Automerge heads).
 */
import { pack, Reader, unpack } from "../codec.js";
import { blake2b } from "@noble/hashes/blake2.js";
import { DecodeError, P2PSyncError } from "../errors.js";
import { compareBytes } from "../hashes.js";

export const PAYLOAD_VERSION = 1;

/** Something is wrong with a document's content (p2psync.errors.DocumentError). */
export class DocumentError extends P2PSyncError {}
/** Content this peer refuses to write or render (native counters, marks, tables). */
export class UnsupportedContent extends DocumentError {}
/** One edit is bigger than a tree change may carry (big blobs belong in files). */
export class ChangeTooLarge extends DocumentError {}

export interface ChangePayload {
  readonly amHeads: readonly Uint8Array[];
  readonly items: readonly Uint8Array[];
}

export function encodePayload(amHeads: readonly Uint8Array[], items: readonly Uint8Array[]): Uint8Array {
  return pack([PAYLOAD_VERSION, [...amHeads].sort(compareBytes), [...items]]);
}

/** Strictly decode a decrypted payload; DocumentError if malformed. */
export function decodePayload(plain: Uint8Array): ChangePayload {
  try {
    const r = new Reader(unpack(plain, { what: "change payload" }), "change payload");
    r.version([PAYLOAD_VERSION]);
    const amHeads = r.blobList("am_heads", { size: 32, maxItems: 4096 });
    const items = r.blobList("items", { maxItems: 1_000_000 });
    r.end();
    return { amHeads, items };
  } catch (e) {
    if (e instanceof DecodeError) throw new DocumentError(`malformed change payload: ${e.message}`);
    throw e;
  }
}

const ACTOR_PERSON = (() => {
  const p = new Uint8Array(16);
  p.set(new TextEncoder().encode("p2psync-actor"));
  return p;
})();

/** Stable 16-byte Automerge actor for one author on one device (Python `actor_for`). */
export function actorFor(author: Uint8Array, device: Uint8Array): Uint8Array {
  const msg = new Uint8Array(author.length + device.length);
  msg.set(author);
  msg.set(device, author.length);
  return blake2b(msg, { dkLen: 16, personalization: ACTOR_PERSON });
}
