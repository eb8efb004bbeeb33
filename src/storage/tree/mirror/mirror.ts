/**
 * @module storage/tree/mirror/mirror — RAID-1 over legs that are any StoragePort (a file, a
 * remote DST export through its client engine, a stripe, another mirror): the mirror
 * mapping of DST, with generations ("age") and dirty-region bitmaps on the legs
 * (docs/tree.md is the design; mirror/layout.ts the on-leg format).
 *
 * - A write (trim, write-zeroes) goes to every in-sync and syncing leg and completes when all
 *   of them have it. A leg's failure is final only when its own port says so: a remote leg
 *   fails a request only after its resend budget (deadline, max_resends), so an outage
 *   shorter than that never degrades the mirror — the engine resends, the write waits.
 * - A leg that fails is degraded: the generation goes up and the in-sync legs' superblocks
 *   record it out of sync (with the range of generations its disk may show), and every
 *   region a write touches from then on (and every region of a write in flight when it
 *   failed) is set in its bitmap slot on the in-sync legs. Writes it missed are acknowledged
 *   only after that record is on the in-sync legs. The last in-sync leg is never degraded:
 *   its failures go to the caller.
 * - Before a write, its write-intent region ("active" bitmap, coarse) is recorded on the
 *   in-sync legs (FUA); a FLUSH clears the regions it made durable. After an unclean stop
 *   those regions are resynced from one in-sync leg to the others, so legs never disagree
 *   about a write that reached only some of them.
 * - Reads go to an in-sync leg (round-robin or least-latency; write-mostly legs only when no
 *   other is in sync); a failed read degrades that leg and is retried on another.
 * - A degraded leg is probed (its superblock read) every `probeIntervalMs`; when it answers
 *   with a generation its slot allows, only its recorded regions are resynced
 *   (mirror/resync.ts) while I/O continues; a blank leg is resynced whole; a foreign or
 *   diverged one is never touched.
 *
 * Bounded: the lock table and the wait queue hold at most `maxQueued` requests (beyond:
 * EAGAIN); bitmaps are the slot size fixed at creation; the resync copies `window` regions
 * at once. Pure logic over ports: time and timers come from the injected TreeClock.
 */
import { Errno, errnoMessage } from "../../../lib/errno.ts";
import { DstdError } from "../../../lib/errors.ts";
import { formatSize } from "../../../lib/size.ts";
import type { Done, ExtentsDone, StoragePort, ZeroFlags } from "../../port.ts";
import { call } from "../../port.ts";
import type { TreeClock } from "../clock.ts";
import type { Describable, NodeSnapshot, ResyncSnapshot } from "../describe.ts";
import { snapshotOf } from "../describe.ts";
import { joinCompletions } from "../join.ts";
import { checkRequest } from "../legs.ts";
import { planAssembly, type LegFound, type Plan } from "./assemble.ts";
import { RegionBitmap, pageOf } from "./bitmap.ts";
import {
  ACTIVE_SLOT,
  BITMAP_SLOTS,
  type Layout,
  type LayoutOptions,
  MAX_MIRROR_LEGS,
  MIRROR_ID_BYTES,
  PAGE_BYTES,
  SUPERBLOCK_AREA,
  SUPERBLOCK_BYTES,
  type Slot,
  SlotState,
  activeCount,
  bitmapOffset,
  decodeSuperblockArea,
  encodeSuperblock,
  hexId,
  regionCount,
  sameId,
} from "./layout.ts";
import { MirrorLeg, REFUSED_STATES, type MirrorLegInput } from "./leg.ts";
import { MetaWriter, type MetaJob, type MetaTarget } from "./meta-writer.ts";
import { Resync, type FailureCause, type ResyncHost } from "./resync.ts";
import type { ReadPolicy } from "../../../config/tree-spec.ts";
export type { ReadPolicy };

export type { MirrorLegInput } from "./leg.ts";

export interface MirrorLog {
  info(message: string): void;
  warn(message: string): void;
}

export interface MirrorOptions {
  clock: TreeClock;
  /** 16 random bytes: a new mirror's identity (node:crypto in production, a seeded PRNG in tests). */
  randomId: () => Uint8Array;
  log?: MirrorLog;
  readPolicy?: ReadPolicy;
  /** A new mirror's legs are taken as identical (blank media): no initial resync. */
  assumeClean?: boolean;
  /** How often a degraded leg is probed. */
  probeIntervalMs?: number;
  /** Regions a resync copies at once. */
  resyncWindow?: number;
  /** Largest single copy request. */
  resyncChunkBytes?: number;
  /** A resync flushes the leg and records progress every this many bytes. */
  checkpointBytes?: number;
  /** Layout of a new mirror (tests use small areas; docs/tree.md has the defaults). */
  layout?: LayoutOptions;
  description?: string;
  /** Requests held at once (running + waiting for a locked region); more get EAGAIN. */
  maxQueued?: number;
}

export const MIRROR_DEFAULTS = {
  probeIntervalMs: 2_000,
  resyncWindow: 4,
  resyncChunkBytes: 1024 * 1024,
  checkpointBytes: 256 * 1024 * 1024,
  maxQueued: 16_384,
};

type MutKind = "write" | "trim" | "zero";

interface MutOp {
  kind: MutKind;
  offset: number;
  length: number;
  data: Uint8Array | null;
  fua: boolean;
  noHole: boolean;
  done: Done;
  /** Regions [r0, r1] and write-intent regions [a0, a1] it touches. */
  r0: number;
  r1: number;
  a0: number;
  a1: number;
  issued: boolean;
  pending: number;
  errno: number;
  /** Metadata commits this request must wait for before it completes. */
  barrier: number;
  legsDone: boolean;
  finished: boolean;
}

