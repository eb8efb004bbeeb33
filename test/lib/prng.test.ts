/**
 * @module test/lib/prng — the seeded PRNG is deterministic forever (golden outputs: a change
 * here breaks the replay of every recorded simulation seed) and its helpers stay in range.
 * The golden values were cross-checked against an independent Python implementation of
 * splitmix32 + sfc32 with arbitrary-precision integers.
 */
import { describe, expect, test } from "bun:test";
import { AssertionError } from "../../src/lib/assert.ts";
import { Prng } from "../../src/lib/prng.ts";

function firstOutputs(seed: number, n = 4): number[] {
  const prng = new Prng(seed);
  return Array.from({ length: n }, () => prng.next());
}

describe("determinism", () => {
  test("golden outputs", () => {
    expect(firstOutputs(0)).toEqual([591558436, 2737234123, 107644106, 1338548054]);
    expect(firstOutputs(1)).toEqual([792534090, 3215351813, 160231488, 1151041103]);
    expect(firstOutputs(2 ** 32)).toEqual([1134304827, 2237210975, 2630004462, 1402677018]);
    expect(firstOutputs(-1)).toEqual([127778042, 2390950214, 1124374741, 2434444133]);
    const p = new Prng(42);
    expect(p.float()).toBe(0.5767213890841907);
    expect(p.int(6)).toBe(5);
    expect(p.int(2 ** 40)).toBe(869991655294);
    expect([...p.bytes(7)]).toEqual([196, 113, 31, 201, 96, 79, 5]);
  });

  test("same seed, same stream; seeds differing only above bit 32 differ", () => {
    expect(firstOutputs(123456789, 100)).toEqual(firstOutputs(123456789, 100));
    expect(firstOutputs(5)).not.toEqual(firstOutputs(5 + 2 ** 32));
    expect(new Prng(77).seed).toBe(77);
  });

  test("seeds must be safe integers", () => {
    expect(() => new Prng(1.5)).toThrow(AssertionError);
    expect(() => new Prng(Number.NaN)).toThrow(AssertionError);
    expect(() => new Prng(2 ** 53)).toThrow(AssertionError);
  });
});

describe("helpers", () => {
  const prng = new Prng(2024);

  test("next is a u32", () => {
    for (let i = 0; i < 10_000; i++) {
      const v = prng.next();
      expect(Number.isInteger(v) && v >= 0 && v < 2 ** 32).toBe(true);
    }
  });

  test("float is in [0, 1) and roughly uniform", () => {
    const buckets = new Array<number>(10).fill(0);
    for (let i = 0; i < 100_000; i++) {
      const f = prng.float();
      expect(f >= 0 && f < 1).toBe(true);
      buckets[Math.floor(f * 10)]!++;
    }
    for (const b of buckets) expect(Math.abs(b - 10_000)).toBeLessThan(500); // ~5 sigma
  });

  test("int stays in range, hits every value, and rejects bad bounds", () => {
    const seen = new Set<number>();
    for (let i = 0; i < 10_000; i++) {
      const v = prng.int(7);
      expect(Number.isInteger(v) && v >= 0 && v < 7).toBe(true);
      seen.add(v);
    }
    expect(seen.size).toBe(7);
    expect(prng.int(1)).toBe(0);
    for (let i = 0; i < 1000; i++) {
      const v = prng.int(2 ** 53);
      expect(Number.isSafeInteger(v) && v >= 0).toBe(true);
    }
    const v = prng.int(2 ** 32);
    expect(v >= 0 && v < 2 ** 32).toBe(true);
    expect(() => prng.int(0)).toThrow(AssertionError);
    expect(() => prng.int(2.5)).toThrow(AssertionError);
  });

  test("chance honours its extremes and its rate", () => {
    let hits = 0;
    for (let i = 0; i < 10_000; i++) {
      expect(prng.chance(0)).toBe(false);
      expect(prng.chance(1)).toBe(true);
      if (prng.chance(0.25)) hits++;
    }
    expect(Math.abs(hits - 2500)).toBeLessThan(250);
  });

  test("bytes has the asked length, including non-multiples of 4", () => {
    for (const n of [0, 1, 3, 4, 5, 1000]) expect(prng.bytes(n).length).toBe(n);
    const big = prng.bytes(4096);
    expect(new Set(big).size).toBeGreaterThan(200);
    expect(() => prng.bytes(-1)).toThrow(AssertionError);
  });

  test("pick returns members, all of them eventually", () => {
    const items = ["a", "b", "c"] as const;
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(prng.pick(items));
    expect([...seen].sort()).toEqual(["a", "b", "c"]);
    expect(() => prng.pick([])).toThrow(AssertionError);
  });
});
