/**
 * @module replication/shipping-pace — the token bucket behind a secondary's bandwidth cap
 * (docs/replication.md §10, `bandwidth` in [export.replication]). Pure: time is passed in.
 *
 * The bucket fills at `rate` bytes/s up to `burst` (one second's worth by default) and is
 * debited by what each answer took on the wire, after it arrived — an answer's size is known
 * only then, so the bucket may go into debt by one answer; the next FETCH waits until the
 * debt is paid. Over any interval of T seconds the bytes shipped are thus at most
 * burst + rate·T + one answer.
 */
export class TokenBucket {
  private tokens: number;
  private at: number;
  readonly burst: number;

  /** `rate` bytes per second; `now` in ms. */
  constructor(
    readonly rate: number,
    now: number,
    burst?: number,
  ) {
    this.burst = burst ?? rate;
    this.tokens = this.burst;
    this.at = now;
  }

  private refill(now: number): void {
    if (now > this.at) this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.rate) / 1000);
    this.at = Math.max(this.at, now);
  }

  /** Debit `bytes` (they were sent or received at `now`). */
  take(bytes: number, now: number): void {
    this.refill(now);
    this.tokens -= bytes;
  }

  /** Milliseconds to wait before the next transfer may start (0: now). */
  wait(now: number): number {
    this.refill(now);
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }
}
