/**
 * @module replication/write-back — what the primary owes the disk below and what it does when
 * the disk fails it: the write-back of one mutation, retried; the disk flush a FLUSH needs for
 * the writes made around the log; and the state a logged write-back that keeps failing leaves
 * (docs/replication.md §4 "A disk that fails a write-back").
 *
 * The log is the truth: a record whose write-back failed is still durable in the log and is
 * shipped, so every secondary applies it and only the primary's disk lacks it. The disk can
 * no longer be trusted (as fsync after a write-back error cannot be: fsyncgate), so the
 * primary fails closed until restarted: the checkpoint stays below that record (the restart
 * replays it from the log onto the disk, and fails naming the disk if it still refuses), no
 * mutation is taken, every FLUSH fails, and reads of what the disk lost fail rather than
 * return data older than the log's.
 *
 * Must not: let the checkpoint pass a record whose write-back failed; report a region the
 * disk lost as readable.
 */
import { Errno, errnoMessage } from "../lib/errno.ts";
import type { Log } from "../lib/log.ts";
import type { Done, StoragePort } from "../storage/port.ts";

/**
 * Attempts of one write-back before it counts as failed. Back to back, no delay: the primary
 * has no timers (its simulations run on simulated time); a mutation is idempotent, so one
 * that partly reached the disk is simply written again.
 */
export const WRITE_BACK_ATTEMPTS = 3;

/** What a write-back needs of a mutation. */
export interface WriteBackOp {
  readonly kind: "write" | "trim" | "zero" | "resize" | "copy";
  readonly offset: number;
  /** Exclusive end (Infinity for a resize). */
  readonly end: number;
  readonly data: Uint8Array | null;
  readonly noHole: boolean;
  readonly newSize: number;
}

/** Writes `op` to `disk`; on an error again, up to WRITE_BACK_ATTEMPTS attempts in all. */
export function writeBack(disk: StoragePort, op: WriteBackOp, fua: boolean, done: Done, attempt = 1): void {
  const after = (errno: number): void => {
    if (errno === 0 || attempt >= WRITE_BACK_ATTEMPTS) return done(errno);
    writeBack(disk, op, fua, done, attempt + 1);
  };
  switch (op.kind) {
    case "write":
      return disk.write(op.offset, op.data!, fua, after);
    case "trim":
      return disk.trim(op.offset, op.end - op.offset, fua, after);
    case "zero":
      return disk.zero(op.offset, op.end - op.offset, { fua, noHole: op.noHole, fast: false }, after);
    case "resize":
      return disk.resize!(op.newSize, after);
    case "copy":
      throw new Error("a resync copy is no write-back");
  }
}

/**
 * The disk flush FLUSH owes the writes made around the log (logged ones are durable in the log
 * already), and the write-back errors it must report.
 */
export class DiskFlush {
  /** Writes around the log completed since the last disk flush started. */
  private direct = 0;
  /** Completions waiting on the newest disk flush issued for writes made around the log. */
  private waiters: Done[] | null = null;
  /** A write-back of an acknowledged write failed: the next FLUSH reports it. */
  private lateErrno = 0;

  constructor(
    private readonly disk: StoragePort,
    private readonly failure: DiskFailure,
  ) {}

  /** A write around the log completed. */
  wroteAround(): void {
    this.direct++;
  }

  /** The disk was flushed after every write around the log so far. */
  flushed(): void {
    this.direct = 0;
  }

  /** The write-back of an acknowledged write failed: the next FLUSH fails with `errno`, as a page cache reports it. */
  lost(errno: number): void {
    this.lateErrno = errno;
  }

  /** Completes once every write around the log completed before it is durable (with EIO for good once the disk failed). */
  flush(done: Done): void {
    if (this.failure.failed) return done(Errno.EIO);
    if (this.lateErrno !== 0) {
      const errno = this.lateErrno;
      this.lateErrno = 0;
      return done(errno);
    }
    if (this.direct === 0) {
      // None since the last disk flush started; if that one still runs, it is the one that
      // makes them durable: complete with it, never before.
      if (this.waiters === null) return done(0);
      this.waiters.push(done);
      return;
    }
    this.direct = 0;
    const waiters: Done[] = [done];
    this.waiters = waiters;
    this.disk.flush((errno) => {
      if (this.waiters === waiters) this.waiters = null;
      if (errno !== 0) this.direct++;
      for (const w of waiters) w(errno);
    });
  }
}

