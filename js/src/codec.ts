/**
 * Canonical msgpack and content ids, as p2psync/codec.py defines them.
 *
 * Records are msgpack arrays with a fixed field order, so one value has one encoding (the
 * smallest integer, string, binary and array headers; bytes as bin, text as str). A content id
 * is the BLAKE2b-256 of the exact bytes received: never re-encode and re-hash.
 *
 * Encoding goes through @msgpack/msgpack after a walk that normalises integers (a bigint that
 * fits a safe JS integer becomes a number, so it takes the smallest header) and refuses what
 * Python's `pack(strict_types=True)` would not write (undefined, functions, Map, Date, unsafe
 * integral numbers, lone surrogates).
 *
 * Decoding is strict and bounded like `unpack_bounded`: before @msgpack/msgpack builds any value,
 * one linear scan of the bytes refuses trailing bytes, truncation, the reserved byte 0xc1, every
 * ext type, invalid UTF-8, map keys that are not strings, lengths over the caps, nesting deeper
 * than 1024 and more than `maxContainers` arrays/maps in total — so no input makes the decoder
 * allocate millions of objects. Integers come back as `number` when they are safe JS integers,
 * as `bigint` otherwise.
 */
import { Decoder, Encoder } from "@msgpack/msgpack";
import { blake2b } from "@noble/hashes/blake2.js";
import { DecodeError, UnsupportedVersion } from "./errors.js";

/** Hard ceiling for any single record; transport frames have their own (smaller) caps. */
export const MAX_RECORD_SIZE = 16 * 1024 * 1024;
export const ID_SIZE = 32;
/** Default cap on the arrays and maps one generic unpack may build (codec.py). */
export const DEFAULT_MAX_CONTAINERS = 16384;
/** msgpack-python's unpacker stack: 1024 nested containers decode, 1025 do not. */
export const MAX_DEPTH = 1024;

export type Value =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Value[]
  | { [key: string]: Value };

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const LONE_SURROGATE = /\p{Cs}/u;

const encoder = new Encoder({ useBigInt64: true, maxDepth: MAX_DEPTH });

function normalise(v: unknown, depth: number): Value {
  if (depth > MAX_DEPTH) throw new DecodeError("cannot encode value: nested too deeply");
  if (v === null || typeof v === "boolean") return v;
  if (typeof v === "string") {
    if (LONE_SURROGATE.test(v)) throw new DecodeError("cannot encode value: lone surrogate in string");
    return v;
  }
  if (typeof v === "number") {
    if (Number.isInteger(v) && !Number.isSafeInteger(v)) {
      throw new DecodeError("cannot encode value: integer beyond 2^53 must be a bigint");
    }
    // @msgpack/msgpack (useBigInt64) writes integral numbers beyond 32 bits as float64:
    // hand those over as bigint, which it writes as uint64/int64 like msgpack-python.
    return Number.isInteger(v) && (v > 0xffffffff || v < -0x80000000) ? BigInt(v) : v;
  }
  if (typeof v === "bigint") {
    if (v > U64_MAX || v < I64_MIN) throw new DecodeError("cannot encode value: integer out of range");
    return v <= 0xffffffffn && v >= -0x80000000n ? Number(v) : v;
  }
  if (v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map((x: unknown) => normalise(x, depth + 1));
  if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    const out: Record<string, Value> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) out[k] = normalise(x, depth + 1);
    return out;
  }
  throw new DecodeError(`cannot encode value: unsupported type ${Object.prototype.toString.call(v)}`);
}

/** Encode `obj` (arrays, integers, bytes, strings, booleans, null) as canonical msgpack. */
export function pack(obj: unknown): Uint8Array {
  const v = normalise(obj, 0);
  try {
    return encoder.encode(v);
  } catch (exc) {
    throw new DecodeError(`cannot encode value: ${String(exc)}`);
  }
}

/** The content id of `raw`: BLAKE2b-256 of the exact bytes. */
export function contentId(raw: Uint8Array): Uint8Array {
  return blake2b(raw, { dkLen: ID_SIZE });
}

