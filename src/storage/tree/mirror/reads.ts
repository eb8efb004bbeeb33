/**
 * @module storage/tree/mirror/reads — reads and block status through the mirror (docs/tree.md
 * "Writes, reads, failures"). A read goes to an in-sync leg, or to a syncing leg whose regions
 * under the read are already resynced (it holds what an in-sync leg holds there: writes go to
 * it too, and a region is cleared in its bitmap only once copied, under the region's lock —
 * md's read_balance below recovery_offset does the same), chosen round-robin or by least
 * latency (moving-average latency × reads in flight); a write-mostly leg is read only when no
 * other leg can serve the read. A failed read degrades its leg and is retried on another.
 */
import { Errno } from "../../../lib/errno.ts";
import { readWithHash, type Extent, type ExtentsDone, type HashedDone } from "../../port.ts";
import { intersectWalks } from "../extents.ts";
import type { MirrorLeg } from "./leg.ts";
import type { MirrorState } from "./state.ts";

/**
 * Read from one in-sync leg (retried on another when it fails). The leg's hash of the data
 * (storage/port.ts readHashed) comes back with it: a leg holds the mirror's bytes unchanged.
 */
export function readFrom(s: MirrorState, offset: number, into: Uint8Array, done: HashedDone, attempt: number): void {
  const regions = { r0: Math.floor(offset / s.layout.regionBytes), r1: Math.floor((offset + into.length - 1) / s.layout.regionBytes) };
  const leg = pickReader(s, regions);
  if (leg === null) return done(Errno.EIO, null);
  const started = s.clock.now();
  leg.inflightReads++;
  readWithHash(leg.port!, s.layout.metaBytes + offset, into, (errno, xxh3) => {
    leg.inflightReads--;
    if (errno === 0) {
      const took = s.clock.now() - started;
      leg.latencyMs = leg.reads === 0 ? took : leg.latencyMs + (took - leg.latencyMs) / 8;
      leg.reads++;
      return done(0, xxh3);
    }
    if ((leg.state === "in-sync" || leg.state === "syncing") && !s.hooks.legFailed(leg, errno, "read")) return done(errno, null);
    if (attempt + 1 >= s.legs.length) return done(errno, null);
    readFrom(s, offset, into, done, attempt + 1);
  });
}

/**
 * Block status: the walks of every leg a read may go to (in sync, or syncing), intersected
 * (tree/extents.ts intersectWalks: zero only where every leg reads zero — after a TRIM a leg
 * that keeps its old blocks reads them back). A leg that fails the walk makes the answer "data"
 * for the whole range, which is always true; only when every leg fails is it an error.
 */
export function extentsFrom(s: MirrorState, offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
  const legs = s.legs.filter((l) => l.port !== null && (l.state === "in-sync" || l.state === "syncing"));
  if (!legs.some((l) => l.state === "in-sync")) return done(Errno.EIO, null);
  const walks: Extent[][] = [];
  let failed = 0;
  let pending = legs.length;
  for (const leg of legs) {
    leg.port!.extents(s.layout.metaBytes + offset, length, maxExtents, (errno, extents) => {
      if (errno !== 0 || extents === null) failed = errno || Errno.EIO;
      else walks.push(extents);
      if (--pending > 0) return;
      if (walks.length === 0) return done(failed, null);
      done(0, failed !== 0 ? [{ length, hole: false, zero: false }] : intersectWalks(walks, maxExtents));
    });
  }
}

/**
 * A leg to read from: in sync, or syncing with the read's `regions` resynced already; write-mostly legs only when no other leg can serve it.
 */
function pickReader(s: MirrorState, regions: { r0: number; r1: number }): MirrorLeg | null {
  const serves = (l: MirrorLeg) => l.state === "in-sync" || (l.state === "syncing" && resynced(l, regions.r0, regions.r1));
  let candidates = s.legs.filter((l) => l.port !== null && serves(l));
  const preferred = candidates.filter((l) => !l.writeMostly);
  if (preferred.length > 0) candidates = preferred;
  if (candidates.length === 0) return null;
  if (s.readPolicy === "least-latency") {
    let best = candidates[0]!;
    let bestScore = Number.POSITIVE_INFINITY;
    const start = s.rr++ % candidates.length;
    for (let i = 0; i < candidates.length; i++) {
      const leg = candidates[(start + i) % candidates.length]!;
      const score = (leg.reads === 0 ? 0 : leg.latencyMs + 0.001) * (1 + leg.inflightReads);
      if (score < bestScore) [best, bestScore] = [leg, score];
    }
    return best;
  }
  return candidates[s.rr++ % candidates.length]!;
}

/** Regions r0..r1 are not missing on a syncing leg (never dirty, or copied by its resync). */
function resynced(leg: MirrorLeg, r0: number, r1: number): boolean {
  for (let r = r0; r <= r1; r++) if (leg.needs.get(r)) return false;
  return true;
}
