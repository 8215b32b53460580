/**
 * A WebSocket listener for Node (the `ws` package): accepts binary-WebSocket peers on a port and
 * runs the responder side of the handshake over each (transport/websocket.ts).
 */
import type { AddressInfo } from "node:net";
import { WebSocketServer } from "ws";
import { type Connection, sharedPool, type TransportConfig } from "../transport/connection.js";
import { AdmissionGuard, sourceKey, type Ticket } from "../transport/guard.js";
import { acceptWebSocket, type WebSocketDialOptions, type WebSocketLike } from "../transport/websocket.js";
import { type ListenOptions, pushBounded } from "./tcp.js";

export interface WsListener {
  readonly port: number;
  readonly errors: Error[];
  readonly guard: AdmissionGuard | null;
  close(): Promise<void>;
}

/** Like `listenTcp` (admission caps counted from the WebSocket upgrade on, the shared receive
 * pool), over binary WebSocket at any path. */
export async function listenWebSocket(
  host: string,
  port: number,
  o: Omit<WebSocketDialOptions, "expectedPeer" | "WebSocket">,
  onConnection: (c: Connection) => void,
  lo: ListenOptions = {},
): Promise<WsListener> {
  const wss = new WebSocketServer({ host, port, maxPayload: 1 << 20 });
  const errors: Error[] = [];
  const connections = new Set<Connection>();
  const guard = lo.guard === null ? null : new AdmissionGuard(lo.guard ?? {});
  const config: TransportConfig = { ...(o.config ?? {}) };
  if (config.pool === undefined) config.pool = sharedPool();
  wss.on("connection", (ws, req) => {
    let ticket: Ticket | null = null;
    if (guard !== null) {
      ticket = guard.admit(sourceKey(req.socket.remoteAddress), () => {
        ws.terminate();
      });
      if (ticket === null) {
        ws.terminate();
        return;
      }
      const t = ticket;
      ws.on("close", () => {
        guard.release(t);
      });
    }
    const promote = ticket === null ? undefined : (): void => {
      guard!.promote(ticket);
    };
    const link = acceptWebSocket(ws as unknown as WebSocketLike, { ...o, config }, `${req.socket.remoteAddress ?? "?"}:${req.socket.remotePort ?? "?"}`, promote);
    link.ready.then(
      (c) => {
        connections.add(c);
        void c.waitClosed().then(() => connections.delete(c));
        onConnection(c);
      },
      (e: unknown) => {
        pushBounded(errors, e as Error);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    wss.once("listening", resolve);
    wss.once("error", reject);
  });
  return {
    port: (wss.address() as AddressInfo).port,
    errors,
    guard,
    close: async () => {
      for (const c of connections) c.close("listener closing");
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => { wss.close(() => {
        resolve();
      }); });
    },
  };
}
