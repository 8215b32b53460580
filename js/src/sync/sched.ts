/**
 * Inbound admission for one peer's requests (p2psync/sync/sched.py `TokenBucket`,
 * `InboundGate`, `Admission`), sans-IO: every time is an argument, nothing reads a clock.
 *
 * The numbers are Python's `EngineConfig` defaults (`in_rate` 500 requests/s, `in_burst` 1000,
 * `in_concurrency` 16), carried in `SyncConfig` (core.ts). The JS shell answers one request at
 * a time, in order, so at most one is ever in progress and DUPLICATE / BUSY cannot fire there;
 * they are kept so the gate means the same thing on both sides (and a future concurrent shell
 * inherits them).
 */

/** A token bucket: `rate` tokens per second, holding at most `burst`; starts full. */
export class TokenBucket {
  private tokens: number;
  private stamp: number;

  constructor(readonly rate: number, readonly burst: number, now: number) {
    if (!(rate > 0 && burst > 0)) throw new RangeError("rate and burst must be positive");
    this.tokens = burst;
    this.stamp = now;
  }

  private available(now: number): number {
    // a clock going backwards never adds or removes tokens
    return Math.min(this.burst, this.tokens + Math.max(0, now - this.stamp) * this.rate);
  }

  /** Take `cost` tokens if available now. */
  tryTake(now: number, cost = 1): boolean {
    if (now > this.stamp) {
      this.tokens = this.available(now);
      this.stamp = now;
    }
    if (this.tokens >= cost) {
      this.tokens -= cost;
      return true;
    }
    return false;
  }

  /** Seconds after `now` until `cost` tokens are available (0: now; Infinity: never). Pure. */
  waitTime(now: number, cost = 1): number {
    if (cost > this.burst) return Infinity;
    return Math.max(0, (cost - this.available(now)) / this.rate);
  }
}

/** What `InboundGate.admit` decided about a peer's request. */
export enum Admission {
  ACCEPT = "accept",
  /** The same request is already being served: drop this copy. */
  DUPLICATE = "duplicate",
  /** Answer RATE_LIMITED with `retryAfter`. */
  RATE_LIMITED = "rate_limited",
  /** Too many of this peer's requests in progress: answer RATE_LIMITED too. */
  BUSY = "busy",
}

/** Admission control for one peer's requests to us. */
export class InboundGate<K> {
  readonly bucket: TokenBucket;
  private readonly active = new Set<K>();
  /** Requests refused since the start (any reason). */
  refused = 0;

  readonly maxConcurrent: number;

  constructor(o: { now: number; rate?: number; burst?: number; maxConcurrent?: number }) {
    this.bucket = new TokenBucket(o.rate ?? 100, o.burst ?? 200, o.now);
    this.maxConcurrent = o.maxConcurrent ?? 16;
  }

  /** Decide about one incoming request identified by `key`; ACCEPT means the caller must call
   * `finished(key)` when done. */
  admit(key: K, now: number, cost = 1): Admission {
    if (this.active.has(key)) {
      this.refused++;
      return Admission.DUPLICATE;
    }
    if (this.active.size >= this.maxConcurrent) {
      this.refused++;
      return Admission.BUSY;
    }
    if (!this.bucket.tryTake(now, cost)) {
      this.refused++;
      return Admission.RATE_LIMITED;
    }
    this.active.add(key);
    return Admission.ACCEPT;
  }

  finished(key: K): void {
    this.active.delete(key);
  }

  get inProgress(): number {
    return this.active.size;
  }

  /** Seconds the peer should wait before its next request is likely admitted. */
  retryAfter(now: number, cost = 1): number {
    const w = this.bucket.waitTime(now, cost);
    return Number.isFinite(w) ? w : 1;
  }
}
