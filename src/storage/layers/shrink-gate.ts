/**
 * @module storage/layers/shrink-gate — the top layer of every export's port (daemon/export-node.ts),
 * so that `dstd resize --allow-shrink` without `--force` refuses a shrink while data lies past
 * the new end (docs/status.md "dstd resize") and never cuts a write it acknowledged. Looking
 * at the tail first and cutting after is not enough: a mutation in flight below while the
 * allocation map is read (a replication primary's write waits for its log record to be durable;
 * a Ceph or remote port answers later) lands and is acknowledged after the map said "hole",
 * and one arriving between the map and the cut is acknowledged and then cut too.
 *
 * So a checked shrink runs in order — after a first look at the map, unfenced, which refuses a
 * tail holding data at once without disturbing its writers: `fence(size)` refuses every mutation reaching past `size`
 * from now on (with the out-of-range errno, storage/validate.ts — the export is being shrunk
 * there) and waits until every mutation that started below before the fence has completed;
 * then `tailData` reads the map of the tail, in as many walks as it takes; the resize runs
 * only if the tail is empty, and the fence is lifted once it has (the port below then refuses
 * the cut range by its size). A refused shrink lifts the fence: the tail takes writes again.
 *
 * Cost on the data path: one comparison per mutation; a completion wrapper only for a
 * mutation that does not complete before it returns (never for a synchronous port's READ or
 * WRITE): those are the ones a fence waits for. Timing is unchanged, so `synchronous` and
 * `inlineUpTo` are the port below's, and buffers are passed down as they come
 * (`writeHandedOver`, `writeDataCopied`).
 *
 * Must not: hold a request (a refusal completes at once), or let a checked shrink start
 * before the previous one is lifted (one at a time: `fence` queues them).
 */
import { Errno, errnoMessage } from "../../lib/errno.ts";
import { formatSize } from "../../lib/size.ts";
import { completesInline, MAX_EXTENTS, type BufferHold, type Done, type ExtentsDone, type StoragePort, type ZeroFlags } from "../port.ts";
import { rangeRefusal } from "../validate.ts";
import { PassThrough } from "./pass-through.ts";

export class ShrinkGate extends PassThrough {
  /** Mutations reaching past this are refused (Infinity: no shrink being checked). */
  private fenceAt = Infinity;
  /**
   * Mutations below that did not complete before returning, by the parity of the fence epoch
   * they started in: a fence turns the epoch and waits for the other parity to reach 0.
   * Fences take turns; one that gave up waiting (`patience`) leaves its parity's stragglers
   * counted, so the fence after the next waits for them too (never for less than its own).
   */
  private readonly running = [0, 0];
  private epoch = 0;
  /** The parity a fence waits to drain (-1: none), and its wake-up. */
  private waiting = -1;
  private drained: (() => void) | null = null;
  /** The checked shrink before this one: the next fence starts once it is lifted. */
  private turn: Promise<void> = Promise.resolve();

  get inlineUpTo(): number | undefined {
    return this.next.inlineUpTo;
  }
  override get writeDataCopied(): boolean {
    return this.next.writeDataCopied === true;
  }
  override get writeHandedOver(): StoragePort["writeHandedOver"] {
    return this.next.writeHandedOver === undefined ? undefined : this.handedOver;
  }

  /**
   * Refuse mutations past `size` and wait for every mutation already below to complete; the
   * function it resolves with lifts the fence (call it once, after the resize or the refusal).
   * Null, the fence lifted, if `patience` ends first (a mutation below that does not complete).
   */
  async fence(size: number, patience?: Promise<void>): Promise<(() => void) | null> {
    const previous = this.turn;
    let free = (): void => {};
    this.turn = new Promise<void>((resolve) => (free = resolve));
    await previous;
    this.fenceAt = size;
    const before = this.epoch & 1;
    this.epoch++;
    let lifted = false;
    const lift = (): void => {
      if (lifted) return;
      lifted = true;
      this.fenceAt = Infinity;
      free();
    };
    if (this.running[before]! > 0) {
      this.waiting = before;
      const drained = new Promise<boolean>((resolve) => (this.drained = () => resolve(true)));
      const done = await (patience === undefined ? drained : Promise.race([drained, patience.then(() => false)]));
      this.waiting = -1;
      this.drained = null;
      if (!done) return (lift(), null);
    }
    return lift;
  }

  /**
   * Shrink to `size` through `resize` (which resizes this gate's port: the export server's
   * resize, which also tells the clients) unless data lies past `size`: null once resized, or
   * what lies there (tailData) with nothing resized — or, when `patience` ends before the
   * mutations under way complete, why nothing was resized. A failed resize rejects.
   */
  async shrinkIfEmpty(size: number, resize: () => Promise<void>, patience?: Promise<void>): Promise<string | null> {
    // A tail that holds data now is refused without a fence: writes to it go on undisturbed.
    const found = await tailData(this, size, this.size);
    if (found !== null) return found;
    const lift = await this.fence(size, patience);
    if (lift === null) return "mutations under way did not complete in time, so what they put there is unknown (try again)";
    try {
      const data = await tailData(this, size, this.size);
      if (data === null) await resize();
      return data;
    } finally {
      lift();
    }
  }

  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    if (offset + data.length > this.fenceAt) return done(rangeRefusal("write", offset, data.length, this.fenceAt));
    if (completesInline(this.next, data.length)) return this.next.write(offset, data, fua, done);
    this.next.write(offset, data, fua, this.track(done));
  }
  private readonly handedOver = (offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done, xxh3?: bigint): void => {
    if (offset + data.length > this.fenceAt) return done(rangeRefusal("write", offset, data.length, this.fenceAt));
    const next = this.next;
    if (completesInline(next, data.length)) return next.writeHandedOver!(offset, data, fua, hold, done, xxh3);
    next.writeHandedOver!(offset, data, fua, hold, this.track(done), xxh3);
  };
  override trim(offset: number, length: number, fua: boolean, done: Done): void {
    if (offset + length > this.fenceAt) return done(rangeRefusal("trim", offset, length, this.fenceAt));
    this.next.trim(offset, length, fua, this.track(done));
  }
  override zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    if (offset + length > this.fenceAt) return done(rangeRefusal("zero", offset, length, this.fenceAt));
    this.next.zero(offset, length, flags, this.track(done));
  }

  private track(done: Done): Done {
    const parity = this.epoch & 1;
    this.running[parity]!++;
    return (errno) => {
      if (--this.running[parity]! === 0 && parity === this.waiting) this.drained?.();
      done(errno);
    };
  }
}

/**
 * What lies in [from, to) of `port`, for the operator: null when its map shows only holes and
 * zeroes (or the range is empty); otherwise where the first data is, or why the map could not be read (then the data
 * is unknown, so a shrink is refused too). Walks the map in as many calls as it takes: one
 * answer may stop after MAX_EXTENTS runs.
 */
export async function tailData(port: StoragePort, from: number, to: number): Promise<string | null> {
  let at = from;
  while (at < to) {
    const [errno, extents] = await new Promise<Parameters<ExtentsDone>>((resolve) => port.extents(at, to - at, MAX_EXTENTS, (...answer) => resolve(answer)));
    if (errno !== 0 || extents === null) return `its allocation map past ${formatSize(from)} could not be read (${errnoMessage(errno || Errno.EIO)})`;
    let walked = 0;
    for (const extent of extents) {
      if (!extent.hole && !extent.zero) return `data at offset ${at + walked}`;
      walked += extent.length;
    }
    if (walked <= 0) return `its allocation map past ${formatSize(at)} came back empty`;
    at += walked;
  }
  return null;
}
