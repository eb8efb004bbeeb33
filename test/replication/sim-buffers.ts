/**
 * The simulations' front buffers: a WRITE's data is recycled the moment the port lets go of it
 * (storage/port.ts: at the completion of `write`; once the last BufferHold is dropped for
 * `writeHandedOver`), and recycling scribbles over it. A layer that kept using a buffer it no
 * longer owned (the ack window's handed-over buffers, docs/replication.md §4, §9) then writes
 * garbage the invariants catch, instead of passing because the buffer happened to stay intact.
 *
 * Every other write (by its value, no PRNG draw: the seeds' workloads stay as they were) is
 * handed over where the port takes buffers, with the XXH3-64 a DST export passes along for
 * three of four of those.
 */
import type { BufferHold, Done, StoragePort } from "../../src/storage/port.ts";

/** What recycling writes over a buffer: no workload value is this. */
export const SCRIBBLE = 0xee;

class ScribbledHold implements BufferHold {
  /** The front's own hold, until the completion. */
  private holds = 1;
  constructor(
    private readonly data: Uint8Array,
    private readonly misuse: (why: string) => void,
  ) {}
  hold(): void {
    if (this.holds <= 0) this.misuse("hold() on a buffer already given back");
    this.holds++;
  }
  drop(): void {
    if (this.holds <= 0) return this.misuse("drop() without a hold");
    if (--this.holds === 0) this.data.fill(SCRIBBLE);
  }
}

/** `port.write` or `port.writeHandedOver` of `data` (chosen by `value`); the buffer is scribbled over once free. */
export function writeRecycled(port: StoragePort, offset: number, data: Uint8Array, fua: boolean, value: number, done: Done, misuse: (why: string) => void): void {
  if (port.writeHandedOver !== undefined && value % 2 === 0) {
    const hold = new ScribbledHold(data, misuse);
    const xxh3 = value % 8 === 0 ? undefined : Bun.hash.xxHash3(data);
    port.writeHandedOver(
      offset,
      data,
      fua,
      hold,
      (errno) => {
        done(errno);
        hold.drop();
      },
      xxh3,
    );
    return;
  }
  port.write(offset, data, fua, (errno) => {
    done(errno);
    data.fill(SCRIBBLE);
  });
}
