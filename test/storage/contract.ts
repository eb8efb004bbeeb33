/**
 * @module test/backend/contract — the behaviour every Backend must show, as one bun:test suite
 * run against memory, file and block device (backend.test.ts). Includes a randomized run
 * checked byte for byte against a plain Uint8Array oracle.
 *
 * Must not: depend on a backend's internals; backend-specific facts (sparseness, O_EXCL, ...)
 * belong in that backend's own test file.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Errno } from "../../src/lib/errno.ts";
import { BackendError } from "../../src/lib/errors.ts";
import type { Backend, Extent } from "../../src/storage/local/backend.ts";

const MiB = 1 << 20;

export type MakeBackend = (options: { readOnly: boolean }) => Backend | Promise<Backend>;

export interface ContractOptions {
  /**
   * After trim, the `granularity`-aligned interior of the range reads as zeroes (1: every
   * trimmed byte, 512: whole sectors only, as BLKDISCARD on a loop device); null: contents
   * after trim are unspecified (proto.md NBD_CMD_TRIM) and only the rest is checked.
   */
  trimZeroGranularity?: number | null;
  /** extents() reports holes (memory, file); false: everything is data (devices). */
  reportsHoles?: boolean;
  /** Random operations in the oracle run. */
  operations?: number;
}

/** mulberry32: tiny seeded PRNG so a failing run can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = ((i * 31 + seed * 7) % 251) + 1; // never 0
  return out;
}

function readBack(backend: Backend, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  backend.read(offset, out);
  return out;
}

function isZero(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

function expectErrno(run: () => unknown, errno: number): void {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(BackendError);
  expect((caught as BackendError).errno).toBe(errno);
}

/** Extents are well formed: positive lengths summing to the request; holes read as zero. */
function checkExtents(extents: Extent[], length: number, reportsHoles: boolean): void {
  let sum = 0;
  for (const extent of extents) {
    expect(extent.length).toBeGreaterThan(0);
    if (extent.hole) expect(extent.zero).toBe(true);
    if (!reportsHoles) expect(extent.hole).toBe(false);
    sum += extent.length;
  }
  expect(sum).toBe(length);
}

