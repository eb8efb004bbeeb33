/**
 * Growing a mirror online (storage/tree/mirror/grow.ts, docs/tree.md "Growing a mirror") on
 * simulated legs (rig.ts): the new range reads as zeroes on every leg whatever the legs held
 * there, the record of the new size is on every leg before it is served, a reopened mirror
 * keeps it, writes go on meanwhile; refusals name their reason; a leg failing during the grow
 * fails the grow and nothing is served past the old end; once it is back in sync the grow
 * succeeds, and a leg degraded afterwards resyncs only its dirty regions, the new range too.
 */
import { describe, expect, test } from "bun:test";
import { Errno } from "../../../src/lib/errno.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import { call, type Done, type StoragePort } from "../../../src/storage/port.ts";
import { decodeSuperblockArea, type Layout, SUPERBLOCK_AREA } from "../../../src/storage/tree/mirror/layout.ts";
import type { MirrorPort } from "../../../src/storage/tree/mirror/mirror.ts";
import { Rig, filled } from "./rig.ts";
import type { SimStore } from "./sim-leg.ts";
import { SIM_META_BYTES } from "./topology.ts";

const KiB = 1024;
const DATA = 256 * KiB;
const LEG = SIM_META_BYTES + DATA;
const ROOM = 256 * KiB; // what each store holds past the leg's visible end

/** A leg that shows only the first `visible` bytes of its store and can grow into the rest (a file leg). */
class Window extends PassThrough {
  constructor(
    next: StoragePort,
    private visible: number,
    private readonly store: SimStore,
    private readonly resizable = true,
  ) {
    super(next);
  }
  override get size(): number {
    return this.visible;
  }
  override get resize(): ((size: number, done: Done) => void) | undefined {
    if (!this.resizable) return undefined;
    return (size, done) => {
      if (size > this.store.size) return done(Errno.ENOSPC);
      this.visible = size;
      done(0);
    };
  }
}

/** Holds the first write to a leg that starts at `at` until `release(errno)` completes it with that. */
class Gate extends PassThrough {
  private readonly held: Done[] = [];
  constructor(
    next: StoragePort,
    private readonly at: number,
  ) {
    super(next);
  }
  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    if (offset === this.at && this.held.length === 0 && !this.released) this.held.push(done);
    else super.write(offset, data, fua, done);
  }
  get holding(): number {
    return this.held.length;
  }
  private released = false;
  release(errno: number): void {
    this.released = true;
    for (const done of this.held.splice(0)) done(errno);
  }
}

async function grownRig(options: { resizable?: boolean[]; budgetMs?: number; growRegions?: number; wrap?: (i: number, port: StoragePort) => StoragePort } = {}) {
  const rig = new Rig();
  const stores = [rig.store(LEG + ROOM, options.budgetMs ?? 1000), rig.store(LEG + ROOM, options.budgetMs ?? 1000)];
  // What the legs held past their end before (an earlier, larger use of the device): not alike.
  stores[0]!.data.fill(0x11, LEG);
  stores[1]!.data.fill(0xee, LEG);
  const open = (visible: number) =>
    rig.settle(
      (async () => {
        const legs = stores.map((store, i) => {
          const window = new Window(store.port(), visible, store, options.resizable?.[i] ?? true);
          return { label: store.name, port: options.wrap?.(i, window) ?? window, writeMostly: false };
        });
        const { openMirror } = await import("../../../src/storage/tree/mirror/mirror.ts");
        return openMirror(legs, {
          clock: rig.tclock,
          randomId: () => rig.prng.bytes(16),
          log: rig.log,
          probeIntervalMs: 100,
          layout: { metaBytes: SIM_META_BYTES, regionBytes: 4096, activeBytes: 16384 },
          assumeClean: true,
          growRegions: options.growRegions,
        });
      })(),
    );
  return { rig, stores, open, mirror: await open(LEG) };
}

function resize(rig: Rig, m: MirrorPort, size: number): Promise<number> {
  return rig.settle(new Promise<number>((resolve) => m.resize(size, resolve)));
}

