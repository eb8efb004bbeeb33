/**
 * A mirror leg taken out for maintenance and brought back (mirror/suspend.ts, docs/tree.md
 * "Suspending a leg for maintenance"), on simulated legs (rig.ts): the leg gets nothing while
 * suspended and is never probed, the mirror's I/O goes on, the hold survives a clean close
 * and a crash of the node, and resume resyncs only what it missed; refusals name their reason.
 * A leg the mirror refused (too small, foreign, diverged) is judged again when resumed after a
 * repair: resynced whole if it may rejoin, else still refused, and the resume says why.
 */
import { describe, expect, test } from "bun:test";
import { Errno } from "../../../src/lib/errno.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import { call } from "../../../src/storage/port.ts";
import { SUPERBLOCK_AREA, decodeSuperblockArea, encodeSuperblock } from "../../../src/storage/tree/mirror/layout.ts";
import type { MirrorPort } from "../../../src/storage/tree/mirror/mirror.ts";
import { holdMirrorLeg } from "../../../src/storage/tree/mirror-legs.ts";
import { Rig, filled, legData, strangerSuperblocks, tooSmallAtOpen } from "./rig.ts";

const KiB = 1024;
const LEG = 45056 + 256 * KiB; // metadata + 256 KiB of data

function held(rig: Rig, m: MirrorPort, index: number, action: "suspend" | "resume"): Promise<number> {
  return rig.settle(new Promise<number>((resolve) => m.setLegHeld(index, action, resolve)));
}

