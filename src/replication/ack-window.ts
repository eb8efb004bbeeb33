/**
 * @module replication/ack-window — the primary's writes acknowledged before they are durable
 * (docs/replication.md §4): a write without FUA completes once its records are written to the
 * log (page cache), as a disk with a volatile write cache completes it; a later FLUSH waits
 * until every write acknowledged before it is durable and written back (NBD proto.md
 * "Ordering of messages and writes": a write is durable only after a FLUSH that follows its
 * completion, or with FUA). The disk below still receives a write only once its record is
 * durable (a crash must never leave the disk holding a write the log lost: no secondary would
 * ever receive it), so until then reads are served from here, over the disk.
 *
 * What it holds, each with a bound: those writes' data (the write-back needs it after the
 * completion) — the caller's own buffer when it was handed over (storage/port.ts BufferHold:
 * held, not copied, until the write left the window and no read overlays it), else a copy,
 * since the caller recycles its buffer at the completion; at most `maxBytes` in use, and
 * `maxBytes` of copies kept for reuse (a fresh allocation per write cost more than the log
 * itself: docs/replication.md §9); at most `maxOps` writes (the primary's write-back queue and
 * this window are scanned per completion and per read); the FLUSHes waiting, one entry per
 * FLUSH in flight (the fronts bound those).
 *
 * Epochs: each FLUSH starts a new epoch; a write acknowledged in epoch e counts there until
 * written back; a FLUSH of epoch E may proceed once no write of an epoch < E is left.
 *
 * Must not: let a FLUSH proceed while a write acknowledged before it is not written back;
 * reuse a copy, or drop the hold on a handed-over buffer, that a record, a write-back or a
 * read still uses.
 */
import type { BufferHold, Done, Extent } from "../storage/port.ts";

export const DEFAULT_ACK_WINDOW_BYTES = 16 << 20;
export const DEFAULT_ACK_WINDOW_OPS = 2048;

/** One write in the window. */
export interface WindowWrite {
  readonly offset: number;
  readonly end: number;
  /** Its data (what the log and the write-back use): the caller's handed-over buffer or a copy. */
  readonly data: Uint8Array;
  /** The hold on the caller's buffer when `data` is that buffer (null: `data` is our copy). */
  readonly hold: BufferHold | null;
  acked: boolean;
  epoch: number;
  /** Reads overlaying it right now: the copy is reused only after them. */
  readers: number;
  gone: boolean;
}

export class AckWindow {
  /** In the window, in log order (entered in sequence order). */
  private readonly writes: WindowWrite[] = [];
  private bytesValue = 0;
  private epoch = 0;
  /** Writes acknowledged per epoch, not yet written back (insertion order = epoch order). */
  private readonly pending = new Map<number, number>();
  private readonly gates: { epoch: number; done: Done }[] = [];
  /** Copies kept for reuse, by exact length; `pooled` bytes in all. */
  private readonly free = new Map<number, Uint8Array[]>();
  private pooled = 0;

  constructor(
    readonly maxBytes: number = DEFAULT_ACK_WINDOW_BYTES,
    readonly maxOps: number = DEFAULT_ACK_WINDOW_OPS,
  ) {}

  /** Writes in the window (acknowledged or about to be) and their bytes. */
  get ops(): number {
    return this.writes.length;
  }
  get bytes(): number {
    return this.bytesValue;
  }

  /**
   * Takes a write at `offset` into the window, or null when it does not fit (it then completes
   * once durable). With `hold` (the caller handed `data` over) the window keeps `data` itself
   * under a hold of its own; without, a copy of it.
   */
  enter(offset: number, data: Uint8Array, hold: BufferHold | null = null): WindowWrite | null {
    if (this.writes.length >= this.maxOps || this.bytesValue + data.length > this.maxBytes) return null;
    this.bytesValue += data.length;
    if (hold !== null) {
      hold.hold();
      const write: WindowWrite = { offset, end: offset + data.length, data, hold, acked: false, epoch: 0, readers: 0, gone: false };
      this.writes.push(write);
      return write;
    }
    const list = this.free.get(data.length);
    let copy = list?.pop();
    if (copy !== undefined) {
      this.pooled -= copy.length;
      if (list!.length === 0) this.free.delete(data.length);
    } else {
      copy = new Uint8Array(data.length);
    }
    copy.set(data);
    const write: WindowWrite = { offset, end: offset + data.length, data: copy, hold: null, acked: false, epoch: 0, readers: 0, gone: false };
    this.writes.push(write);
    return write;
  }

