/**
 * @module storage/size-fence — the size new requests must fit while resizes are queued in a
 * port that orders them behind earlier mutations (docs/replication.md §4 "Mutations": the
 * replication primary logs a RESIZE and writes it back only after every mutation logged before
 * it). The port below keeps its old size until the resize runs, so a request checked against
 * that size meanwhile could be queued behind a shrink and lie past the end when it reaches the
 * disk. From the moment a resize is asked until it completes, the size is the smallest of the
 * one below and every queued one: a mutation past a queued shrink's end is refused at once with
 * the out-of-range errno (storage/validate.ts), and a grown tail is taken only once it exists.
 *
 * Must not: let a mutation through that would lie past a size queued before it.
 */
import type { Done } from "./port.ts";
import { rangeRefusal, type RequestKind } from "./validate.ts";

export class SizeFence {
  /** Sizes of the resizes asked and not completed, in the order asked (repeats kept). */
  private readonly queued: number[] = [];

  constructor(private readonly below: () => number) {}

  /** The size requests must fit now: the port below's, or less while a shrink is queued. */
  get size(): number {
    let size = this.below();
    for (const queued of this.queued) if (queued < size) size = queued;
    return size;
  }

  /** A resize to `size` is asked: fenced from now; the completion returned lifts it, then calls `done`. */
  enter(size: number, done: Done): Done {
    this.queued.push(size);
    return (errno) => {
      this.queued.splice(this.queued.indexOf(size), 1);
      done(errno);
    };
  }

  /** 0, or the out-of-range errno a mutation of [offset, offset+length) gets now. */
  refusal(kind: RequestKind & ("write" | "trim" | "zero"), offset: number, length: number): number {
    return rangeRefusal(kind, offset, length, this.size);
  }
}
