/**
 * @module storage/tree/mirror/resync — copying the regions a returning leg is missing from
 * an in-sync leg, while I/O continues (docs/tree.md "Resync").
 *
 * Up to `window` regions are copied at once; a region is locked while it is copied, so user
 * writes to it wait and no write can land between the read from the source and the write to
 * the leg (the mirror's lock table: mirror/region-locks.ts). Writes to other regions go to the
 * syncing leg as to any other, so a region, once copied, stays current. A chunk that reads
 * as all zeroes is sent as WRITE_ZEROES. Every `checkpointBytes` the leg is flushed and only
 * then are the copied regions cleared from the on-disk bitmap: a crash never leaves a region
 * recorded as synced that the leg could still lose. When nothing is missing the leg is
 * flushed and joins (its superblock gets the current generation; the others list it in sync).
 *
 * Must not: read the clock or hold timers (retries go through the host, which owns time);
 * copy a region without holding its lock.
 */
import type { Done } from "../../port.ts";
import type { ResyncSnapshot } from "../describe.ts";
import { sequence } from "../join.ts";
import { pageOf } from "./bitmap.ts";
import type { MirrorLeg } from "./leg.ts";
import type { Layout } from "./layout.ts";

export type FailureCause = "read" | "write" | "flush" | "meta";

export interface ResyncHost {
  readonly layout: Layout;
  readonly window: number;
  readonly chunkBytes: number;
  readonly checkpointBytes: number;
  /** An in-sync leg to copy from (not write-mostly when possible), or null. */
  source(): MirrorLeg | null;
  lockRegion(region: number, locked: () => void): void;
  unlockRegion(region: number): void;
  legFailed(leg: MirrorLeg, errno: number, cause: FailureCause): boolean;
  /** Pages of `leg`'s bitmap slot whose bits changed: write them. */
  slotPagesChanged(leg: MirrorLeg, pages: Iterable<number>): void;
  /** Make `leg` in sync (superblock commit); ok false when that failed. */
  join(leg: MirrorLeg, done: (ok: boolean) => void): void;
  /** Run `run` again later (no source to copy from). */
  retryLater(run: () => void): void;
  /** The resync ended (joined, degraded or stopped). */
  ended(leg: MirrorLeg, joined: boolean, snapshot: ResyncSnapshot, startedAt: number): void;
  now(): number;
}

export class Resync {
  readonly snapshot: ResyncSnapshot;
  readonly startedAt: number;
  private cursor = 0;
  private copies = 0;
  private readonly copying = new Set<number>();
  private looping = false;
  private again = false;
  private paused = false;
  private finishing = false;
  private checkpointing = false;
  private sinceCheckpoint = 0;
  private over = false;
  stopped = false;

  constructor(
    private readonly host: ResyncHost,
    private readonly leg: MirrorLeg,
  ) {
    this.startedAt = host.now();
    this.snapshot = { remainingBytes: this.remaining(), doneBytes: 0, copiedBytes: 0, zeroedBytes: 0, full: leg.full };
    leg.resync = this.snapshot;
  }

  /** Copies (or a flush) still running. */
  get busy(): boolean {
    return this.copies > 0 || this.finishing || this.checkpointing;
  }

  get active(): boolean {
    return !this.stopped && !this.paused && this.leg.state === "syncing" && this.leg.port !== null;
  }

  pump(): void {
    if (this.looping) {
      this.again = true;
      return;
    }
    this.looping = true;
    do {
      this.again = false;
      if (!this.active) break;
      while (this.copies < this.host.window && !this.finishing) {
        const region = this.nextRegion();
        if (region < 0) break;
        this.copy(region);
        if (!this.active) break;
      }
      if (this.active && this.copies === 0 && this.leg.needs.count === 0 && !this.checkpointing) this.finish();
    } while (this.again);
    this.looping = false;
    this.endIfDone();
  }

  private remaining(): number {
    return Math.min(this.leg.needs.count * this.host.layout.regionBytes, this.host.layout.dataBytes);
  }

  private nextRegion(): number {
    const scan = (from: number) => {
      let r = this.leg.needs.nextSet(from);
      while (r >= 0 && this.copying.has(r)) r = this.leg.needs.nextSet(r + 1);
      return r;
    };
    let region = scan(this.cursor);
    if (region < 0 && this.cursor > 0) region = scan(0);
    if (region >= 0) this.cursor = region + 1;
    return region;
  }

  private copy(region: number): void {
    this.copying.add(region);
    this.copies++;
    this.host.lockRegion(region, () => this.copyLocked(region));
  }

