/**
 * Sync wire messages (p2psync/sync/messages.py): plain frozen objects with strict, total
 * encode/decode.
 *
 * Every message travels in one envelope, a canonical msgpack array
 * `[protocol_version, message_type, request_id, body]` where body is an array with the message's
 * fields in a fixed order (docs/sync-protocol.md section 2). Decoding never trusts the peer:
 * every field is type- and size-checked; an unknown version throws UnsupportedVersion, an unknown
 * type UnknownMessageType, an oversize message MessageTooLarge, anything else malformed
 * DecodeError, and nothing else escapes `decode`. Each error carries the envelope's request id
 * (when valid) so the ERROR reply can name it (`requestIdOf`).
 *
 * Tree changes, ACL records and space headers are opaque raw bytes here: they are self-verifying
 * signed records checked by the replica, not by the sync layer.
 */
import { pack, Reader, readArrayHeader, readInt, unpackBounded, type Value } from "../codec.js";
import { DecodeError, P2PSyncError, UnsupportedVersion } from "../errors.js";
import { AccessDenied } from "../replica/aclRecords.js";
import {
  MessageTooLarge,
  ProtocolError,
  QuotaExceeded,
  RateLimited,
  UnknownMessageType,
  UnknownSpace,
} from "./errors.js";

// --- protocol version and caps -------------------------------------------------------------
export const PROTOCOL_VERSION = 1;
export const SUPPORTED_VERSIONS: readonly number[] = [1];
export const MAX_MESSAGE_SIZE = 8 * 1024 * 1024;
export const MAX_REQUEST_ID = 2 ** 32 - 1;
export const ID_SIZE = 32;
export const MAX_SPACE_ID_LEN = 128;
export const NONCE_SIZE = 32;
export const TOKEN_SIZE = 16;
export const TOKEN_BUCKETS: readonly number[] = [16, 64, 256, 1024, 4096];
export const MAX_TOKENS = 4096;
export const MAX_RANGES = 256;
export const MAX_RANGE_ELEMENTS = 256;
export const MAX_RANGE_BITS = 64;
export const MAX_RANGE_COUNT = 2 ** 40;
export const MAX_HEADS = 256;
export const MAX_SNAPSHOT_PATH = 64;
export const MAX_CHANGE_SIZE = 1024 * 1024;
export const MAX_ACL_RECORD_SIZE = 256 * 1024;
export const MAX_HEADER_SIZE = 4 * 1024;
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;
export const MAX_BATCH_ITEMS = 4096;
export const MAX_OBJECT_PAGE = 16384;
export const MAX_PROOF_SIZE = 4 * 1024;
export const MAX_ERROR_TEXT = 256;
export const MAX_RECEIPT_SIZE = 1024 * 1024;
export const MAX_CHUNK_ADDRESSES = 16;
export const MAX_CHUNK_DATA = 256 * 1024 + 40;

export enum MsgType {
  SPACE_HELLO = 1,
  SPACE_TOKENS = 2,
  HEAD_SYNC_REQUEST = 10,
  HEAD_SYNC_RESPONSE = 11,
  HEAD_UPDATE = 20,
  FULL_SYNC_REQUEST = 21,
  FULL_SYNC_RESPONSE = 22,
  ACL_HEAD_UPDATE = 30,
  ACL_SYNC_REQUEST = 31,
  ACL_SYNC_RESPONSE = 32,
  BOOTSTRAP_REQUEST = 40,
  BOOTSTRAP_RESPONSE = 41,
  SPACE_OFFER = 50,
  RECEIPT_REQUEST = 51,
  RECEIPT_RESPONSE = 52,
  STORAGE_REFUSED = 53,
  CHUNK_REQUEST = 60,
  CHUNK_RESPONSE = 61,
  ERROR = 63,
}

export enum ErrorCode {
  UNKNOWN_SPACE = 1,
  ACCESS_DENIED = 2,
  TOO_LARGE = 3,
  RATE_LIMITED = 4,
  UNKNOWN_MESSAGE_TYPE = 5,
  MALFORMED = 6,
  UNSUPPORTED_VERSION = 7,
  INTERNAL = 8,
  QUOTA_EXCEEDED = 9,
}

