/**
 * @module storage/tree/mirror/layout — the mirror's on-leg metadata format (docs/tree.md
 * "On-leg metadata"). Every leg of a mirror starts with a reserved area of `metaBytes`
 * (default 1 MiB); the mirror's data follows it, so leg byte `metaBytes + x` holds mirror
 * byte x. The area holds:
 *
 *   [0, 4096)        superblock copy 0   ─┐ written alternately (seq even → copy 0, odd → 1);
 *   [4096, 8192)     superblock copy 1   ─┘ the valid copy with the higher seq wins, so a torn
 *                                           write never leaves a leg without a superblock
 *   [8192 + s·B, …)  bitmap slot s, B bytes (s < 8: "regions leg s may be missing";
 *                    s = 8: the write-intent bitmap, regions with writes possibly in flight)
 *
 * Superblock (little endian; crc32 of bytes [0, 508) at 508, the rest of the 4 KiB zero — the
 * record fits one 512-byte sector, so a write torn across stripe chunks or sectors cannot
 * tear it unnoticed):
 *   0 magic "DSTDMIRR" · 8 version u32 (1) · 12 superblock bytes u32 (4096) · 16 mirror id (16 B)
 *   32 seq u64 · 40 generation u64 · 48 metaBytes u64 · 56 dataBytes u64 · 64 regionBytes u32
 *   68 bitmapBytes u32 · 72 activeBytes u64 · 80 leg index u32 · 84 leg count u32
 *   88 flags u32 (bit 0: open — the mirror was running; the write-intent bitmap is valid)
 *   96 slot table: 8 × { state u32, flags u32, low u64, high u64 }
 *
 * Slot states: 0 unused, 1 in sync (low: the generation it joined at), 2 out of sync, its
 * bitmap valid for a leg whose generation is in [low, high], 3 out of sync, whole-leg resync.
 * Slot flags: bit 0 held — an out-of-sync leg the operator suspended (`dstd leg suspend`): it
 * is not probed or rejoined until `dstd leg resume`, across restarts. Older dstd wrote 0 here.
 * Pure: encoding and decoding only; no I/O.
 */
import { MAX_MIRROR_LEGS } from "../../../config/tree-spec.ts";
import { formatSize } from "../../../lib/size.ts";
export { MAX_MIRROR_LEGS };

export const MIRROR_MAGIC = "DSTDMIRR";
export const FORMAT_VERSION = 1;
export const SUPERBLOCK_BYTES = 4096;
/** Both superblock copies: what a probe reads. */
export const SUPERBLOCK_AREA = 2 * SUPERBLOCK_BYTES;
/** Bitmap write unit. */
export const PAGE_BYTES = 4096;
/** Bitmap slot of the write-intent ("active") bitmap. */
export const ACTIVE_SLOT = MAX_MIRROR_LEGS;
export const BITMAP_SLOTS = MAX_MIRROR_LEGS + 1;
export const DEFAULT_META_BYTES = 1024 * 1024;
export const MIN_REGION_BYTES = 64 * 1024;
export const DEFAULT_ACTIVE_BYTES = 64 * 1024 * 1024;
export const MIRROR_ID_BYTES = 16;

export const SlotState = { UNUSED: 0, IN_SYNC: 1, BITMAP: 2, FULL: 3 } as const;
export type SlotStateValue = (typeof SlotState)[keyof typeof SlotState];

export interface Layout {
  /** Reserved area at the start of every leg; the mirror's byte 0 is at this leg offset. */
  metaBytes: number;
  /** The mirror's size. */
  dataBytes: number;
  /** Granularity of the per-leg "missing regions" bitmaps. */
  regionBytes: number;
  /** Granularity of the write-intent bitmap (a multiple of regionBytes). */
  activeBytes: number;
  /** Bytes of one bitmap slot (a multiple of PAGE_BYTES). */
  bitmapBytes: number;
}

export interface Slot {
  state: SlotStateValue;
  low: number;
  high: number;
  /** Suspended by the operator (flags bit 0); only on an out-of-sync slot. */
  held?: boolean;
}

const SLOT_HELD = 1;

export interface Superblock {
  mirrorId: Uint8Array;
  seq: number;
  generation: number;
  layout: Layout;
  legIndex: number;
  legCount: number;
  open: boolean;
  slots: Slot[];
}

export interface LayoutOptions {
  metaBytes?: number;
  regionBytes?: number;
  activeBytes?: number;
}

const isPow2 = (n: number) => Number.isSafeInteger(n) && n > 0 && Number.isInteger(Math.log2(n));
const pow2AtLeast = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

export function bitmapOffset(layout: Layout, slot: number): number {
  return SUPERBLOCK_AREA + slot * layout.bitmapBytes;
}

export function regionCount(layout: Layout): number {
  return Math.ceil(layout.dataBytes / layout.regionBytes);
}

export function activeCount(layout: Layout): number {
  return Math.ceil(layout.dataBytes / layout.activeBytes);
}

