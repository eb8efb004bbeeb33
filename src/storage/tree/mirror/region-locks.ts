/**
 * @module storage/tree/mirror/region-locks — the regions a resync copies are locked: a write
 * to a locked region (or to one a copy waits for) waits, and a copy waits for the writes
 * running in its region (docs/tree.md "Resync while I/O continues"). So no write can land on
 * a syncing leg between the read from the source and the write of the copy.
 *
 * Fair, in arrival order: a write that waits and a copy that waits each take a ticket, and
 * neither passes one that arrived before it. Without that, a resync restarted again and again
 * (a leg that comes back and fails, over and over) locked the first regions it copies before a
 * write waiting for them could start: the write, and every write queued behind it, waited
 * forever (tree sim seed 110467).
 *
 * Bounded: one entry per region locked or wanted, at most the resync window's worth.
 */
import type { MirrorState, MutOp } from "./state.ts";

/** Does `op` touch a region a resync holds, or one a copy that arrived before it waits for? */
export function conflicts(s: MirrorState, op: MutOp): boolean {
  if (s.quiesced !== null) return true; // a grow changes the region size (mirror/grow.ts)
  for (const region of s.lockCount.keys()) if (region >= op.r0 && region <= op.r1) return true;
  for (const [region, ticket] of s.wantedTicket) if (ticket < op.ticket && region >= op.r0 && region <= op.r1) return true;
  return false;
}

/** Lock `region` for a resync copy; `locked` once no write runs in it or waits for it from before. */
export function lockRegion(s: MirrorState, region: number, locked: () => void): void {
  if (!s.wanted.has(region) && !overlapsRunning(s, region) && !waitedFor(s, region, Number.POSITIVE_INFINITY)) {
    s.lockCount.set(region, (s.lockCount.get(region) ?? 0) + 1);
    return locked();
  }
  const list = s.wanted.get(region) ?? [];
  list.push(locked);
  if (!s.wanted.has(region)) s.wantedTicket.set(region, s.ticket++);
  s.wanted.set(region, list);
}

/** Does a write that waits (with a ticket below `before`) touch `region`? */
function waitedFor(s: MirrorState, region: number, before: number): boolean {
  for (const op of s.lockWait) if (op.ticket < before && region >= op.r0 && region <= op.r1) return true;
  return false;
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
      if (overlapsRunning(s, region) || waitedFor(s, region, s.wantedTicket.get(region)!)) continue;
      s.wanted.delete(region);
      s.wantedTicket.delete(region);
      s.lockCount.set(region, (s.lockCount.get(region) ?? 0) + waiters.length);
      for (const waiter of waiters) waiter();
    }
  });
}