type Bytes = Uint8Array;
type List<T> = readonly T[];

export interface RangeQuery { readonly bits: number; readonly prefix: bigint; readonly hash: Bytes; readonly count: number }
export interface RangeResult {
  readonly bits: number;
  readonly prefix: bigint;
  readonly hash: Bytes;
  readonly count: number;
  /** [object id, heads hash] pairs, or null when the range was not listed. */
  readonly elements: List<readonly [Bytes, Bytes]> | null;
}

export interface SpaceHello { readonly type: MsgType.SPACE_HELLO; readonly nonce: Bytes }
export interface SpaceTokens { readonly type: MsgType.SPACE_TOKENS; readonly tokens: List<Bytes> }
export interface HeadSyncRequest { readonly type: MsgType.HEAD_SYNC_REQUEST; readonly spaceId: string; readonly threshold: number; readonly ranges: List<RangeQuery> }
export interface HeadSyncResponse { readonly type: MsgType.HEAD_SYNC_RESPONSE; readonly spaceId: string; readonly results: List<RangeResult> }
export interface HeadUpdate { readonly type: MsgType.HEAD_UPDATE; readonly spaceId: string; readonly objectId: Bytes; readonly heads: List<Bytes>; readonly changes: List<Bytes> }
export interface FullSyncRequest {
  readonly type: MsgType.FULL_SYNC_REQUEST;
  readonly spaceId: string;
  readonly objectId: Bytes;
  readonly heads: List<Bytes>;
  readonly snapshotPath: List<Bytes>;
  readonly changes: List<Bytes>;
  readonly maxBytes: number;
  readonly fromSnapshot: boolean;
}
export interface FullSyncResponse { readonly type: MsgType.FULL_SYNC_RESPONSE; readonly spaceId: string; readonly objectId: Bytes; readonly heads: List<Bytes>; readonly changes: List<Bytes>; readonly more: boolean }
export interface AclHeadUpdate { readonly type: MsgType.ACL_HEAD_UPDATE; readonly spaceId: string; readonly heads: List<Bytes>; readonly records: List<Bytes> }
export interface AclSyncRequest { readonly type: MsgType.ACL_SYNC_REQUEST; readonly spaceId: string; readonly heads: List<Bytes>; readonly records: List<Bytes>; readonly maxBytes: number }
export interface AclSyncResponse { readonly type: MsgType.ACL_SYNC_RESPONSE; readonly spaceId: string; readonly heads: List<Bytes>; readonly records: List<Bytes>; readonly more: boolean }
export interface BootstrapRequest { readonly type: MsgType.BOOTSTRAP_REQUEST; readonly spaceId: string; readonly proof: Bytes | null; readonly after: Bytes | null; readonly maxObjects: number }
export interface BootstrapResponse {
  readonly type: MsgType.BOOTSTRAP_RESPONSE;
  readonly spaceId: string;
  readonly header: Bytes | null;
  readonly aclRecords: List<Bytes>;
  readonly objectIds: List<Bytes>;
  readonly nextAfter: Bytes | null;
}
export interface SpaceOffer { readonly type: MsgType.SPACE_OFFER; readonly spaceId: string }
export interface ReceiptRequest { readonly type: MsgType.RECEIPT_REQUEST; readonly spaceId: string; readonly nonce: Bytes }
export interface ReceiptResponse { readonly type: MsgType.RECEIPT_RESPONSE; readonly receipt: Bytes }
export interface StorageRefused { readonly type: MsgType.STORAGE_REFUSED; readonly spaceId: string; readonly objectId: Bytes; readonly code: ErrorCode; readonly message: string }
export interface ChunkRequest { readonly type: MsgType.CHUNK_REQUEST; readonly spaceId: string; readonly fileId: Bytes; readonly addresses: List<Bytes> }
export interface ChunkResponse { readonly type: MsgType.CHUNK_RESPONSE; readonly spaceId: string; readonly fileId: Bytes; readonly chunks: List<readonly [Bytes, Bytes]>; readonly missing: List<Bytes> }
export interface ErrorMessage { readonly type: MsgType.ERROR; readonly code: ErrorCode; readonly message: string; readonly retryAfterMs: number | null }

