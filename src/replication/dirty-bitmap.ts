/**
 * @module replication/dirty-bitmap — the persisted bitmap of regions the primary wrote
 * without logging (log past its high-water mark, or a failed log): one bit per region, memory
 * bounded by `maxBytes` whatever the disk size (the region grows instead), kept in a file of
 * the log directory so a restart forgets nothing. A later resync copies only these regions.
 * docs/replication.md §5.
 *
 * File: page 0 = header (u32 magic "DSTB" | u8 version 1 | 3 × 0 | u64 region size | u64 disk
 * size | u64 regions | … | u64 xxh3 of bytes 0..4088), then the bits, least significant bit
 * first (bit i of byte j is region 8j + i). Pages are written whole and fdatasync'd; a page
 * torn by a crash mixes old and new sectors, which only ever sets fewer bits than a completed
 * mark, and a mark is reported done only after its fdatasync (so its bits were durable).
 *
 * A header that is short or all zeros is a creation a crash cut short (the header is durable
 * before any mark, so no mark is lost): the file is made anew, as a state file never written
 * is (replication/state-file.ts). Only a non-zero header failing its checksum is refused.
 *
 * Group commit: marks that set new bits while a persist runs wait for the next one, which
 * writes every page changed meanwhile with one fdatasync. A mark whose bits are already
 * durable completes at once, synchronously (the common case once a region is dirty).
 *
 * Must not: report a mark done before its bits are durable; hold more than the bitmap and
 * one copy of the changed pages.
 */
import { DstdError } from "../lib/errors.ts";
import { assert } from "../lib/assert.ts";
import { readU32, readU64, writeU32, writeU64 } from "../wire/dst/bytes.ts";
import { files, type FileDone, type LogDirectory, type LogFile } from "./files.ts";

const PAGE = 4096;
const MAGIC = 0x44535442;
const VERSION = 1;
export const DEFAULT_BITMAP_BYTES = 1 << 20;
export const MIN_REGION_SIZE = 64 << 10;

export interface DirtyRun {
  offset: number;
  length: number;
}

export interface BitmapGeometry {
  regionSize: number;
  regions: number;
}

/** Region size for `diskSize` so that the bits fit `maxBytes`: a power of two ≥ MIN_REGION_SIZE. */
export function bitmapGeometry(diskSize: number, maxBytes = DEFAULT_BITMAP_BYTES): BitmapGeometry {
  assert(maxBytes >= 1, "bitmap needs at least one byte");
  let regionSize = MIN_REGION_SIZE;
  while (Math.ceil(diskSize / regionSize) > maxBytes * 8) regionSize *= 2;
  return { regionSize, regions: Math.ceil(diskSize / regionSize) };
}

function encodeHeader(regionSize: number, diskSize: number, regions: number): Uint8Array {
  const page = new Uint8Array(PAGE);
  writeU32(page, 0, MAGIC);
  page[4] = VERSION;
  writeU64(page, 8, regionSize);
  writeU64(page, 16, diskSize);
  writeU64(page, 24, regions);
  const sum = Bun.hash.xxHash3(page.subarray(0, PAGE - 8));
  writeU32(page, PAGE - 8, Number(sum >> 32n));
  writeU32(page, PAGE - 4, Number(sum & 0xffffffffn));
  return page;
}

interface Waiter {
  round: number;
  done: FileDone;
}

export class DirtyBitmap {
  private readonly bits: Uint8Array;
  /** Pages changed since the last persist started. */
  private changed = new Set<number>();
  /** Pages being written by the running persist. */
  private inFlight = new Set<number>();
  /** Rounds: a persist started as round n makes every change before it durable. */
  private startedRound = 0;
  private durableRound = 0;
  private waiters: Waiter[] = [];
  private persisting = false;
  private failed = 0;
  private dirty: number;

  private constructor(
    private readonly file: LogFile,
    readonly regionSize: number,
    readonly regions: number,
    bits: Uint8Array,
  ) {
    this.bits = bits;
    let count = 0;
    for (let i = 0; i < bits.length; i++) count += popcount(bits[i]!);
    this.dirty = count;
  }

  /**
   * Opens or creates the bitmap `name` for a disk of `diskSize` bytes. An existing bitmap
   * must describe the same geometry (a resized disk needs a new one; docs/replication.md §5).
   */
  static async open(dir: LogDirectory, name: string, diskSize: number, maxBytes = DEFAULT_BITMAP_BYTES): Promise<DirtyBitmap> {
    const { regionSize, regions } = bitmapGeometry(diskSize, maxBytes);
    const byteCount = Math.ceil(regions / 8);
    const existed = (await files.list(dir)).includes(name);
    const file = await files.open(dir, name, !existed);
    const bits = new Uint8Array(byteCount);
    const header = new Uint8Array(PAGE);
    const n = existed ? await files.read(file, 0, header) : 0;
    if (n < PAGE || header.every((b) => b === 0)) {
      if (n > 0) await files.truncate(file, 0); // a torn first header: nothing else was ever written
      await files.write(file, 0, [encodeHeader(regionSize, diskSize, regions)]);
      await files.sync(file);
      await files.syncDir(dir);
      return new DirtyBitmap(file, regionSize, regions, bits);
    }
    const where = `${dir.path}/${name}`;
    const sum = Bun.hash.xxHash3(header.subarray(0, PAGE - 8));
    const stored = (BigInt(readU32(header, PAGE - 8)) << 32n) | BigInt(readU32(header, PAGE - 4));
    const fail = async (problem: string): Promise<never> => {
      await files.close(file);
      throw new DstdError("E_BITMAP", `dirty bitmap ${where}: ${problem}`);
    };
    if (readU32(header, 0) !== MAGIC || sum !== stored) return fail("header is corrupt (not all zero, and its checksum fails)");
    if (header[4] !== VERSION) return fail(`format version ${header[4]} (this build reads ${VERSION})`);
    const storedRegion = readU64(header, 8);
    const storedDisk = readU64(header, 16);
    if (storedRegion !== regionSize || storedDisk !== diskSize || readU64(header, 24) !== regions) {
      return fail(
        `made for a ${storedDisk}-byte disk in ${storedRegion}-byte regions, the disk is now ${diskSize} bytes ` +
          `(${regionSize}-byte regions); resync fully, then remove it`,
      );
    }
    const read = await files.read(file, PAGE, bits);
    if (read < byteCount) bits.fill(0, read);
    return new DirtyBitmap(file, regionSize, regions, bits);
  }

