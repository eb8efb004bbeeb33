/**
 * @module storage/tree/mirror/resync-driver — driving the resync of a returning leg
 * (docs/tree.md "Resync while I/O continues"): which leg is copied from, the host the copy
 * loop (mirror/resync.ts) runs against, and the join — every metadata page copied to the
 * synced leg, then one superblock commit listing it in sync on all legs.
 */
import { formatSize } from "../../../lib/size.ts";
import type { ResyncSnapshot } from "../describe.ts";
import { joinCompletions } from "../join.ts";
import { BITMAP_SLOTS } from "./layout.ts";
import type { MirrorLeg } from "./leg.ts";
import { SB_KEY } from "./metadata.ts";
import { lockRegion, unlockRegion } from "./region-locks.ts";
import { Resync, type ResyncHost } from "./resync.ts";
import type { MirrorState } from "./state.ts";

/** What the copy loop of a resync may ask of the mirror. */
function resyncHost(s: MirrorState): ResyncHost {
  return {
    layout: s.layout,
    window: s.window,
    chunkBytes: s.chunkBytes,
    checkpointBytes: s.checkpointBytes,
    source: () => resyncSource(s),
    lockRegion: (region, locked) => lockRegion(s, region, locked),
    unlockRegion: (region) => unlockRegion(s, region),
    legFailed: (leg, errno, cause) => s.hooks.legFailed(leg, errno, cause),
    slotPagesChanged: (leg, pages) => {
      for (const page of pages) s.meta.persist(s.pageKey(leg.index, page));
    },
    join: (leg, done) => join(s, leg, done),
    retryLater: (run) => void s.clock.after(s.probeIntervalMs, () => (s.closed ? undefined : run())),
    ended: (leg, joined, snapshot, startedAt) => resyncEnded(s, leg, joined, snapshot, startedAt),
    now: () => s.clock.now(),
  };
}

export function startResync(s: MirrorState, leg: MirrorLeg): void {
  if (s.closed) return;
  const previous = s.resyncs.get(leg.index);
  if (previous !== undefined) previous.stopped = true;
  const resync = new Resync(resyncHost(s), leg);
  s.resyncs.set(leg.index, resync);
  resync.pump();
}

function resyncSource(s: MirrorState): MirrorLeg | null {
  const inSync = s.legs.filter((l) => l.state === "in-sync" && l.port !== null);
  return inSync.find((l) => !l.writeMostly) ?? inSync[0] ?? null;
}

/**
 * Make a synced leg a member: first copy every metadata page to it (it is a target of page
 * writes from then on) and flush it, then commit a superblock listing it in sync to it and the
 * others. The flush matters: the superblock goes with FUA, the pages do not, and a leg whose
 * durable superblock lists it in sync may be the next assembly's authority (mirror/assemble.ts)
 * — its bitmaps must be on its disk by then, or a degraded leg's missing regions vanish with a
 * crash (tree sim seed 104895).
 */
function join(s: MirrorState, leg: MirrorLeg, done: (ok: boolean) => void): void {
  const aborted = () => leg.joinPhase === 0 || leg.state !== "syncing" || leg.needs.count > 0;
  leg.joinPhase = 1;
  const keys: number[] = [];
  for (let slot = 0; slot < BITMAP_SLOTS; slot++) for (let page = 0; page < s.pagesPerSlot; page++) keys.push(s.pageKey(slot, page));
  let failed = 0;
  const copied = joinCompletions(keys.length + 1, () => {
    if (failed !== 0 || aborted()) {
      leg.joinPhase = 0;
      return done(false);
    }
    const port = leg.port;
    if (port === null) {
      leg.joinPhase = 0;
      return done(false);
    }
    port.flush((flushed) => {
      if (flushed !== 0 || aborted()) {
        if (flushed !== 0) s.hooks.legFailed(leg, flushed, "flush");
        leg.joinPhase = 0;
        return done(false);
      }
      commitJoin(s, leg, aborted, done);
    });
  });
  for (const key of keys) {
    s.meta.persist(key, (errno) => {
      if (errno !== 0) failed = errno;
      copied(0);
    });
  }
  copied(0);
}

/**
 * The superblock that lists `leg` in sync, to it and the others; then it is a member.
 *
 * First the others' record raises the leg's slot to the current generation (its `high`): the
 * commit may land on the leg and not on the others (one of them down), and the next assembly,
 * from an authority that still lists the leg out of sync, would find the leg's generation past
 * the slot's and call it diverged — written elsewhere — when this mirror wrote it (tree sim seed
 * 26646). The leg holds this generation's writes since its resync began, so the slot's bitmap
 * stays valid for it.
 */
function commitJoin(s: MirrorState, leg: MirrorLeg, aborted: () => boolean, done: (ok: boolean) => void): void {
  if (leg.high < s.generation) {
    leg.high = s.generation;
    s.meta.persist(SB_KEY, (errno) => {
      if (errno !== 0 || aborted()) {
        leg.joinPhase = 0;
        return done(false);
      }
      commitJoin(s, leg, aborted, done);
    });
    return;
  }
  leg.joinPhase = 2;
  s.meta.persist(SB_KEY, (errno) => {
    if (errno !== 0 || aborted()) {
      leg.joinPhase = 0;
      s.meta.persist(SB_KEY);
      return done(false);
    }
    leg.joinPhase = 0;
    leg.state = "in-sync";
    leg.flaps = 0;
    leg.joinGen = leg.diskGen ?? s.generation;
    leg.full = false;
    leg.low = leg.high = 0;
    leg.cleanPending.reset();
    leg.unflushed.reset();
    leg.needs.reset();
    for (let page = 0; page < s.pagesPerSlot; page++) s.meta.persist(s.pageKey(leg.index, page));
    done(true);
  });
}

function resyncEnded(s: MirrorState, leg: MirrorLeg, joined: boolean, snapshot: ResyncSnapshot, startedAt: number): void {
  const current = s.resyncs.get(leg.index);
  if (current !== undefined && current.snapshot === snapshot) s.resyncs.delete(leg.index);
  const moved = snapshot.copiedBytes + snapshot.zeroedBytes;
  s.resyncedBytes += moved;
  leg.movedSinceLeft += moved;
  const seconds = ((s.clock.now() - startedAt) / 1000).toFixed(1);
  if (joined) {
    leg.resync = null;
    const all = leg.movedSinceLeft === moved ? "" : `; ${leg.movedSinceLeft} bytes by all resyncs since it left`;
    s.log.info(
      `mirror leg ${leg.label} in sync at generation ${s.generation}; resync moved ${moved} bytes (${formatSize(moved)}: ${snapshot.copiedBytes} copied, ${snapshot.zeroedBytes} zeroed) in ${seconds} s${all}`,
    );
  } else if (!s.closed) {
    s.log.warn(`mirror leg ${leg.label}: resync stopped (${leg.state}) after ${formatSize(snapshot.doneBytes)}; it resumes when the leg is back`);
  }
  s.hooks.checkIdle();
}

