/**
 * @module storage/tree/mirror/leg-health — a leg that fails, and a leg that comes back
 * (docs/tree.md "Writes, reads, failures", "Generations" and "Leg states"):
 *
 * - a leg that fails a request after its own budget is degraded (the generation goes up, the
 *   in-sync legs' superblocks record it out of sync, the writes in flight are recorded in its
 *   bitmap slot and complete only once that record is down); the last in-sync leg is never
 *   degraded: its failures go to the caller;
 * - a leg the operator suspends leaves the same way (mirror/suspend.ts) but is not probed;
 * - a degraded or absent leg is probed every `probeIntervalMs` (its superblock read, or the
 *   leg reopened); when it answers with a generation its slot allows it is resynced, a blank
 *   or older one whole, and a foreign, diverged, damaged or too small one is left untouched
 *   and not probed again until the operator resumes it after a repair (mirror/suspend.ts);
 * - a leg that fails again while it resyncs (it answers its probe, not its writes) waits twice
 *   as long before each next probe, up to 2^MAX_PROBE_DOUBLINGS intervals, until it joins:
 *   a flapping leg neither costs the clients a budget wait every interval nor keeps the resync
 *   relocking regions (Ceph damps flapping OSDs the same way, md leaves a failed disk out).
 */
import { errnoMessage } from "../../../lib/errno.ts";
import { formatSize } from "../../../lib/size.ts";
import type { StoragePort } from "../../port.ts";
import { joinCompletions } from "../join.ts";
import { SUPERBLOCK_AREA, decodeSuperblockArea, sameId } from "./layout.ts";
import type { MirrorLeg } from "./leg.ts";
import { SB_KEY, addActiveRegions, commitRecord } from "./metadata.ts";
import type { FailureCause } from "./resync.ts";
import type { MirrorState, MutOp } from "./state.ts";

/**
 * `leg` failed a request after its own budget. Degrade it unless it is the last in-sync
 * leg; true when the failure was absorbed (the caller may go on without the leg).
 */
export function legFailed(s: MirrorState, leg: MirrorLeg, errno: number, cause: FailureCause): boolean {
  const what = `${cause} failed: ${errnoMessage(errno)}`;
  if (leg.state === "in-sync" && lastInSync(s)) {
    const now = s.clock.now();
    if (now - s.lastLastLegWarning >= 10_000 || s.lastLastLegWarning === 0) {
      s.lastLastLegWarning = now;
      s.log.warn(`mirror leg ${leg.label}: ${what}; it is the last in-sync leg, so the error goes to the client`);
    }
    return false;
  }
  if (leg.state !== "in-sync" && leg.state !== "syncing") return true;
  const was = leg.state;
  leg.degradations++;
  if (was === "syncing") leg.flaps++;
  leg.lastError = what;
  // A failed flush may have lost what it acknowledged since the last durable point, on a
  // syncing leg too (a file or device drops its dirty pages; only a remote leg replays them).
  takeOut(s, leg, "degraded", cause === "flush");
  const again = leg.flaps > 0 ? `; it failed ${leg.flaps}× while resyncing since it was in sync: next probe in ${probeDelay(s, leg) / 1000} s` : "";
  s.log.warn(`mirror leg ${leg.label} degraded (${was}, ${what}); generation ${s.generation}; its writes are now recorded for resync${again}`);
  scheduleProbe(s, leg);
  return true;
}

/** `leg` is the only in-sync leg: taking it out would leave no leg to read from. */
export function lastInSync(s: MirrorState): boolean {
  return s.legs.filter((l) => l.state === "in-sync").length <= 1;
}

/**
 * Take an in-sync or syncing leg out of the legs that get writes, into `state` (degraded after
 * a failure, suspended by the operator): the generation goes up (when it was in sync), the
 * regions it may lack are recorded in its slot, and every write in flight completes only
 * once that record is on disk. `lostActive`: the write-intent regions count as missing on it
 * (its unflushed writes may be gone); otherwise they are recorded on disk only (`unflushed`).
 * `recorded` is called once the record is down.
 */
