/**
 * One connection's protocol driver (the Link of p2psync/transport/connection.py) and the
 * promise-based Connection/Stream API on top of it.
 *
 * A carrier (TCP socket in Node, a WebSocket anywhere) moves an ordered byte stream; the Link
 * owns the frame decoder, runs the SecureHandshake, then the Session, and wires its events to
 * Streams. Over TCP and WebSocket every record carries its stream id, so one pair of Noise
 * CipherStates covers the connection (no per-stream keys: that is QUIC only).
 *
 * After the handshake the responder sends ACCEPT (with its certificate if it deferred it); the
 * initiator's connection is ready when ACCEPT arrives. A CLOSE record with code REFUSED becomes
 * RefusedByPeer, any other CLOSE ConnectionClosed; every failure sends CLOSE with the matching
 * code (when a session exists) and tears the carrier down.
 */
import type { DeviceCertificate } from "../crypto/cert.js";
import type { DeviceKey } from "../crypto/keys.js";
import {
  ConnectionClosed,
  EndOfStream,
  FlowControlError,
  FrameError,
  HandshakeError,
  PeerTimeout,
  RefusedByPeer,
  StrangerGraceOver,
  StrangerRefused,
  StreamLimitExceeded,
  StreamReset,
  TransportError,
} from "../errors.js";
import { decodeRecord, encodeRecord, FrameDecoder, RecordType } from "./framing.js";
import { type HandshakeResult, Limits, SecureHandshake } from "./handshake.js";
import type { CipherState } from "./noise.js";
import { Budget, BufferPool, CloseCode, CONTROL, type Event, Keepalive, Session, utf8Prefix } from "./session.js";

/** What a Link needs from a byte-stream carrier. */
export interface Carrier {
  readonly name: string;
  /** Write frames in order (each already length-prefixed). */
  write(frames: Uint8Array[]): void;
  /** Close after flushing what was written (the CLOSE record). */
  teardown(): void;
  /** Bytes of an incomplete frame are the Link's business; remote address for display. */
  remoteAddress(): string;
  /** Listener carriers: the handshake completed, count it as established (throws
   * AdmissionRefused over the listener's caps, before the peer is accepted). */
  promote?(): void;
}

export interface TransportConfig {
  limits?: Limits;
  keepalive?: Keepalive;
  /** Seconds. */
  handshakeTimeout?: number;
  features?: readonly string[];
  /** Listener policy (deferred certificate): true = reveal our certificate to this initiator. */
  revealCertificate?: ((peer: DeviceCertificate) => boolean) | null;
  /** Receive budget; null disables it (tests). */
  budget?: Budget | null;
  pool?: BufferPool | null;
  /** What `Connection.restrict` shrinks a connection's budget to (a peer sharing no space):
   * 1 MiB, Python's `TransportConfig.restricted_budget`. */
  restrictedBudget?: number;
}

/** Python's `TransportConfig.restricted_budget`. */
export const RESTRICTED_BUDGET = 1 << 20;
/** Python's `TransportConfig.pool_budget`: received-but-unread bytes above each connection's
 * floor, summed over the connections that share the pool. */
export const POOL_BUDGET = 16 << 20;

let POOL: BufferPool | null = null;

/** The process-wide receive pool every listener's connections share by default (Python's
 * `shared_pool`; dialled connections keep none unless their config gives one). */
export function sharedPool(capacity = POOL_BUDGET): BufferPool {
  POOL ??= new BufferPool(capacity);
  POOL.capacity = capacity;
  return POOL;
}

/** The CLOSE code that tells the peer which kind of failure ended the connection. */
export function closeCodeFor(exc: unknown): number {
  if (exc instanceof HandshakeError) return CloseCode.REFUSED;
  if (exc instanceof FlowControlError) return CloseCode.FLOW_CONTROL;
  if (exc instanceof FrameError) return CloseCode.PROTOCOL;
  if (exc instanceof StreamLimitExceeded) return CloseCode.STREAM_LIMIT;
  if (exc instanceof PeerTimeout) return CloseCode.TIMEOUT;
  return CloseCode.INTERNAL;
}

const EMPTY: Uint8Array = new Uint8Array(0);
const now = (): number => performance.now() / 1000;

function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

