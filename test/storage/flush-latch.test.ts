/**
 * storage/layers/flush-latch.ts over a port that does not latch by itself: once a FLUSH (or a
 * FUA mutation) failed with an I/O error, every later write, trim, zero, FLUSH and resize fails
 * with that errno, reads go on, and `onLatched` runs once. A refusal that says nothing about the
 * data (a FUA write out of range, a FLUSH of a closing port) does not latch.
 */
import { expect, test } from "bun:test";
import { Errno } from "../../src/lib/errno.ts";
import { FlushLatch } from "../../src/storage/layers/flush-latch.ts";
import { PassThrough } from "../../src/storage/layers/pass-through.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import type { Done, StoragePort } from "../../src/storage/port.ts";

/** A port whose next FLUSH or FUA write fails with `failNext`, then takes everything again (no latch of its own). */
class Forgetful extends PassThrough {
  failNext = 0;
  override flush(done: Done): void {
    if (this.failNext !== 0) return this.failOnce(done);
    super.flush(done);
  }
  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    if (fua && this.failNext !== 0) return this.failOnce(done);
    super.write(offset, data, fua, done);
  }
  private failOnce(done: Done): void {
    const errno = this.failNext;
    this.failNext = 0;
    done(errno);
  }
}

const run = (call: (done: Done) => void) => new Promise<number>((resolve) => call(resolve));

function latched(): { below: Forgetful; latch: FlushLatch; fired: number[] } {
  const below = new Forgetful(createLocalPort(createMemoryBackend(1 << 20)));
  const latch = new FlushLatch(below as StoragePort);
  const fired: number[] = [];
  latch.onLatched = (errno) => fired.push(errno);
  return { below, latch, fired };
}

test("after a failed FLUSH every mutation, FLUSH and resize fails with its errno although the port below takes them again; reads go on; onLatched once", async () => {
  const { below, latch, fired } = latched();
  expect(await run((d) => latch.write(0, new Uint8Array(4096).fill(7), false, d))).toBe(0);
  below.failNext = Errno.EIO;
  expect(await run((d) => latch.flush(d))).toBe(Errno.EIO);
  expect(await run((d) => latch.flush(d))).toBe(Errno.EIO); // the port below would succeed now
  expect(await run((d) => latch.write(4096, new Uint8Array(4096), false, d))).toBe(Errno.EIO);
  expect(await run((d) => latch.trim(0, 4096, false, d))).toBe(Errno.EIO);
  expect(await run((d) => latch.zero(0, 4096, { fua: false, noHole: false, fast: false }, d))).toBe(Errno.EIO);
  expect(await run((d) => latch.resize!(2 << 20, d))).toBe(Errno.EIO);
  const into = new Uint8Array(4096);
  expect(await run((d) => latch.read(0, into, d))).toBe(0);
  expect(into[0]).toBe(7);
  expect(fired).toEqual([Errno.EIO]);
  expect(latch.failed).toBe(Errno.EIO);
  expect(await run((d) => below.flush(d))).toBe(0); // the forgetful port itself would have taken it
});

test("a FUA write failing with an I/O error latches (its flush half may be what failed); one refused out of range, or a FLUSH of a closing port, does not", async () => {
  const { below, latch, fired } = latched();
  below.failNext = Errno.ENOSPC;
  expect(await run((d) => latch.write(0, new Uint8Array(4096), true, d))).toBe(Errno.ENOSPC);
  below.failNext = Errno.ESHUTDOWN;
  expect(await run((d) => latch.flush(d))).toBe(Errno.ESHUTDOWN);
  expect(fired).toEqual([]);
  expect(await run((d) => latch.write(0, new Uint8Array(4096), true, d))).toBe(0);
  below.failNext = Errno.EIO;
  expect(await run((d) => latch.write(0, new Uint8Array(4096), true, d))).toBe(Errno.EIO);
  expect(fired).toEqual([Errno.EIO]);
  expect(await run((d) => latch.write(0, new Uint8Array(4096), false, d))).toBe(Errno.EIO);
});
