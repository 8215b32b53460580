/**
 * Signed, encrypted tree changes (p2psync/replica/change.py):
 *
 *   raw     = pack([body, signature])      makeSigned(author, "tree-change", body)
 *   body    = pack([header, payload])      header kept as raw bytes: it is the AAD
 *   header  = pack([1, space_id, tree_id|nil, prev_ids, acl_head, read_key_id, snapshot, author, timestamp_ms])
 *   payload = ReadKey.encrypt(plaintext, aad = "p2psync/tree-change-payload\0" + header)
 *
 * The id of a change is contentId(raw) of the exact bytes received; a tree's id is the id of
 * its root change. Parsing and signature checks never need the read key.
 */
import { contentId, ID_SIZE, pack, Reader, unpack } from "../codec.js";
import type { ReadKey } from "../crypto/box.js";
import { concat, type SigningKey, verify } from "../crypto/keys.js";
import { makeSigned, openSigned } from "../crypto/signed.js";
import { DecodeError, P2PSyncError } from "../errors.js";
import { compareBytes } from "../hashes.js";

export class ReplicaError extends P2PSyncError {}
export class InvalidChange extends ReplicaError {}
export class IdMismatch extends ReplicaError {}

export const CHANGE_DOMAIN = "tree-change";
export const PAYLOAD_AAD_PREFIX = new TextEncoder().encode("p2psync/tree-change-payload\0");
export const FORMAT_VERSION = 1;
export const MAX_PREV_IDS = 64;
export const MAX_PAYLOAD_SIZE = 8 * 1024 * 1024;
export const MAX_CHANGE_SIZE = MAX_PAYLOAD_SIZE + 16 * 1024;
export const MAX_SPACE_ID_LEN = 128;

export class Change {
  constructor(
    readonly id: Uint8Array,
    readonly raw: Uint8Array,
    readonly spaceId: string,
    /** null for the root change (the tree's id is then `id`). */
    readonly treeId: Uint8Array | null,
    readonly prevIds: readonly Uint8Array[],
    readonly aclHead: Uint8Array,
    readonly readKeyId: Uint8Array,
    readonly snapshot: boolean,
    readonly author: Uint8Array,
    /** Milliseconds since the epoch, as claimed by the author (informative only). */
    readonly timestamp: number,
    readonly payload: Uint8Array,
    readonly header: Uint8Array,
    readonly body: Uint8Array,
    readonly signature: Uint8Array,
  ) {}

  get isRoot(): boolean {
    return this.treeId === null;
  }

  get tree(): Uint8Array {
    return this.treeId ?? this.id;
  }

  verifySignature(): void {
    verify(this.author, CHANGE_DOMAIN, this.body, this.signature);
  }

  decrypt(key: ReadKey): Uint8Array {
    return key.decrypt(this.payload, concat(PAYLOAD_AAD_PREFIX, this.header));
  }
}

const hexOf = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** Strictly decode a change envelope (no signature check); DecodeError if malformed. */
export function parseChange(raw: Uint8Array, expectedId?: Uint8Array): Change {
  if (raw.length > MAX_CHANGE_SIZE) throw new DecodeError(`tree change: ${raw.length} bytes exceeds the ${MAX_CHANGE_SIZE} limit`);
  const cid = contentId(raw);
  if (expectedId !== undefined && compareBytes(cid, expectedId) !== 0) {
    throw new IdMismatch(`tree change bytes hash to ${hexOf(cid).slice(0, 16)}…, expected ${hexOf(expectedId).slice(0, 16)}…`);
  }
  const [body, sig] = openSigned(raw, "tree change", MAX_CHANGE_SIZE);
  const b = new Reader(unpack(body, { maxSize: MAX_CHANGE_SIZE, what: "tree change body" }), "tree change body");
  const header = b.blob("header", { maxLen: 8 * 1024 });
  const payload = b.blob("payload", { maxLen: MAX_PAYLOAD_SIZE });
  b.end();
  const h = new Reader(unpack(header, { what: "tree change header" }), "tree change header");
  h.version([FORMAT_VERSION]);
  const spaceId = h.text("space_id", MAX_SPACE_ID_LEN);
  const treeId = h.optionalBlob("tree_id", { size: ID_SIZE });
  const prev = h.blobList("prev_ids", { size: ID_SIZE, maxItems: MAX_PREV_IDS });
  const aclHead = h.blob("acl_head", { size: ID_SIZE });
  const readKeyId = h.blob("read_key_id", { size: ID_SIZE });
  const snapshot = h.boolean("snapshot");
  const author = h.blob("author", { size: 32 });
  const timestamp = h.integer("timestamp", 0);
  h.end();
  if (treeId === null && prev.length > 0) throw new InvalidChange("a root change (no tree id) cannot have parents");
  if (treeId !== null && prev.length === 0) throw new InvalidChange("a non-root change must name at least one parent");
  if (new Set(prev.map(hexOf)).size !== prev.length) throw new InvalidChange("a change names the same parent twice");
  return new Change(cid, Uint8Array.from(raw), spaceId, treeId, prev, aclHead, readKeyId, snapshot, author, timestamp, payload, header, body, sig);
}

/** Parse and check the signature: everything verifiable without the read key. */
export function verifyChange(raw: Uint8Array, expectedId?: Uint8Array): Change {
  const change = parseChange(raw, expectedId);
  change.verifySignature();
  return change;
}

export interface BuildChangeOptions {
  spaceId: string;
  treeId: Uint8Array | null;
  prevIds: readonly Uint8Array[];
  aclHead: Uint8Array;
  readKeyId: Uint8Array;
  snapshot?: boolean;
  timestamp?: number;
  /** Tests only: a fixed AEAD nonce. */
  nonce?: Uint8Array;
}

/** Encrypt `plaintext` bound to a fresh header, sign it, and return the parsed change. */
export function buildChange(author: SigningKey, key: ReadKey, plaintext: Uint8Array, o: BuildChangeOptions): Change {
  const ts = o.timestamp ?? Date.now();
  const header = pack([FORMAT_VERSION, o.spaceId, o.treeId, [...o.prevIds].sort(compareBytes), o.aclHead, o.readKeyId, o.snapshot ?? false, author.public, ts]);
  const payload = key.encrypt(plaintext, concat(PAYLOAD_AAD_PREFIX, header), ...(o.nonce ? [o.nonce] : []));
  if (payload.length > MAX_PAYLOAD_SIZE) throw new InvalidChange(`payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD_SIZE}; flush edits more often`);
  const body = pack([header, payload]);
  return parseChange(makeSigned(author, CHANGE_DOMAIN, body));
}
