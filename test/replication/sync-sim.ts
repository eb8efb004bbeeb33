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
 * I/O errors (own streams: a seed that draws none runs as before; SyncSeedOptions switch them
 * off): the data disks fail writes, trims, zeroes and flushes (sim-port.ts: a failed flush
 * latches the disk), the log directories fail any call but sizes and closes (sim-files.ts).
 * On the secondary they fail the copy — its writes, zeroes and flushes, the progress saves,
 * the removals of the old log, the completion — and the sync stops naming the error; the
 * operator starts the process again (its page caches outlive it, a latched disk's unflushed
 * writes each kept or dropped) and the copy resumes from the saved progress. On the primary
 * they fail it closed (a lost write-back or a failed flush: reads of what the disk lost, and
 * so the COPY reads of it, fail, docs/replication.md §4) or fail its log (it writes around
 * it); the operator restarts it, cutting the links (SYNC and FETCH calls in flight fail), and
 * the copy goes on against the new process. After the sync, halts and copy failures of the
 * secondary are restarted as in the replication simulation. Errors stop once the workload is
 * done and the copy finished (or a while after), before the convergence check.
 *
 * Invariants:
 * - consistent point: once the applier has applied through the sync's `end` (and is itself
 *   consistent), the secondary's disk equals the primary's state after exactly the prefix it
 *   applied — checked at every batch from there (runs in which the primary never wrote
 *   around its log: writes around it are not in the model);
 * - resume: a crash or restart during the copy resumes at the saved progress, never beyond
 *   what was flushed (the final comparison catches a skipped range);
 * - errors: a sync, mutation, COPY answer, start, halt or copy failure happens only over an
 *   I/O error injected on that side (a COPY read only of a primary that failed closed);
 * - convergence: once the workload ends, the secondary catches up and equals the primary.
 */
import { Errno } from "../../src/lib/errno.ts";
import { InitialSync, readSyncState, type SyncTransport } from "../../src/replication/initial-sync.ts";
import { ReplicationPrimary } from "../../src/replication/primary.ts";
import { decodeHeader, RecordOp, RECORD_HEADER_SIZE, type ChainPoint } from "../../src/replication/record.ts";
import { Secondary } from "../../src/replication/secondary.ts";
import { LogShipServer } from "../../src/replication/ship-server.ts";
import { Shipper, type FetchTransport } from "../../src/replication/shipper.ts";
import { answerSync } from "../../src/replication/sync-server.ts";
import type { Done, StoragePort } from "../../src/storage/port.ts";
import { encodeFetchReason } from "../../src/wire/dst/fetch.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { seedStreams, simTrace } from "./sim-trace.ts";
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
  /** I/O errors injected: data disks, log directories. */
  diskErrors: number;
  fileErrors: number;
  /** Syncs stopped by the secondary's I/O errors, by what failed (initial-sync.ts messages), and restarts of them. */
  copyWriteFailures: number;
  copyFlushFailures: number;
  progressSaveFailures: number;
  clearFailures: number;
  completeFailures: number;
  stateReadFailures: number;
  syncFailedRestarts: number;
  /** Of those restarts, the ones that resumed a saved copy (not at 0). */
  resumesAfterFailure: number;
  /** COPY answers refused by a primary failed closed (readDisk of what its disk lost), and other SYNC answers its I/O errors failed. */
  copyReadsRefused: number;
  syncAnswersFailed: number;
  /** Mutations of the workload failed over the primary's I/O errors. */
  failedOps: number;
  /** The primary failed closed over its disk, or its log failed; restarts by the operator, those during the copy, starts that failed. */
  failedClosed: number;
  logFailures: number;
  primaryRestarts: number;
  primaryRestartsDuringCopy: number;
  primaryOpenRetries: number;
  /** After the sync: the secondary halted or its copy failed (restarted), starts of it that failed. */
  secondaryRestarts: number;
  secondaryOpenRetries: number;
  /** Seeds whose secondary waited for the next write to reach the sync's end (seed 579). */
  endAfterNextWrite: number;
}

