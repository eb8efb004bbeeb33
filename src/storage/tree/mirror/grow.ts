/**
 * @module storage/tree/mirror/grow — growing a mirror online (`dstd resize`, docs/tree.md
 * "Growing a mirror"), while its I/O goes on.
 *
 * The bitmap slots are fixed when the mirror is created; past what they describe with its
 * regions, the regions double (each bitmap folds: a region is missing when any of the smaller
 * ones it covers was), up to its write-intent regions (layout.ts grownLayout). Steps, in order:
 * 1. every leg is big enough for the new size (a leg that can resize — a file, a memory disk,
 *    a stripe, a mirror or a linear node — is grown; another one must already be);
 * 2. the new range is zeroed on every leg and flushed: whatever a leg held past the old end
 *    (an earlier, larger use of a device) must not differ between legs, or reads of the new
 *    range would depend on the leg chosen;
 * 3. the superblock with the new size is committed to every leg (mirror/metadata.ts); when
 *    the regions double, the switch waits until no write runs (new ones queue meanwhile), so
 *    no region number in flight changes meaning; bitmap pages written after it and before its
 *    superblock lands are read only through a superblock that has it (a leg whose slot lists it
 *    in sync is never read from its bitmap), so a crash in between leaves nothing misread;
 * 4. only then is the new size served, so no write lands past the old end before every leg's
 *    record covers it. A crash before 3 leaves the old size (the zeroes past it are unused);
 *    a crash during 3 leaves some legs with the new record: the assembly takes the newest
 *    record (mirror/assemble.ts), and the range it adds reads as zeroes on every leg.
 * Only a mirror whose legs are all in sync grows: a degraded or syncing leg would need its
 * bitmap to cover the new range too (grow it once the resync is done).
 *
 * Must not: shrink (refused: data past the new end would be dropped), or serve the new size
 * before its record is on every in-sync leg.
 */
import { Errno } from "../../../lib/errno.ts";
import { formatSize } from "../../../lib/size.ts";
import type { Done, StoragePort } from "../../port.ts";
import { flushLegs } from "./flush.ts";
import { activeCount, grownLayout, regionCount, type Layout } from "./layout.ts";
import { commitRecord } from "./metadata.ts";
import type { MirrorState } from "./state.ts";

/** Largest zero request a leg gets while growing (a remote leg's WRITE_ZEROES length is a u32). */
const ZERO_PIECE = 1024 * 1024 * 1024;
/** Largest write of zeroes to a leg that has no WRITE_ZEROES (one shared, never written buffer). */
const WRITE_PIECE = 1024 * 1024;

/** Why the mirror cannot grow to `size` now (an operator-facing sentence and its errno), or null. */
export function growProblem(s: MirrorState, size: number): { errno: number; reason: string } | null {
  const no = (errno: number, reason: string) => ({ errno, reason });
  if (s.closed) return no(Errno.ESHUTDOWN, "the mirror is closed");
  if (s.growing) return no(Errno.EBUSY, "the mirror is already being resized");
  if (!Number.isSafeInteger(size) || size <= 0) return no(Errno.EINVAL, `${size} is not a size in bytes`);
  if (size < s.size) return no(Errno.ENOTSUP, `a mirror does not shrink (it is ${formatSize(s.size)}; ${formatSize(size)} asked)`);
  if (size % s.blockSize !== 0) return no(Errno.EINVAL, `${size} bytes is not a multiple of the mirror's ${s.blockSize}-byte blocks`);
  const grown = grownLayout(s.layout, size, s.growRegions);
  if (typeof grown === "string") return no(Errno.EFBIG, `${grown}: create a larger mirror and copy`);
  for (const leg of s.legs) {
    if (leg.state !== "in-sync" || leg.port === null || leg.joinPhase !== 0) {
      return no(Errno.EBUSY, `leg ${leg.label} is ${leg.state}: a mirror grows when every leg is in sync`);
    }
    const needed = s.layout.metaBytes + size;
    if (leg.port.size >= needed) continue;
    if (leg.port.resize === undefined) {
      return no(Errno.ENOSPC, `leg ${leg.label} is ${formatSize(leg.port.size)} and cannot grow; the mirror needs ${formatSize(needed)} of it`);
    }
    // A leg that is a tree (a stripe, a mirror) says why it would not grow, before anything changes.
    const below = leg.port.resizeProblem?.(needed) ?? null;
    if (below !== null) return no(Errno.EBUSY, `leg ${leg.label} cannot grow to ${formatSize(needed)}: ${below}`);
  }
  return null;
}

