import { expect, test } from "bun:test";
import { giveBuffer, pooledBufferBytes, takeBuffer } from "../../src/lib/buffer-pool.ts";

test("a returned buffer is handed out again for the same size class, with the exact length asked", () => {
  const first = takeBuffer((1 << 20) + 28);
  expect(first.length).toBe((1 << 20) + 28);
  const before = pooledBufferBytes();
  giveBuffer(first);
  expect(pooledBufferBytes()).toBe(before + first.buffer.byteLength);
  const second = takeBuffer(1 << 20);
  expect(second.buffer).toBe(first.buffer);
  expect(second.length).toBe(1 << 20);
  expect(pooledBufferBytes()).toBe(before);
});

test("foreign buffers are not pooled, and the pool stops growing at its cap", () => {
  const before = pooledBufferBytes();
  giveBuffer(new Uint8Array(1 << 20));
  expect(pooledBufferBytes()).toBe(before);
  const many = Array.from({ length: 40 }, () => takeBuffer(1 << 20));
  for (const b of many) giveBuffer(b);
  expect(pooledBufferBytes()).toBeLessThanOrEqual(32 * 1024 * 1024);
  expect(pooledBufferBytes()).toBeGreaterThan(before);
});
