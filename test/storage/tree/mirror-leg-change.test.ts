/**
 * A mirror leg replaced or added while the mirror runs (mirror/leg-change.ts, docs/tree.md
 * "Replacing and adding mirror legs"), on simulated legs (rig.ts): the new leg is resynced
 * whole while I/O goes on, the next open finds it in sync, the replaced leg gets nothing more,
 * and what would lose data or cannot fit is refused with its reason.
 */
import { describe, expect, test } from "bun:test";
import { Errno } from "../../../src/lib/errno.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import { call, type Done, type StoragePort } from "../../../src/storage/port.ts";
import type { MirrorPort } from "../../../src/storage/tree/mirror/mirror.ts";
import { Rig, filled, legData, tooSmallAtOpen } from "./rig.ts";
import type { SimStore } from "./sim-leg.ts";

const KiB = 1024;
const LEG = 45056 + 256 * KiB; // metadata + 256 KiB of data

const input = (store: SimStore) => ({ label: store.name, port: store.port() as StoragePort, open: () => Promise.resolve(store.port() as StoragePort) });

function held(rig: Rig, m: MirrorPort, index: number, action: "suspend" | "resume"): Promise<number> {
  return rig.settle(new Promise<number>((resolve) => m.setLegHeld(index, action, resolve)));
}

