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
 * Geometry: the header's disk size is what the bits cover. A header is never rewritten in
 * place (a torn header page would fail its checksum and stop every start): a new geometry is
 * written as a whole file, `<name>.new`, fdatasync'd, renamed over the bitmap, and the
 * directory fsync'd, so a crash leaves the old file or the new one, each whole. On open, a
 * bitmap made for another disk size (a resize) is converted so: every set bit is kept (each
 * region of the new geometry that overlaps a dirty one is dirty; regions past the disk's end
 * go only when clear). While running, a mark past the covered end (the disk grew) grows the
 * bitmap the same way first — else it would set no bit and no resync would copy the write —
 * coarsening the regions if the bits would pass `maxBytes`; it completes once the new file is
 * in place. A header that is short or all zeros is a creation a crash cut short (the header is
 * durable before any mark, so no mark is lost): the file is made anew, as a state file never
 * written is (replication/state-file.ts); so is one failing its checksum in a file that holds
 * nothing past the header page (a creation torn by sector: no mark was ever written). Only a
 * non-zero header failing its checksum with pages after it is refused.
 *
 * Group commit: marks that set new bits while a persist runs wait for the next one, which
 * writes every page changed meanwhile with one fdatasync. A mark whose bits are already
 * durable completes at once, synchronously (the common case once a region is dirty).
 *
 * Must not: report a mark done before its bits are durable; drop a set bit when converting;
 * hold more than the bitmap and one copy of the changed pages (of all of them for a new file).
 */
import { DstdError } from "../lib/errors.ts";
import { errnoMessage } from "../lib/errno.ts";
import { assert } from "../lib/assert.ts";
import { readU32, readU64, writeU32, writeU64 } from "../wire/dst/bytes.ts";
import { files, OpenedFiles, type FileDone, type LogDirectory, type LogFile } from "./files.ts";

const PAGE = 4096;
const MAGIC = 0x44535442;
const VERSION = 1;
/** Suffix of the file a new geometry is written to before it is renamed over the bitmap. */
const NEXT = ".new";
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

/** `bits` of `from`-byte regions as `regions` regions of `to` bytes: each set bit's bytes stay covered. */
function convertBits(bits: Uint8Array, from: number, to: number, regions: number): Uint8Array {
  const out = new Uint8Array(Math.ceil(regions / 8));
  for (let j = 0; j < bits.length; j++) {
    if (bits[j] === 0) continue;
    for (let b = 0; b < 8; b++) {
      if ((bits[j]! & (1 << b)) === 0) continue;
      const r = j * 8 + b;
      const last = Math.min(regions - 1, Math.floor(((r + 1) * from - 1) / to));
      for (let n = Math.floor((r * from) / to); n <= last; n++) out[n >>> 3]! |= 1 << (n & 7);
    }
  }
  return out;
}

/** Where the last set region of `bits` ends (0: none set). */
function setBitsEnd(bits: Uint8Array, regionSize: number): number {
  for (let j = bits.length - 1; j >= 0; j--) if (bits[j] !== 0) return (j * 8 + 32 - Math.clz32(bits[j]!)) * regionSize;
  return 0;
}

interface Waiter {
  round: number;
  done: FileDone;
}

export class DirtyBitmap {
  /** Pages changed since the last persist started. */
  private changed = new Set<number>();
  /** Pages being written by the running persist. */
  private inFlight = new Set<number>();
  /** Rounds: a persist started as round n makes every change before it durable. */
  private startedRound = 0;
  private durableRound = 0;
  private waiters: Waiter[] = [];
  private persisting = false;
  /** The next persist writes a new file (the geometry changed). */
  private rewrite = false;
  private failed = 0;
  private dirty = 0;

  private constructor(
    private readonly dir: LogDirectory,
    private readonly name: string,
    private file: LogFile,
    private readonly maxBytes: number,
    private region: number,
    private count: number,
    /** Bytes the bits cover (the header's disk size). */
    private covers: number,
    private bits: Uint8Array,
  ) {
    this.recount();
  }

  /** Why marks fail since a write or fdatasync of the file failed (it latches: fsyncgate); null while healthy. */
  get failure(): string | null {
    return this.failed === 0 ? null : `dirty bitmap ${this.dir.path}/${this.name}: a write or fdatasync failed (${errnoMessage(this.failed)}); marks fail until restarted`;
  }

