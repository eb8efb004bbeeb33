/**
 * @module storage/tree/linear — concatenation (DST's "linear" mapping, dm-linear): leg i
 * holds the bytes [start_i, start_i + length_i) of the node. A request crossing a leg
 * boundary is split and its completions joined. `append` adds a leg at the end while I/O
 * runs: the node's size grows at once (storage/port.ts: callers read `size` per request).
 *
 * Each leg contributes its size rounded down to the node's block size (the largest leg
 * block size at construction), so every leg starts block-aligned; a later leg may not have
 * a larger block size than that. A leg's contribution is fixed when it is added: a leg that
 * grows later does not shift the legs after it — across restarts too, when the node opens
 * with the `lengths` its layout record gave (storage/tree/tree-layout.ts), and every change
 * of the layout is handed to `record` before it is served (storage/tree/layout-book.ts).
 *
 * `resize` grows the node by growing its last leg (nothing follows it, so nothing moves); a
 * linear node does not shrink.
 *
 * Must not: hold timers or sockets (pure logic over ports); call a completion twice.
 */
import { Errno } from "../../lib/errno.ts";
import { DstdError } from "../../lib/errors.ts";
import { formatSize } from "../../lib/size.ts";
import type { LayoutEntry } from "./tree-layout.ts";
import { readWithHash, writeWithHold, type BufferHold, type Done, type ExtentsDone, type HashedDone, type StoragePort, type ZeroFlags } from "../port.ts";
import type { Describable, NodeSnapshot } from "./describe.ts";
import { snapshotOf } from "./describe.ts";
import { ExtentCollector } from "./extents.ts";
import { joinCompletions, sequence } from "./join.ts";
import { checkRequest, closeAll, combinedFlags, growRefusal, type GrowRefusal, type TreeLeg } from "./legs.ts";

interface Placed extends TreeLeg {
  start: number;
  length: number;
}

type Piece = (port: StoragePort, legOffset: number, at: number, length: number, done: Done) => void;

export class LinearPort implements StoragePort, Describable {
  readonly kind = "linear";
  readonly description: string;
  readonly canMultiConn = true;
  private readonly placed: Placed[] = [];
  private readonly unit: number;
  private total = 0;
  private flags: ReturnType<typeof combinedFlags>;
  private closed = false;
  private growing = false;
  private readonly record: ((layout: LayoutEntry[]) => void) | null;

  /**
   * `lengths`: what each leg contributes (storage/tree/tree-layout.ts placeLegs), each at most
   * its leg's size and whole blocks; by default each leg's size. `record` is called with the new
   * layout before a change (append, resize) is served, and may throw to refuse it; the opener
   * records the first layout itself.
   */
  constructor(legs: readonly TreeLeg[], options: { description?: string; lengths?: readonly number[]; record?: (layout: LayoutEntry[]) => void } = {}) {
    if (legs.length === 0) throw new DstdError("E_CONFIG", "linear needs at least one leg");
    this.unit = LinearPort.unitOf(legs);
    this.flags = combinedFlags(legs.map((leg) => leg.port));
    this.record = null;
    for (const [i, leg] of legs.entries()) {
      const length = options.lengths?.[i];
      if (length !== undefined && (length % this.unit !== 0 || length > leg.port.size)) throw new DstdError("E_CONFIG", `leg ${leg.label}: a place of ${length} bytes does not fit it`);
      this.append(leg, length);
    }
    this.record = options.record ?? null;
    this.description = options.description ?? `linear of ${legs.length} legs`;
  }

  /** The block size a linear node over `legs` has: the largest of theirs, at least 512. */
  static unitOf(legs: readonly TreeLeg[]): number {
    return Math.max(512, ...legs.map((leg) => leg.port.blockSize));
  }

  /** Each leg's label and the bytes it holds, in order (the layout record). */
  layout(): LayoutEntry[] {
    return this.placed.map((p) => ({ label: p.label, bytes: p.length }));
  }

