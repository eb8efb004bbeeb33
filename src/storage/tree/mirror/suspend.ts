/**
 * @module storage/tree/mirror/suspend — the operator takes a leg out for maintenance and
 * brings it back (`dstd leg suspend|resume`, docs/tree.md "Suspending a leg for maintenance"):
 * DST's "suspending a remote node for maintenance without breaking the data flow", and what
 * md's write-intent bitmap gives `mdadm --fail` / `--re-add`.
 *
 * Suspend: the mirror is flushed (so little is left unflushed on the leg), then the leg leaves
 * the legs that get writes as a degraded one does (mirror/leg-health.ts takeOut) with the
 * write-intent regions counted as missing on it — maintenance may restart or replace it, and
 * whatever it had not made durable must come back by resync. Its slot is marked held, so the
 * mirror neither probes it nor lets it rejoin at the next open. A leg the mirror can reopen
 * (every configured leg) is closed: a remote leg's node sees its client leave.
 *
 * Resume: the hold is cleared and the leg is reopened and probed at once; it is judged like any
 * returning leg (generation, identity, size) and only its recorded regions are resynced. A
 * degraded or absent leg (out, not held) is probed at once instead of at its next interval.
 * A leg the mirror refused (foreign, diverged, damaged, too small) is never probed: resuming
 * it says the operator repaired it (wiped it, replaced or grew its disk). It is reopened and
 * judged now as the next open would judge it, by the slot its refusal recorded (metadata.ts
 * refusedSlot): resynced whole if it fits now, else refused again with the new reason, which
 * the resume waits for so the operator hears the verdict.
 *
 * Refused, with the reason: suspending the last in-sync leg (nothing would serve reads) or a
 * leg while a grow runs; suspending a refused leg (the mirror leaves it untouched already).
 */
import { Errno } from "../../../lib/errno.ts";
import type { Done } from "../../port.ts";
import { flushLegs } from "./flush.ts";
import { REFUSED_STATES, type MirrorLeg } from "./leg.ts";
import { lastInSync, runProbe, scheduleProbe, takeOut } from "./leg-health.ts";
import { SB_KEY, commitRecord, refusedSlot } from "./metadata.ts";
import type { MirrorState } from "./state.ts";

/** Why `leg` cannot be suspended now, or null (already suspended: null, nothing to do). */
export function suspendProblem(s: MirrorState, leg: MirrorLeg): string | null {
  if (s.closed) return "the mirror is closing";
  if (leg.state === "suspended") return null;
  if (REFUSED_STATES.has(leg.state)) return `leg ${leg.label} is ${leg.state}: the mirror already leaves it untouched`;
  if (s.growing) return "a grow of this mirror is running: suspend a leg once it has ended";
  if (leg.state === "in-sync" && lastInSync(s)) return `leg ${leg.label} is the only in-sync leg: without it nothing holds the mirror's data; bring another leg in sync first`;
  return null;
}

/** Why `leg` cannot be resumed now, or null (a leg back already: nothing to do; a degraded one: probed now). */
export function resumeProblem(s: MirrorState, leg: MirrorLeg): string | null {
  if (s.closed) return "the mirror is closing";
  return null;
}

