/**
 * Mirror scenarios on simulated legs (rig.ts), each one story with the numbers its path must
 * produce: short outages only delay, long ones degrade and resync exactly the dirty regions
 * while I/O continues, stale/foreign/diverged legs are never read as current, an unclean stop
 * resyncs only the write-intent regions, bounds hold.
 */
import { describe, expect, test } from "bun:test";
import { Errno } from "../../../src/lib/errno.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import { call, type Done, type Extent, type ZeroFlags } from "../../../src/storage/port.ts";
import type { MirrorPort } from "../../../src/storage/tree/mirror/mirror.ts";
import { encodeSuperblock, decodeSuperblockArea, SlotState, SUPERBLOCK_AREA } from "../../../src/storage/tree/mirror/layout.ts";
import { Rig, filled, legData, strangerSuperblocks } from "./rig.ts";

const KiB = 1024;
const LEG = 45056 + 256 * KiB; // metadata + 256 KiB of data

describe("mirror over simulated legs", () => {
  test("a new mirror syncs leg 1 from leg 0; --assume-clean skips that", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG), rig.store(LEG)];
    a.data.fill(7, 45056);
    const m = await rig.mirror([a, b]);
    expect(m.size).toBe(256 * KiB);
    expect(m.legs.map((l) => l.state)).toEqual(["in-sync", "syncing"]);
    await rig.until(() => m.legs[1]!.state === "in-sync", "leg 1 in sync");
    expect(Buffer.from(legData(b, m)).equals(Buffer.from(legData(a, m)))).toBe(true);
    expect(m.resyncedBytes).toBe(256 * KiB);

    const rig2 = new Rig();
    const m2 = await rig2.mirror([rig2.store(LEG), rig2.store(LEG)], { assumeClean: true });
    expect(m2.legs.map((l) => l.state)).toEqual(["in-sync", "in-sync"]);
    expect(m2.generation).toBe(1);
  });

  test("an outage shorter than the budget only delays writes: no degrade, both legs have the data", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 1000), rig.store(LEG, 1000)];
    const m = await rig.mirror([a, b], { assumeClean: true });
    b.cut(600); // < the 1000 ms budget
    const started = rig.clock.now;
    await rig.write(m, 8192, filled(8192, 1));
    expect(rig.clock.now - started).toBeGreaterThanOrEqual(590); // it waited for the leg
    expect(m.legs.map((l) => [l.state, l.degradations])).toEqual([["in-sync", 0], ["in-sync", 0]]);
    expect(b.data[45056 + 8192]).toBe(1);
    expect(m.generation).toBe(1);
  });

  test("an outage longer than the budget degrades the leg; it returns and only the dirty regions are resynced, while I/O continues", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 500), rig.store(LEG, 500)];
    const m = await rig.mirror([a, b], { assumeClean: true });
    await rig.write(m, 0, filled(64 * KiB, 1)); // both legs have it
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 16 * KiB, filled(4096, 2)); // fails on b after 500 ms → degraded, still completes
    expect(m.legs[1]!.state).toBe("degraded");
    expect(m.generation).toBe(2);
    await rig.write(m, 100 * KiB, filled(8192, 3)); // goes to a only
    await rig.settle(call.flush(m));
    const snapshot = m.describe();
    expect(snapshot.legs![1]!.state).toBe("degraded");
    expect(snapshot.legs![1]!.dirtyBytes).toBe(3 * 4096); // regions 4, 25, 26
    expect(snapshot.legs![1]!.lastError).toContain("timed out");
    b.up();
    await rig.until(() => m.legs[1]!.state === "syncing", "probe finds the leg back");
    // I/O while the leg resyncs: a write into a dirty region and one elsewhere.
    const during = [rig.write(m, 100 * KiB, filled(4096, 4)), rig.write(m, 200 * KiB, filled(4096, 5))];
    await rig.settle(Promise.all(during));
    await rig.until(() => m.legs[1]!.state === "in-sync", "leg back in sync");
    expect(m.resyncedBytes).toBeLessThanOrEqual(3 * 4096); // the dirty regions, not the 256 KiB
    expect(m.resyncedBytes).toBeGreaterThan(0);
    expect(Buffer.from(legData(b, m)).equals(Buffer.from(legData(a, m)))).toBe(true);
    expect(legData(b, m)[16 * KiB]).toBe(2);
    expect(legData(b, m)[100 * KiB]).toBe(4);
    expect(rig.logs.some((l) => /in sync at generation 2; resync moved \d+ bytes/.test(l))).toBe(true);
  });

  test("a syncing leg serves reads of the regions it has resynced, never of those it still misses", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 500), rig.store(LEG, 500)];
    const m = await rig.mirror([a, b], { assumeClean: true, resyncWindow: 1, resyncChunkBytes: 4096 });
    for (let at = 0; at < m.size; at += 64 * KiB) await rig.write(m, at, filled(64 * KiB, 1));
    b.cut(Number.POSITIVE_INFINITY);
    for (let r = 8; r < 40; r++) await rig.write(m, r * 4096, filled(4096, 2)); // 32 regions b misses
    expect(m.legs[1]!.state).toBe("degraded");
    // The resync copies one region at a time on a slow leg: catch it half way.
    b.up();
    b.slow(60_000, 20);
    await rig.until(() => m.legs[1]!.state === "syncing" && m.legs[1]!.needs.count <= 24 && m.legs[1]!.needs.count >= 8, "resync half way");
    const port = m.legs[1]!.port!;
    const offsets: number[] = [];
    const read = port.read.bind(port);
    port.read = (offset, into, done) => {
      offsets.push(offset - m.layout.metaBytes);
      read(offset, into, done);
    };
    const copied = 8; // the resync starts at the first region it misses and goes up
    expect(m.legs[1]!.needs.get(copied)).toBe(false);
    let onMissing = 0;
    for (let i = 0; i < 8; i++) {
      // The last region it misses: the resync, going up, reaches it last.
      let missing = -1;
      for (let r = m.legs[1]!.needs.nextSet(0); r >= 0; r = m.legs[1]!.needs.nextSet(r + 1)) missing = r;
      const before = offsets.length;
      expect((await rig.read(m, missing * 4096, 4096)).every((x) => x === 2)).toBe(true); // still missing on b
      expect((await rig.read(m, (missing - 1) * 4096, 8192))[4096]).toBe(2); // spans a missing region
      onMissing += offsets.length - before;
      expect((await rig.read(m, 50 * 4096, 4096)).every((x) => x === 1)).toBe(true); // never dirty
      expect((await rig.read(m, copied * 4096, 4096)).every((x) => x === 2)).toBe(true); // resynced
    }
    expect(onMissing).toBe(0);
    expect(offsets.length).toBeGreaterThan(0); // round-robin sent the other reads to the syncing leg too
    await rig.until(() => m.legs[1]!.state === "in-sync", "resync done", 1_200_000);
  });

  test("the last in-sync leg is never degraded: its failure goes to the caller", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    const m = await rig.mirror([a, b], { assumeClean: true });
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 0, filled(4096, 1));
    expect(m.legs[1]!.state).toBe("degraded");
    a.cut(Number.POSITIVE_INFINITY);
    const failed = await rig.settle(call.write(m, 0, filled(4096, 2)).then(() => 0, (e: { errno: number }) => e.errno));
    expect(failed).toBe(Errno.ETIMEDOUT);
    expect(m.legs[0]!.state).toBe("in-sync");
    const readFailed = await rig.settle(rig.read(m, 0, 4096).then(() => 0, (e: { errno: number }) => e.errno));
    expect(readFailed).toBe(Errno.ETIMEDOUT);
    expect(rig.logs.some((l) => l.includes("last in-sync leg"))).toBe(true);
  });

  test("reads: round-robin spreads them, write-mostly legs are not read while another is in sync, least-latency picks the fast leg", async () => {
    const rig = new Rig();
    const legs = [rig.store(LEG), rig.store(LEG), rig.store(LEG)];
    const m = await rig.mirror(legs, { assumeClean: true, writeMostly: [false, false, true] });
    const before = legs.map((s) => s.counters.requests);
    for (let i = 0; i < 20; i++) await rig.read(m, 0, 4096);
    const reads = legs.map((s, i) => s.counters.requests - before[i]!);
    expect(reads).toEqual([10, 10, 0]);

    const rig2 = new Rig();
    const fast = rig2.store(LEG);
    const slow = new (fast.constructor as typeof import("./sim-leg.ts").SimStore)("slow", LEG, rig2.clock, rig2.prng, { budgetMs: 5000, latencyMinMs: 40, latencySpreadMs: 0 });
    const m2 = await rig2.mirror([slow, fast], { assumeClean: true, readPolicy: "least-latency" });
    const fastBefore = fast.counters.requests;
    const slowBefore = slow.counters.requests;
    for (let i = 0; i < 20; i++) await rig2.read(m2, 0, 4096);
    expect(fast.counters.requests - fastBefore).toBeGreaterThanOrEqual(17);
    expect(slow.counters.requests - slowBefore).toBeLessThanOrEqual(3);
  });

  test("a leg with another mirror's metadata is foreign and never touched; as many legs of each refuse the open; a blank replacement is resynced whole", async () => {
    const rig = new Rig();
    const [a, b, c, d] = [rig.store(LEG), rig.store(LEG), rig.store(LEG), rig.store(LEG)];
    const m1 = await rig.mirror([a, b, d], { assumeClean: true });
    await rig.write(m1, 0, filled(4096, 9));
    await rig.settle(m1.close());
    // c holds the metadata of another mirror (same slot index, another identity).
    await strangerSuperblocks(c, 3, 2, LEG);
    const before = c.data.slice();
    const m1again = await rig.mirror([a, b, c]);
    expect(m1again.legs[2]!.state).toBe("foreign");
    await rig.write(m1again, 0, filled(4096, 3));
    rig.run(500);
    expect(Buffer.from(c.data).equals(Buffer.from(before))).toBe(true); // never written
    await rig.settle(m1again.close());
    // One leg of each identity: which mirror this is cannot be told from its legs (assemble.ts).
    await expect(rig.mirror([a, c])).rejects.toThrow(/legs 0 and 1 hold metadata of different mirrors/);
    expect(Buffer.from(c.data).equals(Buffer.from(before))).toBe(true);
    // A blank disk in its place is resynced whole.
    const blank = rig.store(LEG, 1000, "blank");
    const m1blank = await rig.mirror([a, b, blank]);
    expect(m1blank.legs[2]!.state).toBe("syncing");
    await rig.until(() => m1blank.legs[2]!.state === "in-sync", "blank leg in sync");
    expect(m1blank.resyncedBytes).toBe(m1blank.size);
    expect(legData(blank, m1blank)[0]).toBe(3);
    expect(decodeSuperblockArea(a.data.subarray(0, SUPERBLOCK_AREA)).kind).toBe("valid");
    expect(encodeSuperblock).toBeDefined();
  });

  test("an unreachable leg the record lists in sync blocks the open (it may be newer); one recorded out of sync does not", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    const m = await rig.mirror([a, b], { assumeClean: true });
    await rig.settle(m.close());
    b.cut(Number.POSITIVE_INFINITY);
    await expect(rig.mirror([a, b])).rejects.toThrow(/leg 1 is unreachable and the mirror's last record lists it in sync/);
    b.up();
    const m2 = await rig.mirror([a, b]);
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m2, 0, filled(4096, 1)); // b degraded, recorded
    rig.run(10);
    a.crash(() => true); // the node dies (nothing lost: the record was FUA)
    b.up();
    b.cut(Number.POSITIVE_INFINITY);
    const m3 = await rig.mirror([a, b]);
    expect(m3.legs.map((l) => l.state)).toEqual(["in-sync", "absent"]);
    expect(m3.generation).toBe(2);
    b.up();
    await rig.until(() => m3.legs[1]!.state === "in-sync", "absent leg returns and resyncs");
    expect(legData(b, m3)[0]).toBe(1);
  });

  test("after an unclean stop only the write-intent regions are resynced; after a clean close nothing is", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG), rig.store(LEG)];
    const m = await rig.mirror([a, b], { assumeClean: true, layout: { metaBytes: 45056, regionBytes: 4096, activeBytes: 16384 } });
    await rig.write(m, 0, filled(4096, 1));
    await rig.write(m, 128 * KiB, filled(4096, 2));
    // The node crashes without a clean close: both legs keep their writes (flush not needed here).
    for (const s of [a, b]) s.crash(() => true);
    const m2 = await rig.mirror([a, b]);
    expect(m2.legs.map((l) => l.state)).toEqual(["in-sync", "syncing"]);
    await rig.until(() => m2.legs[1]!.state === "in-sync", "intent regions resynced");
    expect(m2.resyncedBytes).toBe(2 * 16384); // two write-intent regions, not the whole 256 KiB
    await rig.settle(m2.close());
    const m3 = await rig.mirror([a, b]);
    expect(m3.legs.map((l) => l.state)).toEqual(["in-sync", "in-sync"]);
    expect(rig.logs.filter((l) => l.includes("after an unclean stop")).length).toBe(1);
  });

  test("a leg that just joined holds its bitmaps on disk: a crash right after its join loses no degraded leg's dirty regions (tree sim seed 104895)", async () => {
    const rig = new Rig();
    const [a, b, c] = [rig.store(LEG, 300), rig.store(LEG, 300), rig.store(LEG, 300)];
    const m = await rig.mirror([a, b, c], { assumeClean: true });
    c.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 8192, filled(4096, 1)); // c degrades; the region goes into c's bitmap on a and b
    a.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 64 * KiB, filled(4096, 2)); // a degrades too
    await rig.settle(call.flush(m)); // b alone in sync; c's bitmap is on b's disk
    a.up();
    await rig.until(() => m.legs[0]!.state === "in-sync", "a resynced and joined");
    a.cut(Number.POSITIVE_INFINITY); // no later flush reaches a
    for (const s of [a, b, c]) s.crash(() => false); // what was not flushed is gone
    a.up();
    c.up();
    // a and b hold the same record (generation and sequence): a, the first, is the authority.
    const m2 = await rig.mirror([a, b, c]);
    await rig.until(() => m2.legs.every((l) => l.state === "in-sync"), "every leg in sync");
    expect(legData(c, m2)[8192]).toBe(1);
    expect(Buffer.from(legData(c, m2)).equals(Buffer.from(legData(b, m2)))).toBe(true);
  });

  test("after an unclean stop the write-intent regions of every leg count, not only the authority's (tree sim seed 100778)", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 500), rig.store(LEG, 500)];
    // b's superblock writes are held (in flight until the crash): the commit that degrades a
    // never lands, as when a stripe leg takes a write's data but not the superblock.
    let holdRecords = false;
    class HoldRecords extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        if (holdRecords && offset < SUPERBLOCK_AREA) return;
        super.write(offset, data, fua, done);
      }
    }
    const m = await rig.mirror([a, b], { labels: ["a", "b"], wrap: [undefined, (p) => new HoldRecords(p)], probeIntervalMs: 100, layout: { metaBytes: 45056, regionBytes: 4096, activeBytes: 16384 }, assumeClean: true });
    a.cut(Number.POSITIVE_INFINITY);
    holdRecords = true;
    void call.write(m, 32 * KiB, filled(4096, 3)).catch(() => {}); // its intent and data reach b only
    rig.run(800); // a spends its budget and is degraded; the record of that stays in flight
    expect(m.legs[0]!.state).toBe("degraded");
    expect(b.data[45056 + 32 * KiB]).toBe(3);
    for (const s of [a, b]) s.crash(() => true);
    a.up();
    // Both records are the first one: a is the authority, and its write-intent bitmap lacks the write.
    const m2 = await rig.mirror([a, b]);
    await rig.until(() => m2.legs.every((l) => l.state === "in-sync"), "every leg in sync");
    expect(Buffer.from(legData(a, m2)).equals(Buffer.from(legData(b, m2)))).toBe(true);
  });

  test("a join whose commit lands on the joining leg only: after a crash the leg is resynced, not called diverged (tree sim seed 26646)", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 500), rig.store(LEG, 500)];
    // Once b commits its join, a's superblock writes are held (in flight until the crash): the
    // record listing b in sync lands on b only, as when a is down at that moment.
    let m: MirrorPort | null = null;
    let holding = false;
    class HoldRecords extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        holding ||= m !== null && m.legs[1]!.joinPhase === 2;
        if (holding && offset < SUPERBLOCK_AREA) return;
        super.write(offset, data, fua, done);
      }
    }
    m = await rig.mirror([a, b], { labels: ["a", "b"], wrap: [(p) => new HoldRecords(p), undefined], probeIntervalMs: 100, layout: { metaBytes: 45056, regionBytes: 4096, activeBytes: 16384 }, assumeClean: false });
    await rig.write(m, 0, filled(4096, 4));
    await rig.until(() => holding, "b's join commit");
    rig.run(50);
    const onB = decodeSuperblockArea(b.data.subarray(0, SUPERBLOCK_AREA));
    expect(onB.kind === "valid" && onB.sb.generation).toBe(1); // the commit reached b
    for (const s of [a, b]) s.crash(() => true);
    b.cut(Number.POSITIVE_INFINITY); // absent when the node comes back
    const m2 = await rig.mirror([a, b]);
    expect(m2.legs.map((l) => l.state)).toEqual(["in-sync", "absent"]);
    b.up();
    await rig.until(() => m2.legs[1]!.state === "in-sync" || m2.legs[1]!.state === "diverged", "b judged");
    expect(m2.legs[1]!.state).toBe("in-sync");
    expect(legData(b, m2)[0]).toBe(4);
  });

  test("a FLUSH commits a degradation record that failed before clearing write-intent regions (tree sim seed 27063)", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    // a's superblock writes fail for a while: the record of b's degradation does not land.
    let failRecords = false;
    class FailRecords extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        if (failRecords && offset < SUPERBLOCK_AREA) return done(Errno.EIO);
        super.write(offset, data, fua, done);
      }
    }
    const m = await rig.mirror([a, b], { labels: ["a", "b"], wrap: [(p) => new FailRecords(p), undefined], probeIntervalMs: 100_000, layout: { metaBytes: 45056, regionBytes: 4096, activeBytes: 16384 }, assumeClean: true });
    failRecords = true;
    b.cut(Number.POSITIVE_INFINITY);
    // b spends its budget and is degraded; the record of that fails on a, the last in-sync leg.
    await expect(rig.write(m, 32 * KiB, filled(4096, 5))).rejects.toThrow();
    expect(m.legs.map((l) => l.state)).toEqual(["in-sync", "degraded"]);
    expect(a.data[45056 + 32 * KiB]).toBe(5);
    failRecords = false;
    await rig.settle(call.flush(m)); // must not clear the write's intent region before the record is on disk
    rig.run(100); // the cleared write-intent page (written lazily) lands
    for (const s of [a, b]) s.crash(() => true);
    b.up();
    const m2 = await rig.mirror([a, b]);
    await rig.until(() => m2.legs.every((l) => l.state === "in-sync"), "every leg in sync");
    expect(legData(b, m2)[32 * KiB]).toBe(5);
    expect(Buffer.from(legData(a, m2)).equals(Buffer.from(legData(b, m2)))).toBe(true);
  });

  test("a write waiting for regions a flapping leg's resync keeps locking is not starved (tree sim seed 110467)", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 500), rig.store(LEG, 500)];
    // b answers its superblock (each probe finds it back) but its data writes fail, one soon and
    // the others late: each new resync locks the regions while the last one's copies still hold them.
    let writes = 0;
    class Flapping extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        if (offset < 45056) return super.write(offset, data, fua, done);
        rig.clock.after(writes++ % 4 === 0 ? 20 : 300, () => done(Errno.ETIMEDOUT));
      }
      override zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
        if (offset < 45056) return super.zero(offset, length, flags, done);
        rig.clock.after(writes++ % 4 === 0 ? 20 : 300, () => done(Errno.ETIMEDOUT));
      }
    }
    const m = await rig.mirror([a, b], { labels: ["a", "b"], wrap: [undefined, (p) => new Flapping(p)], probeIntervalMs: 50, resyncWindow: 4, layout: { metaBytes: 45056, regionBytes: 4096, activeBytes: 16384 }, assumeClean: false });
    await rig.write(m, 64 * KiB, filled(4096, 1)); // a's data, so the resync copies rather than zeroes
    rig.run(30); // the resync of b has locked its first regions
    await rig.settle(call.write(m, 0, filled(4 * 4096, 6)), 20_000);
    expect(legData(a, m)[0]).toBe(6);
    expect(rig.logs.filter((l) => l.includes("is back")).length).toBeGreaterThan(1); // it did flap
  });

  test("a leg resynced whole after a reopen that leaves and comes back showing the same generation is not diverged (tree sim seed 130349)", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    // b's superblock writes are held: its join commit lands on a only, b's disk stays at generation 1.
    let holdB = false;
    class HoldRecords extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        if (holdB && offset < SUPERBLOCK_AREA) return;
        super.write(offset, data, fua, done);
      }
    }
    const m = await rig.mirror([a, b], { labels: ["a", "b"], wrap: [undefined, (p) => new HoldRecords(p)], probeIntervalMs: 100, layout: { metaBytes: 45056, regionBytes: 4096, activeBytes: 16384 }, assumeClean: true });
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 0, filled(4096, 1)); // b degraded: generation 2
    holdB = true;
    b.up();
    // The join commit reaches a; on b it is still in flight when the node crashes.
    const listsB = () => {
      const area = decodeSuperblockArea(a.data.subarray(0, SUPERBLOCK_AREA));
      return area.kind === "valid" && area.sb.slots[1]!.state === SlotState.IN_SYNC && area.sb.slots[1]!.low === 2;
    };
    await rig.until(listsB, "b's join recorded on a");
    for (const s of [a, b]) s.crash(() => true);
    holdB = false;
    // a lists b in sync since generation 2; b shows 1: resynced whole.
    const m2 = await rig.mirror([a, b]);
    expect(m2.legs[1]!.state).toBe("syncing");
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m2, 8192, filled(4096, 2)).catch(() => {});
    await rig.until(() => m2.legs[1]!.state === "degraded", "b degraded while syncing");
    b.up();
    await rig.until(() => m2.legs[1]!.state === "in-sync" || m2.legs[1]!.state === "diverged", "b judged");
    expect(m2.legs[1]!.state).toBe("in-sync");
    expect(Buffer.from(legData(a, m2)).equals(Buffer.from(legData(b, m2)))).toBe(true);
  });

  test("a syncing leg that took a write the last in-sync leg failed does not join holding it (tree sim seed 244057)", async () => {
    const rig = new Rig();
    const [a, b, c] = [rig.store(LEG, 2000), rig.store(LEG, 2000), rig.store(LEG, 2000)];
    let faults = false;
    const META = 45056;
    // a: its data writes hang 900 ms (then time out), its reads fail at once (so it is degraded
    // while the write is still in flight); b: its data writes time out after 300 ms without
    // landing; c: syncing, every write 50 ms, so its resync ends while the write is in flight.
    class A extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        if (faults && offset >= META) return void rig.clock.after(900, () => done(Errno.ETIMEDOUT));
        super.write(offset, data, fua, done);
      }
      override read(offset: number, into: Uint8Array, done: Done): void {
        if (faults && offset >= META) return done(Errno.EIO);
        super.read(offset, into, done);
      }
    }
    class B extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        if (faults && offset >= META) return void rig.clock.after(300, () => done(Errno.ETIMEDOUT));
        super.write(offset, data, fua, done);
      }
    }
    class C extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        rig.clock.after(50, () => super.write(offset, data, fua, done));
      }
      override zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
        rig.clock.after(50, () => super.zero(offset, length, flags, done));
      }
    }
    const m = await rig.mirror([a, b, c], { labels: ["a", "b", "c"], wrap: [(p) => new A(p), (p) => new B(p), (p) => new C(p)], probeIntervalMs: 100_000, resyncWindow: 1, layout: { metaBytes: META, regionBytes: 4096, activeBytes: 16384 }, assumeClean: false });
    // Only a starts in sync; b joins first (no faults yet), c is still syncing when the faults start.
    await rig.until(() => m.legs[1]!.state === "in-sync", "b in sync");
    // c's resync has copied the write's region already and is a few regions from its join.
    await rig.until(() => m.legs[2]!.needs.count <= 4, "c nearly resynced");
    expect(m.legs[2]!.state).toBe("syncing");
    faults = true;
    const write = call.write(m, 200 * KiB, filled(4096, 9)).then(() => 0, () => -1);
    rig.run(30); // its write-intent record is down; the data is on its way to a, b and c
    for (let i = 0; m.legs[0]!.state === "in-sync" && i < 8; i++) await rig.settle(call.read(m, 100 * KiB, new Uint8Array(4096)).catch(() => {}));
    expect(m.legs[0]!.state).toBe("degraded");
    expect(await rig.settle(write)).toBe(-1); // b, the last in-sync leg, failed it
    faults = false;
    await rig.until(() => m.legs[2]!.state === "in-sync", "c in sync");
    expect(Buffer.from(legData(c, m)).equals(Buffer.from(legData(b, m)))).toBe(true);
  });

  test("a syncing leg whose checkpoint flush fails (a file's dirty pages dropped) resyncs what the flush lost before it joins", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 500), rig.store(LEG, 500)];
    let dropOnFlush = false;
    class FlushLoses extends PassThrough {
      override flush(done: Done): void {
        if (!dropOnFlush) return super.flush(done);
        dropOnFlush = false;
        b.data.set(b.durable); // fsync EIO: the dirty pages are gone
        (b as unknown as { unflushed: unknown[] }).unflushed = [];
        rig.clock.after(1, () => done(Errno.EIO));
      }
    }
    const m = await rig.mirror([a, b], { assumeClean: true, wrap: [undefined, (p) => new FlushLoses(p)] });
    await rig.write(m, 0, filled(64 * KiB, 1));
    await rig.settle(call.flush(m));
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 16 * KiB, filled(4096, 2)); // on a only: b degraded, the region dirty
    expect(m.legs[1]!.state).toBe("degraded");
    dropOnFlush = true;
    b.up(); // it returns, the region is copied, and the resync's flush fails losing the copy
    await rig.until(() => m.legs[1]!.degradations >= 2, "the resync's flush to fail");
    await rig.until(() => m.legs[1]!.state === "in-sync", "b back in sync");
    // Before, the lost copy was not missing any more in memory: b joined holding the old 1.
    expect(legData(b, m)[16 * KiB]).toBe(2);
    expect(legData(a, m)[16 * KiB]).toBe(2);
  });

  test("a returning leg that lacks trim the mirror offers (it was absent when the offer was made) is not taken back", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    class NoTrim extends PassThrough {
      override get canTrim(): boolean {
        return false;
      }
    }
    const m = await rig.mirror([a, b], { assumeClean: true, wrap: [undefined, (p) => new NoTrim(p)] });
    // As if b had been absent at open: the mirror offers trim from a alone.
    m.state.offers = { canTrim: true, canZero: m.canZero };
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 0, filled(4096, 1)); // b degraded
    b.up();
    rig.run(5_000); // probes find it, and refuse it: every TRIM would fail on it
    expect(m.legs[1]!.state).toBe("too-small"); // the state of a leg that does not fit the mirror
    expect(rig.logs.some((l) => l.includes("lacks trim or write-zeroes, which the mirror offers its clients"))).toBe(true);
  });

  test("a flapping leg (its probe answers, its writes fail) is probed less and less often; once it holds, it joins and is probed at the base interval again", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    let failing = false;
    class Flapping extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        if (failing && offset >= 45056) return done(Errno.EIO);
        super.write(offset, data, fua, done);
      }
      override zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
        if (failing && offset >= 45056) return done(Errno.EIO);
        super.zero(offset, length, flags, done);
      }
    }
    const m = await rig.mirror([a, b], { labels: ["a", "b"], wrap: [undefined, (p) => new Flapping(p)], probeIntervalMs: 100, layout: { metaBytes: 45056, regionBytes: 4096, activeBytes: 16384 }, assumeClean: true });
    failing = true;
    await rig.write(m, 0, filled(4096, 1)); // b degraded (from in sync: no flap yet)
    expect(m.legs[1]!.flaps).toBe(0);
    rig.run(20_000);
    // Every 100 ms it would be ~150 degradations; doubling waits up to 3.2 s: about a dozen.
    const degradations = m.legs[1]!.degradations;
    expect(degradations).toBeGreaterThan(5);
    expect(degradations).toBeLessThan(16);
    expect(m.legs[1]!.flaps).toBe(degradations - 1);
    expect(rig.logs.some((l) => l.includes("failed 5× while resyncing since it was in sync: next probe in 3.2 s"))).toBe(true);
    failing = false;
    await rig.until(() => m.legs[1]!.state === "in-sync", "b holds and joins", 5_000); // within the longest wait and a resync
    expect(m.legs[1]!.flaps).toBe(0);
    expect(Buffer.from(legData(b, m)).equals(Buffer.from(legData(a, m)))).toBe(true);
  });

  test("a bitmap page whose write failed is written again before a later superblock relies on it (tree sim seed 335290)", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    const META = 45056;
    // a's metadata writes fail for a while (a is the last in-sync leg then: the failures go to the client).
    let failMeta = false;
    class FailMeta extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        if (failMeta && offset < META) return done(Errno.EIO);
        super.write(offset, data, fua, done);
      }
    }
    const m = await rig.mirror([a, b], { labels: ["a", "b"], wrap: [(p) => new FailMeta(p), undefined], probeIntervalMs: 100_000, layout: { metaBytes: META, regionBytes: 4096, activeBytes: 16384 }, assumeClean: true });
    b.cut(Number.POSITIVE_INFINITY);
    const first = call.write(m, 64 * KiB, filled(4096, 7)).then(() => 0, () => -1);
    rig.run(50); // its write-intent record is on a; b's copy waits out b's budget
    failMeta = true; // so b's degradation (its bitmap page, the superblock) does not reach a
    expect(await rig.settle(first)).toBe(-1);
    expect(m.legs[1]!.state).toBe("degraded");
    failMeta = false;
    await rig.write(m, 64 * KiB, filled(4096, 8)); // the same region: its bit is set already, the page is not dirtied again
    await rig.settle(call.flush(m)); // the record lands; the write-intent regions are cleared
    rig.run(100);
    for (const s of [a, b]) s.crash(() => true);
    b.up();
    const m2 = await rig.mirror([a, b]);
    await rig.until(() => m2.legs.every((l) => l.state === "in-sync"), "b resynced");
    expect(legData(b, m2)[64 * KiB]).toBe(8);
    expect(Buffer.from(legData(a, m2)).equals(Buffer.from(legData(b, m2)))).toBe(true);
  });

  test("a returning leg written elsewhere after it left (split brain) is diverged and never touched", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    const m = await rig.mirror([a, b], { assumeClean: true });
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 0, filled(4096, 1)); // b degraded at generation 1 → mirror at 2
    expect(m.generation).toBe(2);
    // Meanwhile someone runs b alone as a mirror that bumps its generation (a forced start).
    const sb = decodeSuperblockArea(b.data.subarray(0, SUPERBLOCK_AREA));
    if (sb.kind !== "valid") throw new Error("b has no superblock");
    const forged = encodeSuperblock({ ...sb.sb, generation: 5, seq: sb.sb.seq + 1 });
    b.data.set(forged, ((sb.sb.seq + 1) % 2) * 4096);
    const before = b.data.slice();
    b.up();
    await rig.until(() => m.legs[1]!.state === "diverged", "probe finds it diverged");
    rig.run(1000);
    expect(Buffer.from(b.data).equals(Buffer.from(before))).toBe(true);
    expect(m.describe().legs![1]!.lastError).toContain("written elsewhere");
  });

  test("bounded: requests beyond maxQueued get EAGAIN instead of growing the queue", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 5000), rig.store(LEG, 5000)];
    const m = await rig.mirror([a, b], { assumeClean: true, maxQueued: 4 });
    b.cut(1000); // writes wait
    const results: number[] = [];
    for (let i = 0; i < 6; i++) m.write(i * 4096, filled(4096, i), false, (e) => results.push(e));
    expect(results).toEqual([Errno.EAGAIN, Errno.EAGAIN]);
    await rig.until(() => results.length === 6, "the four admitted writes complete");
    expect(results.slice(2)).toEqual([0, 0, 0, 0]);
  });

  test("block status calls a trimmed range zero only when every leg reads it as zero", async () => {
    const rig = new Rig();
    const META = 45056;
    // a: punches holes (its walk says hole); b: a device whose discard keeps the old blocks
    // (its walk says data). A read of the trimmed range may go to either leg.
    const trimmed: Array<[number, number]> = [];
    class Punches extends PassThrough {
      override trim(offset: number, length: number, fua: boolean, done: Done): void {
        trimmed.push([offset, length]);
        super.trim(offset, length, fua, done);
      }
      override extents(offset: number, length: number, _max: number, done: (errno: number, extents: Extent[] | null) => void): void {
        const [from, len] = trimmed[0] ?? [0, 0];
        const start = Math.max(offset, from), end = Math.min(offset + length, from + len);
        if (end <= start) return done(0, [{ length, hole: false, zero: false }]);
        const runs: Extent[] = [];
        if (start > offset) runs.push({ length: start - offset, hole: false, zero: false });
        runs.push({ length: end - start, hole: true, zero: true });
        if (offset + length > end) runs.push({ length: offset + length - end, hole: false, zero: false });
        done(0, runs);
      }
    }
    let bFails = false;
    class KeepsBlocks extends PassThrough {
      override trim(_offset: number, _length: number, _fua: boolean, done: Done): void {
        done(0); // discard accepted, blocks kept
      }
      override extents(offset: number, length: number, max: number, done: (errno: number, extents: Extent[] | null) => void): void {
        if (bFails) return done(Errno.EIO, null);
        super.extents(offset, length, max, done); // the sim leg: all data
      }
    }
    const [a, b] = [rig.store(LEG), rig.store(LEG)];
    const m = await rig.mirror([a, b], { assumeClean: true, wrap: [(p) => new Punches(p), (p) => new KeepsBlocks(p)] });
    await rig.write(m, 0, filled(64 * KiB, 1));
    await rig.settle(call.trim(m, 16 * KiB, 16 * KiB));
    expect(trimmed).toEqual([[META + 16 * KiB, 16 * KiB]]);
    expect(legData(b, m)[16 * KiB]).toBe(1); // b still reads the old bytes back
    for (let i = 0; i < 4; i++) { // whichever leg round-robin would pick first
      expect(await rig.settle(call.extents(m, 0, 64 * KiB))).toEqual([{ length: 64 * KiB, hole: false, zero: false }]);
    }
    // A leg whose walk fails makes the range data, not a's answer alone.
    bFails = true;
    expect(await rig.settle(call.extents(m, 0, 64 * KiB))).toEqual([{ length: 64 * KiB, hole: false, zero: false }]);
    bFails = false;
    // Without b (degraded) the hole is a hole: a's walk is the only one.
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 48 * KiB, filled(4096, 2));
    expect(m.legs[1]!.state).toBe("degraded");
    expect(await rig.settle(call.extents(m, 0, 64 * KiB))).toEqual([
      { length: 16 * KiB, hole: false, zero: false },
      { length: 16 * KiB, hole: true, zero: true },
      { length: 32 * KiB, hole: false, zero: false },
    ]);
  });

  test("describe() shows every leg's state, generation and resync progress", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    const m = await rig.mirror([a, b], { assumeClean: true, resyncWindow: 1, resyncChunkBytes: 4096 });
    b.cut(Number.POSITIVE_INFINITY);
    for (let i = 0; i < 8; i++) await rig.write(m, i * 8192, filled(4096, 1));
    b.up();
    await rig.until(() => m.legs[1]!.state === "syncing", "resync starts");
    const during = m.describe();
    expect(during.kind).toBe("mirror");
    expect(during.generation).toBe(2);
    expect(during.legs![1]).toMatchObject({ index: 1, label: "L1", state: "syncing", generation: 1, writeMostly: false, degradations: 1 });
    expect(during.legs![1]!.resync).toMatchObject({ full: false });
    expect(during.legs![1]!.resync!.remainingBytes).toBeGreaterThan(0);
    expect(during.legs![0]!.node).toMatchObject({ kind: "sim", description: "L0" });
    await rig.until(() => m.legs[1]!.state === "in-sync", "resync done");
    expect(m.describe().legs![1]).toMatchObject({ state: "in-sync", generation: 2, dirtyBytes: 0, resync: null });
  });
});
