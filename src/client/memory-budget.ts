/**
 * @module client/memory-budget — keeps `dstd copy` under its memory bound (peak RSS ≤ 256 MiB
 * for a copy of any size; test/cli/copy-memory.test.ts checks it) where buffers cannot be reused.
 *
 * What a copy holds alive is bounded by construction: the chunks in flight, the replay log
 * (flushed as it goes, client/copy.ts FLUSH_EVERY), the socket queue (the engine's window),
 * and WRITE buffers come from a fixed pool (client/write-pool.ts). What is not bounded is the
 * garbage: with keys and without libcrypto, node:crypto returns every record's ciphertext in
 * a fresh buffer (it cannot encrypt into a caller's buffer, crypto/aead.ts), a gigabyte of dead
 * buffers per gigabyte copied, and the runtime collects them only once the process has grown
 * by hundreds of MiB. (With libcrypto, sys/libcrypto.ts seals into pooled buffers and there is
 * no such garbage: measured 0 collections for a sealed 1 GiB copy, docs/performance.md.) So the copy looks at its resident size after each chunk and, past the budget, asks
 * for a full collection (measured: ~10 ms for a copy's small heap); when a collection does not
 * bring it back under the budget (live data, not garbage), the threshold moves up to what is
 * live plus a margin, so that collections never run back to back.
 */

const MiB = 1024 * 1024;
/** Collect once the resident size passes this. */
export const COPY_RSS_BUDGET = 192 * MiB;
/** Room above what a collection left alive before the next one. */
const MARGIN = 48 * MiB;

/** Data copied between two looks at the resident size (what may pile up unseen: far below MARGIN). */
export const SAMPLE_BYTES = 8 * MiB;

export class MemoryBudget {
  private threshold: number;
  private unsampled = 0;
  /** Collections run so far (for tests and the summary's debug line). */
  collections = 0;

  constructor(
    private readonly budget = COPY_RSS_BUDGET,
    private readonly rss: () => number = () => process.memoryUsage.rss(),
    private readonly collect: () => void = () => Bun.gc(true),
  ) {
    this.threshold = budget;
  }

  /**
   * Call after each chunk with its length: collects when the process is over the threshold.
   * The resident size is read only every SAMPLE_BYTES of data (without a length: every call):
   * reading it costs about a millisecond on a loaded machine, and once per 1 MiB chunk it took
   * 13 % of a plain copy's event loop (a CPU profile of `dstd copy`, docs/performance.md).
   */
  check(bytes?: number): void {
    if (bytes !== undefined) {
      this.unsampled += bytes;
      if (this.unsampled < SAMPLE_BYTES) return;
    }
    this.unsampled = 0;
    if (this.rss() <= this.threshold) return;
    this.collect();
    this.collections++;
    this.threshold = Math.max(this.budget, this.rss() + MARGIN);
  }
}
