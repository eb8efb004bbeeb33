/**
 * Growing a stripe online (storage/tree/stripe.ts, docs/tree.md "Growing a stripe") and the
 * trees it makes growable: a stripe of files grows by whole rows, its data stays where it was,
 * the new range reads as zeroes, and the next open serves the grown size though the files are
 * larger than their configured `size`; a mirror of stripes and a stripe of mirrors grow through
 * each other. Refused with the reason, nothing changed: a shrink, a size that is not whole rows,
 * a leg that cannot grow. A leg whose grow fails leaves the old size served; a leg that grows by
 * itself (a remote export resized by its owner) does not grow the stripe under its clients.
 */
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { Errno } from "../../../src/lib/errno.ts";
import type { TreeLegSpec, TreeNodeSpec } from "../../../src/config/types.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import { call, type Done, type StoragePort } from "../../../src/storage/port.ts";
import { mirrorLegsOf } from "../../../src/storage/tree/mirror-legs.ts";
import { openTree } from "../../../src/storage/tree/open.ts";
import { StripePort } from "../../../src/storage/tree/stripe.ts";
import { createLocalPort } from "../../../src/storage/local/port.ts";
import { createMemoryBackend } from "../../../src/storage/local/memory.ts";
import { readFileAt, scratchDir } from "../../helpers/files.ts";
import { until } from "../../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 64 * KiB;
const scratch = scratchDir("stripe-grow");
afterAll(() => scratch.remove());
const quiet = { info() {}, warn() {}, debug() {} };
const path = (name: string) => join(scratch.path, `${name}.img`);
const file = (name: string, size = 4 * MiB): TreeLegSpec => ({ node: { kind: "file", path: path(name), sizeBytes: size }, writeMostly: false, label: name });
const stripe = (legs: TreeLegSpec[]): TreeNodeSpec => ({ kind: "stripe", legs, chunkBytes: CHUNK });
const mirror = (legs: TreeLegSpec[]): TreeNodeSpec => ({ kind: "mirror", legs, readPolicy: "round-robin", assumeClean: true });
const leg = (node: TreeNodeSpec, label: string): TreeLegSpec => ({ node, writeMostly: false, label });
const open = (spec: TreeNodeSpec) => openTree(spec, { log: quiet, lock: true });
const resize = (port: StoragePort, size: number) => new Promise<number>((resolve) => port.resize!(size, resolve));
const pattern = (length: number, seed: number) => new Uint8Array(length).map((_, i) => (i * 11 + seed) & 0xff);
const memory = (size: number) => createLocalPort(createMemoryBackend(size), { description: "memory", log: quiet });

/** A leg that cannot be resized (as a remote export or an RBD image seen from a tree). */
class Fixed extends PassThrough {
  override get resize(): undefined {
    return undefined;
  }
}

/** A leg whose resize fails. */
class Failing extends PassThrough {
  override get resize(): (size: number, done: Done) => void {
    return (_size, done) => done(Errno.EIO);
  }
}

test("a stripe of files grows by whole rows: data in place, new range zero, writes past the old end; the next open serves the grown size", async () => {
  const spec = stripe([file("s0"), file("s1")]);
  const port = await open(spec);
  try {
    expect(port.size).toBe(8 * MiB);
    await call.write(port, 0, pattern(8 * MiB, 1));
    expect(port.resizeProblem!(6 * MiB)).toBe("a stripe does not shrink (it is 8 MiB; 6 MiB asked)");
    expect(port.resizeProblem!(8 * MiB + CHUNK)).toBe("a stripe grows by whole rows: 8454144 bytes is not a multiple of 128 KiB (2 legs × 64 KiB chunk)");
    expect(await resize(port, 8 * MiB + CHUNK)).toBe(Errno.EINVAL);
    expect(port.resizeProblem!(16 * MiB)).toBeNull();
    expect(await resize(port, 16 * MiB)).toBe(0);
    expect(port.size).toBe(16 * MiB);
    expect(Bun.file(path("s0")).size).toBe(8 * MiB);
    const old = new Uint8Array(8 * MiB);
    await call.read(port, 0, old);
    expect(Buffer.compare(old, pattern(8 * MiB, 1))).toBe(0);
    const fresh = new Uint8Array(8 * MiB);
    await call.read(port, 8 * MiB, fresh);
    expect(fresh.every((b) => b === 0)).toBe(true);
    await call.write(port, 15 * MiB, pattern(MiB, 2));
    await call.flush(port);
    // Chunk 240 of the stripe (15 MiB / 64 KiB) is chunk 120 of leg 0: 7.5 MiB into s0.
    expect(Buffer.compare(readFileAt(path("s0"), 7.5 * MiB, CHUNK), pattern(MiB, 2).subarray(0, CHUNK))).toBe(0);
  } finally {
    await port.close();
  }
  const again = await open(spec); // the files are 8 MiB, their size says 4 MiB: grown, so opened at 8
  try {
    expect(again.size).toBe(16 * MiB);
    const tail = new Uint8Array(MiB);
    await call.read(again, 15 * MiB, tail);
    expect(Buffer.compare(tail, pattern(MiB, 2))).toBe(0);
  } finally {
    await again.close();
  }
});

