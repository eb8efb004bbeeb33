/**
 * Linear and stripe over memory legs, with completions delivered synchronously and, through a
 * DeferredLayer, late and out of order: random I/O against a plain array per leg (the
 * reference model), the mapping arithmetic, online growth, extents, error propagation.
 */
import { describe, expect, test } from "bun:test";
import { Errno } from "../../../src/lib/errno.ts";
import { Prng } from "../../../src/lib/prng.ts";
import { createMemoryBackend } from "../../../src/storage/local/memory.ts";
import { createLocalPort } from "../../../src/storage/local/port.ts";
import { DeferredLayer, HeldWork } from "../../../src/storage/layers/deferred.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import type { Done, StoragePort } from "../../../src/storage/port.ts";
import { call } from "../../../src/storage/port.ts";
import { intersectWalks } from "../../../src/storage/tree/extents.ts";
import { LinearPort } from "../../../src/storage/tree/linear.ts";
import { StripePort } from "../../../src/storage/tree/stripe.ts";

const KiB = 1024;
const memory = (size: number) => createLocalPort(createMemoryBackend(size));

/** Counts calls and can fail writes (a leg whose budget ran out). */
class Probe extends PassThrough {
  calls = 0;
  failWrites = 0;
  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    this.calls++;
    if (this.failWrites !== 0) return done(this.failWrites);
    super.write(offset, data, fua, done);
  }
  override read(offset: number, into: Uint8Array, done: Done): void {
    this.calls++;
    super.read(offset, into, done);
  }
}

/** Random reads/writes/zeroes through `port`, checked against `model` (the whole node). */
async function randomRun(port: StoragePort, model: Uint8Array, seed: number, steps: number, held?: HeldWork, prng = new Prng(seed)): Promise<void> {
  for (let step = 0; step < steps; step++) {
    const length = 1 + prng.int(Math.min(64 * KiB, port.size));
    const offset = prng.int(port.size - length + 1);
    const roll = prng.int(10);
    const settle = async <T>(p: Promise<T>) => {
      if (held) held.releaseAll((n) => prng.int(n)); // any order
      return p;
    };
    if (roll < 4) {
      const data = prng.bytes(length);
      await settle(call.write(port, offset, data));
      model.set(data, offset);
    } else if (roll < 5) {
      await settle(call.zero(port, offset, length));
      model.fill(0, offset, offset + length);
    } else {
      const into = new Uint8Array(length);
      await settle(call.read(port, offset, into));
      if (!Buffer.from(into).equals(Buffer.from(model.subarray(offset, offset + length)))) throw new Error(`seed ${seed} step ${step}: read ${offset}+${length} differs from the model`);
    }
  }
}

describe("linear", () => {
  test("sizes add up (rounded to the block size); random I/O across boundaries matches the model", async () => {
    const legs = [memory(100 * KiB + 300), memory(64 * KiB), memory(36 * KiB)];
    const linear = new LinearPort(legs.map((port, i) => ({ port, label: `m${i}` })));
    expect(linear.blockSize).toBe(4096);
    expect(linear.size).toBe(100 * KiB + 64 * KiB + 36 * KiB);
    expect(linear.legs.map((l) => l.start)).toEqual([0, 100 * KiB, 164 * KiB]);
    const model = new Uint8Array(linear.size);
    await randomRun(linear, model, 1, 300);
  });

  test("late, out-of-order completions: random I/O still matches", async () => {
    const held = new HeldWork();
    const legs = [memory(64 * KiB), memory(64 * KiB), memory(64 * KiB)].map((p) => new DeferredLayer(p, held.schedule));
    const linear = new LinearPort(legs.map((port, i) => ({ port, label: `m${i}` })));
    expect(linear.synchronous).toBe(false);
    await randomRun(linear, new Uint8Array(linear.size), 2, 200, held);
  });

  test("append grows the node online: the size changes at once and data before is kept", async () => {
    const linear = new LinearPort([{ port: memory(64 * KiB), label: "a" }]);
    await call.write(linear, 60 * KiB, new Uint8Array(4 * KiB).fill(5));
    await expect(call.write(linear, 64 * KiB, new Uint8Array(4096))).rejects.toThrow(/no space/);
    linear.append({ port: memory(32 * KiB), label: "b" });
    expect(linear.size).toBe(96 * KiB);
    await call.write(linear, 62 * KiB, new Uint8Array(8 * KiB).fill(6)); // spans the old end
    const back = new Uint8Array(10 * KiB);
    await call.read(linear, 60 * KiB, back);
    expect([...back.subarray(0, 2 * KiB)].every((b) => b === 5)).toBe(true);
    expect([...back.subarray(2 * KiB)].every((b) => b === 6)).toBe(true);
    expect(linear.describe().legs!.map((l) => [l.label, l.offsetBytes, l.sizeBytes])).toEqual([["a", 0, 64 * KiB], ["b", 64 * KiB, 32 * KiB]]);
    expect(() => linear.append({ port: memory(100), label: "tiny" })).toThrow(/smaller than one 4096-byte block/);
  });

  test("extents are joined across legs and merged; the walk stops at maxExtents", async () => {
    const linear = new LinearPort([memory(64 * KiB), memory(64 * KiB)].map((port, i) => ({ port, label: `m${i}` })));
    expect(await call.extents(linear, 0, linear.size)).toEqual([{ length: 128 * KiB, hole: true, zero: true }]);
    await call.write(linear, 60 * KiB, new Uint8Array(8 * KiB).fill(1));
    const extents = await call.extents(linear, 0, linear.size);
    expect(extents.reduce((n, e) => n + e.length, 0)).toBe(128 * KiB);
    expect(extents.some((e) => !e.hole)).toBe(true);
    const short = await call.extents(linear, 0, linear.size, 1);
    expect(short.length).toBe(1);
  });

  test("intersectWalks: zero or hole only where every walk says so; the shortest walk bounds it; maxExtents caps it", () => {
    const D = { hole: false, zero: false }, H = { hole: true, zero: true }, Z = { hole: false, zero: true };
    const a = [{ length: 4, ...H }, { length: 4, ...D }, { length: 8, ...Z }];
    const b = [{ length: 2, ...D }, { length: 6, ...H }, { length: 6, ...H }];
    expect(intersectWalks([a, b], 10)).toEqual([{ length: 2, ...D }, { length: 2, ...H }, { length: 4, ...D }, { length: 6, ...Z }]);
    expect(intersectWalks([a, b], 2)).toEqual([{ length: 2, ...D }, { length: 2, ...H }]);
    expect(intersectWalks([a], 10)).toEqual(a);
    expect(intersectWalks([a, []], 10)).toEqual([]);
  });

  test("a leg's failure fails the request (first errno wins)", async () => {
    const probe = new Probe(memory(64 * KiB));
    const linear = new LinearPort([{ port: memory(64 * KiB), label: "a" }, { port: probe, label: "b" }]);
    probe.failWrites = Errno.ETIMEDOUT;
    await expect(call.write(linear, 60 * KiB, new Uint8Array(8 * KiB))).rejects.toThrow(/timed out/);
    await call.write(linear, 0, new Uint8Array(4 * KiB)); // the other leg is unaffected
  });
});