/** Grow the mirror to `size` bytes (see the module comment); `done(0)` once it is served. */
export function growMirror(s: MirrorState, size: number, done: Done): void {
  const problem = growProblem(s, size);
  if (problem !== null) {
    s.log.warn(`mirror: not resized to ${formatSize(size)}: ${problem.reason}`);
    return done(problem.errno);
  }
  if (size === s.size) return done(0);
  s.growing = true;
  const from = s.size;
  const legs = s.legs.map((leg) => leg.port!);
  const degradations = s.legs.map((leg) => leg.degradations);
  const fail = (errno: number, what: string) => {
    s.growing = false;
    s.log.warn(`mirror: not resized to ${formatSize(size)}: ${what}`);
    done(errno);
  };
  forEachLeg(legs, (port, next) => growLeg(port, s.layout.metaBytes + size, next), (errno, at) => {
    if (errno !== 0) return fail(errno, `leg ${s.legs[at]!.label} could not grow`);
    const zeroed = (i: number) => (errno: number) => {
      // A leg that fails the zeroes after its own budget failed like for any write: degraded (and probed).
      if (errno !== 0) s.hooks.legFailed(s.legs[i]!, errno, "write");
    };
    forEachLeg(legs, (port, next, i) => zeroRange(port, s.layout.metaBytes + from, size - from, (errno) => (zeroed(i)(errno), next(errno))), (errno, at) => {
      if (errno !== 0) return fail(errno, `zeroing the new range on leg ${s.legs[at]!.label} failed`);
      flushLegs(s, (errno) => {
        if (errno !== 0) return fail(errno, "flushing the zeroed range failed");
        if (s.closed) return fail(Errno.ESHUTDOWN, "the mirror closed meanwhile");
        // A leg that left and came back meanwhile (another port, a resync of the old range only)
        // may not hold the zeroes: the grow is tried again by the operator.
        const lagging = () => s.legs.find((leg, i) => leg.state !== "in-sync" || leg.port !== legs[i] || leg.degradations !== degradations[i]);
        const late = lagging();
        if (late !== undefined) return fail(Errno.EAGAIN, `leg ${late.label} left the in-sync set meanwhile`);
        const layout = grownLayout(s.layout, size, s.growRegions);
        if (typeof layout === "string") return fail(Errno.EFBIG, layout);
        if (layout.regionBytes === s.layout.regionBytes) return record(layout);
        // Larger regions: every region number in flight would change meaning, so the switch
        // waits until no write runs (new ones queue), and happens with nothing in between.
        quiesce(s, () => {
          if (s.closed) return fail(Errno.ESHUTDOWN, "the mirror closed meanwhile");
          const left = lagging();
          if (left !== undefined) return fail(Errno.EAGAIN, `leg ${left.label} left the in-sync set meanwhile`);
          if (s.resyncs.size > 0 || s.lockCount.size > 0 || s.wanted.size > 0) return fail(Errno.EAGAIN, "a resync started meanwhile");
          record(layout);
        });
      });
    });
  });

  /** Serve `layout` in memory, then commit its record to every leg; serve its size once committed. */
  function record(layout: Layout): void {
    const factor = layout.regionBytes / s.layout.regionBytes;
    s.layout = layout;
    s.regions = regionCount(layout);
    s.regionsPerActive = layout.activeBytes / layout.regionBytes;
    s.active.grow(activeCount(layout));
    for (const leg of s.legs) {
      if (factor > 1) leg.coarsenBitmaps(factor, s.regions);
      leg.growBitmaps(s.regions);
    }
    if (factor > 1) {
      for (const op of s.lockWait) {
        op.r0 = Math.floor(op.offset / layout.regionBytes);
        op.r1 = Math.floor((op.offset + op.length - 1) / layout.regionBytes);
      }
      s.log.info(`mirror: regions of ${formatSize(layout.regionBytes)} from now on (the bitmaps describe ${formatSize(size)} with them)`);
    }
    commitRecord(s, (errno) => {
      s.growing = false;
      if (errno !== 0) {
        // Some legs may hold the new record: the next open serves the new size, whose range
        // reads as zeroes everywhere. This process keeps the old one.
        s.log.warn(`mirror: not resized to ${formatSize(size)}: the record of the new size could not be written`);
        return done(errno);
      }
      s.served = size;
      s.log.info(`mirror: grown from ${formatSize(from)} to ${formatSize(size)}`);
      done(0);
    });
  }
}

/** Hold new writes back, call `then` once none runs (at once when none does), then let them go. */
function quiesce(s: MirrorState, then: () => void): void {
  s.quiesced = () => {
    s.quiesced = null;
    then();
    s.hooks.drainLockWait();
  };
  if (s.running.size === 0) s.quiesced();
}

/** Run `step` on every port at once; `done` with the first failure and its index, or 0. */
function forEachLeg(ports: readonly StoragePort[], step: (port: StoragePort, done: Done, index: number) => void, done: (errno: number, at: number) => void): void {
  let remaining = ports.length;
  let first = 0;
  let at = -1;
  ports.forEach((port, i) =>
    step(port, (errno) => {
      if (errno !== 0 && first === 0) {
        first = errno;
        at = i;
      }
      if (--remaining === 0) done(first, at);
    }, i),
  );
}

function growLeg(port: StoragePort, needed: number, done: Done): void {
  if (port.size >= needed) return done(0);
  if (port.resize === undefined) return done(Errno.ENOSPC);
  port.resize(needed, done);
}

/**
 * Zeroes over [offset, offset + length) of a leg, a piece at a time: WRITE_ZEROES where the
 * leg has it, else writes of one shared zero buffer.
 */
function zeroRange(port: StoragePort, offset: number, length: number, done: Done): void {
  if (length <= 0) return done(0);
  const piece = Math.min(length, port.canZero ? ZERO_PIECE : WRITE_PIECE);
  const next = (errno: number) => {
    if (errno !== 0) return done(errno);
    zeroRange(port, offset + piece, length - piece, done);
  };
  if (port.canZero) port.zero(offset, piece, { fua: false, noHole: false, fast: false }, next);
  else port.write(offset, zeroes().subarray(0, piece), false, next);
}

let zeroBuffer: Uint8Array | null = null;
function zeroes(): Uint8Array {
  zeroBuffer ??= new Uint8Array(WRITE_PIECE);
  return zeroBuffer;
}
