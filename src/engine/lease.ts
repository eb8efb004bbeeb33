/**
 * @module engine/lease — who still holds a WRITE buffer the caller handed over with a way to
 * get it back (Request.recycle).
 *
 * A handed-over buffer is referred to by the txn until it completes, by the outbox until its
 * record is sealed, by the socket's queue until the kernel took the bytes (the sink's
 * release), and by the replay log until a FLUSH covers the write. Each of them holds the lease
 * once and drops it once; when the last one drops it, the buffer goes back to its owner (a
 * fixed-capacity pool in client/dst-client.ts) to be filled again. A buffer must never come
 * back while any of them could still read it: the bytes on the wire and in a replay would then
 * be another request's.
 * Pure: no I/O, no time.
 */
import { assert } from "../lib/assert.ts";
import type { Request } from "./txn.ts";
import type { WriteCopies } from "./write-copies.ts";

export class Lease {
  private holders = 1;

  /** Held once by whoever creates it (the txn). */
  constructor(
    private readonly buffer: Uint8Array,
    private readonly recycle: (buffer: Uint8Array) => void,
  ) {}

  hold(): void {
    assert(this.holders > 0, "lease held after it was given back");
    this.holders++;
  }

  drop(): void {
    assert(this.holders > 0, "lease dropped more often than held");
    if (--this.holders === 0) this.recycle(this.buffer);
  }

  /** A release callback for a sink write: holds now, drops when called (once). */
  holdFor(): () => void {
    this.hold();
    let dropped = false;
    return () => {
      if (dropped) return;
      dropped = true;
      this.drop();
    };
  }

  /** For tests and assertions. */
  get held(): number {
    return this.holders;
  }
}

/**
 * Who gives a WRITE buffer back once nothing refers to it: the caller's `recycle` for a
 * handed-over buffer, the engine's copy pool (engine/write-copies.ts) for a pooled copy; null
 * leaves the buffer to the garbage collector.
 */
export function leaseFor(request: Request, data: Uint8Array | null, copies: WriteCopies): Lease | null {
  if (data === null) return null;
  if (request.handOver === true) return request.recycle === undefined ? null : new Lease(data, request.recycle);
  return copies.owns(data) ? new Lease(data, (buffer) => copies.give(buffer)) : null;
}
