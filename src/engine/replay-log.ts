/**
 * @module engine/replay-log — acknowledged writes not yet covered by a successful FLUSH.
 *
 * Why: an export acknowledges a plain (non-FUA) write once it is in its page cache. If the
 * export process or machine then dies, that write is gone although the client was told it
 * succeeded — legal under the block-device contract only until the client's next FLUSH
 * returns. So the client keeps each such write until a FLUSH that was *sent after the
 * write's ack* succeeds, and replays the log (in ack order) when it reconnects to an export
 * whose epoch changed. FUA writes are durable at ack and never enter the log; when one is
 * acknowledged it supersedes the overlapping parts of older entries (a replay of an older
 * write must not bury it).
 *
 * Layout, for speed: the log sits on the data path of every write, and keeping one small
 * object and one 4 KiB buffer alive per acknowledged write made the garbage collector the
 * bottleneck (measured: 9.6 → 14–24 µs per 4 KiB write once tens of thousands were held).
 * So entries are columns of numbers, and small writes' data is copied into 4 MiB slabs that
 * are dropped (or recycled) whole once every entry in them is released; FLUSH releases are
 * FIFO, so slabs empty in order. Large writes (≥ 64 KiB) keep a view of the request's own
 * frame instead: few objects, and no copy or fresh pages for bulk data; when that buffer is
 * under a lease (engine/lease.ts), each entry (and each piece a FUA cut leaves) holds it once
 * and drops it when released, so the caller's pool gets it back. pending() builds
 * objects only for a replay, which is rare.
 *
 * Pure data structure: no I/O, no time.
 */
import { assert } from "../lib/assert.ts";
import { Feature } from "../wire/dst/constants.ts";
import type { Lease } from "./lease.ts";

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

const SLAB_BYTES = 4 * 1024 * 1024;
/** Writes at least this large are held by reference, not copied into a slab. */
const BY_REFERENCE_BYTES = 64 * 1024;
/** Emptied slabs kept for reuse (their pages are already faulted in). */
const SPARE_SLABS = 2;
const KINDS: ReplayEntry["kind"][] = ["write", "trim", "zero"];

interface Slab {
  bytes: Uint8Array;
  used: number;
  /** Highest seq with data in this slab: the slab is free once that seq is released. */
  lastSeq: number;
}

export class ReplayLog {
  // One column per field; index i (from `head`) is one entry. Plain number arrays stay packed.
  private seqs: number[] = [];
  private kinds: number[] = [];
  private offsets: number[] = [];
  private lengths: number[] = [];
  private noHoles: number[] = [];
  /** Data location: slab (index into `slabs` + `slabBase`) and byte offset; -1 for no data. */
  private slabIds: number[] = [];
  private slabOffsets: number[] = [];
  /** Data held by reference (large writes); null where the data is in a slab or absent. */
  private refs: Array<Uint8Array | null> = [];
  /** The lease of a `refs` entry's buffer, held once per entry; null when none. */
  private leases: Array<Lease | null> = [];
  private spare: Uint8Array[] = [];
  private head = 0;
  private slabs: Slab[] = [];
  /** Id of slabs[0] (slabs are dropped from the front). */
  private slabBase = 0;
  private nextSeq = 0;
  private bytesHeld = 0;

  get bytes(): number {
    return this.bytesHeld;
  }

  get size(): number {
    return this.seqs.length - this.head;
  }

  /**
   * Record an acknowledged, not-yet-durable mutation; small WRITE data is copied, large data
   * kept by reference (holding `lease`, when given, until the entry is released).
   */
  append(kind: ReplayEntry["kind"], offset: number, length: number, data: Uint8Array | null, noHole: boolean, lease: Lease | null = null): void {
    const seq = this.nextSeq++;
    let slabId = -1;
    let slabOffset = 0;
    let ref: Uint8Array | null = null;
    let held: Lease | null = null;
    if (data !== null && data.length > 0) {
      if (data.length >= BY_REFERENCE_BYTES) {
        ref = data;
        held = lease;
        held?.hold();
      } else [slabId, slabOffset] = this.store(data, seq);
      this.bytesHeld += data.length;
    }
    this.push(seq, KINDS.indexOf(kind), offset, length, noHole ? 1 : 0, slabId, slabOffset, ref, held);
  }