export interface UnpackOptions {
  maxSize?: number;
  maxContainers?: number;
  maxArray?: number;
  what?: string;
  /** Require the bytes to be exactly pack() of the value (default true, docs/protocol.md). */
  canonical?: boolean;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Canonical numbers: msgpack-python writes a non-negative integer in the smallest unsigned
 * form and a negative one in the smallest signed form, and floats only as float64.
 */
function checkCanonicalNumber(b: number, dv: DataView, pos: number, notCanonical: () => never): void {
  switch (b) {
    case 0xca: notCanonical(); break;
    case 0xcb: break;
    case 0xcc: if (dv.getUint8(pos) < 0x80) notCanonical(); break;
    case 0xcd: if (dv.getUint16(pos) <= 0xff) notCanonical(); break;
    case 0xce: if (dv.getUint32(pos) <= 0xffff) notCanonical(); break;
    case 0xcf: if (dv.getBigUint64(pos) <= 0xffffffffn) notCanonical(); break;
    case 0xd0: if (dv.getInt8(pos) >= -32) notCanonical(); break;
    case 0xd1: if (dv.getInt16(pos) >= -128) notCanonical(); break;
    case 0xd2: if (dv.getInt32(pos) >= -32768) notCanonical(); break;
    case 0xd3: if (dv.getBigInt64(pos) >= -0x80000000n) notCanonical(); break;
  }
}

/**
 * Validate that `raw` is exactly one msgpack value within the limits, without building it.
 * Throws DecodeError (message mirrors the Python refusal) on the first defect.
 */
function scan(raw: Uint8Array, maxLen: number, maxContainers: number, maxArray: number, what: string, canonical: boolean): void {
  const n = raw.length;
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  let pos = 0;
  let containers = 0;
  const fail = (msg: string): never => {
    throw new DecodeError(`${what}: malformed msgpack (${msg})`);
  };
  const need = (k: number): void => {
    if (pos + k > n) fail("truncated");
  };
  const notCanonical = (): never => {
    throw new DecodeError(`${what}: not canonical msgpack (a value is encoded in a longer or other form than the one canonical encoding prescribes)`);
  };
  /**
   * Canonical: the header used must be the smallest one for `len`: fix (up to fixMax; bin has
   * none, fixMax -1), then 8 bits (str and bin only), 16, 32.
   */
  const minimal = (len: number, header: 0 | 8 | 16 | 32, fixMax: number, has8: boolean): void => {
    if (!canonical) return;
    const want = len <= fixMax ? 0 : has8 && len <= 0xff ? 8 : len <= 0xffff ? 16 : 32;
    if (header !== want) notCanonical();
  };
  // Stack of remaining item counts; a map of m entries pushes 2m, keys at even remainders.
  const remaining: number[] = [];
  const isMap: boolean[] = [];
  const keySets: (Set<string> | null)[] = [];
  let items = 1; // the top-level value
  for (;;) {
    if (items === 0) {
      if (remaining.length === 0) break;
      items = remaining.pop()!;
      isMap.pop();
      keySets.pop();
      continue;
    }
    const atKey = isMap.length > 0 && isMap[isMap.length - 1] === true && items % 2 === 0;
    items -= 1;
    need(1);
    const b = raw[pos++]!;
    let strLen = -1;
    let binLen = -1;
    let container = -1;
    let map = false;
    if (b <= 0x7f || b >= 0xe0) {
      if (atKey) fail("int is not allowed for map key");
      continue;
    }
    let header: 0 | 8 | 16 | 32 = 0;
    if (b >= 0xa0 && b <= 0xbf) strLen = b & 0x1f;
    else if (b >= 0x90 && b <= 0x9f) container = b & 0x0f;
    else if (b >= 0x80 && b <= 0x8f) {
      container = b & 0x0f;
      map = true;
    } else {
      header = ({ 0xc4: 8, 0xc5: 16, 0xc6: 32, 0xd9: 8, 0xda: 16, 0xdb: 32, 0xdc: 16, 0xdd: 32, 0xde: 16, 0xdf: 32 } as Record<number, 8 | 16 | 32>)[b] ?? 0;
      switch (b) {
        case 0xc0:
        case 0xc2:
        case 0xc3:
          if (atKey) fail(`${b === 0xc0 ? "NoneType" : "bool"} is not allowed for map key`);
          continue;
        case 0xc1:
          fail("reserved byte 0xc1");
          break;
        case 0xc4: need(1); binLen = raw[pos]!; pos += 1; break;
        case 0xc5: need(2); binLen = dv.getUint16(pos); pos += 2; break;
        case 0xc6: need(4); binLen = dv.getUint32(pos); pos += 4; break;
        case 0xd9: need(1); strLen = raw[pos]!; pos += 1; break;
        case 0xda: need(2); strLen = dv.getUint16(pos); pos += 2; break;
        case 0xdb: need(4); strLen = dv.getUint32(pos); pos += 4; break;
        case 0xdc: need(2); container = dv.getUint16(pos); pos += 2; break;
        case 0xdd: need(4); container = dv.getUint32(pos); pos += 4; break;
        case 0xde: need(2); container = dv.getUint16(pos); pos += 2; map = true; break;
        case 0xdf: need(4); container = dv.getUint32(pos); pos += 4; map = true; break;
        case 0xca: case 0xcb: case 0xcc: case 0xcd: case 0xce: case 0xcf:
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
          if (atKey) fail(`${b <= 0xcb ? "float" : "int"} is not allowed for map key`);
          const width = { 0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8 }[b];
          need(width);
          if (canonical) checkCanonicalNumber(b, dv, pos, notCanonical);
          pos += width;
          continue;
        }
        default:
          // 0xc7-0xc9 ext 8/16/32, 0xd4-0xd8 fixext: max_ext_len=0 refuses every ext.
          fail("ext types are refused (max_ext_len 0)");
      }
    }
    if (strLen >= 0) {
      if (strLen > maxLen) fail(`${strLen} exceeds max_str_len(${maxLen})`);
      need(strLen);
      let text = "";
      try {
        text = utf8.decode(raw.subarray(pos, pos + strLen));
      } catch {
        fail("invalid UTF-8 in str");
      }
      pos += strLen;
      minimal(strLen, header, 31, true);
      const keys = atKey ? keySets[keySets.length - 1] : null;
      if (keys) {
        // Python builds a dict: a repeated key collapses, so the bytes are not pack(value).
        if (keys.has(text)) notCanonical();
        keys.add(text);
      }
      continue;
    }
    if (binLen >= 0) {
      if (binLen > maxLen) fail(`${binLen} exceeds max_bin_len(${maxLen})`);
      minimal(binLen, header, -1, true);
      // msgpack-python: bytes are accepted as map keys (strict_map_key allows str and bytes),
      // but @msgpack/msgpack cannot build them; no p2psync record has maps, so refuse.
      if (atKey) fail("bytes map keys are not supported by this decoder");
      need(binLen);
      pos += binLen;
      continue;
    }
    // container
    if (atKey) fail(`${map ? "dict" : "list"} is not allowed for map key`);
    if (container > maxArray) fail(`${container} exceeds max_${map ? "map" : "array"}_len(${maxArray})`);
    minimal(container, header, 15, false);
    containers += 1;
    if (containers > maxContainers) {
      throw new DecodeError(`${what}: more than ${maxContainers} nested arrays/maps (refused while decoding)`);
    }
    if (remaining.length + 1 > MAX_DEPTH) fail("nested deeper than 1024");
    remaining.push(items);
    isMap.push(map);
    keySets.push(map && canonical ? new Set<string>() : null);
    items = map ? container * 2 : container;
  }
  if (pos !== n) throw new DecodeError(`${what}: trailing bytes after the value`);
}

