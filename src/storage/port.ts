/**
 * @module storage/port — the one asynchronous contract for everything that serves blocks.
 * The NBD front (nbd/), the DST export (export/), `dstd attach` and `dstd copy` all talk to
 * a StoragePort; local backends (storage/local), a remote DST export (storage/remote), Ceph
 * RBD, and layers that wrap another port (storage/layers: fault injection, delay, later
 * replication and mirroring) all implement it. Nothing above this file may assume more.
 *
 * Contract for implementations (nbdkit's plugin/filter contract is the model):
 * - Every request method calls its completion exactly once, synchronously or later. `errno`
 *   is 0 on success or a local errno (lib/errno.ts). A failed operation is never reported as
 *   success.
 * - Requests reach a port already validated against `size`, `maxPayload` and `readOnly`
 *   (storage/validate.ts); a port may validate again as a last line of defence.
 * - Buffer ownership: `read` fills all of `into` and must not touch it after calling `done`;
 *   `write` may keep `data` only until it calls `done` (the caller recycles it after).
 *   `writeHandedOver` (optional) is a write whose buffer the caller hands over: the port may
 *   keep `data` past the completion, under a BufferHold (below).
 * - Completions may arrive in any order. FLUSH covers every write whose completion was
 *   called before the flush was issued (NBD proto.md "Ordering of messages and writes");
 *   `fua` means durable before the completion.
 * - `synchronous: true` promises that every method completes before returning; callers then
 *   read straight into batched reply buffers and reuse receive buffers at once.
 * - `size` may change (resize): read it per request, never cache it.
 * - Completions must not throw; a port must not call back into its caller's completion from
 *   inside a completion of another request in a way that recurses without bound.
 */
import { Errno, errnoMessage } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";

export interface Extent {
  /** Length in bytes of this run. */
  length: number;
  /** true when the range reads as zeroes and holds no storage (a hole). */
  hole: boolean;
  /** true when the range is known to read as zeroes (holes always are). */
  zero: boolean;
}

export interface ZeroFlags {
  /** FUA: durable before done. */
  fua: boolean;
  /** The range must stay allocated (no punching): NBD_CMD_FLAG_NO_HOLE, DST NO_HOLE. */
  noHole: boolean;
  /** Fail at once with ENOTSUP unless faster than writing zeroes (NBD_CMD_FLAG_FAST_ZERO). */
  fast: boolean;
}

/**
 * A counted hold on a WRITE buffer handed over to a port (`writeHandedOver`): zero copy for a
 * port that keeps the data after completing (a remote leg's engine keeps it for resends and
 * for replay until a FLUSH covers it: engine/lease.ts). Whoever keeps a reference calls
 * `hold()` before the call that handed it over returns and `drop()` once when done with it;
 * the buffer goes back to its owner (the DST export's receive pool) when the last hold is
 * dropped, never earlier. The caller's own hold lasts at least until the completion.
 */
export interface BufferHold {
  hold(): void;
  drop(): void;
}

/** Completion of a request: 0 or an errno. */
export type Done = (errno: number) => void;
/** Completion of `readHashed`: 0 or an errno, and the XXH3-64 of the data read when known. */
export type HashedDone = (errno: number, xxh3: bigint | null) => void;
/** Completion of an extents walk: lengths are positive and sum to ≤ the length asked. */
export type ExtentsDone = (errno: number, extents: Extent[] | null) => void;

/**
 * Most extents one walk returns: the largest BLOCK_STATUS reply we send has 2048
 * descriptors, so a walk never needs more (issue: BLOCK_STATUS work bounded by its reply).
 */
export const MAX_EXTENTS = 2048;

export interface StoragePort {
  /** Kind of backend or layer ("memory", "file", "device", "remote", "rbd", "delay", …). */
  readonly kind: string;
  /** Human-readable origin: a file path, "memory", a URL. */
  readonly description: string;
  /** Size in bytes; may change with resize. */
  readonly size: number;
  /** Preferred I/O size: a power of two ≥ 512. */
  readonly blockSize: number;
  /** Largest READ/WRITE accepted. */
  readonly maxPayload: number;
  readonly readOnly: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canFastZero: boolean;
  readonly canFlush: boolean;
  /** Flush/FUA effects visible across connections (NBD_FLAG_CAN_MULTI_CONN). */
  readonly canMultiConn: boolean;
  readonly canBlockStatus: boolean;
  /**
   * READ, WRITE, FLUSH and block status complete before they return. TRIM and WRITE_ZEROES
   * may still complete later (a local file or device steps through a large one:
   * storage/local/port.ts MUTATE_STEP); callers rely on `synchronous` for READ and WRITE only
   * (completesInline).
   */
  readonly synchronous: boolean;
  /**
   * Optional, for a port that is not `synchronous`: a READ or WRITE of at most this many bytes
   * still completes before it returns (a local file port runs only large ones on the I/O
   * thread pool: storage/local/port.ts). Layers do not pass it on (absent means none do), except
   * one that keeps the timing of every call it forwards (storage/layers/shrink-gate.ts).
   */
  readonly inlineUpTo?: number;
  /**
   * Optional: true when `write` no longer references `data` once it returns (it copied it:
   * the remote engine does), so the caller may recycle the buffer before the completion.
   */
  readonly writeDataCopied?: boolean;
  /**
   * Optional: `write` of a buffer the caller hands over (see BufferHold): the caller never
   * changes `data` again, so the port may keep it without copying for as long as it holds
   * `hold`. Absent: callers use `write` (writeWithHold below does the choosing).
   * `xxh3`, when given, is XXH3-64 (seed 0) of `data`, computed by the caller anyway (the DST
   * export's exactly-once signature): a port that needs that hash takes it instead of a second
   * pass over the data (the replication log's payload digest, docs/replication.md §9). A port
   * that splits `data` or passes it on under another name drops it.
   */
  writeHandedOver?(offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done, xxh3?: bigint): void;

