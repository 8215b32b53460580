/**
 * TCP carrier for Node (node:net): one Noise session per TCP connection, every record carrying
 * its stream id; the prologue binding is "tcp" like p2psync/transport/tcp.py (TCP has no
 * exporter to bind to: the Noise session is the channel).
 */
import { createServer, type Server, type Socket, connect as netConnect } from "node:net";
import type { DeviceCertificate } from "../crypto/cert.js";
import type { DeviceKey } from "../crypto/keys.js";
import { type Carrier, type Connection, Link, sharedPool, type TransportConfig } from "../transport/connection.js";
import { AdmissionGuard, type GuardLimits, sourceKey, type Ticket } from "../transport/guard.js";

export const TCP_BINDING = new TextEncoder().encode("tcp");

export interface PeerIdentity {
  deviceKey: DeviceKey;
  certificate: DeviceCertificate;
  config?: TransportConfig;
}

class TcpCarrier implements Carrier {
  readonly name = "tcp";
  link: Link | null = null;
  /** Listener side: the admission guard's ticket for this socket. */
  guard: AdmissionGuard | null = null;
  ticket: Ticket | null = null;

  constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on("data", (d: Buffer) => this.link?.onBytes(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)));
    socket.on("end", () => this.link?.onEnd("peer closed the TCP connection"));
    socket.on("error", (e: Error) => this.link?.onEnd(`TCP connection lost: ${e.message}`));
    socket.on("close", () => {
      if (this.ticket !== null) this.guard?.release(this.ticket);
      this.link?.onEnd("TCP connection lost");
    });
  }

  promote(): void {
    if (this.ticket !== null) this.guard?.promote(this.ticket);
  }

  write(frames: Uint8Array[]): void {
    if (this.socket.writable) for (const f of frames) this.socket.write(f);
  }

  teardown(): void {
    if (!this.socket.destroyed) this.socket.end(); // flushes what was written (the CLOSE record) first
  }

  remoteAddress(): string {
    return `${this.socket.remoteAddress ?? "?"}:${this.socket.remotePort ?? "?"}`;
  }
}

/** Dial `host:port`, run the authenticated handshake, resolve with the live connection. */
export function connectTcp(host: string, port: number, id: PeerIdentity & { expectedPeer?: string | null; localAddress?: string }): Promise<Connection> {
  const socket = netConnect(id.localAddress === undefined ? { host, port } : { host, port, localAddress: id.localAddress });
  const carrier = new TcpCarrier(socket);
  const link = (carrier.link = new Link(carrier, {
    initiator: true,
    deviceKey: id.deviceKey,
    certificate: id.certificate,
    binding: TCP_BINDING,
    expectedPeer: id.expectedPeer ?? null,
    config: id.config ?? {},
  }));
  socket.once("connect", () => {
    link.start();
  });
  return link.ready;
}

export interface TcpListener {
  readonly port: number;
  readonly server: Server;
  readonly connections: Set<Connection>;
  /** Handshake failures of incoming connections, newest last (at most 1 000 kept). */
  readonly errors: Error[];
  /** The admission caps (null when switched off). */
  readonly guard: AdmissionGuard | null;
  close(): Promise<void>;
}

export interface ListenOptions {
  /** Admission caps (Python's defaults: 256 half-open, 16 per source, 512 established, 32 per
   * source); null switches them off. */
  guard?: Partial<GuardLimits> | null;
}

/** Keep the newest `max` entries of a diagnostic list (a flood must not grow it without end). */
export function pushBounded<T>(list: T[], item: T, max = 1000): void {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}

/**
 * Accept peers on `host:port` (0 = any); call `onConnection` for each accepted handshake. The
 * listener is guarded like Python's `serve_tcp`: admission caps per source and in total, and
 * every accepted connection's receive budget draws on the process-wide pool (`sharedPool`)
 * unless `id.config.pool` says otherwise.
 */
export async function listenTcp(host: string, port: number, id: PeerIdentity, onConnection: (c: Connection) => void, o: ListenOptions = {}): Promise<TcpListener> {
  const connections = new Set<Connection>();
  const errors: Error[] = [];
  const guard = o.guard === null ? null : new AdmissionGuard(o.guard ?? {});
  const config: TransportConfig = { ...(id.config ?? {}) };
  if (config.pool === undefined) config.pool = sharedPool();
  const server = createServer((socket) => {
    let ticket: Ticket | null = null;
    if (guard !== null) {
      ticket = guard.admit(sourceKey(socket.remoteAddress), () => socket.destroy());
      if (ticket === null) {
        socket.destroy();
        return;
      }
    }
    const carrier = new TcpCarrier(socket);
    carrier.guard = guard;
    carrier.ticket = ticket;
    const link = (carrier.link = new Link(carrier, {
      initiator: false,
      deviceKey: id.deviceKey,
      certificate: id.certificate,
      binding: TCP_BINDING,
      config,
    }));
    link.ready.then(
      (conn) => {
        connections.add(conn);
        void conn.waitClosed().then(() => connections.delete(conn));
        onConnection(conn);
      },
      (e: unknown) => {
        pushBounded(errors, e as Error);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      resolve();
    });
  });
  const addr = server.address();
  return {
    port: typeof addr === "object" && addr !== null ? addr.port : port,
    server,
    connections,
    errors,
    guard,
    close: async () => {
      for (const c of connections) c.close("listener closing");
      await new Promise<void>((resolve) => server.close(() => {
        resolve();
      }));
    },
  };
}