export type Message =
  | SpaceHello | SpaceTokens | HeadSyncRequest | HeadSyncResponse | HeadUpdate | FullSyncRequest
  | FullSyncResponse | AclHeadUpdate | AclSyncRequest | AclSyncResponse | BootstrapRequest
  | BootstrapResponse | SpaceOffer | ReceiptRequest | ReceiptResponse | StorageRefused
  | ChunkRequest | ChunkResponse | ErrorMessage;

export interface Envelope { readonly requestId: number; readonly message: Message }

/** An ERROR message (the refusal of the request with the same id). */
export function errorMessage(code: ErrorCode, message = "", retryAfterMs: number | null = null): ErrorMessage {
  return { type: MsgType.ERROR, code, message, retryAfterMs };
}

// --- encoding --------------------------------------------------------------------------------
const rangeFields = (q: RangeQuery): Value[] => [q.bits, q.prefix, q.hash, q.count];

/** The message's body fields in wire order. */
export function fields(m: Message): Value[] {
  switch (m.type) {
    case MsgType.SPACE_HELLO: return [m.nonce];
    case MsgType.SPACE_TOKENS: return [[...m.tokens]];
    case MsgType.HEAD_SYNC_REQUEST: return [m.spaceId, m.threshold, m.ranges.map(rangeFields)];
    case MsgType.HEAD_SYNC_RESPONSE:
      return [m.spaceId, m.results.map((r) => [...rangeFields(r), r.elements === null ? null : r.elements.map(([a, b]) => [a, b])])];
    case MsgType.HEAD_UPDATE: return [m.spaceId, m.objectId, [...m.heads], [...m.changes]];
    case MsgType.FULL_SYNC_REQUEST:
      return [m.spaceId, m.objectId, [...m.heads], [...m.snapshotPath], [...m.changes], m.maxBytes, m.fromSnapshot];
    case MsgType.FULL_SYNC_RESPONSE: return [m.spaceId, m.objectId, [...m.heads], [...m.changes], m.more];
    case MsgType.ACL_HEAD_UPDATE: return [m.spaceId, [...m.heads], [...m.records]];
    case MsgType.ACL_SYNC_REQUEST: return [m.spaceId, [...m.heads], [...m.records], m.maxBytes];
    case MsgType.ACL_SYNC_RESPONSE: return [m.spaceId, [...m.heads], [...m.records], m.more];
    case MsgType.BOOTSTRAP_REQUEST: return [m.spaceId, m.proof, m.after, m.maxObjects];
    case MsgType.BOOTSTRAP_RESPONSE: return [m.spaceId, m.header, [...m.aclRecords], [...m.objectIds], m.nextAfter];
    case MsgType.SPACE_OFFER: return [m.spaceId];
    case MsgType.RECEIPT_REQUEST: return [m.spaceId, m.nonce];
    case MsgType.RECEIPT_RESPONSE: return [m.receipt];
    case MsgType.STORAGE_REFUSED: return [m.spaceId, m.objectId, m.code, m.message];
    case MsgType.CHUNK_REQUEST: return [m.spaceId, m.fileId, [...m.addresses]];
    case MsgType.CHUNK_RESPONSE: return [m.spaceId, m.fileId, m.chunks.map(([a, d]) => [a, d]), [...m.missing]];
    case MsgType.ERROR: return [m.code, m.message, m.retryAfterMs];
  }
}

/** Encode `message` in a version-1 envelope; refuses what the peer would refuse (size). */
export function encode(message: Message, requestId = 0): Uint8Array {
  if (!Number.isInteger(requestId) || requestId < 0 || requestId > MAX_REQUEST_ID) {
    throw new RangeError(`request id ${requestId} out of range`);
  }
  const raw = pack([PROTOCOL_VERSION, message.type, requestId, fields(message)]);
  if (raw.length > MAX_MESSAGE_SIZE) {
    throw new MessageTooLarge(`${MsgType[message.type]} is ${raw.length} bytes (cap ${MAX_MESSAGE_SIZE})`);
  }
  return raw;
}

