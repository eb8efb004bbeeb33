/**
 * @module test/replication/initial-sync.test — InitialSync in process, over simulated disks
 * (docs/replication.md §10.1): how it stops when its own disk or files fail. The copy end to
 * end is in sync.test.ts (real processes) and sync-sim.ts (the simulation).
 */
import { expect, test } from "bun:test";
import { Errno } from "../../src/lib/errno.ts";
import { Prng } from "../../src/lib/prng.ts";
import { InitialSync, readSyncState, type SyncTransport } from "../../src/replication/initial-sync.ts";
import type { StoragePort } from "../../src/storage/port.ts";
import { SyncKind } from "../../src/wire/dst/constants.ts";
import { encodeSyncBegin, encodeSyncCopy } from "../../src/wire/dst/sync.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { runUntil, settle, SimDisk } from "./sim-files.ts";
import { SimDiskPort } from "./sim-port.ts";

const timer = (clock: SimClock) => ({
  now: () => clock.now,
  after: (ms: number, run: () => void) => {
    clock.after(ms, run);
    return () => {};
  },
});

test("a sync state file its directory fails to read stops the sync naming it; start does not reject (sync sim seed 12: it threw, and `done` never ran)", async () => {
  const clock = new SimClock();
  const files = new SimDisk(clock, new Prng(1), { latency: [0, 1], eioRate: 1 }); // every call fails
  const disk = new SimDiskPort(1 << 16, clock, new Prng(2), false);
  let asked = 0;
  const sync = new InitialSync(disk.handle(), files.directory(), (_request, _offset, _length, done) => (asked++, done(Errno.ETIMEDOUT, null)), timer(clock), { retryMs: 1 });
  let stopped: string | null = null;
  await settle(clock, sync.start({ from: null, ranges: null, why: "initial sync" }, (error) => (stopped = error)));
  expect(stopped as string | null).toMatch(/^reading the sync state failed: .*EIO/);
  expect(sync.status().phase).toBe("failed");
  expect(asked).toBe(0);
});

test("a write of the copy that failed is never claimed by a later save: another lane's write completing after it does not carry the progress past it (docs/replication.md §10.1)", async () => {
  const clock = new SimClock();
  const files = new SimDisk(clock, new Prng(1), { latency: [0, 0] });
  const size = 8 * 4096;
  // The disk: writes complete a tick later; the one at offset 0 fails (EIO).
  const disk = new SimDiskPort(size, clock, new Prng(2), false);
  const inner = disk.handle();
  const port = Object.create(inner) as StoragePort;
  port.write = (offset, data, fua, done) => (offset === 0 ? clock.after(1, () => done(Errno.EIO)) : inner.write(offset, data, fua, done));
  // The primary: BEGIN names seq 5; COPY sends the range as data, the one at 0 first, the others 3 ticks later.
  const transport: SyncTransport = (request, offset, length, done) => {
    if (request.kind === SyncKind.BEGIN) return clock.after(1, () => done(0, encodeSyncBegin({ point: { seq: 5, chain: 7n, lamport: 1, generation: 1 }, size, durable: 5 })));
    const payload = encodeSyncCopy({ end: offset + length, durable: 5, runs: [{ offset, length, data: new Uint8Array(length).fill(0xab) }] });
    clock.after(offset === 0 ? 1 : 3, () => done(0, payload));
  };
  const sync = new InitialSync(port, files.directory(), transport, timer(clock), { retryMs: 1, copyRange: 4096, lanes: 2, saveEvery: 4096 });
  let stopped: string | null = null;
  void sync.start({ from: null, ranges: null, why: "initial sync" }, (error) => (stopped = error));
  await runUntil(clock, () => stopped !== null);
  clock.runUntil(clock.ticks + 50); // the other lane's write completes, and a save it would start
  for (let i = 0; i < 16; i++) await null;
  expect(stopped as string | null).toMatch(/^writing the copy at 0 failed/);
  const state = await settle(clock, readSyncState(files.directory()));
  expect(state?.phase).toBe("copying");
  expect(state?.done).toBe(0); // a resume starts at 0: the block at 0 was never written
});

test("a fork repair the primary refuses for its fork point (released, forked: ENODATA, ESTALE) stops for good (`final`: the node does not try it again, resync --full can); a refused grant or a full sync does not", async () => {
  const cases: Array<[from: boolean, status: number, final: boolean]> = [
    [true, Errno.ENODATA, true],
    [true, Errno.ESTALE, true],
    [true, Errno.EPERM, false],
    [false, Errno.ENODATA, false],
  ];
  for (const [fork, status, final] of cases) {
    const clock = new SimClock();
    const files = new SimDisk(clock, new Prng(1), { latency: [0, 0] });
    const disk = new SimDiskPort(1 << 16, clock, new Prng(2), false);
    const sync = new InitialSync(disk.handle(), files.directory(), (_request, _offset, _length, done) => done(status, null), timer(clock), { retryMs: 1 });
    let stopped: string | null = null;
    const from = fork ? { seq: 5, chain: 7n, lamport: 5, generation: 1 } : null;
    await settle(clock, sync.start({ from, ranges: fork ? [[0, 4096]] : null, why: fork ? "resync" : "initial sync" }, (error) => (stopped = error)));
    await runUntil(clock, () => stopped !== null);
    expect(stopped as string | null).toMatch(/^the primary refused the sync: /);
    expect([fork, status, sync.final]).toEqual([fork, status, final]);
  }
});
