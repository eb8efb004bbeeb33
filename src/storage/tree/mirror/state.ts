/**
 * @module storage/tree/mirror/state — what the mirror layer's parts share: the options and
 * their defaults, the legs, the layout, the generation and commit sequence, the write-intent
 * bitmap, the table of running and waiting writes, the region locks and the resyncs
 * (docs/tree.md "Mirror"). The parts (writes, reads, flush, leg health, resync driving,
 * metadata, status) are functions over this state; the calls that go back up from a lower
 * part to a higher one go through `hooks`, which MirrorPort (mirror/mirror.ts) wires.
 *
 * Must not: do I/O or read the clock itself (it holds the injected TreeClock).
 */
import type { BufferHold, Done, StoragePort } from "../../port.ts";
import type { TreeClock } from "../clock.ts";
import type { ReadPolicy } from "../../../config/tree-spec.ts";
import type { Plan } from "./assemble.ts";
import { RegionBitmap } from "./bitmap.ts";
import { ACTIVE_SLOT, type Layout, type LayoutOptions, PAGE_BYTES, activeCount, regionCount } from "./layout.ts";
import { MirrorLeg, type MirrorLegInput } from "./leg.ts";
import { SB_KEY, metaJob, metaTargets } from "./metadata.ts";
import { MetaWriter } from "./meta-writer.ts";
import type { FailureCause, Resync } from "./resync.ts";

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
  /**
   * Regions a grow keeps per bitmap before it doubles the region size (mirror/grow.ts); default
   * every bit of a slot. Tests and the simulation use fewer, to reach that at their sizes.
   */
  growRegions?: number;
}

export const MIRROR_DEFAULTS = {
  probeIntervalMs: 2_000,
  resyncWindow: 4,
  resyncChunkBytes: 1024 * 1024,
  checkpointBytes: 256 * 1024 * 1024,
  maxQueued: 16_384,
};

export type MutKind = "write" | "trim" | "zero";

/** A write, trim or write-zeroes from its arrival to its completion. */
export interface MutOp {
  kind: MutKind;
  offset: number;
  length: number;
  data: Uint8Array | null;
  /** A handed-over write's hold (storage/port.ts BufferHold): passed on to the legs that keep buffers. */
  hold: BufferHold | null;
  /** A write's XXH3-64 of `data` when the caller knew it: passed on with the hold. */
  xxh3?: bigint;
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
  /** Arrival order among writes and region-lock requests that wait (region-locks.ts). */
  ticket: number;
}

/** Calls from a lower part of the mirror up to a higher one (MirrorPort wires them). */
export interface MirrorHooks {
  /** leg-health.ts: degrade `leg` unless it is the last in-sync one; true when absorbed. */
  legFailed(leg: MirrorLeg, errno: number, cause: FailureCause): boolean;
  /** writes.ts: one metadata commit `op` waited for is done. */
  releaseBarrier(op: MutOp, errno: number): void;
  /** writes.ts: start the waiting writes no region lock holds back any more. */
  drainLockWait(): void;
  /** leg-health.ts: probe a degraded or absent leg later. */
  scheduleProbe(leg: MirrorLeg): void;
  /** resync-driver.ts: start (or restart) copying what `leg` misses. */
  startResync(leg: MirrorLeg): void;
  /** mirror.ts: wake whoever waits for the mirror to be idle. */
  checkIdle(): void;
}

