/**
 * The app's sync: WsSyncDriver (src/docs/wsDriver.ts) over a WebSocket to the agent that served
 * the page (`ws(s)://<this host>/p2psync`) and to every peer a space was joined through (the
 * invite's `ws:` hints, remembered in storage under "peers"), reconnecting with backoff.
 */
import { WsSyncDriver } from "../src/docs/wsDriver.js";
import type { RepoOptions } from "../src/repo.js";
import type { Storage } from "../src/storage/types.js";

export async function syncOptions(storage: Storage, where: Location): Promise<Pick<RepoOptions, "replicas" | "sync">> {
  const own = `${where.protocol === "https:" ? "wss" : "ws"}://${where.host}/p2psync`;
  const saved = await storage.getMeta("peers");
  const remembered = Array.isArray(saved) ? saved.filter((x): x is string => typeof x === "string") : [];
  return WsSyncDriver.factory({ urls: [...new Set([own, ...remembered])] });
}

/** Remember the peers the driver keeps (after a join added one). */
export async function rememberPeers(storage: Storage, driver: unknown): Promise<void> {
  if (driver instanceof WsSyncDriver) await storage.putMeta("peers", driver.peerUrls);
}