  /**
   * A FUA write, trim or zero of [offset, offset+length) was acknowledged: it is durable, so
   * older unflushed entries must not be replayed over it. Cut the range out of them.
   */
  supersede(offset: number, length: number): void {
    const end = offset + length;
    if (length === 0 || !this.anyOverlap(offset, end)) return;
    const old = this.columns();
    this.resetColumns();
    for (let i = 0; i < old.seqs.length; i++) {
      const from = old.offsets[i]!;
      const to = from + old.lengths[i]!;
      const lease = old.leases[i]!;
      const args = [old.seqs[i]!, old.kinds[i]!, old.noHoles[i]!, old.slabIds[i]!, old.slabOffsets[i]!, old.refs[i]!, lease, from] as const;
      if (to <= offset || from >= end) {
        this.pushPiece(...args, from, to);
        continue;
      }
      if (old.slabIds[i]! >= 0 || old.refs[i] !== null) this.bytesHeld -= to - from;
      // Each piece kept holds the lease once; the entry that was cut lets go of it.
      if (from < offset) this.keepPiece(...args, from, offset);
      if (to > end) this.keepPiece(...args, end, to);
      lease?.drop();
    }
    assert(this.bytesHeld >= 0, "replay byte count went negative");
  }

  /** The mark a FLUSH takes when it is sent: it will cover everything appended before now. */
  mark(): number {
    return this.nextSeq;
  }

  /** A FLUSH sent at `mark` succeeded: drop every entry it covers, and the slabs they emptied. */
  release(mark: number): void {
    assert(mark <= this.nextSeq, "flush mark from the future");
    while (this.head < this.seqs.length && this.seqs[this.head]! < mark) {
      if (this.slabIds[this.head]! >= 0 || this.refs[this.head] !== null) this.bytesHeld -= this.lengths[this.head]!;
      this.refs[this.head] = null;
      this.leases[this.head]?.drop();
      this.leases[this.head] = null;
      this.head++;
    }
    while (this.slabs.length > 1 && this.slabs[0]!.lastSeq < mark) {
      const freed = this.slabs.shift()!;
      if (this.spare.length < SPARE_SLABS && freed.bytes.length === SLAB_BYTES) this.spare.push(freed.bytes);
      this.slabBase++;
    }
    if (this.slabs.length === 1 && this.slabs[0]!.lastSeq < mark && this.size === 0) this.slabs[0]!.used = 0;
    if (this.head > 1024 && this.head * 2 > this.seqs.length) this.compact();
    assert(this.bytesHeld >= 0, "replay byte count went negative");
  }

  /** Entries to replay, oldest first (data are views into the log's slabs). */
  pending(): ReplayEntry[] {
    const out: ReplayEntry[] = [];
    for (let i = this.head; i < this.seqs.length; i++) {
      const slabId = this.slabIds[i]!;
      const length = this.lengths[i]!;
      let data: Uint8Array | null = this.refs[i] ?? null;
      if (slabId >= 0) {
        const at = this.slabOffsets[i]!;
        data = this.slabs[slabId - this.slabBase]!.bytes.subarray(at, at + length);
      }
      out.push({ seq: this.seqs[i]!, kind: KINDS[this.kinds[i]!]!, offset: this.offsets[i]!, length, data, noHole: this.noHoles[i] === 1 });
    }
    return out;
  }

  // ---- internals ----------------------------------------------------------------------

  /** Copy `data` into the current slab (or a new one); returns [slab id, offset]. */
  private store(data: Uint8Array, seq: number): [number, number] {
    let slab = this.slabs[this.slabs.length - 1];
    if (slab === undefined || slab.used + data.length > slab.bytes.length) {
      slab = { bytes: this.spare.pop() ?? new Uint8Array(SLAB_BYTES), used: 0, lastSeq: seq };
      this.slabs.push(slab);
    }
    const at = slab.used;
    slab.bytes.set(data, at);
    slab.used += data.length;
    slab.lastSeq = seq;
    return [this.slabBase + this.slabs.length - 1, at];
  }

  private push(seq: number, kind: number, offset: number, length: number, noHole: number, slabId: number, slabOffset: number, ref: Uint8Array | null, lease: Lease | null): void {
    this.seqs.push(seq);
    this.kinds.push(kind);
    this.offsets.push(offset);
    this.lengths.push(length);
    this.noHoles.push(noHole);
    this.slabIds.push(slabId);
    this.slabOffsets.push(slabOffset);
    this.refs.push(ref);
    this.leases.push(lease);
  }

  /** Re-add an untouched entry (given as its fields and original start `base`); its lease hold moves with it. */
  private pushPiece(
    seq: number, kind: number, noHole: number, slabId: number, slabOffset: number, ref: Uint8Array | null, lease: Lease | null, base: number, from: number, to: number,
  ): void {
    const piece = ref === null ? null : ref.subarray(from - base, to - base);
    this.push(seq, kind, from, to - from, noHole, slabId, slabId >= 0 ? slabOffset + (from - base) : 0, piece, lease);
  }

