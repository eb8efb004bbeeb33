/**
 * @module storage/local/port — a local Backend (memory, file, block device) as a StoragePort.
 * Small requests call the backend synchronously — a page-cache hit costs ~1 µs that way
 * versus ~18 µs through an async hop (storage/local/backend.ts) — and complete before
 * returning. READ and WRITE of `asyncFrom` bytes or more, and FLUSH, run on Bun's I/O thread
 * pool when the backend can (file, device: Backend.readAsync…): the kernel's copy of a large
 * payload and fdatasync then run beside the event loop, which goes on receiving and sending
 * (a one-thread process gets one share of a loaded machine; docs/performance.md). Such a
 * port is not `synchronous`; `inlineUpTo` tells callers which requests still complete inline.
 * A TRIM or WRITE_ZEROES over MUTATE_STEP on a file or device completes later, in steps.
 *
 * Ordering: a FLUSH covers every write whose completion was called before it was issued
 * (storage/port.ts): such a write's pwrite has returned, so the fdatasync issued after it
 * covers it. close() and resize() wait until the requests on the pool have completed (a
 * descriptor closed under a running pwrite could be reused by another file; a write running
 * across a shrink would grow the file again). While a shrink waits, the port is already its
 * new size: a request past the new end is refused as out of range rather than run on the pool
 * and cut (docs/status.md `dstd resize`).
 *
 * Must not: report a failure as success (every throw becomes an errno), or let a request the
 * connection failed to validate reach the backend (validateRequest runs again here as the
 * last line of defence, because the backend asserts on out-of-range calls).
 */
import { AssertionError } from "../../lib/assert.ts";
import { Errno, errnoFromError, errnoName } from "../../lib/errno.ts";
import { DstdError, errorMessage } from "../../lib/errors.ts";
import type { Backend } from "./backend.ts";
import type { Done, Extent, ExtentsDone, StoragePort, ZeroFlags } from "../port.ts";
import { validateRequest, type RequestKind, type RequestLimits } from "../validate.ts";

/** 32 MiB: the largest request the Linux client sends and what proto.md suggests clients use. */
export const DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;

/**
 * READ/WRITE of at least this many bytes go to the I/O thread pool (when the backend has it):
 * below it the ~18 µs hop costs more than the copy it moves off the loop (a 4 KiB page-cache
 * copy is ~1 µs), above it the copy (~100 µs per MiB) and the loop's freedom win.
 */
export const ASYNC_IO_FROM = 64 * 1024;

/**
 * TRIM and WRITE_ZEROES on a file or device run in steps of at most this many bytes (split at
 * multiples of it, so a device's sector alignment holds inside), one per turn of the event
 * loop: a WRITE_ZEROES may be 4 GiB, and where the kernel has no offload (tmpfs with NO_HOLE,
 * a device without WRITE ZEROES or discard, where fallocate writes zero pages itself) one
 * synchronous call would hold every other client of the node for seconds. 16 MiB of written
 * zeroes is ~10 ms here. A memory disk only fills or frees what it holds, in one call.
 */
export const MUTATE_STEP = 16 * 1024 * 1024;

export interface LocalPortOptions {
  /** Export-level read-only: refuse writes even if the backend is writable. */
  readOnly?: boolean;
  maxPayload?: number;
  description?: string;
  log?: { warn(message: string): void };
  /**
   * READ/WRITE size from which the backend's thread-pool calls are used (e.g. ASYNC_IO_FROM).
   * Default Infinity (never): in one quiet run (docs/performance.md "Large requests on the I/O
   * thread pool") the threaded export peaked at 255-356 MiB against 131-231 MiB synchronous,
   * over issue 10's 256 MiB bound, and was not faster on direct sequential writes.
   */
  asyncFrom?: number;
}

export function createLocalPort(backend: Backend, options: LocalPortOptions = {}): StoragePort {
  return new LocalPort(backend, options);
}

