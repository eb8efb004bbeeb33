/**
 * @module storage/rbd/port — an open Ceph RBD image as a StoragePort (docs/rbd.md "Design").
 * Every request is one asynchronous librbd call (sys/librbd.ts); its completion arrives on the
 * JavaScript thread and calls `done` exactly once. FUA is the write followed by a flush.
 *
 * Trim is rbd_aio_discard, a hint: RBD does not zero a partial discard (it skips anything
 * smaller than its discard granularity). Write-zeroes is rbd_aio_write_zeroes, which reads back
 * as zeroes over exactly its range; with NO_HOLE it asks for thick provisioning. FAST_ZERO is
 * refused (ENOTSUP): librbd may write zeroes to do it. Block status and resize run librbd's
 * blocking calls on a worker thread (sys/librbd-offload.ts), counted in flight like I/O.
 *
 * The size is kept here and refreshed on the worker (docs/rbd.md "What blocks"): reading it
 * from librbd per request would block this thread whenever another client had changed the image
 * header (rbd_get_size re-reads it from the OSDs first; a stopped OSD stopped the whole node).
 * It is read again when the image's update watch fires (another client resized it, took a
 * snapshot, …) and after our own resize. Until then a request past the real end of a shrunk
 * image fails in librbd (EINVAL, or a short read, which is EIO); one into a grown image's new
 * tail is refused as out of range.
 *
 * Must not: let a request reach librbd after close began (EBADF instead).
 */
import { Errno, errnoName } from "../../lib/errno.ts";
import { allocationExtents } from "../../sys/librbd-extents.ts";
import type { RbdImage } from "../../sys/librbd.ts";
import type { Done, ExtentsDone, StoragePort, ZeroFlags } from "../port.ts";
import { validateRequest, type RequestKind } from "../validate.ts";

/** A failed size refresh is tried again after this long, doubling up to SIZE_RETRY_MAX_MS. */
const SIZE_RETRY_MS = 1000;
const SIZE_RETRY_MAX_MS = 60_000;

/** 32 MiB: the largest request the Linux client sends (as storage/local/port.ts). */
const MAX_PAYLOAD = 32 * 1024 * 1024;

/** errno values a client may see as they are; anything else becomes EIO. */
const PASSED = new Set<number>(Object.values(Errno));

/** A librbd result (≥ 0 or a negative errno) as a port errno. */
export function rbdErrno(result: number): number {
  if (result >= 0) return 0;
  return PASSED.has(-result) ? -result : Errno.EIO;
}

export interface RbdPortOptions {
  description: string;
  readOnly: boolean;
  log?: { warn(message: string): void };
}

export class RbdPort implements StoragePort {
  readonly kind = "rbd";
  readonly description: string;
  readonly blockSize = 4096;
  readonly maxPayload = MAX_PAYLOAD;
  readonly readOnly: boolean;
  readonly canTrim = true;
  readonly canZero = true;
  readonly canFastZero = false;
  readonly canFlush = true;
  /** One image handle serves every connection: a flush covers all of their writes. */
  readonly canMultiConn = true;
  /** rbd_diff_iterate2 on the fast-diff object map (sys/librbd-worker.ts); all data without one. */
  readonly canBlockStatus = true;
  readonly synchronous = false;
  private inFlight = 0;
  private closing: Promise<void> | null = null;
  private drained: (() => void) | null = null;
  private failures = 0;
  private knownSize: number;
  /** A size refresh on the worker: none, one running, one running and another one asked for. */
  private refresh: "idle" | "running" | "again" = "idle";
  private retry: { timer: ReturnType<typeof setTimeout> | null; delay: number } = { timer: null, delay: SIZE_RETRY_MS };

  constructor(
    private readonly image: RbdImage,
    private readonly options: RbdPortOptions,
  ) {
    this.description = options.description;
    this.readOnly = options.readOnly;
    this.knownSize = image.openedSize;
    image.onUpdate(() => this.refreshSize());
  }

  get size(): number {
    return this.closing === null ? this.knownSize : 0;
  }

  /** Read the size again on the worker; a refresh asked for while one runs follows it. */
  private refreshSize(): void {
    if (this.closing !== null) return;
    if (this.refresh !== "idle") {
      this.refresh = "again";
      return;
    }
    if (this.retry.timer !== null) clearTimeout(this.retry.timer);
    this.retry.timer = null;
    this.refresh = "running";
    this.inFlight++;
    this.image.readSize((result, size) => {
      const again = this.refresh === "again";
      this.refresh = "idle";
      if (result >= 0) {
        this.knownSize = size;
        this.retry.delay = SIZE_RETRY_MS;
      }
      this.finish("size refresh", 0, 0, result, () => {});
      if (this.closing !== null) return;
      if (again) this.refreshSize();
      else if (result < 0) {
        // librbd keeps the header flagged for a refresh: read it again later.
        this.retry.timer = setTimeout(() => this.refreshSize(), this.retry.delay);
        this.retry.timer.unref?.();
        this.retry.delay = Math.min(this.retry.delay * 2, SIZE_RETRY_MAX_MS);
      }
    });
  }

