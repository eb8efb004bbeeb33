/**
 * @module storage/tree/system-clock — the production TreeClock: performance.now() and
 * unreferenced setTimeout timers (a mirror's probe timer never keeps the process alive).
 * The only place the tree layers meet real time; tests use a simulated clock instead.
 */
import type { Timer, TreeClock } from "./clock.ts";

export const systemClock: TreeClock = {
  now: () => performance.now(),
  after(ms: number, run: () => void): Timer {
    const handle = setTimeout(run, Math.max(0, ms));
    (handle as { unref?: () => void }).unref?.();
    return { cancel: () => clearTimeout(handle) };
  },
};
