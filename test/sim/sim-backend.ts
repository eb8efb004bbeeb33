/**
 * @module test/sim/sim-backend — an in-memory export backend with a volatile write cache,
 * crashes and injected I/O errors (the model: SQLite's src/test6.c crash wrapper and
 * TigerBeetle's testing/storage.zig).
 *
 * State: `base` is the image as of the last completed flush; every mutation since is kept, in
 * order, in `unflushed`; `current` is what reads see. A FUA write is durable at once. A crash
 * rebuilds the image from `base` plus, in order, every FUA mutation and (mode "random") each
 * other unflushed mutation kept or dropped at random — the states a real volatile cache can
 * leave behind ("lose-all" keeps none of them). Injected EIO may strike before or after the
 * effect, both legal for a failed request.
 *
 * It also watches exactly-once: the DST server hands `write` the payload view of the request
 * frame, so the frame header (txid) sits just before it in the same buffer; every txid may be
 * applied at most once per export instance.
 */
import { Errno } from "../../src/lib/errno.ts";
import { BackendError } from "../../src/lib/errors.ts";
import type { Prng } from "../../src/lib/prng.ts";
import type { Backend, Extent } from "../../src/storage/local/backend.ts";
import { DST_MAGIC, HEADER_SIZE, Op } from "../../src/wire/dst/constants.ts";
import { decodeHeader } from "../../src/wire/dst/header.ts";

interface Mutation {
  offset: number;
  /** Written bytes (a private copy), or null for zeroes (trim / write-zeroes). */
  data: Uint8Array | null;
  length: number;
  durable: boolean;
}

export type CrashMode = "lose-all" | "random";
export type BackendOp = "read" | "write" | "flush" | "trim" | "zero";

export interface BackendFaults {
  /** Chance that one backend call fails with EIO. */
  eioProbability: number;
}

export class SimBackend implements Backend {
  readonly kind = "memory" as const;
  readonly description = "simulated disk";
  readonly readOnly = false;
  current: Uint8Array;
  private base: Uint8Array;
  private unflushed: Mutation[] = [];
  faults: BackendFaults = { eioProbability: 0 };
  /** Scenario hook: fail the next call of these kinds with EIO (FIFO). */
  readonly failNext: BackendOp[] = [];
  readonly counters = { reads: 0, writes: 0, flushes: 0, trims: 0, zeroes: 0, injectedErrors: 0, crashes: 0 };
  readonly injectedByKind: Record<BackendOp, number> = { read: 0, write: 0, flush: 0, trim: 0, zero: 0 };
  /** txid → times applied by the current export instance. */
  private applied = new Map<number, number>();
  /** Called when a txid is applied a second time by one export instance. */
  onDuplicateApply: ((txid: number, offset: number) => void) | null = null;
  /** Called for a write whose frame header is not in front of its data (an asynchronous port's copy). */
  onUntrackedApply: ((offset: number, data: Uint8Array) => void) | null = null;

  constructor(
    public size: number,
    readonly blockSize: number,
    private readonly prng: Prng,
  ) {
    this.current = new Uint8Array(size);
    this.base = new Uint8Array(size);
  }

  read(offset: number, target: Uint8Array): void {
    this.counters.reads++;
    this.maybeFail("read", "before");
    target.set(this.current.subarray(offset, offset + target.length));
  }

  write(offset: number, source: Uint8Array, fua: boolean): void {
    this.counters.writes++;
    this.noteApplied(source, offset);
    const when = this.maybeFail("write", this.prng.chance(0.5) ? "before" : "after");
    this.mutate({ offset, data: source.slice(), length: source.length, durable: fua });
    if (when === "after") this.fail("write");
  }

  flush(): void {
    this.counters.flushes++;
    const when = this.maybeFail("flush", this.prng.chance(0.5) ? "before" : "after");
    for (const mutation of this.unflushed) apply(this.base, mutation);
    this.unflushed = [];
    if (when === "after") this.fail("flush");
  }