  /** Regions marked dirty. */
  get dirtyRegions(): number {
    return this.dirty;
  }

  get memoryBytes(): number {
    return this.bits.length;
  }

  /** True when any region of [offset, offset+length) is marked. */
  isDirty(offset: number, length: number): boolean {
    const [first, last] = this.span(offset, length);
    for (let r = first; r <= last; r++) if (this.test(r)) return true;
    return false;
  }

  /**
   * Marks every region of [offset, offset+length) dirty; `done` runs once the marks are
   * durable — at once when they already were.
   */
  mark(offset: number, length: number, done: FileDone): void {
    if (this.failed !== 0) return done(this.failed);
    const [first, last] = this.span(offset, length);
    let round = 0;
    for (let r = first; r <= last; r++) {
      const page = pageOf(r);
      if (!this.test(r)) {
        this.bits[r >>> 3]! |= 1 << (r & 7);
        this.dirty++;
        this.changed.add(page);
        round = this.startedRound + 1;
      } else if (this.changed.has(page)) {
        round = Math.max(round, this.startedRound + 1);
      } else if (this.inFlight.has(page)) {
        round = Math.max(round, this.startedRound);
      }
    }
    if (round <= this.durableRound) return done(0);
    this.waiters.push({ round, done });
    this.pump();
  }

  /** Clears [offset, offset+length) (regions wholly or partly inside); persisted lazily. */
  clear(offset: number, length: number): void {
    const [first, last] = this.span(offset, length);
    for (let r = first; r <= last; r++) {
      if (!this.test(r)) continue;
      this.bits[r >>> 3]! &= ~(1 << (r & 7));
      this.dirty--;
      this.changed.add(pageOf(r));
    }
  }

  /** Persists every change so far (clears included); `done` once durable. */
  persist(done: FileDone): void {
    if (this.failed !== 0) return done(this.failed);
    if (this.changed.size === 0 && !this.persisting) return done(0);
    this.waiters.push({ round: this.changed.size > 0 ? this.startedRound + 1 : this.startedRound, done });
    this.pump();
  }

  /**
   * Up to `maxRuns` runs of dirty regions at or after `from` (byte offset), in order, merged
   * where adjacent; the last run may end past the disk's end by less than one region.
   */
  runs(from = 0, maxRuns = 1024): DirtyRun[] {
    const out: DirtyRun[] = [];
    let r = Math.floor(from / this.regionSize);
    while (r < this.regions && out.length < maxRuns) {
      if (this.bits[r >>> 3] === 0) {
        r = (r | 7) + 1;
        continue;
      }
      if (!this.test(r)) {
        r++;
        continue;
      }
      const start = r;
      while (r < this.regions && this.test(r)) r++;
      out.push({ offset: start * this.regionSize, length: (r - start) * this.regionSize });
    }
    return out;
  }

  close(): Promise<void> {
    return files.close(this.file);
  }

  private test(r: number): boolean {
    return (this.bits[r >>> 3]! & (1 << (r & 7))) !== 0;
  }

  private span(offset: number, length: number): [number, number] {
    const first = Math.floor(offset / this.regionSize);
    const last = Math.min(this.regions - 1, Math.floor((offset + Math.max(length, 1) - 1) / this.regionSize));
    return [first, last];
  }

  private pump(): void {
    if (this.persisting || this.changed.size === 0) return;
    this.persisting = true;
    const round = ++this.startedRound;
    this.inFlight = this.changed;
    this.changed = new Set();
    const pages = [...this.inFlight].sort((a, b) => a - b);
    // Copies, so marks made while the write runs cannot tear what it writes.
    const writes = pages.map((p) => ({ position: PAGE + p * PAGE, data: this.bits.slice(p * PAGE, (p + 1) * PAGE) }));
    let i = 0;
    const finish = (errno: number): void => {
      this.persisting = false;
      this.inFlight = new Set();
      if (errno !== 0) {
        this.failed = errno;
        for (const w of this.waiters.splice(0)) w.done(errno);
        return;
      }
      this.durableRound = round;
      const ready = this.waiters.filter((w) => w.round <= round);
      this.waiters = this.waiters.filter((w) => w.round > round);
      for (const w of ready) w.done(0);
      this.pump();
    };
    const next = (errno: number): void => {
      if (errno !== 0) return finish(errno);
      if (i === writes.length) return this.file.sync(finish);
      const w = writes[i++]!;
      this.file.write(w.position, [w.data], next);
    };
    next(0);
  }
}

function pageOf(region: number): number {
  return Math.floor(region / (PAGE * 8));
}

function popcount(v: number): number {
  v = v - ((v >>> 1) & 0x55);
  v = (v & 0x33) + ((v >>> 2) & 0x33);
  return (v + (v >>> 4)) & 0x0f;
}