function closePayload(code: number, reason: string): Uint8Array {
  const r = utf8Prefix(reason, 512);
  const out = new Uint8Array(2 + r.length);
  new DataView(out.buffer).setUint16(0, code);
  out.set(r, 2);
  return out;
}

/** A set of waiters woken together (the asyncio futures of the Python side). */
class Signal {
  private waiters: (() => void)[] = [];
  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

export interface LinkOptions {
  initiator: boolean;
  deviceKey: DeviceKey;
  certificate: DeviceCertificate;
  binding: Uint8Array;
  expectedPeer?: string | null;
  config?: TransportConfig;
}

/** One physical connection's protocol state; the carrier calls in, we call it back. */
export class Link {
  readonly initiator: boolean;
  private hs: SecureHandshake | null;
  result: HandshakeResult | null = null;
  session: Session | null = null;
  connection: Connection | null = null;
  error: TransportError | null = null;
  private send: CipherState | null = null;
  private recv: CipherState | null = null;
  private readonly decoder = new FrameDecoder();
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** The stranger grace timer of `Connection.restrict`. */
  grace: ReturnType<typeof setTimeout> | null = null;
  private deferredCheck: ((raw: Uint8Array) => DeviceCertificate) | null = null;
  private readonly config: Required<Pick<TransportConfig, "limits" | "keepalive" | "handshakeTimeout">> & TransportConfig;
  private readyResolve!: (c: Connection) => void;
  private readyReject!: (e: TransportError) => void;
  /** Resolves with the connection once accepted; rejects with the handshake failure. */
  readonly ready: Promise<Connection>;

