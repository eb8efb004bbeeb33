/**
 * @module storage/tree/mirror/mirror — RAID-1 over legs that are any StoragePort (a file, a
 * remote DST export through its client engine, a stripe, another mirror): the mirror
 * mapping of DST, with generations ("age") and dirty-region bitmaps on the legs
 * (docs/tree.md is the design; mirror/layout.ts the on-leg format).
 *
 * This file is the port and the wiring; each concern has its file:
 * - mirror/writes.ts — a write goes to every in-sync and syncing leg and completes when all
 *   of them have it, after its write-intent region is recorded; what a degraded leg misses
 *   is recorded in its bitmap slot first;
 * - mirror/reads.ts — reads go to an in-sync leg (round-robin or least-latency);
 * - mirror/flush.ts — FLUSH, and clearing the write-intent regions it made durable;
 * - mirror/leg-health.ts — degrading a failed leg (never the last in-sync one), probing it;
 * - mirror/resync-driver.ts, mirror/resync.ts, mirror/region-locks.ts — resyncing only what
 *   a returning leg misses while I/O continues;
 * - mirror/metadata.ts, mirror/meta-writer.ts — superblocks and bitmap pages on the legs;
 * - mirror/assemble.ts, mirror/startup.ts — deciding and carrying out an open;
 * - mirror/grow.ts — growing it online (`dstd resize`);
 * - mirror/suspend.ts — a leg the operator takes out for maintenance and brings back;
 * - mirror/leg-change.ts — a leg replaced or added while it runs (a reload);
 * - mirror/state.ts — what they share; mirror/status.ts — what `dstd status` shows.
 *
 * Bounded: the lock table and the wait queue hold at most `maxQueued` requests (beyond:
 * EAGAIN); bitmaps are the slot size fixed at creation; the resync copies `window` regions
 * at once. Pure logic over ports: time and timers come from the injected TreeClock.
 */
import { Errno, errnoMessage } from "../../../lib/errno.ts";
import { DstdError } from "../../../lib/errors.ts";
import type { BufferHold, Done, ExtentsDone, HashedDone, StoragePort, ZeroFlags } from "../../port.ts";
import { call } from "../../port.ts";
import type { Describable, NodeSnapshot } from "../describe.ts";
import { checkRequest } from "../legs.ts";
import { planAssembly, type LegFound } from "./assemble.ts";
import { flushLegs } from "./flush.ts";
import { growMirror, growProblem } from "./grow.ts";
import { BITMAP_SLOTS, type Layout, MAX_MIRROR_LEGS, MIRROR_ID_BYTES, SUPERBLOCK_AREA, decodeSuperblockArea } from "./layout.ts";
import type { MirrorLeg, MirrorLegInput } from "./leg.ts";
import { legFailed, scheduleProbe } from "./leg-health.ts";
import { commitRecord, SB_KEY } from "./metadata.ts";
import { extentsFrom, readFrom } from "./reads.ts";
import { lockRegion, unlockRegion } from "./region-locks.ts";
import type { FailureCause } from "./resync.ts";
import { startResync } from "./resync-driver.ts";
import { MirrorState, type MirrorOptions } from "./state.ts";
import { startMirror } from "./startup.ts";
import { mirrorSnapshot } from "./status.ts";
import { resumeLeg, resumeProblem, suspendLeg, suspendProblem } from "./suspend.ts";
import { legChangeProblem, setLeg } from "./leg-change.ts";
import { drainLockWait, mutate, releaseBarrier } from "./writes.ts";
import type { ReadPolicy } from "../../../config/tree-spec.ts";
export type { ReadPolicy };
export type { MirrorLegInput } from "./leg.ts";
export { MIRROR_DEFAULTS, type MirrorLog, type MirrorOptions } from "./state.ts";

/** Open (or create) a mirror over `legs`: read every superblock, decide, commit, start resyncs. */
export async function openMirror(legs: readonly MirrorLegInput[], options: MirrorOptions): Promise<MirrorPort> {
  if (legs.length > MAX_MIRROR_LEGS) throw new DstdError("E_CONFIG", `a mirror has at most ${MAX_MIRROR_LEGS} legs (got ${legs.length})`);
  const found: LegFound[] = await Promise.all(
    legs.map(async (leg): Promise<LegFound> => {
      const base = { sizeBytes: leg.port?.size ?? 0, blockSize: leg.port?.blockSize ?? 512, writeMostly: leg.writeMostly === true };
      if (leg.port === null) return { ...base, present: false, decoded: null };
      if (leg.port.readOnly) throw new DstdError("E_CONFIG", `mirror leg ${leg.label} is read-only; a mirror writes its metadata to every leg`);
      if (leg.port.size < SUPERBLOCK_AREA) return { ...base, present: true, decoded: { kind: "blank" } };
      const area = new Uint8Array(SUPERBLOCK_AREA);
      try {
        await call.read(leg.port, 0, area);
      } catch {
        return { ...base, present: false, decoded: null };
      }
      return { ...base, present: true, decoded: decodeSuperblockArea(area) };
    }),
  );
  const id = options.randomId().slice(0, MIRROR_ID_BYTES);
  const plan = planAssembly(found, { assumeClean: options.assumeClean === true, layout: options.layout, newId: id });
  if (typeof plan === "string") throw new DstdError("E_MIRROR", `mirror of ${legs.map((l) => l.label).join(", ")}: ${plan}`);
  const mirror = new MirrorPort(new MirrorState(legs, plan, options), options.description ?? `mirror of ${legs.map((i) => i.label).join(", ")}`);
  await startMirror(mirror.state, plan);
  return mirror;
}