  /** Keep part [from, to) of an entry that was cut (a new holder of its lease). */
  private keepPiece(
    seq: number, kind: number, noHole: number, slabId: number, slabOffset: number, ref: Uint8Array | null, lease: Lease | null, base: number, from: number, to: number,
  ): void {
    if (slabId >= 0 || ref !== null) this.bytesHeld += to - from;
    lease?.hold();
    this.pushPiece(seq, kind, noHole, slabId, slabOffset, ref, lease, base, from, to);
  }

  private anyOverlap(offset: number, end: number): boolean {
    for (let i = this.head; i < this.seqs.length; i++) {
      const from = this.offsets[i]!;
      if (from < end && from + this.lengths[i]! > offset) return true;
    }
    return false;
  }

  private columns() {
    const h = this.head;
    return {
      seqs: this.seqs.slice(h),
      kinds: this.kinds.slice(h),
      offsets: this.offsets.slice(h),
      lengths: this.lengths.slice(h),
      noHoles: this.noHoles.slice(h),
      slabIds: this.slabIds.slice(h),
      slabOffsets: this.slabOffsets.slice(h),
      refs: this.refs.slice(h),
      leases: this.leases.slice(h),
    };
  }

  private resetColumns(): void {
    this.seqs = [];
    this.kinds = [];
    this.offsets = [];
    this.lengths = [];
    this.noHoles = [];
    this.slabIds = [];
    this.slabOffsets = [];
    this.refs = [];
    this.leases = [];
    this.head = 0;
  }

  private compact(): void {
    const c = this.columns();
    this.seqs = c.seqs;
    this.kinds = c.kinds;
    this.offsets = c.offsets;
    this.lengths = c.lengths;
    this.noHoles = c.noHoles;
    this.slabIds = c.slabIds;
    this.slabOffsets = c.slabOffsets;
    this.refs = c.refs;
    this.leases = c.leases;
    this.head = 0;
  }
}

/**
 * The newest state of every range the entries touch, as entries that do not overlap (oldest
 * first, each cut to the parts no newer entry covers). Replays are sent together and requests
 * in flight at the same time have no order (docs/protocol.md §1 "Pipelining and order"): an
 * export whose storage completes out of order would otherwise let an older replay land on top
 * of a newer one (found by the simulator with an asynchronous port: a replayed TRIM landed
 * after the replayed WRITE of the same block). Only run on a replay, so it may allocate.
 */
export function newestPieces(entries: ReplayEntry[]): ReplayEntry[] {
  // Covered ranges, disjoint and sorted by start: [start0, end0, start1, end1, ...].
  const covered: number[] = [];
  const kept: ReplayEntry[][] = [];
  for (let i = entries.length - 1; i >= 0; i--) {
    const entry = entries[i]!;
    const pieces: ReplayEntry[] = [];
    let at = entry.offset;
    const end = entry.offset + entry.length;
    // First covered range that ends after `at`.
    let lo = 0;
    let hi = covered.length / 2;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (covered[2 * mid + 1]! <= at) lo = mid + 1;
      else hi = mid;
    }
    for (let k = lo; at < end; k++) {
      const start = k < covered.length / 2 ? covered[2 * k]! : Number.POSITIVE_INFINITY;
      if (start > at) pieces.push(piece(entry, at, Math.min(start, end)));
      if (k >= covered.length / 2) break;
      at = Math.max(at, covered[2 * k + 1]!);
    }
    // Add [offset, end) to the covered set, merging what it touches.
    let first = lo;
    while (first > 0 && covered[2 * first - 1]! >= entry.offset) first--;
    let last = first;
    let from = entry.offset;
    let to = end;
    while (last < covered.length / 2 && covered[2 * last]! <= to) {
      from = Math.min(from, covered[2 * last]!);
      to = Math.max(to, covered[2 * last + 1]!);
      last++;
    }
    if (entry.length > 0) covered.splice(2 * first, 2 * (last - first), from, to);
    kept.push(pieces);
  }
  const out: ReplayEntry[] = [];
  for (let i = kept.length - 1; i >= 0; i--) out.push(...kept[i]!);
  return out;
}

/**
 * Replay pieces fitted to the export as it came back: what lies past its end is dropped (an
 * export that restarted smaller cannot take it, and replaying it again and again would hold
 * every request behind the barrier for ever), and writes are cut to its largest payload (a
 * larger one would be a stream error there). `dropped`: the bytes past the end.
 */