  constructor(
    readonly carrier: Carrier,
    o: LinkOptions,
  ) {
    this.initiator = o.initiator;
    this.config = { limits: new Limits(), keepalive: new Keepalive(), handshakeTimeout: 10, ...o.config };
    this.hs = new SecureHandshake({
      initiator: o.initiator,
      deviceKey: o.deviceKey,
      certificate: o.certificate,
      binding: o.binding,
      expectedPeer: o.expectedPeer ?? null,
      limits: this.config.limits,
      features: this.config.features ?? [],
      deferCertificate: !o.initiator && (this.config.revealCertificate ?? null) !== null,
    });
    this.ready = new Promise((resolve, reject) => {
      this.readyResolve = resolve;
      this.readyReject = reject;
    });
    this.ready.catch(() => undefined); // observed by whoever awaits it; never unhandled
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.connection === null) this.fail(new PeerTimeout(`handshake not completed within ${this.config.handshakeTimeout} s`));
    }, this.config.handshakeTimeout * 1000);
  }

  /** Initiator: send the first handshake message. */
  start(): void {
    this.carrier.write([frame(this.hs!.start())]);
  }

  /** Bytes received from the carrier. Never throws. */
  onBytes(data: Uint8Array): void {
    if (this.error !== null) return;
    try {
      const bodies = this.decoder.feed(data);
      let i = 0;
      while (this.hs !== null && i < bodies.length) this.handshakeStep(bodies[i++]!);
      if (i < bodies.length) this.onSecure(bodies.slice(i));
    } catch (exc) {
      this.fail(exc instanceof TransportError ? exc : new TransportError(`internal error: ${String(exc)}`));
    }
  }

  /** The carrier's byte stream ended (peer closed, reset, socket error). */
  onEnd(reason?: string): void {
    if (this.error !== null) return;
    let exc: TransportError = new ConnectionClosed(reason ?? `peer closed the ${this.carrier.name} connection`);
    try {
      this.decoder.eof();
    } catch (e) {
      if (e instanceof FrameError) exc = e;
    }
    this.fail(exc, false);
  }

  private handshakeStep(body: Uint8Array): void {
    const hs = this.hs!;
    let reply: Uint8Array | null;
    try {
      reply = hs.receive(body);
    } catch (exc) {
      const noise = hs.noise;
      if (exc instanceof HandshakeError && noise.complete && noise.sendCipher !== null) {
        // Responder refusing the initiator's Hello: tell it why, encrypted.
        this.send = noise.sendCipher;
        this.writeRecords([encodeRecord(RecordType.CLOSE, CONTROL, closePayload(CloseCode.REFUSED, exc.message))]);
      }
      throw exc;
    }
    if (reply !== null) this.carrier.write([frame(reply)]);
    if (hs.result === null) return;
    const res = (this.result = hs.result);
    this.hs = null;
    if (this.initiator && hs.deferred) this.deferredCheck = (raw) => hs.checkDeferredCertificate(raw);
    let reveal: Uint8Array = EMPTY;
    const policy = this.config.revealCertificate ?? null;
    if (!this.initiator && policy !== null) {
      const peer = res.certificate!;
      if (!policy(peer)) {
        this.send = res.sendCipher;
        this.writeRecords([encodeRecord(RecordType.CLOSE, CONTROL, closePayload(CloseCode.REFUSED, "this device does not talk to strangers"))]);
        throw new StrangerRefused(`refused ${peer.peerId} (account ${peer.accountId}): not known, no shared space, no invite`);
      }
      reveal = hs.certificate.raw;
    }
    this.send = res.sendCipher;
    this.recv = res.recvCipher;
    const budget = this.budget();
    this.session = new Session({
      initiator: this.initiator,
      local: this.config.limits,
      remote: res.remoteLimits,
      keepalive: this.config.keepalive,
      now: now(),
      budget,
      pool: budget === null ? null : (this.config.pool ?? null),
    });
    if (!this.initiator) {
      this.carrier.promote?.(); // AdmissionRefused over a listener's connection caps
      this.session.accept(reveal);
      this.becomeReady();
    }
  }

  /** The configured receive budget (null: disabled). */
  budget(): Budget | null {
    return this.config.budget === undefined ? new Budget() : this.config.budget;
  }

  get restrictedBudget(): number {
    return this.config.restrictedBudget ?? RESTRICTED_BUDGET;
  }

  private becomeReady(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.connection = new Connection(this);
    this.scheduleTimer(this.config.keepalive.interval / 2);
    this.flush();
    this.readyResolve(this.connection);
  }

  private scheduleTimer(seconds: number): void {
    this.timer = setTimeout(() => {
      this.onTimer();
    }, Math.max(0, seconds * 1000));
  }

  private onTimer(): void {
    this.timer = null;
    if (this.session === null || this.error !== null) return;
    let next: number;
    try {
      next = this.session.onTimer(now());
    } catch (exc) {
      let e = exc instanceof TransportError ? exc : new TransportError(String(exc));
      if (this.decoder.pending > 0) e = new PeerTimeout(`${e.message} (stopped mid-frame)`);
      this.fail(e);
      return;
    }
    this.flush();
    this.scheduleTimer(next - now());
  }

  private onSecure(bodies: Uint8Array[]): void {
    const session = this.session!;
    const recv = this.recv!;
    const records = bodies.map((b) => decodeRecord(recv.decryptWithAd(EMPTY, b)));
    const events = session.receive(records, null, now());
    this.dispatch(events);
    this.flush();
  }

  private dispatch(events: Event[]): void {
    for (const ev of events) {
      if (ev.kind === "accepted") {
        if (this.connection !== null) throw new FrameError("duplicate ACCEPT record");
        if (this.deferredCheck !== null) {
          this.result = { ...this.result!, certificate: this.deferredCheck(ev.payload) };
          this.deferredCheck = null;
        }
        this.becomeReady();
        continue;
      }
      if (ev.kind === "closed") {
        if (ev.code === CloseCode.REFUSED) throw new RefusedByPeer(`peer refused the connection: ${ev.reason}`);
        throw new ConnectionClosed(`peer closed the connection: ${ev.reason || "no reason given"}`);
      }
      if (this.connection === null) throw new FrameError("stream records before the handshake was accepted");
      this.connection.onEvent(ev);
    }
  }

  flush(): void {
    if (this.session === null) return;
    const out = this.session.takeOutgoing();
    if (out.length > 0) {
      this.writeRecords(out.map(([, rec]) => rec));
      this.session.sentAt(now());
    }
  }

  private writeRecords(records: Uint8Array[]): void {
    const send = this.send!;
    this.carrier.write(records.map((rec) => frame(send.encryptWithAd(EMPTY, rec))));
  }

  /** End this connection with `exc` as the reason. */
  fail(exc: TransportError, sendClose = true): void {
    if (this.error !== null) return;
    this.error = exc;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.grace !== null) {
      clearTimeout(this.grace);
      this.grace = null;
    }
    const code = exc instanceof ConnectionClosed ? CloseCode.NORMAL : closeCodeFor(exc);
    if (this.session !== null) this.session.release(this.session.buffered);
    if (sendClose && this.session !== null) {
      try {
        this.session.close(code, exc.message);
        this.flush();
      } catch {
        // the carrier is already gone
      }
    }
    this.carrier.teardown();
    if (this.connection !== null) this.connection.onClosed(exc);
    else this.readyReject(exc);
  }
}

