/**
 * @module storage/tree/extents — an allocation map assembled from the walks of several legs
 * (linear pieces, stripe chunks): adjacent runs with the same flags merge, and the walk stops
 * at `maxExtents` entries (storage/port.ts: the work is bounded by the reply), or at the
 * first leg that reported less than it was asked (a short walk is allowed; the caller reports
 * only what it got).
 */
import type { Extent } from "../port.ts";

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
