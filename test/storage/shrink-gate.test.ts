/**
 * storage/layers/shrink-gate.ts: a checked shrink (`dstd resize --allow-shrink` without
 * `--force`) reads the tail's map only once nothing can still put data there, and cuts before
 * anything can: a mutation reaching past the new end is refused from the fence on, every
 * mutation already below is waited for, and a refused shrink takes the tail's writes again.
 * The gate keeps the port below's timing and buffer promises (it sits on every export).
 */
import { expect, test } from "bun:test";
import { Errno } from "../../src/lib/errno.ts";
import { DeferredLayer, HeldWork } from "../../src/storage/layers/deferred.ts";
import { PassThrough } from "../../src/storage/layers/pass-through.ts";
import { ShrinkGate, tailData } from "../../src/storage/layers/shrink-gate.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { call, MAX_EXTENTS, type Extent, type ExtentsDone, type StoragePort } from "../../src/storage/port.ts";

const SIZE = 8 << 20;
const HALF = SIZE / 2;
const block = (n: number) => new Uint8Array(4096).fill(n);
const memory = () => createLocalPort(createMemoryBackend(SIZE));
const resizeOf = (port: StoragePort, size: number) => () =>
  new Promise<void>((resolve, reject) => port.resize!(size, (errno) => (errno === 0 ? resolve() : reject(new Error(`resize: ${errno}`)))));
/** Lets every promise chain that can move on do so: nothing here runs on a timer (the ports below complete inline or when a test releases them). */
const turns = async (): Promise<void> => {
  for (let i = 0; i < 50; i++) await null;
};
const settled = async <T>(promise: Promise<T>): Promise<boolean> => {
  let done = false;
  void promise.then(() => (done = true));
  await turns();
  return done;
};
/** A gate over a memory disk whose every call waits for the test to release it. */
const deferredGate = () => {
  const held = new HeldWork();
  return { held, gate: new ShrinkGate(new DeferredLayer(memory(), held.schedule)) };
};
/** A WRITE of `fill` at `offset` through `port`, as its completion's errno. */
const write = (port: StoragePort, offset: number, fill: number): Promise<number> => new Promise((resolve) => port.write(offset, block(fill), false, resolve));

/**
 * A port whose allocation map is taken when asked and answered when `answers` releases it —
 * a Ceph image's diff walk on librbd's thread — while writes land at once: a write can land
 * between the map and its answer.
 */
class LateMap extends PassThrough {
  constructor(
    next: StoragePort,
    private readonly answers: HeldWork,
  ) {
    super(next);
  }
  override get synchronous(): boolean {
    return false;
  }
  override extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
    this.next.extents(offset, length, maxExtents, (errno, extents) => this.answers.schedule(() => done(errno, extents)));
  }
}

test("a write past the new end arriving while the tail's map is read is refused, not acknowledged and then cut; one before the new end goes through", async () => {
  const answers = new HeldWork();
  const below = memory();
  const gate = new ShrinkGate(new LateMap(below, answers));
  const shrunk = gate.shrinkIfEmpty(HALF, resizeOf(gate, HALF));
  await turns();
  answers.releaseAll(); // the first look, unfenced: the tail is empty
  await turns();
  expect(answers.size).toBe(1); // the map again, fenced now
  const tail = await write(gate, SIZE - 4096, 1);
  const trimmed = await new Promise<number>((resolve) => gate.trim(HALF, 4096, false, resolve));
  const zeroed = await new Promise<number>((resolve) => gate.zero(HALF - 4096, 8192, { fua: false, noHole: false, fast: false }, resolve));
  const inside = await write(gate, 0, 2);
  expect([tail, trimmed, zeroed, inside]).toEqual([Errno.ENOSPC, Errno.EINVAL, Errno.ENOSPC, 0]);
  answers.releaseAll();
  expect(await shrunk).toBeNull();
  expect(below.size).toBe(HALF);
  // Nothing acknowledged was cut: the one write taken is there.
  const into = new Uint8Array(4096);
  await call.read(gate, 0, into);
  expect(into.every((b) => b === 2)).toBe(true);
});

test("a tail that holds data already is refused without a fence: its writers are not disturbed while the map is read", async () => {
  const answers = new HeldWork();
  const gate = new ShrinkGate(new LateMap(memory(), answers));
  expect(await write(gate, SIZE - 4096, 1)).toBe(0);
  let resized = false;
  const shrunk = gate.shrinkIfEmpty(HALF, async () => void (resized = true));
  await turns();
  expect(answers.size).toBe(1); // the first look at the map, unfenced
  expect(await write(gate, SIZE - 8192, 2)).toBe(0);
  answers.releaseAll();
  expect(await shrunk).toMatch(/^data at offset \d+$/);
  expect(resized).toBe(false);
});

