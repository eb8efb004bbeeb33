/**
 * @module storage/local/fd-backend — the part of the file and block-device backends that is the
 * same for both: positional read/write on an open descriptor, FUA as write + fdatasync,
 * flush, the closed/read-only guards and idempotent close. Subclasses add trim, zero and
 * extents, which differ (punch hole vs BLKDISCARD, SEEK_DATA vs "all data").
 *
 * Must not: open descriptors (file.ts / block-device.ts do, with their own checks) or let a
 * call reach a descriptor number after close — the number may already belong to another file.
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
    if (fua) syncData(this.fd, this.path, "FUA write", offset, source.length);
  }

  flush(): void {
    this.check("flush", 0, 0, false);
    syncData(this.fd, this.path, "flush", 0, this.size);
  }

  readAsync(offset: number, target: Uint8Array, done: IoDone): void {
    this.check("read", offset, target.length, false);
    readFullyAsync(this.fd, this.path, offset, target, done);
  }

  writeAsync(offset: number, source: Uint8Array, fua: boolean, done: IoDone): void {
    this.check("write", offset, source.length, true);
    writeFullyAsync(this.fd, this.path, offset, source, fua, done);
  }

  flushAsync(done: IoDone): void {
    this.check("flush", 0, 0, false);
    syncDataAsync(this.fd, this.path, "flush", 0, this.size, done);
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

  protected abstract discard(offset: number, length: number): void;
  protected abstract zeroRange(offset: number, length: number, mayPunch: boolean): void;
  protected abstract allocationMap(offset: number, length: number, maxExtents: number): Extent[];

  private check(operation: string, offset: number, length: number, writes: boolean): void {
    if (this.closed) throw new BackendError(`${operation} on ${this.path} after it was closed`, Errno.EBADF);
    if (writes && this.readOnly) {
      throw new BackendError(`${operation} refused: ${this.path} is open read-only`, Errno.EROFS);
    }
    // Callers (storage/validate.ts) bound-check; reaching here out of range is a dstd bug, and
    // a write past the end would silently grow a file export. (The message is built only on
    // failure: this runs per I/O.)
    if (!(Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) && length >= 0 && offset + length <= this.size)) {
      assert(false, `${operation} [${offset}, +${length}) outside ${this.path} of ${this.size} bytes`);
    }
  }
}
