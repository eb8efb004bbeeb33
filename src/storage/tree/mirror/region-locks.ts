/**
 * @module storage/tree/mirror/region-locks — the regions a resync copies are locked: a write
 * to a locked region (or to one a copy waits for) waits, and a copy waits for the writes
 * running in its region (docs/tree.md "Resync while I/O continues"). So no write can land on
 * a syncing leg between the read from the source and the write of the copy.
 *
 * Bounded: one entry per region locked or wanted, at most the resync window's worth.
 */
import type { MirrorState, MutOp } from "./state.ts";

/** Does `op` touch a region a resync holds or waits for? */
export function conflicts(s: MirrorState, op: MutOp): boolean {
  for (const region of s.lockCount.keys()) if (region >= op.r0 && region <= op.r1) return true;
  for (const region of s.wanted.keys()) if (region >= op.r0 && region <= op.r1) return true;
  return false;
}

/** Lock `region` for a resync copy; `locked` once no write runs in it. */
export function lockRegion(s: MirrorState, region: number, locked: () => void): void {
  if (!s.wanted.has(region) && !overlapsRunning(s, region)) {
    s.lockCount.set(region, (s.lockCount.get(region) ?? 0) + 1);
    return locked();
  }
  const list = s.wanted.get(region) ?? [];
  list.push(locked);
  s.wanted.set(region, list);
}

export function unlockRegion(s: MirrorState, region: number): void {
  const n = (s.lockCount.get(region) ?? 1) - 1;
  if (n <= 0) s.lockCount.delete(region);
  else s.lockCount.set(region, n);
  s.hooks.drainLockWait();
  s.hooks.checkIdle();
}

function overlapsRunning(s: MirrorState, region: number): boolean {
  for (const op of s.running) if (region >= op.r0 && region <= op.r1) return true;
  return false;
}

/** Grant waiting region locks whose writes drained, outside the completion that drained them. */
export function scheduleGrants(s: MirrorState): void {
  if (s.grantScheduled) return;
  s.grantScheduled = true;
  s.clock.after(0, () => {
    s.grantScheduled = false;
    for (const [region, waiters] of [...s.wanted]) {
      if (overlapsRunning(s, region)) continue;
      s.wanted.delete(region);
      s.lockCount.set(region, (s.lockCount.get(region) ?? 0) + waiters.length);
      for (const waiter of waiters) waiter();
    }
  });
}