describe("stripe", () => {
  test("chunk k of the node is chunk ⌊k/N⌋ of leg k mod N", () => {
    const stripe = new StripePort([memory(256 * KiB), memory(256 * KiB), memory(256 * KiB)].map((port, i) => ({ port, label: `m${i}` })), 16 * KiB);
    expect(stripe.size).toBe(3 * 256 * KiB);
    expect(stripe.locate(0)).toEqual([0, 0]);
    expect(stripe.locate(16 * KiB)).toEqual([1, 0]);
    expect(stripe.locate(48 * KiB + 5)).toEqual([0, 16 * KiB + 5]);
    // legRanges (closed form) agrees with walking chunk by chunk, for many ranges.
    const prng = new Prng(3);
    for (let i = 0; i < 2000; i++) {
      const length = 1 + prng.int(200 * KiB);
      const offset = prng.int(stripe.size - length + 1);
      const walked = new Map<number, [number, number]>();
      for (let at = offset; at < offset + length; ) {
        const [leg, legOffset] = stripe.locate(at);
        const n = Math.min(offset + length - at, 16 * KiB - (at % (16 * KiB)));
        const range = walked.get(leg);
        walked.set(leg, range === undefined ? [legOffset, legOffset + n] : [range[0], legOffset + n]);
        at += n;
      }
      const closed = stripe.legRanges(offset, length).map((r) => [r.leg, r.legOffset, r.legOffset + r.length]);
      expect(closed).toEqual([...walked.entries()].sort((a, b) => a[0] - b[0]).map(([leg, [s, e]]) => [leg, s, e]));
    }
  });

  test("a request touches each leg once; a 1 MiB request on 512 KiB chunks is one piece per leg (no copy)", async () => {
    const probes = [new Probe(memory(4 << 20)), new Probe(memory(4 << 20))];
    const stripe = new StripePort(probes.map((port, i) => ({ port, label: `p${i}` })));
    await call.write(stripe, 0, new Uint8Array(1 << 20).fill(1));
    expect(probes.map((p) => p.calls)).toEqual([1, 1]);
    await call.read(stripe, 512 * KiB, new Uint8Array(2 << 20)); // chunks 1..4: two per leg, still one call each
    expect(probes.map((p) => p.calls)).toEqual([2, 2]);
  });

  test("random I/O with synchronous and with late, out-of-order completions matches the model", async () => {
    const legs = [memory(96 * KiB), memory(100 * KiB), memory(96 * KiB)];
    const stripe = new StripePort(legs.map((port, i) => ({ port, label: `m${i}` })), 8 * KiB);
    expect(stripe.size).toBe(3 * 96 * KiB);
    await randomRun(stripe, new Uint8Array(stripe.size), 4, 300);
    const held = new HeldWork();
    const deferred = [memory(64 * KiB), memory(64 * KiB)].map((p) => new DeferredLayer(p, held.schedule));
    const stripe2 = new StripePort(deferred.map((port, i) => ({ port, label: `d${i}` })), 4 * KiB);
    await randomRun(stripe2, new Uint8Array(stripe2.size), 5, 200, held);
  });

  test("a trim of the whole node is one call per leg; extents walk chunk by chunk", async () => {
    const probes = [new Probe(memory(1 << 20)), new Probe(memory(1 << 20))];
    let trims = 0;
    for (const p of probes) {
      const trim = p.trim.bind(p);
      p.trim = (offset, length, fua, done) => {
        trims++;
        trim(offset, length, fua, done);
      };
    }
    const stripe = new StripePort(probes.map((port, i) => ({ port, label: `p${i}` })), 4096);
    await call.trim(stripe, 0, stripe.size);
    expect(trims).toBe(2);
    await call.write(stripe, 4096, new Uint8Array(4096).fill(1)); // chunk 1 → leg 1
    const extents = await call.extents(stripe, 0, 16 * KiB);
    expect(extents.reduce((n, e) => n + e.length, 0)).toBe(16 * KiB);
    expect(extents[0]).toEqual({ length: 4096, hole: true, zero: true });
    expect(extents[1]!.hole).toBe(false);
  });

  test("refuses a chunk that is not a multiple of the legs' block size", () => {
    expect(() => new StripePort([{ port: memory(1 << 20), label: "m" }], 1000)).toThrow(/multiple of the legs' block size/);
  });
});
