/**
 * @module engine/write-copies — the engine's private copies of large WRITE payloads, from a
 * pool of its own. The engine copies a caller's write data at submit (unless the caller hands
 * the buffer over): the end-to-end digest is taken over that copy, resends and replays send
 * it, and a large one stays in the replay log by reference until a FLUSH covers it
 * (engine/replay-log.ts). A fresh 1 MiB buffer per write costs page faults and garbage
 * collection — measured on a tree node (docs/tree.md "Performance") as the largest share of
 * its CPU — while copying into a buffer that is already faulted in costs little. So copies
 * come from here, each under a lease (engine/lease.ts) held by the txn, the outbox until
 * sealed, the socket queue until the kernel took the bytes, and every replay-log entry or
 * piece that refers to it; it goes back here when the last holder lets go. A copy whose
 * holder never lets go (a dead socket's queue) is left to the garbage collector.
 * Giving back is idempotent per buffer (only a buffer still lent out is taken back).
 *
 * Bounded: buffers come in power-of-two classes from 64 KiB; the pool keeps at most
 * `maxPooledBytes` free (the replay bound: what the log may hold anyway). Pure: no I/O.
 */

/** Smaller writes are copied with slice(): the log copies them into its slabs anyway. */
export const POOLED_MIN_BYTES = 64 * 1024;
const MIN_CLASS = 16;
const MAX_CLASS = 26; // 64 MiB, beyond any payload limit

export class WriteCopies {
  private readonly free: ArrayBuffer[][] = Array.from({ length: MAX_CLASS + 1 }, () => []);
  /** Buffers lent out: only these are taken back. */
  private readonly lent = new WeakSet<ArrayBuffer>();
  private freeBytes = 0;

  constructor(private readonly maxPooledBytes: number) {}

  /** Bytes kept free for reuse (status, tests). */
  get pooledBytes(): number {
    return this.freeBytes;
  }

  /** The engine's own copy of `data`. */
  copy(data: Uint8Array): Uint8Array {
    if (data.length < POOLED_MIN_BYTES || data.length > 2 ** MAX_CLASS) return data.slice();
    let k = MIN_CLASS;
    while (2 ** k < data.length) k++;
    let buffer = this.free[k]!.pop();
    if (buffer !== undefined) this.freeBytes -= buffer.byteLength;
    else buffer = new ArrayBuffer(2 ** k);
    this.lent.add(buffer);
    const view = new Uint8Array(buffer, 0, data.length);
    view.set(data);
    return view;
  }

  /** Is `view` a copy lent out from here? */
  owns(view: Uint8Array): boolean {
    return view.buffer instanceof ArrayBuffer && this.lent.has(view.buffer);
  }

  /** Nothing reads `view` any more: take its buffer back (when it is one of ours, still lent). */
  give(view: Uint8Array): void {
    const buffer = view.buffer;
    if (!(buffer instanceof ArrayBuffer) || !this.lent.delete(buffer)) return;
    if (this.freeBytes + buffer.byteLength > this.maxPooledBytes) return;
    this.free[Math.log2(buffer.byteLength)]!.push(buffer);
    this.freeBytes += buffer.byteLength;
  }

  /** `view` may still be read by someone: never take its buffer back (the GC frees it). */
  disown(view: Uint8Array): void {
    if (view.buffer instanceof ArrayBuffer) this.lent.delete(view.buffer);
  }
}