export interface SyncSeedOptions {
  /** I/O errors of the data disks (default: as the seed picks). */
  diskErrors?: boolean;
  /** I/O errors of the log directories' files (default: as the seed picks). */
  fileErrors?: boolean;
}

interface Shadow {
  op: number;
  offset: number;
  length: number;
  payload: Uint8Array;
}

export async function runSyncSeed(seed: number, verbose = false, seedOptions: SyncSeedOptions = {}): Promise<SyncSimStats> {
  const clock = new SimClock();
  const { log, simLog, tail } = simTrace(clock, verbose);
  const fail = (invariant: string, detail: string): never => {
    throw new SyncSimFailure(`sync sim seed ${seed}: ${invariant}: ${detail}\n  replay: SIM_SEED=${seed} bun test test/replication/sync-sim.test.ts\n${tail(40)}`);
  };
  /** A failure found in a promise continuation (a restart): thrown from the next wait. */
  let failure: unknown = null;
  const guard = (promise: Promise<unknown>) => void promise.catch((error: unknown) => (failure ??= error));
  const until = (settled: () => boolean, limit?: number) =>
    runUntil(
      clock,
      () => {
        if (failure !== null) throw failure;
        return settled();
      },
      limit,
    );
  const prng = seedStreams(seed);

  const f = prng.faults;
  const d = prng.disk;
  const ff = prng.fileFaults;
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
  const rates = {
    primaryDisk: seedOptions.diskErrors === false ? 0 : d.pick([0, 0, 0.002, 0.01, 0.04]),
    secondaryDisk: seedOptions.diskErrors === false ? 0 : d.pick([0, 0, 0.002, 0.01, 0.04]),
    primaryFiles: seedOptions.fileErrors === false ? 0 : ff.pick([0, 0, 0, 0.002, 0.01, 0.03]),
    secondaryFiles: seedOptions.fileErrors === false ? 0 : ff.pick([0, 0, 0, 0.002, 0.01, 0.03]),
  };
  const withErrors = rates.primaryDisk + rates.secondaryDisk + rates.primaryFiles + rates.secondaryFiles > 0;
  const stats: SyncSimStats = {
    syncs: 0, resumes: 0, secondaryCrashes: 0, failedAnswers: 0, prefixChecks: 0, overflowed: false, moved: 0, diskSize, releasedBefore: false, resumedInSlice: 0,
    diskErrors: 0, fileErrors: 0, copyWriteFailures: 0, copyFlushFailures: 0, progressSaveFailures: 0, clearFailures: 0, completeFailures: 0, stateReadFailures: 0, syncFailedRestarts: 0,
    resumesAfterFailure: 0, copyReadsRefused: 0, syncAnswersFailed: 0, failedOps: 0, failedClosed: 0, logFailures: 0, primaryRestarts: 0, primaryRestartsDuringCopy: 0,
    primaryOpenRetries: 0, secondaryRestarts: 0, secondaryOpenRetries: 0, endAfterNextWrite: 0,
  };
  log(`options ${JSON.stringify({ blockSize, blocks, ...options, budget, copyRange, saveEvery, lanes, failRate, crashRate, opsBefore, opsDuring, queueDepth, ...rates })}`);
  const now = () => clock.ticks * 1000 + 1;
  const timer = (alive: () => boolean) => ({
    now: () => clock.now,
    after: (ms: number, run: () => void) => {
      let live = true;
      clock.after(ms, () => live && alive() && run());
      return () => (live = false);
    },
  });

  // ---- the disks, and the errors on them ----
  const primaryDisk = new SimDiskPort(diskSize, clock, prng.port, f.chance(0.3), { prng: d, eioRate: rates.primaryDisk });
  const primaryFiles = new SimDisk(clock, prng.files, { latency: [0, 2], eioRate: rates.primaryFiles, faults: ff });
  let errorsOn = true;
  /** The rates as they are now (a start's operator may switch them off for one attempt). */
  const setRates = (which: "primary" | "secondary", on: boolean) => {
    if (which === "primary") {
      primaryDisk.faults!.eioRate = on && errorsOn ? rates.primaryDisk : 0;
      primaryFiles.eioRate = on && errorsOn ? rates.primaryFiles : 0;
    } else {
      secondaryDisk.faults!.eioRate = on && errorsOn ? rates.secondaryDisk : 0;
      secondaryFiles.eioRate = on && errorsOn ? rates.secondaryFiles : 0;
    }
  };

  // ---- the primary and its workload ----
  const shadow = new Map<number, Shadow>();
  const onAppend = (point: ChainPoint, chunks: readonly Uint8Array[]) => {
    const h = decodeHeader(chunks[0]!);
    const payload = h.op !== RecordOp.WRITE ? new Uint8Array(0) : chunks.length > 1 ? chunks[1]!.slice() : chunks[0]!.slice(RECORD_HEADER_SIZE);
    shadow.set(point.seq, { op: h.op, offset: h.offset, length: h.length, payload });
  };
  /** File errors injected before the current primary opened. */
  let primaryFileFailuresAtOpen = 0;
  /** A failed bitmap or state file refuses every later call until the process restarts. */
  const filesLatched = (p: ReplicationPrimary): boolean => p.bitmap["failed"] !== 0 || p["stateFile"]["failed"] !== 0;
  /** Starts the primary; a start its disk or files failed is started again (the operator). */
  const openPrimary = async (): Promise<ReplicationPrimary> => {
    for (let attempt = 1; ; attempt++) {
      const failures = primaryDisk.failures;
      const fileFailures = primaryFiles.stats.eio;
      // After a few failed starts the disk is looked at (its errors were transient).
      if (attempt % 4 === 0) setRates("primary", false);
      primaryFileFailuresAtOpen = primaryFiles.stats.eio;
      try {
        return await ReplicationPrimary.open(primaryDisk.handle(), primaryFiles.directory(), { ...options, now, onAppend, log: simLog("primary") });
      } catch (error) {
        const message = (error as Error).message;
        if ((primaryDisk.failures === failures && primaryFiles.stats.eio === fileFailures) || !message.includes("EIO")) fail("primary start", message);
        log(`primary start ${attempt} failed: ${message}`);
        stats.primaryOpenRetries++;
        primaryFiles.kill();
        primaryDisk.restart();
      } finally {
        setRates("primary", true);
      }
    }
  };
  let primary: ReplicationPrimary | null = await settle(clock, openPrimary());
  let server: LogShipServer | null = null;
  let primaryIncarnation = 0;
  /** Calls over the links to the current primary not answered yet: a restart cuts them. */
  const pendingCalls = new Set<() => void>();
  /**
   * A mutation may fail only over an I/O error: one the primary's disk or files returned while
   * it ran, or a primary failed closed, its log failed, or its disk latched.
   */
  const mayFail = (p: ReplicationPrimary, failuresAtSubmit: number, fileFailuresAtSubmit: number, errno: number) => {
    const files = primaryFiles.stats.eio > fileFailuresAtSubmit || (primaryFiles.stats.eio > primaryFileFailuresAtOpen && filesLatched(p));
    const st = p.status();
    if (st.diskFailure !== null || st.logFailure !== null || files || primaryDisk.latched || primaryDisk.failures > failuresAtSubmit) return void stats.failedOps++;
    fail("workload", `a mutation failed: errno ${errno}, but the primary's disk and files failed nothing`);
  };
  const w = prng.work;
  let issued = 0;
  let inFlight = 0;
  const busy = new Set<number>();
  let limit = opsBefore;
  function work(): void {
    const p = primary;
    if (p === null) return; // restarting: work() runs again once it is up
    while (inFlight < queueDepth && issued < limit) {
      const count = 1 + w.int(Math.min(4, blocks));
      const first = w.int(blocks - count + 1);
      let free = true;
      for (let b = first; b < first + count; b++) if (busy.has(b)) free = false;
      if (!free) return void clock.after(1, work);
      for (let b = first; b < first + count; b++) busy.add(b);
      issued++;
      inFlight++;
      const incarnation = primaryIncarnation;
      const failures = primaryDisk.failures;
      const fileFailures = primaryFiles.stats.eio;
      const done = (errno: number) => {
        if (incarnation !== primaryIncarnation) return; // restarted meanwhile: forgotten
        if (errno !== 0) mayFail(p, failures, fileFailures, errno);
        for (let b = first; b < first + count; b++) busy.delete(b);
        inFlight--;
        if (p.status().mode === "overflow") stats.overflowed = true;
        work();
      };
      const kind = w.int(10);
      if (kind < 7) {
        const data = new Uint8Array(count * blockSize);
        const value = w.next() >>> 0;
        new DataView(data.buffer).setUint32(0, value);
        for (let i = 4; i < data.length; i += 4) new DataView(data.buffer).setUint32(i, value + i);
        p.write(first * blockSize, data, w.chance(0.1), done);
      } else if (kind < 9) p.zero(first * blockSize, count * blockSize, { fua: false, noHole: w.chance(0.5), fast: false }, done);
      else p.trim(first * blockSize, count * blockSize, false, done);
    }
  }

  /**
   * The operator restarts a primary failed closed, or whose log, bitmap or state file failed:
   * closed or killed, its page caches outlive it (sim-files.ts kill, sim-port.ts restart), and
   * it recovers from its log and disk (docs/replication.md §4). The links to it are cut.
   */
  let restartingPrimary = false;
  const restartPrimary = async (why: string): Promise<void> => {
    const p = primary!;
    restartingPrimary = true;
    primary = null;
    server = null;
    primaryIncarnation++;
    stats.primaryRestarts++;
    if (!synced && sync?.status().phase === "copying") stats.primaryRestartsDuringCopy++;
    log(`RESTART primary: ${why}`);
    for (const cut of [...pendingCalls]) cut();
    inFlight = 0;
    busy.clear();
    const graceful = d.chance(0.5);
    if (graceful && d.chance(0.5)) await new Promise((resolve) => p.checkpoint(resolve));
    if (graceful) await p.close();
    primaryFiles.kill();
    primaryDisk.restart();
    const next = await openPrimary();
    // Records the old process appended but never made durable may be cut (and their seqs reused).
    for (const seq of [...shadow.keys()]) if (seq > next.store.last.seq) shadow.delete(seq);
    if (model.seq > next.store.last.seq) fail("consistent point", `the secondary was checked at seq ${model.seq}, the restarted primary's log ends at ${next.store.last.seq}`);
    log(`primary open: last ${next.store.last.seq}, checkpoint ${next.status().checkpoint}, mode ${next.status().mode}`);
    primary = next;
    server = new LogShipServer(next, timer(() => true), { waitMs: 5 });
    restartingPrimary = false;
    work();
  };

  work();
  await until(() => issued >= limit && inFlight === 0 && primary !== null);
  await settle(clock, new Promise<number>((resolve) => primary!.checkpoint(resolve)));
  await until(() => primary !== null);
  stats.releasedBefore = primary!.store.first > 1;
  log(`before the sync: log ${primary!.store.first}..${primary!.store.durable.seq}`);
  server = new LogShipServer(primary!, timer(() => true), { waitMs: 5 });

  // ---- the secondary: sync, then ship ----
  const secondaryDisk = new SimDiskPort(diskSize, clock, prng.port, f.chance(0.3), { prng: d, eioRate: rates.secondaryDisk });
  const secondaryFiles = new SimDisk(clock, prng.files, { latency: [0, 2], eioRate: rates.secondaryFiles, faults: ff });
  let epoch = 0;
  let synced = false;
  let end = 0;
  let secondary: Secondary | null = null;
  let sync: InitialSync | null = null;
  /** Why the current sync stopped (it waits for the operator), or null. */
  let syncFailed: string | null = null;
  let restartingSecondary = false;
  /** Errors injected on the secondary before its current process started. */
  let secondaryFailuresAtStart = 0;
  let secondaryFileFailuresAtStart = 0;
  const secondaryErrorsSinceStart = () => secondaryDisk.failures > secondaryFailuresAtStart || secondaryFiles.stats.eio > secondaryFileFailuresAtStart || secondaryDisk.latched;
  const model = { seq: 0, bytes: new Uint8Array(diskSize) };
  /**
   * What the copy wrote on the secondary's disk: ranges written since its last flush, and
   * every byte a successful flush made durable (for the resume check). A power loss, or a
   * restart over a latched disk (sim-port.ts: each unflushed change kept or not), loses the
   * pending ones; a restart over a healthy disk writes its page cache back.
   */
  const copied = {
    pending: [] as [number, number][],
    flushed: new Uint8Array(diskSize),
    restart(lost: boolean) {
      if (!lost) for (const [from, to] of this.pending) this.flushed.fill(1, from, to);
      this.pending = [];
    },
    port(port: StoragePort): StoragePort {
      const wrapped = Object.create(port) as StoragePort;
      const track = (from: number, to: number, done: Done) => (errno: number) => {
        if (errno === 0) this.pending.push([from, to]);
        done(errno);
      };
      wrapped.write = (offset, data, fua, done) => port.write(offset, data, fua, track(offset, offset + data.length, done));
      wrapped.zero = (offset, length, flags, done) => port.zero(offset, length, flags, track(offset, offset + length, done));
      wrapped.flush = (done) => port.flush((errno) => (errno === 0 && this.restart(false), done(errno)));
      return wrapped;
    },
  };
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

  /**
   * A call to the current primary over a link: `answer` once, or ECONNRESET when the primary
   * restarts first (its process, and the connection, are gone).
   */
  const call = (alive: () => boolean, send: (p: ReplicationPrimary, answered: () => boolean) => void, done: (status: number, payload: Uint8Array | null) => void) => {
    const p = primary;
    if (p === null) return done(Errno.ECONNRESET, null);
    const cut = () => {
      pendingCalls.delete(cut);
      if (alive()) done(Errno.ECONNRESET, null);
    };
    pendingCalls.add(cut);
    send(p, () => pendingCalls.delete(cut));
  };

  const startSync = () => {
    const mine = ++epoch;
    const alive = () => mine === epoch;
    syncFailed = null;
    secondaryFailuresAtStart = secondaryDisk.failures;
    secondaryFileFailuresAtStart = secondaryFiles.stats.eio;
    const transport: SyncTransport = (request, offset, length, done) => {
      clock.after(f.int(4), () => {
        if (!alive()) return;
        if (f.chance(failRate)) {
          stats.failedAnswers++;
          return done(Errno.ETIMEDOUT, null);
        }
        call(alive, (p, answered) =>
          answerSync(p, request, offset, length, budget, "s1", () => {}, (answer) =>
            clock.after(f.int(4), () => {
              if (!answered() || !alive()) return;
              if (f.chance(failRate / 2)) {
                stats.failedAnswers++;
                return done(Errno.EIO, null); // the answer lost in a cut: asked again
              }
              if ("payload" in answer) return done(0, answer.payload);
              // A COPY read fails only for what the disk lost: a primary failed closed (§4).
              if (answer.reason.startsWith("reading the primary's disk")) {
                if (p.status().diskFailure === null) fail("copy", `a COPY failed (${answer.reason}), but the primary's disk lost nothing`);
                stats.copyReadsRefused++;
              } else if (/EIO/.test(answer.reason)) stats.syncAnswersFailed++; // a BEGIN whose registration or sync point read failed
              done(answer.status, encodeFetchReason(answer.reason));
            }),
          ), done);
      });
    };
    const syncLog = simLog("sync");
    const info = (m: string) => {
      // A resume after progress saved inside one slice (the whole disk here): saves follow the
      // answers written, not whole slices (replication/initial-sync.ts, seed 1952).
      const at = /resuming the initial sync \(.*\) at (\d+) of/.exec(m);
      if (at !== null && Number(at[1]) > 0 && copyRange >= diskSize) stats.resumedInSlice++;
      if (at !== null && Number(at[1]) > 0 && resumingAfterFailure) stats.resumesAfterFailure++;
      // Resume: never beyond what the copy wrote and flushed (the ranges are the whole disk).
      if (at !== null) {
        const hole = copied.flushed.subarray(0, Number(at[1])).indexOf(0);
        if (hole >= 0) fail("resume", `the copy resumes at ${at[1]}, but byte ${hole} was never written and flushed by it`);
      }
      syncLog.info(m);
    };
    const resumingAfterFailure = restartingSecondary;
    sync = new InitialSync(copied.port(secondaryDisk.handle()), secondaryFiles.directory(), transport, timer(alive), { retryMs: 3, copyRange, saveEvery, lanes, log: { ...syncLog, info } });
    const s = sync;
    // The daemon starts it so too (daemon/replica-node.ts openSyncing): a start that throws is a bug.
    guard(
      s.start({ from: null, ranges: null, why: "initial sync" }, (error) => {
        if (!alive()) return;
        if (error !== null) return syncStopped(error);
        stats.moved = s.status().movedBytes;
        end = s.status().end;
        log(`sync copied: point ${s.status().point}, end ${end}, moved ${stats.moved}`);
        guard(openSecondary(mine, true));
      }),
    );
  };

  /** The sync stopped: only over the secondary's own I/O errors; it waits for the operator. */
  const syncStopped = (error: string) => {
    if (!secondaryErrorsSinceStart() || !/EIO/.test(error)) fail("sync", error);
    if (/^writing the copy/.test(error)) stats.copyWriteFailures++;
    else if (/^flushing the copy/.test(error)) stats.copyFlushFailures++;
    else if (/^saving the sync progress/.test(error)) stats.progressSaveFailures++;
    else if (/^(recording the sync|clearing the old log)/.test(error)) stats.clearFailures++;
    else if (/^reading the sync state/.test(error)) stats.stateReadFailures++;
    else if (/^completing the sync/.test(error)) stats.completeFailures++;
    else fail("sync", `stopped for an unexpected reason: ${error}`);
    syncFailed = error;
  };

  const openSecondary = async (mine: number, afterCopy: boolean) => {
    let s: Secondary;
    for (let attempt = 1; ; attempt++) {
      const fileFailures = secondaryFiles.stats.eio;
      if (attempt % 4 === 0) setRates("secondary", false); // the operator looked at the disk
      try {
        s = await Secondary.open(secondaryDisk.handle(), secondaryFiles.directory(), { clock: { now, after: timer(() => mine === epoch).after }, segmentSize: options.segmentSize, maxBatchBytes: 64 * 1024, log: simLog("secondary") });
        break;
      } catch (error) {
        const message = (error as Error).message;
        if (mine !== epoch) return;
        if (secondaryFiles.stats.eio === fileFailures || !message.includes("EIO")) fail("secondary open", message);
        log(`secondary start ${attempt} failed: ${message}`);
        stats.secondaryOpenRetries++;
        secondaryFiles.kill();
      } finally {
        setRates("secondary", true);
      }
    }
    if (mine !== epoch) return;
    if (afterCopy) {
      const fileFailures = secondaryFiles.stats.eio;
      const state = await readSyncState(secondaryFiles.directory()).catch((error: Error) => {
        if (secondaryFiles.stats.eio === fileFailures) fail("sync", `reading the sync state failed: ${error.message}`);
        return undefined; // its files failed: not checked
      });
      if (mine !== epoch) return;
      if (state !== undefined && state?.phase !== "catching-up") fail("sync", `after the copy the sync state is ${JSON.stringify(state?.phase)}`);
    }
    secondary = s;
    synced = true;
    secondaryFailuresAtStart = secondaryDisk.failures;
    secondaryFileFailuresAtStart = secondaryFiles.stats.eio;
    s.applier.onApplied((point) => {
      const a = s.applier.status();
      if (point.seq < end || !a.consistent || stats.overflowed) return;
      stats.prefixChecks++;
      const expected = modelAt(point.seq);
      const i = firstDifference(secondaryDisk.current, expected);
      if (i >= 0) fail("consistent point", `secondary at seq ${point.seq} (end ${end}) differs from the log prefix at byte ${i} (block ${Math.floor(i / blockSize)})`);
    });
    const alive = () => mine === epoch;
    const fetch: FetchTransport = (request, done) =>
      clock.after(f.int(4), () =>
        call(alive, (_p, answered) => server!.fetch(request, "s1", (answer) => clock.after(f.int(4), () => answered() && alive() && ("payload" in answer ? done(0, answer.payload) : done(answer.status, encodeFetchReason(answer.reason))))), done),
      );
    new Shipper(s, fetch, timer(alive), { maxBytes: 1 << 21, retryMs: 3, log: simLog("shipper") }).start();
  };

  /**
   * The operator starts the secondary's process again (a stopped sync, a halt, a failed copy
   * of the log): its page caches outlive the old one, a latched disk is reopened; the sync
   * state says whether the copy resumes or the secondary opens (daemon/replica-node.ts).
   */
  const restartSecondary = async (why: string): Promise<void> => {
    restartingSecondary = true;
    const mine = ++epoch;
    secondary = null;
    syncFailed = null;
    log(`RESTART secondary: ${why}`);
    secondaryFiles.kill();
    copied.restart(secondaryDisk.latched);
    secondaryDisk.restart();
    let state: Awaited<ReturnType<typeof readSyncState>> = null;
    for (let attempt = 1; ; attempt++) {
      const fileFailures = secondaryFiles.stats.eio;
      if (attempt % 4 === 0) setRates("secondary", false);
      try {
        state = await readSyncState(secondaryFiles.directory());
        break;
      } catch (error) {
        const message = (error as Error).message;
        if (secondaryFiles.stats.eio === fileFailures || !message.includes("EIO")) fail("secondary start", `reading the sync state failed: ${message}`);
        stats.secondaryOpenRetries++;
        secondaryFiles.kill();
      } finally {
        setRates("secondary", true);
      }
    }
    if (mine !== epoch) return void (restartingSecondary = false);
    if (state?.phase === "catching-up") {
      // A completion that failed after its state was saved (sim-files.ts: a failed write may
      // have happened): the copy is done, and consistent at the `end` it saved (seed 509).
      end = state.end;
      stats.moved = state.moved;
      restartingSecondary = false;
      return openSecondary(mine, false);
    }
    // Copying (resumed), or no sync recorded yet (begun anew).
    stats.resumes++;
    startSync();
    restartingSecondary = false;
  };

  /** The operator, every few ms while errors may happen: notices failed sides, restarts them. */
  let finalPhase = false;
  let sawFailedClosed = false;
  let sawLogFailure = false;
  let sawSecondaryFailure = false;
  const operator = () => {
    const p = primary;
    if (p !== null && !restartingPrimary) {
      const st = p.status();
      if (st.mode === "overflow") stats.overflowed = true;
      if (st.logFailure !== null || filesLatched(p)) {
        if (primaryFiles.stats.eio === primaryFileFailuresAtOpen) fail("errors", `the primary's log failed (${st.logFailure ?? "bitmap or state file"}), but its files failed nothing`);
        if (!sawLogFailure) stats.logFailures++;
        sawLogFailure = true;
        if (finalPhase || ff.chance(0.2)) {
          sawLogFailure = false;
          guard(restartPrimary(st.logFailure ?? "its bitmap or state file failed"));
        }
      } else if (st.diskFailure !== null || primaryDisk.latched) {
        if (!sawFailedClosed) stats.failedClosed++;
        sawFailedClosed = true;
        if (finalPhase || d.chance(0.2)) {
          sawFailedClosed = false;
          guard(restartPrimary(st.diskFailure ?? "its disk refuses writes and flushes since a flush failed"));
        }
      }
    }
    if (!restartingSecondary && syncFailed !== null && (finalPhase || d.chance(0.3))) {
      stats.syncFailedRestarts++;
      guard(restartSecondary(`its sync stopped: ${syncFailed}`));
    } else if (!restartingSecondary && secondary !== null) {
      const s = secondary;
      const why = s.applier.status().halted ?? s.failure ?? (s.copy.failed !== 0 ? `the log copy failed: ${s.copy.failure}` : null);
      if (why !== null) {
        // No rot here: any halt or failure is the secondary's own I/O error.
        if (!secondaryErrorsSinceStart() || !/EIO/.test(why)) fail("halt", `${why}, but the secondary's disk and files failed nothing`);
        if (!sawSecondaryFailure) log(`secondary failed: ${why}`);
        sawSecondaryFailure = true;
        if (finalPhase || d.chance(0.2)) {
          sawSecondaryFailure = false;
          stats.secondaryRestarts++;
          guard(restartSecondary(why));
        }
      }
    }
    clock.after(5, operator);
  };
  if (withErrors) clock.after(5, operator);

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
    if (f.chance(crashRate) && sync !== null && sync.status().phase === "copying" && stats.secondaryCrashes < MAX_POWER_LOSSES && !restartingSecondary) {
      stats.secondaryCrashes++;
      const saved = sync.status().doneBytes;
      log(`secondary power loss during the copy (${saved} bytes done)`);
      epoch++;
      secondaryDisk.crash(f.chance(0.5) ? "random" : "lose-all");
      copied.restart(true);
      secondaryFiles.crash(f.chance(0.5) ? "random" : "lose-all");
      clock.after(1 + f.int(5), () => {
        stats.resumes++;
        startSync();
      });
    }
    clock.after(1 + f.int(10), crashes);
  };
  clock.after(1, crashes);
  // Errors go on until the workload is done and the copy finished, or a while after the
  // workload (a copy failing at every try must get its chance once they stop: liveness).
  await until(() => issued >= limit && inFlight === 0);
  if (withErrors) {
    const stopAt = clock.ticks + 500 + d.int(2000);
    await until(() => synced || clock.ticks >= stopAt);
    errorsOn = false;
    setRates("primary", false);
    setRates("secondary", false);
    finalPhase = true;
    log("errors off");
  }
  await until(() => issued >= limit && inFlight === 0 && synced);
  // Convergence: the primary drains (a resync of an overflow included), the secondary applies all.
  const converged = () =>
    until(() => {
      const p = primary?.status();
      const s = secondary?.applier.status();
      return p !== undefined && !restartingPrimary && !restartingSecondary && p.inFlight === 0 && p.mode === "logging" && p.dirtyRegions === 0 && !p.resyncPending && s !== undefined && s.halted === null && s.applied.seq === primary!.store.durable.seq && s.consistent;
    }, 2_000_000);
  await converged();
  if (secondary!.applier.status().applied.seq < end && primary!.store.last.seq < end) {
    // A COPY answered in overflow names the next record (the RESYNC_BEGIN, sync-server.ts); a
    // primary restarted after its switch to overflow failed (the state saying so never saved:
    // nothing went around the log, or what did is resynced) appends none until its next write,
    // and the secondary stays catching up until then (docs/replication.md §10.1, seed 579).
    log(`the secondary waits for seq ${end}, the primary's log ends at ${primary!.store.last.seq}: one more write`);
    stats.endAfterNextWrite++;
    limit++;
    work();
    await until(() => issued >= limit && inFlight === 0);
    await converged();
  }
  stats.diskErrors = primaryDisk.failures + secondaryDisk.failures;
  stats.fileErrors = primaryFiles.stats.eio + secondaryFiles.stats.eio;
  const i = firstDifference(secondaryDisk.current, primaryDisk.current);
  if (i >= 0) fail("convergence", `secondary differs from the primary at byte ${i} (block ${Math.floor(i / blockSize)}) after catching up to seq ${primary!.store.durable.seq}`);
  if (secondary!.applier.status().applied.seq < end) fail("convergence", `applied ${secondary!.applier.status().applied.seq} < end ${end}`);
  return stats;
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.compare(a, b) === 0) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return a.length;
}
