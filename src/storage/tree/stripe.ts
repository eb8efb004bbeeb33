/**
 * @module storage/tree/stripe — RAID-0 over N legs with a chunk size C (md raid0, dm-stripe):
 * chunk k of the node is chunk ⌊k/N⌋ of leg k mod N. A request is split by chunk; because
 * consecutive chunks of one leg are contiguous on that leg, every leg gets at most ONE
 * contiguous range per request, so a request becomes at most N leg requests. When a leg's
 * range is one piece of the caller's buffer it is passed as a subarray (no copy); only a leg
 * that gets several chunks of one request needs its pieces gathered (write) or scattered
 * (read) through a bounce buffer. Completions are joined: the first error wins.
 *
 * Size: N × ⌊smallest leg / C⌋ × C when it opens, then fixed (a remote leg whose export grows
 * does not grow the stripe under its clients). `chunkBytes` must be a multiple of every leg's
 * block size.
 *
 * Growing (`dstd resize`, docs/tree.md "Growing a stripe"): the mapping does not depend on the
 * size, so a stripe grows by whole rows when every leg grows by the same amount: each leg that
 * is smaller than size/N is resized (a file, a memory disk, a mirror, another stripe, a linear node), any other
 * must already be large enough. The legs grow one at a time, each flushed, the smallest last
 * (a crash during the grow reopens the old size or the new one); only when every leg has room is
 * the new size served. The new range is not zeroed: a grown file reads as zeroes, a larger device shows what it held (as
 * lvextend does; a mirror zeroes its own new range).
 *
 * Must not: hold timers or sockets (pure logic over ports); call a completion twice.
 */
import { Errno } from "../../lib/errno.ts";
import { DstdError } from "../../lib/errors.ts";
import { formatSize } from "../../lib/size.ts";
import { readWithHash, writeWithHold, type BufferHold, type Done, type ExtentsDone, type HashedDone, type StoragePort, type ZeroFlags } from "../port.ts";
import type { Describable, NodeSnapshot } from "./describe.ts";
import { snapshotOf } from "./describe.ts";
import { ExtentCollector } from "./extents.ts";
import { joinCompletions, sequence } from "./join.ts";
import { checkRequest, closeAll, combinedFlags, growRefusal, type GrowRefusal, type TreeLeg } from "./legs.ts";
import { DEFAULT_STRIPE_CHUNK } from "../../config/tree-spec.ts";


/** One leg's share of a request: a contiguous leg range made of `pieces` chunks of the buffer. */
interface Share {
  leg: number;
  legOffset: number;
  length: number;
  /** Offsets into the caller's buffer of each chunk piece, in leg order, with their lengths. */
  at: number[];
  lengths: number[];
}

export class StripePort implements StoragePort, Describable {
  readonly kind = "stripe";
  readonly description: string;
  readonly canMultiConn = true;
  readonly chunkBytes: number;
  private readonly legList: readonly TreeLeg[];
  private readonly flags: ReturnType<typeof combinedFlags>;
  private closed = false;
  /** Rows of N chunks served: fixed at open, changed only by resize. */
  private rows: number;
  private growing = false;

  /** `record`: called with the new size before a resize serves it (the layout record, storage/tree/layout-book.ts); may throw to refuse it. */
  private readonly record: ((size: number) => void) | null;

