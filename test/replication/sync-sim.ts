/**
 * @module test/replication/sync-sim — one seed of the initial-sync simulation
 * (docs/replication.md §10.1): the real ReplicationPrimary serving a random workload, the real
 * sync server (SYNC BEGIN/COPY), InitialSync, Secondary, Shipper and LogShipServer, over the
 * simulated disks of the replication simulation (sim-files.ts, sim-port.ts) on simulated time.
 *
 * A fresh secondary joins while the primary keeps writing, after the primary released the
 * start of its log (checkpoints with no secondary registered). Faults from the seed: lost or
 * failed SYNC answers (retried), power loss of the secondary during the copy (unsynced file
 * changes and unflushed disk writes kept or dropped; a new process resumes the copy), a small
 * reply budget (many COPY answers, run tables full), a log small enough to overflow.
 *
 * Invariants:
 * - consistent point: once the applier has applied through the sync's `end` (and is itself
 *   consistent), the secondary's disk equals the primary's state after exactly the prefix it
 *   applied — checked at every batch from there (runs in which the primary never wrote
 *   around its log: writes around it are not in the model);
 * - resume: a crash during the copy resumes at the saved progress, never beyond what was
 *   flushed (the final comparison catches a skipped range);
 * - convergence: once the workload ends, the secondary catches up and equals the primary.
 */
import { Errno } from "../../src/lib/errno.ts";
import { Prng } from "../../src/lib/prng.ts";
import { InitialSync, readSyncState, type SyncTransport } from "../../src/replication/initial-sync.ts";
import { ReplicationPrimary } from "../../src/replication/primary.ts";
import { decodeHeader, RecordOp, RECORD_HEADER_SIZE, type ChainPoint } from "../../src/replication/record.ts";
import { Secondary } from "../../src/replication/secondary.ts";
import { LogShipServer } from "../../src/replication/ship-server.ts";
import { Shipper, type FetchTransport } from "../../src/replication/shipper.ts";
import { answerSync } from "../../src/replication/sync-server.ts";
import { encodeFetchReason } from "../../src/wire/dst/fetch.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { simTrace } from "./sim-trace.ts";
import { runUntil, settle, SimDisk } from "./sim-files.ts";
import { SimDiskPort } from "./sim-port.ts";

export class SyncSimFailure extends Error {}

export interface SyncSimStats {
  syncs: number;
  resumes: number;
  secondaryCrashes: number;
  failedAnswers: number;
  prefixChecks: number;
  overflowed: boolean;
  /** Data bytes the copy moved, and the disk's size. */
  moved: number;
  diskSize: number;
  /** The sync point was after seq 1 (the log had been released). */
  releasedBefore: boolean;
  /** Resumes after a power loss at progress saved inside one slice of the copy (copyRange = the disk). */
  resumedInSlice: number;
}

interface Shadow {
  op: number;
  offset: number;
  length: number;
  payload: Uint8Array;
}