const SB_KEY = -1;

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
  const mirror = new MirrorPort(legs, plan, options);
  await mirror.start(plan);
  return mirror;
}

export class MirrorPort implements StoragePort, Describable {
  readonly kind = "mirror";
  readonly description: string;
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
  readonly layout: Layout;
  readonly legs: MirrorLeg[];
  readonly mirrorId: Uint8Array;
  /** The mirror's generation: goes up whenever a leg leaves the in-sync set. */
  generation: number;
  private seq: number;
  private readonly regions: number;
  private readonly regionsPerActive: number;
  private readonly pagesPerSlot: number;
  private readonly active: RegionBitmap;
  /** The write-intent bits known to be on every in-sync leg's disk. */
  private readonly activeDurable: Uint8Array;
  private readonly activeInflight = new Map<number, number>();
  private readonly lastTouch = new Map<number, number>();
  private flushEpoch = 0;
  private readonly meta: MetaWriter;
  private readonly running = new Set<MutOp>();
  private readonly lockWait: MutOp[] = [];
  private readonly lockCount = new Map<number, number>();
  private readonly wanted = new Map<number, (() => void)[]>();
  private readonly resyncs = new Map<number, Resync>();
  private draining = false;
  private drainAgain = false;
  private grantScheduled = false;
  private rr = 0;
  private open = true;
  private closed = false;
  private closing: Promise<void> | null = null;
  private idleWaiters: (() => void)[] = [];
  private readonly resyncHost: ResyncHost;
  private lastLastLegWarning = 0;
  /**
   * Leg-state changes made (degrades) and how many of them a completed superblock write
   * holds: while some are not on disk, a write that skips a degraded leg waits for one.
   */
  private recordsMade = 0;
  private recordsDurable = 0;
  private readonly clock: TreeClock;
  private readonly log: MirrorLog;
  private readonly readPolicy: ReadPolicy;
  private readonly probeIntervalMs: number;
  private readonly maxQueued: number;
  /** Resync settings (ResyncHost). */
  readonly window: number;
  readonly chunkBytes: number;
  readonly checkpointBytes: number;
  /** Bytes the resyncs of this mirror moved (copied + zeroed), for status and tests. */
  resyncedBytes = 0;

  constructor(inputs: readonly MirrorLegInput[], plan: Plan, options: MirrorOptions) {
    this.layout = plan.layout;
    this.mirrorId = plan.mirrorId;
    this.generation = plan.generation;
    this.seq = plan.seq;
    this.clock = options.clock;
    this.log = options.log ?? { info() {}, warn() {} };
    this.readPolicy = options.readPolicy ?? "round-robin";
    this.probeIntervalMs = options.probeIntervalMs ?? MIRROR_DEFAULTS.probeIntervalMs;
    this.window = Math.max(1, options.resyncWindow ?? MIRROR_DEFAULTS.resyncWindow);
    this.chunkBytes = Math.max(4096, options.resyncChunkBytes ?? MIRROR_DEFAULTS.resyncChunkBytes);
    this.checkpointBytes = Math.max(1, options.checkpointBytes ?? MIRROR_DEFAULTS.checkpointBytes);
    this.maxQueued = Math.max(1, options.maxQueued ?? MIRROR_DEFAULTS.maxQueued);
    this.regions = regionCount(this.layout);
    this.regionsPerActive = this.layout.activeBytes / this.layout.regionBytes;
    this.pagesPerSlot = this.layout.bitmapBytes / PAGE_BYTES;
    this.active = new RegionBitmap(activeCount(this.layout), this.layout.bitmapBytes);
    this.activeDurable = new Uint8Array(this.layout.bitmapBytes);
    this.legs = inputs.map((input, i) => {
      const leg = new MirrorLeg(i, input.label, input.writeMostly === true, input.port, input.open ?? null, this.regions, this.layout.bitmapBytes);
      const p = plan.legs[i]!;
      leg.state = p.state;
      leg.full = p.full;
      leg.low = p.low;
      leg.high = p.high;
      leg.joinGen = p.joinGen;
      leg.diskGen = p.diskGen;
      if (p.note !== null && p.state !== "in-sync") leg.lastError = p.note;
      return leg;
    });
    const present = inputs.map((i) => i.port).filter((p): p is StoragePort => p !== null);
    this.blockSize = Math.max(512, ...present.map((p) => p.blockSize));
    this.maxPayload = Math.min(...present.map((p) => p.maxPayload));
    this.canTrim = present.every((p) => p.canTrim);
    this.canZero = present.every((p) => p.canZero);
    this.canBlockStatus = present.some((p) => p.canBlockStatus);
    this.description = options.description ?? `mirror of ${inputs.map((i) => i.label).join(", ")}`;
    this.meta = new MetaWriter(
      {
        targets: (key) => this.metaTargets(key),
        begin: (key) => this.metaJob(key),
        failed: (leg, errno) => this.legFailed(this.legs[leg]!, errno, "meta"),
      },
      (key) => key === SB_KEY || Math.floor(key / this.pagesPerSlot) === ACTIVE_SLOT,
    );
    this.resyncHost = {
      layout: this.layout,
      window: this.window,
      chunkBytes: this.chunkBytes,
      checkpointBytes: this.checkpointBytes,
      source: () => this.resyncSource(),
      lockRegion: (region, locked) => this.lockRegion(region, locked),
      unlockRegion: (region) => this.unlockRegion(region),
      legFailed: (leg, errno, cause) => this.legFailed(leg, errno, cause),
      slotPagesChanged: (leg, pages) => {
        for (const page of pages) this.meta.persist(this.pageKey(leg.index, page));
      },
      join: (leg, done) => this.join(leg, done),
      retryLater: (run) => void this.clock.after(this.probeIntervalMs, () => (this.closed ? undefined : run())),
      ended: (leg, joined, snapshot, startedAt) => this.resyncEnded(leg, joined, snapshot, startedAt),
      now: () => this.clock.now(),
    };
  }

