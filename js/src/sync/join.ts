/**
 * Opening a space by invite code, the way `p2psync join CODE` does (Node.join): try the code's
 * address hints in order ("tcp:host:port", "ws:host:port", "quic:[v6]:port", or a bare
 * "host:port" meaning QUIC), dial each with a caller-supplied function (the browser dials
 * WebSocket only; Node also TCP), run a PeerSync over the first that answers, and bootstrap.
 */
import { P2PSyncError } from "../errors.js";
import type { Connection } from "../transport/connection.js";
import { InviteCode } from "../bootstrap.js";
import type { SyncConfig } from "./core.js";
import { PeerSync } from "./engine.js";
import { JoinError } from "./errors.js";
import type { SyncReplicas, SyncSpace } from "./replica.js";

const CARRIERS = ["tcp", "ws", "quic", "memory"];

/** [carrier, host, port] of an address hint. */
export function splitHint(hint: string): [string, string, number] {
  let carrier = "quic";
  let rest = hint;
  const i = hint.indexOf(":");
  if (i > 0 && CARRIERS.includes(hint.slice(0, i))) {
    carrier = hint.slice(0, i);
    rest = hint.slice(i + 1).replace(/^\/\//, "");
  }
  const j = rest.lastIndexOf(":");
  const port = Number(rest.slice(j + 1));
  let host = rest.slice(0, j);
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  if (j <= 0 || !Number.isInteger(port) || port < 1 || port > 65535 || !host) throw new JoinError(`bad address hint ${hint}`);
  return [carrier, host, port];
}

/** Dial one address; throw (e.g. for a carrier this platform lacks) to have the next tried. */
export type Dialer = (carrier: string, host: string, port: number) => Promise<Connection>;

export interface Joined {
  readonly space: SyncSpace;
  /** The running sync with the peer we joined through (keep it: it keeps syncing). */
  readonly sync: PeerSync;
  /** Resolves when that connection ends. */
  readonly running: Promise<void>;
  /** Our join request waits for an admin (approval-required invite). */
  readonly pendingApproval: boolean;
  /** The address hint we joined through. */
  readonly address: string;
}

/** Join the space of an invite code through the first of its addresses (or `addresses`) that
 * answers and offers the space. */
export async function joinByInvite(replicas: SyncReplicas, code: string | InviteCode, dial: Dialer,
  o: { addresses?: readonly string[]; config?: Partial<SyncConfig> } = {}): Promise<Joined> {
  const ic = typeof code === "string" ? InviteCode.decode(code) : code;
  if (!ic.spaceId) throw new JoinError("this invite code does not name its space (old format)");
  const errors: string[] = [];
  for (const addr of o.addresses ?? ic.addresses) {
    let conn: Connection;
    try {
      const [carrier, host, port] = splitHint(addr);
      conn = await dial(carrier, host, port);
    } catch (exc) {
      errors.push(`${addr}: ${exc instanceof Error ? exc.message : String(exc)}`);
      continue;
    }
    const sync = new PeerSync(replicas, conn, o.config);
    const running = sync.run();
    try {
      const { space, pendingApproval } = await sync.bootstrap(ic.spaceId, ic);
      return { space, sync, running, pendingApproval, address: addr };
    } catch (exc) {
      if (!(exc instanceof P2PSyncError)) throw exc;
      errors.push(`${addr}: ${exc.message}`);
      sync.close("join failed");
      await running;
    }
  }
  throw new JoinError(`could not join: ${errors.join("; ") || "no address to try"}`);
}