export function runBackendContract(
  name: string,
  make: MakeBackend,
  cleanup?: () => void | Promise<void>,
  options: ContractOptions = {},
): void {
  const granularity = options.trimZeroGranularity === undefined ? 1 : options.trimZeroGranularity;
  const reportsHoles = options.reportsHoles ?? true;

  /** Run `body` on a fresh backend and always close it. */
  async function withBackend(body: (backend: Backend) => void, readOnly = false): Promise<void> {
    const backend = await make({ readOnly });
    try {
      body(backend);
    } finally {
      backend.close();
    }
  }

  describe(`backend contract: ${name}`, () => {
    if (cleanup) afterAll(cleanup);

    test("size and blockSize are sane", () =>
      withBackend((b) => {
        expect(["memory", "file", "device"]).toContain(b.kind);
        expect(b.description.length).toBeGreaterThan(0);
        expect(Number.isSafeInteger(b.size)).toBe(true);
        expect(b.size).toBeGreaterThanOrEqual(4 * MiB); // the tests below need room
        expect(b.blockSize).toBeGreaterThanOrEqual(512);
        expect(b.blockSize & (b.blockSize - 1)).toBe(0);
        expect(b.readOnly).toBe(false);
      }));

    test("a never-written backend reads as zeroes everywhere", () =>
      withBackend((b) => {
        for (let offset = 0; offset < b.size; offset += MiB) {
          expect(isZero(readBack(b, offset, Math.min(MiB, b.size - offset)))).toBe(true);
        }
      }));

    test("write then read returns the same bytes (aligned, unaligned, spanning, at the end)", () =>
      withBackend((b) => {
        const cases: Array<[number, number]> = [
          [0, 4096],
          [8192, 65536],
          [112345, 777],
          [MiB - 1000, 3000], // spans a 1 MiB boundary
          [MiB - 1, MiB + 2], // spans two boundaries
          [b.size - 4097, 4097], // ends exactly at the end
          [b.size - 1, 1], // the last byte
        ];
        const expected = new Uint8Array(b.size); // later cases overwrite parts of earlier ones
        cases.forEach(([offset, length], i) => {
          b.write(offset, pattern(length, i + 1), false);
          expected.set(pattern(length, i + 1), offset);
        });
        for (const [offset, length] of cases) {
          expect(readBack(b, offset, length)).toEqual(expected.subarray(offset, offset + length));
        }
        expect(readBack(b, b.size - 2, 2)).toEqual(new Uint8Array([pattern(4097, 6)[4095]!, pattern(1, 7)[0]!]));
        expect(isZero(readBack(b, 4096, 4096))).toBe(true); // the gap between writes
      }));

    test("FUA write and flush succeed and the data reads back", () =>
      withBackend((b) => {
        b.write(4096, pattern(8192, 9), true);
        b.flush();
        expect(readBack(b, 4096, 8192)).toEqual(pattern(8192, 9));
      }));

    test("trim reads back as zeroes, keeps the size and leaves neighbours alone", () =>
      withBackend((b) => {
        const size = b.size;
        b.write(0, pattern(3 * MiB, 3), false);
        b.trim(MiB, MiB); // whole aligned MiB
        b.trim(100, 5000); // unaligned
        expect(b.size).toBe(size);
        const expected = pattern(3 * MiB, 3);
        if (granularity !== null) {
          zeroAligned(expected, MiB, MiB, granularity);
          zeroAligned(expected, 100, 5000, granularity);
          expect(readBack(b, 0, 3 * MiB)).toEqual(expected);
        } else {
          expect(readBack(b, 6000, MiB - 6000)).toEqual(expected.subarray(6000, MiB));
          expect(readBack(b, 2 * MiB, MiB)).toEqual(expected.subarray(2 * MiB));
        }
      }));

    for (const mayPunch of [true, false]) {
      test(`zero (mayPunch=${mayPunch}) reads back as zeroes exactly over the range`, () =>
        withBackend((b) => {
          b.write(0, pattern(3 * MiB, 4), false);
          const ranges: Array<[number, number]> = [[MiB, MiB], [100, 5000], [2 * MiB + 7, 3], [b.size - 513, 513]];
          b.write(b.size - 2048, pattern(2048, 5), false);
          for (const [offset, length] of ranges) b.zero(offset, length, mayPunch);
          const expected = pattern(3 * MiB, 4);
          for (const [offset, length] of ranges.slice(0, 3)) expected.fill(0, offset, offset + length);
          expect(readBack(b, 0, 3 * MiB)).toEqual(expected);
          const tail = pattern(2048, 5).fill(0, 2048 - 513);
          expect(readBack(b, b.size - 2048, 2048)).toEqual(tail);
        }));
    }

    test("extents cover the request and mark written data as data", () =>
      withBackend((b) => {
        b.write(2 * MiB + 4096, pattern(8192, 6), false);
        const extents = b.extents(0, b.size);
        checkExtents(extents, b.size, reportsHoles);
        checkExtents(b.extents(12345, 67890), 67890, reportsHoles);
        expect(b.extents(4096, 0).reduce((sum, e) => sum + e.length, 0)).toBe(0);
        let position = 0;
        for (const extent of extents) {
          const overlapsWrite = position < 2 * MiB + 4096 + 8192 && position + extent.length > 2 * MiB + 4096;
          if (overlapsWrite) expect(extent.hole).toBe(false);
          position += extent.length;
        }
        if (reportsHoles) {
          expect(extents[0]!.hole).toBe(true); // nothing was written at 0
          b.write(0, pattern(MiB, 7), false);
          b.trim(0, MiB);
          const afterTrim = b.extents(0, MiB);
          checkExtents(afterTrim, MiB, true);
          expect(afterTrim.every((e) => e.hole)).toBe(true);
        }
      }));

    test(`random operations match a Uint8Array oracle`, () =>
      withBackend((b) => randomRun(b, options.operations ?? 500, granularity, reportsHoles)));

    test("close is idempotent and later calls fail with EBADF", async () => {
      const b = await make({ readOnly: false });
      b.close();
      b.close();
      expectErrno(() => b.read(0, new Uint8Array(512)), Errno.EBADF);
      expectErrno(() => b.write(0, new Uint8Array(512), false), Errno.EBADF);
      expectErrno(() => b.flush(), Errno.EBADF);
    });

    test("a read-only backend reads but refuses write, trim and zero with EROFS", () =>
      withBackend((b) => {
        expect(b.readOnly).toBe(true);
        const before = readBack(b, 0, 8192);
        expectErrno(() => b.write(0, pattern(4096, 1), false), Errno.EROFS);
        expectErrno(() => b.write(0, pattern(4096, 1), true), Errno.EROFS);
        expectErrno(() => b.trim(0, 4096), Errno.EROFS);
        expectErrno(() => b.zero(0, 4096, true), Errno.EROFS);
        expectErrno(() => b.zero(0, 4096, false), Errno.EROFS);
        expect(readBack(b, 0, 8192)).toEqual(before);
        b.flush();
        checkExtents(b.extents(0, b.size), b.size, reportsHoles);
      }, true));
  });
}

