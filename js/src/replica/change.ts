/**
 * Signed, encrypted tree changes (p2psync/replica/change.py), format 2:
 *
 *   raw     = pack([body, signature])      makeSigned(author, "tree-change", body)
 *   body    = pack([header, payload])      header kept as raw bytes: it is the AAD
 *   header  = pack([2, space_id, tree_id|nil, prev_ids, acl_head, read_key_id, author])
 *   payload = ReadKey.encrypt(pack([timestamp_ms, snapshot, plaintext]),
 *                             aad = "p2psync/tree-change-payload\0" + header)
 *
 * The clear header holds only what a keyless peer needs to verify, place and sync a change; the
 * author's claimed time and the snapshot flag are sealed with the content (issue 20 item 6).
 * Format 1 (header [1, …, read_key_id, snapshot, author, timestamp_ms], payload = bare
 * plaintext) is still read. The id of a change is contentId(raw) of the exact bytes received; a
 * tree's id is the id of its root change. Parsing and signature checks never need the read key.
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
/** The format written; format 1 (clear timestamp and snapshot flag) is still read. */
export const FORMAT_VERSION = 2;
export const LEGACY_VERSION = 1;
export const READ_VERSIONS: readonly number[] = [LEGACY_VERSION, FORMAT_VERSION];
export const MAX_PREV_IDS = 64;
export const MAX_PAYLOAD_SIZE = 8 * 1024 * 1024;
export const MAX_CHANGE_SIZE = MAX_PAYLOAD_SIZE + 16 * 1024;
export const MAX_SPACE_ID_LEN = 128;

/** What only a holder of the read key learns of a change (format 2). */
export interface Sealed {
  /** Milliseconds since the epoch, as claimed by the author (informative only). */
  readonly timestamp: number;
  readonly snapshot: boolean;
  readonly plaintext: Uint8Array;
}

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
    /** Format 1 only (clear header); null in format 2, where it is sealed: see `open`. */
    readonly snapshot: boolean | null,
    readonly author: Uint8Array,
    /** Format 1 only: the author's claimed time in ms; null in format 2 (sealed: see `open`). */
    readonly timestamp: number | null,
    readonly payload: Uint8Array,
    readonly header: Uint8Array,
    readonly body: Uint8Array,
    readonly signature: Uint8Array,
    readonly version: number = FORMAT_VERSION,
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

  /** The decrypted plaintext (DecryptionFailed if wrong key or moved ciphertext). */
  decrypt(key: ReadKey): Uint8Array {
    return this.open(key).plaintext;
  }

  /** Decrypt the payload: the plaintext with the claimed time and snapshot flag. */
  open(key: ReadKey): Sealed {
    const inner = key.decrypt(this.payload, concat(PAYLOAD_AAD_PREFIX, this.header));
    if (this.version === LEGACY_VERSION) return { timestamp: this.timestamp!, snapshot: this.snapshot!, plaintext: inner };
    const r = new Reader(unpack(inner, { maxSize: MAX_PAYLOAD_SIZE, what: "tree change sealed part" }), "tree change sealed part");
    const timestamp = r.integer("timestamp", 0);
    const snapshot = r.boolean("snapshot");
    const plaintext = r.blob("plaintext", { maxLen: MAX_PAYLOAD_SIZE });
    r.end();
    return { timestamp, snapshot, plaintext };
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
  const version = h.version(READ_VERSIONS);
  const spaceId = h.text("space_id", MAX_SPACE_ID_LEN);
  const treeId = h.optionalBlob("tree_id", { size: ID_SIZE });
  const prev = h.blobList("prev_ids", { size: ID_SIZE, maxItems: MAX_PREV_IDS });
  const aclHead = h.blob("acl_head", { size: ID_SIZE });
  const readKeyId = h.blob("read_key_id", { size: ID_SIZE });
  const legacy = version === LEGACY_VERSION;
  const snapshot = legacy ? h.boolean("snapshot") : null;
  const author = h.blob("author", { size: 32 });
  const timestamp = legacy ? h.integer("timestamp", 0) : null;
  h.end();
  if (treeId === null && prev.length > 0) throw new InvalidChange("a root change (no tree id) cannot have parents");
  if (treeId !== null && prev.length === 0) throw new InvalidChange("a non-root change must name at least one parent");
  if (new Set(prev.map(hexOf)).size !== prev.length) throw new InvalidChange("a change names the same parent twice");
  return new Change(cid, Uint8Array.from(raw), spaceId, treeId, prev, aclHead, readKeyId, snapshot, author, timestamp, payload, header, body, sig, version);
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
  /** Tests and vectors of old data only: 1 writes the legacy format (clear time and flag). */
  version?: number;
}

/** Encrypt `plaintext` bound to a fresh header, sign it, and return the parsed change. */
export function buildChange(author: SigningKey, key: ReadKey, plaintext: Uint8Array, o: BuildChangeOptions): Change {
  const ts = o.timestamp ?? Date.now();
  const snapshot = o.snapshot ?? false;
  const prev = [...o.prevIds].sort(compareBytes);
  const version = o.version ?? FORMAT_VERSION;
  let header: Uint8Array, inner: Uint8Array;
  if (version === LEGACY_VERSION) {
    header = pack([LEGACY_VERSION, o.spaceId, o.treeId, prev, o.aclHead, o.readKeyId, snapshot, author.public, ts]);
    inner = plaintext;
  } else if (version === FORMAT_VERSION) {
    header = pack([FORMAT_VERSION, o.spaceId, o.treeId, prev, o.aclHead, o.readKeyId, author.public]);
    inner = pack([ts, snapshot, plaintext]);
  } else {
    throw new InvalidChange(`cannot write tree change format ${version}`);
  }
  const payload = key.encrypt(inner, concat(PAYLOAD_AAD_PREFIX, header), ...(o.nonce ? [o.nonce] : []));
  if (payload.length > MAX_PAYLOAD_SIZE) throw new InvalidChange(`payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD_SIZE}; flush edits more often`);
  const body = pack([header, payload]);
  return parseChange(makeSigned(author, CHANGE_DOMAIN, body));
}
