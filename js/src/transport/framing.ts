/**
 * Sans-IO framing (p2psync/transport/framing.py): length-prefixed Noise messages and the typed
 * records inside them.
 *
 * Wire frame: u32 length (big-endian) | body with 1 <= length <= maxFrame (at most 65535, the
 * Noise limit). Before the handshake completes the body is a Noise handshake message; after, a
 * Noise transport message whose plaintext is a record: u8 type | u32 stream id | payload. The
 * decoder never buffers more than one frame; any defect throws FrameError.
 */
import { FrameError } from "../errors.js";
import { type CipherState, MAX_MESSAGE_LEN, TAG_LEN } from "./noise.js";

export const MAX_FRAME = MAX_MESSAGE_LEN;
export const RECORD_HEADER_SIZE = 5;
/** Largest record payload that fits one encrypted frame. */
export const MAX_RECORD_PAYLOAD = MAX_FRAME - TAG_LEN - RECORD_HEADER_SIZE;

/** Record kinds. DATA/DATA_END/FIN travel on their stream; the rest on the control path. */
export const RecordType = {
  DATA: 0,
  DATA_END: 1,
  FIN: 2,
  RESET: 3,
  CREDIT: 4,
  STREAMS: 5,
  PING: 6,
  PONG: 7,
  CLOSE: 8,
  ACCEPT: 9,
} as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];
export const RECORD_NAMES: readonly string[] = Object.keys(RecordType);

export const isDataPath = (t: RecordType): boolean => t === RecordType.DATA || t === RecordType.DATA_END || t === RecordType.FIN;

export interface WireRecord {
  readonly type: RecordType;
  readonly stream: number;
  readonly payload: Uint8Array;
}

export function encodeRecord(type: RecordType, stream: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(RECORD_HEADER_SIZE + payload.length);
  out[0] = type;
  new DataView(out.buffer).setUint32(1, stream);
  out.set(payload, RECORD_HEADER_SIZE);
  return out;
}

/** Parse a record; unknown types and short records are frame errors. */
export function decodeRecord(plaintext: Uint8Array): WireRecord {
  if (plaintext.length < RECORD_HEADER_SIZE) throw new FrameError("record shorter than its header");
  const type = plaintext[0]!;
  if (type > RecordType.ACCEPT) throw new FrameError(`unknown record type ${type}`);
  const stream = new DataView(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength).getUint32(1);
  return { type: type as RecordType, stream, payload: plaintext.subarray(RECORD_HEADER_SIZE) };
}

/** Splits a byte stream into frame bodies; holds at most one partial frame. */
export class FrameDecoder {
  private buf: Uint8Array = new Uint8Array(0);
  private need = 0; // body length of the frame being read, 0 while reading a header
  readonly maxFrame: number;

  constructor(maxFrame: number = MAX_FRAME) {
    if (maxFrame < 1 || maxFrame > MAX_FRAME) throw new Error(`maxFrame must be within 1..${MAX_FRAME}`);
    this.maxFrame = maxFrame;
  }

  /** Bytes of an incomplete frame held (non-zero: the peer stopped mid-frame). */
  get pending(): number {
    return this.buf.length;
  }

  /** Add received bytes; return every complete frame body, in order. */
  feed(data: Uint8Array): Uint8Array[] {
    let buf: Uint8Array;
    if (this.buf.length === 0) buf = data;
    else {
      buf = new Uint8Array(this.buf.length + data.length);
      buf.set(this.buf);
      buf.set(data, this.buf.length);
    }
    const out: Uint8Array[] = [];
    let pos = 0;
    const end = buf.length;
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    for (;;) {
      if (this.need === 0) {
        if (end - pos < 4) break;
        const n = dv.getUint32(pos);
        if (n === 0 || n > this.maxFrame) {
          this.buf = new Uint8Array(0);
          throw new FrameError(`frame length ${n} outside 1..${this.maxFrame}: oversize or garbage`);
        }
        this.need = n;
        pos += 4;
      }
      if (end - pos < this.need) break;
      out.push(buf.slice(pos, pos + this.need));
      pos += this.need;
      this.need = 0;
    }
    this.buf = buf.slice(pos);
    return out;
  }

  /** The byte stream ended; a partial frame means the peer stopped mid-frame. */
  eof(): void {
    if (this.buf.length > 0 || this.need > 0) throw new FrameError(`connection ended mid-frame (${this.buf.length} bytes pending)`);
  }
}

export function encodeFrame(body: Uint8Array): Uint8Array {
  if (body.length === 0 || body.length > MAX_FRAME) throw new FrameError(`frame body of ${body.length} bytes outside 1..${MAX_FRAME}`);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

const EMPTY = new Uint8Array(0);

/** Encrypts records into frames and back with one Noise CipherState per direction. */
export class SecureFramer {
  readonly decoder: FrameDecoder;

  constructor(
    readonly send: CipherState,
    readonly recv: CipherState,
    maxFrame: number = MAX_FRAME,
  ) {
    this.decoder = new FrameDecoder(maxFrame);
  }

  seal(record: Uint8Array): Uint8Array {
    return encodeFrame(this.send.encryptWithAd(EMPTY, record));
  }

  open(data: Uint8Array): WireRecord[] {
    return this.decoder.feed(data).map((body) => decodeRecord(this.recv.decryptWithAd(EMPTY, body)));
  }
}
