/**
 * @module storage/local/backend — the synchronous interface of the local backends (memory,
 * sparse file, block device). storage/local/port.ts turns one into a StoragePort with
 * `synchronous: true`; nothing outside storage/local uses this interface directly.
 *
 * All calls are synchronous on purpose: a 4 KiB pread from page cache costs ~1 µs
 * synchronously and ~18 µs through Bun's async thread pool (measured with Bun 1.4), and the
 * request path must not pay an async hop per request.
 *
 * Every method validates nothing about the request: callers (storage/validate.ts) bounds-check
 * against `size` and permissions first. Failures throw BackendError carrying the errno the
 * client should receive; a backend never reports a failed I/O as success.
 */
import type { Extent } from "../port.ts";
import type { IoDone } from "./fd-io.ts";

export type { Extent };
export type BackendKind = "memory" | "file" | "device";


export interface Backend {
  readonly kind: BackendKind;
  /** Human-readable origin, e.g. the file path or "memory". */
  readonly description: string;
  /** Export size in bytes (for devices: from BLKGETSIZE64, never from stat). */
  readonly size: number;
  /** Preferred I/O granularity: 4096 for files and memory, the logical block size for devices. */
  readonly blockSize: number;
  /** Opened without write access; writes throw BackendError(EROFS) as a last line of defence. */
  readonly readOnly: boolean;

  /** Fill `target` completely from `offset`. Short reads past EOF never happen (callers bound-check). */
  read(offset: number, target: Uint8Array): void;
  /** Write all of `source` at `offset`. `fua`: durable before returning (fdatasync). */
  write(offset: number, source: Uint8Array, fua: boolean): void;
  /** Make every completed write durable (fdatasync for files and devices). */
  flush(): void;
  /** Discard: punch a hole (file, KEEP_SIZE) or BLKDISCARD (device). Reads may return zeroes after. */
  trim(offset: number, length: number): void;
  /**
   * Make the range read as zeroes. `mayPunch`: a hole is acceptable (NBD WRITE_ZEROES without
   * NO_HOLE); otherwise the storage stays allocated (FALLOC_FL_ZERO_RANGE or written zeroes).
   */
  zero(offset: number, length: number, mayPunch: boolean): void;
  /**
   * Allocation map of [offset, offset+length): SEEK_DATA/SEEK_HOLE for files. At most
   * `maxExtents` entries (default MAX_EXTENTS); the walk stops there, so lengths sum to ≤ length.
   */
  extents(offset: number, length: number, maxExtents?: number): Extent[];
  /**
   * Change the size to `size` bytes (online resize). A file grows sparse or is truncated; a
   * memory disk grows or drops what lies past the end; a block device cannot be resized from
   * here: it accepts only the size the device now reports (it grew underneath: detected).
   * Throws BackendError naming the problem.
   */
  resize?(size: number): void;
  /** Why `resize(size)` would be refused, asked before anything changes (a block device not that size now); null: it would not. */
  resizeProblem?(size: number): string | null;
  /**
   * Optional (file and device backends): read, write and flush on Bun's I/O thread pool, so
   * the kernel's copies and fdatasync run beside the event loop (storage/local/port.ts uses
   * them for large requests). Same checks and errors as the synchronous calls; a failed check
   * throws before anything starts; otherwise `done` is called exactly once, later.
   */
  readAsync?(offset: number, target: Uint8Array, done: IoDone): void;
  writeAsync?(offset: number, source: Uint8Array, fua: boolean, done: IoDone): void;
  flushAsync?(done: IoDone): void;
  /** Release the file descriptor / memory. Idempotent. */
  close(): void;
}
