/**
 * @module storage/local/memory — a sparse in-memory export (`--memory SIZE`): storage is allocated
 * lazily in 1 MiB chunks, so a 10 GiB export costs only what has been written. Unallocated
 * chunks read as zeroes and report as holes; trim and zeroing of whole chunks free them.
 *
 * Must not: allocate per request beyond a chunk on first write, or grow past `size`
 * (callers bound-check; an out-of-range call is a programmer error and asserts).
 */
import { Errno } from "../../lib/errno.ts";
import { BackendError, DstdError } from "../../lib/errors.ts";
import { assert } from "../../lib/assert.ts";
import type { Backend, Extent } from "./backend.ts";
import { MAX_EXTENTS } from "../port.ts";

/** Allocation granularity: large enough that a 1 MiB request touches at most 2 chunks. */
export const MEMORY_CHUNK_SIZE = 1 << 20;

export interface MemoryBackend extends Backend {
  readonly kind: "memory";
  /** Bytes currently allocated (whole chunks); for tests and `status` output. */
  allocatedBytes(): number;
}

export function createMemoryBackend(size: number, options: { readOnly?: boolean } = {}): MemoryBackend {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new DstdError(
      "E_CONFIG",
      `memory export size ${size} is invalid: it must be a whole number of bytes between 0 and ${Number.MAX_SAFE_INTEGER}`,
    );
  }
  return new SparseMemory(size, options.readOnly ?? false);
}

class SparseMemory implements MemoryBackend {
  readonly kind = "memory" as const;
  readonly description = "memory";
  readonly blockSize = 4096;
  /** Chunk index → storage. A Map, not an array: a huge export may have billions of indexes. */
  private readonly chunks = new Map<number, Uint8Array>();
  private closed = false;

  constructor(
    public size: number,
    readonly readOnly: boolean,
  ) {}

  resize(size: number): void {
    if (this.closed) throw new BackendError("resize of a closed memory disk", Errno.EBADF);
    if (size < this.size) {
      // Free whole chunks past the end; the partial last chunk keeps only what stays inside.
      for (const index of [...this.chunks.keys()]) {
        const base = index * MEMORY_CHUNK_SIZE;
        if (base >= size) this.chunks.delete(index);
        else if (base + MEMORY_CHUNK_SIZE > size) this.chunks.set(index, this.chunks.get(index)!.slice(0, size - base));
      }
    } else if (size > this.size) {
      // The old last chunk was allocated to the old end: it must reach the new one (or a whole
      // chunk), zero-filled, or reads there would leave the caller's buffer unwritten.
      const index = Math.floor((this.size - 1) / MEMORY_CHUNK_SIZE);
      const chunk = this.size > 0 ? this.chunks.get(index) : undefined;
      const wanted = Math.min(MEMORY_CHUNK_SIZE, size - index * MEMORY_CHUNK_SIZE);
      if (chunk !== undefined && chunk.length < wanted) {
        const grown = new Uint8Array(wanted);
        grown.set(chunk);
        this.chunks.set(index, grown);
      }
    }
    this.size = size;
  }

  allocatedBytes(): number {
    let total = 0;
    for (const chunk of this.chunks.values()) total += chunk.length;
    return total;
  }

  read(offset: number, target: Uint8Array): void {
    this.check("read", offset, target.length, false);
    const length = target.length;
    let done = 0;
    while (done < length) {
      const position = offset + done;
      const index = Math.floor(position / MEMORY_CHUNK_SIZE);
      const within = position - index * MEMORY_CHUNK_SIZE;
      const n = Math.min(MEMORY_CHUNK_SIZE - within, length - done);
      const chunk = this.chunks.get(index);
      if (chunk === undefined) target.fill(0, done, done + n);
      else target.set(within === 0 && n === chunk.length ? chunk : chunk.subarray(within, within + n), done);
      done += n;
    }
  }

  write(offset: number, source: Uint8Array, _fua: boolean): void {
    this.check("write", offset, source.length, true);
    const length = source.length;
    let done = 0;
    while (done < length) {
      const position = offset + done;
      const index = Math.floor(position / MEMORY_CHUNK_SIZE);
      const within = position - index * MEMORY_CHUNK_SIZE;
      const n = Math.min(MEMORY_CHUNK_SIZE - within, length - done);
      const chunk = this.chunks.get(index) ?? this.allocate(index);
      chunk.set(done === 0 && n === length ? source : source.subarray(done, done + n), within);
      done += n;
    }
  }

