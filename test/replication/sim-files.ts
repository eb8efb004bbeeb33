/**
 * @module test/replication/sim-files — a simulated log directory (replication/files.ts) for
 * the deterministic replication simulation and the log store's unit tests: every call
 * completes later, at a seeded moment of the SimClock; file contents have a volatile cache
 * that fdatasync makes durable; creations, renames and removals need a directory fsync (a
 * crash keeps or undoes each unsynced name on its own); a crash keeps, drops or tears each
 * unsynced change (SQLite test6.c, at 512-byte sector granularity, in any combination, as a
 * real page cache may write back in any order); stored bytes can rot; any call but a size
 * (fstat) or a close can fail with EIO, leaving what a real kernel could leave.
 *
 * Must not: read the wall clock or Math.random; complete a call synchronously (the store
 * must cope with completions that arrive later, in the order the disk chooses).
 */
import { Errno } from "../../src/lib/errno.ts";
import type { Prng } from "../../src/lib/prng.ts";
import type { FileDone, LogDirectory, LogFile } from "../../src/replication/files.ts";
import type { SimClock } from "../sim/sim-clock.ts";

const SECTOR = 512;

type Change = { kind: "write"; position: number; data: Uint8Array } | { kind: "truncate"; size: number };

/** A growable byte array (capacity doubles, so appending is amortized O(1)). */
class Bytes {
  buf = new Uint8Array(0);
  length = 0;

  view(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }

  resize(length: number): void {
    if (length > this.buf.length) {
      const next = new Uint8Array(Math.max(length, this.buf.length * 2, 4096));
      next.set(this.buf.subarray(0, this.length));
      this.buf = next;
    } else if (length > this.length) {
      this.buf.fill(0, this.length, length);
    }
    this.length = length;
  }

  copy(): Bytes {
    const out = new Bytes();
    out.buf = this.buf.slice(0, Math.max(this.length, 1));
    out.length = this.length;
    return out;
  }
}

/** One file's bytes: what survives a crash (`durable`) and what reads see (`current`). */
class SimInode {
  durable = new Bytes();
  current = new Bytes();
  changes: Change[] = [];

  apply(target: "durable" | "current", change: Change): void {
    const bytes = this[target];
    if (change.kind === "truncate") {
      if (change.size < bytes.length) bytes.buf.fill(0, change.size, bytes.length);
      bytes.resize(change.size);
      return;
    }
    const end = change.position + change.data.length;
    if (end > bytes.length) bytes.resize(end);
    bytes.buf.set(change.data, change.position);
  }

  sync(): void {
    for (const change of this.changes) this.apply("durable", change);
    this.changes = [];
  }

  /** Power loss: each unsynced change kept whole, dropped, or (writes) torn by sector. */
  crash(prng: Prng, mode: "lose-all" | "random"): void {
    if (mode === "random") {
      for (const change of this.changes) {
        const roll = prng.int(3);
        if (roll === 0) continue; // dropped
        if (roll === 1 || change.kind === "truncate") {
          this.apply("durable", change);
          continue;
        }
        // Torn: a random subset of its sectors reached the disk (the file grows to cover them).
        const { position, data } = change;
        for (let s = 0; s < data.length; s += SECTOR) {
          if (prng.chance(0.5)) {
            this.apply("durable", { kind: "write", position: position + s, data: data.subarray(s, Math.min(s + SECTOR, data.length)) });
          }
        }
      }
    }
    this.changes = [];
    this.current = this.durable.copy();
  }
}

export interface SimDiskOptions {
  /** Delay of a call in ms: [min, max]. */
  latency?: [number, number];
  /**
   * Probability that a write, fdatasync, open, rename, directory fsync, read, truncate, removal
   * or listing fails with EIO, before or after its effect: a failed write may leave a prefix in
   * the cache; a failed create, rename, truncate or removal may have happened (a journal that
   * aborts after the change was made in memory returns the error anyway: a retried removal
   * then meets ENOENT); a failed read may have filled part of the buffer with anything (POSIX
   * promises no bytes of a failed read); a failed listing returns no names. Sizes (fstat: the
   * inode is in memory) and closes never fail. (Reads, truncates, removals and listings fail
   * since 2026-12-07: every seed with file errors draws more, so its world changed; seeds
   * without them draw nothing from `faults` and run as before.)
   */
  eioRate?: number;
  /**
   * Draws for the faults only (whether a call fails, and what a failed one left), so a run
   * whose calls never fail draws from `prng` exactly as without faults. Default: `prng`.
   */
  faults?: Prng;
}

/** The disk the log directory lives on: shared by every directory object opened on it. */
export class SimDisk {
  /** Directory entries as a crash would leave them (committed by a directory fsync). */
  private durableEntries = new Map<string, SimInode>();
  /** Directory entries as calls see them. */
  private entries = new Map<string, SimInode>();
  /** Bumped by every crash: handles from before are dead. */
  epoch = 0;
  eioRate: number;
  /** Draws for the faults (SimDiskOptions.faults). */
  readonly faultPrng: Prng;
  /** Counts, for coverage reports. */
  stats = { writes: 0, syncs: 0, crashes: 0, tornChanges: 0, eio: 0 };
  /** EIO injected per kind of call (SimDiskOptions.eioRate), for coverage reports. */
  eioBy = { write: 0, sync: 0, open: 0, rename: 0, dirSync: 0, read: 0, truncate: 0, remove: 0, list: 0 };

