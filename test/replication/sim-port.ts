/**
 * @module test/replication/sim-port — a simulated disk as a StoragePort for the replication
 * simulation: a volatile write cache that FLUSH (and FUA) makes durable, completions at
 * seeded moments of the SimClock (or synchronously, to exercise the synchronous fast path),
 * and crashes that keep or drop each unflushed mutation (in order, SQLite test6.c style).
 * Each process incarnation gets a `handle()`: calls through a handle from before a crash are
 * dropped, as a dead process's would be.
 */
import { Errno } from "../../src/lib/errno.ts";
import type { Prng } from "../../src/lib/prng.ts";
import type { Done, ExtentsDone, StoragePort, ZeroFlags } from "../../src/storage/port.ts";
import type { SimClock } from "../sim/sim-clock.ts";

type Change = { offset: number; data: Uint8Array | null; length: number };

export class SimDiskPort {
  durable: Uint8Array;
  current: Uint8Array;
  private changes: Change[] = [];
  epoch = 0;

  constructor(
    readonly size: number,
    private readonly clock: SimClock,
    private readonly prng: Prng,
    readonly synchronousCompletions: boolean,
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
  }

  complete(epoch: number, run: () => void): void {
    if (this.synchronousCompletions) return run();
    this.clock.after(this.prng.int(3), () => {
      if (epoch === this.epoch) run();
    });
  }

  mutate(change: Change, fua: boolean): void {
    apply(this.current, change);
    this.changes.push(change);
    if (fua) this.flushNow();
  }

  flushNow(): void {
    for (const change of this.changes) apply(this.durable, change);
    this.changes = [];
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

  private run(effect: () => void, done: Done): void {
    if (this.epoch !== this.disk.epoch) return; // a dead incarnation: nothing happens
    this.disk.complete(this.epoch, () => {
      effect();
      done(0);
    });
  }

  read(offset: number, into: Uint8Array, done: Done): void {
    this.run(() => into.set(this.disk.current.subarray(offset, offset + into.length)), done);
  }
  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    const copy = data.slice();
    this.run(() => this.disk.mutate({ offset, data: copy, length: copy.length }, fua), done);
  }
  flush(done: Done): void {
    this.run(() => this.disk.flushNow(), done);
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