  /**
   * Opens or creates the bitmap `name` for a disk of `diskSize` bytes; one made for another
   * size is converted (module comment; docs/replication.md §5).
   */
  static async open(dir: LogDirectory, name: string, diskSize: number, maxBytes = DEFAULT_BITMAP_BYTES): Promise<DirtyBitmap> {
    const names = await files.list(dir);
    // A conversion a crash cut short: the bitmap it was to replace is still whole.
    if (names.includes(name + NEXT)) await files.remove(dir, name + NEXT);
    const existed = names.includes(name);
    const file = await files.open(dir, name, !existed);
    // A failed step must not leave the file open (files.ts OpenedFiles).
    const opened = new OpenedFiles();
    opened.hold(() => files.close(file));
    try {
      const header = new Uint8Array(PAGE);
      const n = existed ? await files.read(file, 0, header) : 0;
      // A header failing its checksum with nothing past its page: a creation torn by sector (its
      // checksum's kept, its first lost; cluster sim seed 115864). Marks write past the header
      // page and only once it is durable: such a file never held a mark, and nothing is lost.
      const unmarked = n === PAGE && !headerValid(header) && (await files.size(file)) <= PAGE;
      if (n < PAGE || header.every((b) => b === 0) || unmarked) {
        const { regionSize, regions } = bitmapGeometry(diskSize, maxBytes);
        if (n > 0) await files.truncate(file, 0); // a torn first header: nothing else was ever written
        await files.write(file, 0, [encodeHeader(regionSize, diskSize, regions)]);
        await files.sync(file);
        await files.syncDir(dir);
        return new DirtyBitmap(dir, name, file, maxBytes, regionSize, regions, diskSize, new Uint8Array(Math.ceil(regions / 8)));
      }
      const where = `${dir.path}/${name}`;
      const fail = (problem: string): never => {
        throw new DstdError("E_BITMAP", `dirty bitmap ${where}: ${problem}`);
      };
      if (!headerValid(header)) return fail("header is corrupt (not all zero, and its checksum fails)");
      if (header[4] !== VERSION) return fail(`format version ${header[4]} (this build reads ${VERSION})`);
      const storedRegion = readU64(header, 8);
      const storedDisk = readU64(header, 16);
      const storedRegions = readU64(header, 24);
      if (storedRegion < 1) return fail(`header names ${storedRegion}-byte regions`);
      const bits = new Uint8Array(Math.ceil(storedRegions / 8));
      const read = await files.read(file, PAGE, bits);
      if (read < bits.length) bits.fill(0, read);
      // A killed process's failed or unfinished mark may sit in the page cache only: a bit read here counts as durable
      // (a mark of it completes at once), so make it so, or a power loss takes it back unresynced (replication sim seed 520690).
      await files.sync(file);
      // Dirty regions past the disk's end stay: a shrink then a regrow must still copy them.
      const covers = Math.max(diskSize, setBitsEnd(bits, storedRegion));
      const { regionSize, regions } = bitmapGeometry(covers, maxBytes);
      if (regionSize === storedRegion && regions === storedRegions) {
        return new DirtyBitmap(dir, name, file, maxBytes, regionSize, regions, storedDisk, bits);
      }
      const bitmap = new DirtyBitmap(dir, name, file, maxBytes, regionSize, regions, covers, convertBits(bits, storedRegion, regionSize, regions));
      bitmap.rewrite = true;
      opened.hold(() => bitmap.close()); // the conversion may have swapped its file for the new one
      const errno = await new Promise<number>((resolve) => bitmap.persist(resolve));
      if (errno === 0) return bitmap;
      throw new DstdError("E_BITMAP", `dirty bitmap ${where}: converting it from a ${storedDisk}-byte disk to ${diskSize} bytes failed: ${errnoMessage(errno)}`);
    } catch (error) {
      return opened.fail(error);
    }
  }

  get regionSize(): number {
    return this.region;
  }