/** Zero the part of [offset, offset+length) aligned to `granularity` in `bytes`. */
function zeroAligned(bytes: Uint8Array, offset: number, length: number, granularity: number): void {
  const start = Math.ceil(offset / granularity) * granularity;
  const end = Math.floor((offset + length) / granularity) * granularity;
  if (end > start) bytes.fill(0, start, end);
}

/** Offsets biased towards chunk boundaries and the end, where off-by-one bugs live. */
function pickRange(random: () => number, size: number): [number, number] {
  const length = random() < 0.2 ? 1 + Math.floor(random() * 3 * 65536) : 1 + Math.floor(random() * 9000);
  let offset: number;
  const kind = random();
  if (kind < 0.3) offset = Math.floor(random() * (size / MiB)) * MiB - Math.floor(random() * 5000);
  else if (kind < 0.4) offset = size - length - Math.floor(random() * 3);
  else if (kind < 0.6) offset = Math.floor(random() * (size / 4096)) * 4096;
  else offset = Math.floor(random() * size);
  offset = Math.max(0, Math.min(offset, size - 1));
  return [offset, Math.min(length, size - offset)];
}

function randomRun(b: Backend, operations: number, granularity: number | null, reportsHoles: boolean): void {
  const seed = 20240601;
  const random = prng(seed);
  const oracle = new Uint8Array(b.size);
  for (let step = 0; step < operations; step++) {
    const [offset, length] = pickRange(random, b.size);
    const op = random();
    const where = `seed ${seed} step ${step} at ${offset}+${length}`;
    if (op < 0.35) {
      const data = pattern(length, step);
      b.write(offset, data, random() < 0.05);
      oracle.set(data, offset);
    } else if (op < 0.65) {
      const got = readBack(b, offset, length);
      if (!equal(got, oracle.subarray(offset, offset + length))) throw new Error(`read mismatch, ${where}`);
    } else if (op < 0.75) {
      b.trim(offset, length);
      if (granularity === null) oracle.set(readBack(b, offset, length), offset);
      else zeroAligned(oracle, offset, length, granularity);
    } else if (op < 0.88) {
      b.zero(offset, length, random() < 0.5);
      oracle.fill(0, offset, offset + length);
    } else if (op < 0.95) {
      const extents = b.extents(offset, length);
      checkExtents(extents, length, reportsHoles);
      let position = offset;
      for (const extent of extents) {
        if (extent.zero && !isZero(oracle.subarray(position, position + extent.length))) {
          throw new Error(`extent claims zeroes over data, ${where}`);
        }
        position += extent.length;
      }
    } else {
      b.flush();
    }
  }
  for (let offset = 0; offset < b.size; offset += MiB) {
    const length = Math.min(MiB, b.size - offset);
    if (!equal(readBack(b, offset, length), oracle.subarray(offset, offset + length))) {
      throw new Error(`final contents differ in [${offset}, +${length}) (seed ${seed})`);
    }
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}