  private copyLocked(region: number): void {
    const { layout } = this.host;
    const start = region * layout.regionBytes;
    const end = Math.min(start + layout.regionBytes, layout.dataBytes);
    const target = this.leg.port;
    if (!this.active || target === null) return this.release(region, false, false);
    const chunk = Math.min(this.host.chunkBytes, target.maxPayload, end - start);
    const buffer = new Uint8Array(chunk);
    let position = start;
    let ok = true;
    let sourceLost = false;
    sequence(
      Math.ceil((end - start) / chunk),
      (_i, next) => {
        const source = this.host.source();
        if (source === null || source.port === null) {
          sourceLost = true;
          ok = false;
          return next(false);
        }
        if (!this.active) {
          ok = false;
          return next(false);
        }
        const n = Math.min(chunk, end - position);
        const view = buffer.subarray(0, n);
        const legOffset = layout.metaBytes + position;
        source.port.read(legOffset, view, (errno) => {
          if (errno !== 0) {
            if (source.state === "in-sync") this.host.legFailed(source, errno, "read");
            sourceLost = true;
            ok = false;
            return next(false);
          }
          if (!this.active) {
            ok = false;
            return next(false);
          }
          const written: Done = (werr) => {
            if (werr !== 0) {
              this.host.legFailed(this.leg, werr, "write");
              ok = false;
              return next(false);
            }
            position += n;
            next(true);
          };
          if (target.canZero && isZero(view)) {
            this.snapshot.zeroedBytes += n;
            target.zero(legOffset, n, { fua: false, noHole: false, fast: false }, written);
          } else {
            this.snapshot.copiedBytes += n;
            target.write(legOffset, view, false, written);
          }
        });
      },
      () => this.release(region, ok, sourceLost),
    );
  }

  private release(region: number, ok: boolean, sourceLost: boolean): void {
    this.copying.delete(region);
    this.copies--;
    if (ok && this.leg.state === "syncing") {
      if (this.leg.needs.clear(region)) {
        this.leg.cleanPending.set(region);
        const bytes = Math.min(this.host.layout.regionBytes, this.host.layout.dataBytes - region * this.host.layout.regionBytes);
        this.snapshot.doneBytes += bytes;
        this.sinceCheckpoint += bytes;
      }
    }
    // Unlocked only now: a write waiting for the region may run (and fail) at once on a
    // synchronous leg, and the re-copy it then asks for must find the region copied, not
    // have its mark cleared by this release right after.
    this.host.unlockRegion(region);
    this.snapshot.remainingBytes = this.remaining();
    if (sourceLost && this.leg.state === "syncing" && !this.paused) {
      this.paused = true;
      this.host.retryLater(() => {
        this.paused = false;
        this.pump();
      });
    }
    if (this.sinceCheckpoint >= this.host.checkpointBytes && !this.checkpointing) this.checkpoint();
    this.pump();
  }

  /** Flush the leg, then record the regions copied before the flush as synced on disk. */
  private checkpoint(): void {
    const port = this.leg.port;
    if (port === null || this.leg.state !== "syncing") return;
    this.checkpointing = true;
    this.sinceCheckpoint = 0;
    const covered = this.leg.cleanPending.bytes.slice();
    port.flush((errno) => {
      this.checkpointing = false;
      if (errno !== 0) {
        this.host.legFailed(this.leg, errno, "flush");
        return this.pump();
      }
      if (this.leg.state === "syncing") {
        const pages = new Set<number>();
        for (let r = 0; r < this.leg.cleanPending.regions; r++) {
          if ((covered[r >>> 3]! & (1 << (r & 7))) !== 0 && this.leg.cleanPending.clear(r)) pages.add(pageOf(r));
        }
        // Everything it took before the flush is durable on it now.
        for (let r = this.leg.unflushed.nextSet(0); r >= 0; r = this.leg.unflushed.nextSet(r + 1)) {
          this.leg.unflushed.clear(r);
          pages.add(pageOf(r));
        }
        this.host.slotPagesChanged(this.leg, pages);
      }
      this.pump();
    });
  }

  private finish(): void {
    const port = this.leg.port;
    if (port === null) return;
    this.finishing = true;
    port.flush((errno) => {
      if (errno !== 0) {
        this.finishing = false;
        this.host.legFailed(this.leg, errno, "flush");
        return this.pump();
      }
      if (!this.active || this.leg.needs.count > 0) {
        this.finishing = false;
        return this.pump();
      }
      this.host.join(this.leg, (joined) => {
        this.finishing = false;
        if (joined) {
          this.over = true;
          this.snapshot.remainingBytes = 0;
          this.host.ended(this.leg, true, this.snapshot, this.startedAt);
          return;
        }
        if (this.leg.state === "syncing" && !this.paused) {
          this.paused = true;
          this.host.retryLater(() => {
            this.paused = false;
            this.pump();
          });
        }
        this.pump();
      });
    });
  }

  /** Report the end once, when the leg left "syncing" (degraded, stopped) and nothing runs. */
  private endIfDone(): void {
    if (this.over || this.busy) return;
    if (this.leg.state === "syncing" && !this.stopped) return;
    this.over = true;
    this.host.ended(this.leg, false, this.snapshot, this.startedAt);
  }
}

/** True when every byte is zero (word at a time when aligned). */
export function isZero(bytes: Uint8Array): boolean {
  let i = 0;
  if (bytes.byteOffset % 4 === 0) {
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
    for (let w = 0; w < words.length; w++) if (words[w] !== 0) return false;
    i = words.length * 4;
  }
  for (; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}