export function takeOut(s: MirrorState, leg: MirrorLeg, state: "degraded" | "suspended", lostActive: boolean, recorded?: (errno: number) => void): void {
  if (leg.state === "in-sync") {
    leg.low = leg.diskGen ?? leg.joinGen;
    leg.high = Math.max(s.generation, leg.issuedGen);
    leg.movedSinceLeft = 0;
    s.generation++;
  } else {
    // A syncing leg: its disk shows a generation this mirror read from it or wrote to it
    // (diskGen), which is not "written elsewhere" when it shows it again (tree sim seed 130349).
    leg.high = Math.max(leg.highBound, leg.diskGen ?? 0);
    leg.joinPhase = 0;
  }
  // What it took since its last durable checkpoint (resync copies, writes to a syncing leg)
  // may be gone with it: its record on disk counts them as missing already (slotPage); so
  // does memory now, or a return in this process would resync without them and the next
  // checkpoint clear them for good (the syncing leg rejoined stale: a failed checkpoint flush).
  leg.needs.orWith(leg.cleanPending.bytes);
  leg.needs.orWith(leg.unflushed.bytes);
  leg.cleanPending.reset();
  leg.unflushed.reset();
  leg.state = state;
  const pages = new Set<number>();
  // Not lost while this node runs (unless lostActive), but not known durable either.
  addActiveRegions(s, lostActive ? leg.needs : leg.unflushed, s.active.bytes, (page) => pages.add(page));
  // Every write in flight may be missing on it; those complete only after the record is down.
  const held: MutOp[] = [];
  for (const op of s.running) {
    if (!op.issued || op.legsDone) continue;
    leg.needs.setRange(op.r0, op.r1, (page) => pages.add(page));
    op.barrier++;
    held.push(op);
  }
  const release = joinCompletions(pages.size + 1, (e) => {
    for (const op of held) s.hooks.releaseBarrier(op, e);
    recorded?.(e);
  });
  s.recordsMade++;
  commitRecord(s, release);
  for (const page of pages) s.meta.persist(s.pageKey(leg.index, page), release);
  s.resyncs.get(leg.index)?.pump();
}

/** Doublings of the probe interval at most: 32 intervals, 64 s at the default 2 s. */
export const MAX_PROBE_DOUBLINGS = 5;

/** The wait before `leg`'s next probe: the interval, doubled for each flap since it was in sync. */
export function probeDelay(s: MirrorState, leg: MirrorLeg): number {
  return s.probeIntervalMs * 2 ** Math.min(leg.flaps, MAX_PROBE_DOUBLINGS);
}

export function scheduleProbe(s: MirrorState, leg: MirrorLeg): void {
  if (s.closed || leg.probe !== null || leg.probing || leg.state === "suspended" || replaced(s, leg)) return;
  leg.probe = s.clock.after(probeDelay(s, leg), () => {
    leg.probe = null;
    runProbe(s, leg);
  });
}

/**
 * Ask a degraded (or absent) leg for its superblock; resync it if it may rejoin. `ended` once
 * this probe has judged the leg or given up (a later probe is scheduled then): a resume of a
 * refused leg (mirror/suspend.ts) answers the operator with the verdict.
 */
export function runProbe(s: MirrorState, leg: MirrorLeg, ended: () => void = () => {}): void {
  if (s.closed || !leg.tracked || leg.probing || leg.state === "suspended" || replaced(s, leg)) return ended();
  if (leg.port === null) {
    if (leg.open === null) return ended();
    leg.probing = true;
    leg.open().then(
      (port) => {
        leg.probing = false;
        if (s.closed || leg.state === "suspended" || replaced(s, leg)) {
          void port.close();
          return ended();
        }
        const misfit = fitProblem(s, port);
        if (misfit !== null) {
          refuse(s, leg, "too-small", `reopened, it does not fit: ${misfit}`);
          void port.close();
          return ended();
        }
        leg.port = port;
        runProbe(s, leg, ended);
      },
      (error: Error) => {
        leg.probing = false;
        leg.lastError = `cannot open: ${error.message}`;
        scheduleProbe(s, leg);
        ended();
      },
    );
    return;
  }
  const port = leg.port;
  leg.probing = true;
  const area = new Uint8Array(SUPERBLOCK_AREA);
  port.read(0, area, (errno) => {
    leg.probing = false;
    if (s.closed || !leg.tracked || leg.state === "suspended" || replaced(s, leg)) return ended();
    // Suspended and resumed while this read ran: the port was replaced, probe the new one.
    if (leg.port !== port) {
      scheduleProbe(s, leg);
      return ended();
    }
    if (errno !== 0) {
      leg.lastError = `probe failed: ${errnoMessage(errno)}`;
      scheduleProbe(s, leg);
      return ended();
    }
    judgeReturning(s, leg, port, area);
    ended();
  });
}

