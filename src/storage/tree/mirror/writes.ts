/**
 * @module storage/tree/mirror/writes — a write (trim, write-zeroes) through the mirror, from
 * arrival to completion (docs/tree.md "Writes, reads, failures" and "Write intent"):
 *
 * 1. it waits while a resync holds one of its regions (mirror/region-locks.ts);
 * 2. its write-intent regions are recorded (FUA) on the in-sync legs before any leg may
 *    have the data;
 * 3. it goes to every in-sync and syncing leg; a degraded leg's regions are recorded in its
 *    bitmap slot instead, and the write is acknowledged only once that record is on disk
 *    (for a FUA write, once the bitmap pages are durable too);
 * 4. it completes when every leg has answered and every record it waits for is down.
 *
 * The payload is handed to every leg as it came (no copy): the caller keeps it untouched
 * until the completion, and so do the legs; a handed-over payload (storage/port.ts
 * BufferHold) is handed over to every leg that keeps buffers (a remote leg's engine), so a
 * mirror node copies nothing either.
 *
 * Bounded: running + waiting requests ≤ `maxQueued` (beyond: EAGAIN).
 */
import { Errno } from "../../../lib/errno.ts";
import { writeWithHold, type BufferHold, type Done } from "../../port.ts";
import { joinCompletions } from "../join.ts";
import { pageOf } from "./bitmap.ts";
import { ACTIVE_SLOT } from "./layout.ts";
import type { MirrorLeg } from "./leg.ts";
import { commitRecord } from "./metadata.ts";
import { conflicts, scheduleGrants } from "./region-locks.ts";
import type { MirrorState, MutKind, MutOp } from "./state.ts";

export function mutate(
  s: MirrorState,
  kind: MutKind,
  offset: number,
  length: number,
  data: Uint8Array | null,
  fua: boolean,
  noHole: boolean,
  done: Done,
  hold: BufferHold | null = null,
  xxh3?: bigint,
): void {
  if (s.closed) return done(Errno.ESHUTDOWN);
  if (length === 0) return done(0);
  if (s.running.size + s.lockWait.length >= s.maxQueued) return done(Errno.EAGAIN);
  const { regionBytes, activeBytes } = s.layout;
  const last = offset + length - 1;
  const op: MutOp = {
    kind,
    offset,
    length,
    data,
    hold,
    xxh3,
    fua,
    noHole,
    done,
    r0: Math.floor(offset / regionBytes),
    r1: Math.floor(last / regionBytes),
    a0: Math.floor(offset / activeBytes),
    a1: Math.floor(last / activeBytes),
    issued: false,
    pending: 0,
    errno: 0,
    barrier: 0,
    legsDone: false,
    finished: false,
    ticket: s.ticket++,
  };
  if (s.lockWait.length > 0 || conflicts(s, op)) s.lockWait.push(op);
  else startOp(s, op);
}

function startOp(s: MirrorState, op: MutOp): void {
  s.running.add(op);
  const pages = new Set<number>();
  for (let a = op.a0; a <= op.a1; a++) {
    s.activeInflight.set(a, (s.activeInflight.get(a) ?? 0) + 1);
    s.lastTouch.set(a, s.flushEpoch);
    const durable = (s.activeDurable[a >>> 3]! & (1 << (a & 7))) !== 0;
    if (!s.active.get(a) || !durable) {
      s.active.set(a);
      pages.add(pageOf(a));
    }
  }
  if (pages.size === 0) return issue(s, op);
  // The write-intent record must be on disk before any leg may have the data.
  let errno = 0;
  const join = joinCompletions(pages.size, () => (errno !== 0 ? finish(s, op, errno) : issue(s, op)));
  for (const page of pages) {
    s.meta.persist(s.pageKey(ACTIVE_SLOT, page), (e) => {
      if (e !== 0 && errno === 0) errno = e;
      join(0);
    });
  }
}