  /**
   * Optional: `read` that also reports the XXH3-64 (seed 0) of `into` when the port knows it
   * without hashing again — a remote leg whose reply carried an xxh3 digest the engine
   * verified, and tree layers that pass one leg's read through whole. `xxh3` is null when
   * not known (the caller hashes for itself). A DST export with the xxh3 checksum sends it as
   * the reply's digest: one pass over the data less per READ through a tree node.
   */
  readHashed?(offset: number, into: Uint8Array, done: HashedDone): void;

  read(offset: number, into: Uint8Array, done: Done): void;
  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void;
  flush(done: Done): void;
  trim(offset: number, length: number, fua: boolean, done: Done): void;
  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void;
  /**
   * Allocation map of [offset, offset+length), at most `maxExtents` entries: the walk stops
   * there (the caller reports only what it got), so its work is bounded by the reply.
   */
  extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void;
  /** Grow (or shrink) to `size` bytes; absent where the backend cannot. */
  resize?(size: number, done: Done): void;
  /**
   * Optional, with `resize`: why resize(size) would be refused now, as a sentence for the
   * operator (a mirror that cannot grow yet), or null. The errno alone says too little.
   */
  resizeProblem?(size: number): string | null;
  /** Release what the port holds (descriptors, connections, legs). Idempotent. */
  close(): Promise<void>;
}

/**
 * Write `data` (under the caller's `hold`) to `port`: handed over when the port takes buffers
 * (no copy anywhere below), else a plain write, which may keep `data` only until its
 * completion — within the caller's own hold, which lasts until the caller's completion. For
 * layers that split or fan out a handed-over write.
 */
export function writeWithHold(port: StoragePort, offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done, xxh3?: bigint): void {
  if (port.writeHandedOver !== undefined) port.writeHandedOver(offset, data, fua, hold, done, xxh3);
  else port.write(offset, data, fua, done);
}

/**
 * Read through `port.readHashed` when it has one (the XXH3-64 of the data comes with it when
 * known), else through `read` (no hash). For layers that pass one read through whole.
 */
export function readWithHash(port: StoragePort, offset: number, into: Uint8Array, done: HashedDone): void {
  if (port.readHashed !== undefined) port.readHashed(offset, into, done);
  else port.read(offset, into, (errno) => done(errno, null));
}

/** true when a READ or WRITE of `length` bytes on `port` completes before the call returns. */
export function completesInline(port: StoragePort, length: number): boolean {
  return port.synchronous || length <= (port.inlineUpTo ?? -1);
}

/** A port's flags as one object, for status output and tests. */
export function describePort(port: StoragePort): Record<string, unknown> {
  return {
    kind: port.kind,
    description: port.description,
    size: port.size,
    blockSize: port.blockSize,
    maxPayload: port.maxPayload,
    readOnly: port.readOnly,
    canTrim: port.canTrim,
    canZero: port.canZero,
    canFastZero: port.canFastZero,
    canFlush: port.canFlush,
    canMultiConn: port.canMultiConn,
    canBlockStatus: port.canBlockStatus,
    synchronous: port.synchronous,
  };
}

/** Promise forms of the port's calls, for code that is not on the per-request path (copy, tests). */
export const call = {
  read: (port: StoragePort, offset: number, into: Uint8Array) =>
    settle("read", offset, into.length, (done) => port.read(offset, into, done)),
  write: (port: StoragePort, offset: number, data: Uint8Array, fua = false) =>
    settle("write", offset, data.length, (done) => port.write(offset, data, fua, done)),
  flush: (port: StoragePort) => settle("flush", 0, 0, (done) => port.flush(done)),
  trim: (port: StoragePort, offset: number, length: number, fua = false) =>
    settle("trim", offset, length, (done) => port.trim(offset, length, fua, done)),
  zero: (port: StoragePort, offset: number, length: number, flags: Partial<ZeroFlags> = {}) =>
    settle("write zeroes", offset, length, (done) =>
      port.zero(offset, length, { fua: false, noHole: false, fast: false, ...flags }, done),
    ),
  extents: (port: StoragePort, offset: number, length: number, maxExtents = MAX_EXTENTS) =>
    new Promise<Extent[]>((resolve, reject) =>
      port.extents(offset, length, maxExtents, (errno, extents) =>
        errno === 0 && extents !== null ? resolve(extents) : reject(failure("block status", offset, length, errno || Errno.EIO)),
      ),
    ),
};

function failure(what: string, offset: number, length: number, errno: number): DstdError {
  const range = what === "flush" ? "" : ` ${length} B at offset ${offset}`;
  return new DstdError("E_IO", `${what}${range} failed: ${errnoMessage(errno)}`, { errno });
}

function settle(what: string, offset: number, length: number, start: (done: Done) => void): Promise<void> {
  return new Promise((resolve, reject) =>
    start((errno) => (errno === 0 ? resolve() : reject(failure(what, offset, length, errno)))),
  );
}