  /** Memory has no volatile cache to drain; a completed write is as durable as it gets. */
  flush(): void {
    this.check("flush", 0, 0, false);
  }

  trim(offset: number, length: number): void {
    this.check("trim", offset, length, true);
    this.clear(offset, length, true);
  }

  zero(offset: number, length: number, mayPunch: boolean): void {
    this.check("write zeroes", offset, length, true);
    this.clear(offset, length, mayPunch);
  }

  extents(offset: number, length: number, maxExtents = MAX_EXTENTS): Extent[] {
    this.check("block status", offset, length, false);
    const result: Extent[] = [];
    if (maxExtents < 1) return result;
    const end = offset + length;
    let position = offset;
    for (const index of this.allocatedIndexes(offset, end)) {
      // Full: stop here; the map covers [offset, position) truthfully and the caller reports that much.
      if (result.length >= maxExtents) return result.slice(0, maxExtents);
      const start = Math.max(index * MEMORY_CHUNK_SIZE, offset);
      if (start > position) push(result, start - position, true);
      const stop = Math.min((index + 1) * MEMORY_CHUNK_SIZE, end);
      push(result, stop - start, false);
      position = stop;
    }
    if (end > position) push(result, end - position, true);
    // A prefix of the map is a truthful answer (the reply says how far it reaches).
    if (result.length > maxExtents) result.length = maxExtents;
    return result;
  }

  close(): void {
    this.closed = true;
    this.chunks.clear();
  }

  private allocate(index: number): Uint8Array {
    const chunk = new Uint8Array(Math.min(MEMORY_CHUNK_SIZE, this.size - index * MEMORY_CHUNK_SIZE));
    this.chunks.set(index, chunk);
    return chunk;
  }

  /**
   * Zero a range. A fully covered chunk is freed when a hole is acceptable (trim, or
   * WRITE_ZEROES without NO_HOLE); otherwise it is filled. Unallocated chunks already read
   * as zero and stay unallocated: memory has no space reservation for NO_HOLE to protect.
   */
  private clear(offset: number, length: number, mayFree: boolean): void {
    const end = offset + length;
    for (const index of this.allocatedIndexes(offset, end)) {
      const chunk = this.chunks.get(index)!;
      const base = index * MEMORY_CHUNK_SIZE;
      const from = Math.max(offset, base) - base;
      const to = Math.min(end, base + chunk.length) - base;
      if (mayFree && from === 0 && to === chunk.length) this.chunks.delete(index);
      else chunk.fill(0, from, to);
    }
  }

  /** Sorted indexes of allocated chunks overlapping [offset, end), without walking holes. */
  private allocatedIndexes(offset: number, end: number): number[] {
    if (end <= offset) return [];
    const first = Math.floor(offset / MEMORY_CHUNK_SIZE);
    const last = Math.floor((end - 1) / MEMORY_CHUNK_SIZE);
    const found: number[] = [];
    if (last - first < this.chunks.size) {
      for (let index = first; index <= last; index++) if (this.chunks.has(index)) found.push(index);
      return found;
    }
    for (const index of this.chunks.keys()) if (index >= first && index <= last) found.push(index);
    return found.sort((a, b) => a - b);
  }

  private check(operation: string, offset: number, length: number, writes: boolean): void {
    if (this.closed) throw new BackendError(`${operation} on closed memory export`, Errno.EBADF);
    if (writes && this.readOnly) {
      throw new BackendError(`${operation} refused: memory export is read-only`, Errno.EROFS);
    }
    assert(
      Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) && length >= 0 &&
        offset + length <= this.size,
      `memory ${operation} [${offset}, +${length}) outside export of ${this.size} bytes`,
    );
  }
}

/** Append an extent, merging with the previous one when it is of the same kind. */
function push(result: Extent[], length: number, hole: boolean): void {
  const previous = result[result.length - 1];
  if (previous !== undefined && previous.hole === hole) previous.length += length;
  else result.push({ length, hole, zero: hole });
}
