/**
 * @module replication/replay-clip — replaying records onto a disk a later RESIZE of the same
 * replay has already shrunk (docs/replication.md §4 "Mutations"). Recovery replays every
 * record after the checkpoint, and the disk may already hold a shrink logged after a mutation
 * that reached past the shrink's end: that part was cut, and the disk refuses it (ENOSPC,
 * EINVAL), which made the restart fail. A record is applied up to the disk's end; what lies
 * past it is owed to a later RESIZE record no larger than the disk was then, which cut it.
 * A replay that ends still owing fails, naming the record: the disk is smaller than the log
 * says, and dropping data silently is never right.
 *
 * Must not: drop any part of a record that no later shrink cut.
 */

export class ReplayClip {
  /** Disk sizes records were clipped at, each with the first record clipped there. */
  private readonly owed = new Map<number, { seq: number; offset: number; length: number }>();

  /** How much of [offset, offset+length) to apply on a disk of `size` bytes; the rest is owed. */
  clip(seq: number, offset: number, length: number, size: number): number {
    if (offset + length <= size) return length;
    if (!this.owed.has(size)) this.owed.set(size, { seq, offset, length });
    return Math.max(0, size - offset);
  }

  /** A RESIZE to `size` was replayed: it cut whatever was owed at a size at least as large. */
  resized(size: number): void {
    for (const at of [...this.owed.keys()]) if (at >= size) this.owed.delete(at);
  }

  /** null, or why the replay must fail: the first record with a part past the end that no later shrink cut. */
  unpaid(): string | null {
    let first: { seq: number; offset: number; length: number; size: number } | null = null;
    for (const [size, record] of this.owed) if (first === null || record.seq < first.seq) first = { ...record, size };
    if (first === null) return null;
    return `record seq ${first.seq} (${first.length} B at offset ${first.offset}) lies past the disk's end (${first.size} bytes) and no later RESIZE record cuts it`;
  }
}