  constructor(
    readonly clock: SimClock,
    readonly prng: Prng,
    private readonly options: SimDiskOptions = {},
  ) {
    this.eioRate = options.eioRate ?? 0;
    this.faultPrng = options.faults ?? prng;
  }

  directory(path = "/sim/log"): LogDirectory {
    return new SimDirectory(this, path, this.epoch);
  }

  /** Schedules `run` after a seeded latency, unless the disk crashed meanwhile. */
  later(epoch: number, run: () => void): void {
    const [min, max] = this.options.latency ?? [0, 2];
    this.clock.after(min + this.prng.int(max - min + 1), () => {
      if (epoch === this.epoch) run();
    });
  }

  /** True when this call fails with EIO. */
  fails(call: keyof SimDisk["eioBy"]): boolean {
    if (this.eioRate <= 0 || !this.faultPrng.chance(this.eioRate)) return false;
    this.stats.eio++;
    this.eioBy[call]++;
    return true;
  }

  lookup(name: string): SimInode | undefined {
    return this.entries.get(name);
  }
  names(): string[] {
    return [...this.entries.keys()].sort();
  }
  create(name: string): SimInode {
    const inode = new SimInode();
    this.entries.set(name, inode);
    return inode;
  }
  unlink(name: string): void {
    this.entries.delete(name);
  }
  rename(from: string, to: string): void {
    this.entries.set(to, this.entries.get(from)!);
    this.entries.delete(from);
  }
  syncDirectory(): void {
    this.durableEntries = new Map(this.entries);
  }

  /**
   * Power loss: in-flight calls never complete, each unsynced directory change survives or
   * not, each unsynced file change is kept, dropped or torn ("random"), or all are lost.
   */
  crash(mode: "lose-all" | "random"): void {
    this.epoch++;
    this.stats.crashes++;
    const after = new Map<string, SimInode>();
    const names = new Set([...this.durableEntries.keys(), ...this.entries.keys()]);
    for (const name of [...names].sort()) {
      const before = this.durableEntries.get(name);
      const now = this.entries.get(name);
      let keep: SimInode | undefined;
      if (before === now) keep = now;
      else if (mode === "lose-all") keep = before;
      else keep = this.prng.chance(0.5) ? now : before;
      if (keep !== undefined) after.set(name, keep);
    }
    const inodes = new Set([...after.values(), ...this.entries.values(), ...this.durableEntries.values()]);
    for (const inode of inodes) {
      if (mode === "random" && inode.changes.length > 0) this.stats.tornChanges += inode.changes.length;
      inode.crash(this.prng, mode);
    }
    this.entries = new Map(after);
    this.durableEntries = new Map(after);
  }

  /**
   * The process died (kill -9, or an operator's restart), not the power: its calls in flight
   * never complete; the page cache outlives it, synced or not (a later crash still settles it).
   */
  kill(): void {
    this.epoch++;
  }

  /** Bit rot: flips one durable byte of `name` at `position` (and what reads see). */
  corrupt(name: string, position: number): boolean {
    const inode = this.entries.get(name);
    if (inode === undefined || position >= inode.durable.length || inode.changes.length > 0) return false;
    inode.durable.buf[position]! ^= 1 << this.prng.int(8);
    inode.current = inode.durable.copy();
    return true;
  }

  /** Durable size of `name` (for choosing a byte to corrupt). */
  durableSize(name: string): number {
    return this.entries.get(name)?.durable.length ?? 0;
  }
}

class SimDirectory implements LogDirectory {
  constructor(
    private readonly disk: SimDisk,
    readonly path: string,
    private readonly epoch: number,
  ) {}

  list(done: (errno: number, names: string[]) => void): void {
    this.disk.later(this.epoch, () => (this.disk.fails("list") ? done(Errno.EIO, []) : done(0, this.disk.names())));
  }

  open(name: string, create: boolean, done: (errno: number, file: LogFile | null) => void): void {
    this.disk.later(this.epoch, () => {
      const failing = this.disk.fails("open");
      // EIO before its effect, or (a creation) after it: the file exists, unsynced.
      if (failing && (!create || this.disk.faultPrng.chance(0.5))) return done(Errno.EIO, null);
      let inode = this.disk.lookup(name);
      if (inode === undefined) {
        if (!create) return done(Errno.ENOENT, null);
        inode = this.disk.create(name);
      }
      if (failing) return done(Errno.EIO, null);
      done(0, new SimFile(this.disk, name, inode, this.epoch));
    });
  }

