/**
 * @module storage/layers/flush-latch — after a FLUSH (or a FUA mutation, whose flush half may
 * be what failed) fails with an I/O error, every later write, trim, zero, FLUSH and resize fails with that errno
 * until the layer is opened again; reads go on. The fd backends latch so themselves
 * (storage/local/fd-backend.ts: Linux reports a lost write-back once, at the next fdatasync,
 * then marks the pages clean — "fsyncgate"), but nothing in the port contract (storage/port.ts)
 * says a port must: one could drop its unflushed writes at a failed flush and take writes and
 * flushes again, and a later FLUSH would then succeed over writes it lost. A layer that counts
 * a successful FLUSH as covering every write before it — the replication primary's checkpoint
 * (docs/replication.md §4) — puts this over whatever port it is given. `onLatched` runs once,
 * at the failure.
 */
import { Errno } from "../../lib/errno.ts";
import type { Done, ZeroFlags } from "../port.ts";
import { PassThrough } from "./pass-through.ts";

/**
 * Refusals that say nothing about the data: a request the port turned down before it reached
 * the disk (out of range, read-only, unsupported), or a port closing. A FUA mutation failing so
 * did not fail a flush (the fd backend latches only on a failed fdatasync); a FLUSH answered
 * ESHUTDOWN was never run.
 */
const REFUSALS: ReadonlySet<number> = new Set([Errno.EPERM, Errno.EINVAL, Errno.ENOSPC, Errno.EROFS, Errno.EOVERFLOW, Errno.ENOTSUP, Errno.ESHUTDOWN]);

export class FlushLatch extends PassThrough {
  /** The errno of the failure that latched (0: open). */
  private latched = 0;
  onLatched: (errno: number) => void = () => {};

  get failed(): number {
    return this.latched;
  }

  private watch(fua: boolean, done: Done): Done {
    return (errno) => {
      if (errno !== 0 && fua && !REFUSALS.has(errno)) this.latch(errno);
      done(errno);
    };
  }

  private latch(errno: number): void {
    if (this.latched !== 0) return;
    this.latched = errno;
    this.onLatched(errno);
  }

  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    if (this.latched !== 0) return done(this.latched);
    this.next.write(offset, data, fua, this.watch(fua, done));
  }
  override trim(offset: number, length: number, fua: boolean, done: Done): void {
    if (this.latched !== 0) return done(this.latched);
    this.next.trim(offset, length, fua, this.watch(fua, done));
  }
  override zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    if (this.latched !== 0) return done(this.latched);
    this.next.zero(offset, length, flags, this.watch(flags.fua, done));
  }
  override flush(done: Done): void {
    if (this.latched !== 0) return done(this.latched);
    this.next.flush(this.watch(true, done));
  }
  override get resize(): ((size: number, done: Done) => void) | undefined {
    const next = this.next;
    if (next.resize === undefined) return undefined;
    return (size: number, done: Done) => (this.latched !== 0 ? done(this.latched) : next.resize!(size, done));
  }
}
