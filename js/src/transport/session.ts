/**
 * Sans-IO stream multiplexer (p2psync/transport/session.py): logical streams, credit flow
 * control, stream limits, keepalive and the receive budget.
 *
 * It consumes decrypted records and produces [route, record] pairs to encrypt and send (route =
 * the stream a record belongs on; TCP and WebSocket ignore it because every record carries its
 * stream id). Stream ids follow QUIC numbering: 0 is control, the initiator opens 4, 8, 12, …,
 * the responder 1, 5, 9, ….
 *
 * Flow control: a receiver grants each stream `streamWindow` bytes and grants more only as its
 * application consumes messages. Stream limit: a receiver lets its peer open `maxStreams`
 * streams and raises that total by one each time a peer-opened stream is fully closed. The
 * Budget caps unaccepted peer streams and received-but-unconsumed bytes per connection (and, with
 * a BufferPool, summed over connections); data beyond it resets the stream it came on, and a
 * peer that keeps doing it is closed.
 */
import { randomBytes } from "@noble/hashes/utils.js";
import { BudgetExceeded, FlowControlError, FrameError, PeerTimeout, StreamLimitExceeded, TransportError } from "../errors.js";
import { encodeRecord, isDataPath, MAX_RECORD_PAYLOAD, RECORD_NAMES, type WireRecord, RecordType } from "./framing.js";
import type { Limits } from "./handshake.js";

export const CONTROL = 0;

/** Codes carried by CLOSE records. */
export const CloseCode = {
  NORMAL: 0,
  PROTOCOL: 1,
  REFUSED: 2,
  TIMEOUT: 3,
  STREAM_LIMIT: 4,
  FLOW_CONTROL: 5,
  INTERNAL: 6,
} as const;

/** Receive-side memory limits of one connection. */
export class Budget {
  constructor(
    readonly maxPendingStreams = 4,
    readonly connection = 16 << 20,
    readonly floor = 256 << 10,
    readonly strikes = 8,
  ) {
    if (maxPendingStreams < 1 || connection < 1 || floor < 0) throw new Error("budget values must be positive");
  }
}

/** Received-but-unread bytes above each connection's floor, summed over connections. */
export class BufferPool {
  used = 0;
  peak = 0;
  constructor(public capacity: number) {}
}

/** PING after `interval` s without sending; give up after `timeout` s of silence. */
export class Keepalive {
  constructor(
    readonly interval = 1.5,
    readonly timeout = 5.0,
  ) {
    if (!(interval > 0 && interval < timeout)) throw new Error("keepalive interval must be positive and below the timeout");
  }
}

export type Event =
  | { kind: "opened"; stream: number }
  | { kind: "message"; stream: number; data: Uint8Array }
  | { kind: "finished"; stream: number }
  | { kind: "reset"; stream: number; reason: string; local: boolean }
  | { kind: "credit"; stream: number }
  | { kind: "streams" }
  | { kind: "accepted"; payload: Uint8Array }
  | { kind: "closed"; code: number; reason: string };

