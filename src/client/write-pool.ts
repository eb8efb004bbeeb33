/**
 * @module client/write-pool — the fixed-capacity pool that DstClient.reserveWrite() fills
 * from: WRITE buffers a caller fills and hands over to the engine, which gives each back once
 * nothing refers to it any more (engine/lease.ts: the txn, the socket queue, the replay log).
 *
 * Why: `dstd copy` writes one fresh 1 MiB buffer per request otherwise; each lives until a
 * FLUSH releases it from the replay log and then waits for the garbage collector, so the
 * process grew by hundreds of MiB of dead buffers between collections. With the pool the
 * same few dozen buffers go round: memory is what is in flight plus what the replay bound
 * holds, whatever the size of the copy.
 *
 * Buffers are kept by exact length (a copy uses one chunk size, and its last chunk is the
 * only other); at most `capacity` bytes wait in the pool, anything beyond is left to the GC.
 */
export const WRITE_POOL_BYTES = 128 * 1024 * 1024;

export class WritePool {
  private readonly free = new Map<number, Uint8Array[]>();
  private freeBytes = 0;
  /** Buffers made (not taken from the pool): stays flat once a workload runs in steady state. */
  allocated = 0;

  constructor(readonly capacity = WRITE_POOL_BYTES) {}

  /** Bytes waiting in the pool. */
  get pooledBytes(): number {
    return this.freeBytes;
  }

  take(length: number): Uint8Array {
    const buffer = this.free.get(length)?.pop();
    if (buffer !== undefined) {
      this.freeBytes -= length;
      return buffer;
    }
    this.allocated++;
    return new Uint8Array(length);
  }

  /** Give back a buffer from take() that nothing refers to any more (called once per take). */
  readonly give = (buffer: Uint8Array): void => {
    if (buffer.length === 0 || this.freeBytes + buffer.length > this.capacity) return;
    let list = this.free.get(buffer.length);
    if (list === undefined) this.free.set(buffer.length, (list = []));
    list.push(buffer);
    this.freeBytes += buffer.length;
  };
}