export async function runSyncSeed(seed: number, verbose = false): Promise<SyncSimStats> {
  const clock = new SimClock();
  const { log, simLog, tail } = simTrace(clock, verbose);
  const fail = (invariant: string, detail: string): never => {
    throw new SyncSimFailure(`sync sim seed ${seed}: ${invariant}: ${detail}\n  replay: SIM_SEED=${seed} bun test test/replication/sync-sim.test.ts\n${tail(40)}`);
  };
  const root = new Prng(seed);
  const prng = { files: new Prng(root.next()), port: new Prng(root.next()), work: new Prng(root.next()), faults: new Prng(root.next()) };
  const f = prng.faults;
  const blockSize = f.pick([512, 1024, 4096]);
  const blocks = 16 + f.int(120);
  const diskSize = blockSize * blocks;
  const options = {
    logLimit: f.chance(0.3) ? blockSize * (8 + f.int(24)) : 1 << 24,
    segmentSize: f.pick([2048, 8192]),
    checkpointBytes: blockSize * (1 + f.int(8)),
  };
  const budget = f.pick([4096, 4096 + f.int(8192), 1 << 16]);
  const copyRange = f.pick([blockSize * 4, blockSize * 16, diskSize]);
  const saveEvery = f.pick([blockSize * 2, blockSize * 8, diskSize]);
  const lanes = f.pick([1, 2, 3]);
  const failRate = f.pick([0, 0.05, 0.2]);
  const crashRate = f.pick([0, 0.02, 0.05]);
  const opsBefore = 20 + f.int(60);
  const opsDuring = 20 + f.int(80);
  const queueDepth = 1 + f.int(6);
  const stats: SyncSimStats = { syncs: 0, resumes: 0, secondaryCrashes: 0, failedAnswers: 0, prefixChecks: 0, overflowed: false, moved: 0, diskSize, releasedBefore: false, resumedInSlice: 0 };
  log(`options ${JSON.stringify({ blockSize, blocks, ...options, budget, copyRange, saveEvery, lanes, failRate, crashRate, opsBefore, opsDuring, queueDepth })}`);
  const now = () => clock.ticks * 1000 + 1;
  const timer = (alive: () => boolean) => ({
    now: () => clock.now,
    after: (ms: number, run: () => void) => {
      let live = true;
      clock.after(ms, () => live && alive() && run());
      return () => (live = false);
    },
  });

  // ---- the primary and its workload ----
  const primaryDisk = new SimDiskPort(diskSize, clock, prng.port, f.chance(0.3));
  const primaryFiles = new SimDisk(clock, prng.files, { latency: [0, 2] });
  const shadow = new Map<number, Shadow>();
  const onAppend = (point: ChainPoint, chunks: readonly Uint8Array[]) => {
    const h = decodeHeader(chunks[0]!);
    const payload = h.op !== RecordOp.WRITE ? new Uint8Array(0) : chunks.length > 1 ? chunks[1]!.slice() : chunks[0]!.slice(RECORD_HEADER_SIZE);
    shadow.set(point.seq, { op: h.op, offset: h.offset, length: h.length, payload });
  };
  const primary = await settle(clock, ReplicationPrimary.open(primaryDisk.handle(), primaryFiles.directory(), { ...options, now, onAppend, log: simLog("primary") }));
  const w = prng.work;
  let issued = 0;
  let inFlight = 0;
  const busy = new Set<number>();
  let limit = opsBefore;
  function work(): void {
    while (inFlight < queueDepth && issued < limit) {
      const count = 1 + w.int(Math.min(4, blocks));
      const first = w.int(blocks - count + 1);
      let free = true;
      for (let b = first; b < first + count; b++) if (busy.has(b)) free = false;
      if (!free) return void clock.after(1, work);
      for (let b = first; b < first + count; b++) busy.add(b);
      issued++;
      inFlight++;
      const done = (errno: number) => {
        if (errno !== 0) fail("workload", `a mutation failed: errno ${errno}`);
        for (let b = first; b < first + count; b++) busy.delete(b);
        inFlight--;
        if (primary.status().mode === "overflow") stats.overflowed = true;
        work();
      };
      const kind = w.int(10);
      if (kind < 7) {
        const data = new Uint8Array(count * blockSize);
        const value = w.next() >>> 0;
        new DataView(data.buffer).setUint32(0, value);
        for (let i = 4; i < data.length; i += 4) new DataView(data.buffer).setUint32(i, value + i);
        primary.write(first * blockSize, data, w.chance(0.1), done);
      } else if (kind < 9) primary.zero(first * blockSize, count * blockSize, { fua: false, noHole: w.chance(0.5), fast: false }, done);
      else primary.trim(first * blockSize, count * blockSize, false, done);
    }
  }
  work();
  await runUntil(clock, () => issued >= limit && inFlight === 0);
  await settle(clock, new Promise<number>((resolve) => primary.checkpoint(resolve)));
  stats.releasedBefore = primary.store.first > 1;
  log(`before the sync: log ${primary.store.first}..${primary.store.durable.seq}`);

  // ---- the secondary: sync, then ship ----
  const secondaryDisk = new SimDiskPort(diskSize, clock, prng.port, f.chance(0.3));
  const secondaryFiles = new SimDisk(clock, prng.files, { latency: [0, 2] });
  let epoch = 0;
  let synced = false;
  let end = 0;
  let secondary: Secondary | null = null;
  let sync: InitialSync | null = null;
  const model = { seq: 0, bytes: new Uint8Array(diskSize) };
  const modelAt = (seq: number): Uint8Array => {
    if (seq < model.seq) fail("consistent point", `model asked to go back from ${model.seq} to ${seq}`);
    while (model.seq < seq) {
      const r = shadow.get(++model.seq);
      if (r === undefined) fail("consistent point", `record ${model.seq} is not in the shadow`);
      if (r!.op === RecordOp.WRITE) model.bytes.set(r!.payload, r!.offset);
      if (r!.op === RecordOp.TRIM || r!.op === RecordOp.ZERO) model.bytes.fill(0, r!.offset, r!.offset + r!.length);
    }
    return model.bytes;
  };

  const startSync = () => {
    const mine = ++epoch;
    const alive = () => mine === epoch;
    const transport: SyncTransport = (request, offset, length, done) => {
      clock.after(f.int(4), () => {
        if (!alive()) return;
        if (f.chance(failRate)) {
          stats.failedAnswers++;
          return done(Errno.ETIMEDOUT, null);
        }
        answerSync(primary, request, offset, length, budget, "s1", () => {}, (answer) =>
          clock.after(f.int(4), () => {
            if (!alive()) return;
            if (f.chance(failRate / 2)) {
              stats.failedAnswers++;
              return done(Errno.EIO, null); // the answer lost in a cut: asked again
            }
            if ("payload" in answer) done(0, answer.payload);
            else done(answer.status, encodeFetchReason(answer.reason));
          }),
        );
      });
    };
    const syncLog = simLog("sync");
    const info = (m: string) => {
      // A resume after progress saved inside one slice (the whole disk here): saves follow the
      // answers written, not whole slices (replication/initial-sync.ts, seed 1952).
      const at = /resuming the initial sync \(.*\) at (\d+) of/.exec(m);
      if (at !== null && Number(at[1]) > 0 && copyRange >= diskSize) stats.resumedInSlice++;
      syncLog.info(m);
    };
    sync = new InitialSync(secondaryDisk.handle(), secondaryFiles.directory(), transport, timer(alive), { retryMs: 3, copyRange, saveEvery, lanes, log: { ...syncLog, info } });
    const s = sync;
    void s.start({ from: null, ranges: null, why: "initial sync" }, (error) => {
      if (!alive()) return;
      if (error !== null) fail("sync", error);
      stats.moved = s.status().movedBytes;
      end = s.status().end;
      log(`sync copied: point ${s.status().point}, end ${end}, moved ${stats.moved}`);
      void openSecondary(mine);
    });
  };

  const openSecondary = async (mine: number) => {
    const s = await Secondary.open(secondaryDisk.handle(), secondaryFiles.directory(), { clock: { now, after: timer(() => mine === epoch).after }, segmentSize: options.segmentSize, maxBatchBytes: 64 * 1024, log: simLog("secondary") });
    if (mine !== epoch) return;
    const state = await readSyncState(secondaryFiles.directory());
    if (state?.phase !== "catching-up") fail("sync", `after the copy the sync state is ${JSON.stringify(state?.phase)}`);
    secondary = s;
    synced = true;
    s.applier.onApplied((point) => {
      const a = s.applier.status();
      if (point.seq < end || !a.consistent || stats.overflowed) return;
      stats.prefixChecks++;
      const expected = modelAt(point.seq);
      const i = firstDifference(secondaryDisk.current, expected);
      if (i >= 0) fail("consistent point", `secondary at seq ${point.seq} (end ${end}) differs from the log prefix at byte ${i} (block ${Math.floor(i / blockSize)})`);
    });
    const server = new LogShipServer(primary, timer(() => true), { waitMs: 5 });
    const fetch: FetchTransport = (request, done) =>
      clock.after(f.int(4), () =>
        server.fetch(request, "s1", (answer) => clock.after(f.int(4), () => ("payload" in answer ? done(0, answer.payload) : done(answer.status, encodeFetchReason(answer.reason))))),
      );
    new Shipper(s, fetch, timer(() => mine === epoch), { maxBytes: 1 << 21, retryMs: 3, log: simLog("shipper") }).start();
  };

  // The workload goes on while the secondary syncs; the secondary may lose power while copying.
  const MAX_POWER_LOSSES = 12;
  stats.syncs++;
  startSync();
  limit = opsBefore + opsDuring;
  work();
  const crashes = () => {
    if (synced) return;
    // At most MAX_POWER_LOSSES per seed, then the secondary stays up: a sync whose progress is
    // saved once per disk (saveEvery) cannot finish between losses that keep coming, and the
    // liveness to prove is that it finishes once they stop (seeds 1952, 12368 ran away).
    if (f.chance(crashRate) && sync !== null && sync.status().phase === "copying" && stats.secondaryCrashes < MAX_POWER_LOSSES) {
      stats.secondaryCrashes++;
      const saved = sync.status().doneBytes;
      log(`secondary power loss during the copy (${saved} bytes done)`);
      epoch++;
      secondaryDisk.crash(f.chance(0.5) ? "random" : "lose-all");
      secondaryFiles.crash(f.chance(0.5) ? "random" : "lose-all");
      clock.after(1 + f.int(5), () => {
        stats.resumes++;
        startSync();
      });
    }
    clock.after(1 + f.int(10), crashes);
  };
  clock.after(1, crashes);
  await runUntil(clock, () => issued >= limit && inFlight === 0 && synced);
  // Convergence: the primary drains (a resync of an overflow included), the secondary applies all.
  await runUntil(clock, () => {
    const p = primary.status();
    const s = secondary?.applier.status();
    return p.inFlight === 0 && p.mode === "logging" && p.dirtyRegions === 0 && !p.resyncPending && s !== undefined && s.applied.seq === primary.store.durable.seq && s.consistent;
  }, 2_000_000);
  const i = firstDifference(secondaryDisk.current, primaryDisk.current);
  if (i >= 0) fail("convergence", `secondary differs from the primary at byte ${i} (block ${Math.floor(i / blockSize)}) after catching up to seq ${primary.store.durable.seq}`);
  if (secondary!.applier.status().applied.seq < end) fail("convergence", `applied ${secondary!.applier.status().applied.seq} < end ${end}`);
  return stats;
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.compare(a, b) === 0) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return a.length;
}