  /** The write is being acknowledged (its records are written). */
  acknowledged(write: WindowWrite): void {
    write.acked = true;
    write.epoch = this.epoch;
    this.pending.set(this.epoch, (this.pending.get(this.epoch) ?? 0) + 1);
  }

  /**
   * The write left the window: written back, or failed before its acknowledgement. Runs the
   * FLUSHes it was holding, in order, through `proceed`.
   */
  leave(write: WindowWrite, proceed: (done: Done) => void): void {
    if (write.gone) return;
    write.gone = true;
    this.writes.splice(this.writes.indexOf(write), 1);
    this.bytesValue -= write.data.length;
    if (write.readers === 0) this.letGo(write);
    if (!write.acked) return;
    const left = this.pending.get(write.epoch)! - 1;
    if (left > 0) this.pending.set(write.epoch, left);
    else this.pending.delete(write.epoch);
    let oldest = Infinity;
    for (const e of this.pending.keys()) {
      oldest = e;
      break;
    }
    while (this.gates.length > 0 && this.gates[0]!.epoch <= oldest) proceed(this.gates.shift()!.done);
  }

  /** A FLUSH: false when nothing acknowledged is pending (proceed now); else it waits (true). */
  hold(done: Done): boolean {
    if (this.pending.size === 0) return false;
    this.gates.push({ epoch: ++this.epoch, done });
    return true;
  }

  /**
   * Reads [offset, +into.length): `below` fills `into` from the disk, then the writes of the
   * window over it are laid on top in log order. A write written back meanwhile is laid on
   * top too (same bytes); a later overlapping mutation reaches the disk only after it, so no
   * write acknowledged before this read is missed.
   */
  read(offset: number, into: Uint8Array, below: (done: Done) => void, done: Done): void {
    const end = offset + into.length;
    const over = this.writes.filter((w) => w.offset < end && offset < w.end);
    if (over.length === 0) return below(done);
    for (const w of over) w.readers++;
    below((errno) => {
      for (const w of over) {
        if (errno === 0) {
          const from = Math.max(offset, w.offset);
          const to = Math.min(end, w.end);
          into.set(w.data.subarray(from - w.offset, to - w.offset), from - offset);
        }
        if (--w.readers === 0 && w.gone) this.letGo(w);
      }
      done(errno);
    });
  }

  /** The disk's allocation map from `offset`, with any extent under a write of the window (not on the disk yet) reported as data. */
  extents(offset: number, extents: Extent[]): Extent[] {
    if (this.writes.length === 0) return extents;
    let at = offset;
    return extents.map((e) => {
      const start = at;
      at += e.length;
      if (!e.hole && !e.zero) return e;
      return this.writes.some((w) => w.offset < at && start < w.end) ? { length: e.length, hole: false, zero: false } : e;
    });
  }

  /** Fails every waiting FLUSH (the layer closes). */
  close(errno: number): void {
    for (const gate of this.gates.splice(0)) gate.done(errno);
    this.free.clear();
    this.pooled = 0;
  }

  /** Nothing uses the write's data any more: the caller's buffer goes back, a copy is kept for reuse. */
  private letGo(write: WindowWrite): void {
    if (write.hold !== null) write.hold.drop();
    else this.reuse(write.data);
  }

  private reuse(copy: Uint8Array): void {
    if (this.pooled + copy.length > this.maxBytes) return;
    let list = this.free.get(copy.length);
    if (list === undefined) {
      list = [];
      this.free.set(copy.length, list);
    }
    list.push(copy);
    this.pooled += copy.length;
  }
}
