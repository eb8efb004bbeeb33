/**
 * The mirror's on-leg format (mirror/layout.ts) and the assembly decisions (mirror/assemble.ts):
 * superblock round trip and torn copies, layout sizing, and which leg is current in each case
 * docs/tree.md "Generations" lists.
 */
import { describe, expect, test } from "bun:test";
import { planAssembly, type LegFound } from "../../../src/storage/tree/mirror/assemble.ts";
import {
  DEFAULT_META_BYTES,
  type Layout,
  SUPERBLOCK_AREA,
  SUPERBLOCK_BYTES,
  SlotState,
  type Superblock,
  decodeSuperblockArea,
  encodeSuperblock,
  grownLayout,
  planLayout,
} from "../../../src/storage/tree/mirror/layout.ts";
import { RegionBitmap } from "../../../src/storage/tree/mirror/bitmap.ts";

const GiB = 1024 ** 3;
const layout = planLayout(10 * GiB, 4096) as Layout;
const id = new Uint8Array(16).fill(0xab);
const other = new Uint8Array(16).fill(0xcd);

function sb(legIndex: number, generation: number, seq: number, slots: Superblock["slots"], open = false, mirrorId = id): Superblock {
  return { mirrorId, seq, generation, layout, legIndex, legCount: slots.length, open, slots };
}
function area(...copies: (Superblock | null)[]): Uint8Array {
  const bytes = new Uint8Array(SUPERBLOCK_AREA);
  copies.forEach((copy, i) => copy && bytes.set(encodeSuperblock(copy), i * SUPERBLOCK_BYTES));
  return bytes;
}
const inSync = (low = 1) => ({ state: SlotState.IN_SYNC, low, high: 0 });
const out = (low: number, high: number) => ({ state: SlotState.BITMAP, low, high });
function leg(decodedArea: Uint8Array | null, writeMostly = false): LegFound {
  return { present: decodedArea !== null, sizeBytes: 10 * GiB, blockSize: 4096, writeMostly, decoded: decodedArea === null ? null : decodeSuperblockArea(decodedArea) };
}
const plan = (legs: LegFound[]) => planAssembly(legs, { assumeClean: false, newId: other });

describe("layout", () => {
  test("1 MiB of metadata, 64 KiB regions up to 56 GiB, larger regions beyond; write intent 64 MiB", () => {
    expect(layout).toEqual({ metaBytes: DEFAULT_META_BYTES, dataBytes: 10 * GiB - DEFAULT_META_BYTES, regionBytes: 65536, activeBytes: 64 * 1024 * 1024, bitmapBytes: 114688 });
    const big = planLayout(16 * 1024 * GiB, 4096) as Layout;
    expect(big.regionBytes).toBe(32 * 1024 * 1024);
    expect(Math.ceil(big.dataBytes / big.regionBytes)).toBeLessThanOrEqual(big.bitmapBytes * 8);
    expect(planLayout(DEFAULT_META_BYTES, 4096)).toContain("no room for data");
  });

  test("a grow keeps the regions while the bitmaps describe the size, then doubles them, up to the write-intent regions", () => {
    const bits = layout.bitmapBytes * 8;
    expect(bits * layout.regionBytes).toBe(56 * GiB);
    expect(grownLayout(layout, 56 * GiB)).toEqual({ ...layout, dataBytes: 56 * GiB });
    expect(grownLayout(layout, 56 * GiB + 4096)).toEqual({ ...layout, dataBytes: 56 * GiB + 4096, regionBytes: 128 * 1024 });
    expect(grownLayout(layout, 1000 * GiB)).toEqual({ ...layout, dataBytes: 1000 * GiB, regionBytes: 2 * 1024 * 1024 });
    expect(grownLayout(layout, 56 * 1024 * GiB)).toEqual({ ...layout, dataBytes: 56 * 1024 * GiB, regionBytes: 64 * 1024 * 1024 });
    expect(grownLayout(layout, 56 * 1024 * GiB + 4096)).toBe("the mirror's metadata describes at most 56 TiB (917504 regions of at most 64 MiB, its write-intent regions, fixed when it was created)");
    // Fewer regions per bitmap (what the simulation asks for): the same rule at small sizes.
    expect((grownLayout(layout, 64 * 65536 + 1, 64) as Layout).regionBytes).toBe(131072);
    // Every grown layout is one a superblock can record and read back.
    const grown = grownLayout(layout, 1000 * GiB) as Layout;
    const decoded = decodeSuperblockArea(area({ ...sb(0, 1, 1, [inSync()]), layout: grown }));
    expect(decoded.kind === "valid" && decoded.sb.layout).toEqual(grown);
  });

  test("a bitmap folds into larger regions: a region is set when any region it covers was", () => {
    const bitmap = new RegionBitmap(20, 4096);
    for (const r of [0, 3, 4, 5, 17, 19]) bitmap.set(r);
    bitmap.coarsen(4, 5);
    expect([0, 1, 2, 3, 4].map((r) => bitmap.get(r))).toEqual([true, true, false, false, true]);
    expect(bitmap.count).toBe(3);
    expect(bitmap.regions).toBe(5);
    expect(bitmap.nextSet(5)).toBe(-1); // nothing left past the new count
    bitmap.coarsen(2, 3);
    expect([0, 1, 2].map((r) => bitmap.get(r))).toEqual([true, false, true]);
    expect(bitmap.count).toBe(2);
  });

  test("superblock round trip; the valid copy with the higher seq wins; a torn copy falls back", () => {
    const s1 = sb(0, 3, 10, [inSync(), out(1, 2)]);
    const s2 = { ...s1, seq: 11, generation: 4 };
    const both = area(s1, s2);
    const decoded = decodeSuperblockArea(both);
    expect(decoded.kind).toBe("valid");
    if (decoded.kind === "valid") expect([decoded.sb.seq, decoded.sb.generation, decoded.sb.slots[1]]).toEqual([11, 4, out(1, 2)]);
    both[SUPERBLOCK_BYTES + 100]! ^= 1; // tear the newer copy
    const fallback = decodeSuperblockArea(both);
    expect(fallback.kind === "valid" && fallback.sb.seq).toBe(10);
    both[100]! ^= 1; // tear both
    const damaged = decodeSuperblockArea(both);
    expect(damaged.kind).toBe("damaged");
    expect(damaged.kind === "damaged" && Buffer.from(damaged.mirrorId!).equals(Buffer.from(id))).toBe(true);
    expect(decodeSuperblockArea(new Uint8Array(SUPERBLOCK_AREA)).kind).toBe("blank");
  });
});