class LocalPort implements StoragePort {
  readonly kind: string;
  readonly blockSize: number;
  readonly maxPayload: number;
  readonly readOnly: boolean;
  readonly canTrim = true;
  readonly canZero = true;
  /** Advertised; requests that would be slow fail fast with ENOTSUP (see fastZeroPossible). */
  readonly canFastZero = true;
  readonly canFlush = true;
  /** One Backend object (one fd, one page cache) is shared by all connections of an export. */
  readonly canMultiConn = true;
  readonly canBlockStatus = true;
  readonly synchronous: boolean;
  /** Requests moving at most this many bytes complete before returning (all of them when synchronous). */
  readonly inlineUpTo: number;
  readonly description: string;
  private limits: RequestLimits;
  /** Requests running on the I/O thread pool. */
  private pooled = 0;
  /** Run once `pooled` is back to 0 (close, resize). */
  private drained: Array<() => void> = [];
  private closed = false;
  private readonly threaded: boolean;
  private readonly asyncFrom: number;

  constructor(
    private readonly backend: Backend,
    private readonly options: LocalPortOptions,
  ) {
    this.kind = backend.kind;
    this.blockSize = Math.max(512, backend.blockSize);
    this.maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.readOnly = backend.readOnly || (options.readOnly ?? false);
    this.description = options.description ?? backend.description;
    this.limits = { size: backend.size, writable: !this.readOnly, maxPayload: this.maxPayload };
    this.asyncFrom = options.asyncFrom ?? Infinity;
    this.threaded =
      backend.readAsync !== undefined && backend.writeAsync !== undefined && backend.flushAsync !== undefined && this.asyncFrom !== Infinity;
    this.synchronous = !this.threaded;
    this.inlineUpTo = this.threaded ? this.asyncFrom - 1 : Infinity;
  }

