/**
 * @module transport/receive-garbage — a collection every RECEIVED_BYTES_PER_COLLECTION bytes
 * received on any socket of the process.
 *
 * Why: Bun hands every socket read to JavaScript in a fresh buffer (up to 512 KiB), so a
 * process that receives a gigabyte makes a gigabyte of garbage, and the collector's own
 * pacing let it pile up to hundreds of MiB before freeing it: the resident size of
 * `dstd attach` reached 690 MiB under `bench:peers`, and since sys/allocator.ts keeps freed
 * pages, the resident size stays where the garbage took it. Asking for a collection as the
 * bytes arrive keeps that pile near the interval (measured, 1 MiB writes: export peak 137 →
 * 106 MiB, attach 338 → 310 MiB, throughput unchanged within the noise; docs/performance.md).
 * Bun.gc(false) asks for a collection without waiting for a full synchronous one.
 */

/** Bytes received between two requested collections. */
export const RECEIVED_BYTES_PER_COLLECTION = 32 * 1024 * 1024;

let received = 0;

/** Count a received chunk; asks for a collection once the interval is reached. */
export function noteReceived(bytes: number): void {
  received += bytes;
  if (received < RECEIVED_BYTES_PER_COLLECTION) return;
  received = 0;
  Bun.gc(false);
}
