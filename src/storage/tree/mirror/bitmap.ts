/**
 * @module storage/tree/mirror/bitmap — a fixed-size bitmap of regions with a population
 * count, the in-memory form of one bitmap slot of the on-leg metadata (mirror/layout.ts).
 * Bounded by construction: its size is the slot's, decided when the mirror was created.
 */
import { PAGE_BYTES } from "./layout.ts";

const BITS_PER_PAGE = PAGE_BYTES * 8;

export class RegionBitmap {
  readonly bytes: Uint8Array;
  /** Bits set. */
  count = 0;

  /** `regions` usable bits in a slot of `slotBytes` bytes. */
  constructor(
    public regions: number,
    slotBytes: number,
  ) {
    this.bytes = new Uint8Array(slotBytes);
  }

  /** Use `regions` bits (the mirror grew: mirror/grow.ts); the new ones are clear. */
  grow(regions: number): void {
    if (regions > this.bytes.length * 8) throw new RangeError(`${regions} regions do not fit a ${this.bytes.length}-byte bitmap`);
    this.regions = Math.max(this.regions, regions);
  }

  /**
   * Regions `factor` times larger (a power of two; the mirror grew past what its bitmaps could
   * describe: mirror/grow.ts): new region j is set when any of old regions [j·factor, (j+1)·factor)
   * was, so nothing recorded as missing is forgotten. `regions`: the new usable bits.
   */
  coarsen(factor: number, regions: number): void {
    const old = this.bytes.slice();
    const oldRegions = this.regions;
    this.reset();
    this.regions = regions;
    for (let r = 0; r < oldRegions; r++) {
      if ((old[r >>> 3]! & (1 << (r & 7))) !== 0) this.set(Math.floor(r / factor));
    }
  }

  get(region: number): boolean {
    return (this.bytes[region >>> 3]! & (1 << (region & 7))) !== 0;
  }

  /** Set one bit; true when it was clear. */
  set(region: number): boolean {
    const i = region >>> 3;
    const mask = 1 << (region & 7);
    if ((this.bytes[i]! & mask) !== 0) return false;
    this.bytes[i] = this.bytes[i]! | mask;
    this.count++;
    return true;
  }

  /** Clear one bit; true when it was set. */
  clear(region: number): boolean {
    const i = region >>> 3;
    const mask = 1 << (region & 7);
    if ((this.bytes[i]! & mask) === 0) return false;
    this.bytes[i] = this.bytes[i]! & ~mask;
    this.count--;
    return true;
  }

  /**
   * Set [first, last] (clamped to the usable bits); calls `changedPage` once per page whose
   * bits changed. Whole bytes are set at once, so a range of millions of regions (a trim of
   * the whole disk) costs a pass over bytes, not bits.
   */
  setRange(first: number, last: number, changedPage?: (page: number) => void): void {
    last = Math.min(last, this.regions - 1);
    let lastPage = -1;
    const note = (r: number) => {
      if (changedPage === undefined) return;
      const page = pageOf(r);
      if (page !== lastPage) changedPage(page);
      lastPage = page;
    };
    let r = Math.max(0, first);
    while (r <= last) {
      if ((r & 7) === 0 && r + 7 <= last) {
        const i = r >>> 3;
        const byte = this.bytes[i]!;
        if (byte !== 0xff) {
          this.count += 8 - popcount8(byte);
          this.bytes[i] = 0xff;
          note(r);
        }
        r += 8;
        continue;
      }
      if (this.set(r)) note(r);
      r++;
    }
  }

  /** Set every usable bit. */
  fill(): void {
    for (let r = 0; r < this.regions; r++) this.set(r);
  }

  /** Clear every bit. */
  reset(): void {
    this.bytes.fill(0);
    this.count = 0;
  }

  /** Load from on-disk bytes (only the usable bits). */
  load(source: Uint8Array): void {
    this.reset();
    this.orWith(source);
  }

  /** OR in another bitmap's bytes (usable bits only). */
  orWith(source: Uint8Array): void {
    for (let r = 0; r < this.regions; r++) {
      if ((source[r >>> 3]! & (1 << (r & 7))) !== 0) this.set(r);
    }
  }

  /** First set bit at or after `from`, or -1. */
  nextSet(from: number): number {
    for (let r = Math.max(0, from); r < this.regions; ) {
      const byte = this.bytes[r >>> 3]!;
      if (byte === 0) {
        r = (r | 7) + 1;
        continue;
      }
      if ((byte & (1 << (r & 7))) !== 0) return r;
      r++;
    }
    return -1;
  }

  /** The bytes of one page (a view). */
  page(page: number): Uint8Array {
    return this.bytes.subarray(page * PAGE_BYTES, (page + 1) * PAGE_BYTES);
  }

  get pages(): number {
    return this.bytes.length / PAGE_BYTES;
  }
}

function popcount8(byte: number): number {
  let n = 0;
  for (let b = byte; b !== 0; b &= b - 1) n++;
  return n;
}

export function pageOf(region: number): number {
  return Math.floor(region / BITS_PER_PAGE);
}