const ERROR_CODES: ReadonlyMap<number, ErrorCode> = new Map(
  Object.values(ErrorCode).filter((x): x is ErrorCode => typeof x === "number").map((x) => [x as number, x]));
const MSG_TYPES: ReadonlyMap<number, MsgType> = new Map(
  Object.values(MsgType).filter((x): x is MsgType => typeof x === "number").map((x) => [x as number, x]));

// --- decoding --------------------------------------------------------------------------------
class Body extends Reader {
  spaceId(): string {
    const s = this.text("space_id", MAX_SPACE_ID_LEN);
    if (s.length === 0) throw new DecodeError(`${this.what}.space_id: empty`);
    return s;
  }

  id(name: string): Uint8Array {
    return this.blob(name, { size: ID_SIZE });
  }

  heads(name = "heads", maxItems = MAX_HEADS): Uint8Array[] {
    return this.blobList(name, { size: ID_SIZE, maxItems });
  }

  batch(name: string, maxItem: number): Uint8Array[] {
    const items = this.blobList(name, { maxItems: MAX_BATCH_ITEMS, maxLen: maxItem });
    let total = 0;
    for (const x of items) total += x.length;
    if (total > MAX_BATCH_BYTES) {
      throw new DecodeError(`${this.what}.${name}: ${total} bytes exceeds the ${MAX_BATCH_BYTES}-byte batch cap`);
    }
    return items;
  }

  code(name = "code"): ErrorCode {
    const c = this.integer(name, 0, 255);
    const code = ERROR_CODES.get(c);
    if (code === undefined) throw new DecodeError(`${this.what}.code: unknown error code ${c}`);
    return code;
  }

  range(): [number, bigint, Uint8Array, number] {
    const bits = this.integer("bits", 0, MAX_RANGE_BITS);
    const prefix = this.bigInteger("prefix", 0n, (1n << 64n) - 1n);
    const hash = this.id("hash");
    const count = this.integer("count", 0, MAX_RANGE_COUNT);
    if (prefix >= 1n << BigInt(bits)) throw new DecodeError(`${this.what}: prefix ${prefix} does not fit in ${bits} bits`);
    return [bits, prefix, hash, count];
  }
}

function sub(v: Value, what: string, n: number): Body {
  const r = new Body(v, what);
  if (!Array.isArray(v) || v.length !== n) {
    throw new DecodeError(`${what}: ${Array.isArray(v) ? v.length : "?"} fields, expected ${n}`);
  }
  return r;
}

const FIELD_COUNT: Record<number, number> = {
  1: 1, 2: 1, 10: 3, 11: 2, 20: 4, 21: 7, 22: 5, 30: 3, 31: 4, 32: 4, 40: 4, 41: 5, 50: 1, 51: 2, 52: 1, 53: 4,
  60: 3, 61: 4, 63: 3,
};

