/**
 * @module export/budget — a byte budget shared by all connections of the export, with waiters.
 * A connection takes bytes before it allocates or produces anything a peer caused, gives them
 * back when the memory is free again, and when a take fails it waits (its socket paused)
 * until someone gives bytes back. Pure bookkeeping: no timers, no I/O; waking waiters goes
 * through the injected `defer` so a give() never re-enters the giver.
 */
import { assert } from "../lib/assert.ts";

export class Budget {
  private used = 0;
  private readonly waiters = new Set<() => void>();
  private wakeScheduled = false;

  constructor(
    readonly limit: number,
    private readonly defer: (work: () => void) => void,
  ) {
    assert(Number.isSafeInteger(limit) && limit > 0, "budget limit must be a positive integer");
  }

  get inUse(): number {
    return this.used;
  }

  /** Take `bytes` if they fit; false (nothing taken) otherwise. */
  take(bytes: number): boolean {
    if (this.used + bytes > this.limit) return false;
    this.used += bytes;
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
      const waiting = [...this.waiters];
      this.waiters.clear();
      for (const retry of waiting) retry();
    });
  }
}