  constructor(legs: readonly TreeLeg[], chunkBytes: number = DEFAULT_STRIPE_CHUNK, options: { description?: string; record?: (size: number) => void } = {}) {
    if (legs.length < 1) throw new DstdError("E_CONFIG", "stripe needs at least one leg");
    this.flags = combinedFlags(legs.map((leg) => leg.port));
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0 || chunkBytes % this.flags.blockSize !== 0) {
      throw new DstdError("E_CONFIG", `stripe chunk ${chunkBytes} must be a positive multiple of the legs' block size (${this.flags.blockSize})`);
    }
    for (const leg of legs) {
      if (leg.port.size < chunkBytes) {
        throw new DstdError("E_CONFIG", `leg ${leg.label}: ${formatSize(leg.port.size)} is smaller than one stripe chunk (${formatSize(chunkBytes)})`);
      }
    }
    this.legList = legs;
    this.chunkBytes = chunkBytes;
    this.rows = Math.floor(Math.min(...legs.map((leg) => leg.port.size)) / chunkBytes);
    this.record = options.record ?? null;
    this.description = options.description ?? `stripe of ${legs.length} legs, chunk ${formatSize(chunkBytes)}`;
  }

  get size(): number {
    return this.rows * this.chunkBytes * this.legList.length;
  }
  get blockSize(): number {
    return this.flags.blockSize;
  }
  get maxPayload(): number {
    return this.flags.maxPayload;
  }
  get readOnly(): boolean {
    return this.flags.readOnly;
  }
  get canTrim(): boolean {
    return this.flags.canTrim;
  }
  get canZero(): boolean {
    return this.flags.canZero;
  }
  get canFastZero(): boolean {
    return this.flags.canFastZero;
  }
  get canFlush(): boolean {
    return this.flags.canFlush;
  }
  get canBlockStatus(): boolean {
    return this.flags.canBlockStatus;
  }
  get synchronous(): boolean {
    return this.flags.synchronous;
  }

  get legs(): readonly TreeLeg[] {
    return this.legList;
  }

  /** A reload changed the subtree under leg `index` in place: its label follows the configuration. */
  relabel(index: number, label: string): void {
    const leg = this.legList[index];
    if (leg === undefined) throw new DstdError("E_STATE", `the stripe node has no leg ${index}`);
    leg.label = label;
  }

  // ---- growing (module comment) ------------------------------------------------------------

  /** Why resize(size) would be refused now, for the operator (`dstd resize`), or null. */
  resizeProblem(size: number): string | null {
    return this.growProblem(size)?.reason ?? null;
  }

  private growProblem(size: number): GrowRefusal {
    const no = (errno: number, reason: string) => ({ errno, reason });
    const refused = growRefusal({ the: "the stripe", a: "a stripe" }, { closed: this.closed, growing: this.growing }, size, this.size);
    if (refused !== null) return refused;
    const row = this.chunkBytes * this.legList.length;
    if (size % row !== 0) return no(Errno.EINVAL, `a stripe grows by whole rows: ${size} bytes is not a multiple of ${formatSize(row)} (${this.legList.length} legs × ${formatSize(this.chunkBytes)} chunk)`);
    const needed = size / this.legList.length;
    for (const leg of this.legList) {
      if (leg.port.size >= needed) continue;
      if (leg.port.resize === undefined) return no(Errno.ENOSPC, `leg ${leg.label} is ${formatSize(leg.port.size)} and cannot grow; the stripe needs ${formatSize(needed)} of it`);
      const below = leg.port.resizeProblem?.(needed) ?? null;
      if (below !== null) return no(Errno.EBUSY, `leg ${leg.label} cannot grow to ${formatSize(needed)}: ${below}`);
    }
    return null;
  }

  /** Grow to `size` (module comment); `done(0)` once it is served. A failure serves the old size. */
  resize(size: number, done: Done): void {
    const problem = this.growProblem(size);
    if (problem !== null) return done(problem.errno);
    if (size === this.size) return done(0);
    const needed = size / this.legList.length;
    // One leg at a time, each flushed (a file's new size is durable), the smallest last: the
    // stripe reopens with as many rows as its smallest leg holds, so a crash during the grow
    // finds the old size until the last leg has grown, and the new one after.
    const growing = this.legList.filter((leg) => leg.port.size < needed).sort((a, b) => b.port.size - a.port.size);
    this.growing = true;
    let failed = 0;
    sequence(
      growing.length,
      (index, next) => {
        const port = growing[index]!.port;
        port.resize!(needed, (errno) => {
          if (errno !== 0) return (failed = errno), next(false);
          if (port.size < needed) return (failed = Errno.ENOSPC), next(false);
          port.flush((errno) => (errno !== 0 ? ((failed = errno), next(false)) : next(true)));
        });
      },
      () => {
        this.growing = false;
        if (failed !== 0) return done(failed);
        if (this.closed) return done(Errno.ESHUTDOWN);
        try {
          this.record?.(size);
        } catch {
          return done(Errno.EIO);
        }
        this.rows = size / this.chunkBytes / this.legList.length;
        done(0);
      },
    );
  }

  /** Where byte `offset` of the node lives: [leg, offset on that leg]. */
  locate(offset: number): [number, number] {
    const n = this.legList.length;
    const chunk = Math.floor(offset / this.chunkBytes);
    return [chunk % n, Math.floor(chunk / n) * this.chunkBytes + (offset % this.chunkBytes)];
  }

  read(offset: number, into: Uint8Array, done: Done): void {
    const invalid = checkRequest("read", offset, into.length, this);
    if (invalid !== 0) return done(invalid);
    if (into.length === 0) return done(0);
    const shares = this.shares(offset, into.length);
    const join = joinCompletions(shares.length + 1, done);
    for (const share of shares) {
      const port = this.legList[share.leg]!.port;
      if (share.at.length === 1) {
        port.read(share.legOffset, into.subarray(share.at[0]!, share.at[0]! + share.length), join);
        continue;
      }
      const bounce = new Uint8Array(share.length);
      port.read(share.legOffset, bounce, (errno) => {
        if (errno === 0) scatter(bounce, share, into);
        join(errno);
      });
    }
    join(0);
  }

  /** A read that is one piece of one leg (within a chunk) passes that leg's hash through. */
  readHashed(offset: number, into: Uint8Array, done: HashedDone): void {
    const invalid = checkRequest("read", offset, into.length, this);
    if (invalid !== 0) return done(invalid, null);
    if (into.length > 0 && Math.floor(offset / this.chunkBytes) === Math.floor((offset + into.length - 1) / this.chunkBytes)) {
      const [leg, legOffset] = this.locate(offset);
      return readWithHash(this.legList[leg]!.port, legOffset, into, done);
    }
    this.read(offset, into, (errno) => done(errno, null));
  }

  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    this.writeShares(offset, data, fua, null, done);
  }

  /**
   * A handed-over buffer (storage/port.ts BufferHold): a leg's share that is one piece of it
   * is handed over as a subarray; a gathered share is a buffer of this node's (plain write). A
   * write that is one leg's share whole passes the data's XXH3-64 on.
   */
  writeHandedOver(offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done, xxh3?: bigint): void {
    this.writeShares(offset, data, fua, hold, done, xxh3);
  }

  private writeShares(offset: number, data: Uint8Array, fua: boolean, hold: BufferHold | null, done: Done, xxh3?: bigint): void {
    const invalid = checkRequest("write", offset, data.length, this);
    if (invalid !== 0) return done(invalid);
    if (data.length === 0) return done(0);
    const shares = this.shares(offset, data.length);
    const join = joinCompletions(shares.length + 1, done);
    for (const share of shares) {
      const port = this.legList[share.leg]!.port;
      if (share.at.length === 1) {
        const payload = data.subarray(share.at[0]!, share.at[0]! + share.length);
        if (hold !== null) writeWithHold(port, share.legOffset, payload, fua, hold, join, payload.length === data.length ? xxh3 : undefined);
        else port.write(share.legOffset, payload, fua, join);
      } else port.write(share.legOffset, gather(data, share), fua, join);
    }
    join(0);
  }

  trim(offset: number, length: number, fua: boolean, done: Done): void {
    const invalid = checkRequest("trim", offset, length, this);
    if (invalid !== 0) return done(invalid);
    this.each(offset, length, done, (port, share, piece) => port.trim(share.legOffset, share.length, fua, piece));
  }

  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    const invalid = checkRequest("zero", offset, length, this);
    if (invalid !== 0) return done(invalid);
    this.each(offset, length, done, (port, share, piece) => port.zero(share.legOffset, share.length, flags, piece));
  }

  flush(done: Done): void {
    const legs = this.legList.filter((leg) => leg.port.canFlush);
    const join = joinCompletions(legs.length + 1, done);
    for (const leg of legs) leg.port.flush(join);
    join(0);
  }

  /**
   * Walk chunk by chunk (each chunk is one leg call), merging equal runs. At most
   * 2 × maxExtents chunk calls: a walk over a huge, fully fragmented range stops early
   * (a short walk is allowed) instead of costing one call per chunk of the disk.
   */
  extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
    const invalid = checkRequest("block-status", offset, length, this);
    if (invalid !== 0) return done(invalid, null);
    const limit = Math.max(1, maxExtents);
    const firstChunk = Math.floor(offset / this.chunkBytes);
    const lastChunk = length === 0 ? firstChunk - 1 : Math.floor((offset + length - 1) / this.chunkBytes);
    const calls = Math.min(lastChunk - firstChunk + 1, 2 * limit);
    const collector = new ExtentCollector(limit);
    let failed = 0;
    sequence(
      calls,
      (i, next) => {
        const chunkStart = Math.max(offset, (firstChunk + i) * this.chunkBytes);
        const chunkEnd = Math.min(offset + length, (firstChunk + i + 1) * this.chunkBytes);
        const [leg, legOffset] = this.locate(chunkStart);
        this.legList[leg]!.port.extents(legOffset, chunkEnd - chunkStart, limit - collector.extents.length + 1, (errno, walk) => {
          if (errno !== 0 || walk === null) {
            failed = errno || Errno.EIO;
            return next(false);
          }
          collector.add(walk, chunkEnd - chunkStart);
          next(!collector.full);
        });
      },
      () => (failed !== 0 && collector.covered === 0 ? done(failed, null) : done(0, collector.extents)),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await closeAll(this.legList.map((leg) => leg.port));
  }

  describe(): NodeSnapshot {
    return {
      kind: this.kind,
      description: this.description,
      sizeBytes: this.size,
      chunkBytes: this.chunkBytes,
      legs: this.legList.map((leg, index) => ({ index, label: leg.label, state: "ok", node: snapshotOf(leg.port) })),
    };
  }

  /** Split [offset, offset+length) into one contiguous share per leg touched. */
  private shares(offset: number, length: number): Share[] {
    const n = this.legList.length;
    const byLeg: (Share | undefined)[] = new Array(n);
    const out: Share[] = [];
    let at = 0;
    while (at < length) {
      const position = offset + at;
      const [leg, legOffset] = this.locate(position);
      const piece = Math.min(length - at, this.chunkBytes - (position % this.chunkBytes));
      let share = byLeg[leg];
      if (share === undefined) {
        share = { leg, legOffset, length: 0, at: [], lengths: [] };
        byLeg[leg] = share;
        out.push(share);
      }
      share.at.push(at);
      share.lengths.push(piece);
      share.length += piece;
      at += piece;
    }
    return out;
  }

  /**
   * Each leg's contiguous range of [offset, offset+length), computed from the first and last
   * chunk of the range on that leg (no per-chunk work: a trim of the whole disk is N calls).
   */
  legRanges(offset: number, length: number): { leg: number; legOffset: number; length: number }[] {
    const n = this.legList.length;
    const c = this.chunkBytes;
    const end = offset + length;
    const k0 = Math.floor(offset / c);
    const k1 = Math.floor((end - 1) / c);
    const out: { leg: number; legOffset: number; length: number }[] = [];
    for (let j = 0; j < n; j++) {
      const first = k0 + ((((j - (k0 % n)) % n) + n) % n);
      if (first > k1) continue;
      const last = k1 - (((((k1 % n) - j) % n) + n) % n);
      const legStart = this.locate(Math.max(offset, first * c))[1];
      const legEnd = this.locate(Math.min(end, (last + 1) * c) - 1)[1] + 1;
      out.push({ leg: j, legOffset: legStart, length: legEnd - legStart });
    }
    return out;
  }

  private each(offset: number, length: number, done: Done, run: (port: StoragePort, range: { legOffset: number; length: number }, piece: Done) => void): void {
    if (length === 0) return done(0);
    const ranges = this.legRanges(offset, length);
    const join = joinCompletions(ranges.length + 1, done);
    for (const range of ranges) run(this.legList[range.leg]!.port, range, join);
    join(0);
  }
}

function gather(data: Uint8Array, share: Share): Uint8Array {
  const out = new Uint8Array(share.length);
  let position = 0;
  for (let i = 0; i < share.at.length; i++) {
    const at = share.at[i]!;
    const n = share.lengths[i]!;
    out.set(data.subarray(at, at + n), position);
    position += n;
  }
  return out;
}

function scatter(bounce: Uint8Array, share: Share, into: Uint8Array): void {
  let position = 0;
  for (let i = 0; i < share.at.length; i++) {
    const n = share.lengths[i]!;
    into.set(bounce.subarray(position, position + n), share.at[i]!);
    position += n;
  }
}