/** A message-oriented bidirectional stream: `await send(bytes)` / `await recv()`. */
export class Stream {
  readonly messages: Uint8Array[] = [];
  readonly recvSignal = new Signal();
  readonly sendSignal = new Signal();
  peerFinished = false;
  error: TransportError | null = null;

  constructor(
    private readonly conn: Connection,
    readonly id: number,
  ) {}

  private get link(): Link {
    return this.conn.link;
  }

  /** Send one message; waits while the peer's credit is used up (backpressure). */
  async send(data: Uint8Array): Promise<void> {
    const session = this.link.session!;
    if (data.length > session.remote.maxMessage) {
      throw new TransportError(`message of ${data.length} bytes exceeds the peer's limit of ${session.remote.maxMessage}`);
    }
    let view = data;
    for (;;) {
      this.checkSend();
      const n = session.write(this.id, view, true);
      if (n > 0) this.link.flush();
      if (n === view.length) break;
      view = view.subarray(n);
      await this.sendSignal.wait();
    }
  }

  private checkSend(): void {
    if (this.error !== null) throw this.error;
    if (this.link.error !== null) throw this.link.error;
  }

  /** The next message; EndOfStream once the peer finished the stream. */
  async recv(): Promise<Uint8Array> {
    while (this.messages.length === 0) {
      if (this.error !== null) throw this.error;
      if (this.peerFinished) throw new EndOfStream(`peer finished stream ${this.id}`);
      if (this.link.error !== null) throw this.link.error;
      await this.recvSignal.wait();
    }
    const msg = this.messages.shift()!;
    const link = this.link;
    if (link.session !== null && link.error === null) {
      link.session.consumed(this.id, msg.length);
      link.flush();
    }
    return msg;
  }

  /** Half-close: tell the peer we will send no more messages on this stream. */
  finish(): void {
    const link = this.link;
    if (link.session !== null && link.error === null) {
      link.session.finish(this.id);
      link.flush();
    }
  }

  /** Abort the stream both ways (the peer sees StreamReset with `reason`). */
  reset(reason = ""): void {
    const link = this.link;
    this.error ??= new StreamReset(`stream ${this.id} reset locally: ${reason}`);
    this.messages.length = 0;
    if (link.session !== null && link.error === null) {
      link.session.reset(this.id, reason);
      link.flush();
    }
    this.conn.streams.delete(this.id);
    this.wake();
  }

  wake(): void {
    this.recvSignal.wake();
    this.sendSignal.wake();
  }
}

/** An authenticated, encrypted connection to one peer device. */
export class Connection {
  readonly streams = new Map<number, Stream>();
  private readonly incoming: Stream[] = [];
  private readonly acceptSignal = new Signal();
  private readonly openSignal = new Signal();
  private closeReason: TransportError | null = null;
  private readonly closedSignal = new Signal();
  /** True between `restrict` and `liftRestriction`. */
  restricted = false;

  constructor(readonly link: Link) {}

  get result(): HandshakeResult {
    return this.link.result!;
  }

  get certificate(): DeviceCertificate {
    const c = this.result.certificate;
    if (c === null) throw new HandshakeError("the peer's certificate has not been received");
    return c;
  }

  get peerId(): string {
    return this.certificate.peerId;
  }

  get accountId(): string {
    return this.certificate.accountId;
  }

  get protocolVersion(): number {
    return this.result.version;
  }

  get transport(): string {
    return this.link.carrier.name;
  }

  /** Open a new stream; waits while the peer's concurrent-stream limit is reached. */
  async openStream(): Promise<Stream> {
    const session = this.link.session!;
    while (!session.canOpen()) {
      this.raiseIfClosed();
      await this.openSignal.wait();
    }
    this.raiseIfClosed();
    const sid = session.openStream();
    const st = new Stream(this, sid);
    this.streams.set(sid, st);
    return st;
  }

