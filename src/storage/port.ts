/**
 * @module server/nbd-target — what the NBD front end (nbd/connection.ts) serves. The
 * same connection code serves a local export (`dstd export`, through storage/local/port.ts)
 * and a remote disk through the client engine (`dstd attach --nbd-listen`), so this interface
 * is the only thing either side may assume about the other.
 *
 * Contract for implementations:
 * - Every method calls `done` exactly once, synchronously or later. `errno` is 0 on success or
 *   a local errno (lib/errno.ts); the connection maps it onto the NBD wire set. Never report a
 *   failed operation as success.
 * - Requests reach a target already validated (range, access, flags, payload size).
 * - `read` fills all of `into` (a view into the connection's reply buffer, with room for the
 *   reply header in front, so the reply goes out as one write without a copy). The target
 *   must not touch `into` after calling `done`.
 * - `write` may keep `data` only until it calls `done` (the buffer is recycled after).
 * - FLUSH covers every write whose `done` was called before the flush was issued
 *   (proto.md "Ordering of messages and writes"); `fua` means durable before `done`.
 * - `synchronous: true` promises that every method calls `done` before returning; the
 *   connection then reads straight into its batched reply buffer.
 */
import type { Extent } from "./local/backend.ts";

export interface ZeroFlags {
  /** NBD_CMD_FLAG_FUA: durable before done. */
  fua: boolean;
  /** NBD_CMD_FLAG_NO_HOLE: the range must stay allocated (no punching). */
  noHole: boolean;
  /** NBD_CMD_FLAG_FAST_ZERO: fail at once with ENOTSUP unless faster than writing zeroes. */
  fast: boolean;
}

export interface NbdTarget {
  readonly size: number;
  /** Preferred I/O size (NBD_INFO_BLOCK_SIZE "preferred"): a power of two ≥ 512. */
  readonly blockSize: number;
  /** Largest READ/WRITE accepted (NBD_INFO_BLOCK_SIZE "maximum"). */
  readonly maxPayload: number;
  readonly readOnly: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canFastZero: boolean;
  readonly canFlush: boolean;
  /** Flush/FUA effects visible across connections (proto.md NBD_FLAG_CAN_MULTI_CONN). */
  readonly canMultiConn: boolean;
  readonly canBlockStatus: boolean;
  readonly description: string;
  readonly synchronous: boolean;

  read(offset: number, into: Uint8Array, done: (errno: number) => void): void;
  write(offset: number, data: Uint8Array, fua: boolean, done: (errno: number) => void): void;
  flush(done: (errno: number) => void): void;
  trim(offset: number, length: number, fua: boolean, done: (errno: number) => void): void;
  zero(offset: number, length: number, flags: ZeroFlags, done: (errno: number) => void): void;
  /** Allocation map of [offset, offset+length); lengths are positive and sum to ≤ length. */
  extents(offset: number, length: number, done: (errno: number, extents: Extent[] | null) => void): void;
}