/**
 * The layout of a new mirror whose smallest leg holds `legBytes`, or why there is none.
 * regionBytes: the smallest power of two ≥ 64 KiB (or the option) whose bitmap fits its slot.
 */
export function planLayout(legBytes: number, blockSize: number, options: LayoutOptions = {}): Layout | string {
  const metaBytes = options.metaBytes ?? DEFAULT_META_BYTES;
  const minMeta = SUPERBLOCK_AREA + BITMAP_SLOTS * PAGE_BYTES;
  if (!Number.isSafeInteger(metaBytes) || metaBytes < minMeta || metaBytes % PAGE_BYTES !== 0 || metaBytes % blockSize !== 0) {
    return `metadata area ${metaBytes} must be a multiple of ${Math.max(PAGE_BYTES, blockSize)} bytes and at least ${minMeta}`;
  }
  const bitmapBytes = Math.floor((metaBytes - SUPERBLOCK_AREA) / BITMAP_SLOTS / PAGE_BYTES) * PAGE_BYTES;
  const dataBytes = Math.floor((legBytes - metaBytes) / blockSize) * blockSize;
  if (dataBytes <= 0) return `a leg of ${legBytes} bytes leaves no room for data after the ${metaBytes}-byte metadata area`;
  const bits = bitmapBytes * 8;
  const regionBytes = options.regionBytes ?? Math.max(MIN_REGION_BYTES, blockSize, pow2AtLeast(Math.ceil(dataBytes / bits)));
  if (!isPow2(regionBytes) || regionBytes < blockSize) return `region size ${regionBytes} must be a power of two ≥ the block size ${blockSize}`;
  if (Math.ceil(dataBytes / regionBytes) > bits) return `region size ${regionBytes} is too small: the bitmap holds ${bits} regions`;
  const activeBytes = options.activeBytes ?? Math.max(regionBytes, DEFAULT_ACTIVE_BYTES);
  if (!isPow2(activeBytes) || activeBytes < regionBytes) return `write-intent granularity ${activeBytes} must be a power of two ≥ the region size ${regionBytes}`;
  return { metaBytes, dataBytes, regionBytes, activeBytes, bitmapBytes };
}

/** Largest region a superblock records (a u32 field). */
const MAX_REGION_BYTES = 2 ** 31;

/**
 * `layout` grown to hold `size` bytes in the regions of one bitmap slot (or `fewer`, when a
 * test asks for fewer): the same regions while they suffice, else regions doubled as often as needed
 * (docs/tree.md "Growing a mirror"), or why it cannot — the write-intent regions, fixed when
 * the mirror was created, bound the region size.
 */
export function grownLayout(layout: Layout, size: number, fewer?: number): Layout | string {
  const bits = Math.min(fewer ?? Number.POSITIVE_INFINITY, layout.bitmapBytes * 8);
  const regionBytes = Math.max(layout.regionBytes, pow2AtLeast(Math.ceil(size / bits)));
  if (regionBytes > layout.activeBytes || regionBytes > MAX_REGION_BYTES) {
    const most = bits * Math.min(layout.activeBytes, MAX_REGION_BYTES);
    return `the mirror's metadata describes at most ${formatSize(most)} (${bits} regions of at most ${formatSize(Math.min(layout.activeBytes, MAX_REGION_BYTES))}, its write-intent regions, fixed when it was created)`;
  }
  return { ...layout, dataBytes: size, regionBytes };
}

/** Is `layout` (read from a superblock) self-consistent? null or the reason it is not. */
export function checkLayout(layout: Layout): string | null {
  const { metaBytes, dataBytes, regionBytes, activeBytes, bitmapBytes } = layout;
  if (metaBytes % PAGE_BYTES !== 0 || bitmapBytes % PAGE_BYTES !== 0 || bitmapBytes <= 0) return "bad metadata area sizes";
  if (SUPERBLOCK_AREA + BITMAP_SLOTS * bitmapBytes > metaBytes) return "bitmaps overflow the metadata area";
  if (!isPow2(regionBytes) || !isPow2(activeBytes) || activeBytes < regionBytes) return "bad region sizes";
  if (dataBytes <= 0 || Math.ceil(dataBytes / regionBytes) > bitmapBytes * 8) return "bad data size";
  return null;
}

const encoder = new TextEncoder();
const MAGIC = encoder.encode(MIRROR_MAGIC);
const CRC_AT = 508;
const SLOTS_AT = 96;
const SLOT_BYTES = 24;

