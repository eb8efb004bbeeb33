/**
 * @module storage/tree/mirror/metadata — what the mirror writes about itself on its legs
 * (mirror/layout.ts is the format, docs/tree.md "Generations" the meaning): which legs get a
 * metadata page, the superblock with its slot table, each leg's bitmap page as recorded on
 * disk, and the write-intent regions expanded into bitmap regions.
 *
 * Must not: write a page itself (mirror/meta-writer.ts does, one write per page at a time).
 */
import type { Done } from "../../port.ts";
import type { RegionBitmap } from "./bitmap.ts";
import { ACTIVE_SLOT, PAGE_BYTES, type Slot, SlotState, activeCount, bitmapOffset, encodeSuperblock, SUPERBLOCK_BYTES } from "./layout.ts";
import { type LegState, type MirrorLeg, REFUSED_STATES } from "./leg.ts";
import type { MetaJob, MetaTarget } from "./meta-writer.ts";
import type { MirrorState } from "./state.ts";

/** The metadata key of the superblock (bitmap pages have keys ≥ 0: slot × pages + page). */
export const SB_KEY = -1;

/** The legs a metadata page goes to: the in-sync ones, and a syncing one while it joins. */
export function metaTargets(s: MirrorState, key: number): MetaTarget[] {
  const out: MetaTarget[] = [];
  for (const leg of s.legs) {
    if (leg.port === null) continue;
    const joining = leg.state === "syncing" && (key === SB_KEY ? leg.joinPhase === 2 : leg.joinPhase >= 1);
    if (leg.state === "in-sync" || joining) out.push({ leg: leg.index, port: leg.port });
  }
  return out;
}

/** The write of metadata page `key`, its content built now. */
export function metaJob(s: MirrorState, key: number): MetaJob {
  if (key === SB_KEY) {
    const seq = ++s.seq;
    const generation = s.generation;
    const slots = slotTable(s);
    return {
      offset: (seq % 2) * SUPERBLOCK_BYTES,
      bytesFor: (leg) => {
        const target = s.legs[leg]!;
        target.issuedGen = Math.max(target.issuedGen, generation);
        return encodeSuperblock({ mirrorId: s.mirrorId, seq, generation, layout: s.layout, legIndex: leg, legCount: s.legs.length, open: s.open, slots });
      },
      legDone: (leg, errno) => {
        if (errno === 0) s.legs[leg]!.diskGen = generation;
      },
    };
  }
  const slot = Math.floor(key / s.pagesPerSlot);
  const page = key % s.pagesPerSlot;
  const bytes = slot === ACTIVE_SLOT ? s.active.page(page).slice() : slotPage(s, slot, page);
  return {
    offset: bitmapOffset(s.layout, slot) + page * PAGE_BYTES,
    bytesFor: () => bytes,
    settled: (ok) => {
      if (ok && slot === ACTIVE_SLOT) s.activeDurable.set(bytes, page * PAGE_BYTES);
    },
  };
}

/** Every leg's slot as the superblock records it. */
export function slotTable(s: MirrorState): Slot[] {
  const slots: Slot[] = [];
  for (const leg of s.legs) {
    if (leg.state === "in-sync") slots.push({ state: SlotState.IN_SYNC, low: leg.joinGen, high: 0 });
    else if (leg.joinPhase === 2 && leg.state === "syncing") slots.push({ state: SlotState.IN_SYNC, low: s.generation, high: 0 });
    else if (REFUSED_STATES.has(leg.state)) slots.push(refusedSlot(leg.state));
    else {
      const slot: Slot = { state: leg.full ? SlotState.FULL : SlotState.BITMAP, low: leg.low, high: leg.highBound };
      if (leg.state === "suspended") slot.held = true;
      slots.push(slot);
    }
  }
  return slots;
}

/**
 * The slot of a leg the mirror refuses (foreign, diverged, damaged, too small), which the next
 * open judges it by, and so does a resume after a repair (mirror/suspend.ts): whole, since it
 * got no writes and none were recorded for it. A diverged leg showed a generation this mirror
 * never gave it (written elsewhere): its range ends at 0, so only a leg wiped blank (or one
 * stamped at creation) is taken back. The others were refused before a generation of this
 * slot counted (too small: before it was read; foreign, damaged: none there): any generation
 * of it is taken back, whole.
 */
export function refusedSlot(state: LegState): Slot {
  return { state: SlotState.FULL, low: 0, high: state === "diverged" ? 0 : Number.MAX_SAFE_INTEGER };
}

export function superblockFor(s: MirrorState, leg: MirrorLeg, generation: number): Uint8Array {
  return encodeSuperblock({ mirrorId: s.mirrorId, seq: s.seq, generation, layout: s.layout, legIndex: leg.index, legCount: s.legs.length, open: s.open, slots: slotTable(s) });
}

/** A leg's bitmap page as recorded on disk: missing regions, plus regions copied but not yet flushed on it. */
export function slotPage(s: MirrorState, slot: number, page: number): Uint8Array {
  const leg = s.legs[slot];
  if (leg === undefined || leg.state === "in-sync") return new Uint8Array(PAGE_BYTES);
  const out = leg.needs.page(page).slice();
  const pending = leg.cleanPending.page(page);
  const unflushed = leg.unflushed.page(page);
  for (let i = 0; i < out.length; i++) out[i] = out[i]! | pending[i]! | unflushed[i]!;
  return out;
}

/** A whole bitmap slot as recorded on disk. */
export function slotBytes(s: MirrorState, slot: number): Uint8Array {
  const out = new Uint8Array(s.layout.bitmapBytes);
  for (let page = 0; page < s.pagesPerSlot; page++) out.set(slotPage(s, slot, page), page * PAGE_BYTES);
  return out;
}

/** Set in `into` every region inside a write-intent region set in `intent`. */
export function addActiveRegions(s: MirrorState, into: RegionBitmap, intent: Uint8Array, changedPage?: (page: number) => void): void {
  const count = activeCount(s.layout);
  for (let a = 0; a < count; a++) {
    if ((intent[a >>> 3]! & (1 << (a & 7))) === 0) continue;
    into.setRange(a * s.regionsPerActive, Math.min((a + 1) * s.regionsPerActive, s.regions) - 1, changedPage);
  }
}

/** Write the superblock; `done` once one holding every record made so far is on disk. */
export function commitRecord(s: MirrorState, done: Done): void {
  const wanted = s.recordsMade;
  s.meta.persist(SB_KEY, (errno) => {
    if (errno === 0) s.recordsDurable = Math.max(s.recordsDurable, wanted);
    done(errno);
  });
}