  get regions(): number {
    return this.count;
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
   * durable — at once when they already were. Past the covered end, the bitmap grows first:
   * to `diskSize` (the disk as it is now) when given, so that writes walking through a grown
   * disk's new area rewrite the whole file once, not once per region they step into.
   */
  mark(offset: number, length: number, done: FileDone, diskSize = 0): void {
    if (this.failed !== 0) return done(this.failed);
    const end = offset + Math.max(length, 1);
    if (end > this.count * this.region) this.grow(Math.max(end, diskSize));
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
    const pending = this.changed.size > 0 || this.rewrite;
    if (!pending && !this.persisting) return done(0);
    this.waiters.push({ round: pending ? this.startedRound + 1 : this.startedRound, done });
    this.pump();
  }

  /**
   * Up to `maxRuns` runs of dirty regions at or after `from` (byte offset), in order, merged
   * where adjacent; the last run may end past the disk's end by less than one region.
   */
  runs(from = 0, maxRuns = 1024): DirtyRun[] {
    const out: DirtyRun[] = [];
    let r = Math.floor(from / this.region);
    while (r < this.count && out.length < maxRuns) {
      if (this.bits[r >>> 3] === 0) {
        r = (r | 7) + 1;
        continue;
      }
      if (!this.test(r)) {
        r++;
        continue;
      }
      const start = r;
      while (r < this.count && this.test(r)) r++;
      out.push({ offset: start * this.region, length: (r - start) * this.region });
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
    const first = Math.floor(offset / this.region);
    const last = Math.min(this.count - 1, Math.floor((offset + Math.max(length, 1) - 1) / this.region));
    return [first, last];
  }

  private recount(): void {
    let count = 0;
    for (let i = 0; i < this.bits.length; i++) count += popcount(this.bits[i]!);
    this.dirty = count;
  }

  /** Covers `size` bytes from now on, keeping every set bit; the next persist writes a new file. */
  private grow(size: number): void {
    const regionSize = Math.max(this.region, bitmapGeometry(size, this.maxBytes).regionSize);
    const regions = Math.ceil(size / regionSize);
    this.bits = convertBits(this.bits, this.region, regionSize, regions);
    this.region = regionSize;
    this.count = regions;
    this.covers = size;
    this.recount();
    // Every page, as changed: a mark of a bit set before must wait for the new file too, as
    // the old one may not hold it in this layout (regions may have coarsened).
    this.changed = new Set(Array.from({ length: Math.ceil(this.bits.length / PAGE) }, (_, p) => p));
    this.rewrite = true;
  }

  private pump(): void {
    if (this.persisting || (this.changed.size === 0 && !this.rewrite)) return;
    this.persisting = true;
    const round = ++this.startedRound;
    this.inFlight = this.changed;
    this.changed = new Set();
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
    if (this.rewrite) {
      this.rewrite = false;
      return this.replace([encodeHeader(this.region, this.covers, this.count), this.bits.slice()], finish);
    }
    const pages = [...this.inFlight].sort((a, b) => a - b);
    // Copies, so marks made while the write runs cannot tear what it writes.
    const writes = pages.map((p) => ({ position: PAGE + p * PAGE, data: this.bits.slice(p * PAGE, (p + 1) * PAGE) }));
    let i = 0;
    const next = (errno: number): void => {
      if (errno !== 0) return finish(errno);
      if (i === writes.length) return this.file.sync(finish);
      const w = writes[i++]!;
      this.file.write(w.position, [w.data], next);
    };
    next(0);
  }

  /** Writes `image` as `<name>.new`, durably, renames it over the bitmap and fsyncs the directory. */
  private replace(image: Uint8Array[], done: FileDone): void {
    const temp = this.name + NEXT;
    this.dir.open(temp, true, (errno, opened) => {
      if (errno !== 0) return done(errno);
      const file = opened!;
      const steps: ((next: FileDone) => void)[] = [
        (next) => file.truncate(0, next),
        (next) => file.write(0, image, next),
        (next) => file.sync(next),
        (next) => this.dir.rename(temp, this.name, next),
        (next) => {
          const old = this.file;
          this.file = file;
          old.close(() => this.dir.sync(next));
        },
      ];
      let i = 0;
      const next = (e: number): void => {
        if (e !== 0) return this.file === file ? done(e) : file.close(() => done(e));
        if (i === steps.length) return done(0);
        steps[i++]!(next);
      };
      next(0);
    });
  }
}

/** The header page's magic and checksum hold. */
function headerValid(header: Uint8Array): boolean {
  const sum = Bun.hash.xxHash3(header.subarray(0, PAGE - 8));
  const stored = (BigInt(readU32(header, PAGE - 8)) << 32n) | BigInt(readU32(header, PAGE - 4));
  return readU32(header, 0) === MAGIC && sum === stored;
}

function pageOf(region: number): number {
  return Math.floor(region / (PAGE * 8));
}

function popcount(v: number): number {
  v = v - ((v >>> 1) & 0x55);
  v = (v & 0x33) + ((v >>> 2) & 0x33);
  return (v + (v >>> 4)) & 0x0f;
}