function readBody(type: MsgType, value: Value, what: string): Message {
  const b = sub(value, what, FIELD_COUNT[type]!);
  let m: Message;
  switch (type) {
    case MsgType.SPACE_HELLO:
      m = { type, nonce: b.blob("nonce", { size: NONCE_SIZE }) };
      break;
    case MsgType.SPACE_TOKENS: {
      const tokens = b.blobList("tokens", { size: TOKEN_SIZE, maxItems: MAX_TOKENS });
      if (!TOKEN_BUCKETS.includes(tokens.length)) throw new DecodeError(`${what}.tokens: ${tokens.length} is not a padding bucket size`);
      m = { type, tokens };
      break;
    }
    case MsgType.HEAD_SYNC_REQUEST: {
      const spaceId = b.spaceId();
      const threshold = b.integer("threshold", 0, MAX_RANGE_ELEMENTS);
      const ranges = b.array("ranges", MAX_RANGES).map((x, i) => {
        const r = sub(x, `${what}.ranges[${i}]`, 4);
        const [bits, prefix, hash, count] = r.range();
        return { bits, prefix, hash, count };
      });
      m = { type, spaceId, threshold, ranges };
      break;
    }
    case MsgType.HEAD_SYNC_RESPONSE: {
      const spaceId = b.spaceId();
      const results = b.array("results", MAX_RANGES).map((x, i): RangeResult => {
        const w = `${what}.results[${i}]`;
        const r = sub(x, w, 5);
        const [bits, prefix, hash, count] = r.range();
        const raw = r.value("elements");
        let elements: [Uint8Array, Uint8Array][] | null = null;
        if (raw !== null) {
          const arr = new Body([raw], w).array("elements", MAX_RANGE_ELEMENTS);
          elements = arr.map((e, j) => {
            const p = sub(e, `${w}.elements[${j}]`, 2);
            return [p.id("object_id"), p.id("heads_hash")];
          });
          if (elements.length !== count) throw new DecodeError(`${w}: ${elements.length} elements but count ${count}`);
        }
        return { bits, prefix, hash, count, elements };
      });
      m = { type, spaceId, results };
      break;
    }
    case MsgType.HEAD_UPDATE:
      m = { type, spaceId: b.spaceId(), objectId: b.id("object_id"), heads: b.heads(), changes: b.batch("changes", MAX_CHANGE_SIZE) };
      break;
    case MsgType.FULL_SYNC_REQUEST:
      m = {
        type, spaceId: b.spaceId(), objectId: b.id("object_id"), heads: b.heads(),
        snapshotPath: b.heads("snapshot_path", MAX_SNAPSHOT_PATH), changes: b.batch("changes", MAX_CHANGE_SIZE),
        maxBytes: b.integer("max_bytes", 0, MAX_BATCH_BYTES), fromSnapshot: b.boolean("from_snapshot"),
      };
      break;
    case MsgType.FULL_SYNC_RESPONSE:
      m = { type, spaceId: b.spaceId(), objectId: b.id("object_id"), heads: b.heads(), changes: b.batch("changes", MAX_CHANGE_SIZE), more: b.boolean("more") };
      break;
    case MsgType.ACL_HEAD_UPDATE:
      m = { type, spaceId: b.spaceId(), heads: b.heads(), records: b.batch("records", MAX_ACL_RECORD_SIZE) };
      break;
    case MsgType.ACL_SYNC_REQUEST:
      m = { type, spaceId: b.spaceId(), heads: b.heads(), records: b.batch("records", MAX_ACL_RECORD_SIZE), maxBytes: b.integer("max_bytes", 0, MAX_BATCH_BYTES) };
      break;
    case MsgType.ACL_SYNC_RESPONSE:
      m = { type, spaceId: b.spaceId(), heads: b.heads(), records: b.batch("records", MAX_ACL_RECORD_SIZE), more: b.boolean("more") };
      break;
    case MsgType.BOOTSTRAP_REQUEST:
      m = {
        type, spaceId: b.spaceId(), proof: b.optionalBlob("proof", { maxLen: MAX_PROOF_SIZE }),
        after: b.optionalBlob("after", { size: ID_SIZE }), maxObjects: b.integer("max_objects", 0, MAX_OBJECT_PAGE),
      };
      break;
    case MsgType.BOOTSTRAP_RESPONSE:
      m = {
        type, spaceId: b.spaceId(), header: b.optionalBlob("header", { maxLen: MAX_HEADER_SIZE }),
        aclRecords: b.batch("acl_records", MAX_ACL_RECORD_SIZE), objectIds: b.heads("object_ids", MAX_OBJECT_PAGE),
        nextAfter: b.optionalBlob("next_after", { size: ID_SIZE }),
      };
      break;
    case MsgType.SPACE_OFFER:
      m = { type, spaceId: b.spaceId() };
      break;
    case MsgType.RECEIPT_REQUEST:
      m = { type, spaceId: b.spaceId(), nonce: b.blob("nonce", { size: NONCE_SIZE }) };
      break;
    case MsgType.RECEIPT_RESPONSE:
      m = { type, receipt: b.blob("receipt", { maxLen: MAX_RECEIPT_SIZE }) };
      break;
    case MsgType.STORAGE_REFUSED:
      m = { type, spaceId: b.spaceId(), objectId: b.id("object_id"), code: b.code(), message: b.text("message", MAX_ERROR_TEXT) };
      break;
    case MsgType.CHUNK_REQUEST:
      m = { type, spaceId: b.spaceId(), fileId: b.id("file_id"), addresses: b.heads("addresses", MAX_CHUNK_ADDRESSES) };
      break;
    case MsgType.CHUNK_RESPONSE: {
      const spaceId = b.spaceId();
      const fileId = b.id("file_id");
      const chunks = b.array("chunks", MAX_CHUNK_ADDRESSES).map((x, i): [Uint8Array, Uint8Array] => {
        const p = sub(x, `${what}.chunks[${i}]`, 2);
        return [p.id("address"), p.blob("data", { maxLen: MAX_CHUNK_DATA })];
      });
      m = { type, spaceId, fileId, chunks, missing: b.heads("missing", MAX_CHUNK_ADDRESSES) };
      break;
    }
    case MsgType.ERROR: {
      const code = b.code();
      const message = b.text("message", MAX_ERROR_TEXT);
      const v = b.value("retry_after_ms");
      let retryAfterMs: number | null = null;
      if (v !== null) retryAfterMs = new Reader([v], what).integer("retry_after_ms", 0, 2 ** 32 - 1);
      m = { type, code, message, retryAfterMs };
      break;
    }
  }
  b.end();
  return Object.freeze(m);
}