export class MirrorState {
  /** The on-leg layout; its dataBytes grows with the mirror (mirror/grow.ts). */
  layout: Layout;
  readonly legs: MirrorLeg[];
  readonly mirrorId: Uint8Array;
  /** The mirror's generation: goes up whenever a leg leaves the in-sync set. */
  generation: number;
  /** Superblock commit sequence. */
  seq: number;
  regions: number;
  /** Regions per write-intent region (both fixed at creation, except that a grow may double regions). */
  regionsPerActive: number;
  readonly pagesPerSlot: number;
  /** The write-intent bitmap (coarse regions with writes not yet made durable by a flush). */
  readonly active: RegionBitmap;
  /** The write-intent bits known to be on every in-sync leg's disk. */
  readonly activeDurable: Uint8Array;
  /** Write-intent region → writes running in it. */
  readonly activeInflight = new Map<number, number>();
  /** Write-intent region → the flush epoch that last saw a write start in it. */
  readonly lastTouch = new Map<number, number>();
  flushEpoch = 0;
  readonly meta: MetaWriter;
  readonly running = new Set<MutOp>();
  /** Writes waiting for a region a resync holds (or waits for), in arrival order. */
  readonly lockWait: MutOp[] = [];
  /** Region → resync copies holding it. */
  readonly lockCount = new Map<number, number>();
  /** Region → resync copies waiting for the writes running in it (or waiting before them). */
  readonly wanted = new Map<number, (() => void)[]>();
  /** Region → the ticket of its `wanted` entry: writes that arrived earlier go first. */
  readonly wantedTicket = new Map<number, number>();
  /** Next ticket (region-locks.ts). */
  ticket = 0;
  readonly resyncs = new Map<number, Resync>();
  draining = false;
  drainAgain = false;
  grantScheduled = false;
  /** Round-robin cursor of the read policy. */
  rr = 0;
  /** Recorded in the superblock: false only after a clean stop. */
  open = true;
  closed = false;
  lastLastLegWarning = 0;
  /**
   * Leg-state changes made (degrades) and how many of them a completed superblock write
   * holds: while some are not on disk, a write that skips a degraded leg waits for one.
   */
  recordsMade = 0;
  recordsDurable = 0;
  readonly clock: TreeClock;
  readonly log: MirrorLog;
  readonly readPolicy: ReadPolicy;
  readonly probeIntervalMs: number;
  readonly maxQueued: number;
  readonly window: number;
  readonly chunkBytes: number;
  readonly checkpointBytes: number;
  readonly blockSize: number;
  readonly maxPayload: number;
  /** Bytes the resyncs of this mirror moved (copied + zeroed), for status and tests. */
  resyncedBytes = 0;
  /**
   * The size served: layout.dataBytes, except while a grow has recorded a larger size but its
   * superblock is not yet on every leg (mirror/grow.ts).
   */
  served: number;
  /** A grow is running (mirror/grow.ts). */
  growing = false;
  /** Most regions per bitmap before a grow doubles the region size (MirrorOptions.growRegions). */
  readonly growRegions: number | undefined;
  /**
   * A grow is about to double the region size: new writes wait (region-locks.ts conflicts) and
   * this is called once no write runs, so no region number in flight changes meaning.
   */
  quiesced: (() => void) | null = null;
  hooks!: MirrorHooks;
  /** What the mirror offers its clients, fixed at open (MirrorPort): every leg it takes must do it too. */
  offers: { canTrim: boolean; canZero: boolean } = { canTrim: false, canZero: false };

  constructor(inputs: readonly MirrorLegInput[], plan: Plan, options: MirrorOptions) {
    this.layout = plan.layout;
    this.served = plan.layout.dataBytes;
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
    this.growRegions = options.growRegions;
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
    this.meta = new MetaWriter(
      {
        targets: (key) => metaTargets(this, key),
        begin: (key) => metaJob(this, key),
        // A write to a leg replaced since (mirror/leg-change.ts) says nothing about the new one.
        failed: (leg, errno, port) => this.legs[leg]!.port !== port || this.hooks.legFailed(this.legs[leg]!, errno, "meta"),
      },
      (key) => key === SB_KEY || Math.floor(key / this.pagesPerSlot) === ACTIVE_SLOT,
      SB_KEY,
    );
  }

  get size(): number {
    return this.served;
  }

  /** The metadata key of page `page` of bitmap slot `slot`. */
  pageKey(slot: number, page: number): number {
    return slot * this.pagesPerSlot + page;
  }
}