  get size(): number {
    return this.layout.dataBytes;
  }

  // ---- assembly ----------------------------------------------------------------------------

  /** Load bitmaps, write the metadata the plan needs, then start resyncs and probes. */
  async start(plan: Plan): Promise<void> {
    const inSync = this.legs.filter((l) => l.state === "in-sync");
    let intent: Uint8Array | null = null;
    if (!plan.create) {
      const authority = this.legs[plan.authority]!.port!;
      const wanted = this.legs.filter((leg) => plan.legs[leg.index]!.fromSlot && !plan.legs[leg.index]!.full);
      const [read, ...bitmaps] = await Promise.all([plan.unclean ? this.readSlot(authority, ACTIVE_SLOT) : null, ...wanted.map((leg) => this.readSlot(authority, leg.index))]);
      intent = read ?? null;
      wanted.forEach((leg, i) => leg.needs.load(bitmaps[i]!));
      for (const leg of this.legs) if (plan.legs[leg.index]!.fromActive && intent !== null) this.addActiveRegions(leg.needs, intent);
    }
    for (const leg of this.legs) if (leg.full) leg.needs.fill();
    // Bitmaps first, then the superblocks that point at them, then the cleared write-intent
    // bitmap: a crash between steps leaves the previous, still consistent, record.
    const slots = Array.from({ length: MAX_MIRROR_LEGS }, (_, slot) => this.slotBytes(slot));
    await Promise.all(inSync.flatMap((leg) => slots.map((bytes, slot) => this.writeMeta(leg, bitmapOffset(this.layout, slot), bytes, false))));
    if (plan.create) {
      // Leg 0 (the source) first: a crash before the others are stamped leaves them blank.
      for (const leg of this.legs) await this.writeMeta(leg, (this.seq % 2) * SUPERBLOCK_BYTES, this.superblockFor(leg, leg.state === "in-sync" ? this.generation : 0), true);
      for (const leg of this.legs) leg.diskGen = leg.state === "in-sync" ? this.generation : 0;
      this.seq++;
    } else {
      await new Promise<void>((resolve, reject) =>
        this.meta.persist(SB_KEY, (errno) => (errno === 0 ? resolve() : reject(new DstdError("E_MIRROR", `cannot write the mirror's superblock: ${errnoMessage(errno)}`)))),
      );
    }
    const cleared = new Uint8Array(this.layout.bitmapBytes);
    await Promise.all(this.legs.filter((l) => l.state === "in-sync").map((leg) => this.writeMeta(leg, bitmapOffset(this.layout, ACTIVE_SLOT), cleared, true)));
    this.activeDurable.fill(0);
    const summary = this.legs.map((l) => `${l.label}: ${l.state}${l.lastError && l.state !== "in-sync" ? ` (${l.lastError})` : ""}`).join("; ");
    this.log.info(`mirror ${hexId(this.mirrorId).slice(0, 8)} ${plan.create ? "created" : "opened"} at generation ${this.generation}, ${formatSize(this.size)}, region ${formatSize(this.layout.regionBytes)}${plan.unclean ? " (after an unclean stop)" : ""}: ${summary}`);
    for (const leg of this.legs) {
      if (REFUSED_STATES.has(leg.state)) this.log.warn(`mirror leg ${leg.label} is ${leg.state}: ${leg.lastError ?? ""}; it is left untouched (docs/tree.md "Leg states")`);
      if (leg.state === "syncing") this.startResync(leg);
      if (leg.tracked) this.scheduleProbe(leg);
    }
  }

  private async readSlot(port: StoragePort, slot: number): Promise<Uint8Array> {
    const bytes = new Uint8Array(this.layout.bitmapBytes);
    await call.read(port, bitmapOffset(this.layout, slot), bytes).catch((error: Error) => {
      throw new DstdError("E_MIRROR", `cannot read the mirror's bitmaps from ${port.description}: ${error.message}`);
    });
    return bytes;
  }

  private writeMeta(leg: MirrorLeg, offset: number, bytes: Uint8Array, fua: boolean): Promise<void> {
    return call.write(leg.port!, offset, bytes, fua).catch((error: Error) => {
      throw new DstdError("E_MIRROR", `mirror leg ${leg.label}: cannot write its metadata: ${error.message}`);
    });
  }

  // ---- StoragePort -------------------------------------------------------------------------