  read(offset: number, into: Uint8Array, done: Done): void {
    const invalid = this.check("read", offset, into.length);
    if (invalid !== 0) return done(invalid);
    // Nothing to read (NBD and DST allow length 0); bun:ffi cannot pass an empty buffer anyway.
    if (into.length === 0) return done(0);
    this.inFlight++;
    this.image.read(offset, into, (result) => {
      // A read inside the image fills the whole buffer; anything shorter is an error.
      this.finish("read", offset, into.length, result >= 0 && result !== into.length ? -Errno.EIO : result, done);
    });
  }

  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    const invalid = this.check("write", offset, data.length);
    if (invalid !== 0) return done(invalid);
    if (data.length === 0) return fua ? this.flush(done) : done(0); // nothing to write; FUA still means durable
    this.inFlight++;
    this.image.write(offset, data, (result) => this.afterMutation("write", offset, data.length, result, fua, done));
  }

  flush(done: Done): void {
    if (this.closing !== null) return done(Errno.EBADF);
    this.inFlight++;
    this.image.flush((result) => this.finish("flush", 0, 0, result, done));
  }

  trim(offset: number, length: number, fua: boolean, done: Done): void {
    const invalid = this.check("trim", offset, length);
    if (invalid !== 0) return done(invalid);
    if (length === 0) return done(0);
    this.inFlight++;
    this.image.discard(offset, length, (result) => this.afterMutation("trim", offset, length, result, fua, done));
  }

  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    // proto.md NBD_CMD_FLAG_FAST_ZERO: fail at once unless faster than writing zeroes.
    if (flags.fast) return done(Errno.ENOTSUP);
    const invalid = this.check("zero", offset, length);
    if (invalid !== 0) return done(invalid);
    if (length === 0) return done(0);
    this.inFlight++;
    this.image.writeZeroes(offset, length, flags.noHole, (result) => this.afterMutation("zero", offset, length, result, flags.fua, done));
  }

  extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
    const invalid = this.check("block-status", offset, length);
    if (invalid !== 0) return done(invalid, null);
    if (length === 0) return done(0, []);
    this.inFlight++;
    this.image.allocated(offset, length, Math.max(1, maxExtents), (result, triples, walked) => {
      this.inFlight--;
      const errno = this.report("block-status", offset, length, result);
      if (this.inFlight === 0 && this.drained !== null) this.drained();
      if (errno !== 0) return done(errno, null);
      // No fast-diff map: no cheap answer, so all of it is data (never claim a hole unknown).
      done(0, triples === null ? [{ length, hole: false, zero: false }] : allocationExtents(offset, Math.min(walked, length), triples, maxExtents));
    });
  }

  resize(size: number, done: Done): void {
    if (this.closing !== null) return done(Errno.EBADF);
    if (this.readOnly) return done(Errno.EROFS);
    if (!Number.isSafeInteger(size) || size < 0) return done(Errno.EINVAL);
    // rbd_resize blocks (a shrink deletes objects): it runs on the librbd worker thread.
    this.inFlight++;
    this.image.resize(size, (result, after) => {
      if (result >= 0) this.knownSize = after;
      this.finish("resize", size, 0, result, done);
    });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.retry.timer !== null) clearTimeout(this.retry.timer);
      if (this.inFlight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
      await new Promise<void>((resolve) => this.image.close(() => resolve()));
    })();
    return this.closing;
  }

  private check(kind: RequestKind, offset: number, length: number): number {
    if (this.closing !== null) return Errno.EBADF;
    return validateRequest(kind, offset, length, { size: this.knownSize, writable: !this.readOnly, maxPayload: MAX_PAYLOAD });
  }

  private afterMutation(what: string, offset: number, length: number, result: number, fua: boolean, done: Done): void {
    // FUA (proto.md "Command flags"): durable before the reply, so flush after the write.
    if (result < 0 || !fua) return this.finish(what, offset, length, result, done);
    this.image.flush((flushed) => this.finish(`${what} (FUA flush)`, offset, length, flushed, done));
  }

  private finish(what: string, offset: number, length: number, result: number, done: Done): void {
    this.inFlight--;
    const errno = this.report(what, offset, length, result);
    if (this.inFlight === 0 && this.drained !== null) this.drained();
    done(errno);
  }

  /** The errno for `result`, logging failures (the first ten, then every hundredth). */
  private report(what: string, offset: number, length: number, result: number): number {
    const errno = rbdErrno(result);
    if (result < 0) {
      this.failures++;
      if (this.failures <= 10 || this.failures % 100 === 0) {
        this.options.log?.warn(`${this.description}: ${what} ${length} B at offset ${offset} failed: librbd ${result} (${errnoName(errno)}; ${this.failures} failure(s) so far)`);
      }
    }
    return errno;
  }
}