describe("mirror: replacing and adding legs while it runs", () => {
  test("a suspended leg replaced by a blank disk: resynced whole while writes go on; the replaced leg gets nothing; the next open has both in sync", async () => {
    const rig = new Rig();
    const [a, b, c] = [rig.store(LEG), rig.store(LEG), rig.store(LEG)];
    const m = await rig.mirror([a, b], { assumeClean: true });
    for (let at = 0; at < m.size; at += 64 * KiB) await rig.write(m, at, filled(64 * KiB, 1));
    expect(m.legChangeProblem(1, c.port())).toBe("leg L1 is in-sync: suspend it first (dstd leg suspend), then replace it");
    expect(await held(rig, m, 1, "suspend")).toBe(0);
    const bRequests = b.counters.requests;
    expect(m.setLeg(1, input(c))).toBe("L1");
    expect(m.legs[1]!.label).toBe("L2");
    const during = rig.write(m, 100 * KiB, filled(4096, 2));
    await rig.until(() => m.legs[1]!.state === "in-sync", "the new leg resynced");
    await rig.settle(during);
    expect(b.counters.requests).toBe(bRequests);
    expect(m.resyncedBytes).toBe(m.size); // whole
    expect(Buffer.from(legData(c, m)).equals(Buffer.from(legData(a, m)))).toBe(true);
    expect(legData(c, m)[100 * KiB]).toBe(2);
    await rig.settle(m.close());
    const again = await rig.mirror([a, c]);
    expect(again.legs.map((l) => l.state)).toEqual(["in-sync", "in-sync"]);
  });

  test("a third leg added: resynced whole; a reopen with three legs has them in sync; a fourth with another mirror's metadata is foreign and untouched", async () => {
    const rig = new Rig();
    const [a, b, d] = [rig.store(LEG), rig.store(LEG), rig.store(LEG)];
    const m = await rig.mirror([a, b], { assumeClean: true });
    await rig.write(m, 0, filled(4096, 7));
    expect(m.setLeg(2, input(d))).toBeNull();
    await rig.until(() => m.legs[2]?.state === "in-sync", "the added leg resynced");
    expect(legData(d, m)[0]).toBe(7);
    // A disk of another mirror.
    const rig2 = new Rig();
    const other = await rig2.mirror([rig2.store(LEG), rig2.store(LEG)], { assumeClean: true });
    await rig2.settle(other.close());
    const foreign = rig.store(LEG);
    foreign.data.set(rig2.stores[0]!.data.subarray(0, 8192));
    foreign.durable.set(rig2.stores[0]!.durable.subarray(0, 8192));
    const before = foreign.data.slice();
    m.setLeg(3, input(foreign));
    await rig.until(() => m.legs[3]!.state === "foreign", "judged foreign");
    rig.run(1_000);
    expect(Buffer.from(foreign.data).equals(Buffer.from(before))).toBe(true);
    await rig.settle(m.close());
    const again = await rig.mirror([a, b, d, foreign]);
    expect(again.legs.map((l) => l.state)).toEqual(["in-sync", "in-sync", "in-sync", "foreign"]);
  });

  test("a metadata write to the replaced leg that fails late does not degrade its replacement (tree sim seed 230171)", async () => {
    const rig = new Rig();
    const [a, b, c] = [rig.store(LEG), rig.store(LEG), rig.store(LEG)];
    // b's metadata writes hang and then time out; its reads fail at once.
    let failing = false;
    class Failing extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        if (failing && offset < 45056) return void rig.clock.after(500, () => done(Errno.ETIMEDOUT));
        super.write(offset, data, fua, done);
      }
      override read(offset: number, into: Uint8Array, done: Done): void {
        if (failing) return done(Errno.EIO);
        super.read(offset, into, done);
      }
    }
    const m = await rig.mirror([a, b], { labels: ["a", "b"], wrap: [undefined, (p) => new Failing(p)], probeIntervalMs: 100_000, layout: { metaBytes: 45056, regionBytes: 4096, activeBytes: 16384 }, assumeClean: true });
    failing = true;
    const write = call.write(m, 128 * KiB, filled(4096, 3)); // its write-intent record to b hangs
    rig.run(5);
    for (let i = 0; m.legs[1]!.state === "in-sync" && i < 8; i++) await rig.settle(call.read(m, 0, new Uint8Array(4096))); // one read goes to b and fails
    expect(m.legs[1]!.state).toBe("degraded");
    expect(m.setLeg(1, input(c))).toBe("b");
    await rig.settle(write); // b's record write times out meanwhile: it was b's, not c's
    await rig.until(() => m.legs[1]!.state === "in-sync", "c resynced");
    expect(m.legs[1]!.degradations).toBe(0);
    expect(legData(c, m)[128 * KiB]).toBe(3);
  });

  test("a leg too small at open, replaced by its own disk grown: taken back whole, as the next open and a resume would, not called diverged", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG), rig.store(LEG)];
    const { m } = await tooSmallAtOpen(rig, a, b, 64 * KiB);
    expect(m.legs[1]!.state).toBe("too-small");
    await rig.write(m, 200 * KiB, filled(4096, 4));
    // The operator gives the slot its own disk back, grown (this mirror's superblock on it).
    expect(m.setLeg(1, input(b))).toBe("L1");
    await rig.until(() => m.legs[1]!.state === "in-sync" || m.legs[1]!.state === "diverged", "the replacement judged");
    expect(m.legs[1]!.state).toBe("in-sync");
    expect(m.resyncedBytes).toBe(m.size);
    expect(legData(b, m)[200 * KiB]).toBe(4);
    expect(Buffer.from(legData(b, m)).equals(Buffer.from(legData(a, m)))).toBe(true);
  });

  test("refusals: an in-sync or syncing leg, a slot that skips one, a leg that does not fit", async () => {
    const rig = new Rig();
    const [a, b] = [rig.store(LEG), rig.store(LEG)];
    const m = await rig.mirror([a, b]);
    expect(m.legs[1]!.state).toBe("syncing");
    expect(m.legChangeProblem(1, rig.store(LEG).port())).toBe("leg L1 is syncing: suspend it first (dstd leg suspend), then replace it");
    expect(m.legChangeProblem(3, rig.store(LEG).port())).toBe("leg 3 would leave slot 2 empty: legs are added at the end");
    expect(m.legChangeProblem(8, rig.store(LEG).port())).toBe("a mirror has at most 8 legs");
    expect(m.legChangeProblem(2, rig.store(LEG - 4096).port())).toContain("the mirror needs");
    expect(() => m.setLeg(3, input(rig.store(LEG)))).toThrow("legs are added at the end");
    expect(m.legs.length).toBe(2);
  });
});
