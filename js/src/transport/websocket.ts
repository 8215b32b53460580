/**
 * WebSocket carrier, for browsers and Node: binary WebSocket messages carry the same byte
 * stream the TCP carrier carries (frames may span or share messages; the Link's frame decoder
 * reassembles), so the Noise session, framing and streams are exactly those of TCP.
 *
 * Works with any object implementing the standard WebSocket API (the browser's global
 * WebSocket, or the `ws` package in Node 20, which has no global WebSocket).
 *
 * As on the Python side (docs/transport.md, "WebSocket carrier"): the prologue binding is "tcp"
 * (the Noise session is the channel), the agent serves the carrier at GET /p2psync, a sender
 * joins the frames of one write into messages of at most 64 KiB (the Python receiver refuses
 * messages over 256 KiB), text messages end the connection.
 */
import type { DeviceCertificate } from "../crypto/cert.js";
import type { DeviceKey } from "../crypto/keys.js";
import { type Carrier, type Connection, Link, type TransportConfig } from "./connection.js";

export const WS_BINDING = new TextEncoder().encode("tcp");
/** The agent's WebSocket path. */
export const WS_PATH = "/p2psync";
/** Largest WebSocket message this side sends. */
export const MAX_SEND_MESSAGE = 64 * 1024;

/** The subset of the standard WebSocket API the carrier uses. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

const OPEN = 1;

function toBytes(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) {
    // ws may deliver fragmented messages as Buffer[] (binaryType "fragments"); join them
    const parts = data.filter((p): p is Uint8Array => p instanceof Uint8Array);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let pos = 0;
    for (const p of parts) {
      out.set(p, pos);
      pos += p.length;
    }
    return out;
  }
  return null; // a text message: not part of the protocol
}

/** A WebSocket as a byte-stream carrier for a Link. */
export class WebSocketCarrier implements Carrier {
  readonly name = "ws";
  link: Link | null = null;
  promote?: () => void;

  constructor(
    readonly ws: WebSocketLike,
    private readonly address = "?",
  ) {
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      const bytes = toBytes(ev.data);
      if (bytes === null) this.link?.onEnd("peer sent a text WebSocket message");
      else this.link?.onBytes(bytes);
    };
    ws.onclose = (ev) => this.link?.onEnd(`WebSocket closed (${ev.code ?? "?"}${ev.reason ? ": " + ev.reason : ""})`);
    ws.onerror = () => this.link?.onEnd("WebSocket error");
  }

  write(frames: Uint8Array[]): void {
    if (this.ws.readyState !== OPEN) return;
    const total = frames.reduce((n, f) => n + f.length, 0);
    const joined = new Uint8Array(total);
    let pos = 0;
    for (const f of frames) {
      joined.set(f, pos);
      pos += f.length;
    }
    for (let off = 0; off < total; off += MAX_SEND_MESSAGE) this.ws.send(joined.subarray(off, off + MAX_SEND_MESSAGE));
  }

  teardown(): void {
    // close() waits for queued messages (the CLOSE record) to go out first
    if (this.ws.readyState === OPEN) this.ws.close(1000);
  }

  remoteAddress(): string {
    return this.address;
  }
}

export interface WebSocketDialOptions {
  deviceKey: DeviceKey;
  certificate: DeviceCertificate;
  expectedPeer?: string | null;
  config?: TransportConfig;
  /** WebSocket implementation; defaults to the global one (browsers, Node >= 22). */
  WebSocket?: WebSocketConstructor;
  binding?: Uint8Array;
}

/** Dial a ws:// or wss:// URL, run the handshake, resolve with the live connection. */
export function connectWebSocket(url: string, o: WebSocketDialOptions): Promise<Connection> {
  const Ctor = o.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (Ctor === undefined) return Promise.reject(new Error("no WebSocket implementation: pass one (e.g. the ws package)"));
  const ws = new Ctor(url);
  const carrier = new WebSocketCarrier(ws, url);
  const link = (carrier.link = new Link(carrier, {
    initiator: true,
    deviceKey: o.deviceKey,
    certificate: o.certificate,
    binding: o.binding ?? WS_BINDING,
    expectedPeer: o.expectedPeer ?? null,
    config: o.config ?? {},
  }));
  ws.onopen = () => {
    link.start();
  };
  return link.ready;
}

/** Responder side over an accepted WebSocket (a Node listener, see node/ws.ts). */
export function acceptWebSocket(ws: WebSocketLike, o: Omit<WebSocketDialOptions, "expectedPeer" | "WebSocket">, address = "?",
  promote?: () => void): Link {
  const carrier = new WebSocketCarrier(ws, address);
  if (promote !== undefined) carrier.promote = promote; // a listener's admission caps (node/ws.ts)
  return (carrier.link = new Link(carrier, {
    initiator: false,
    deviceKey: o.deviceKey,
    certificate: o.certificate,
    binding: o.binding ?? WS_BINDING,
    config: o.config ?? {},
  }));
}
