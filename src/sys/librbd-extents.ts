/**
 * @module sys/librbd-extents — an allocation map from rbd_diff_iterate2's whole-object triples
 * (docs/rbd.md "Design", block status). Used by the port (storage/rbd/port.ts) for its answer and
 * by the worker (sys/librbd-worker.ts) to stop walking once it has more runs than asked for, so
 * both count runs the same way.
 */
import type { Extent } from "../storage/port.ts";

/**
 * [offset, offset + length) as extents from rbd_diff_iterate2's [offset, length, exists]
 * triples (whole objects, in image order, possibly reaching past the range): reported and
 * existing is data, anything else a hole that reads as zeroes. Adjacent runs of one kind are
 * merged; at most `maxExtents` (storage/port.ts: the work is bounded by the reply).
 */
export function allocationExtents(offset: number, length: number, triples: readonly number[], maxExtents: number): Extent[] {
  const end = offset + length;
  const out: Extent[] = [];
  let at = offset;
  const push = (to: number, data: boolean) => {
    if (to <= at) return;
    const last = out[out.length - 1];
    if (last !== undefined && last.hole === !data) last.length += to - at;
    else out.push({ length: to - at, hole: !data, zero: !data });
    at = to;
  };
  for (let i = 0; i + 2 < triples.length && at < end && out.length <= maxExtents; i += 3) {
    const start = Math.max(triples[i]!, at);
    const stop = Math.min(triples[i]! + triples[i + 1]!, end);
    if (stop <= start) continue;
    push(start, false);
    push(stop, triples[i + 2] === 1);
  }
  push(end, false);
  return out.length > maxExtents ? out.slice(0, maxExtents) : out;
}
