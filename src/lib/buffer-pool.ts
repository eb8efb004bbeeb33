/**
 * @module lib/buffer-pool — a process-wide pool of large I/O buffers (NBD front, DST export):
 * READ reply frames (header + data) and WRITE payloads that arrived split over several
 * socket reads. Reusing them keeps a 1 MiB-per-request workload from allocating (and the GC
 * from scanning) a megabyte per request.
 *
 * Buffers come in power-of-two classes plus HEADER_ROOM bytes, so a frame of header + 2^k
 * data bytes fits one class. The pool keeps at most MAX_POOLED_BYTES in total, plus what
 * holders of handed-over buffers reserved (reservePoolBytes); beyond that returned buffers
 * are left to the GC. Must not: hand out a buffer twice — callers give a
 * buffer back only once nothing (target, socket queue) can still touch it.
 */

/** Room in front of the data for any reply header (structured OFFSET_DATA needs 28). */
export const HEADER_ROOM = 128;
/** Smallest class (64 KiB + HEADER_ROOM): smaller requests share it. */
const MIN_CLASS = 16;
const MAX_CLASS = 26; // 64 MiB
const MAX_POOLED_BYTES = 32 * 1024 * 1024;

const free: ArrayBuffer[][] = Array.from({ length: MAX_CLASS + 1 }, () => []);
let pooledBytes = 0;
/** Extra capacity reserved by those who keep handed-over buffers (reservePoolBytes). */
let reservedBytes = 0;

/**
 * Let the pool keep `bytes` more, until the returned function is called. A remote tree leg
 * (storage/remote/remote-port.ts) keeps the WRITE payloads the DST export hands over to it
 * until a FLUSH covers them (up to its replay bound) and then gives them all back at once:
 * without room for them here they would go to the GC, and every later request would fault
 * in fresh memory (docs/tree.md "Performance"). The room is what the engine's own copy pool
 * would hold otherwise (engine/write-copies.ts), which stays empty for handed-over writes.
 */
export function reservePoolBytes(bytes: number): () => void {
  reservedBytes += bytes;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    reservedBytes -= bytes;
  };
}

function classOf(length: number): number {
  let k = MIN_CLASS;
  while (k < MAX_CLASS && 2 ** k + HEADER_ROOM < length) k++;
  return k;
}

/** A buffer of exactly `length` bytes (a view of a pooled ArrayBuffer when large). */
export function takeBuffer(length: number): Uint8Array {
  if (length > 2 ** MAX_CLASS + HEADER_ROOM) return new Uint8Array(length);
  const k = classOf(length);
  const buffer = free[k]!.pop();
  if (buffer !== undefined) {
    pooledBytes -= buffer.byteLength;
    return new Uint8Array(buffer, 0, length);
  }
  return new Uint8Array(new ArrayBuffer(2 ** k + HEADER_ROOM), 0, length);
}

/** Return a buffer from takeBuffer(); anything else (or anything beyond the cap) is dropped. */
export function giveBuffer(view: Uint8Array): void {
  const buffer = view.buffer;
  if (!(buffer instanceof ArrayBuffer)) return;
  const capacity = buffer.byteLength;
  const k = Math.log2(capacity - HEADER_ROOM);
  if (!Number.isInteger(k) || k < MIN_CLASS || k > MAX_CLASS) return;
  if (pooledBytes + capacity > MAX_POOLED_BYTES + reservedBytes) return;
  free[k]!.push(buffer);
  pooledBytes += capacity;
}

/** For tests and status output. */
export function pooledBufferBytes(): number {
  return pooledBytes;
}
