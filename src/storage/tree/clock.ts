/**
 * @module storage/tree/clock — time and scheduling as the mapping layers see them. The layers
 * (linear, stripe, mirror) hold no timers and read no clock: a mirror's probe of a degraded
 * leg and its least-latency read policy get time through this interface, so the
 * deterministic simulator (test/storage/tree/) drives them on simulated time and production
 * on the event loop (storage/tree/system-clock.ts).
 */

export interface Timer {
  /** Stop the timer; a no-op once it has run. */
  cancel(): void;
}

export interface TreeClock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Run `run` once, `ms` milliseconds from now (never synchronously, even for 0). */
  after(ms: number, run: () => void): Timer;
}
