/**
 * @module test/storage/port-contract — the behaviour every asynchronous StoragePort must show
 * (src/storage/port.ts), as one bun:test suite: run against a memory port (port-contract.test.ts,
 * the canary that the suite itself holds) and against ports with no synchronous Backend under
 * them (Ceph RBD: test/storage/rbd/rbd.test.ts). The Backend-level suite is contract.ts; this
 * one checks the same facts through completions, with requests outstanding at once, and that
 * every completion is called exactly once.
 */
import { describe, expect, test } from "bun:test";
import { Errno } from "../../src/lib/errno.ts";
import type { StoragePort, ZeroFlags } from "../../src/storage/port.ts";
import { pattern, prng } from "./contract.ts";

const MiB = 1 << 20;

export interface PortContractOptions {
  /** A fresh port of at least 8 MiB that reads as zeroes; `readOnly` ports refuse writes. */
  open(options: { readOnly: boolean }): Promise<StoragePort>;
  /** Random operations in the oracle run. */
  operations?: number;
  /** The port implements resize (growing keeps data, the new tail reads as zeroes). */
  resizes?: boolean;
}

/** Run one request; the completion must come exactly once (a second call fails the test). */
function once(start: (done: (errno: number) => void) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    let calls = 0;
    start((errno) => {
      calls++;
      if (calls > 1) reject(new Error(`completion called ${calls} times`));
      else resolve(errno);
    });
  });
}

const read = (p: StoragePort, offset: number, length: number) => {
  const into = new Uint8Array(length);
  return once((d) => p.read(offset, into, d)).then((errno) => ({ errno, data: into }));
};
const write = (p: StoragePort, offset: number, data: Uint8Array, fua = false) => once((d) => p.write(offset, data, fua, d));
const zero = (p: StoragePort, offset: number, length: number, flags: Partial<ZeroFlags> = {}) =>
  once((d) => p.zero(offset, length, { fua: false, noHole: false, fast: false, ...flags }, d));
const trim = (p: StoragePort, offset: number, length: number) => once((d) => p.trim(offset, length, false, d));
const flush = (p: StoragePort) => once((d) => p.flush(d));

async function readBack(p: StoragePort, offset: number, length: number): Promise<Uint8Array> {
  const { errno, data } = await read(p, offset, length);
  expect(errno).toBe(0);
  return data;
}

function allZero(bytes: Uint8Array): boolean {
  return bytes.every((b) => b === 0);
}