test("the fence waits for every mutation already below; the map then shows it, the shrink is refused and the tail takes writes again", async () => {
  const { held, gate } = deferredGate();
  const written = write(gate, SIZE - 4096, 3);
  const trimmed = new Promise<number>((resolve) => gate.trim(0, 4096, false, resolve)); // not in the tail: waited for all the same
  let resized = false;
  const shrunk = gate.shrinkIfEmpty(HALF, async () => void (resized = true));
  expect(await settled(shrunk)).toBe(false);
  held.release(0); // the write
  expect(await written).toBe(0);
  expect(await settled(shrunk)).toBe(false); // the trim is still below
  held.release(0);
  expect(await trimmed).toBe(0);
  await turns();
  held.releaseAll(); // the map
  expect(await shrunk).toMatch(/^data at offset \d+$/);
  expect(resized).toBe(false);
  const again = write(gate, SIZE - 4096, 4);
  held.releaseAll();
  expect(await again).toBe(0);
});

test("checked shrinks take turns, and each waits only for what started before its own fence", async () => {
  const { held, gate } = deferredGate();
  const old = write(gate, 0, 5);
  const first = gate.fence(HALF);
  expect(await settled(first)).toBe(false);
  held.release(0);
  expect(await old).toBe(0);
  const liftFirst = (await first)!;
  // Started after the first fence: not the first's to wait for, but the second's.
  const later = write(gate, 4096, 6);
  const second = gate.fence(HALF);
  expect(await settled(second)).toBe(false); // the first is not lifted yet
  liftFirst();
  expect(await settled(second)).toBe(false); // `later` is below
  held.release(0);
  expect(await later).toBe(0);
  const liftSecond = (await second)!;
  liftSecond();
  liftSecond(); // idempotent
  // Nothing below: a fence still waits for the one before it to be lifted.
  const third = gate.fence(HALF);
  const fourth = gate.fence(HALF);
  const liftThird = (await third)!;
  expect(await settled(fourth)).toBe(false);
  liftThird();
  (await fourth)!();
  const tail = write(gate, SIZE - 4096, 7);
  held.releaseAll();
  expect(await tail).toBe(0);
});

test("a fence whose patience ends before a mutation below completes is lifted and the shrink refused; that straggler is still waited for by a later fence of its parity, and wakes no other", async () => {
  const { held, gate } = deferredGate();
  const stuck = write(gate, 0, 1); // epoch 0
  let resized = false;
  const refused = gate.shrinkIfEmpty(HALF, async () => void (resized = true), Promise.resolve());
  await turns();
  held.release(1); // its first, unfenced look at the map: the tail is empty
  expect(await refused).toBe("mutations under way did not complete in time, so what they put there is unknown (try again)");
  expect(resized).toBe(false);
  // Lifted: the tail takes writes again.
  const tail = write(gate, SIZE - 4096, 2); // epoch 1
  held.release(1);
  expect(await tail).toBe(0);
  const later = write(gate, 4096, 3); // epoch 1
  const second = gate.fence(HALF); // waits for epoch 1: `later`
  expect(await settled(second)).toBe(false);
  held.release(0); // the straggler of epoch 0 completes: not the second fence's to wake
  expect(await stuck).toBe(0);
  expect(await settled(second)).toBe(false);
  held.release(0); // `later`
  expect(await later).toBe(0);
  (await second)!();
});

test("tailData walks the map in as many answers as it takes (one stops at MAX_EXTENTS), and a map it cannot read counts as data", async () => {
  const runs = MAX_EXTENTS * 3;
  const unit = 512;
  let calls = 0;
  const fake = (failing: boolean) =>
    new (class extends PassThrough {
      override extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
        calls++;
        if (failing) return done(Errno.EIO, null);
        const out: Extent[] = [];
        for (let at = offset; at < offset + length && out.length < maxExtents; at += unit) {
          // Alternating hole and allocated-zero runs, and data in the very last one.
          const last = at + unit >= runs * unit;
          out.push({ length: unit, hole: !last && (at / unit) % 2 === 0, zero: !last });
        }
        done(0, out);
      }
    })(memory());
  expect(await tailData(fake(false), 0, runs * unit)).toBe(`data at offset ${(runs - 1) * unit}`);
  expect(calls).toBe(3);
  expect(await tailData(fake(false), 0, (runs - 1) * unit)).toBeNull();
  expect(await tailData(fake(true), 0, unit)).toBe("its allocation map past 0 B could not be read (input/output error (EIO))");
});

test("the gate keeps the port below's timing and buffer promises", () => {
  const sync = new ShrinkGate(memory());
  expect(sync.synchronous).toBe(true);
  const held = new HeldWork();
  const deferred = new DeferredLayer(memory(), held.schedule, 65536);
  const gate = new ShrinkGate(deferred);
  expect(gate.synchronous).toBe(false);
  expect(gate.inlineUpTo).toBe(65536);
  expect(gate.writeHandedOver === undefined).toBe(deferred.writeHandedOver === undefined);
  expect(gate.writeDataCopied).toBe(deferred.writeDataCopied === true);
  expect(gate.resize !== undefined).toBe(true);
  // A small write completes inline, as below; a large one waits for the scheduler.
  let small = -1;
  gate.write(0, block(1), false, (errno) => (small = errno));
  expect(small).toBe(0);
  let large = -1;
  gate.write(0, new Uint8Array(1 << 20), false, (errno) => (large = errno));
  expect(large).toBe(-1);
  held.releaseAll();
  expect(large).toBe(0);
});