/** Errors from decode carry the envelope's request id (when it had a valid one). */
const REQUEST_IDS = new WeakMap<object, number>();

/** The request id a decode error belongs to, or null. */
export function requestIdOf(exc: unknown): number | null {
  return typeof exc === "object" && exc !== null ? REQUEST_IDS.get(exc) ?? null : null;
}

/** (version, type, request id or null when out of range, body offset), read in O(1). */
function header(raw: Uint8Array): [number, number, number | null, number] {
  const what = "sync message";
  const [n, p0] = readArrayHeader(raw, 0, what);
  if (n !== 4) throw new DecodeError(`${what}: ${n} envelope fields, expected 4`);
  const [version, p1] = readInt(raw, p0, what);
  const [mtype, p2] = readInt(raw, p1, what);
  const [rid, p3] = readInt(raw, p2, what);
  const num = (x: number | bigint): number => (typeof x === "bigint" ? -1 : x);
  const r = num(rid);
  return [num(version), num(mtype), r >= 0 && r <= MAX_REQUEST_ID ? r : null, p3];
}

// A head-sync response holds up to 256 results of 256 two-element pairs: ~66 000 arrays.
const MAX_CONTAINERS = 70_000;

/** Decode and check one envelope. Throws only typed errors (see the module comment). */
export function decode(raw: Uint8Array): Envelope {
  if (!(raw instanceof Uint8Array)) throw new DecodeError("sync message: expected bytes");
  if (raw.length > MAX_MESSAGE_SIZE) throw new MessageTooLarge(`message is ${raw.length} bytes (cap ${MAX_MESSAGE_SIZE})`);
  const [version, mtype, requestId, pos] = header(raw);
  try {
    if (!SUPPORTED_VERSIONS.includes(version)) throw new UnsupportedVersion(`sync message: format version ${version} is not supported`);
    if (requestId === null) throw new DecodeError(`sync message.request_id: out of range [0, ${MAX_REQUEST_ID}]`);
    const type = MSG_TYPES.get(mtype);
    if (type === undefined) throw new UnknownMessageType(`message type ${mtype} is not known to this build`);
    const name = MsgType[type].toLowerCase();
    const body = unpackBounded(raw.subarray(pos), { maxSize: MAX_MESSAGE_SIZE, maxContainers: MAX_CONTAINERS, maxArray: MAX_OBJECT_PAGE, what: name });
    return { requestId, message: readBody(type, body, name) };
  } catch (exc) {
    if (exc instanceof P2PSyncError && requestId !== null) REQUEST_IDS.set(exc, requestId);
    throw exc;
  }
}

