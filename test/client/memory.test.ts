/**
 * The copy's memory helpers: the WRITE pool reuses what it was given back (and keeps no more
 * than its capacity), and the memory budget collects only past its threshold, moving the
 * threshold up when a collection leaves the process over it (so collections never run on
 * every chunk when the data is live, not garbage).
 */
import { expect, test } from "bun:test";
import { MemoryBudget, SAMPLE_BYTES } from "../../src/client/memory-budget.ts";
import { WritePool } from "../../src/client/write-pool.ts";

const MiB = 1024 * 1024;

test("the write pool hands back what it was given, by length, up to its capacity", () => {
  const pool = new WritePool(2 * MiB);
  const a = pool.take(MiB);
  const b = pool.take(MiB);
  const c = pool.take(MiB);
  expect(pool.allocated).toBe(3);
  pool.give(a);
  pool.give(b);
  pool.give(c); // over capacity: left to the GC
  expect(pool.pooledBytes).toBe(2 * MiB);
  expect(pool.take(4096)).not.toBe(a); // another length: a fresh buffer
  const again = [pool.take(MiB), pool.take(MiB)];
  expect(new Set(again)).toEqual(new Set([a, b]));
  expect(pool.pooledBytes).toBe(0);
});

test("the memory budget collects past its threshold and never twice in a row for live data", () => {
  let rss = 100 * MiB;
  let collections = 0;
  let leftAfterCollect = 100 * MiB;
  const budget = new MemoryBudget(192 * MiB, () => rss, () => {
    collections++;
    rss = leftAfterCollect;
  });
  budget.check();
  expect(collections).toBe(0);
  rss = 200 * MiB; // garbage: a collection brings it back down
  budget.check();
  expect(collections).toBe(1);
  expect(rss).toBe(100 * MiB);
  leftAfterCollect = 230 * MiB; // live data above the budget
  rss = 240 * MiB;
  budget.check();
  expect(collections).toBe(2);
  rss = 240 * MiB; // still live: under the moved threshold (230 + margin), no collection
  budget.check();
  expect(collections).toBe(2);
  expect(budget.collections).toBe(2);
});

test("with chunk lengths, the budget reads the resident size only every SAMPLE_BYTES of data", () => {
  let reads = 0;
  let collections = 0;
  const budget = new MemoryBudget(192 * MiB, () => (reads++, 500 * MiB), () => void collections++);
  for (let i = 0; i < SAMPLE_BYTES / MiB - 1; i++) budget.check(MiB);
  expect(reads).toBe(0);
  budget.check(MiB); // the SAMPLE_BYTES-th MiB: looked at, over budget, collected
  expect(reads).toBeGreaterThan(0);
  expect(collections).toBe(1);
  const after = reads;
  budget.check(MiB);
  expect(reads).toBe(after);
});
