/**
 * @module test/backend/memory.test — what only the memory backend promises: lazy 1 MiB
 * chunks (a huge export costs nothing up front), freeing on trim/zero, holes in extents,
 * and refusing sizes it cannot address exactly.
 */
import { describe, expect, test } from "bun:test";
import { createMemoryBackend, MEMORY_CHUNK_SIZE } from "../../src/storage/local/memory.ts";
import { AssertionError } from "../../src/lib/assert.ts";
import { DstdError } from "../../src/lib/errors.ts";

const MiB = 1 << 20;
const GiB = 1 << 30;

describe("memory backend", () => {
  test("a 10 GiB export allocates nothing until written, then one chunk", () => {
    const b = createMemoryBackend(10 * GiB);
    expect(MEMORY_CHUNK_SIZE).toBe(MiB);
    expect(b.allocatedBytes()).toBe(0);
    b.write(9 * GiB + 12345, new Uint8Array(4096).fill(0xab), false);
    expect(b.allocatedBytes()).toBe(MiB);
    const read = new Uint8Array(4096);
    b.read(9 * GiB + 12345, read);
    expect(read.every((byte) => byte === 0xab)).toBe(true);
    b.read(5 * GiB, read);
    expect(read.every((byte) => byte === 0)).toBe(true);
    expect(b.allocatedBytes()).toBe(MiB); // reads allocate nothing
    expect(b.extents(0, 10 * GiB)).toEqual([
      { length: 9 * GiB, hole: true, zero: true },
      { length: MiB, hole: false, zero: false },
      { length: GiB - MiB, hole: true, zero: true },
    ]);
    b.close();
    expect(b.allocatedBytes()).toBe(0);
  });

  test("the last chunk is only as large as the export", () => {
    const b = createMemoryBackend(MiB + 10);
    b.write(MiB + 9, new Uint8Array([7]), false);
    expect(b.allocatedBytes()).toBe(10);
    expect(b.extents(MiB, 10)).toEqual([{ length: 10, hole: false, zero: false }]);
  });

  test("a short last chunk grows with the disk: reads fill the whole buffer, writes land (grow, and shrink then grow)", () => {
    const b = createMemoryBackend(MiB + 4096);
    b.write(MiB, new Uint8Array(4096).fill(9), false);
    b.resize!(3 * MiB);
    const back = new Uint8Array(MiB).fill(0xaa); // a recycled buffer: every byte must be written
    b.read(MiB, back);
    expect(back.subarray(0, 4096).every((x) => x === 9)).toBe(true);
    expect(back.subarray(4096).every((x) => x === 0)).toBe(true);
    b.write(MiB + 8192, new Uint8Array(4096).fill(3), false);
    b.read(MiB + 8192, back.subarray(0, 4096));
    expect(back.subarray(0, 4096).every((x) => x === 3)).toBe(true);

    const c = createMemoryBackend(4 * MiB);
    c.write(MiB, new Uint8Array(MiB).fill(7), false);
    c.resize!(MiB + 100);
    c.resize!(4 * MiB);
    const again = new Uint8Array(MiB).fill(0xaa);
    c.read(MiB, again);
    expect(again.subarray(0, 100).every((x) => x === 7)).toBe(true);
    expect(again.subarray(100).every((x) => x === 0)).toBe(true);
  });

  test("trim frees whole chunks and zeroes partial ones in place", () => {
    const b = createMemoryBackend(4 * MiB);
    b.write(0, new Uint8Array(4 * MiB).fill(1), false);
    expect(b.allocatedBytes()).toBe(4 * MiB);
    b.trim(MiB - 100, MiB + 200); // chunk 1 whole, 100 bytes of chunks 0 and 2
    expect(b.allocatedBytes()).toBe(3 * MiB);
    const edge = new Uint8Array(400);
    b.read(MiB - 200, edge);
    expect([edge[99], edge[100], edge[399]]).toEqual([1, 0, 0]);
    b.read(2 * MiB + 50, edge);
    expect([edge[49], edge[50]]).toEqual([0, 1]);
  });

  test("zero frees whole chunks only when a hole is allowed", () => {
    const b = createMemoryBackend(3 * MiB);
    b.write(0, new Uint8Array(3 * MiB).fill(2), false);
    b.zero(0, MiB, false);
    expect(b.allocatedBytes()).toBe(3 * MiB);
    expect(b.extents(0, MiB)).toEqual([{ length: MiB, hole: false, zero: false }]);
    b.zero(MiB, MiB, true);
    expect(b.allocatedBytes()).toBe(2 * MiB);
    const read = new Uint8Array(2 * MiB);
    b.read(0, read);
    expect(read.every((byte) => byte === 0)).toBe(true);
  });

  test("extents over a huge sparse export do not walk every chunk", () => {
    const size = Number.MAX_SAFE_INTEGER;
    const b = createMemoryBackend(size);
    b.write(size - 1, new Uint8Array([1]), false);
    const extents = b.extents(0, size);
    expect(extents.length).toBe(2);
    expect(extents[1]).toEqual({ length: size % MiB || MiB, hole: false, zero: false });
    expect(extents[0]!.length + extents[1]!.length).toBe(size);
  });

  test("sizes it cannot address exactly are refused", () => {
    for (const size of [Number.MAX_SAFE_INTEGER + 1, -1, 1.5, Number.NaN]) {
      expect(() => createMemoryBackend(size)).toThrow(DstdError);
    }
    expect(() => createMemoryBackend(2 ** 60)).toThrow(/between 0 and 9007199254740991/);
  });

  test("out-of-range access is a programmer error, not a silent grow", () => {
    const b = createMemoryBackend(MiB);
    expect(() => b.write(MiB - 1, new Uint8Array(2), false)).toThrow(AssertionError);
    expect(() => b.read(-1, new Uint8Array(1))).toThrow(AssertionError);
    expect(b.allocatedBytes()).toBe(0);
  });
});
