/**
 * @module export/budget — a byte budget shared by all connections of the export, with waiters.
 * A connection takes bytes before it allocates or produces anything a peer caused, gives them
 * back when the memory is free again, and when a take fails it waits (its socket paused)
 * until someone gives bytes back. Pure bookkeeping: no timers, no I/O; waking waiters goes
 * through the injected `defer` so a give() never re-enters the giver.
 */
import { assert } from "../lib/assert.ts";

/** A taker turned away while holding less than this share of the budget makes it `starved`. */
export const STARVED_BELOW = 1 / 8;

export class Budget {
  private used = 0;
  private readonly waiters = new Set<() => void>();
  private wakeScheduled = false;
  /**
   * Someone holding little was turned away for lack of room and has not been woken since: the
   * memory is contended, not merely in use (transport/guard.ts replyStarved). A connection
   * stopped by its own share does not count (that is its limit, not a shortage), nor one that
   * already holds STARVED_BELOW of the budget or more: heavy readers that want more than there
   * is do not make each other "starved", a newcomer that gets nothing does.
   */
  private short = false;

  constructor(
    readonly limit: number,
    private readonly defer: (work: () => void) => void,
  ) {
    assert(Number.isSafeInteger(limit) && limit > 0, "budget limit must be a positive integer");
  }

  get inUse(): number {
    return this.used;
  }

  /** True while a take found no room and nobody was woken since (see `short`). */
  get starved(): boolean {
    return this.short;
  }

  /** Take `bytes` if they fit; false (nothing taken) otherwise. `held`: what the taker holds already. */
  take(bytes: number, held = 0): boolean {
    if (this.used + bytes > this.limit) {
      if (held < this.limit * STARVED_BELOW) this.short = true;
      return false;
    }
    this.used += bytes;
    return true;
  }

  /** Whether the budget is spent; a holder of `held` bytes that then waits may count as turned away (`starved`). */
  spent(held: number): boolean {
    if (this.used < this.limit) return false;
    if (held < this.limit * STARVED_BELOW) this.short = true;
    return true;
  }

  /** Take `bytes` whatever the limit (bytes already produced that must be counted: see callers). */
  force(bytes: number): void {
    this.used += bytes;
  }

  give(bytes: number): void {
    assert(bytes >= 0 && bytes <= this.used, `budget give(${bytes}) with ${this.used} in use`);
    this.used -= bytes;
    if (bytes > 0 && this.waiters.size > 0) this.scheduleWake();
  }

  /** Call `retry` once bytes were given back (then forget it; wait again if still short). */
  wait(retry: () => void): void {
    this.waiters.add(retry);
  }

  cancel(retry: () => void): void {
    this.waiters.delete(retry);
  }

  private scheduleWake(): void {
    if (this.wakeScheduled) return;
    this.wakeScheduled = true;
    this.defer(() => {
      this.wakeScheduled = false;
      this.short = false; // each retry that finds no room again sets it again
      const waiting = [...this.waiters];
      this.waiters.clear();
      for (const retry of waiting) retry();
    });
  }
}