test("a leg that cannot grow refuses the resize, naming it; one large enough already is fine; a failed leg grow serves the old size", async () => {
  const small = new StripePort([{ label: "a", port: memory(MiB) }, { label: "fixed", port: new Fixed(memory(MiB)) }], CHUNK);
  expect(small.resizeProblem(4 * MiB)).toBe("leg fixed is 1 MiB and cannot grow; the stripe needs 2 MiB of it");
  expect(await resize(small, 4 * MiB)).toBe(Errno.ENOSPC);
  expect(small.size).toBe(2 * MiB);
  // A leg that grew by itself (its owner resized it) does not grow the stripe until a resize asks.
  const roomy = memory(MiB);
  const grows = new StripePort([{ label: "a", port: memory(MiB) }, { label: "roomy", port: new Fixed(roomy) }], CHUNK);
  await new Promise<number>((resolve) => roomy.resize!(4 * MiB, resolve));
  expect(grows.size).toBe(2 * MiB);
  expect(grows.resizeProblem(4 * MiB)).toBeNull();
  expect(await resize(grows, 4 * MiB)).toBe(0);
  expect(grows.size).toBe(4 * MiB);
  const failing = new StripePort([{ label: "a", port: memory(MiB) }, { label: "bad", port: new Failing(memory(MiB)) }], CHUNK);
  expect(await resize(failing, 4 * MiB)).toBe(Errno.EIO);
  expect(failing.size).toBe(2 * MiB);
  for (const s of [small, grows, failing]) await s.close();
});

test("a leg whose backend refuses the size (a block device not grown yet) refuses the resize up front, naming it; no other leg grows", async () => {
  const device = Object.assign(createMemoryBackend(MiB), { resizeProblem: (size: number) => `/dev/sdx is 1048576 bytes, not ${size}: grow the device first` });
  const other = memory(MiB);
  const port = new StripePort([{ label: "a", port: other }, { label: "dev", port: createLocalPort(device, { description: "device", log: quiet }) }], CHUNK);
  expect(port.resizeProblem(4 * MiB)).toBe("leg dev cannot grow to 2 MiB: /dev/sdx is 1048576 bytes, not 2097152: grow the device first");
  expect(await resize(port, 4 * MiB)).toBe(Errno.EBUSY);
  expect(other.size).toBe(MiB);
  expect(port.size).toBe(2 * MiB);
  await port.close();
});

test("a mirror of stripes grows through its stripe legs; a stripe of mirrors through its mirror legs; both reopen at the new size, legs in sync", async () => {
  const META = MiB; // a mirror leg's metadata area (docs/tree.md "On-leg metadata")
  // Mirror of two stripes of two 4 MiB files: stripes of 8 MiB, a mirror of 7 MiB.
  const mOfS = mirror([leg(stripe([file("ms0"), file("ms1")]), "stripe-a"), leg(stripe([file("ms2"), file("ms3")]), "stripe-b")]);
  let port = await open(mOfS);
  try {
    expect(port.size).toBe(7 * MiB);
    await call.write(port, 6 * MiB, pattern(MiB, 3));
    // The stripes must grow by whole rows: 1 MiB of metadata + the mirror's size.
    expect(port.resizeProblem!(15 * MiB - 4 * KiB)).toContain("leg stripe-a cannot grow to");
    expect(port.resizeProblem!(15 * MiB)).toBeNull();
    expect(await resize(port, 15 * MiB)).toBe(0);
    expect(port.size).toBe(15 * MiB);
    await call.write(port, 14 * MiB, pattern(MiB, 4));
    await call.flush(port);
    for (const name of ["ms0", "ms1", "ms2", "ms3"]) expect(Bun.file(path(name)).size).toBe(8 * MiB);
  } finally {
    await port.close();
  }
  port = await open(mOfS);
  try {
    expect(port.size).toBe(15 * MiB);
    expect(mirrorLegsOf(port).map((l) => l.mirror.legs[l.index]!.state)).toEqual(["in-sync", "in-sync"]);
    const read = new Uint8Array(MiB);
    await call.read(port, 14 * MiB, read);
    expect(Buffer.compare(read, pattern(MiB, 4))).toBe(0);
    await call.read(port, 6 * MiB, read);
    expect(Buffer.compare(read, pattern(MiB, 3))).toBe(0);
  } finally {
    await port.close();
  }

  // Stripe of two mirrors of two 4 MiB files: mirrors of 3 MiB, a stripe of 6 MiB.
  const sOfM = stripe([leg(mirror([file("sm0"), file("sm1")]), "mirror-a"), leg(mirror([file("sm2"), file("sm3")]), "mirror-b")]);
  port = await open(sOfM);
  try {
    expect(port.size).toBe(6 * MiB);
    expect(await resize(port, 10 * MiB)).toBe(0);
    expect(port.size).toBe(10 * MiB);
    await call.write(port, 9 * MiB, pattern(MiB, 5));
    await call.flush(port);
    for (const name of ["sm0", "sm1", "sm2", "sm3"]) expect(Bun.file(path(name)).size).toBe(META + 5 * MiB);
    // Chunk 144 (9 MiB / 64 KiB) is chunk 72 of mirror-a: its data at 4.5 MiB, on both its legs.
    for (const name of ["sm0", "sm1"]) expect(Buffer.compare(readFileAt(path(name), META + 4.5 * MiB, CHUNK), pattern(MiB, 5).subarray(0, CHUNK))).toBe(0);
  } finally {
    await port.close();
  }
  port = await open(sOfM);
  try {
    expect(port.size).toBe(10 * MiB);
    await until(() => mirrorLegsOf(port).every((l) => l.mirror.legs[l.index]!.state === "in-sync"), "the mirrors in sync");
  } finally {
    await port.close();
  }
});