function fromDecoded(v: unknown): Value {
  if (typeof v === "bigint") {
    const n = Number(v);
    return Number.isSafeInteger(n) ? n : v;
  }
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = fromDecoded(v[i]);
    return v as Value[];
  }
  if (v instanceof Uint8Array) return v;
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) o[k] = fromDecoded(o[k]);
    return o as Record<string, Value>;
  }
  return v as Value;
}

function checkInput(raw: unknown, maxSize: number, what: string): asserts raw is Uint8Array {
  if (!(raw instanceof Uint8Array)) throw new DecodeError(`${what}: expected bytes`);
  if (raw.length > maxSize) throw new DecodeError(`${what}: ${raw.length} bytes exceeds the ${maxSize}-byte limit`);
}

/**
 * Decode one msgpack value from `raw` with its total work bounded (Python `unpack_bounded`):
 * at most `maxContainers` arrays/maps in total, each with at most `maxArray` items.
 */
export function unpackBounded(raw: Uint8Array, opts: UnpackOptions = {}): Value {
  const maxSize = opts.maxSize ?? MAX_RECORD_SIZE;
  const what = opts.what ?? "record";
  checkInput(raw, maxSize, what);
  const limit = Math.min(maxSize, opts.maxArray ?? maxSize);
  scan(raw, maxSize, opts.maxContainers ?? DEFAULT_MAX_CONTAINERS, limit, what, opts.canonical ?? true);
  try {
    const dec = new Decoder({ useBigInt64: true, maxExtLength: 0 });
    return fromDecoded(dec.decode(raw));
  } catch (exc) {
    throw new DecodeError(`${what}: malformed msgpack (${String(exc)})`);
  }
}