  read(offset: number, into: Uint8Array, done: Done): void {
    const invalid = checkRequest("read", offset, into.length, this);
    if (invalid !== 0) return done(invalid);
    if (into.length === 0) return done(0);
    this.readFrom(offset, into, done, 0);
  }

  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    const invalid = checkRequest("write", offset, data.length, this);
    if (invalid !== 0) return done(invalid);
    this.mutate("write", offset, data.length, data, fua, false, done);
  }

  trim(offset: number, length: number, fua: boolean, done: Done): void {
    const invalid = checkRequest("trim", offset, length, this);
    if (invalid !== 0) return done(invalid);
    this.mutate("trim", offset, length, null, fua, false, done);
  }

  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    if (flags.fast) return done(Errno.ENOTSUP);
    const invalid = checkRequest("zero", offset, length, this);
    if (invalid !== 0) return done(invalid);
    this.mutate("zero", offset, length, null, flags.fua, flags.noHole, done);
  }

  flush(done: Done): void {
    if (this.closed) return done(Errno.ESHUTDOWN);
    this.flushLegs(done);
  }

  /**
   * Metadata first (bitmap pages the data depends on), then every leg that gets writes. If a
   * leg was degraded meanwhile, its records were written after the drain: go round again, so
   * they are durable (covered by a leg flush) before write-intent regions are cleared.
   */
  private flushLegs(done: Done, epoch = ++this.flushEpoch, pinned: ReadonlySet<number> = new Set(this.activeInflight.keys())): void {
    const records = this.recordsMade;
    this.meta.drain((metaErrno) => {
      if (metaErrno !== 0) return done(metaErrno);
      const legs = this.legs.filter((l) => l.writable && l.port!.canFlush);
      let errno = 0;
      const join = joinCompletions(legs.length + 1, () => {
        if (errno !== 0) return done(errno);
        if (this.recordsMade !== records) return this.flushLegs(done, epoch, pinned);
        this.clearActive(epoch, pinned);
        done(0);
      });
      for (const leg of legs) {
        leg.port!.flush((e) => {
          if (e !== 0 && leg.writable && !this.legFailed(leg, e, "flush") && errno === 0) errno = e;
          join(0);
        });
      }
      join(0);
    });
  }

  extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
    const invalid = checkRequest("block-status", offset, length, this);
    if (invalid !== 0) return done(invalid, null);
    const tried = new Set<MirrorLeg>();
    const attempt = () => {
      const leg = this.pickReader(tried);
      if (leg === null) return done(Errno.EIO, null);
      tried.add(leg);
      leg.port!.extents(this.layout.metaBytes + offset, length, maxExtents, (errno, extents) => {
        if (errno !== 0 || extents === null) return tried.size < this.legs.length ? attempt() : done(errno || Errno.EIO, null);
        done(0, extents);
      });
    };
    attempt();
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  describe(): NodeSnapshot {
    return {
      kind: this.kind,
      description: this.description,
      sizeBytes: this.size,
      generation: this.generation,
      regionBytes: this.layout.regionBytes,
      readPolicy: this.readPolicy,
      legs: this.legs.map((leg) => ({
        index: leg.index,
        label: leg.label,
        state: leg.state,
        generation: leg.diskGen,
        writeMostly: leg.writeMostly,
        dirtyBytes: leg.state === "in-sync" ? 0 : Math.min(leg.needs.count * this.layout.regionBytes, this.size),
        resync: leg.resync === null ? null : { ...leg.resync },
        lastError: leg.lastError,
        degradations: leg.degradations,
        node: leg.port === null ? null : snapshotOf(leg.port),
      })),
    };
  }

  // ---- reads ---------------------------------------------------------------------------------

  private readFrom(offset: number, into: Uint8Array, done: Done, attempt: number): void {
    const leg = this.pickReader(null);
    if (leg === null) return done(Errno.EIO);
    const started = this.clock.now();
    leg.inflightReads++;
    leg.port!.read(this.layout.metaBytes + offset, into, (errno) => {
      leg.inflightReads--;
      if (errno === 0) {
        const took = this.clock.now() - started;
        leg.latencyMs = leg.reads === 0 ? took : leg.latencyMs + (took - leg.latencyMs) / 8;
        leg.reads++;
        return done(0);
      }
      if (leg.state === "in-sync" && !this.legFailed(leg, errno, "read")) return done(errno);
      if (attempt + 1 >= this.legs.length) return done(errno);
      this.readFrom(offset, into, done, attempt + 1);
    });
  }

  /** An in-sync leg to read from; write-mostly legs only when nothing else is in sync. */
  private pickReader(exclude: Set<MirrorLeg> | null): MirrorLeg | null {
    let candidates = this.legs.filter((l) => l.state === "in-sync" && l.port !== null && !exclude?.has(l));
    const preferred = candidates.filter((l) => !l.writeMostly);
    if (preferred.length > 0) candidates = preferred;
    if (candidates.length === 0) return null;
    if (this.readPolicy === "least-latency") {
      let best = candidates[0]!;
      let bestScore = Number.POSITIVE_INFINITY;
      const start = this.rr++ % candidates.length;
      for (let i = 0; i < candidates.length; i++) {
        const leg = candidates[(start + i) % candidates.length]!;
        const score = (leg.reads === 0 ? 0 : leg.latencyMs + 0.001) * (1 + leg.inflightReads);
        if (score < bestScore) [best, bestScore] = [leg, score];
      }
      return best;
    }
    return candidates[this.rr++ % candidates.length]!;
  }

  // ---- mutations -----------------------------------------------------------------------------

  private mutate(kind: MutKind, offset: number, length: number, data: Uint8Array | null, fua: boolean, noHole: boolean, done: Done): void {
    if (this.closed) return done(Errno.ESHUTDOWN);
    if (length === 0) return done(0);
    if (this.running.size + this.lockWait.length >= this.maxQueued) return done(Errno.EAGAIN);
    const { regionBytes, activeBytes } = this.layout;
    const last = offset + length - 1;
    const op: MutOp = {
      kind,
      offset,
      length,
      data,
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
    };
    if (this.lockWait.length > 0 || this.conflicts(op)) this.lockWait.push(op);
    else this.startOp(op);
  }

  /** Does `op` touch a region a resync holds or waits for? */
  private conflicts(op: MutOp): boolean {
    for (const region of this.lockCount.keys()) if (region >= op.r0 && region <= op.r1) return true;
    for (const region of this.wanted.keys()) if (region >= op.r0 && region <= op.r1) return true;
    return false;
  }

  private startOp(op: MutOp): void {
    this.running.add(op);
    const pages = new Set<number>();
    for (let a = op.a0; a <= op.a1; a++) {
      this.activeInflight.set(a, (this.activeInflight.get(a) ?? 0) + 1);
      this.lastTouch.set(a, this.flushEpoch);
      const durable = (this.activeDurable[a >>> 3]! & (1 << (a & 7))) !== 0;
      if (!this.active.get(a) || !durable) {
        this.active.set(a);
        pages.add(pageOf(a));
      }
    }
    if (pages.size === 0) return this.issue(op);
    // The write-intent record must be on disk before any leg may have the data.
    let errno = 0;
    const join = joinCompletions(pages.size, () => (errno !== 0 ? this.finish(op, errno) : this.issue(op)));
    for (const page of pages) {
      this.meta.persist(this.pageKey(ACTIVE_SLOT, page), (e) => {
        if (e !== 0 && errno === 0) errno = e;
        join(0);
      });
    }
  }

  private issue(op: MutOp): void {
    op.issued = true;
    let skips = false;
    for (const leg of this.legs) {
      if (!leg.tracked) continue;
      skips = true;
      this.markMissing(leg, op.r0, op.r1, op.fua ? op : null);
    }
    // It is acknowledged without a degraded leg: only once the record of that is on disk.
    if (skips && this.recordsDurable < this.recordsMade) {
      op.barrier++;
      this.commitRecord((e) => this.releaseBarrier(op, e));
    }
    const targets = this.legs.filter((l) => l.writable);
    op.pending = targets.length + 1;
    const legOffset = this.layout.metaBytes + op.offset;
    for (const leg of targets) {
      const port = leg.port!;
      const done: Done = (errno) => this.legDone(op, leg, errno);
      if (op.kind === "write") port.write(legOffset, op.data!, op.fua, done);
      else if (op.kind === "trim") port.trim(legOffset, op.length, op.fua, done);
      else port.zero(legOffset, op.length, { fua: op.fua, noHole: op.noHole, fast: false }, done);
    }
    this.legDone(op, null, 0);
  }

  private legDone(op: MutOp, leg: MirrorLeg | null, errno: number): void {
    if (leg !== null && errno !== 0 && leg.writable && !this.legFailed(leg, errno, "write")) {
      if (op.errno === 0) op.errno = errno;
    }
    if (--op.pending > 0) return;
    op.legsDone = true;
    if (op.errno !== 0) {
      // The last in-sync leg failed it (so it may or may not hold it) while syncing legs may
      // have taken it: they must get this range from the in-sync leg again.
      for (const other of this.legs) {
        if (other.state !== "syncing") continue;
        other.joinPhase = 0;
        other.needs.setRange(op.r0, op.r1, (page) => this.meta.persist(this.pageKey(other.index, page)));
        this.resyncs.get(other.index)?.pump();
      }
    }
    if (op.barrier === 0) this.finish(op, op.errno);
  }

  private releaseBarrier(op: MutOp, errno: number): void {
    if (errno !== 0 && op.errno === 0) op.errno = errno;
    op.barrier--;
    if (op.barrier === 0 && op.legsDone && !op.finished) this.finish(op, op.errno);
  }

  private finish(op: MutOp, errno: number): void {
    if (op.finished) return;
    op.finished = true;
    this.running.delete(op);
    for (let a = op.a0; a <= op.a1; a++) {
      const n = (this.activeInflight.get(a) ?? 1) - 1;
      if (n <= 0) this.activeInflight.delete(a);
      else this.activeInflight.set(a, n);
    }
    op.data = null;
    op.done(errno);
    if (this.wanted.size > 0) this.scheduleGrants();
    this.drainLockWait();
    this.checkIdle();
  }

  /** Record [r0, r1] as missing on `leg` (a tracked leg); a FUA op waits for the record. */
  private markMissing(leg: MirrorLeg, r0: number, r1: number, waiter: MutOp | null): void {
    const pages = new Set<number>();
    leg.needs.setRange(r0, r1, (page) => pages.add(page));
    if (waiter !== null) {
      // A FUA write is durable when it completes: so must be the record of what it skipped.
      for (let p = pageOf(r0); p <= pageOf(r1); p++) pages.add(p);
      for (const page of pages) {
        waiter.barrier++;
        this.meta.persist(this.pageKey(leg.index, page), (e) => this.releaseBarrier(waiter, e), true);
      }
      return;
    }
    for (const page of pages) this.meta.persist(this.pageKey(leg.index, page));
  }

  private drainLockWait(): void {
    if (this.draining) {
      this.drainAgain = true;
      return;
    }
    this.draining = true;
    do {
      this.drainAgain = false;
      for (let i = 0; i < this.lockWait.length; ) {
        const op = this.lockWait[i]!;
        if (this.conflicts(op)) {
          i++;
          continue;
        }
        this.lockWait.splice(i, 1);
        this.startOp(op);
      }
    } while (this.drainAgain);
    this.draining = false;
  }

  // ---- region locks (ResyncHost) ----------------------------------------------------------

  lockRegion(region: number, locked: () => void): void {
    if (!this.wanted.has(region) && !this.overlapsRunning(region)) {
      this.lockCount.set(region, (this.lockCount.get(region) ?? 0) + 1);
      return locked();
    }
    const list = this.wanted.get(region) ?? [];
    list.push(locked);
    this.wanted.set(region, list);
  }

  unlockRegion(region: number): void {
    const n = (this.lockCount.get(region) ?? 1) - 1;
    if (n <= 0) this.lockCount.delete(region);
    else this.lockCount.set(region, n);
    this.drainLockWait();
    this.checkIdle();
  }

  private overlapsRunning(region: number): boolean {
    for (const op of this.running) if (region >= op.r0 && region <= op.r1) return true;
    return false;
  }

  /** Grant waiting region locks whose writes drained, outside the completion that drained them. */
  private scheduleGrants(): void {
    if (this.grantScheduled) return;
    this.grantScheduled = true;
    this.clock.after(0, () => {
      this.grantScheduled = false;
      for (const [region, waiters] of [...this.wanted]) {
        if (this.overlapsRunning(region)) continue;
        this.wanted.delete(region);
        this.lockCount.set(region, (this.lockCount.get(region) ?? 0) + waiters.length);
        for (const waiter of waiters) waiter();
      }
    });
  }

  // ---- failures, probes, resync ---------------------------------------------------------------

  /**
   * `leg` failed a request after its own budget. Degrade it unless it is the last in-sync
   * leg; true when the failure was absorbed (the caller may go on without the leg).
   */
  legFailed(leg: MirrorLeg, errno: number, cause: FailureCause): boolean {
    const what = `${cause} failed: ${errnoMessage(errno)}`;
    if (leg.state === "in-sync") {
      if (this.legs.filter((l) => l.state === "in-sync").length <= 1) {
        const now = this.clock.now();
        if (now - this.lastLastLegWarning >= 10_000 || this.lastLastLegWarning === 0) {
          this.lastLastLegWarning = now;
          this.log.warn(`mirror leg ${leg.label}: ${what}; it is the last in-sync leg, so the error goes to the client`);
        }
        return false;
      }
      leg.low = leg.diskGen ?? leg.joinGen;
      leg.high = Math.max(this.generation, leg.issuedGen);
      leg.movedSinceLeft = 0;
      this.generation++;
    } else if (leg.state === "syncing") {
      leg.high = leg.highBound;
      leg.joinPhase = 0;
    } else {
      return true;
    }
    const was = leg.state;
    leg.state = "degraded";
    leg.degradations++;
    leg.lastError = what;
    this.log.warn(`mirror leg ${leg.label} degraded (${was}, ${what}); generation ${this.generation}; its writes are now recorded for resync`);
    const pages = new Set<number>();
    if (cause === "flush" && was === "in-sync") {
      // Its flush failed: writes it acknowledged since the last durable point may be gone.
      this.addActiveRegions(leg.needs, this.active.bytes, (page) => pages.add(page));
    } else {
      // Not lost while this node runs, but not known durable either: recorded on disk only.
      this.addActiveRegions(leg.unflushed, this.active.bytes, (page) => pages.add(page));
    }
    // Every write in flight may be missing on it; those complete only after the record is down.
    const held: MutOp[] = [];
    for (const op of this.running) {
      if (!op.issued || op.legsDone) continue;
      leg.needs.setRange(op.r0, op.r1, (page) => pages.add(page));
      op.barrier++;
      held.push(op);
    }
    const release = joinCompletions(pages.size + 1, (e) => {
      for (const op of held) this.releaseBarrier(op, e);
    });
    this.recordsMade++;
    this.commitRecord(release);
    for (const page of pages) this.meta.persist(this.pageKey(leg.index, page), release);
    this.resyncs.get(leg.index)?.pump();
    this.scheduleProbe(leg);
    return true;
  }

  /** Write the superblock; `done` once one holding every record made so far is on disk. */
  private commitRecord(done: Done): void {
    const wanted = this.recordsMade;
    this.meta.persist(SB_KEY, (errno) => {
      if (errno === 0) this.recordsDurable = Math.max(this.recordsDurable, wanted);
      done(errno);
    });
  }

  private scheduleProbe(leg: MirrorLeg): void {
    if (this.closed || leg.probe !== null || leg.probing) return;
    leg.probe = this.clock.after(this.probeIntervalMs, () => {
      leg.probe = null;
      this.runProbe(leg);
    });
  }

  /** Ask a degraded (or absent) leg for its superblock; resync it if it may rejoin. */
  private runProbe(leg: MirrorLeg): void {
    if (this.closed || !leg.tracked || leg.probing) return;
    if (leg.port === null) {
      if (leg.open === null) return;
      leg.probing = true;
      leg.open().then(
        (port) => {
          leg.probing = false;
          if (this.closed) return void port.close();
          if (port.readOnly || port.maxPayload < this.maxPayload || port.blockSize > this.blockSize) {
            leg.state = "too-small";
            leg.lastError = `reopened leg does not fit the mirror (read-only, smaller payload or larger block size)`;
            this.log.warn(`mirror leg ${leg.label}: ${leg.lastError}`);
            this.meta.persist(SB_KEY);
            return void port.close();
          }
          leg.port = port;
          this.runProbe(leg);
        },
        (error: Error) => {
          leg.probing = false;
          leg.lastError = `cannot open: ${error.message}`;
          this.scheduleProbe(leg);
        },
      );
      return;
    }
    const port = leg.port;
    leg.probing = true;
    const area = new Uint8Array(SUPERBLOCK_AREA);
    port.read(0, area, (errno) => {
      leg.probing = false;
      if (this.closed || !leg.tracked) return;
      if (errno !== 0) {
        leg.lastError = `probe failed: ${errnoMessage(errno)}`;
        return this.scheduleProbe(leg);
      }
      this.judgeReturning(leg, port, area);
    });
  }

  private judgeReturning(leg: MirrorLeg, port: StoragePort, area: Uint8Array): void {
    if (port.size < this.layout.metaBytes + this.layout.dataBytes) return this.refuse(leg, "too-small", `${port.size} bytes; the mirror needs ${this.layout.metaBytes + this.layout.dataBytes}`);
    const decoded = decodeSuperblockArea(area);
    let full = leg.full;
    if (decoded.kind === "damaged") {
      if (decoded.mirrorId === null || !sameId(decoded.mirrorId, this.mirrorId)) return this.refuse(leg, "damaged", decoded.reason);
      full = true;
      this.log.warn(`mirror leg ${leg.label} came back with a torn superblock (${decoded.reason}): resyncing it whole`);
    } else if (decoded.kind === "blank") {
      full = true;
      this.log.warn(`mirror leg ${leg.label} came back without mirror metadata: resyncing it whole`);
    } else {
      const sb = decoded.sb;
      if (!sameId(sb.mirrorId, this.mirrorId)) return this.refuse(leg, "foreign", "holds another mirror's metadata");
      if (sb.legIndex !== leg.index) return this.refuse(leg, "foreign", `holds slot ${sb.legIndex} of this mirror`);
      leg.diskGen = sb.generation;
      if (sb.generation > leg.highBound) return this.refuse(leg, "diverged", `generation ${sb.generation} is newer than when it left (${leg.highBound}): written elsewhere since`);
      if (sb.generation < leg.low) {
        full = true;
        this.log.warn(`mirror leg ${leg.label} came back with generation ${sb.generation}, older than when it left (${leg.low}): resyncing it whole`);
      }
    }
    if (full && !leg.full) {
      leg.full = true;
      leg.needs.fill();
      for (let page = 0; page < this.pagesPerSlot; page++) this.meta.persist(this.pageKey(leg.index, page));
      this.meta.persist(SB_KEY);
    }
    leg.state = "syncing";
    leg.lastError = null;
    this.log.info(`mirror leg ${leg.label} is back (generation ${leg.diskGen ?? "none"}): resyncing ${formatSize(Math.min(leg.needs.count * this.layout.regionBytes, this.size))}${leg.full ? " (whole leg)" : ""}`);
    this.startResync(leg);
  }

  private refuse(leg: MirrorLeg, state: MirrorLeg["state"], why: string): void {
    leg.state = state;
    leg.lastError = why;
    this.log.warn(`mirror leg ${leg.label} is ${state}: ${why}; it is left untouched (docs/tree.md "Leg states")`);
    this.meta.persist(SB_KEY);
  }

  private startResync(leg: MirrorLeg): void {
    if (this.closed) return;
    const previous = this.resyncs.get(leg.index);
    if (previous !== undefined) previous.stopped = true;
    const resync = new Resync(this.resyncHost, leg);
    this.resyncs.set(leg.index, resync);
    resync.pump();
  }

  private resyncSource(): MirrorLeg | null {
    const inSync = this.legs.filter((l) => l.state === "in-sync" && l.port !== null);
    return inSync.find((l) => !l.writeMostly) ?? inSync[0] ?? null;
  }

  /**
   * Make a synced leg a member: first copy every metadata page to it (it is a target of page
   * writes from then on), then commit a superblock listing it in sync to it and the others.
   */
  private join(leg: MirrorLeg, done: (ok: boolean) => void): void {
    const aborted = () => leg.joinPhase === 0 || leg.state !== "syncing" || leg.needs.count > 0;
    leg.joinPhase = 1;
    const keys: number[] = [];
    for (let slot = 0; slot < BITMAP_SLOTS; slot++) for (let page = 0; page < this.pagesPerSlot; page++) keys.push(this.pageKey(slot, page));
    let failed = 0;
    const copied = joinCompletions(keys.length + 1, () => {
      if (failed !== 0 || aborted()) {
        leg.joinPhase = 0;
        return done(false);
      }
      leg.joinPhase = 2;
      this.meta.persist(SB_KEY, (errno) => {
        if (errno !== 0 || aborted()) {
          leg.joinPhase = 0;
          this.meta.persist(SB_KEY);
          return done(false);
        }
        leg.joinPhase = 0;
        leg.state = "in-sync";
        leg.joinGen = leg.diskGen ?? this.generation;
        leg.full = false;
        leg.low = leg.high = 0;
        leg.cleanPending.reset();
        leg.unflushed.reset();
        leg.needs.reset();
        for (let page = 0; page < this.pagesPerSlot; page++) this.meta.persist(this.pageKey(leg.index, page));
        done(true);
      });
    });
    for (const key of keys) {
      this.meta.persist(key, (errno) => {
        if (errno !== 0) failed = errno;
        copied(0);
      });
    }
    copied(0);
  }

  private resyncEnded(leg: MirrorLeg, joined: boolean, snapshot: ResyncSnapshot, startedAt: number): void {
    const current = this.resyncs.get(leg.index);
    if (current !== undefined && current.snapshot === snapshot) this.resyncs.delete(leg.index);
    const moved = snapshot.copiedBytes + snapshot.zeroedBytes;
    this.resyncedBytes += moved;
    leg.movedSinceLeft += moved;
    const seconds = ((this.clock.now() - startedAt) / 1000).toFixed(1);
    if (joined) {
      leg.resync = null;
      const all = leg.movedSinceLeft === moved ? "" : `; ${leg.movedSinceLeft} bytes by all resyncs since it left`;
      this.log.info(
        `mirror leg ${leg.label} in sync at generation ${this.generation}; resync moved ${moved} bytes (${formatSize(moved)}: ${snapshot.copiedBytes} copied, ${snapshot.zeroedBytes} zeroed) in ${seconds} s${all}`,
      );
    } else if (!this.closed) {
      this.log.warn(`mirror leg ${leg.label}: resync stopped (${leg.state}) after ${formatSize(snapshot.doneBytes)}; it resumes when the leg is back`);
    }
    this.checkIdle();
  }

  // ---- metadata ------------------------------------------------------------------------------

  private pageKey(slot: number, page: number): number {
    return slot * this.pagesPerSlot + page;
  }

  private metaTargets(key: number): MetaTarget[] {
    const out: MetaTarget[] = [];
    for (const leg of this.legs) {
      if (leg.port === null) continue;
      const joining = leg.state === "syncing" && (key === SB_KEY ? leg.joinPhase === 2 : leg.joinPhase >= 1);
      if (leg.state === "in-sync" || joining) out.push({ leg: leg.index, port: leg.port });
    }
    return out;
  }

  private metaJob(key: number): MetaJob {
    if (key === SB_KEY) {
      const seq = ++this.seq;
      const generation = this.generation;
      const slots = this.slotTable();
      return {
        offset: (seq % 2) * SUPERBLOCK_BYTES,
        bytesFor: (leg) => {
          const target = this.legs[leg]!;
          target.issuedGen = Math.max(target.issuedGen, generation);
          return encodeSuperblock({ mirrorId: this.mirrorId, seq, generation, layout: this.layout, legIndex: leg, legCount: this.legs.length, open: this.open, slots });
        },
        legDone: (leg, errno) => {
          if (errno === 0) this.legs[leg]!.diskGen = generation;
        },
      };
    }
    const slot = Math.floor(key / this.pagesPerSlot);
    const page = key % this.pagesPerSlot;
    const bytes = slot === ACTIVE_SLOT ? this.active.page(page).slice() : this.slotPage(slot, page);
    return {
      offset: bitmapOffset(this.layout, slot) + page * PAGE_BYTES,
      bytesFor: () => bytes,
      settled: (ok) => {
        if (ok && slot === ACTIVE_SLOT) this.activeDurable.set(bytes, page * PAGE_BYTES);
      },
    };
  }

  private slotTable(): Slot[] {
    const slots: Slot[] = [];
    for (const leg of this.legs) {
      if (leg.state === "in-sync") slots.push({ state: SlotState.IN_SYNC, low: leg.joinGen, high: 0 });
      else if (leg.joinPhase === 2 && leg.state === "syncing") slots.push({ state: SlotState.IN_SYNC, low: this.generation, high: 0 });
      else if (leg.state === "diverged") slots.push({ state: SlotState.FULL, low: 0, high: 0 });
      else if (leg.state === "foreign" || leg.state === "damaged" || leg.state === "too-small") slots.push({ state: SlotState.FULL, low: 0, high: Number.MAX_SAFE_INTEGER });
      else slots.push({ state: leg.full ? SlotState.FULL : SlotState.BITMAP, low: leg.low, high: leg.highBound });
    }
    return slots;
  }

  private superblockFor(leg: MirrorLeg, generation: number): Uint8Array {
    return encodeSuperblock({ mirrorId: this.mirrorId, seq: this.seq, generation, layout: this.layout, legIndex: leg.index, legCount: this.legs.length, open: this.open, slots: this.slotTable() });
  }

  /** A leg's bitmap page as recorded on disk: missing regions, plus regions copied but not yet flushed on it. */
  private slotPage(slot: number, page: number): Uint8Array {
    const leg = this.legs[slot];
    if (leg === undefined || leg.state === "in-sync") return new Uint8Array(PAGE_BYTES);
    const out = leg.needs.page(page).slice();
    const pending = leg.cleanPending.page(page);
    const unflushed = leg.unflushed.page(page);
    for (let i = 0; i < out.length; i++) out[i] = out[i]! | pending[i]! | unflushed[i]!;
    return out;
  }

  private slotBytes(slot: number): Uint8Array {
    const out = new Uint8Array(this.layout.bitmapBytes);
    for (let page = 0; page < this.pagesPerSlot; page++) out.set(this.slotPage(slot, page), page * PAGE_BYTES);
    return out;
  }

  /** Set on `leg` every region inside a write-intent region set in `intent`. */
  private addActiveRegions(into: RegionBitmap, intent: Uint8Array, changedPage?: (page: number) => void): void {
    const count = activeCount(this.layout);
    for (let a = 0; a < count; a++) {
      if ((intent[a >>> 3]! & (1 << (a & 7))) === 0) continue;
      into.setRange(a * this.regionsPerActive, Math.min((a + 1) * this.regionsPerActive, this.regions) - 1, changedPage);
    }
  }

  /** After flush `epoch` succeeded: clear write-intent regions it made durable on every leg. */
  private clearActive(epoch: number, pinned: ReadonlySet<number>): void {
    const pages = new Set<number>();
    for (const [a, touched] of this.lastTouch) {
      if (touched >= epoch || pinned.has(a) || this.activeInflight.has(a)) continue;
      this.lastTouch.delete(a);
      if (this.active.clear(a)) pages.add(pageOf(a));
      this.activeDurable[a >>> 3] = this.activeDurable[a >>> 3]! & ~(1 << (a & 7));
    }
    for (const page of pages) this.meta.persist(this.pageKey(ACTIVE_SLOT, page));
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
    return this.idle() && this.meta.inflight === 0;
  }

  private idle(): boolean {
    if (this.running.size > 0 || this.lockWait.length > 0) return false;
    for (const resync of this.resyncs.values()) if (resync.busy) return false;
    return true;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    for (const leg of this.legs) {
      leg.probe?.cancel();
      leg.probe = null;
    }
    for (const resync of this.resyncs.values()) resync.stopped = true;
    if (!this.idle()) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    try {
      if (this.legs.some((l) => l.state === "in-sync")) {
        await new Promise<void>((resolve, reject) => this.flushLegs((e) => (e === 0 ? resolve() : reject(new Error(errnoMessage(e))))));
        this.open = false;
        await new Promise<void>((resolve, reject) => this.meta.persist(SB_KEY, (e) => (e === 0 ? resolve() : reject(new Error(errnoMessage(e))))));
      }
    } catch (error) {
      this.log.warn(`mirror: clean shutdown record not written (${(error as Error).message}); the next open resyncs the write-intent regions`);
    }
    const ports = this.legs.map((l) => l.port).filter((p): p is StoragePort => p !== null);
    await Promise.allSettled(ports.map((p) => p.close()));
  }

}

/** Leg count and slot count, for docs and tests. */
export const MIRROR_LIMITS = { maxLegs: MAX_MIRROR_LEGS, bitmapSlots: BITMAP_SLOTS };