describe("mirror: suspending a leg for maintenance", () => {
  test("a suspended leg gets nothing and is not probed while I/O goes on; resume resyncs only what it missed", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG), rig.store(LEG)];
    const m = await rig.mirror([a, b], { assumeClean: true, layout: { metaBytes: 45056, regionBytes: 4096, activeBytes: 16384 } });
    await rig.write(m, 0, filled(64 * KiB, 1));
    expect(await held(rig, m, 1, "suspend")).toBe(0);
    expect(m.legs[1]!.state).toBe("suspended");
    expect(m.generation).toBe(2);
    const requests = b.counters.requests;
    await rig.write(m, 8 * KiB, filled(4096, 2));
    await rig.write(m, 200 * KiB, filled(8192, 3), true);
    await rig.settle(call.flush(m));
    expect(Array.from(await rig.read(m, 200 * KiB, 8192)).every((x) => x === 3)).toBe(true);
    rig.run(5_000); // 50 probe intervals
    expect(b.counters.requests).toBe(requests); // not written, not probed
    expect(m.legs[1]!.state).toBe("suspended");
    expect(legData(b, m)[200 * KiB]).toBe(0);
    const snapshot = m.describe().legs![1]!;
    expect(snapshot).toMatchObject({ state: "suspended", lastError: "suspended by the operator", degradations: 0 });
    expect(snapshot.dirtyBytes).toBe(3 * 4096); // regions 2, 50, 51: the flush before it left emptied the write intent

    expect(await held(rig, m, 1, "resume")).toBe(0);
    await rig.until(() => m.legs[1]!.state === "in-sync", "the resumed leg resyncs");
    expect(m.resyncedBytes).toBe(3 * 4096);
    expect(Buffer.from(legData(b, m)).equals(Buffer.from(legData(a, m)))).toBe(true);
    expect(rig.logs.some((l) => l.includes("suspended by the operator (in-sync)"))).toBe(true);
    expect(rig.logs.some((l) => l.includes("resumed by the operator"))).toBe(true);
  });

  test("the only in-sync leg cannot be suspended; a degraded leg can be held out; resuming a degraded leg probes it now", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG), rig.store(LEG)];
    const m = await rig.mirror([a, b], { assumeClean: true });
    expect(await held(rig, m, 1, "suspend")).toBe(0);
    expect(m.legProblem(0, "suspend")).toContain("only in-sync leg");
    expect(await held(rig, m, 0, "suspend")).toBe(Errno.EBUSY);
    expect(m.legs[0]!.state).toBe("in-sync");
    expect(m.legProblem(1, "suspend")).toBeNull(); // already: nothing to do
    expect(await held(rig, m, 1, "suspend")).toBe(0);
    expect(m.legProblem(2, "suspend")).toBe("the mirror has no leg 2");
    expect(await held(rig, m, 1, "resume")).toBe(0);
    await rig.until(() => m.legs[1]!.state === "in-sync", "back");
    expect(m.legProblem(1, "resume")).toBeNull(); // back already: nothing to do

    const rig2 = new Rig();
    const [c, d, e] = [rig2.store(LEG, 300), rig2.store(LEG, 300), rig2.store(LEG, 300)];
    const m2 = await rig2.mirror([c, d, e], { assumeClean: true });
    e.cut(Number.POSITIVE_INFINITY);
    await rig2.write(m2, 0, filled(4096, 1));
    expect(m2.legs[2]!.state).toBe("degraded");
    // A degraded leg can be held out too: then it is not probed when its node returns.
    expect(await held(rig2, m2, 2, "suspend")).toBe(0);
    e.up();
    rig2.run(2_000);
    expect(m2.legs[2]!.state).toBe("suspended");
    expect(await held(rig2, m2, 2, "resume")).toBe(0);
    await rig2.until(() => m2.legs[2]!.state === "in-sync", "back after resume");
    expect(legData(e, m2)[0]).toBe(1);
    // Resuming a degraded leg (not held) probes it now rather than at its next interval.
    const slow = await rig2.mirror([rig2.store(LEG, 300), rig2.store(LEG, 300)], { assumeClean: true, probeIntervalMs: 3_600_000 });
    const f = rig2.stores[4]!;
    f.cut(Number.POSITIVE_INFINITY);
    await rig2.write(slow, 0, filled(4096, 4));
    expect(slow.legs[1]!.state).toBe("degraded");
    f.up();
    rig2.run(1_000);
    expect(slow.legs[1]!.state).toBe("degraded"); // its next probe is an hour away
    expect(await held(rig2, slow, 1, "resume")).toBe(0);
    await rig2.until(() => slow.legs[1]!.state === "in-sync", "probed at once", 5_000);
    expect(legData(f, slow)[0]).toBe(4);
  });

  test("the hold survives a clean close and a crash of the node: the leg stays out until resumed, then gets what it missed", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG), rig.store(LEG)];
    const m = await rig.mirror([a, b], { assumeClean: true });
    await rig.write(m, 0, filled(4096, 1));
    expect(await held(rig, m, 1, "suspend")).toBe(0);
    await rig.write(m, 4096, filled(4096, 2));
    await rig.settle(m.close());

    const m2 = await rig.mirror([a, b]);
    expect(m2.legs.map((l) => l.state)).toEqual(["in-sync", "suspended"]);
    await rig.write(m2, 64 * KiB, filled(4096, 3), true);
    rig.run(2_000);
    expect(m2.legs[1]!.state).toBe("suspended");
    // The node dies: unflushed writes on the legs are lost, the hold is not.
    for (const s of [a, b]) s.crash(() => true);
    const m3 = await rig.mirror([a, b]);
    expect(m3.legs.map((l) => l.state)).toEqual(["in-sync", "suspended"]);
    expect(legData(b, m3)[4096]).toBe(0);
    expect(await held(rig, m3, 1, "resume")).toBe(0);
    await rig.until(() => m3.legs[1]!.state === "in-sync", "resumed after the crash");
    expect(Buffer.from(legData(b, m3)).equals(Buffer.from(legData(a, m3)))).toBe(true);
    expect(legData(b, m3)[64 * KiB]).toBe(3);
    expect(m3.resyncedBytes).toBeLessThan(m3.size); // its recorded regions, not the whole leg
  });

  test("writes in flight when the leg leaves complete, and count as missing on it", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 5_000), rig.store(LEG, 5_000)];
    const m = await rig.mirror([a, b], { assumeClean: true, reopenable: true });
    b.cut(200); // the write waits on b, within its budget
    const results: number[] = [];
    m.write(32 * KiB, filled(4096, 9), false, (e) => results.push(e));
    rig.run(50);
    expect(results).toEqual([]);
    const suspended = held(rig, m, 1, "suspend");
    expect(await suspended).toBe(0);
    await rig.until(() => results.length === 1, "the write in flight completes");
    expect(results).toEqual([0]);
    expect(m.legs[1]!.port).toBeNull(); // a reopenable leg is closed while suspended
    expect(m.describe().legs![1]!.dirtyBytes).toBeGreaterThan(0);
    expect(await held(rig, m, 1, "resume")).toBe(0);
    await rig.until(() => m.legs[1]!.state === "in-sync", "reopened and resynced");
    expect(m.legs[1]!.port).not.toBeNull();
    expect(b.ports.length).toBe(2); // the resume opened it again
    expect(legData(b, m)[32 * KiB]).toBe(9);
    expect(Buffer.from(legData(b, m)).equals(Buffer.from(legData(a, m)))).toBe(true);
  });
});

