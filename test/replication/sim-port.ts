/**
 * @module test/replication/sim-port — a simulated disk as a StoragePort for the replication
 * simulation: a volatile write cache that FLUSH (and FUA) makes durable, completions at
 * seeded moments of the SimClock (or synchronously, to exercise the synchronous fast path),
 * and crashes that keep or drop each unflushed mutation (in order, SQLite test6.c style).
 * Each process incarnation gets a `handle()`: calls through a handle from before a crash are
 * dropped, as a dead process's would be.
 *
 * Opt-in I/O errors (`SimPortFaults`): a write, trim, zero or flush fails with EIO at a seeded
 * rate, before its mutation reached the cache or after, and up to 3 calls after it fail too (a
 * failing device rarely fails one command alone; a burst also fails a write-back's 3 attempts,
 * replication/write-back.ts, without a failed flush); a failed flush (or the flush half of a
 * FUA mutation) latches the disk as the fd backend does (storage/local/fd-backend.ts
 * checkSynced): every later write, trim, zero and flush fails until the process restarts.
 * Reads never fail. Without faults no draw is made, so a seed's run is as it was.
 */
import { Errno } from "../../src/lib/errno.ts";
import type { Prng } from "../../src/lib/prng.ts";
import type { Done, ExtentsDone, StoragePort, ZeroFlags } from "../../src/storage/port.ts";
import type { SimClock } from "../sim/sim-clock.ts";

type Change = { offset: number; data: Uint8Array | null; length: number };

export interface SimPortFaults {
  /** Draws for the faults only (the port's own stream stays as it was). */
  prng: Prng;
  /** Probability that a write, trim, zero or flush fails with EIO (0: never; may change mid-run). */
  eioRate: number;
  /**
   * A failed flush drops the changes it did not write and the disk takes writes and flushes
   * again, instead of latching: what the port contract allows (storage/layers/flush-latch.ts).
   */
  forgetful?: boolean;
}

export class SimDiskPort {
  durable: Uint8Array;
  current: Uint8Array;
  private changes: Change[] = [];
  epoch = 0;
  /**
   * A flush failed since the last restart: every write, trim, zero and flush fails. This is
   * what production expects of the disk below, and what the fd backend does (fd-backend.ts:
   * Linux reports a write-back error once and marks the lost pages clean, so a later flush
   * would succeed over lost writes): the primary's checkpoint and the applier's position count
   * on a flush that succeeded covering every write before it. Modelled the other way (the
   * unflushed changes dropped, later writes and flushes taken), the primary serves reads of
   * lost write-backs and checkpoints past them: 149 of seeds 1–3,000 failed so, when tried.
   */
  latched = false;
  /** I/O errors injected so far (never reset: callers compare counts). */
  failures = 0;
  /** Calls left in the current burst of errors. */
  private burst = 0;

  constructor(
    readonly size: number,
    private readonly clock: SimClock,
    private readonly prng: Prng,
    readonly synchronousCompletions: boolean,
    readonly faults: SimPortFaults | null = null,
  ) {
    this.durable = new Uint8Array(size);
    this.current = new Uint8Array(size);
  }

  handle(): StoragePort {
    return new Handle(this, this.epoch);
  }

  crash(mode: "lose-all" | "random"): void {
    this.epoch++;
    if (mode === "random") {
      for (const change of this.changes) if (this.prng.chance(0.5)) apply(this.durable, change);
    }
    this.changes = [];
    this.current = this.durable.slice();
    this.latched = false;
  }

  /**
   * The process restarted (no power loss): its calls in flight are dropped, the page cache
   * outlives it and is written back — except, after a failed flush, the changes that flush
   * did not write: the kernel marked their pages clean, so each reached the disk or not, and
   * reads now see the disk. The reopened disk takes writes and flushes again.
   */
  restart(): void {
    this.epoch++;
    if (this.latched) {
      for (const change of this.changes) if (this.faults!.prng.chance(0.5)) apply(this.durable, change);
      this.changes = [];
      this.current = this.durable.slice();
      this.latched = false;
    } else {
      this.flushNow();
    }
  }

