/**
 * @module engine/replay-log — acknowledged writes not yet covered by a successful FLUSH.
 *
 * Why: an export acknowledges a plain (non-FUA) write once it is in its page cache. If the
 * export process or machine then dies, that write is gone although the client was told it
 * succeeded — legal under the block-device contract only until the client's next FLUSH
 * returns. So the client keeps each such write until a FLUSH that was *sent after the
 * write's ack* succeeds, and replays the log (in ack order) when it reconnects to an export
 * whose epoch changed. FUA writes are durable at ack and never enter the log.
 *
 * Pure data structure: no I/O, no time.
 */
import { assert } from "../lib/assert.ts";

export interface ReplayEntry {
  /** Monotonic position; a FLUSH covers every entry with seq < its mark. */
  seq: number;
  kind: "write" | "trim" | "zero";
  offset: number;
  length: number;
  /** WRITE data (the client's own copy); null for trim/zero. */
  data: Uint8Array | null;
  noHole: boolean;
}

export class ReplayLog {
  private entries: ReplayEntry[] = [];
  private head = 0;
  private nextSeq = 0;
  private bytesHeld = 0;

  get bytes(): number {
    return this.bytesHeld;
  }

  get size(): number {
    return this.entries.length - this.head;
  }

  /** Record an acknowledged, not-yet-durable mutation. */
  append(kind: ReplayEntry["kind"], offset: number, length: number, data: Uint8Array | null, noHole: boolean): void {
    this.entries.push({ seq: this.nextSeq++, kind, offset, length, data, noHole });
    this.bytesHeld += data ? data.length : 0;
  }

  /**
   * A durable (FUA) mutation of [offset, offset + length) was acknowledged. No older entry may
   * ever be replayed over that range again (it would bury the durable data under older data
   * after an export restart), so the range is cut out of every entry: covered entries go,
   * overlapping ones shrink or split in two (the pieces keep their seq, so release() is
   * unchanged). Linear in the log; FUA usually follows a FLUSH, which leaves the log short.
   */
  supersede(offset: number, length: number): void {
    const end = offset + length;
    let overlaps = false;
    for (let i = this.head; i < this.entries.length && !overlaps; i++) {
      const entry = this.entries[i]!;
      overlaps = entry.offset < end && entry.offset + entry.length > offset;
    }
    if (!overlaps || length === 0) return;
    const kept: ReplayEntry[] = [];
    for (let i = this.head; i < this.entries.length; i++) {
      const entry = this.entries[i]!;
      const entryEnd = entry.offset + entry.length;
      if (entryEnd <= offset || entry.offset >= end) {
        kept.push(entry);
        continue;
      }
      this.bytesHeld -= entry.data ? entry.data.length : 0;
      if (entry.offset < offset) kept.push(this.piece(entry, entry.offset, offset));
      if (entryEnd > end) kept.push(this.piece(entry, end, entryEnd));
    }
    this.entries = kept;
    this.head = 0;
    assert(this.bytesHeld >= 0, "replay byte count went negative");
  }

  private piece(entry: ReplayEntry, from: number, to: number): ReplayEntry {
    const data = entry.data ? entry.data.subarray(from - entry.offset, to - entry.offset) : null;
    this.bytesHeld += data ? data.length : 0;
    return { seq: entry.seq, kind: entry.kind, offset: from, length: to - from, data, noHole: entry.noHole };
  }

  /** The mark a FLUSH takes when it is sent: it will cover everything appended before now. */
  mark(): number {
    return this.nextSeq;
  }

  /** A FLUSH sent at `mark` succeeded: drop every entry it covers. */
  release(mark: number): void {
    assert(mark <= this.nextSeq, "flush mark from the future");
    while (this.head < this.entries.length && this.entries[this.head]!.seq < mark) {
      const entry = this.entries[this.head]!;
      this.bytesHeld -= entry.data ? entry.data.length : 0;
      this.entries[this.head] = undefined as unknown as ReplayEntry;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    assert(this.bytesHeld >= 0, "replay byte count went negative");
  }

  /** Entries to replay, oldest first. */
  pending(): ReplayEntry[] {
    return this.entries.slice(this.head);
  }
}