describe("mirror: resuming a refused leg after a repair", () => {
  const resume = (rig: Rig, m: MirrorPort) => rig.settle(holdMirrorLeg(m, "disk", "1", "resume"));
  const same = (x: Uint8Array, y: Uint8Array) => Buffer.from(x).equals(Buffer.from(y));

  test("a leg that came back too small: resume says why while it is; once grown, it is resynced whole, with what it missed while refused", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    let shrunk = false;
    class Shrinks extends PassThrough {
      override get size(): number {
        return shrunk ? 64 * KiB : super.size;
      }
    }
    const m = await rig.mirror([a, b], { assumeClean: true, wrap: [undefined, (p) => new Shrinks(p)] });
    await rig.write(m, 0, filled(64 * KiB, 1));
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 8 * KiB, filled(4096, 2)); // b degraded: this region is recorded for it
    shrunk = true; // it comes back smaller (another LV, a truncated file)
    b.up();
    await rig.until(() => m.legs[1]!.state === "too-small", "its probe finds it too small");
    await rig.write(m, 128 * KiB, filled(8192, 3)); // recorded nowhere for b: it is refused
    rig.run(2_000);
    expect(m.legs[1]!.state).toBe("too-small"); // never probed again on its own
    await expect(resume(rig, m)).rejects.toThrow(/leg L1 not resumed: it is still too-small: 64 KiB; the mirror needs/);
    expect(m.legs[1]!.state).toBe("too-small");
    shrunk = false; // the operator grew it
    expect(await resume(rig, m)).toContain("leg L1 resumed after a repair (was too-small)");
    await rig.until(() => m.legs[1]!.state === "in-sync", "the grown leg resynced");
    // Whole: its bitmap lacks the writes it missed while refused.
    expect(m.resyncedBytes).toBe(m.size);
    expect(legData(b, m)[128 * KiB]).toBe(3);
    expect(same(legData(b, m), legData(a, m))).toBe(true);
  });

  test("a leg too small when the mirror opens, grown: resume takes it back whole, as the next open would (its generation was never judged)", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG), rig.store(LEG)];
    const { m, grow } = await tooSmallAtOpen(rig, a, b, 64 * KiB);
    expect(m.legs[1]!.state).toBe("too-small");
    await rig.write(m, 200 * KiB, filled(4096, 4));
    grow(); // dstd resize on its node
    expect(await resume(rig, m)).toContain("leg L1 resumed after a repair (was too-small)");
    await rig.until(() => m.legs[1]!.state === "in-sync", "the grown leg resynced");
    expect(m.resyncedBytes).toBe(m.size);
    expect(legData(b, m)[200 * KiB]).toBe(4);
    expect(same(legData(b, m), legData(a, m))).toBe(true);
  });

  test("a foreign leg stays foreign when resumed as it is (and at the next open); wiped blank and resumed, it is resynced whole", async () => {
    const rig = new Rig();
    const [a, b, c, d] = [rig.store(LEG), rig.store(LEG), rig.store(LEG), rig.store(LEG)];
    const m1 = await rig.mirror([a, b, d], { assumeClean: true });
    await rig.write(m1, 0, filled(4096, 9));
    await rig.settle(m1.close());
    // c holds another mirror's metadata (its slot 2); this mirror's two other legs say which mirror this is.
    await strangerSuperblocks(c, 3, 2, LEG);
    const before = c.data.slice();
    const m = await rig.mirror([a, b, c], { reopenable: true });
    expect(m.legs[2]!.state).toBe("foreign");
    await rig.write(m, 64 * KiB, filled(4096, 3));
    await expect(rig.settle(holdMirrorLeg(m, "disk", "2", "resume"))).rejects.toThrow("leg L2 not resumed: it is still foreign: holds another mirror's metadata");
    expect(m.legs[2]!.state).toBe("foreign");
    rig.run(1_000);
    expect(same(c.data, before)).toBe(true); // never written
    await rig.settle(m.close());
    const m2 = await rig.mirror([a, b, c], { reopenable: true });
    expect(m2.legs[2]!.state).toBe("foreign");
    // The operator wipes its superblocks (docs/tree.md "Operator actions") and resumes it, while
    // its node is still down: it is probed like a degraded leg, and judged once it answers.
    c.data.fill(0, 0, SUPERBLOCK_AREA);
    c.durable.fill(0, 0, SUPERBLOCK_AREA);
    c.cut(Number.POSITIVE_INFINITY);
    expect(await rig.settle(holdMirrorLeg(m2, "disk", "2", "resume"))).toContain("leg L2 resumed after a repair (was foreign), but it could not be read now (probe failed:");
    expect(m2.legs[2]!.state).toBe("degraded");
    c.up();
    await rig.until(() => m2.legs[2]!.state === "in-sync", "the wiped leg resynced");
    expect(m2.resyncedBytes).toBe(m2.size);
    expect(legData(c, m2)[0]).toBe(9);
    expect(legData(c, m2)[64 * KiB]).toBe(3);
    expect(same(legData(c, m2), legData(a, m2))).toBe(true);
  });

  test("a diverged leg resumed as it is, or with the superblocks it left with, stays diverged and untouched (as at the next open); wiped, it is resynced whole", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG, 300), rig.store(LEG, 300)];
    const m = await rig.mirror([a, b], { assumeClean: true });
    await rig.write(m, 0, filled(64 * KiB, 1));
    b.cut(Number.POSITIVE_INFINITY);
    await rig.write(m, 0, filled(4096, 2)); // b degraded at generation 1
    const left = b.data.slice(0, SUPERBLOCK_AREA);
    // Someone runs b alone as a mirror that bumps its generation (a forced start), writing to it.
    const sb = decodeSuperblockArea(left);
    if (sb.kind !== "valid") throw new Error("b has no superblock");
    b.data.set(encodeSuperblock({ ...sb.sb, generation: 5, seq: sb.sb.seq + 1 }), ((sb.sb.seq + 1) % 2) * 4096);
    b.up();
    await rig.until(() => m.legs[1]!.state === "diverged", "its probe finds it diverged");
    await rig.write(m, 128 * KiB, filled(4096, 3)); // recorded nowhere for b
    await expect(resume(rig, m)).rejects.toThrow(/leg L1 not resumed: it is still diverged: generation 5 is newer than when it left \(\d+\): written elsewhere since/);
    // Its superblocks put back as they were when it left (its data is still the other writer's):
    // its bitmap would miss what was written here since and there, so it must not be resynced
    // from it. Its slot takes back only a blank leg, as the next open would (metadata.ts refusedSlot).
    b.data.set(left, 0);
    const kept = b.data.slice();
    await expect(resume(rig, m)).rejects.toThrow(/leg L1 not resumed: it is still diverged/);
    rig.run(1_000);
    expect(same(b.data, kept)).toBe(true);
    expect(m.resyncedBytes).toBe(0);
    // Wiped, it is blank: resynced whole.
    b.data.fill(0, 0, SUPERBLOCK_AREA);
    expect(await resume(rig, m)).toContain("leg L1 resumed after a repair (was diverged)");
    await rig.until(() => m.legs[1]!.state === "in-sync", "the wiped leg resynced");
    expect(m.resyncedBytes).toBe(m.size);
    expect(legData(b, m)[128 * KiB]).toBe(3);
    expect(same(legData(b, m), legData(a, m))).toBe(true);
  });
});