function judgeReturning(s: MirrorState, leg: MirrorLeg, port: StoragePort, area: Uint8Array): void {
  const misfit = fitProblem(s, port);
  if (misfit !== null) return refuse(s, leg, "too-small", misfit);
  const decoded = decodeSuperblockArea(area);
  let full = leg.full;
  if (decoded.kind === "damaged") {
    if (decoded.mirrorId === null || !sameId(decoded.mirrorId, s.mirrorId)) return refuse(s, leg, "damaged", decoded.reason);
    full = true;
    s.log.warn(`mirror leg ${leg.label} came back with a torn superblock (${decoded.reason}): resyncing it whole`);
  } else if (decoded.kind === "blank") {
    full = true;
    s.log.warn(`mirror leg ${leg.label} came back without mirror metadata: resyncing it whole`);
  } else {
    const sb = decoded.sb;
    if (!sameId(sb.mirrorId, s.mirrorId)) return refuse(s, leg, "foreign", "holds another mirror's metadata");
    if (sb.legIndex !== leg.index) return refuse(s, leg, "foreign", `holds slot ${sb.legIndex} of this mirror`);
    leg.diskGen = sb.generation;
    if (sb.generation > leg.highBound) return refuse(s, leg, "diverged", `generation ${sb.generation} is newer than when it left (${leg.highBound}): written elsewhere since`);
    if (sb.generation < leg.low) {
      full = true;
      s.log.warn(`mirror leg ${leg.label} came back with generation ${sb.generation}, older than when it left (${leg.low}): resyncing it whole`);
    }
  }
  if (full && !leg.full) {
    leg.full = true;
    leg.needs.fill();
    for (let page = 0; page < s.pagesPerSlot; page++) s.meta.persist(s.pageKey(leg.index, page));
    s.meta.persist(SB_KEY);
  }
  leg.state = "syncing";
  leg.lastError = null;
  s.log.info(`mirror leg ${leg.label} is back (generation ${leg.diskGen ?? "none"}): resyncing ${formatSize(Math.min(leg.needs.count * s.layout.regionBytes, s.size))}${leg.full ? " (whole leg)" : ""}`);
  s.hooks.startResync(leg);
}

function refuse(s: MirrorState, leg: MirrorLeg, state: MirrorLeg["state"], why: string): void {
  leg.state = state;
  leg.lastError = why;
  s.log.warn(`mirror leg ${leg.label} is ${state}: ${why}; it is left untouched (docs/tree.md "Leg states")`);
  s.meta.persist(SB_KEY);
}


/** A reload put another leg in its slot (mirror/leg-change.ts): a probe of it that was running ends here. */
function replaced(s: MirrorState, leg: MirrorLeg): boolean {
  return s.legs[leg.index] !== leg;
}

/**
 * Why `port` cannot be a leg of this mirror, or null: one place for a reopened leg, a returning
 * one and a new one (mirror/leg-change.ts) — the mirror writes metadata to every leg, needs its
 * metadata area and data on each, and sends blocks and payloads of its own sizes.
 */
export function fitProblem(s: MirrorState, port: StoragePort): string | null {
  const needed = s.layout.metaBytes + s.layout.dataBytes;
  if (port.readOnly) return "it is read-only; a mirror writes its metadata to every leg";
  if (port.size < needed) return `${formatSize(port.size)}; the mirror needs ${formatSize(needed)} (its metadata area and ${formatSize(s.layout.dataBytes)} of data)`;
  if (port.blockSize > s.blockSize) return `${port.blockSize}-byte blocks; the mirror's are ${s.blockSize}`;
  if (port.maxPayload < s.maxPayload) return `requests of at most ${formatSize(port.maxPayload)}; the mirror sends up to ${formatSize(s.maxPayload)}`;
  // A leg absent at open reopens through a probe: without these every TRIM or WRITE_ZEROES
  // would fail on it, and it would degrade again each time it came back, never joining.
  if ((s.offers.canTrim && !port.canTrim) || (s.offers.canZero && !port.canZero)) return "it lacks trim or write-zeroes, which the mirror offers its clients";
  return null;
}