  trim(offset: number, length: number): void {
    this.counters.trims++;
    this.zeroRange("trim", offset, length);
  }

  zero(offset: number, length: number, _mayPunch: boolean): void {
    this.counters.zeroes++;
    this.zeroRange("zero", offset, length);
  }

  extents(_offset: number, length: number): Extent[] {
    return [{ length, hole: false, zero: false }];
  }

  close(): void {}

  /**
   * Online resize, growth only (the oracle's blocks stay where they are): the new tail reads
   * as zeroes. Treated as metadata the export made durable before it answered (a crash keeps it).
   */
  resize(size: number): void {
    if (size < this.size) throw new BackendError(`the simulated disk only grows (${this.size} → ${size} bytes)`, Errno.EINVAL);
    const grow = (image: Uint8Array) => {
      const bigger = new Uint8Array(size);
      bigger.set(image);
      return bigger;
    };
    this.current = grow(this.current);
    this.base = grow(this.base);
    this.size = size;
  }

  /** The image a crash right now would leave at least: `base` plus every FUA mutation. */
  durableImage(): Uint8Array {
    const image = this.base.slice();
    for (const mutation of this.unflushed) if (mutation.durable) apply(image, mutation);
    return image;
  }

  /** Power loss of the export machine: volatile state reverts (see the module comment). */
  crash(mode: CrashMode): number {
    this.counters.crashes++;
    let kept = 0;
    for (const mutation of this.unflushed) {
      if (mutation.durable || (mode === "random" && this.prng.chance(0.5))) {
        apply(this.base, mutation);
        kept++;
      }
    }
    const lost = this.unflushed.length - kept;
    // Only ranges touched since the last flush can differ from base: restore just those.
    for (const mutation of this.unflushed) {
      const end = mutation.offset + mutation.length;
      this.current.set(this.base.subarray(mutation.offset, end), mutation.offset);
    }
    this.unflushed = [];
    this.applied = new Map();
    return lost;
  }

  /** Mutations not yet covered by a flush (volatile or FUA). */
  get unflushedCount(): number {
    return this.unflushed.length;
  }

  private zeroRange(kind: "trim" | "zero", offset: number, length: number): void {
    const when = this.maybeFail(kind, this.prng.chance(0.5) ? "before" : "after");
    this.mutate({ offset, data: null, length, durable: false });
    if (when === "after") this.fail(kind);
  }

  private mutate(mutation: Mutation): void {
    apply(this.current, mutation);
    this.unflushed.push(mutation);
  }

  /** Decide whether this call fails; "before" throws now, "after" means: apply, then throw. */
  private maybeFail(kind: BackendOp, when: "before" | "after"): "before" | "after" | null {
    const forced = this.failNext[0] === kind;
    if (forced) this.failNext.shift();
    if (!forced && !(this.faults.eioProbability > 0 && this.prng.chance(this.faults.eioProbability))) return null;
    this.counters.injectedErrors++;
    this.injectedByKind[kind]++;
    if (when === "before") this.fail(kind);
    return when;
  }

  private fail(kind: BackendOp): never {
    throw new BackendError(`injected ${kind} error`, Errno.EIO);
  }

  private noteApplied(source: Uint8Array, offset: number): void {
    if (source.byteOffset < HEADER_SIZE) return this.onUntrackedApply?.(offset, source);
    const header = decodeHeader(new Uint8Array(source.buffer, source.byteOffset - HEADER_SIZE, HEADER_SIZE), 0);
    if (header.magic !== DST_MAGIC || header.opcode !== Op.WRITE || header.length !== source.length) return this.onUntrackedApply?.(offset, source);
    const times = (this.applied.get(header.txid) ?? 0) + 1;
    this.applied.set(header.txid, times);
    if (times > 1) this.onDuplicateApply?.(header.txid, offset);
  }
}

function apply(image: Uint8Array, mutation: Mutation): void {
  if (mutation.data === null) image.fill(0, mutation.offset, mutation.offset + mutation.length);
  else image.set(mutation.data, mutation.offset);
}