  get size(): number {
    return this.total;
  }
  get blockSize(): number {
    return this.unit;
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

  /** The legs in order with where each starts (status, tests). */
  get legs(): readonly { label: string; start: number; length: number; port: StoragePort }[] {
    return this.placed;
  }

  /** A reload changed the subtree under leg `index` in place: its label follows the configuration. */
  relabel(index: number, label: string): void {
    const leg = this.placed[index];
    if (leg === undefined) throw new DstdError("E_STATE", `the linear node has no leg ${index}`);
    leg.label = label;
  }

  /**
   * Add a leg at the end; the node grows by the leg's size (rounded down to the block size)
   * at once. Throws DstdError (E_CONFIG) when the leg cannot be placed.
   */
  append(leg: TreeLeg, place?: number): void {
    if (this.closed) throw new DstdError("E_CLOSED", "linear node is closed");
    if (this.growing) throw new DstdError("E_BUSY", "the linear node is being resized");
    const problem = this.appendProblem(leg);
    if (problem !== null) throw new DstdError("E_CONFIG", problem);
    const length = place ?? Math.floor(leg.port.size / this.unit) * this.unit;
    this.record?.([...this.layout(), { label: leg.label, bytes: length }]);
    this.placed.push({ ...leg, start: this.total, length });
    this.total += length;
    this.flags = combinedFlags(this.placed.map((p) => p.port));
  }

  /** Why `leg` cannot be appended (a larger block size, smaller than one block), or null. */
  appendProblem(leg: TreeLeg): string | null {
    if (leg.port.blockSize > this.unit) return `leg ${leg.label}: block size ${leg.port.blockSize} is larger than the linear node's ${this.unit}`;
    if (leg.port.size < this.unit) return `leg ${leg.label}: ${formatSize(leg.port.size)} is smaller than one ${this.unit}-byte block`;
    return null;
  }

  // ---- growing (module comment) ------------------------------------------------------------

  /** Why resize(size) would be refused now, for the operator (`dstd resize`), or null. */
  resizeProblem(size: number): string | null {
    return this.growProblem(size)?.reason ?? null;
  }

  private growProblem(size: number): GrowRefusal {
    const no = (errno: number, reason: string) => ({ errno, reason });
    const refused = growRefusal({ the: "the linear node", a: "a linear node" }, { closed: this.closed, growing: this.growing }, size, this.total);
    if (refused !== null) return refused;
    if (size % this.unit !== 0) return no(Errno.EINVAL, `a linear node grows by whole ${this.unit}-byte blocks: ${size} bytes is not a multiple`);
    const last = this.placed[this.placed.length - 1]!;
    const needed = last.length + (size - this.total);
    if (last.port.size >= needed) return null;
    if (last.port.resize === undefined) {
      return no(Errno.ENOSPC, `its last leg ${last.label} is ${formatSize(last.port.size)} and cannot grow to ${formatSize(needed)}; append a leg instead (docs/tree.md "Growing a linear export")`);
    }
    const below = last.port.resizeProblem?.(needed) ?? null;
    if (below !== null) return no(Errno.EBUSY, `its last leg ${last.label} cannot grow to ${formatSize(needed)}: ${below}`);
    return null;
  }

  /**
   * Grow to `size` by growing the last leg (module comment); `done(0)` once it is served. The
   * leg is flushed (a file's new size is durable) and the layout recorded before the new size
   * is served; a failure serves the old size.
   */
  resize(size: number, done: Done): void {
    const problem = this.growProblem(size);
    if (problem !== null) return done(problem.errno);
    if (size === this.total) return done(0);
    const last = this.placed[this.placed.length - 1]!;
    const needed = last.length + (size - this.total);
    this.growing = true;
    const serve = (errno: number) => {
      this.growing = false;
      if (errno !== 0) return done(errno);
      if (this.closed) return done(Errno.ESHUTDOWN);
      if (last.port.size < needed) return done(Errno.ENOSPC);
      try {
        this.record?.(this.layout().map((e, i) => (i === this.placed.length - 1 ? { ...e, bytes: needed } : e)));
      } catch {
        return done(Errno.EIO);
      }
      this.total += needed - last.length;
      last.length = needed;
      done(0);
    };
    if (last.port.size >= needed) return serve(0);
    last.port.resize!(needed, (errno) => {
      if (errno !== 0) return serve(errno);
      if (!last.port.canFlush) return serve(0);
      last.port.flush(serve);
    });
  }

  read(offset: number, into: Uint8Array, done: Done): void {
    const invalid = checkRequest("read", offset, into.length, this);
    if (invalid !== 0) return done(invalid);
    this.split(offset, into.length, done, (port, legOffset, at, length, piece) => port.read(legOffset, into.subarray(at, at + length), piece));
  }

  /** A read within one leg passes that leg's hash through; one spanning legs has none. */
  readHashed(offset: number, into: Uint8Array, done: HashedDone): void {
    const invalid = checkRequest("read", offset, into.length, this);
    if (invalid !== 0) return done(invalid, null);
    const first = into.length === 0 ? undefined : this.placed[this.find(offset)];
    if (first !== undefined && offset + into.length <= first.start + first.length) return readWithHash(first.port, offset - first.start, into, done);
    this.read(offset, into, (errno) => done(errno, null));
  }

  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    const invalid = checkRequest("write", offset, data.length, this);
    if (invalid !== 0) return done(invalid);
    this.split(offset, data.length, done, (port, legOffset, at, length, piece) => port.write(legOffset, data.subarray(at, at + length), fua, piece));
  }

