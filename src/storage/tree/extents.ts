/**
 * @module storage/tree/extents — an allocation map assembled from the walks of several legs
 * (linear pieces, stripe chunks): adjacent runs with the same flags merge, and the walk stops
 * at `maxExtents` entries (storage/port.ts: the work is bounded by the reply), or at the
 * first leg that reported less than it was asked (a short walk is allowed; the caller reports
 * only what it got).
 */
import type { Extent } from "../port.ts";

/**
 * The map that holds on every one of several legs holding the same bytes (a mirror): a run is
 * a hole or zero only where every walk says so. After a TRIM the bytes are unspecified (NBD
 * spec, NBD_CMD_TRIM), so a leg that punched a hole and one that kept its old blocks (a device
 * whose discard does not zero) differ there, and a read may go to either: NBD_STATE_ZERO must
 * hold for both. Covers the shortest walk (each may be short), at most `maxExtents` runs.
 */
export function intersectWalks(walks: readonly (readonly Extent[])[], maxExtents: number): Extent[] {
  const out: Extent[] = [];
  const at = walks.map(() => ({ index: 0, used: 0 }));
  for (;;) {
    let step = Number.POSITIVE_INFINITY;
    let hole = true;
    let zero = true;
    for (let w = 0; w < walks.length; w++) {
      const cursor = at[w]!;
      while (cursor.index < walks[w]!.length && walks[w]![cursor.index]!.length - cursor.used <= 0) [cursor.index, cursor.used] = [cursor.index + 1, 0];
      const extent = walks[w]![cursor.index];
      if (extent === undefined) return out;
      step = Math.min(step, extent.length - cursor.used);
      hole &&= extent.hole;
      zero &&= extent.zero || extent.hole;
    }
    const last = out[out.length - 1];
    if (last !== undefined && last.hole === hole && last.zero === zero) last.length += step;
    else if (out.length >= maxExtents) return out;
    else out.push({ length: step, hole, zero });
    for (const cursor of at) cursor.used += step;
  }
}

export class ExtentCollector {
  readonly extents: Extent[] = [];
  /** Bytes covered so far. */
  covered = 0;
  /** A leg returned a short walk or the entry limit was reached: stop asking legs. */
  full = false;

  constructor(private readonly maxExtents: number) {}

  /** Add a leg's walk of `asked` bytes. */
  add(walk: readonly Extent[], asked: number): void {
    let got = 0;
    for (const extent of walk) {
      if (extent.length <= 0) continue;
      const length = Math.min(extent.length, asked - got);
      if (length <= 0) break;
      got += length;
      const last = this.extents[this.extents.length - 1];
      if (last !== undefined && last.hole === extent.hole && last.zero === extent.zero) {
        last.length += length;
      } else {
        if (this.extents.length >= this.maxExtents) {
          this.full = true;
          return;
        }
        this.extents.push({ length, hole: extent.hole, zero: extent.zero });
      }
      this.covered += length;
    }
    if (got < asked) this.full = true;
  }
}
