/**
 * @module storage/local/block-device — a block device as an export (`--device /dev/X`). Size comes
 * from ioctl(BLKGETSIZE64) because stat reports 0 for devices; trim is BLKDISCARD and
 * zeroing is fallocate on the device, both only on logical-sector-aligned ranges (the kernel
 * answers EINVAL otherwise), so unaligned edges are written as zeroes.
 *
 * Must not: open a device read-write that something else holds (mounted, another exporter):
 * read-write opens use O_EXCL, which the kernel turns into an exclusive claim (EBUSY). With
 * `lock`, the device node is also flock()ed (storage/local/lock.ts), so a read-only export
 * and a read-write one of the same device exclude each other too, naming the holder.
 */
import fs from "node:fs";
import { Errno, errnoMessage } from "../../lib/errno.ts";
import { BackendError, DstdError } from "../../lib/errors.ts";
import {
  blockDeviceSectorSize,
  blockDeviceSize,
  blockDiscard,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
} from "../../sys/libc.ts";
import { FdBackend } from "./fd-backend.ts";
import { errnoOf, ioError, isUnsupported, tryFallocate, writeZeroes } from "./fd-io.ts";
import { lockBacking } from "./lock.ts";
import type { Extent } from "./backend.ts";

/**
 * On a block device PUNCH_HOLE means "zero, unmapping if you can, never by writing" and
 * ZERO_RANGE means "zero, keeping the blocks mapped" (block/fops.c blkdev_fallocate).
 */
const PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
const ZERO_RANGE = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

/** Preferred I/O size advertised for devices with small logical sectors (page-cache pages). */
const PREFERRED_BLOCK_SIZE = 4096;

export class BlockDeviceBackend extends FdBackend {
  readonly kind = "device" as const;
  readonly blockSize: number;

  constructor(
    fd: number,
    path: string,
    size: number,
    readOnly: boolean,
    /** BLKSSZGET: the smallest unit the device addresses (512 or 4096). */
    readonly logicalBlockSize: number,
  ) {
    super(fd, path, size, readOnly);
    this.blockSize = logicalBlockSize <= PREFERRED_BLOCK_SIZE ? PREFERRED_BLOCK_SIZE : logicalBlockSize;
  }

  /**
   * A block device is resized by its owner (lvextend, a grown LUN), not by us: accept the
   * size the device reports now (BLKGETSIZE64) and nothing else.
   */
  resize(size: number): void {
    const problem = this.resizeProblem(size);
    if (problem !== null) throw new BackendError(problem, Errno.EINVAL);
    this.size = size;
  }

  resizeProblem(size: number): string | null {
    this.checkOpen("resize");
    const actual = blockDeviceSize(this.fd);
    return actual === size ? null : `${this.path} is ${actual} bytes: a block device is resized by growing the device itself (lvextend, a grown LUN), then dstd resize follows it`;
  }

  /** BLKDISCARD of the sector-aligned interior. Trim is advisory (proto.md NBD_CMD_TRIM), so
   * partial sectors at the edges and devices without discard support are left untouched. */
  protected discard(offset: number, length: number): void {
    const [start, end] = this.alignedInterior(offset, length);
    if (end <= start) return;
    try {
      blockDiscard(this.fd, start, end - start);
    } catch (error) {
      if (!isUnsupported(errnoOf(error))) throw ioError(this.path, "trim", offset, length, error);
    }
  }

  protected zeroRange(offset: number, length: number, mayPunch: boolean): void {
    const [start, end] = this.alignedInterior(offset, length);
    if (end <= start) {
      writeZeroes(this.fd, this.path, offset, length);
      return;
    }
    if (start > offset) writeZeroes(this.fd, this.path, offset, start - offset);
    if (end < offset + length) writeZeroes(this.fd, this.path, end, offset + length - end);
    const interior = end - start;
    if (mayPunch && tryFallocate(this.fd, this.path, "write zeroes", PUNCH, start, interior)) return;
    if (tryFallocate(this.fd, this.path, "write zeroes", ZERO_RANGE, start, interior)) return;
    writeZeroes(this.fd, this.path, start, interior);
  }

  /** Devices expose no allocation map: everything is data that may hold anything. */
  protected allocationMap(_offset: number, length: number, _maxExtents: number): Extent[] {
    return [{ length, hole: false, zero: false }];
  }

  private alignedInterior(offset: number, length: number): [number, number] {
    const sector = this.logicalBlockSize;
    return [Math.ceil(offset / sector) * sector, Math.floor((offset + length) / sector) * sector];
  }
}

export function openBlockDevice(path: string, options: { readOnly?: boolean; lock?: boolean } = {}): BlockDeviceBackend {
  const readOnly = options.readOnly ?? false;
  checkIsBlockDevice(path, statPath(path));
  const { O_RDONLY, O_RDWR, O_EXCL } = fs.constants;
  let fd: number;
  try {
    // O_EXCL without O_CREAT on a block device = exclusive claim (open(2)); refuse if mounted.
    fd = fs.openSync(path, readOnly ? O_RDONLY : O_RDWR | O_EXCL);
  } catch (error) {
    throw openError(path, error, readOnly);
  }
  try {
    checkIsBlockDevice(path, fs.fstatSync(fd));
    if (options.lock === true) lockBacking(fd, path, readOnly ? "shared" : "exclusive");
    const size = blockDeviceSize(fd);
    const sector = blockDeviceSectorSize(fd);
    return new BlockDeviceBackend(fd, path, size, readOnly, sector);
  } catch (error) {
    fs.closeSync(fd);
    if (error instanceof DstdError) throw error;
    const errno = errnoOf(error);
    throw new DstdError("E_OPEN", `cannot query the size of ${path}: ${errnoMessage(errno)}`, {
      errno,
      cause: error,
    });
  }
}

function statPath(path: string): fs.Stats {
  try {
    return fs.statSync(path);
  } catch (error) {
    throw openError(path, error, true);
  }
}

function checkIsBlockDevice(path: string, stats: fs.Stats): void {
  if (stats.isBlockDevice()) return;
  const problem = stats.isFile()
    ? "is a regular file, not a block device; use --file to export it"
    : "is not a block device";
  throw new DstdError("E_CONFIG", `${path} ${problem}`, { errno: Errno.ENOTTY });
}

function openError(path: string, error: unknown, readOnly: boolean): DstdError {
  const errno = errnoOf(error);
  let hint = "";
  if (errno === Errno.EBUSY) {
    hint = "; it is in use (mounted, or held exclusively by another program) and cannot be exported read-write";
  } else if ((errno === Errno.EACCES || errno === Errno.EPERM || errno === Errno.EROFS) && !readOnly) {
    hint = "; pass --read-only if write access is not needed";
  }
  return new DstdError("E_OPEN", `cannot open ${path}: ${errnoMessage(errno)}${hint}`, { errno, cause: error });
}
