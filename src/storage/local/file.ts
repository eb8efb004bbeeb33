/**
 * @module storage/local/file — a sparse regular file as an export (`--file PATH [--size N]`).
 * Created sparse (ftruncate, mode 0600) when missing and a size is given; an existing file
 * keeps its size. Trim punches holes, zeroing punches or uses ZERO_RANGE (falling back to
 * written zeroes), and block status comes from SEEK_DATA/SEEK_HOLE.
 *
 * With `lock`, the file is flock()ed for the export (storage/local/lock.ts): a second export
 * of it is refused, naming the holder.
 *
 * Must not: ever truncate or extend an existing file (a size mismatch is refused), or open
 * anything that is not a regular file.
 */
import fs from "node:fs";
import { errnoMessage, Errno } from "../../lib/errno.ts";
import { BackendError, DstdError } from "../../lib/errors.ts";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  lseek,
  SEEK_DATA,
  SEEK_HOLE,
} from "../../sys/libc.ts";
import { FdBackend } from "./fd-backend.ts";
import { errnoOf, ioError, tryFallocate, writeZeroes } from "./fd-io.ts";
import { lockBacking } from "./lock.ts";
import type { Extent } from "./backend.ts";

const PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
const ZERO_RANGE = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

export interface FileBackendOptions {
  /** Export size. Required to create a missing file; must equal the size of an existing one (but see `grown`). */
  size?: number;
  /**
   * An existing file larger than `size` is served at its own size: dstd grew it online (`dstd
   * resize` of a file export, a mirror's file legs), so the configured size is the one it was
   * created with. Not for legs whose size places data (a linear's or a stripe's): for them a
   * larger file would move the bytes of the legs after it, so any difference is refused.
   */
  grown?: boolean;
  /** Create the file when missing (default: true when `size` is given). */
  create?: boolean;
  readOnly?: boolean;
  /** Take the export lock: exclusive, or shared when read-only (default false). */
  lock?: boolean;
}

export class FileBackend extends FdBackend {
  readonly kind = "file" as const;
  readonly blockSize = 4096;

  /** Trim (NBD_CMD_TRIM) is advisory (proto.md): where holes are unsupported it does nothing. */
  protected discard(offset: number, length: number): void {
    tryFallocate(this.fd, this.path, "trim", PUNCH, offset, length);
  }

  /**
   * NBD_CMD_WRITE_ZEROES: a hole is fine unless NO_HOLE was set (then `mayPunch` is false and
   * the blocks stay allocated). Filesystems lacking a mode (tmpfs has no ZERO_RANGE) fall back.
   */
  protected zeroRange(offset: number, length: number, mayPunch: boolean): void {
    if (mayPunch && tryFallocate(this.fd, this.path, "write zeroes", PUNCH, offset, length)) return;
    if (tryFallocate(this.fd, this.path, "write zeroes", ZERO_RANGE, offset, length)) return;
    writeZeroes(this.fd, this.path, offset, length);
  }

  /** Grow sparse (no blocks allocated) or truncate: ftruncate(2). */
  resize(size: number): void {
    this.checkOpen("resize");
    if (this.readOnly) throw new BackendError(`resize refused: ${this.path} is open read-only`, Errno.EROFS);
    try {
      fs.ftruncateSync(this.fd, size);
    } catch (error) {
      throw ioError(this.path, "resize", size, 0, error);
    }
    this.size = size;
  }

  protected allocationMap(offset: number, length: number, maxExtents: number): Extent[] {
    const result: Extent[] = [];
    const end = offset + length;
    let position = offset;
    try {
      // Two lseeks per data run: stop once the reply is full, whatever the length asked.
      while (position < end) {
        // Full: stop; the map covers [offset, position) truthfully and the caller reports that much.
        if (result.length >= maxExtents) return result.slice(0, maxExtents);
        const data = lseek(this.fd, position, SEEK_DATA); // -1: no data at or after position
        if (data < 0 || data >= end) break;
        if (data > position) result.push({ length: data - position, hole: true, zero: true });
        const hole = lseek(this.fd, data, SEEK_HOLE);
        // Guard against a file shrinking under us: never loop without progress.
        const stop = hole > data ? Math.min(hole, end) : end;
        result.push({ length: stop - data, hole: false, zero: false });
        position = stop;
      }
    } catch (error) {
      throw ioError(this.path, "block status", offset, length, error);
    }
    if (position < end) result.push({ length: end - position, hole: true, zero: true });
    // A prefix of the map is a truthful answer (the reply says how far it reaches).
    if (result.length > maxExtents) result.length = maxExtents;
    return result;
  }
}