  /**
   * A handed-over buffer (storage/port.ts BufferHold): its pieces are handed over to the legs
   * that take buffers; a write within one leg passes the data's XXH3-64 on (a piece has another).
   */
  writeHandedOver(offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done, xxh3?: bigint): void {
    const invalid = checkRequest("write", offset, data.length, this);
    if (invalid !== 0) return done(invalid);
    this.split(offset, data.length, done, (port, legOffset, at, length, piece) =>
      writeWithHold(port, legOffset, data.subarray(at, at + length), fua, hold, piece, length === data.length ? xxh3 : undefined),
    );
  }

  trim(offset: number, length: number, fua: boolean, done: Done): void {
    const invalid = checkRequest("trim", offset, length, this);
    if (invalid !== 0) return done(invalid);
    this.split(offset, length, done, (port, legOffset, _at, n, piece) => port.trim(legOffset, n, fua, piece));
  }

  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    const invalid = checkRequest("zero", offset, length, this);
    if (invalid !== 0) return done(invalid);
    this.split(offset, length, done, (port, legOffset, _at, n, piece) => port.zero(legOffset, n, flags, piece));
  }

  flush(done: Done): void {
    const legs = this.placed.filter((p) => p.port.canFlush);
    const join = joinCompletions(legs.length + 1, done);
    for (const leg of legs) leg.port.flush(join);
    join(0);
  }

  extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
    const invalid = checkRequest("block-status", offset, length, this);
    if (invalid !== 0) return done(invalid, null);
    const pieces: { port: StoragePort; legOffset: number; length: number }[] = [];
    this.pieces(offset, length, (leg, legOffset, _at, n) => pieces.push({ port: leg.port, legOffset, length: n }));
    const collector = new ExtentCollector(Math.max(1, maxExtents));
    let failed = 0;
    sequence(
      pieces.length,
      (i, next) => {
        const piece = pieces[i]!;
        piece.port.extents(piece.legOffset, piece.length, Math.max(1, maxExtents - collector.extents.length + 1), (errno, walk) => {
          if (errno !== 0 || walk === null) {
            failed = errno || Errno.EIO;
            return next(false);
          }
          collector.add(walk, piece.length);
          next(!collector.full);
        });
      },
      () => (failed !== 0 && collector.covered === 0 ? done(failed, null) : done(0, collector.extents)),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await closeAll(this.placed.map((p) => p.port));
  }

  describe(): NodeSnapshot {
    return {
      kind: this.kind,
      description: this.description,
      sizeBytes: this.size,
      legs: this.placed.map((p, index) => ({ index, label: p.label, state: "ok", offsetBytes: p.start, sizeBytes: p.length, node: snapshotOf(p.port) })),
    };
  }

  /** Index of the leg holding byte `offset` (offset < size). */
  private find(offset: number): number {
    let low = 0;
    let high = this.placed.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (this.placed[mid]!.start <= offset) low = mid;
      else high = mid - 1;
    }
    return low;
  }

  private pieces(offset: number, length: number, visit: (leg: Placed, legOffset: number, at: number, length: number) => void): number {
    let count = 0;
    let at = 0;
    for (let i = this.find(offset); at < length; i++) {
      const leg = this.placed[i]!;
      const legOffset = offset + at - leg.start;
      const n = Math.min(length - at, leg.length - legOffset);
      visit(leg, legOffset, at, n);
      at += n;
      count++;
    }
    return count;
  }

  private split(offset: number, length: number, done: Done, piece: Piece): void {
    if (length === 0) return done(0);
    const first = this.placed[this.find(offset)]!;
    if (offset + length <= first.start + first.length) return piece(first.port, offset - first.start, 0, length, done);
    let count = 0;
    this.pieces(offset, length, () => count++);
    const join = joinCompletions(count + 1, done);
    this.pieces(offset, length, (leg, legOffset, at, n) => piece(leg.port, legOffset, at, n, join));
    join(0);
  }
}