function issue(s: MirrorState, op: MutOp): void {
  op.issued = true;
  let skips = false;
  for (const leg of s.legs) {
    if (!leg.tracked) continue;
    skips = true;
    markMissing(s, leg, op.r0, op.r1, op.fua ? op : null);
  }
  // It is acknowledged without a degraded leg: only once the record of that is on disk.
  if (skips && s.recordsDurable < s.recordsMade) {
    op.barrier++;
    commitRecord(s, (e) => releaseBarrier(s, op, e));
  }
  const targets = s.legs.filter((l) => l.writable);
  op.pending = targets.length + 1;
  const legOffset = s.layout.metaBytes + op.offset;
  for (const leg of targets) {
    const port = leg.port!;
    const done: Done = (errno) => legDone(s, op, leg, errno);
    if (op.kind === "write") {
      if (op.hold !== null) writeWithHold(port, legOffset, op.data!, op.fua, op.hold, done, op.xxh3);
      else port.write(legOffset, op.data!, op.fua, done);
    }
    else if (op.kind === "trim") port.trim(legOffset, op.length, op.fua, done);
    else port.zero(legOffset, op.length, { fua: op.fua, noHole: op.noHole, fast: false }, done);
  }
  legDone(s, op, null, 0);
}

function legDone(s: MirrorState, op: MutOp, leg: MirrorLeg | null, errno: number): void {
  if (leg !== null && errno !== 0 && leg.writable && !s.hooks.legFailed(leg, errno, "write")) {
    if (op.errno === 0) op.errno = errno;
    // At once, not when the other legs are done: a syncing leg that took the write could
    // otherwise finish its resync and join meanwhile, holding what the in-sync leg may lack
    // (tree sim seed 244057).
    recopyOnSyncing(s, op);
  }
  if (--op.pending > 0) return;
  op.legsDone = true;
  if (op.errno !== 0) recopyOnSyncing(s, op);
  if (op.barrier === 0) finish(s, op, op.errno);
}

/**
 * The last in-sync leg failed `op` (so it may or may not hold it) while syncing legs may have
 * taken it: they must get this range from the in-sync leg again, and not join before.
 */
function recopyOnSyncing(s: MirrorState, op: MutOp): void {
  for (const other of s.legs) {
    if (other.state !== "syncing") continue;
    other.joinPhase = 0;
    other.needs.setRange(op.r0, op.r1, (page) => s.meta.persist(s.pageKey(other.index, page)));
    s.resyncs.get(other.index)?.pump();
  }
}

export function releaseBarrier(s: MirrorState, op: MutOp, errno: number): void {
  if (errno !== 0 && op.errno === 0) op.errno = errno;
  op.barrier--;
  if (op.barrier === 0 && op.legsDone && !op.finished) finish(s, op, op.errno);
}

function finish(s: MirrorState, op: MutOp, errno: number): void {
  if (op.finished) return;
  op.finished = true;
  s.running.delete(op);
  for (let a = op.a0; a <= op.a1; a++) {
    const n = (s.activeInflight.get(a) ?? 1) - 1;
    if (n <= 0) s.activeInflight.delete(a);
    else s.activeInflight.set(a, n);
  }
  op.data = null;
  op.hold = null;
  op.done(errno);
  if (s.running.size === 0) s.quiesced?.();
  if (s.wanted.size > 0) scheduleGrants(s);
  drainLockWait(s);
  s.hooks.checkIdle();
}

/** Record [r0, r1] as missing on `leg` (a tracked leg); a FUA op waits for the record. */
function markMissing(s: MirrorState, leg: MirrorLeg, r0: number, r1: number, waiter: MutOp | null): void {
  const pages = new Set<number>();
  leg.needs.setRange(r0, r1, (page) => pages.add(page));
  if (waiter !== null) {
    // A FUA write is durable when it completes: so must be the record of what it skipped.
    for (let p = pageOf(r0); p <= pageOf(r1); p++) pages.add(p);
    for (const page of pages) {
      waiter.barrier++;
      s.meta.persist(s.pageKey(leg.index, page), (e) => releaseBarrier(s, waiter, e), true);
    }
    return;
  }
  for (const page of pages) s.meta.persist(s.pageKey(leg.index, page));
}

export function drainLockWait(s: MirrorState): void {
  if (s.draining) {
    s.drainAgain = true;
    return;
  }
  s.draining = true;
  do {
    s.drainAgain = false;
    for (let i = 0; i < s.lockWait.length; ) {
      const op = s.lockWait[i]!;
      if (conflicts(s, op)) {
        i++;
        continue;
      }
      s.lockWait.splice(i, 1);
      startOp(s, op);
    }
  } while (s.drainAgain);
  s.draining = false;
}