  complete(epoch: number, run: () => void): void {
    if (this.synchronousCompletions) return run();
    this.clock.after(this.prng.int(3), () => {
      if (epoch === this.epoch) run();
    });
  }

  /** True when this call fails with EIO. */
  private fails(): boolean {
    const faults = this.faults;
    if (faults === null || faults.eioRate <= 0) return false;
    if (this.burst > 0) this.burst--;
    else if (faults.prng.chance(faults.eioRate)) this.burst = faults.prng.int(4);
    else return false;
    this.failures++;
    return true;
  }

  /** Applies a write, trim or zero at its completion; returns its errno. */
  mutate(change: Change, fua: boolean): number {
    if (this.latched) return Errno.EIO;
    if (this.fails()) {
      // EIO before the change reached the cache (3 in 4: a refused command is refused whole, and
      // a write-back whose attempts all missed the disk is what a checkpoint must not pass), or
      // after (a FUA's flush half failed: latched).
      if (this.faults!.prng.chance(0.75)) return Errno.EIO;
      apply(this.current, change);
      this.changes.push(change);
      if (fua) this.failFlush();
      return Errno.EIO;
    }
    apply(this.current, change);
    this.changes.push(change);
    if (fua) this.flushNow();
    return 0;
  }

  /** Makes the cache durable at a flush's completion; returns its errno. */
  flush(): number {
    if (this.latched) return Errno.EIO;
    if (this.fails()) {
      this.failFlush();
      return Errno.EIO;
    }
    this.flushNow();
    return 0;
  }

  flushNow(): void {
    for (const change of this.changes) apply(this.durable, change);
    this.changes = [];
  }

  /**
   * A failed flush: write-back stopped at an error, so the changes before it reached the disk
   * and the rest did not, for now (a crash or restart settles each); the disk latches.
   */
  private failFlush(): void {
    const reached = this.faults!.prng.int(this.changes.length + 1);
    for (const change of this.changes.slice(0, reached)) apply(this.durable, change);
    this.changes = this.changes.slice(reached);
    if (this.faults!.forgetful === true) {
      this.changes = [];
      this.current = this.durable.slice();
    } else this.latched = true;
  }
}

function apply(target: Uint8Array, change: Change): void {
  if (change.data === null) target.fill(0, change.offset, change.offset + change.length);
  else target.set(change.data, change.offset);
}

class Handle implements StoragePort {
  readonly kind = "sim";
  readonly description = "simulated disk";
  readonly blockSize = 512;
  readonly maxPayload = 1 << 22;
  readonly readOnly = false;
  readonly canTrim = true;
  readonly canZero = true;
  readonly canFastZero = false;
  readonly canFlush = true;
  readonly canMultiConn = true;
  readonly canBlockStatus = false;

  constructor(
    private readonly disk: SimDiskPort,
    private readonly epoch: number,
  ) {}

  get size(): number {
    return this.disk.size;
  }
  get synchronous(): boolean {
    return this.disk.synchronousCompletions;
  }

  /** Runs `effect` at the completion and completes with its errno. */
  private run(effect: () => number, done: Done): void {
    if (this.epoch !== this.disk.epoch) return; // a dead incarnation: nothing happens
    this.disk.complete(this.epoch, () => done(effect()));
  }

  read(offset: number, into: Uint8Array, done: Done): void {
    this.run(() => {
      into.set(this.disk.current.subarray(offset, offset + into.length));
      return 0;
    }, done);
  }
  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    const copy = data.slice();
    this.run(() => this.disk.mutate({ offset, data: copy, length: copy.length }, fua), done);
  }
  flush(done: Done): void {
    this.run(() => this.disk.flush(), done);
  }
  trim(offset: number, length: number, fua: boolean, done: Done): void {
    this.run(() => this.disk.mutate({ offset, data: null, length }, fua), done);
  }
  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    if (flags.fast) return done(Errno.ENOTSUP);
    this.run(() => this.disk.mutate({ offset, data: null, length }, flags.fua), done);
  }
  extents(_offset: number, _length: number, _max: number, done: ExtentsDone): void {
    done(Errno.ENOTSUP, null);
  }
  async close(): Promise<void> {}
}