/** Suspend `leg`; `done(0)` once the record that holds it out is on every in-sync leg. */
export function suspendLeg(s: MirrorState, leg: MirrorLeg, done: Done): void {
  if (suspendProblem(s, leg) !== null) return done(Errno.EBUSY);
  if (leg.state === "suspended") return done(0);
  // Flush first: only what is written after it can be unflushed on the leg when it leaves.
  flushLegs(s, () => {
    const problem = suspendProblem(s, leg);
    if (problem !== null) return done(Errno.EBUSY);
    if (leg.state === "suspended") return done(0);
    leg.probe?.cancel();
    leg.probe = null;
    leg.lastError = "suspended by the operator";
    const recorded = (errno: number) => {
      if (errno === 0 && leg.state === "suspended") closeLeg(leg);
      done(errno);
    };
    if (leg.state === "in-sync" || leg.state === "syncing") {
      const was = leg.state;
      takeOut(s, leg, "suspended", true, recorded);
      s.log.warn(`mirror leg ${leg.label} suspended by the operator (${was}); generation ${s.generation}; its writes are recorded for resync until dstd leg resume`);
    } else {
      // Degraded or absent: already out; only the hold is new.
      leg.state = "suspended";
      s.recordsMade++;
      commitRecord(s, recorded);
      s.log.warn(`mirror leg ${leg.label} suspended by the operator (it was out already); it is not probed until dstd leg resume`);
    }
  });
}

/**
 * Resume `leg`: `done(0)` once the record without the hold is down; the probe runs at once.
 * A refused leg: `done(0)` once it is judged again (its state says the verdict).
 */
export function resumeLeg(s: MirrorState, leg: MirrorLeg, done: Done): void {
  if (resumeProblem(s, leg) !== null) return done(Errno.EBUSY);
  leg.flaps = 0; // the operator says it is fixed: probed at the base interval again
  if (REFUSED_STATES.has(leg.state)) return judgeRepaired(s, leg, done);
  if (leg.tracked && leg.state !== "suspended") {
    // Degraded or absent: out already, not held; the operator asks to try it now.
    leg.probe?.cancel();
    leg.probe = null;
    runProbe(s, leg);
    return done(0);
  }
  if (leg.state !== "suspended") return done(0);
  leg.state = "degraded";
  leg.lastError = null;
  s.recordsMade++;
  commitRecord(s, (errno) => {
    if (leg.state !== "degraded") return done(errno);
    if (errno !== 0) {
      scheduleProbe(s, leg);
      return done(errno);
    }
    s.log.info(`mirror leg ${leg.label} resumed by the operator: reopened and probed, its recorded regions are resynced`);
    // A leg the mirror can reopen is reopened: maintenance may have replaced what the old port held.
    closeLeg(leg);
    runProbe(s, leg);
    done(0);
  });
}

/**
 * The operator repaired a refused leg: judge it now like a returning leg. Until then it was
 * neither written nor had what it missed recorded, and its slot on disk says so (FULL, in the
 * range metadata.ts refusedSlot gives): memory takes that slot, so it can only come back by a
 * whole resync, and a diverged leg that still shows the generation it was written at elsewhere
 * stays diverged. Out of sync and tracked while it is judged (it gets nothing, serves nothing);
 * a leg that cannot be read now stays tracked and is probed like any degraded leg.
 */
function judgeRepaired(s: MirrorState, leg: MirrorLeg, done: Done): void {
  const was = leg.state;
  const slot = refusedSlot(was);
  leg.probe?.cancel();
  leg.probe = null;
  leg.state = "degraded";
  leg.lastError = null;
  leg.full = true;
  leg.needs.fill();
  leg.low = slot.low;
  leg.high = slot.high;
  // What its disk showed before the repair says nothing of what it shows now (a wiped leg).
  leg.diskGen = null;
  for (let page = 0; page < s.pagesPerSlot; page++) s.meta.persist(s.pageKey(leg.index, page));
  s.recordsMade++;
  s.meta.persist(SB_KEY);
  s.log.info(`mirror leg ${leg.label} (${was}) resumed by the operator after a repair: reopened and judged like a returning leg; resynced whole if it may rejoin`);
  // A leg the mirror can reopen is reopened: the repair may have replaced or grown its disk.
  closeLeg(leg);
  runProbe(s, leg, () => done(0));
}

/** Close the port of a leg the mirror can reopen (requests in flight on it finish first). */
export function closeLeg(leg: MirrorLeg): void {
  const port = leg.port;
  if (port === null || leg.open === null) return;
  leg.port = null;
  void port.close().catch(() => {});
}
