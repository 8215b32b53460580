/**
 * The app's sync driver: a WebSocket to the agent that served the page (`ws(s)://<host>/p2psync`,
 * the agent's WebSocket carrier), plus the address hints of an invite code.
 *
 * Until the sync core (src/sync/) is in this build, there is no driver: the app works offline
 * on IndexedDB and joining by invite explains that it needs sync.
 */
import type { SyncDriverFactory } from "../src/repo.js";

export function syncDriver(): SyncDriverFactory | undefined {
  return undefined;
}