  read(offset: number, into: Uint8Array, done: Done): void {
    if (this.closed) return done(Errno.EBADF);
    const invalid = validateRequest("read", offset, into.length, this.limits);
    if (invalid !== 0) return done(invalid);
    if (this.threaded && into.length >= this.asyncFrom) {
      return this.onPool(
        "read",
        offset,
        into.length,
        (finished) => this.backend.readAsync!(offset, into, finished),
        done,
      );
    }
    try {
      this.backend.read(offset, into);
    } catch (error) {
      return done(this.failure("read", offset, into.length, error));
    }
    done(0);
  }

  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    if (this.closed) return done(Errno.EBADF);
    const invalid = validateRequest("write", offset, data.length, this.limits);
    if (invalid !== 0) return done(invalid);
    if (this.threaded && data.length >= this.asyncFrom) {
      return this.onPool(
        "write",
        offset,
        data.length,
        (finished) => this.backend.writeAsync!(offset, data, fua, finished),
        done,
      );
    }
    try {
      this.backend.write(offset, data, fua);
    } catch (error) {
      return done(this.failure("write", offset, data.length, error));
    }
    done(0);
  }

  flush(done: Done): void {
    if (this.closed) return done(Errno.EBADF);
    if (this.threaded) return this.onPool("flush", 0, 0, (finished) => this.backend.flushAsync!(finished), done);
    try {
      this.backend.flush();
    } catch (error) {
      return done(this.failure("flush", 0, 0, error));
    }
    done(0);
  }

  trim(offset: number, length: number, fua: boolean, done: Done): void {
    this.mutate("trim", offset, length, fua, (at, bytes) => this.backend.trim(at, bytes), done);
  }

  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    // proto.md NBD_CMD_FLAG_FAST_ZERO: "MUST fail quickly with NBD_ENOTSUP unless the request
    // can be serviced in less time than a corresponding NBD_CMD_WRITE".
    if (flags.fast && !this.fastZeroPossible(flags.noHole)) return done(Errno.ENOTSUP);
    this.mutate("zero", offset, length, flags.fua, (at, bytes) => this.backend.zero(at, bytes, !flags.noHole), done);
  }

  extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
    if (this.closed) return done(Errno.EBADF, null);
    const invalid = validateRequest("block-status", offset, length, this.limits);
    if (invalid !== 0) return done(invalid, null);
    let extents: Extent[];
    try {
      extents = this.backend.extents(offset, length, maxExtents);
    } catch (error) {
      return done(this.failure("block status", offset, length, error), null);
    }
    done(0, extents);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.pooled > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
    this.backend.close();
  }

  /** The backend's size now (it changes with resize), or a shrink's waiting for the pool to drain. */
  get size(): number {
    return this.limits.size;
  }

  /** The backend's reason to refuse a size, asked before a tree grows anything (a block device leg not that size). */
  get resizeProblem(): ((size: number) => string | null) | undefined {
    const backend = this.backend;
    return backend.resizeProblem === undefined ? undefined : (size) => (this.closed ? "the export is closed" : backend.resizeProblem!(size));
  }

  resize(size: number, done: Done): void {
    const backend = this.backend;
    if (backend.resize === undefined) return done(Errno.ENOTSUP);
    if (this.closed) return done(Errno.EBADF);
    this.resizeNow(size, done);
  }

  private resizeNow(size: number, done: Done): void {
    const backend = this.backend;
    if (this.pooled > 0) {
      // Queued before a close, it runs before the close does (close() waits behind it). A
      // shrink fences the cut area from now: nothing new starts there only to be cut.
      this.limits.size = Math.min(this.limits.size, size);
      return void this.drained.push(() => this.resizeNow(size, done));
    }
    try {
      backend.resize!(size);
    } catch (error) {
      this.limits.size = backend.size;
      return done(this.failure("resize", size, 0, error));
    }
    this.limits.size = backend.size;
    done(0);
  }

  /**
   * Memory zeroing is a fill or a free; a file can punch a hole (fallocate, metadata only) when
   * a hole is allowed. A file zero that must stay allocated, or a device zero, may end up
   * writing zeroes (ZERO_RANGE/BLKZEROOUT fallbacks), so it is not promised to be fast.
   */
  private fastZeroPossible(noHole: boolean): boolean {
    if (this.backend.kind === "memory") return true;
    return this.backend.kind === "file" && !noHole;
  }

  /**
   * Start `start` on the I/O thread pool and complete `done` when it finishes. A check that
   * throws before anything started completes at once, like the synchronous path.
   */
  private onPool(
    operation: string,
    offset: number,
    length: number,
    start: (finished: (error: Error | null) => void) => void,
    done: Done,
  ): void {
    this.pooled++;
    try {
      start((error) => {
        this.leavePool();
        done(error === null ? 0 : this.failure(operation, offset, length, error));
      });
    } catch (error) {
      this.leavePool();
      done(this.failure(operation, offset, length, error));
    }
  }

  private leavePool(): void {
    if (--this.pooled > 0 || this.drained.length === 0) return;
    const waiting = this.drained;
    this.drained = [];
    for (const run of waiting) run();
  }

  private mutate(
    kind: RequestKind & ("trim" | "zero"),
    offset: number,
    length: number,
    fua: boolean,
    operation: (offset: number, length: number) => void,
    done: Done,
  ): void {
    if (this.closed) return done(Errno.EBADF);
    const invalid = validateRequest(kind, offset, length, this.limits);
    if (invalid !== 0) return done(invalid);
    if (length <= MUTATE_STEP || this.backend.kind === "memory") {
      try {
        operation(offset, length);
        // FUA on trim/zero (proto.md "Command flags"): the change must be durable before the reply.
        if (fua) this.backend.flush();
      } catch (error) {
        return done(this.failure(kind, offset, length, error));
      }
      return done(0);
    }
    // One step per turn of the event loop, counted like a pool request so that close() and
    // resize() wait for the last one.
    this.pooled++;
    const end = offset + length;
    const step = (at: number): void => {
      const until = Math.min(end, (Math.floor(at / MUTATE_STEP) + 1) * MUTATE_STEP);
      try {
        operation(at, until - at);
        if (until === end && fua) this.backend.flush();
      } catch (error) {
        this.leavePool();
        return done(this.failure(kind, offset, length, error));
      }
      if (until < end) return void setImmediate(step, until);
      this.leavePool();
      done(0);
    };
    step(offset);
  }

  /** errno for a failed backend call; never 0. Assertion failures are dstd bugs and propagate. */
  private failure(operation: string, offset: number, length: number, error: unknown): number {
    if (error instanceof AssertionError) throw error;
    const errno = error instanceof DstdError ? error.errno : errnoFromError(error);
    this.options.log?.warn(
      `${operation} at offset ${offset} length ${length} failed (${errnoName(errno || Errno.EIO)}): ${errorMessage(error)}`,
    );
    return errno === 0 ? Errno.EIO : errno;
  }
}
