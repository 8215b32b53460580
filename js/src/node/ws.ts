/**
 * A WebSocket listener for Node (the `ws` package): accepts binary-WebSocket peers on a port and
 * runs the responder side of the handshake over each (transport/websocket.ts).
 */
import type { AddressInfo } from "node:net";
import { WebSocketServer } from "ws";
import type { Connection } from "../transport/connection.js";
import { acceptWebSocket, type WebSocketDialOptions, type WebSocketLike } from "../transport/websocket.js";

export interface WsListener {
  readonly port: number;
  readonly errors: Error[];
  close(): Promise<void>;
}

export async function listenWebSocket(
  host: string,
  port: number,
  o: Omit<WebSocketDialOptions, "expectedPeer" | "WebSocket">,
  onConnection: (c: Connection) => void,
): Promise<WsListener> {
  const wss = new WebSocketServer({ host, port, maxPayload: 1 << 20 });
  const errors: Error[] = [];
  const connections = new Set<Connection>();
  wss.on("connection", (ws, req) => {
    const link = acceptWebSocket(ws as unknown as WebSocketLike, o, `${req.socket.remoteAddress ?? "?"}:${req.socket.remotePort ?? "?"}`);
    link.ready.then(
      (c) => {
        connections.add(c);
        onConnection(c);
      },
      (e: unknown) => errors.push(e as Error),
    );
  });
  await new Promise<void>((resolve, reject) => {
    wss.once("listening", resolve);
    wss.once("error", reject);
  });
  return {
    port: (wss.address() as AddressInfo).port,
    errors,
    close: async () => {
      for (const c of connections) c.close("listener closing");
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => { wss.close(() => {
        resolve();
      }); });
    },
  };
}
