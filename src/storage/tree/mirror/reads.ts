/**
 * @module storage/tree/mirror/reads — reads and block status through the mirror (docs/tree.md
 * "Writes, reads, failures"): they go to an in-sync leg, chosen round-robin or by least
 * latency (moving-average latency × reads in flight); a write-mostly leg is read only when no
 * other leg is in sync. A failed read degrades its leg and is retried on another.
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
  const leg = pickReader(s, null);
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
    if (leg.state === "in-sync" && !s.hooks.legFailed(leg, errno, "read")) return done(errno, null);
    if (attempt + 1 >= s.legs.length) return done(errno, null);
    readFrom(s, offset, into, done, attempt + 1);
  });
}

/** Block status from an in-sync leg, trying the next one when a leg fails it. */
export function extentsFrom(s: MirrorState, offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
  const tried = new Set<MirrorLeg>();
  const attempt = () => {
    const leg = pickReader(s, tried);
    if (leg === null) return done(Errno.EIO, null);
    tried.add(leg);
    leg.port!.extents(s.layout.metaBytes + offset, length, maxExtents, (errno, extents) => {
      if (errno !== 0 || extents === null) return tried.size < s.legs.length ? attempt() : done(errno || Errno.EIO, null);
      done(0, extents);
    });
  };
  attempt();
}

/** An in-sync leg to read from; write-mostly legs only when nothing else is in sync. */
function pickReader(s: MirrorState, exclude: Set<MirrorLeg> | null): MirrorLeg | null {
  let candidates = s.legs.filter((l) => l.state === "in-sync" && l.port !== null && !exclude?.has(l));
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