/** The logged write-backs the disk refused for good, once any: the primary has failed. */
export class DiskFailure {
  /** The errno of the first failure (0: the disk is trusted). */
  errno = 0;
  /** What happened, for status and logs (null: nothing). */
  message: string | null = null;
  /** The first record whose write-back failed (Infinity: none). */
  private firstSeq = Infinity;
  /** The regions the disk lost (at most the mutations in flight when it failed: none are taken after). */
  private readonly lost: { offset: number; end: number }[] = [];

  get failed(): boolean {
    return this.errno !== 0;
  }

  /**
   * false once the disk lost a write no replay of the log brings back (one made around the log:
   * recordAround, or a flush failing while such writes may have been unflushed): a restart would
   * then serve stale data where reads now fail, so the node does not restart itself over it
   * (ReplicationPrimary.failedClosed) and leaves it to an operator.
   */
  replayable = true;

  /** The write-back of the logged mutation whose records start at `firstSeq` failed for good. */
  record(op: WriteBackOp, firstSeq: number, errno: number, log?: Log): void {
    const what = op.kind === "resize" ? `resize to ${op.newSize} bytes` : `${op.kind} of ${op.end - op.offset} bytes at ${op.offset}`;
    const first = this.errno === 0;
    if (first) {
      this.errno = errno;
      this.message = `the disk failed the write-back of seq ${firstSeq} (${what}): ${errnoMessage(errno)}; refusing writes and FLUSH until restarted (the restart replays the log onto the disk)`;
    }
    log?.error(
      `replication: write-back of seq ${firstSeq} (${what}) failed ${WRITE_BACK_ATTEMPTS} times: ${errnoMessage(errno)}` +
        (first ? "; the log holds it and the secondaries get it, the disk does not: refusing writes and FLUSH until restarted (the restart replays it)" : ""),
    );
    this.firstSeq = Math.min(this.firstSeq, firstSeq);
    this.lost.push({ offset: op.offset, end: op.end });
  }

  /** The write around the log of a mutation acknowledged early (its records failed with the log) failed for good. */
  recordAround(op: WriteBackOp, errno: number, log?: Log): void {
    const what = `${op.kind} of ${op.end - op.offset} bytes at ${op.offset}`;
    if (this.errno === 0) {
      this.errno = errno;
      this.message = `the disk failed the write of an acknowledged ${what} made around the failed log: ${errnoMessage(errno)}; refusing writes, FLUSH and reads of it until restarted`;
    }
    log?.error(`replication: write of an acknowledged ${what} around the failed log failed ${WRITE_BACK_ATTEMPTS} times: ${errnoMessage(errno)}`);
    this.lost.push({ offset: op.offset, end: op.end });
    this.replayable = false;
  }

  /**
   * A flush of the disk failed (or a FUA write-back: storage/layers/flush-latch.ts latched it):
   * any write-back since the checkpoint may be lost, and the disk says so only once. Which
   * regions it lost is unknown, so reads of the whole disk fail too until restarted; the
   * restart replays the log after the checkpoint. `aroundLog`: writes made around the log may be
   * among the unflushed (not replayable).
   */
  flushFailed(errno: number, checkpoint: number, log?: Log, aroundLog = false): void {
    if (aroundLog) this.replayable = false;
    if (this.errno === 0) {
      this.errno = errno;
      this.message = `the disk failed a flush: ${errnoMessage(errno)}; write-backs after the checkpoint at seq ${checkpoint} may be lost: refusing writes, FLUSH and reads until restarted (the restart replays the log from seq ${checkpoint + 1})`;
      log?.error(`replication: ${this.message}`);
    }
    this.firstSeq = Math.min(this.firstSeq, checkpoint + 1);
    this.lost.push({ offset: 0, end: Infinity });
  }

  /** `seq`, or less: the last record before the first one whose write-back failed. */
  bound(seq: number): number {
    return Math.min(seq, this.firstSeq - 1);
  }

  /** A read of [offset, end) would see a region the disk lost. */
  covers(offset: number, end: number): boolean {
    return this.lost.some((r) => r.offset < end && offset < r.end);
  }
}