/** Decode one value, rejecting trailing bytes and oversize input (Python `unpack`). */
export function unpack(raw: Uint8Array, opts: { maxSize?: number; what?: string; canonical?: boolean } = {}): Value {
  return unpackBounded(raw, opts);
}

/** Length of the msgpack array at `buf[pos]` and the offset after its header. */
export function readArrayHeader(buf: Uint8Array, pos: number, what: string): [number, number] {
  if (pos >= buf.length) throw new DecodeError(`${what}: truncated`);
  const b = buf[pos]!;
  if (b >= 0x90 && b <= 0x9f) return [b & 0x0f, pos + 1];
  if (b === 0xdc || b === 0xdd) {
    const k = b === 0xdc ? 2 : 4;
    if (pos + 1 + k > buf.length) throw new DecodeError(`${what}: truncated`);
    const dv = new DataView(buf.buffer, buf.byteOffset + pos + 1, k);
    return [k === 2 ? dv.getUint16(0) : dv.getUint32(0), pos + 1 + k];
  }
  throw new DecodeError(`${what}: expected an array`);
}

/** The msgpack integer at `buf[pos]` (any width) and the offset after it. */
export function readInt(buf: Uint8Array, pos: number, what: string): [number | bigint, number] {
  if (pos >= buf.length) throw new DecodeError(`${what}: truncated`);
  const b = buf[pos]!;
  if (b <= 0x7f) return [b, pos + 1];
  if (b >= 0xe0) return [b - 0x100, pos + 1];
  const widths: Record<number, number> = { 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8 };
  const k = widths[b];
  if (k === undefined) throw new DecodeError(`${what}: expected an integer`);
  if (pos + 1 + k > buf.length) throw new DecodeError(`${what}: truncated`);
  const dv = new DataView(buf.buffer, buf.byteOffset + pos + 1, k);
  const signed = b >= 0xd0;
  let v: number | bigint;
  if (k === 1) v = signed ? dv.getInt8(0) : dv.getUint8(0);
  else if (k === 2) v = signed ? dv.getInt16(0) : dv.getUint16(0);
  else if (k === 4) v = signed ? dv.getInt32(0) : dv.getUint32(0);
  else {
    const big = signed ? dv.getBigInt64(0) : dv.getBigUint64(0);
    const num = Number(big);
    v = Number.isSafeInteger(num) ? num : big;
  }
  return [v, pos + 1 + k];
}

/** Python's len() of a str: the number of code points (what string iteration yields). */
export function codePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

function typeName(v: unknown): string {
  if (v === null) return "NoneType";
  if (Array.isArray(v)) return "list";
  if (v instanceof Uint8Array) return "bytes";
  if (typeof v === "string") return "str";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (typeof v === "bigint") return "int";
  return "dict";
}

/**
 * Reads the positional fields of a decoded record array, checking each type and size
 * (Python `codec.Reader`). Integers that are not safe JS integers are refused by `integer`
 * (no p2psync field needs more than 2^53); use `bigInteger` where the full u64 range matters.
 */
export class Reader {
  private readonly items: Value[];
  private pos = 0;
  readonly what: string;