  remove(name: string, done: FileDone): void {
    this.disk.later(this.epoch, () => {
      if (this.disk.lookup(name) === undefined) return done(Errno.ENOENT);
      const failing = this.disk.fails("remove");
      if (failing && this.disk.faultPrng.chance(0.5)) return done(Errno.EIO); // before its effect: the file stays
      this.disk.unlink(name);
      done(failing ? Errno.EIO : 0); // or after it: gone (a retry meets ENOENT)
    });
  }

  rename(from: string, to: string, done: FileDone): void {
    this.disk.later(this.epoch, () => {
      if (this.disk.lookup(from) === undefined) return done(Errno.ENOENT);
      const failing = this.disk.fails("rename");
      if (failing && this.disk.faultPrng.chance(0.5)) return done(Errno.EIO); // before its effect
      this.disk.rename(from, to);
      done(failing ? Errno.EIO : 0); // or after it
    });
  }

  sync(done: FileDone): void {
    this.disk.later(this.epoch, () => {
      if (this.disk.fails("dirSync")) return done(Errno.EIO);
      this.disk.syncDirectory();
      done(0);
    });
  }
}

class SimFile implements LogFile {
  private closed = false;

  constructor(
    private readonly disk: SimDisk,
    readonly name: string,
    private readonly inode: SimInode,
    private readonly epoch: number,
  ) {}

  private call(run: () => void, done: FileDone): void {
    if (this.closed) return this.disk.later(this.epoch, () => done(Errno.EBADF));
    this.disk.later(this.epoch, run);
  }

  write(position: number, chunks: readonly Uint8Array[], done: FileDone): void {
    let total = 0;
    for (const c of chunks) total += c.length;
    const data = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      data.set(c, at);
      at += c.length;
    }
    this.call(() => {
      this.disk.stats.writes++;
      if (this.disk.fails("write")) {
        // EIO: maybe some of it reached the cache anyway.
        if (this.disk.faultPrng.chance(0.5)) this.change({ kind: "write", position, data: data.subarray(0, this.disk.faultPrng.int(total + 1)) });
        return done(Errno.EIO);
      }
      this.change({ kind: "write", position, data });
      done(0);
    }, done);
  }

  private change(change: Change): void {
    this.inode.changes.push(change);
    this.inode.apply("current", change);
  }

  read(position: number, into: Uint8Array, done: (errno: number, bytes: number) => void): void {
    this.call(() => {
      if (this.disk.fails("read")) {
        // EIO: no byte is promised; part of the buffer may have been filled with anything.
        const n = this.disk.faultPrng.int(into.length + 1);
        for (let i = 0; i < n; i++) into[i] = this.disk.faultPrng.int(256);
        return done(Errno.EIO, 0);
      }
      const bytes = this.inode.current;
      const n = Math.max(0, Math.min(into.length, bytes.length - position));
      into.set(bytes.buf.subarray(position, position + n));
      done(0, n);
    }, (e) => done(e, 0));
  }

  sync(done: FileDone): void {
    this.call(() => {
      this.disk.stats.syncs++;
      if (this.disk.fails("sync")) return done(Errno.EIO);
      this.inode.sync();
      done(0);
    }, done);
  }

  truncate(size: number, done: FileDone): void {
    this.call(() => {
      const failing = this.disk.fails("truncate");
      if (failing && this.disk.faultPrng.chance(0.5)) return done(Errno.EIO); // before its effect: the file as it was
      this.change({ kind: "truncate", size });
      done(failing ? Errno.EIO : 0); // or after it (the size changed, then freeing its blocks failed)
    }, done);
  }

  size(done: (errno: number, size: number) => void): void {
    this.call(() => done(0, this.inode.current.length), (e) => done(e, 0));
  }

  close(done: FileDone): void {
    this.closed = true;
    this.disk.later(this.epoch, () => done(0));
  }
}

/**
 * Runs the clock until `settled()` is true, letting promise continuations (the store's
 * open/recovery paths are async functions) run between events. Deterministic: no timers,
 * no I/O, only the clock's events and the microtask queue. Throws if nothing is left to run.
 */
export async function runUntil(clock: SimClock, settled: () => boolean, limitEvents = 5_000_000): Promise<void> {
  let events = 0;
  for (;;) {
    for (let i = 0; i < 4; i++) await null;
    if (settled()) return;
    if (clock.pendingEvents === 0) {
      for (let i = 0; i < 64 && !settled(); i++) await null;
      if (settled()) return;
      if (clock.pendingEvents === 0) throw new Error("simulation stuck: nothing scheduled and not settled");
    }
    clock.runUntil(clock.ticks + 1);
    if (++events > limitEvents) throw new Error("simulation ran away");
  }
}

/** Awaits `promise` while running the clock. */
export async function settle<T>(clock: SimClock, promise: Promise<T>): Promise<T> {
  let state: { ok: true; value: T } | { ok: false; error: unknown } | null = null;
  promise.then(
    (value) => (state = { ok: true, value }),
    (error: unknown) => (state = { ok: false, error }),
  );
  await runUntil(clock, () => state !== null);
  const s = state as unknown as { ok: true; value: T } | { ok: false; error: unknown };
  if (!s.ok) throw s.error;
  return s.value;
}