export class MirrorPort implements StoragePort, Describable {
  readonly kind = "mirror";
  readonly canMultiConn = true;
  readonly canFastZero = false;
  readonly canFlush = true;
  readonly synchronous = false;
  readonly readOnly = false;
  readonly blockSize: number;
  readonly maxPayload: number;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canBlockStatus: boolean;
  private closing: Promise<void> | null = null;
  private idleWaiters: (() => void)[] = [];

  constructor(
    readonly state: MirrorState,
    readonly description: string,
  ) {
    const s = state;
    const present = s.legs.map((l) => l.port).filter((p): p is StoragePort => p !== null);
    this.blockSize = s.blockSize;
    this.maxPayload = s.maxPayload;
    this.canTrim = present.every((p) => p.canTrim);
    this.canZero = present.every((p) => p.canZero);
    this.canBlockStatus = present.some((p) => p.canBlockStatus);
    s.offers = { canTrim: this.canTrim, canZero: this.canZero };
    s.hooks = {
      legFailed: (leg, errno, cause) => legFailed(s, leg, errno, cause),
      releaseBarrier: (op, errno) => releaseBarrier(s, op, errno),
      drainLockWait: () => drainLockWait(s),
      scheduleProbe: (leg) => scheduleProbe(s, leg),
      startResync: (leg) => startResync(s, leg),
      checkIdle: () => this.checkIdle(),
    };
  }

  get size(): number {
    return this.state.size;
  }
  get layout(): Layout {
    return this.state.layout;
  }
  get legs(): MirrorLeg[] {
    return this.state.legs;
  }
  get mirrorId(): Uint8Array {
    return this.state.mirrorId;
  }
  /** The mirror's generation: goes up whenever a leg leaves the in-sync set. */
  get generation(): number {
    return this.state.generation;
  }
  /** Bytes the resyncs of this mirror moved (copied + zeroed), for status and tests. */
  get resyncedBytes(): number {
    return this.state.resyncedBytes;
  }

  // ---- StoragePort -------------------------------------------------------------------------

  read(offset: number, into: Uint8Array, done: Done): void {
    const invalid = checkRequest("read", offset, into.length, this);
    if (invalid !== 0) return done(invalid);
    if (into.length === 0) return done(0);
    readFrom(this.state, offset, into, (errno) => done(errno), 0);
  }