describe("assembly", () => {
  test("all blank: create; leg 0 is the source", () => {
    const p = planAssembly([leg(area()), leg(area())], { assumeClean: false, newId: other });
    expect(typeof p !== "string" && [p.create, p.legs.map((l) => [l.state, l.full])]).toEqual([true, [["in-sync", false], ["syncing", true]]]);
    expect(plan([leg(area()), leg(null)])).toContain("cannot create the mirror: leg 1 is unreachable");
  });

  test("both in sync, clean: nothing to do", () => {
    const slots = [inSync(), inSync()];
    const p = plan([leg(area(sb(0, 5, 9, slots))), leg(area(sb(1, 5, 9, slots)))]);
    expect(typeof p !== "string" && [p.generation, p.unclean, p.legs.map((l) => l.state)]).toEqual([5, false, ["in-sync", "in-sync"]]);
  });

  test("an unreachable leg listed in sync refuses the open; one listed out of sync is absent", () => {
    const slots = [inSync(), inSync()];
    expect(plan([leg(area(sb(0, 5, 9, slots))), leg(null)])).toContain("leg 1 is unreachable and the mirror's last record lists it in sync");
    const degraded = [inSync(), out(4, 5)];
    const p = plan([leg(area(sb(0, 6, 10, degraded))), leg(null)]);
    expect(typeof p !== "string" && p.legs.map((l) => [l.state, l.fromSlot])).toEqual([["in-sync", false], ["absent", true]]);
  });

  test("the newest record wins: a stale leg is resynced from its bitmap, an older one whole, a newer one is diverged", () => {
    const authSlots = [inSync(), out(4, 5)];
    const authority = area(sb(0, 6, 10, authSlots));
    const cases: [number, string, boolean][] = [
      [5, "syncing", false], // in range: bitmap
      [4, "syncing", false],
      [3, "syncing", true], // older than when it left: whole leg
    ];
    for (const [gen, state, full] of cases) {
      const p = plan([leg(authority), leg(area(sb(1, gen, 8, [inSync(), inSync()])))]);
      if (typeof p === "string") throw new Error(p);
      expect([gen, p.legs[1]!.state as string, p.legs[1]!.full, p.legs[1]!.fromSlot]).toEqual([gen, state, full, state === "syncing" && !full]);
    }
  });

  test("split brain: each recorded the other out of sync and went on; the newest serves, the other is never overwritten", () => {
    // Leg 0 dropped leg 1 at 4..5 and went on to 6; leg 1 dropped leg 0 at 4..5 and went on to 8.
    const leg0 = area(sb(0, 6, 10, [inSync(), out(4, 5)]));
    const leg1 = area(sb(1, 8, 12, [out(4, 5), inSync()]));
    const p = plan([leg(leg0), leg(leg1)]);
    if (typeof p === "string") throw new Error(p);
    expect([p.authority, p.legs.map((l) => l.state)]).toEqual([1, ["diverged", "in-sync"]]);
    expect(p.legs[0]!.note).toContain("newer than when it left (5): written elsewhere since");
  });

  test("a leg lagging one commit behind the newest record is still in sync", () => {
    const newest = area(sb(0, 6, 12, [inSync(), inSync()]));
    const lagging = area(sb(1, 5, 11, [inSync(), inSync()]));
    const p = plan([leg(newest), leg(lagging)]);
    expect(typeof p !== "string" && p.legs.map((l) => l.state)).toEqual(["in-sync", "in-sync"]);
  });

  test("foreign: another mirror's leg, or this mirror's leg in the wrong slot; blank: resynced whole; torn own superblock: whole", () => {
    const slots = [inSync(), inSync(), inSync()];
    const p = plan([leg(area(sb(0, 2, 3, slots))), leg(area(sb(1, 2, 3, slots, false, other))), leg(area(sb(1, 2, 3, slots)))]);
    expect(typeof p !== "string" && p.legs.map((l) => l.state)).toEqual(["in-sync", "foreign", "foreign"]);
    const blank = plan([leg(area(sb(0, 2, 3, [inSync(), inSync()]))), leg(area())]);
    expect(typeof blank !== "string" && [blank.legs[1]!.state, blank.legs[1]!.full, blank.generation]).toEqual(["syncing", true, 3]);
    const torn = area(sb(1, 2, 3, [inSync(), inSync()]));
    torn[50]! ^= 1;
    const tornPlan = plan([leg(area(sb(0, 2, 3, [inSync(), inSync()]))), leg(torn)]);
    expect(typeof tornPlan !== "string" && [tornPlan.legs[1]!.state, tornPlan.legs[1]!.full]).toEqual(["syncing", true]);
  });

  test("another mirror's disk in a slot of the same number: its generation does not compare with ours; the identity most legs hold wins, a tie refuses", () => {
    // Leg 0 was suspended and a disk that was slot 0 of another mirror (generation 9) put in its place (tree sim seed 877).
    const stranger = area(sb(0, 9, 20, [inSync(), out(1, 1)], false, other));
    const ours = [{ ...out(2, 3), held: true }, inSync(), inSync()];
    const p = plan([leg(stranger), leg(area(sb(1, 3, 6, ours))), leg(area(sb(2, 3, 6, ours)))]);
    if (typeof p === "string") throw new Error(p);
    expect([p.authority, Buffer.from(p.mirrorId).equals(Buffer.from(id)), p.generation, p.legs.map((l) => l.state)]).toEqual([1, true, 3, ["suspended", "in-sync", "in-sync"]]);
    // Without the hold: refused as foreign, never touched.
    const released = [out(2, 3), inSync(), inSync()];
    const q = plan([leg(stranger), leg(area(sb(1, 3, 6, released))), leg(area(sb(2, 3, 6, released)))]);
    expect(typeof q !== "string" && q.legs.map((l) => l.state)).toEqual(["foreign", "in-sync", "in-sync"]);
    // One leg each: which mirror this is cannot be told from the legs.
    const two = plan([leg(stranger), leg(area(sb(1, 3, 6, [out(2, 3), inSync()])))]);
    expect(two).toContain("legs 0 and 1 hold metadata of different mirrors");
  });

  test("unclean stop: every in-sync leg but the source (not write-mostly) resyncs the write-intent regions, generation goes up", () => {
    const slots = [inSync(), inSync(), inSync()];
    const p = plan([leg(area(sb(0, 4, 7, slots, true)), true), leg(area(sb(1, 4, 7, slots, true))), leg(area(sb(2, 4, 7, slots, true)))]);
    if (typeof p === "string") throw new Error(p);
    expect([p.unclean, p.generation, p.legs.map((l) => [l.state, l.fromActive])]).toEqual([true, 5, [["syncing", true], ["in-sync", false], ["syncing", true]]]);
  });

  test("a configuration shorter than the record refuses when it drops an in-sync leg", () => {
    const slots = [inSync(), inSync(), inSync()];
    expect(plan([leg(area(sb(0, 2, 3, slots))), leg(area(sb(1, 2, 3, slots)))])).toContain("slot 2 of the mirror is in sync but the configuration has only 2 legs");
  });
  test("a held slot (suspended by the operator) stays suspended whatever the leg holds or whether it answers; its bitmap range is kept; unknown slot flags are damage", () => {
    const slots = [inSync(), { ...out(1, 2), held: true }];
    const bytes = area(sb(0, 3, 10, slots));
    const decoded = decodeSuperblockArea(bytes);
    expect(decoded.kind === "valid" && decoded.sb.slots[1]).toEqual({ state: SlotState.BITMAP, low: 1, high: 2, held: true });
    expect(decoded.kind === "valid" && decoded.sb.slots[0]).toEqual(inSync()); // no flag, no field
    for (const second of [leg(area(sb(1, 2, 9, [inSync(), inSync()]))), leg(null), leg(new Uint8Array(SUPERBLOCK_AREA))]) {
      const p = plan([leg(bytes), second]);
      if (typeof p === "string") throw new Error(p);
      expect(p.legs[1]).toMatchObject({ state: "suspended", fromSlot: true, full: false, low: 1, high: 2 });
      expect(p.generation).toBe(3);
    }
    const view = new DataView(bytes.buffer);
    view.setUint32(96 + 24 + 4, 2, true); // slot 1 flags: an unknown bit
    view.setUint32(508, Bun.hash.crc32(bytes.subarray(0, 508)) >>> 0, true);
    const bad = decodeSuperblockArea(bytes);
    expect(bad.kind === "damaged" && bad.reason).toBe("bad slot flags 2");
  });
});