function recordedLayout(store: SimStore): Layout {
  const decoded = decodeSuperblockArea(store.durable.subarray(0, SUPERBLOCK_AREA));
  if (decoded.kind !== "valid") throw new Error(`${store.name}: superblock ${decoded.kind}`);
  return decoded.sb.layout;
}

function recordedSize(store: SimStore): number {
  return recordedLayout(store).dataBytes;
}

describe("growing a mirror", () => {
  test("the new range reads as zeroes on every leg; the record is on both legs; a reopened mirror keeps the size", async () => {
    const { rig, stores, open, mirror: m } = await grownRig();
    for (let at = 0; at < DATA; at += 64 * KiB) await rig.write(m, at, filled(64 * KiB, 5));
    const to = DATA + 128 * KiB;
    // Writes in flight while it grows are not disturbed.
    const during = call.write(m, 64 * KiB, filled(8192, 6));
    expect(await resize(rig, m, to)).toBe(0);
    await rig.settle(during);
    expect(m.size).toBe(to);
    for (const store of stores) {
      expect(recordedSize(store)).toBe(to);
      // The leg's new range is zeroes, whatever it held before.
      expect(store.durable.subarray(LEG, SIM_META_BYTES + to).every((b) => b === 0)).toBe(true);
      // Past the new end it is untouched.
      expect(store.data[SIM_META_BYTES + to]).toBe(store === stores[0] ? 0x11 : 0xee);
    }
    for (const at of [DATA, DATA + 64 * KiB]) expect((await rig.read(m, at, 64 * KiB)).every((b) => b === 0)).toBe(true);
    await rig.write(m, to - 4096, filled(4096, 7)); // the new last block
    expect(stores.map((s) => s.data[SIM_META_BYTES + to - 1])).toEqual([7, 7]);
    await expect(call.write(m, to, filled(4096, 8))).rejects.toThrow(/ENOSPC/);
    expect(rig.logs.some((l) => l.includes(`mirror: grown from 256 KiB to 384 KiB`))).toBe(true);
    await rig.settle(m.close());

    const again = await open(SIM_META_BYTES + to);
    expect(again.size).toBe(to);
    expect(again.legs.map((l) => l.state)).toEqual(["in-sync", "in-sync"]);
    expect((await rig.read(again, to - 4096, 4096))[0]).toBe(7);
    expect((await rig.read(again, 64 * KiB, 8192)).every((b) => b === 6)).toBe(true);
    expect(again.resyncedBytes).toBe(0);
  });

  test("the new size is served only once its record is on every leg", async () => {
    const { rig, stores, mirror: m } = await grownRig();
    const to = DATA + 64 * KiB;
    let result = null as number | null;
    m.resize(to, (errno) => (result = errno));
    let steps = 0;
    while (result === null) {
      rig.run(1);
      await undefined;
      if (m.size === to) expect(stores.map(recordedSize)).toEqual([to, to]);
      else expect(m.size).toBe(DATA);
      if (++steps > 10_000) throw new Error("the grow did not finish");
    }
    expect(result).toBe(0);
    expect(m.size).toBe(to);
    expect(steps).toBeGreaterThan(6); // resize, zero, flush and the record: several leg round trips
  });

  test("refusals name their reason and change nothing", async () => {
    const { rig, stores, mirror: m } = await grownRig({ resizable: [true, false] });
    expect(m.resizeProblem(DATA - 4096)).toContain("does not shrink");
    expect(await resize(rig, m, DATA - 4096)).toBe(Errno.ENOTSUP);
    expect(m.resizeProblem(DATA + 100)).toContain("not a multiple");
    expect(m.resizeProblem(1024 * 1024 * 1024)).toContain("describes at most 512 MiB (32768 regions of at most 16 KiB");
    expect(await resize(rig, m, 1024 * 1024 * 1024)).toBe(Errno.EFBIG);
    expect(m.resizeProblem(DATA + 64 * KiB)).toContain(`leg ${stores[1]!.name} is`);
    expect(await resize(rig, m, DATA + 64 * KiB)).toBe(Errno.ENOSPC);
    expect(m.resizeProblem(DATA)).toBeNull();
    expect(m.size).toBe(DATA);
    expect(stores.map(recordedSize)).toEqual([DATA, DATA]);
  });

  test("a leg failing during the grow fails it; after the leg resyncs the grow succeeds; a later outage resyncs only dirty regions of the new range", async () => {
    const { rig, stores, mirror: m } = await grownRig({ budgetMs: 300 });
    const [a, b] = stores as [SimStore, SimStore];
    b.cut(Number.POSITIVE_INFINITY);
    expect(await resize(rig, m, DATA + 128 * KiB)).not.toBe(0); // b's zeroes time out
    expect(m.size).toBe(DATA);
    expect(recordedSize(a)).toBe(DATA);
    expect(m.legs[1]!.state).toBe("degraded");
    expect(m.resizeProblem(DATA + 128 * KiB)).toContain("a mirror grows when every leg is in sync");
    b.up();
    await rig.until(() => m.legs[1]!.state === "in-sync", "leg back in sync");
    expect(await resize(rig, m, DATA + 128 * KiB)).toBe(0);
    expect(stores.map(recordedSize)).toEqual([DATA + 128 * KiB, DATA + 128 * KiB]);
    const moved = m.resyncedBytes;
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, DATA + 64 * KiB, filled(4096, 9)); // degrades b; recorded in its (grown) bitmap
    expect(m.legs[1]!.state).toBe("degraded");
    b.up();
    await rig.until(() => m.legs[1]!.state === "in-sync", "leg back in sync");
    expect(m.resyncedBytes - moved).toBe(4096);
    expect(b.data[SIM_META_BYTES + DATA + 64 * KiB]).toBe(9);
    expect(Buffer.compare(a.data.subarray(SIM_META_BYTES, SIM_META_BYTES + m.size), b.data.subarray(SIM_META_BYTES, SIM_META_BYTES + m.size))).toBe(0);
  });
  test("past what its bitmaps describe the regions double: writes before and during the switch complete, the record keeps them, an outage resyncs whole larger regions", async () => {
    // 64 regions per bitmap: 256 KiB of 4 KiB regions is all they describe.
    const { rig, stores, open, mirror: m } = await grownRig({ growRegions: 64 });
    const [a, b] = stores as [SimStore, SimStore];
    const to = DATA + 128 * KiB;
    expect(m.resizeProblem(to)).toBeNull();
    expect(m.resizeProblem(2 * 1024 * KiB)).toContain("describes at most 1 MiB (64 regions of at most 16 KiB");
    // A write arrives every simulated millisecond all through the grow: some run when the
    // switch is asked for, some arrive while it waits for them; what each offset last got is
    // checked after.
    let result = null as number | null;
    m.resize(to, (errno) => (result = errno));
    const last = new Map<number, number>();
    const writes: Promise<void>[] = [];
    let duringWait = 0;
    for (let n = 0; result === null; n++) {
      if (n > 10_000) throw new Error("the grow did not finish");
      const at = (n * 8 * KiB) % DATA;
      last.set(at, n % 256);
      if (m.state.quiesced !== null) duringWait++;
      writes.push(call.write(m, at, filled(4096, n % 256)));
      rig.run(1);
      await undefined;
    }
    expect(result).toBe(0);
    await rig.settle(Promise.all(writes));
    expect(duringWait).toBeGreaterThan(0);
    for (const [at, value] of last) expect((await rig.read(m, at, 4096)).every((x) => x === value)).toBe(true);
    expect(m.size).toBe(to);
    expect(m.layout.regionBytes).toBe(8192);
    expect(stores.map(recordedLayout).map((l) => [l.dataBytes, l.regionBytes])).toEqual([[to, 8192], [to, 8192]]);
    expect(rig.logs.some((l) => l.includes("mirror: regions of 8 KiB from now on"))).toBe(true);
    await rig.write(m, to - 4096, filled(4096, 7));
    await rig.settle(m.close());

    const again = await open(SIM_META_BYTES + to);
    expect([again.size, again.layout.regionBytes]).toEqual([to, 8192]);
    expect(again.legs.map((l) => l.state)).toEqual(["in-sync", "in-sync"]);
    expect((await rig.read(again, to - 4096, 4096))[0]).toBe(7);
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(again, DATA + 64 * KiB, filled(4096, 9)); // degrades b: one 8 KiB region missing
    expect(again.legs[1]!.state).toBe("degraded");
    b.up();
    await rig.until(() => again.legs[1]!.state === "in-sync", "leg back in sync");
    expect(again.resyncedBytes).toBe(8192);
    expect(Buffer.compare(a.data.subarray(SIM_META_BYTES, SIM_META_BYTES + to), b.data.subarray(SIM_META_BYTES, SIM_META_BYTES + to))).toBe(0);
  });

  test("a write in flight when the regions would double holds the switch back: a leg failing it fails the grow, and its region is resynced", async () => {
    const at = 200 * KiB; // region 50 of 4 KiB; past the 48 regions of 8 KiB the grow makes
    const gates: Gate[] = [];
    const { rig, stores, mirror: m } = await grownRig({ growRegions: 64, budgetMs: 300, wrap: (i, port) => (i === 1 ? (gates[0] = new Gate(port, SIM_META_BYTES + at)) : port) });
    const [a, b] = stores as [SimStore, SimStore];
    const gate = gates[0]!;
    const write = call.write(m, at, filled(4096, 42)); // on a at once; held on b
    await rig.until(() => gate.holding === 1, "the write held on b");
    let grown = null as number | null;
    m.resize(DATA + 128 * KiB, (errno) => (grown = errno));
    rig.run(1000); // far longer than the zeroes and their flush take
    await undefined;
    expect([grown, m.layout.regionBytes]).toEqual([null, 4096]); // the switch waits for the write
    gate.release(Errno.EIO); // b fails it: degraded, the write's region recorded as missing on it
    await rig.until(() => grown !== null, "the grow ends");
    expect(grown).toBe(Errno.EAGAIN);
    await rig.settle(write);
    expect(rig.logs.some((l) => l.includes("left the in-sync set meanwhile"))).toBe(true);
    expect(m.layout.regionBytes).toBe(4096);
    await rig.until(() => m.legs[1]!.state === "in-sync", "leg back in sync");
    expect(b.data[SIM_META_BYTES + at]).toBe(42);
    // Once every leg is in sync again the grow goes through, and doubles the regions.
    expect(await resize(rig, m, DATA + 128 * KiB)).toBe(0);
    expect(m.layout.regionBytes).toBe(8192);
    expect(Buffer.compare(a.data.subarray(SIM_META_BYTES, SIM_META_BYTES + m.size), b.data.subarray(SIM_META_BYTES, SIM_META_BYTES + m.size))).toBe(0);
  });

  test("a leg is not suspended while a grow runs, and a mirror with a suspended leg does not grow", async () => {
    const { rig, mirror: m } = await grownRig();
    const held = (action: "suspend" | "resume") => rig.settle(new Promise<number>((resolve) => m.setLegHeld(1, action, resolve)));
    const growing = resize(rig, m, DATA + 64 * KiB);
    expect(m.legProblem(1, "suspend")).toContain("a grow of this mirror is running");
    expect(await held("suspend")).toBe(Errno.EBUSY);
    expect(await growing).toBe(0);
    expect(await held("suspend")).toBe(0);
    expect(m.resizeProblem(DATA + 128 * KiB)).toBe("leg L1 is suspended: a mirror grows when every leg is in sync");
    expect(await resize(rig, m, DATA + 128 * KiB)).toBe(Errno.EBUSY);
    expect(m.size).toBe(DATA + 64 * KiB);
  });
});
