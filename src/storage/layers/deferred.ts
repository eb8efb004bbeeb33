/**
 * @module storage/layers/deferred — a layer whose every call reaches the port below only when
 * its scheduler runs it, so completions arrive later and in whatever order the scheduler
 * chooses (a test's explicit release, a seeded shuffle in the simulator, a timer in a
 * real-process test). Used to prove that the NBD front and the DST export work with an
 * asynchronous port: out-of-order completions, buffers held until completion.
 *
 * With `inlineUpTo`, a READ or WRITE of at most that many bytes goes straight to the port
 * below (a synchronous one: it completes inline) and only larger ones and the rest wait for
 * the scheduler: the shape of a local file port that runs large requests on the I/O thread
 * pool (storage/local/port.ts), small and large completions interleaved on one port.
 *
 * Must not: run anything itself (no timers here); the scheduler decides when and in what order.
 */
import type { Done, ExtentsDone, StoragePort, ZeroFlags } from "../port.ts";
import { PassThrough } from "./pass-through.ts";

/** Runs `work` at some later moment of the scheduler's choosing (never synchronously). */
export type Scheduler = (work: () => void) => void;

export class DeferredLayer extends PassThrough {
  constructor(
    next: StoragePort,
    private readonly schedule: Scheduler,
    /** READ/WRITE of at most this many bytes are not deferred (undefined: every call is). */
    private readonly inline?: number,
  ) {
    super(next);
  }

  get inlineUpTo(): number | undefined {
    return this.inline !== undefined && this.next.synchronous ? this.inline : undefined;
  }

  override get kind(): string {
    return "deferred";
  }
  override get synchronous(): boolean {
    return false;
  }

  override read(offset: number, into: Uint8Array, done: Done): void {
    if (into.length <= (this.inlineUpTo ?? -1)) return this.next.read(offset, into, done);
    this.schedule(() => this.next.read(offset, into, done));
  }
  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    if (data.length <= (this.inlineUpTo ?? -1)) return this.next.write(offset, data, fua, done);
    this.schedule(() => this.next.write(offset, data, fua, done));
  }
  override flush(done: Done): void {
    this.schedule(() => this.next.flush(done));
  }
  override trim(offset: number, length: number, fua: boolean, done: Done): void {
    this.schedule(() => this.next.trim(offset, length, fua, done));
  }
  override zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    this.schedule(() => this.next.zero(offset, length, flags, done));
  }
  override extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
    this.schedule(() => this.next.extents(offset, length, maxExtents, done));
  }
}

/** A scheduler that holds work until the test releases it: `release(i)` or `releaseAll()`. */
export class HeldWork {
  readonly pending: Array<() => void> = [];
  readonly schedule: Scheduler = (work) => void this.pending.push(work);

  get size(): number {
    return this.pending.length;
  }

  /** Run the `index`-th held call (completions may then run and hold more). */
  release(index = 0): void {
    const [work] = this.pending.splice(index, 1);
    work?.();
  }

  /** Run everything held, including what running it holds, in `pick` order (default FIFO). */
  releaseAll(pick: (count: number) => number = () => 0): void {
    while (this.pending.length > 0) this.release(pick(this.pending.length));
  }
}
