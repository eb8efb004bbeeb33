/**
 * @module storage/tree/mirror/leg-change — a leg replaced or added while the mirror runs (a
 * reload, daemon/export-tree-changes.ts; docs/tree.md "Replacing and adding mirror legs"):
 * md's `mdadm --add` of a new disk, and of a replacement for a failed one.
 *
 * The new leg takes its slot out of sync and whole ("FULL": every region missing), the record
 * saying so is written, and it is probed at once: like any returning leg it is judged by its
 * superblock (blank: resynced whole; another mirror's or another slot's metadata: foreign and
 * left untouched, docs/tree.md "Operator actions"), then resynced while I/O goes on.
 *
 * Refused, with the reason: replacing an in-sync or syncing leg (suspend it first — `dstd leg
 * suspend` — so that nothing it holds is needed any more), a ninth leg, a slot that skips one,
 * during a grow, and a leg that does not fit (read-only, smaller than the mirror, a larger block
 * size, a smaller payload, or without trim or write-zeroes that the mirror offers).
 */
import { DstdError } from "../../../lib/errors.ts";
import type { StoragePort } from "../../port.ts";
import { MAX_MIRROR_LEGS } from "./layout.ts";
import { MirrorLeg, REFUSED_STATES, type MirrorLegInput } from "./leg.ts";
import { fitProblem, runProbe } from "./leg-health.ts";
import { SB_KEY, refusedSlot } from "./metadata.ts";
import type { MirrorState } from "./state.ts";

/** Why `port` cannot take slot `index` now, or null (fitProblem: also the trim / write-zeroes the mirror offers). */
export function legChangeProblem(s: MirrorState, index: number, port: StoragePort): string | null {
  if (s.closed) return "the mirror is closing";
  if (s.growing) return "a grow of this mirror is running: change its legs once it has ended";
  if (!Number.isSafeInteger(index) || index < 0 || index >= MAX_MIRROR_LEGS) return `a mirror has at most ${MAX_MIRROR_LEGS} legs`;
  if (index > s.legs.length) return `leg ${index} would leave slot ${s.legs.length} empty: legs are added at the end`;
  const old = s.legs[index];
  if (old !== undefined && (old.state === "in-sync" || old.state === "syncing")) {
    return `leg ${old.label} is ${old.state}: suspend it first (dstd leg suspend), then replace it`;
  }
  const misfit = fitProblem(s, port);
  if (misfit !== null) return `new leg ${port.description}: ${misfit}`;
  return null;
}

/**
 * Put `input` in slot `index` (a replacement, or a new slot at the end), out of sync and
 * whole, record that, and probe it at once. Returns the replaced leg's label, or null for a
 * new slot. Throws when legChangeProblem would say why not.
 */
export function setLeg(s: MirrorState, index: number, input: MirrorLegInput & { port: StoragePort }): string | null {
  const problem = legChangeProblem(s, index, input.port);
  if (problem !== null) throw new DstdError("E_STATE", problem);
  const old = s.legs[index] ?? null;
  const leg = new MirrorLeg(index, input.label, input.writeMostly === true, input.port, input.open ?? null, s.regions, s.layout.bitmapBytes);
  leg.state = "degraded";
  leg.full = true;
  leg.needs.fill();
  if (old !== null) {
    // The slot's generation range carries over: a disk that was this slot and was written
    // elsewhere since is still found diverged. A refused leg's is the one its slot on disk
    // records (metadata.ts refusedSlot), as the next open and a resume read it: the range it
    // held in memory may be [0, 0] (refused at open), which would call this slot's own disk,
    // taken out and brought back grown, diverged.
    const range = REFUSED_STATES.has(old.state) ? refusedSlot(old.state) : { low: old.low, high: old.highBound };
    leg.low = range.low;
    leg.high = range.high;
    old.probe?.cancel();
    old.probe = null;
    const resync = s.resyncs.get(index);
    if (resync !== undefined) {
      resync.stopped = true;
      s.resyncs.delete(index);
    }
    // Requests in flight on it finish first (the port's close waits for them).
    if (old.port !== null) void old.port.close().catch(() => {});
    old.port = null;
    old.state = "absent";
    s.legs[index] = leg;
  } else {
    leg.low = 0;
    leg.high = s.generation;
    s.legs.push(leg);
  }
  for (let page = 0; page < s.pagesPerSlot; page++) s.meta.persist(s.pageKey(index, page));
  s.recordsMade++;
  s.meta.persist(SB_KEY);
  s.log.warn(`mirror leg ${index}: ${old === null ? "added" : `${old.label} replaced by`} ${leg.label}; it is resynced whole`);
  runProbe(s, leg);
  return old === null ? null : old.label;
}
