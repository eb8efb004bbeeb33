/**
 * @module storage/local/fd-io — positional I/O on a file descriptor shared by the file and block
 * device backends: read/write loops that survive short transfers, fallocate with a
 * written-zeroes fallback, and the one place that turns an OS failure into a BackendError.
 *
 * Must not: open or close descriptors, decide policy (which fallocate mode a backend wants),
 * or ever report a failed or incomplete transfer as success.
 */
import fs from "node:fs";
import { Errno, errnoFromError, errnoMessage } from "../../lib/errno.ts";
import { BackendError } from "../../lib/errors.ts";
import { fallocate, SysError } from "../../sys/libc.ts";

/** Largest single zero-fill write; bounds the memory a written-zeroes fallback holds. */
const ZERO_CHUNK = 1 << 20;
let zeroes: Uint8Array | undefined;

/** A read-only 1 MiB zero buffer, allocated on first use and shared by every backend. */
function zeroBuffer(): Uint8Array {
  zeroes ??= new Uint8Array(ZERO_CHUNK);
  return zeroes;
}

/** errno of a thrown Node/Bun fs error or libc SysError (EIO when it carries none). */
export function errnoOf(error: unknown): number {
  if (error instanceof SysError) return error.errno;
  return errnoFromError(error);
}

/** "write at offset 4096 length 512 on /srv/disk.img failed: no space left on device (ENOSPC)". */
export function ioError(
  what: string,
  operation: string,
  offset: number,
  length: number,
  error: unknown,
): BackendError {
  const errno = errnoOf(error);
  return new BackendError(
    `${operation} at offset ${offset} length ${length} on ${what} failed: ${errnoMessage(errno)}`,
    errno,
    error,
  );
}

/**
 * Fill `target` from `offset`. readSync may return fewer bytes than asked (signals, large
 * requests), so loop; 0 bytes before the end means the file shrank under us, which is an
 * I/O error — returning zeroes there would hide lost data.
 */
export function readFully(fd: number, what: string, offset: number, target: Uint8Array): void {
  let done = 0;
  const length = target.length;
  while (done < length) {
    let n: number;
    try {
      n = fs.readSync(fd, target, done, length - done, offset + done);
    } catch (error) {
      throw ioError(what, "read", offset, length, error);
    }
    if (n <= 0) {
      throw new BackendError(
        `read at offset ${offset} length ${length} on ${what} hit end of file after ${done} bytes ` +
          `(was it truncated by another program?)`,
        Errno.EIO,
      );
    }
    done += n;
  }
}

/** Write all of `source` at `offset`, looping over short writes. */
export function writeFully(fd: number, what: string, offset: number, source: Uint8Array): void {
  let done = 0;
  const length = source.length;
  while (done < length) {
    let n: number;
    try {
      n = fs.writeSync(fd, source, done, length - done, offset + done);
    } catch (error) {
      throw ioError(what, "write", offset, length, error);
    }
    // A regular write never returns 0 for a non-empty buffer; looping on it would spin forever.
    if (n <= 0) {
      throw new BackendError(
        `write at offset ${offset} length ${length} on ${what} made no progress after ${done} bytes`,
        Errno.EIO,
      );
    }
    done += n;
  }
}

/** Make the range read as zeroes by writing zeroes, at most ZERO_CHUNK bytes per call. */
export function writeZeroes(fd: number, what: string, offset: number, length: number): void {
  const buffer = zeroBuffer();
  let done = 0;
  while (done < length) {
    const n = Math.min(ZERO_CHUNK, length - done);
    writeFully(fd, what, offset + done, n === ZERO_CHUNK ? buffer : buffer.subarray(0, n));
    done += n;
  }
}

/** fdatasync; the durability point of flush and FUA writes. */
export function syncData(fd: number, what: string, operation: string, offset: number, length: number): void {
  try {
    fs.fdatasyncSync(fd);
  } catch (error) {
    throw ioError(what, operation, offset, length, error);
  }
}

/** errnos meaning "this filesystem/device cannot do that fallocate mode", not "the I/O failed". */
export function isUnsupported(errno: number): boolean {
  return errno === Errno.ENOTSUP || errno === Errno.EINVAL || errno === 524 /* ENOTSUPP (kernel) */;
}

/**
 * fallocate(mode); returns false when the mode is unsupported here (EOPNOTSUPP/EINVAL) so the
 * caller can fall back, throws BackendError for real failures (EIO, ENOSPC, EBADF, ...).
 * (EOPNOTSUPP and ENOTSUP are the same number, 95, on Linux.)
 */
export function tryFallocate(
  fd: number,
  what: string,
  operation: string,
  mode: number,
  offset: number,
  length: number,
): boolean {
  try {
    fallocate(fd, mode, offset, length);
    return true;
  } catch (error) {
    if (isUnsupported(errnoOf(error))) return false;
    throw ioError(what, operation, offset, length, error);
  }
}

/** Completion of an asynchronous transfer: null on success, the BackendError otherwise. */
export type IoDone = (error: BackendError | null) => void;

/**
 * readFully on Bun's I/O thread pool (node:fs callbacks): the kernel's copy out of the page
 * cache runs beside the event loop instead of on it. Same short-read loop and end-of-file
 * rule; `done` is called exactly once, always later (never inside this call).
 */
export function readFullyAsync(fd: number, what: string, offset: number, target: Uint8Array, done: IoDone): void {
  const length = target.length;
  let got = 0;
  const step = (error: NodeJS.ErrnoException | null, n: number): void => {
    if (error) return done(ioError(what, "read", offset, length, error));
    if (n <= 0) {
      return done(
        new BackendError(
          `read at offset ${offset} length ${length} on ${what} hit end of file after ${got} bytes ` +
            `(was it truncated by another program?)`,
          Errno.EIO,
        ),
      );
    }
    got += n;
    if (got < length) fs.read(fd, target, got, length - got, offset + got, step);
    else done(null);
  };
  fs.read(fd, target, 0, length, offset, step);
}

/** writeFully on Bun's I/O thread pool (a FUA write's fdatasync follows in fd-backend.ts). */
export function writeFullyAsync(fd: number, what: string, offset: number, source: Uint8Array, done: IoDone): void {
  const length = source.length;
  let put = 0;
  const step = (error: NodeJS.ErrnoException | null, n: number): void => {
    if (error) return done(ioError(what, "write", offset, length, error));
    if (n <= 0) {
      return done(new BackendError(`write at offset ${offset} length ${length} on ${what} made no progress after ${put} bytes`, Errno.EIO));
    }
    put += n;
    if (put < length) fs.write(fd, source, put, length - put, offset + put, step);
    else done(null);
  };
  fs.write(fd, source, 0, length, offset, step);
}

/** syncData on Bun's I/O thread pool. */
export function syncDataAsync(fd: number, what: string, operation: string, offset: number, length: number, done: IoDone): void {
  fs.fdatasync(fd, (error) => done(error ? ioError(what, operation, offset, length, error) : null));
}