/** The request id of a message we could not decode (or null). */
export function peekRequestId(raw: Uint8Array): number | null {
  try {
    return header(raw)[2];
  } catch {
    return null;
  }
}

/** Map a local exception raised while handling a request to the ERROR to send back; internal
 * errors carry no text so nothing leaks. */
export function errorFor(exc: unknown, retryAfterMs: number | null = null): ErrorMessage {
  let code: ErrorCode;
  if (exc instanceof UnsupportedVersion) code = ErrorCode.UNSUPPORTED_VERSION;
  else if (exc instanceof UnknownMessageType) code = ErrorCode.UNKNOWN_MESSAGE_TYPE;
  else if (exc instanceof MessageTooLarge) code = ErrorCode.TOO_LARGE;
  else if (exc instanceof DecodeError) code = ErrorCode.MALFORMED;
  else if (exc instanceof RateLimited) code = ErrorCode.RATE_LIMITED;
  else if (exc instanceof UnknownSpace) code = ErrorCode.UNKNOWN_SPACE;
  else if (exc instanceof AccessDenied) code = ErrorCode.ACCESS_DENIED;
  else if (exc instanceof QuotaExceeded) code = ErrorCode.QUOTA_EXCEEDED;
  else code = ErrorCode.INTERNAL;
  let text = exc instanceof P2PSyncError ? Array.from(exc.message).slice(0, MAX_ERROR_TEXT).join("") : "";
  if (code === ErrorCode.INTERNAL) text = "";
  return errorMessage(code, text, retryAfterMs);
}

/** The typed local error matching a remote refusal. */
export function toException(m: ErrorMessage): ProtocolError {
  const text = `peer refused: ${ErrorCode[m.code].toLowerCase()}${m.message ? ` (${m.message})` : ""}`;
  if (m.code === ErrorCode.UNKNOWN_SPACE) return new UnknownSpace(text);
  if (m.code === ErrorCode.RATE_LIMITED) return new RateLimited(text);
  if (m.code === ErrorCode.TOO_LARGE) return new MessageTooLarge(text);
  return new ProtocolError(text);
}

/** The longest prefix of items within maxBytes / maxItems (at least one item when it fits the
 * hard batch cap, so progress is always possible), and whether items were left over. */
export function takeBatch(items: readonly Uint8Array[], maxBytes: number, maxItems = MAX_BATCH_ITEMS): [Uint8Array[], boolean] {
  const cap = Math.min(maxBytes, MAX_BATCH_BYTES);
  const out: Uint8Array[] = [];
  let total = 0;
  for (const raw of items) {
    if (out.length >= maxItems) break;
    if (out.length > 0 && total + raw.length > cap) break;
    if (out.length === 0 && raw.length > MAX_BATCH_BYTES) {
      throw new MessageTooLarge(`one item is ${raw.length} bytes (batch cap ${MAX_BATCH_BYTES})`);
    }
    out.push(raw);
    total += raw.length;
  }
  return [out, out.length < items.length];
}

/** The response type each request expects. */
export const RESPONSE_FOR: Partial<Record<MsgType, MsgType>> = {
  [MsgType.HEAD_SYNC_REQUEST]: MsgType.HEAD_SYNC_RESPONSE,
  [MsgType.FULL_SYNC_REQUEST]: MsgType.FULL_SYNC_RESPONSE,
  [MsgType.ACL_SYNC_REQUEST]: MsgType.ACL_SYNC_RESPONSE,
  [MsgType.BOOTSTRAP_REQUEST]: MsgType.BOOTSTRAP_RESPONSE,
  [MsgType.RECEIPT_REQUEST]: MsgType.RECEIPT_RESPONSE,
};