export function encodeSuperblock(sb: Superblock): Uint8Array {
  const bytes = new Uint8Array(SUPERBLOCK_BYTES);
  const view = new DataView(bytes.buffer);
  bytes.set(MAGIC, 0);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(12, SUPERBLOCK_BYTES, true);
  bytes.set(sb.mirrorId.subarray(0, MIRROR_ID_BYTES), 16);
  setU64(view, 32, sb.seq);
  setU64(view, 40, sb.generation);
  setU64(view, 48, sb.layout.metaBytes);
  setU64(view, 56, sb.layout.dataBytes);
  view.setUint32(64, sb.layout.regionBytes, true);
  view.setUint32(68, sb.layout.bitmapBytes, true);
  setU64(view, 72, sb.layout.activeBytes);
  view.setUint32(80, sb.legIndex, true);
  view.setUint32(84, sb.legCount, true);
  view.setUint32(88, sb.open ? 1 : 0, true);
  for (let i = 0; i < MAX_MIRROR_LEGS; i++) {
    const slot = sb.slots[i] ?? { state: SlotState.UNUSED, low: 0, high: 0 };
    const at = SLOTS_AT + i * SLOT_BYTES;
    view.setUint32(at, slot.state, true);
    view.setUint32(at + 4, slot.held === true ? SLOT_HELD : 0, true);
    setU64(view, at + 8, slot.low);
    setU64(view, at + 16, slot.high);
  }
  view.setUint32(CRC_AT, Bun.hash.crc32(bytes.subarray(0, CRC_AT)) >>> 0, true);
  return bytes;
}

/** What a leg's superblock area says. */
export type Decoded =
  | { kind: "valid"; sb: Superblock }
  /** No superblock magic in either copy: a new (or wiped) leg. */
  | { kind: "blank" }
  /**
   * Magic present but no copy is valid (checksum, version, layout). `mirrorId`: the identity
   * the damaged copy names (a torn write of our own), or null when even that is unreadable.
   */
  | { kind: "damaged"; reason: string; mirrorId: Uint8Array | null };

/** Decode the 8 KiB superblock area (both copies): the valid copy with the higher seq. */
export function decodeSuperblockArea(area: Uint8Array): Decoded {
  const copies = [area.subarray(0, SUPERBLOCK_BYTES), area.subarray(SUPERBLOCK_BYTES, SUPERBLOCK_AREA)];
  let best: Superblock | null = null;
  let reason: string | null = null;
  let magic = false;
  let namedId: Uint8Array | null = null;
  for (const copy of copies) {
    if (copy.length < SUPERBLOCK_BYTES || !startsWithMagic(copy)) continue;
    magic = true;
    namedId ??= copy.slice(16, 16 + MIRROR_ID_BYTES);
    const result = decodeOne(copy);
    if (typeof result === "string") reason ??= result;
    else if (best === null || result.seq > best.seq) best = result;
  }
  if (best !== null) return { kind: "valid", sb: best };
  return magic ? { kind: "damaged", reason: reason ?? "damaged", mirrorId: namedId } : { kind: "blank" };
}

function decodeOne(bytes: Uint8Array): Superblock | string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (view.getUint32(CRC_AT, true) !== Bun.hash.crc32(bytes.subarray(0, CRC_AT)) >>> 0) return "superblock checksum mismatch";
  const version = view.getUint32(8, true);
  if (version !== FORMAT_VERSION) return `superblock version ${version} (this dstd reads ${FORMAT_VERSION})`;
  if (view.getUint32(12, true) !== SUPERBLOCK_BYTES) return "bad superblock size";
  const layout: Layout = {
    metaBytes: getU64(view, 48),
    dataBytes: getU64(view, 56),
    regionBytes: view.getUint32(64, true),
    bitmapBytes: view.getUint32(68, true),
    activeBytes: getU64(view, 72),
  };
  const bad = checkLayout(layout);
  if (bad !== null) return bad;
  const legIndex = view.getUint32(80, true);
  const legCount = view.getUint32(84, true);
  if (legCount < 1 || legCount > MAX_MIRROR_LEGS || legIndex >= legCount) return "bad leg index or count";
  const slots: Slot[] = [];
  for (let i = 0; i < MAX_MIRROR_LEGS; i++) {
    const at = SLOTS_AT + i * SLOT_BYTES;
    const state = view.getUint32(at, true);
    if (state > SlotState.FULL) return `bad slot state ${state}`;
    const flags = view.getUint32(at + 4, true);
    if ((flags & ~SLOT_HELD) !== 0) return `bad slot flags ${flags}`;
    const slot: Slot = { state: state as SlotStateValue, low: getU64(view, at + 8), high: getU64(view, at + 16) };
    if ((flags & SLOT_HELD) !== 0) slot.held = true;
    slots.push(slot);
  }
  return {
    mirrorId: bytes.slice(16, 16 + MIRROR_ID_BYTES),
    seq: getU64(view, 32),
    generation: getU64(view, 40),
    layout,
    legIndex,
    legCount,
    open: (view.getUint32(88, true) & 1) !== 0,
    slots,
  };
}

function startsWithMagic(bytes: Uint8Array): boolean {
  for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC[i]) return false;
  return true;
}

function setU64(view: DataView, at: number, value: number): void {
  view.setBigUint64(at, BigInt(value), true);
}

function getU64(view: DataView, at: number): number {
  const value = view.getBigUint64(at, true);
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}

export function sameId(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function hexId(id: Uint8Array): string {
  return Buffer.from(id).toString("hex");
}
