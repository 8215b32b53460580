/**
 * Listener admission caps (p2psync/transport/connection.py `AdmissionGuard`, `Ticket`,
 * `source_key`), sans-IO bookkeeping shared by one listener's connections: `admit` when a
 * socket appears, `promote` when its handshake completes, `release` when it ends. A source over
 * its half-open cap is refused at once; a full half-open table drops its *oldest* entry instead
 * (a flood from many addresses churns itself, while an honest handshake — milliseconds —
 * completes before it becomes the oldest). Established connections are capped in total and per
 * source; over either, `promote` throws AdmissionRefused and the connection is closed before
 * the peer is accepted.
 *
 * Python's numbers (`TransportConfig`): 256 half-open in total, 16 per source, 512 established,
 * 32 per source.
 */
import { AdmissionRefused } from "../errors.js";

export interface GuardLimits {
  /** Connections still in their handshake, in total; the oldest is dropped for a new one. */
  readonly maxHalfOpen: number;
  /** … from one source address; more are refused at once. */
  readonly maxHalfOpenPerSource: number;
  /** Authenticated connections in total / per source address; more are closed. */
  readonly maxConnections: number;
  readonly maxConnectionsPerSource: number;
}

export const GUARD_DEFAULTS: GuardLimits = { maxHalfOpen: 256, maxHalfOpenPerSource: 16, maxConnections: 512, maxConnectionsPerSource: 32 };

/** The source address a peer is counted under: its IP (an IPv4-mapped IPv6 address unmapped). */
export function sourceKey(address: string | undefined): string {
  if (address === undefined) return "?";
  return address.toLowerCase().startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/** One admitted connection, as counted by an AdmissionGuard. */
export class Ticket {
  established = false;
  released = false;
  constructor(readonly source: string, readonly close: () => void) {}
}

function bump(m: Map<string, number>, k: string, by: number): void {
  const n = (m.get(k) ?? 0) + by;
  if (n > 0) m.set(k, n);
  else m.delete(k);
}

export class AdmissionGuard {
  /** Insertion-ordered: oldest first. */
  private readonly halfOpen = new Set<Ticket>();
  private readonly halfBySource = new Map<string, number>();
  private readonly estBySource = new Map<string, number>();
  established = 0;
  refused = 0;
  evicted = 0;
  admitted = 0;
  readonly limits: GuardLimits;

  constructor(limits: Partial<GuardLimits> = {}) {
    this.limits = { ...GUARD_DEFAULTS, ...limits };
  }

  get halfOpenCount(): number {
    return this.halfOpen.size;
  }

  wouldAdmit(source: string): boolean {
    return (this.halfBySource.get(source) ?? 0) < this.limits.maxHalfOpenPerSource;
  }

  /** A new connection from `source` (`close` drops it); null = refused (close it at once). */
  admit(source: string, close: () => void): Ticket | null {
    if (!this.wouldAdmit(source)) {
      this.refused++;
      return null;
    }
    while (this.halfOpen.size >= this.limits.maxHalfOpen) this.evictOldest();
    const t = new Ticket(source, close);
    this.admitted++;
    this.halfOpen.add(t);
    bump(this.halfBySource, source, 1);
    return t;
  }

  /** Drop the oldest half-open connection; false if there is none. */
  evictOldest(): boolean {
    const t = this.halfOpen.values().next();
    if (t.done === true) return false;
    this.release(t.value);
    this.evicted++;
    t.value.close();
    return true;
  }

  /** The handshake completed; throws AdmissionRefused over the established caps. */
  promote(t: Ticket): void {
    if (t.released || t.established) return;
    if (this.established >= this.limits.maxConnections) {
      this.refused++;
      throw new AdmissionRefused(`too many connections (${this.established})`);
    }
    if ((this.estBySource.get(t.source) ?? 0) >= this.limits.maxConnectionsPerSource) {
      this.refused++;
      throw new AdmissionRefused(`too many connections from ${t.source}`);
    }
    this.dropHalf(t);
    t.established = true;
    this.established++;
    bump(this.estBySource, t.source, 1);
  }

  release(t: Ticket): void {
    if (t.released) return;
    t.released = true;
    if (t.established) {
      this.established--;
      bump(this.estBySource, t.source, -1);
    } else this.dropHalf(t);
  }

  private dropHalf(t: Ticket): void {
    if (this.halfOpen.delete(t)) bump(this.halfBySource, t.source, -1);
  }
}
