/**
 * @module test/replication/initial-sync.test — InitialSync in process, over simulated disks
 * (docs/replication.md §10.1): how it stops when its own disk or files fail. The copy end to
 * end is in sync.test.ts (real processes) and sync-sim.ts (the simulation).
 */
import { expect, test } from "bun:test";
import { Errno } from "../../src/lib/errno.ts";
import { Prng } from "../../src/lib/prng.ts";
import { InitialSync } from "../../src/replication/initial-sync.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { settle, SimDisk } from "./sim-files.ts";
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