  constructor(value: Value, what: string, minFields = 0) {
    if (!Array.isArray(value)) throw new DecodeError(`${what}: expected an array, got ${typeName(value)}`);
    if (value.length < minFields) {
      throw new DecodeError(`${what}: ${value.length} fields, expected at least ${minFields}`);
    }
    this.items = value;
    this.what = what;
  }

  private fail(name: string, msg: string): never {
    throw new DecodeError(`${this.what}.${name}: ${msg}`);
  }

  private next(name: string): Value {
    if (this.pos >= this.items.length) this.fail(name, "missing field");
    return this.items[this.pos++]!;
  }

  /** Read the leading format version and refuse versions we do not know. */
  version(supported: readonly number[]): number {
    const v = this.integer("version", 0);
    if (!supported.includes(v)) throw new UnsupportedVersion(`${this.what}: format version ${v} is not supported`);
    return v;
  }

  bigInteger(name: string, min: bigint = I64_MIN, max: bigint = U64_MAX): bigint {
    const v = this.next(name);
    if (typeof v !== "number" && typeof v !== "bigint") this.fail(name, `expected int, got ${typeName(v)}`);
    if (typeof v === "number" && !Number.isInteger(v)) this.fail(name, "expected int, got float");
    const b = BigInt(v);
    if (b < min || b > max) this.fail(name, `${b} out of range [${min}, ${max}]`);
    return b;
  }

  integer(name: string, min: number = Number.MIN_SAFE_INTEGER, max: number = Number.MAX_SAFE_INTEGER): number {
    const v = this.next(name);
    if (typeof v === "bigint") this.fail(name, `${v} out of range [${min}, ${max}]`);
    if (typeof v !== "number" || !Number.isInteger(v)) this.fail(name, `expected int, got ${typeName(v)}`);
    if (v < min || v > max) this.fail(name, `${v} out of range [${min}, ${max}]`);
    return v;
  }

  boolean(name: string): boolean {
    const v = this.next(name);
    if (typeof v !== "boolean") this.fail(name, `expected bool, got ${typeName(v)}`);
    return v;
  }

  blob(name: string, opts: { size?: number; maxLen?: number } = {}): Uint8Array {
    return this.checkBytes(name, this.next(name), opts);
  }

  optionalBlob(name: string, opts: { size?: number; maxLen?: number } = {}): Uint8Array | null {
    const v = this.next(name);
    return v === null ? null : this.checkBytes(name, v, opts);
  }

  private checkBytes(name: string, v: Value, opts: { size?: number; maxLen?: number }): Uint8Array {
    if (!(v instanceof Uint8Array)) this.fail(name, `expected bytes, got ${typeName(v)}`);
    if (opts.size !== undefined && v.length !== opts.size) this.fail(name, `expected ${opts.size} bytes, got ${v.length}`);
    const maxLen = opts.maxLen ?? MAX_RECORD_SIZE;
    if (v.length > maxLen) this.fail(name, `${v.length} bytes exceeds ${maxLen}`);
    return v;
  }

  /** A string of at most `maxLen` characters (Python counts code points, so do we). */
  text(name: string, maxLen = 1024): string {
    const v = this.next(name);
    if (typeof v !== "string") this.fail(name, `expected str, got ${typeName(v)}`);
    const chars = codePoints(v);
    if (chars > maxLen) this.fail(name, `${chars} chars exceeds ${maxLen}`);
    return v;
  }

  blobList(name: string, opts: { size?: number; maxItems?: number; maxLen?: number } = {}): Uint8Array[] {
    const v = this.array(name, opts.maxItems ?? 1024);
    return v.map((x, i) => this.checkBytes(`${name}[${i}]`, x, opts));
  }

  array(name: string, maxItems = 1024): Value[] {
    const v = this.next(name);
    if (!Array.isArray(v)) this.fail(name, `expected array, got ${typeName(v)}`);
    if (v.length > maxItems) this.fail(name, `${v.length} items exceeds ${maxItems}`);
    return v;
  }

  value(name: string): Value {
    return this.next(name);
  }

  /** Require that every field was consumed (no unknown trailing fields). */
  end(): void {
    if (this.pos !== this.items.length) {
      throw new DecodeError(`${this.what}: ${this.items.length - this.pos} unexpected trailing field(s)`);
    }
  }
}