class StreamState {
  sendOpen = true;
  recvOpen = true;
  sent = 0;
  received = 0;
  consumed = 0;
  partial: Uint8Array[] = [];
  partialLen = 0;
  constructor(
    readonly local: boolean,
    public sendLimit: number,
    public granted: number,
  ) {}
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

/** UTF-8 bytes of `s`, cut to at most `max` bytes (Python: s.encode()[:max]). */
export function utf8Prefix(s: string, max: number): Uint8Array {
  return enc.encode(s).subarray(0, max);
}

function concatAll(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export interface SessionOptions {
  initiator: boolean;
  local: Limits;
  remote: Limits;
  keepalive?: Keepalive;
  now?: number;
  budget?: Budget | null;
  pool?: BufferPool | null;
}

/** The multiplexer state machine (no I/O, no clock of its own: pass `now` in seconds). */
export class Session {
  readonly initiator: boolean;
  readonly local: Limits;
  readonly remote: Limits;
  readonly keepalive: Keepalive;
  readonly streams = new Map<number, StreamState>();
  private out: [number, Uint8Array][] = [];
  private creditDirty = new Set<number>();
  private streamsDirty = false;
  private readonly mine: number;
  private opened = 0;
  private mayOpen: number;
  private peerMaxOrd = 0;
  private readonly peerGaps = new Set<number>();
  private grantedStreams: number;
  lastReceived: number;
  lastSent: number;
  private pingOutstanding = false;
  closed = false;
  budget: Budget | null;
  readonly pool: BufferPool | null;
  connBudget: number;
  private floorBytes: number;
  buffered = 0;
  peakBuffered = 0;
  dataIn = 0;
  readonly unaccepted = new Set<number>();
  budgetResets = 0;

  constructor(o: SessionOptions) {
    this.initiator = o.initiator;
    this.local = o.local;
    this.remote = o.remote;
    this.keepalive = o.keepalive ?? new Keepalive();
    this.mine = o.initiator ? 0 : 1;
    this.mayOpen = o.remote.maxStreams;
    this.grantedStreams = o.local.maxStreams;
    this.lastReceived = this.lastSent = o.now ?? 0;
    this.budget = o.budget ?? null;
    this.pool = o.pool ?? null;
    this.connBudget = this.budget === null ? 0 : Math.max(this.budget.connection, o.local.maxMessage);
    this.floorBytes = this.budget === null ? 0 : this.budget.floor;
  }

  // --- ids -----------------------------------------------------------------------------------
  private ordinal(sid: number): number {
    return sid % 4 === 0 ? Math.floor(sid / 4) : Math.floor(sid / 4) + 1;
  }

  private sid(ordinal: number): number {
    return this.mine === 0 ? ordinal * 4 : (ordinal - 1) * 4 + 1;
  }

  // --- sending -------------------------------------------------------------------------------
  canOpen(): boolean {
    return this.opened < this.mayOpen;
  }

  openStream(): number {
    if (!this.canOpen()) throw new StreamLimitExceeded(`peer allows ${this.remote.maxStreams} concurrent streams; wait for one to close`);
    this.opened += 1;
    const sid = this.sid(this.opened);
    this.streams.set(sid, new StreamState(true, this.remote.streamWindow, this.local.streamWindow));
    return sid;
  }

  credit(sid: number): number {
    const st = this.streams.get(sid);
    return st === undefined ? 0 : st.sendLimit - st.sent;
  }

  /** Queue up to the available credit of `data`; DATA_END on the last chunk if `final`. */
  write(sid: number, data: Uint8Array, final: boolean): number {
    const st = this.sendable(sid);
    const n = Math.min(data.length, st.sendLimit - st.sent);
    if (n < data.length || !final) final = false;
    if (n === 0 && !final) return 0;
    let pos = 0;
    for (;;) {
      const end = Math.min(pos + MAX_RECORD_PAYLOAD, n);
      const last = end === n;
      const type = last && final ? RecordType.DATA_END : RecordType.DATA;
      this.out.push([sid, encodeRecord(type, sid, data.subarray(pos, end))]);
      pos = end;
      if (last) break;
    }
    st.sent += n;
    return n;
  }

  private sendable(sid: number): StreamState {
    const st = this.streams.get(sid);
    if (st === undefined || !st.sendOpen) throw new TransportError(`stream ${sid} is closed for sending`);
    return st;
  }

  /** Half-close: we send nothing more on `sid`. */
  finish(sid: number): void {
    const st = this.streams.get(sid);
    if (st === undefined || !st.sendOpen) return;
    st.sendOpen = false;
    this.out.push([sid, encodeRecord(RecordType.FIN, sid)]);
    this.maybeDone(sid, st);
  }

  reset(sid: number, reason = ""): void {
    const st = this.streams.get(sid);
    if (st === undefined) return;
    this.streams.delete(sid);
    this.creditDirty.delete(sid);
    this.unaccepted.delete(sid);
    this.release(st.received - st.consumed);
    st.consumed = st.received;
    this.control(RecordType.RESET, sid, utf8Prefix(reason, 512));
    if (!st.local) this.grantStream();
  }

  /** The application took `n` bytes of messages from `sid`: grant more credit. */
  consumed(sid: number, n: number): void {
    this.release(n);
    const st = this.streams.get(sid);
    if (st === undefined || !st.recvOpen) return;
    st.consumed += n;
    if (st.granted - st.consumed <= Math.floor(this.local.streamWindow / 2) || Session.stalled(st)) this.grant(sid, st);
  }

  /** The sender used all its credit in the middle of a message: grant now or it deadlocks. */
  private static stalled(st: StreamState): boolean {
    return st.partialLen > 0 && st.received === st.granted;
  }

  private grant(sid: number, st: StreamState): void {
    const granted = st.consumed + this.local.streamWindow;
    if (granted > st.granted) {
      st.granted = granted;
      this.creditDirty.add(sid);
    }
  }

  // --- receive budget ------------------------------------------------------------------------
  release(n: number): void {
    if (n <= 0) return;
    const before = this.buffered;
    const after = (this.buffered = before > n ? before - n : 0);
    if (before > this.floorBytes) this.poolMove(before, after);
  }

  private poolMove(before: number, after: number): void {
    const pool = this.pool;
    if (pool !== null && this.budget !== null) {
      const floor = this.floorBytes;
      pool.used += Math.max(0, after - floor) - Math.max(0, before - floor);
      if (pool.used > pool.peak) pool.peak = pool.used;
    }
  }

  private fits(n: number): boolean {
    if (this.budget === null) return true;
    const after = this.buffered + n;
    if (after <= this.floorBytes) return true;
    if (after > this.connBudget) return false;
    if (this.pool === null) return true;
    const floor = this.floorBytes;
    const extra = Math.max(0, after - floor) - Math.max(0, this.buffered - floor);
    return extra === 0 || this.pool.used + extra <= this.pool.capacity;
  }

  /**
   * Shrink this connection's budget (a peer sharing nothing with us; Python `Session.restrict`):
   * at most `connectionBudget` bytes held and `maxPendingStreams` unaccepted streams. Pending
   * streams are reset, largest first, until the bytes held fit; returns the resulting events.
   * May go below `maxMessage`: such a peer's big messages are refused (the stream is reset).
   */
  restrict(connectionBudget: number, maxPendingStreams = 1): Event[] {
    const budget = this.budget ?? new Budget();
    this.poolMove(this.buffered, 0);
    this.budget = new Budget(Math.min(budget.maxPendingStreams, maxPendingStreams), budget.connection, budget.floor, budget.strikes);
    this.floorBytes = budget.floor;
    this.poolMove(0, this.buffered);
    this.connBudget = Math.min(this.connBudget || connectionBudget, connectionBudget);
    const events: Event[] = [];
    for (const sid of [...this.unaccepted].sort((a, b) => this.held(b) - this.held(a))) {
      if (this.buffered <= this.connBudget) break;
      this.refuse(sid, `connection restricted to ${this.connBudget} buffered bytes`, events);
    }
    return events;
  }

  /** Back to `budget` (the configured one) after `restrict`. */
  unrestrict(budget: Budget | null): void {
    this.poolMove(this.buffered, 0); // re-file what we hold under the new floor
    this.budget = budget;
    this.floorBytes = budget === null ? 0 : budget.floor;
    this.poolMove(0, this.buffered);
    this.connBudget = budget === null ? 0 : Math.max(budget.connection, this.local.maxMessage);
  }

  private held(sid: number): number {
    const st = this.streams.get(sid);
    return st === undefined ? 0 : st.received - st.consumed;
  }

  /** The application accepted peer stream `sid`: it no longer counts as pending. */
  streamAccepted(sid: number): void {
    this.unaccepted.delete(sid);
  }

  refuse(sid: number, reason: string, events: Event[]): void {
    const st = this.streams.get(sid);
    if (st !== undefined) {
      this.release(st.received - st.consumed);
      st.consumed = st.received;
    }
    this.unaccepted.delete(sid);
    this.reset(sid, reason);
    events.push({ kind: "reset", stream: sid, reason, local: true });
  }

  /** Responder: the handshake is accepted; `payload` = our deferred certificate. */
  accept(payload: Uint8Array = new Uint8Array(0)): void {
    this.control(RecordType.ACCEPT, CONTROL, payload);
  }

  close(code: number, reason: string): void {
    if (!this.closed) {
      this.closed = true;
      const c = new Uint8Array(2);
      new DataView(c.buffer).setUint16(0, code);
      this.control(RecordType.CLOSE, CONTROL, concatAll([c, utf8Prefix(reason, 512)]));
    }
  }

  private control(type: RecordType, sid: number, payload: Uint8Array = new Uint8Array(0)): void {
    this.out.push([CONTROL, encodeRecord(type, sid, payload)]);
  }

  /** Records to encrypt and send, in order (credits and stream grants batched). */
  takeOutgoing(): [number, Uint8Array][] {
    if (this.creditDirty.size > 0) {
      for (const sid of this.creditDirty) {
        const st = this.streams.get(sid);
        if (st !== undefined) this.control(RecordType.CREDIT, sid, u64(st.granted));
      }
      this.creditDirty.clear();
    }
    if (this.streamsDirty) {
      this.control(RecordType.STREAMS, CONTROL, u32(this.grantedStreams));
      this.streamsDirty = false;
    }
    const out = this.out;
    this.out = [];
    return out;
  }

  // --- timers --------------------------------------------------------------------------------
  /** Queue a PING if quiet; throw PeerTimeout if the peer has been. Returns the next check time. */
  onTimer(now: number): number {
    const ka = this.keepalive;
    const silent = now - this.lastReceived;
    if (silent >= ka.timeout) {
      throw new PeerTimeout(`peer silent for ${silent.toFixed(1)} s (keepalive timeout ${ka.timeout} s): it vanished or stalled`);
    }
    const quiet = now - this.lastSent >= ka.interval || silent >= ka.interval;
    if (quiet && !this.pingOutstanding) {
      this.pingOutstanding = true;
      this.control(RecordType.PING, CONTROL, randomBytes(8));
    }
    return now + ka.interval / 2;
  }

  sentAt(now: number): void {
    this.lastSent = now;
  }

  // --- receiving -----------------------------------------------------------------------------
  /** Apply authenticated records from `route` (null on TCP/WebSocket: no route check). */
  receive(records: WireRecord[], route: number | null, now: number): Event[] {
    const events: Event[] = [];
    this.lastReceived = now;
    this.pingOutstanding = false;
    for (const rec of records) this.receiveOne(rec, route, events);
    return events;
  }

  private receiveOne(rec: WireRecord, route: number | null, events: Event[]): void {
    const { type, stream: sid } = rec;
    const name = RECORD_NAMES[type] ?? String(type);
    if (isDataPath(type)) {
      this.dataIn += rec.payload.length;
      if (sid === CONTROL || (route !== null && route !== sid)) throw new FrameError(`${name} record for stream ${sid} on the wrong stream`);
      const st = this.streamForData(sid, events);
      if (st === null) return;
      if (!st.recvOpen) throw new FrameError(`data on stream ${sid} after the peer finished it`);
      if (type === RecordType.FIN) {
        // protocol.md: FIN is empty; a payload there is never read
        if (rec.payload.length > 0) throw new FrameError(`FIN on stream ${sid} carries ${rec.payload.length} bytes`);
        if (st.partialLen > 0) throw new FrameError(`stream ${sid} finished in the middle of a message`);
        st.recvOpen = false;
        events.push({ kind: "finished", stream: sid });
        this.maybeDone(sid, st);
        return;
      }
      const n = rec.payload.length;
      st.received += n;
      if (st.received > st.granted) throw new FlowControlError(`peer overran its credit on stream ${sid} (${st.received} > ${st.granted})`);
      if (!this.fits(n)) {
        st.received -= n;
        this.budgetStrike(sid, events);
        return;
      }
      const before = this.buffered;
      const after = (this.buffered = before + n);
      if (after > this.peakBuffered) this.peakBuffered = after;
      if (after > this.floorBytes) this.poolMove(before, after);
      st.partialLen += n;
      if (st.partialLen > this.local.maxMessage) throw new FrameError(`message on stream ${sid} exceeds ${this.local.maxMessage} bytes`);
      if (type === RecordType.DATA) {
        st.partial.push(rec.payload);
        if (Session.stalled(st)) this.grant(sid, st);
        return;
      }
      let msg: Uint8Array;
      if (st.partial.length > 0) {
        st.partial.push(rec.payload);
        msg = concatAll(st.partial);
        st.partial = [];
      } else {
        msg = rec.payload;
      }
      st.partialLen = 0;
      events.push({ kind: "message", stream: sid, data: msg });
      return;
    }
    if (route !== null && route !== CONTROL) throw new FrameError(`${name} record outside the control stream`);
    const dv = new DataView(rec.payload.buffer, rec.payload.byteOffset, rec.payload.byteLength);
    switch (type) {
      case RecordType.CREDIT: {
        if (rec.payload.length !== 8) throw new FrameError("malformed CREDIT record");
        const st = this.streams.get(sid);
        if (st?.sendOpen) {
          const limit = Number(dv.getBigUint64(0));
          if (limit > st.sendLimit) {
            st.sendLimit = limit;
            events.push({ kind: "credit", stream: sid });
          }
        }
        break;
      }
      case RecordType.STREAMS: {
        if (rec.payload.length !== 4) throw new FrameError("malformed STREAMS record");
        const total = dv.getUint32(0);
        if (total > this.mayOpen) {
          this.mayOpen = total;
          events.push({ kind: "streams" });
        }
        break;
      }
      case RecordType.RESET: {
        const st = this.streams.get(sid);
        if (st !== undefined) {
          this.streams.delete(sid);
          this.creditDirty.delete(sid);
          this.unaccepted.delete(sid);
          this.release(st.received - st.consumed);
          if (!st.local) this.grantStream();
          events.push({ kind: "reset", stream: sid, reason: dec.decode(rec.payload), local: false });
        }
        break;
      }
      case RecordType.PING:
        this.control(RecordType.PONG, CONTROL, rec.payload.subarray(0, 8));
        break;
      case RecordType.PONG:
        break;
      case RecordType.CLOSE:
        if (rec.payload.length < 2) throw new FrameError("malformed CLOSE record");
        events.push({ kind: "closed", code: dv.getUint16(0), reason: dec.decode(rec.payload.subarray(2)) });
        break;
      case RecordType.ACCEPT:
        if (!this.initiator) throw new FrameError("unexpected ACCEPT record");
        events.push({ kind: "accepted", payload: rec.payload });
        break;
    }
  }

  /** Refuse early a peer stream beyond the limit. */
  checkPeerStream(sid: number): void {
    if (sid % 4 !== this.mine && (sid % 4 === 0 || sid % 4 === 1) && !this.streams.has(sid)) {
      const ordinal = this.ordinal(sid);
      if (ordinal > this.peerMaxOrd && ordinal > this.grantedStreams) {
        throw new StreamLimitExceeded(`peer opened stream #${ordinal} but may have only ${this.local.maxStreams} open at once (stream flood)`);
      }
    }
  }

  private streamForData(sid: number, events: Event[]): StreamState | null {
    const existing = this.streams.get(sid);
    if (existing !== undefined) return existing;
    if (sid % 4 === this.mine) {
      if (this.ordinal(sid) <= this.opened) return null;
      throw new FrameError(`peer used stream ${sid} that we never opened`);
    }
    if (sid % 4 !== 0 && sid % 4 !== 1) throw new FrameError(`invalid stream id ${sid}`);
    const ordinal = this.ordinal(sid);
    if (ordinal <= this.peerMaxOrd) {
      if (!this.peerGaps.has(ordinal)) return null;
      this.peerGaps.delete(ordinal);
    } else {
      if (ordinal > this.grantedStreams) {
        throw new StreamLimitExceeded(`peer opened stream #${ordinal} but may have only ${this.local.maxStreams} open at once (stream flood)`);
      }
      for (let o = this.peerMaxOrd + 1; o < ordinal; o++) this.peerGaps.add(o);
      this.peerMaxOrd = ordinal;
    }
    const st = new StreamState(false, this.remote.streamWindow, this.local.streamWindow);
    this.streams.set(sid, st);
    if (this.budget !== null && this.unaccepted.size >= this.budget.maxPendingStreams) {
      this.reset(sid, `${this.unaccepted.size} streams already wait to be accepted`);
      return null;
    }
    this.unaccepted.add(sid);
    events.push({ kind: "opened", stream: sid });
    return st;
  }

  private budgetStrike(sid: number, events: Event[]): void {
    const budget = this.budget!;
    this.budgetResets += 1;
    if (this.budgetResets > budget.strikes) {
      throw new BudgetExceeded(`peer exceeded the receive buffer budget ${this.budgetResets} times (${this.buffered} bytes held, connection budget ${this.connBudget})`);
    }
    this.refuse(sid, `receive buffer budget exceeded (${this.buffered} bytes held, connection budget ${this.connBudget})`, events);
  }

  private maybeDone(sid: number, st: StreamState): void {
    if (!st.sendOpen && !st.recvOpen) {
      this.unaccepted.delete(sid);
      this.streams.delete(sid);
      this.creditDirty.delete(sid);
      if (!st.local) this.grantStream();
    }
  }

  private grantStream(): void {
    this.grantedStreams += 1;
    this.streamsDirty = true;
  }
}
