import { describe, expect, test } from "bun:test";
import type { Extent } from "../../src/storage/local/backend.ts";
import { describeExtents } from "../../src/nbd/extents.ts";

const hole = (length: number): Extent => ({ length, hole: true, zero: true });
const data = (length: number): Extent => ({ length, hole: false, zero: false });
const zero = (length: number): Extent => ({ length, hole: false, zero: true });

function run(extents: Extent[], length: number, one = false, capacity = 16): Array<[number, number]> {
  const lengths = new Uint32Array(capacity);
  const statuses = new Uint32Array(capacity);
  const count = describeExtents(extents, length, one, lengths, statuses);
  return Array.from({ length: count }, (_, i) => [lengths[i]!, statuses[i]!]);
}

describe("describeExtents (base:allocation descriptors)", () => {
  test("statuses: hole = HOLE|ZERO, known zero = ZERO, data = 0; equal neighbours merge", () => {
    expect(run([hole(512), hole(512), data(1024), zero(512), data(512)], 3072)).toEqual([[1024, 3], [1024, 0], [512, 2], [512, 0]]);
  });

  test("never more than the request: the last run is clipped", () => {
    expect(run([data(4096), hole(1 << 30)], 8192)).toEqual([[4096, 0], [4096, 3]]);
  });

  test("REQ_ONE: exactly one descriptor, at most the request length", () => {
    expect(run([data(100), data(100), hole(100)], 150, true)).toEqual([[150, 0]]);
    expect(run([hole(1 << 20), data(1)], 4096, true)).toEqual([[4096, 3]]);
  });

  test("the maximum 32-bit length is described without overflow", () => {
    expect(run([data(2 ** 31), data(2 ** 31)], 0xffffffff)).toEqual([[0xffffffff, 0]]);
    expect(run([hole(2 ** 40)], 0xffffffff)).toEqual([[0xffffffff, 3]]);
  });

  test("at capacity the reply is shortened, never overrun (proto.md: a server MAY return fewer)", () => {
    const alternating = Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? data(512) : hole(512)));
    expect(run(alternating, 5120, false, 4)).toEqual([[512, 0], [512, 3], [512, 0], [512, 3]]);
  });

  test("broken or empty maps give one truthful status-0 descriptor", () => {
    expect(run([], 4096)).toEqual([[4096, 0]]);
    expect(run([data(0)], 4096)).toEqual([[4096, 0]]);
    expect(run([data(-5)], 4096)).toEqual([[4096, 0]]);
    expect(run([data(Number.NaN)], 4096)).toEqual([[4096, 0]]);
    expect(run([hole(512), data(0), data(512)], 4096)).toEqual([[512, 3]]);
  });
});