  /** A read from one leg, with that leg's hash of the data when it has one. */
  readHashed(offset: number, into: Uint8Array, done: HashedDone): void {
    const invalid = checkRequest("read", offset, into.length, this);
    if (invalid !== 0) return done(invalid, null);
    if (into.length === 0) return done(0, null);
    readFrom(this.state, offset, into, done, 0);
  }

  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    const invalid = checkRequest("write", offset, data.length, this);
    if (invalid !== 0) return done(invalid);
    mutate(this.state, "write", offset, data.length, data, fua, false, done);
  }

  /** A handed-over buffer (storage/port.ts BufferHold): handed over to every leg that keeps buffers, with its XXH3-64 when known. */
  writeHandedOver(offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done, xxh3?: bigint): void {
    const invalid = checkRequest("write", offset, data.length, this);
    if (invalid !== 0) return done(invalid);
    mutate(this.state, "write", offset, data.length, data, fua, false, done, hold, xxh3);
  }

  trim(offset: number, length: number, fua: boolean, done: Done): void {
    const invalid = checkRequest("trim", offset, length, this);
    if (invalid !== 0) return done(invalid);
    mutate(this.state, "trim", offset, length, null, fua, false, done);
  }

  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    if (flags.fast) return done(Errno.ENOTSUP);
    const invalid = checkRequest("zero", offset, length, this);
    if (invalid !== 0) return done(invalid);
    mutate(this.state, "zero", offset, length, null, flags.fua, flags.noHole, done);
  }

  flush(done: Done): void {
    if (this.state.closed) return done(Errno.ESHUTDOWN);
    flushLegs(this.state, done);
  }

  /** Grow online (mirror/grow.ts, docs/tree.md "Growing a mirror"); a mirror does not shrink. */
  resize(size: number, done: Done): void {
    growMirror(this.state, size, done);
  }

  /** Why resize(size) would be refused now, for the operator (export-node's `dstd resize`). */
  resizeProblem(size: number): string | null {
    return size === this.state.size ? null : (growProblem(this.state, size)?.reason ?? null);
  }

  extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
    const invalid = checkRequest("block-status", offset, length, this);
    if (invalid !== 0) return done(invalid, null);
    extentsFrom(this.state, offset, length, maxExtents, done);
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  describe(): NodeSnapshot {
    return mirrorSnapshot(this.state, this.kind, this.description);
  }

  // ---- for the resync and tests --------------------------------------------------------------

  lockRegion(region: number, locked: () => void): void {
    lockRegion(this.state, region, locked);
  }

  unlockRegion(region: number): void {
    unlockRegion(this.state, region);
  }

  /** `leg` failed a request after its own budget: true when the mirror absorbed it (docs/tree.md). */
  legFailed(leg: MirrorLeg, errno: number, cause: FailureCause): boolean {
    return legFailed(this.state, leg, errno, cause);
  }

  // ---- operator: a leg out for maintenance (mirror/suspend.ts) ------------------------------

  /** Why leg `index` cannot be suspended (or resumed) now, or null. */
  legProblem(index: number, action: "suspend" | "resume"): string | null {
    const leg = this.state.legs[index];
    if (leg === undefined) return `the mirror has no leg ${index}`;
    return action === "suspend" ? suspendProblem(this.state, leg) : resumeProblem(this.state, leg);
  }

  /** Take leg `index` out (held out across restarts) or bring it back; EBUSY when legProblem says why not. */
  setLegHeld(index: number, action: "suspend" | "resume", done: Done): void {
    const leg = this.state.legs[index];
    if (leg === undefined) return done(Errno.EINVAL);
    if (action === "suspend") suspendLeg(this.state, leg, done);
    else resumeLeg(this.state, leg, done);
  }

  // ---- a leg replaced or added while it runs (mirror/leg-change.ts) ----------------------

  /** Why `port` cannot take slot `index` (a replacement, or the next new slot), or null. */
  legChangeProblem(index: number, port: StoragePort): string | null {
    return legChangeProblem(this.state, index, port);
  }

  /** `done` once every record made so far (a setLeg's) is durable on the legs, or with the errno that kept it from them. */
  whenRecorded(done: Done): void {
    commitRecord(this.state, done);
  }

  /** Put a leg in slot `index`, resynced whole; the replaced leg's label, or null for a new slot. Throws why not. */
  setLeg(index: number, input: MirrorLegInput & { port: StoragePort }): string | null {
    return setLeg(this.state, index, input);
  }

  /**
   * A reload changed the subtree under leg `index` in place (daemon/export-tree-changes.ts):
   * its label follows the configuration, and a later reopen (a probe, `dstd leg resume`)
   * opens the subtree as it is configured now.
   */
  relabelLeg(index: number, label: string, open: () => Promise<StoragePort>): void {
    const leg = this.state.legs[index];
    if (leg === undefined) throw new DstdError("E_STATE", `the mirror has no leg ${index}`);
    leg.label = label;
    leg.open = open;
  }

  // ---- shutdown ------------------------------------------------------------------------------

  private checkIdle(): void {
    if (this.idleWaiters.length === 0 || !this.idle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const waiter of waiters) waiter();
  }

  /** Nothing in flight: no request, no resync copy, no metadata write (tests wait for this). */
  get quiescent(): boolean {
    return this.idle() && this.state.meta.inflight === 0;
  }

  private idle(): boolean {
    if (this.state.running.size > 0 || this.state.lockWait.length > 0) return false;
    for (const resync of this.state.resyncs.values()) if (resync.busy) return false;
    return true;
  }

  private async shutdown(): Promise<void> {
    const s = this.state;
    s.closed = true;
    for (const leg of s.legs) {
      leg.probe?.cancel();
      leg.probe = null;
    }
    for (const resync of s.resyncs.values()) resync.stopped = true;
    if (!this.idle()) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    try {
      if (s.legs.some((l) => l.state === "in-sync")) {
        await new Promise<void>((resolve, reject) => flushLegs(s, (e) => (e === 0 ? resolve() : reject(new Error(errnoMessage(e))))));
        s.open = false;
        await new Promise<void>((resolve, reject) => s.meta.persist(SB_KEY, (e) => (e === 0 ? resolve() : reject(new Error(errnoMessage(e))))));
      }
    } catch (error) {
      this.log(`mirror: clean shutdown record not written (${(error as Error).message}); the next open resyncs the write-intent regions`);
    }
    const ports = s.legs.map((l) => l.port).filter((p): p is StoragePort => p !== null);
    await Promise.allSettled(ports.map((p) => p.close()));
  }

  private log(message: string): void {
    this.state.log.warn(message);
  }
}

/** Leg count and slot count, for docs and tests. */
export const MIRROR_LIMITS = { maxLegs: MAX_MIRROR_LEGS, bitmapSlots: BITMAP_SLOTS };