export function portContract(name: string, options: PortContractOptions): void {
  const withPort = async (run: (port: StoragePort) => Promise<void>, readOnly = false) => {
    const port = await options.open({ readOnly });
    try {
      await run(port);
    } finally {
      await port.close();
    }
  };

  describe(`port contract: ${name}`, () => {
    test("size, block size and flags are sane", () =>
      withPort(async (p) => {
        expect(p.size).toBeGreaterThanOrEqual(8 * MiB);
        expect(p.blockSize).toBeGreaterThanOrEqual(512);
        expect(p.blockSize & (p.blockSize - 1)).toBe(0);
        expect(p.maxPayload).toBeGreaterThanOrEqual(MiB);
        expect(p.readOnly).toBe(false);
        expect(p.canFlush && p.canZero && p.canTrim).toBe(true);
      }));

    test("a fresh port reads as zeroes", () =>
      withPort(async (p) => {
        expect(allZero(await readBack(p, 0, MiB))).toBe(true);
        expect(allZero(await readBack(p, p.size - 4096, 4096))).toBe(true);
      }));

    test("write then read returns the same bytes (aligned, unaligned, spanning, at the end, 4 MiB)", () =>
      withPort(async (p) => {
        const cases: Array<[number, number]> = [[0, 4096], [4096 * 3 + 17, 1000], [4 * MiB - 700, 1400], [p.size - 513, 513], [MiB, 4 * MiB]];
        for (const [offset, length] of cases) {
          const data = pattern(length, offset % 97);
          expect(await write(p, offset, data)).toBe(0);
          expect(await readBack(p, offset, length)).toEqual(data);
        }
        // Neighbours of the unaligned write are untouched.
        const around = await readBack(p, 4096 * 3, 17);
        expect(allZero(around)).toBe(true);
      }));

    test("FUA write and flush succeed and the data reads back", () =>
      withPort(async (p) => {
        const data = pattern(8192, 5);
        expect(await write(p, 65536, data, true)).toBe(0);
        expect(await flush(p)).toBe(0);
        expect(await readBack(p, 65536, 8192)).toEqual(data);
      }));

    test("zero-length READ and WRITE (NBD and DST allow them) complete with 0 and leave nothing in flight", () =>
      withPort(async (p) => {
        expect((await read(p, 4096, 0)).errno).toBe(0);
        expect(await write(p, 4096, new Uint8Array(0))).toBe(0);
        expect(await write(p, 4096, new Uint8Array(0), true)).toBe(0);
        expect(await readBack(p, 4096, 8)).toEqual(new Uint8Array(8)); // and nothing was written
      }));

    for (const noHole of [false, true]) {
      test(`zero (noHole=${noHole}) reads back as zeroes exactly over an unaligned range`, () =>
        withPort(async (p) => {
          const data = pattern(64 * 1024, 9);
          expect(await write(p, 0, data)).toBe(0);
          expect(await zero(p, 1000, 40_000, { noHole })).toBe(0);
          const back = await readBack(p, 0, data.length);
          expect(back.subarray(0, 1000)).toEqual(data.subarray(0, 1000));
          expect(allZero(back.subarray(1000, 41_000))).toBe(true);
          expect(back.subarray(41_000)).toEqual(data.subarray(41_000));
        }));
    }

    test("trim succeeds, keeps the size and leaves neighbours alone (contents after it are a hint)", () =>
      withPort(async (p) => {
        const size = p.size;
        const data = pattern(3 * 4096, 3);
        expect(await write(p, 0, data)).toBe(0);
        expect(await trim(p, 4096, 4096)).toBe(0);
        const back = await readBack(p, 0, data.length);
        expect(back.subarray(0, 4096)).toEqual(data.subarray(0, 4096));
        expect(back.subarray(8192)).toEqual(data.subarray(8192));
        expect(p.size).toBe(size);
      }));

    test("a write's buffer may be reused the moment its completion is called", () =>
      withPort(async (p) => {
        // Four buffers, each refilled for the next write as soon as the previous one completes:
        // a port (or library) that still read the bytes after `done` would store the new fill.
        const chunk = 256 * 1024;
        const buffers = [0, 1, 2, 3].map(() => new Uint8Array(chunk));
        await Promise.all(
          buffers.map(async (buffer, lane) => {
            for (let i = lane; i < 24; i += 4) {
              buffer.fill(i + 1);
              expect(await write(p, i * chunk, buffer)).toBe(0);
            }
            buffer.fill(0xee);
          }),
        );
        for (let i = 0; i < 24; i++) {
          const back = await readBack(p, i * chunk, chunk);
          expect(back.every((b) => b === i + 1)).toBe(true);
        }
      }));

    test("requests past the end fail: read EINVAL, write and zero ENOSPC; nothing is written", () =>
      withPort(async (p) => {
        expect((await read(p, p.size - 512, 1024)).errno).toBe(Errno.EINVAL);
        expect(await write(p, p.size, new Uint8Array(512))).toBe(Errno.ENOSPC);
        expect(await zero(p, p.size - 4096, 8192)).toBe(Errno.ENOSPC);
        expect(allZero(await readBack(p, p.size - 4096, 4096))).toBe(true);
      }));

    test("a read-only port reads but refuses write, trim and zero", () =>
      withPort(async (p) => {
        expect(p.readOnly).toBe(true);
        expect((await read(p, 0, 4096)).errno).toBe(0);
        expect(await write(p, 0, new Uint8Array(4096))).not.toBe(0);
        expect(await trim(p, 0, 4096)).not.toBe(0);
        expect(await zero(p, 0, 4096)).not.toBe(0);
      }, true));

    test("random operations, 16 outstanding at once, match a Uint8Array oracle", () =>
      withPort(async (p) => {
        const span = 8 * MiB;
        const oracle = new Uint8Array(span);
        const random = prng(12);
        const operations = options.operations ?? 300;
        for (let batch = 0; batch < operations / 16; batch++) {
          // One batch: 16 requests on disjoint ranges, outstanding together.
          const slots = [...Array(16).keys()].map((i) => i * (span / 16));
          await Promise.all(
            slots.map(async (base, i) => {
              const length = 1 + Math.floor(random() * 64 * 1024);
              const offset = base + Math.floor(random() * (span / 16 - length));
              const kind = random();
              if (kind < 0.5) {
                const data = pattern(length, batch * 16 + i);
                oracle.set(data, offset);
                expect(await write(p, offset, data, random() < 0.1)).toBe(0);
              } else if (kind < 0.7) {
                oracle.fill(0, offset, offset + length);
                expect(await zero(p, offset, length)).toBe(0);
              } else {
                expect(await readBack(p, offset, length)).toEqual(oracle.subarray(offset, offset + length));
              }
            }),
          );
        }
        expect(await flush(p)).toBe(0);
        expect((await readBack(p, 0, span)).every((b, i) => b === oracle[i])).toBe(true);
      }));

    if (options.resizes) {
      test("resize grows: data stays, the new tail reads as zeroes", () =>
        withPort(async (p) => {
          const before = p.size;
          const data = pattern(4096, 1);
          expect(await write(p, before - 4096, data)).toBe(0);
          expect(await once((d) => p.resize!(before + MiB, d))).toBe(0);
          expect(p.size).toBe(before + MiB);
          expect(await readBack(p, before - 4096, 4096)).toEqual(data);
          expect(allZero(await readBack(p, before, MiB))).toBe(true);
        }));
    }

    test("close waits for requests in flight; later requests fail with EBADF", async () => {
      const p = await options.open({ readOnly: false });
      const pending = write(p, 0, pattern(MiB, 2));
      const closed = p.close();
      expect(await pending).toBe(0);
      await closed;
      await p.close();
      expect((await read(p, 0, 4096)).errno).toBe(Errno.EBADF);
      expect(await write(p, 0, new Uint8Array(4096))).toBe(Errno.EBADF);
    });
  });
}
