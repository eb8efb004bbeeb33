/**
 * @module storage/local/fd-backend — the part of the file and block-device backends that is the
 * same for both: positional read/write on an open descriptor, FUA as write + fdatasync,
 * flush, the closed/read-only guards and idempotent close. Subclasses add trim, zero and
 * extents, which differ (punch hole vs BLKDISCARD, SEEK_DATA vs "all data").
 *
 * Must not: open descriptors (file.ts / block-device.ts do, with their own checks) or let a
 * call reach a descriptor number after close — the number may already belong to another file;
 * or take a write or flush after an fdatasync failed. Linux reports a write-back error to an
 * open file once, at the next fdatasync, and marks the lost pages clean (the "fsyncgate"
 * behaviour, since 4.13): a second FLUSH — another connection's, or the client's retry —
 * would succeed although writes acknowledged before it never reached the disk. So the first
 * failure sticks: writes, trims, zeroes and flushes fail with it until the export is
 * reopened (replication/log-store.ts does the same for the log); reads go on.
 */
import fs from "node:fs";
import { Errno } from "../../lib/errno.ts";
import { BackendError } from "../../lib/errors.ts";
import { assert } from "../../lib/assert.ts";
import { ioError, readFully, readFullyAsync, syncData, syncDataAsync, writeFully, writeFullyAsync, type IoDone } from "./fd-io.ts";
import type { Backend, BackendKind, Extent } from "./backend.ts";
import { MAX_EXTENTS } from "../port.ts";

export abstract class FdBackend implements Backend {
  abstract readonly kind: BackendKind;
  abstract readonly blockSize: number;
  private closed = false;
  /** The first fdatasync failure; set, it refuses every later write and flush. */
  private syncFailed: BackendError | null = null;

  constructor(
    /** The descriptor; exposed for tests and diagnostics only — do not do I/O through it. */
    readonly fd: number,
    readonly path: string,
    public size: number,
    readonly readOnly: boolean,
  ) {}

  abstract resize(size: number): void;

  get description(): string {
    return this.path;
  }

  read(offset: number, target: Uint8Array): void {
    this.check("read", offset, target.length, false);
    readFully(this.fd, this.path, offset, target);
  }

  write(offset: number, source: Uint8Array, fua: boolean): void {
    this.check("write", offset, source.length, true);
    writeFully(this.fd, this.path, offset, source);
    // FUA (NBD_CMD_FLAG_FUA, proto.md): the data must be on stable storage before the reply.
    if (fua) this.sync("FUA write", offset, source.length);
  }

  flush(): void {
    this.checkFlush();
    this.sync("flush", 0, this.size);
  }

  readAsync(offset: number, target: Uint8Array, done: IoDone): void {
    this.check("read", offset, target.length, false);
    readFullyAsync(this.fd, this.path, offset, target, done);
  }

  writeAsync(offset: number, source: Uint8Array, fua: boolean, done: IoDone): void {
    this.check("write", offset, source.length, true);
    if (!fua) return writeFullyAsync(this.fd, this.path, offset, source, done);
    writeFullyAsync(this.fd, this.path, offset, source, (error) =>
      error !== null ? done(error) : this.syncAsync("FUA write", offset, source.length, done),
    );
  }

  flushAsync(done: IoDone): void {
    this.checkFlush();
    this.syncAsync("flush", 0, this.size, done);
  }

  trim(offset: number, length: number): void {
    this.check("trim", offset, length, true);
    if (length > 0) this.discard(offset, length);
  }

  zero(offset: number, length: number, mayPunch: boolean): void {
    this.check("write zeroes", offset, length, true);
    if (length > 0) this.zeroRange(offset, length, mayPunch);
  }

  extents(offset: number, length: number, maxExtents = MAX_EXTENTS): Extent[] {
    this.check("block status", offset, length, false);
    if (length === 0 || maxExtents < 1) return [];
    return this.allocationMap(offset, length, maxExtents);
  }

  /** Idempotent; a failing close(2) is reported once, the descriptor is forgotten either way. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } catch (error) {
      throw ioError(this.path, "close", 0, 0, error);
    }
  }

  private sync(operation: string, offset: number, length: number): void {
    try {
      syncData(this.fd, this.path, operation, offset, length);
    } catch (error) {
      this.noteSyncFailure(error as BackendError);
      throw error;
    }
  }

  private syncAsync(operation: string, offset: number, length: number, done: IoDone): void {
    syncDataAsync(this.fd, this.path, operation, offset, length, (error) => {
      if (error !== null) this.noteSyncFailure(error);
      done(error);
    });
  }

  /** A write-back error (EIO, ENOSPC, EDQUOT…) sticks; EBADF and EINVAL say nothing about the data. */
  private noteSyncFailure(error: BackendError): void {
    if (error.errno !== Errno.EBADF && error.errno !== Errno.EINVAL) this.syncFailed ??= error;
  }

  protected abstract discard(offset: number, length: number): void;
  protected abstract zeroRange(offset: number, length: number, mayPunch: boolean): void;
  protected abstract allocationMap(offset: number, length: number, maxExtents: number): Extent[];

  /** Throws EBADF once closed: for calls that touch the descriptor outside `check` (resize). */
  protected checkOpen(operation: string): void {
    if (this.closed) throw new BackendError(`${operation} on ${this.path} after it was closed`, Errno.EBADF);
  }

  /** A flush needs an open descriptor and no earlier failed fdatasync (read-only files flush too). */
  private checkFlush(): void {
    this.checkOpen("flush");
    this.checkSynced("flush");
  }

  /** After a failed fdatasync nothing that relies on the page cache may succeed (fsyncgate). */
  private checkSynced(operation: string): void {
    if (this.syncFailed === null) return;
    throw new BackendError(
      `${operation} refused: an earlier ${this.syncFailed.message}; writes acknowledged before it may not be on disk ` +
        `and the kernel reports that only once, so ${this.path} takes no writes or flushes until the export is restarted (check the disk first)`,
      this.syncFailed.errno,
    );
  }

  private check(operation: string, offset: number, length: number, writes: boolean): void {
    this.checkOpen(operation);
    if (writes && this.readOnly) throw new BackendError(`${operation} refused: ${this.path} is open read-only`, Errno.EROFS);
    if (writes) this.checkSynced(operation);
    // Callers (storage/validate.ts) bound-check; reaching here out of range is a dstd bug, and
    // a write past the end would silently grow a file export. (The message is built only on
    // failure: this runs per I/O.)
    if (!(Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) && length >= 0 && offset + length <= this.size)) {
      assert(false, `${operation} [${offset}, +${length}) outside ${this.path} of ${this.size} bytes`);
    }
  }
}