  /** The next stream the peer opened. */
  async acceptStream(): Promise<Stream> {
    while (this.incoming.length === 0) {
      this.raiseIfClosed();
      await this.acceptSignal.wait();
    }
    const st = this.incoming.shift()!;
    this.link.session?.streamAccepted(st.id);
    return st;
  }

  private raiseIfClosed(): void {
    if (this.link.error !== null) throw this.link.error;
  }

  get isClosed(): boolean {
    return this.closeReason !== null;
  }

  /** Close with `reason` (sent to the peer). */
  close(reason = ""): void {
    this.link.fail(new ConnectionClosed(`closed locally${reason ? ": " + reason : ""}`));
  }

  /** Close with a typed reason (the peer gets CLOSE with its text and the code of its kind:
   * NORMAL for a ConnectionClosed, TIMEOUT for a PeerTimeout, …; `waitClosed()` here returns
   * `exc` itself). */
  closeWith(exc: TransportError): void {
    this.link.fail(exc);
  }

  /**
   * Shrink this connection's receive budget (default `restrictedBudget`, 1 MiB) and allow one
   * pending stream: for a peer that shares no space with us (Python `Connection.restrict`).
   * Pending streams holding more are reset at once. With `grace` (seconds), the connection is
   * closed with `StrangerGraceOver` after that long unless `liftRestriction` is called first
   * (invite bootstrap).
   */
  restrict(budget?: number, o: { grace?: number | null } = {}): void {
    const link = this.link;
    const session = link.session;
    if (session === null || link.error !== null) return;
    this.restricted = true;
    if (o.grace !== undefined && o.grace !== null) {
      this.cancelGrace();
      link.grace = setTimeout(() => {
        link.grace = null;
        link.fail(new StrangerGraceOver("closed locally: the peer shares no space with this device (grace period over)"));
      }, o.grace * 1000);
    }
    if (link.budget() === null) return;
    const events = session.restrict(budget ?? link.restrictedBudget);
    for (const ev of events) this.onEvent(ev);
    link.flush();
  }

  /** The peer shares a space after all (e.g. it just joined by invite): back to the configured
   * budget, and no disconnect at the end of the grace period. */
  liftRestriction(): void {
    this.cancelGrace();
    this.restricted = false;
    const link = this.link;
    if (link.session !== null && link.error === null) link.session.unrestrict(link.budget());
  }


  private cancelGrace(): void {
    if (this.link.grace !== null) {
      clearTimeout(this.link.grace);
      this.link.grace = null;
    }
  }

  /** Wait until the connection is closed; returns the reason (never throws it). */
  async waitClosed(): Promise<TransportError> {
    while (this.closeReason === null) await this.closedSignal.wait();
    return this.closeReason;
  }

  onEvent(ev: Event): void {
    switch (ev.kind) {
      case "message": {
        const st = this.streams.get(ev.stream);
        if (st !== undefined) {
          st.messages.push(ev.data);
          st.wake();
        }
        break;
      }
      case "opened": {
        const st = new Stream(this, ev.stream);
        this.streams.set(ev.stream, st);
        this.incoming.push(st);
        this.acceptSignal.wake();
        break;
      }
      case "finished": {
        const st = this.streams.get(ev.stream);
        if (st !== undefined) {
          st.peerFinished = true;
          st.wake();
        }
        break;
      }
      case "reset": {
        const st = this.streams.get(ev.stream);
        if (st !== undefined) {
          this.streams.delete(ev.stream);
          st.error = new StreamReset(ev.local ? `stream ${ev.stream} reset locally: ${ev.reason}` : `peer reset stream ${ev.stream}: ${ev.reason}`);
          st.messages.length = 0;
          const i = this.incoming.indexOf(st);
          if (i >= 0) this.incoming.splice(i, 1);
          st.wake();
        }
        break;
      }
      case "credit":
        this.streams.get(ev.stream)?.sendSignal.wake();
        break;
      case "streams":
        this.openSignal.wake();
        break;
      default:
        break;
    }
  }

  onClosed(exc: TransportError): void {
    this.closeReason ??= exc;
    for (const st of this.streams.values()) st.wake();
    this.acceptSignal.wake();
    this.openSignal.wake();
    this.closedSignal.wake();
  }
}