export function openFileBackend(path: string, options: FileBackendOptions = {}): FileBackend {
  const { size, readOnly = false } = options;
  if (size !== undefined) checkSize(size);
  const existing = statOrMissing(path);
  if (existing === undefined) {
    const fd = createSparse(path, options);
    if (fd !== undefined) return new FileBackend(fd, path, size!, false);
  } else {
    checkRegularFile(path, existing);
  }
  return openExisting(path, size, readOnly, options.lock === true, options.grown === true);
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new DstdError(
      "E_CONFIG",
      `--size ${size} is invalid: it must be a whole number of bytes between 0 and ${Number.MAX_SAFE_INTEGER}`,
    );
  }
}

function statOrMissing(path: string): fs.Stats | undefined {
  try {
    return fs.statSync(path);
  } catch (error) {
    if (errnoOf(error) === Errno.ENOENT) return undefined;
    throw openError(path, "cannot look up", error, false);
  }
}

function checkRegularFile(path: string, stats: fs.Stats): void {
  if (stats.isFile()) return;
  let problem = "is not a regular file";
  if (stats.isDirectory()) problem = "is a directory, not a file";
  else if (stats.isBlockDevice()) problem = "is a block device; use --device to export it";
  throw new DstdError("E_CONFIG", `${path} ${problem}`, { errno: Errno.EINVAL });
}

/**
 * Create a missing file sparse, mode 0600. Returns undefined when someone else created it
 * between our stat and open (O_EXCL said EEXIST): then it is opened as an existing file.
 */
function createSparse(path: string, options: FileBackendOptions): number | undefined {
  const { size, create = size !== undefined, readOnly = false } = options;
  if (size === undefined || !create || readOnly) {
    const hint =
      size === undefined
        ? "pass --size to create it"
        : readOnly
          ? "a read-only export needs an existing file"
          : "creation was not requested";
    throw new DstdError("E_CONFIG", `${path} does not exist; ${hint}`, { errno: Errno.ENOENT });
  }
  const { O_RDWR, O_CREAT, O_EXCL } = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(path, O_RDWR | O_CREAT | O_EXCL, 0o600);
  } catch (error) {
    if (errnoOf(error) === Errno.EEXIST) return undefined;
    throw openError(path, "cannot create", error, false);
  }
  if (options.lock === true) {
    try {
      lockBacking(fd, path, "exclusive");
    } catch (error) {
      fs.closeSync(fd); // someone opened our new file already: leave it to them
      throw error;
    }
  }
  try {
    fs.ftruncateSync(fd, size); // sparse: no blocks are allocated until written
  } catch (error) {
    fs.closeSync(fd);
    fs.rmSync(path, { force: true }); // remove the empty file we just made, nobody else's
    throw openError(path, `cannot size to ${size} bytes`, error, false);
  }
  return fd;
}

function openExisting(path: string, size: number | undefined, readOnly: boolean, lock: boolean, grown: boolean): FileBackend {
  let fd: number;
  try {
    fd = fs.openSync(path, readOnly ? "r" : "r+");
  } catch (error) {
    throw openError(path, "cannot open", error, readOnly);
  }
  try {
    const stats = fs.fstatSync(fd);
    checkRegularFile(path, stats); // it may have been swapped since the stat
    if (lock) lockBacking(fd, path, readOnly ? "shared" : "exclusive");
    if (size !== undefined && size !== stats.size && !(grown && size > 0 && stats.size > size)) {
      throw new DstdError(
        "E_SIZE_MISMATCH",
        `${path} exists with size ${stats.size} bytes but --size asks for ${size}; refusing to ` +
          `resize an existing file (omit --size to use its size, or resize it yourself)`,
        { errno: Errno.EINVAL },
      );
    }
    return new FileBackend(fd, path, stats.size, readOnly);
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
}

function openError(path: string, action: string, error: unknown, readOnly: boolean): DstdError {
  const errno = errnoOf(error);
  let hint = "";
  if (errno === Errno.EACCES || errno === Errno.EPERM) {
    hint = readOnly ? "" : "; pass --read-only if write access is not needed";
  } else if (errno === Errno.EROFS) {
    hint = "; pass --read-only to export it without write access";
  }
  return new DstdError("E_OPEN", `${action} ${path}: ${errnoMessage(errno)}${hint}`, { errno, cause: error });
}