export function fitPieces(pieces: ReplayEntry[], size: number, maxPayload: number): { pieces: ReplayEntry[]; dropped: number } {
  const out: ReplayEntry[] = [];
  let dropped = 0;
  for (const entry of pieces) {
    const end = Math.min(entry.offset + entry.length, size);
    dropped += entry.offset + entry.length - Math.max(end, entry.offset);
    if (end <= entry.offset && entry.length > 0) continue;
    const step = entry.kind === "write" ? Math.max(1, maxPayload) : Number.POSITIVE_INFINITY;
    let at = entry.offset;
    do {
      const to = Math.min(end, at + step);
      out.push(piece(entry, at, to));
      at = to;
    } while (at < end);
  }
  return { pieces: out, dropped };
}

/**
 * Most bytes of unflushed WRITE_ZEROES a replay resends as WRITEs of zeros when the export came
 * back without WRITE_ZEROES (below): each costs its length on the wire while the replay barrier
 * holds every other request, so a zeroing of a whole large disk is not turned into one.
 */
export const ZEROES_AS_WRITES_MAX = 1024 * 1024 * 1024;

/** One read-only buffer of zeros the converted pieces share (never written: replays carry no lease). */
let zeros = new Uint8Array(0);
function zeroView(length: number): Uint8Array {
  if (zeros.length < length) zeros = new Uint8Array(length);
  return zeros.subarray(0, length);
}

/** The data a replay sends for `entry`: a copy (the log's slabs may be recycled while it is on the wire), or the shared zeros as they are. */
export function replayData(entry: ReplayEntry): Uint8Array | null {
  if (entry.data === null) return null;
  return entry.data.buffer === zeros.buffer ? entry.data : entry.data.slice();
}

/**
 * What a replay sends: the newest pieces of the log, fitted to the export as it came back (a
 * loss past its end is logged). A TRIM or WRITE_ZEROES its WELCOME no longer grants is not
 * replayed as such (the export would refuse it, and the replay would be sent again for ever,
 * holding every request behind the barrier). TRIM is advisory (docs/protocol.md §4): it is
 * left out, nothing is lost. WRITE_ZEROES is not: an acknowledged zeroing must read back as
 * zeros, so it is resent as WRITEs of zeros cut to the payload, up to ZEROES_AS_WRITES_MAX
 * bytes; only past that is it left out, and the loss logged.
 */
export function replayPieces(entries: ReplayEntry[], welcome: { size: number; features: number }, maxPayload: number, log: { warn(message: string): void }): ReplayEntry[] {
  const size = welcome.size;
  const fitted = fitPieces(newestPieces(entries), size, maxPayload);
  if (fitted.dropped > 0) log.warn(`export is now ${size} bytes: ${fitted.dropped} bytes of acknowledged, unflushed writes past its end cannot be replayed and are lost`);
  const trims = (welcome.features & Feature.TRIM) !== 0;
  const zeroes = (welcome.features & Feature.WRITE_ZEROES) !== 0;
  if (trims && zeroes) return fitted.pieces;
  const bytes = (kind: ReplayEntry["kind"]) => fitted.pieces.reduce((sum, p) => sum + (p.kind === kind ? p.length : 0), 0);
  const zeroBytes = zeroes ? 0 : bytes("zero");
  const asWrites = zeroBytes > 0 && zeroBytes <= ZEROES_AS_WRITES_MAX;
  const out: ReplayEntry[] = [];
  for (const p of fitted.pieces) {
    if (p.kind === "trim" && !trims) continue;
    if (p.kind !== "zero" || zeroes) {
      out.push(p);
      continue;
    }
    if (!asWrites) continue;
    const step = Math.max(1, maxPayload);
    for (let at = p.offset; at < p.offset + p.length; at += step) {
      const length = Math.min(step, p.offset + p.length - at);
      out.push({ seq: p.seq, kind: "write", offset: at, length, data: zeroView(length), noHole: false });
    }
  }
  if (!trims && bytes("trim") > 0) log.warn(`the export no longer offers TRIM: ${bytes("trim")} bytes of acknowledged, unflushed trims are not replayed (a trim is advisory)`);
  if (asWrites) log.warn(`the export no longer offers WRITE_ZEROES: ${zeroBytes} bytes of acknowledged, unflushed write-zeroes are replayed as writes of zeros`);
  else if (zeroBytes > 0) {
    log.warn(`the export no longer offers WRITE_ZEROES: ${zeroBytes} bytes of acknowledged, unflushed write-zeroes are more than the ${ZEROES_AS_WRITES_MAX} bytes replayed as writes of zeros; they cannot be replayed and are lost (they may read back their old data)`);
  }
  return out;
}

function piece(entry: ReplayEntry, from: number, to: number): ReplayEntry {
  if (from === entry.offset && to === entry.offset + entry.length) return entry;
  const data = entry.data === null ? null : entry.data.subarray(from - entry.offset, to - entry.offset);
  return { ...entry, offset: from, length: to - from, data };
}
