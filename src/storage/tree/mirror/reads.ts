/**
 * @module storage/tree/mirror/reads — reads and block status through the mirror (docs/tree.md
 * "Writes, reads, failures"): they go to an in-sync leg, or to a syncing leg whose regions
 * under the read are already resynced (it holds what an in-sync leg holds there: writes go to
 * it too, and a region is cleared in its bitmap only once copied, under the region's lock —
 * md's read_balance below recovery_offset does the same), chosen round-robin or by least
 * latency (moving-average latency × reads in flight); a write-mostly leg is read only when no
 * other leg can serve the read. A failed read degrades its leg and is retried on another.
 */
import { Errno } from "../../../lib/errno.ts";
import { readWithHash, type ExtentsDone, type HashedDone } from "../../port.ts";
import type { MirrorLeg } from "./leg.ts";
import type { MirrorState } from "./state.ts";

/**
 * Read from one in-sync leg (retried on another when it fails). The leg's hash of the data
 * (storage/port.ts readHashed) comes back with it: a leg holds the mirror's bytes unchanged.
 */
export function readFrom(s: MirrorState, offset: number, into: Uint8Array, done: HashedDone, attempt: number): void {
  const regions = { r0: Math.floor(offset / s.layout.regionBytes), r1: Math.floor((offset + into.length - 1) / s.layout.regionBytes) };
  const leg = pickReader(s, null, regions);
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

/** Block status from an in-sync leg, trying the next one when a leg fails it. */
export function extentsFrom(s: MirrorState, offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
  const tried = new Set<MirrorLeg>();
  const attempt = () => {
    const leg = pickReader(s, tried, null);
    if (leg === null) return done(Errno.EIO, null);
    tried.add(leg);
    leg.port!.extents(s.layout.metaBytes + offset, length, maxExtents, (errno, extents) => {
      if (errno !== 0 || extents === null) return tried.size < s.legs.length ? attempt() : done(errno || Errno.EIO, null);
      done(0, extents);
    });
  };
  attempt();
}

/**
 * A leg to read from: in sync, or (for a read of `regions`) syncing with those regions resynced
 * already; write-mostly legs only when no other leg can serve it.
 */
function pickReader(s: MirrorState, exclude: Set<MirrorLeg> | null, regions: { r0: number; r1: number } | null): MirrorLeg | null {
  const serves = (l: MirrorLeg) => l.state === "in-sync" || (regions !== null && l.state === "syncing" && resynced(l, regions.r0, regions.r1));
  let candidates = s.legs.filter((l) => l.port !== null && serves(l) && !exclude?.has(l));
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
