/**
 * @module test/replication/replication-sim — one seed of the replication simulation: the real
 * ReplicationPrimary, LogStore, LogReader, Secondary and Applier over simulated disks
 * (sim-files.ts, sim-port.ts) on simulated time, with a simulated shipping between them.
 * docs/replication.md §8.
 *
 * World: a primary (log directory + data disk) serving a random workload; a secondary (log
 * copy + applier + data disk); a shipper that reads durable records from the primary and
 * hands them to the secondary, reporting applied positions back. Faults, drawn from the
 * seed: primary and secondary power loss (unsynced file changes kept, dropped or torn by
 * sector; unflushed disk writes kept or dropped), bit rot in the primary's log or the
 * secondary's copy, corruption in transit, replay paused and resumed, a log small enough to
 * overflow into the dirty bitmap and resync, I/O errors of either data disk (sim-port.ts: a
 * failed flush latches the disk), I/O errors of either log directory (sim-files.ts: writes,
 * fdatasyncs, opens, renames, directory fsyncs, reads, truncates, removals, listings; a rate
 * per side drawn from its own stream).
 * A primary that fails closed over its disk (write-back.ts), whose disk latched, or whose log,
 * state or bitmap failed, is restarted as an operator would; so is an applier halted by its
 * disk or its files, and a secondary whose log copy failed, after a while (each stays so until
 * then, as in production); a start its files fail is retried.
 *
 * Invariants (checked as they happen, and at the end):
 * - prefix: whenever the applier reports itself consistent, its disk equals the state after
 *   exactly the log prefix it applied (replayed from the records the primary appended);
 * - exact records: every record the secondary applies is the primary's (same seq, chain):
 *   never one past a gap or a checksum failure, never one the primary later lost;
 * - durability: after a primary crash and recovery, every block holds a value it may hold —
 *   acknowledged and flushed (or FUA) data is never lost (a mutation that failed may have
 *   left its value, until an acknowledged one after it is flushed);
 * - errors: a mutation, FLUSH or read fails only over a disk or file error (one while it ran,
 *   a latched disk, a latched state file or bitmap of this incarnation, or a primary failed
 *   closed or whose log failed), a start only over a file or disk error, a primary's log or a
 *   secondary's copy fails only after a file error, and a halted applier names its record, its
 *   flush, its position's save or its read of the copy and the errno, after an error of its disk
 *   or files; shipping fails on an I/O error only after a file error, and is retried;
 * - segments: at the end, each log's segment table names exactly the segment files on its disk
 *   (a release whose removal failed neither forgets a segment nor keeps one that is gone);
 * - convergence: with faults off, the secondary catches up and equals the primary's disk.
 */
import { LogReader } from "../../src/replication/log-reader.ts";
import type { LogStore, RecoveryReport } from "../../src/replication/log-store.ts";
import { ReplicationPrimary } from "../../src/replication/primary.ts";
import { Secondary } from "../../src/replication/secondary.ts";
import { decodeHeader, RecordOp, RECORD_HEADER_SIZE, type ChainPoint } from "../../src/replication/record.ts";
import { parseSegmentName } from "../../src/replication/segments.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { seedStreams, simTrace } from "./sim-trace.ts";
import { settle, SimDisk } from "./sim-files.ts";
import { SimDiskPort } from "./sim-port.ts";
import { writeRecycled } from "./sim-buffers.ts";

export class SimFailure extends Error {}

export interface SimStats {
  ops: number;
  acked: number;
  primaryCrashes: number;
  secondaryCrashes: number;
  recordsApplied: number;
  overflows: number;
  resyncs: number;
  transitRefused: number;
  copyRot: number;
  logRot: number;
  haltsOnCorruption: number;
  /** Writes acknowledged before their record was durable (the ack window). */
  earlyAcks: number;
  /** Reads checked, and those issued while the ack window held writes. */
  reads: number;
  readsOverWindow: number;
  /** Blocks a crash took back to an older value (acknowledged, never flushed: allowed). */
  ackedLost: number;
  /** Rot in the last group commit cut as a torn tail below what the secondary held (docs/replication.md §3.3). */
  rotForks: number;
  /** Rot in acknowledged records of the last group commit, cut as a torn tail with no other copy (the same limit). */
  rotCuts: number;
  /** Those where the restarted primary appended past the cut (a resync's MARK) before the seed ended. */
  rotCutsAppended: number;
  /** Those where the cut left no record to continue from the checkpoint: the start was refused. */
  rotCutsRefused: number;
  /** I/O errors the data disks returned; mutations and FLUSHes that failed with them; reads refused over a lost write-back. */
  diskErrors: number;
  failedOps: number;
  readsRefused: number;
  /** The primary seen failed closed over its disk (write-back.ts); restarts of a refusing primary, and opens the disk failed. */
  failedClosed: number;
  primaryRestarts: number;
  openRetries: number;
  /** Appliers halted by their disk (and restarted later). */
  applierDiskHalts: number;
  /** I/O errors the log directories returned (log segments, state files, dirty bitmap). */
  fileErrors: number;
  /** Primaries seen with a failed log, state or bitmap (status logFailure); restarts of one by the operator. */
  logFailures: number;
  logFailedRestarts: number;
  /** Secondary starts its files failed (retried). */
  secondaryOpenRetries: number;
  /** Appliers halted by their own files (saving the replay position). */
  applierFileHalts: number;
  /** Secondaries restarted because their log copy failed (it takes no more records). */
  copyFailedRestarts: number;
  /** Starts (either side) failed by a listing, a truncate (recovery's cut), or a removal of the log directory. */
  listFailedStarts: number;
  truncateFailedStarts: number;
  removeFailedStarts: number;
  /** Releases whose segment removal failed (retried by a later release); shipping reads that failed (retried). */
  releaseRemoveFailures: number;
  shipReadErrors: number;
  /** Appliers halted by a failed read of their copy. */
  applierReadHalts: number;
  tornTails: number;
  prefixChecks: number;
  converged: boolean;
}

export interface ShadowRecord {
  chain: bigint;
  op: number;
  flags: number;
  offset: number;
  length: number;
  payload: Uint8Array;
}

interface BlockState {
  /** Values a crash may leave (the last known durable one first; the last one acknowledged last). */
  candidates: number[];
  inFlight: number | null;
  /** Reads in flight over it (no mutation is submitted to it meanwhile). */
  reading: number;
  /**
   * Values of mutations that failed (what they leave is undefined: on the disk or not, replayed
   * from the log or not), each with the event it failed at: a crash may leave them until an
   * acknowledged mutation after them is durable.
   */
  failed: { value: number; at: number }[];
  /** Those since the last acknowledged mutation: a read may return them. */
  failedSinceAck: number[];
  /** The event the last acknowledged mutation completed at. */
  ackedAt: number;
}

export interface SeedOptions {
  /** I/O errors of the data disks (default: as the seed picks). */
  diskErrors?: boolean;
  /** I/O errors of the log directories' files (default: as the seed picks). */
  fileErrors?: boolean;
  /** Data disks that drop unflushed changes at a failed flush and take writes again, not latching (sim-port.ts `forgetful`). */
  forgetfulDisks?: boolean;
}

export async function runSeed(seed: number, verbose = false, seedOptions: SeedOptions = {}): Promise<SimStats> {
  const clock = new SimClock();
  const { log, simLog, tail } = simTrace(clock, verbose);
  const prng = seedStreams(seed);

  const f = prng.faults;
  const blockSize = f.pick([512, 512, 1024, 4096]);
  const blocks = 8 + f.int(40);
  const diskSize = blockSize * blocks;
  const options = {
    logLimit: f.chance(0.4) ? blockSize * (6 + f.int(20)) : 1 << 24,
    segmentSize: f.pick([2048, 8192, 1 << 16]),
    maxBatchBytes: f.pick([RECORD_HEADER_SIZE + (1 << 20), 2 << 20]),
    maxBitmapBytes: f.pick([1, 2, 64]),
    checkpointBytes: blockSize * (1 + f.int(16)),
  };
  const opsTotal = 30 + f.int(100);
  const queueDepth = 1 + f.int(8);
  const crashRate = f.pick([0, 0.01, 0.03]);
  const secondaryCrashRate = f.pick([0, 0.01, 0.03]);
  const transitCorruption = f.pick([0, 0.02, 0.1]);
  const copyRotRate = f.pick([0, 0, 0.01]);
  const logRotRate = f.pick([0, 0, 0, 0.005]);
  const pauseRate = f.pick([0, 0.02]);
  const replayDelayMs = f.pick([0, 0, 0, 20]);
  const d = prng.disk;
  const primaryEio = seedOptions.diskErrors === false ? 0 : d.pick([0, 0, 0.002, 0.01, 0.04]);
  const secondaryEio = seedOptions.diskErrors === false ? 0 : d.pick([0, 0, 0.002, 0.01, 0.04]);
  const ff = prng.fileFaults;
  const primaryFilesEio = seedOptions.fileErrors === false ? 0 : ff.pick([0, 0, 0, 0.002, 0.01, 0.03]);
  const secondaryFilesEio = seedOptions.fileErrors === false ? 0 : ff.pick([0, 0, 0, 0.002, 0.01, 0.03]);
  const stats: SimStats = {
    ops: 0, acked: 0, primaryCrashes: 0, secondaryCrashes: 0, recordsApplied: 0, overflows: 0, resyncs: 0,
    transitRefused: 0, copyRot: 0, logRot: 0, haltsOnCorruption: 0, tornTails: 0, prefixChecks: 0, converged: false,
    earlyAcks: 0, reads: 0, readsOverWindow: 0, ackedLost: 0, rotForks: 0, rotCuts: 0, rotCutsAppended: 0, rotCutsRefused: 0,
    diskErrors: 0, failedOps: 0, readsRefused: 0, failedClosed: 0, primaryRestarts: 0, openRetries: 0, applierDiskHalts: 0,
    fileErrors: 0, logFailures: 0, logFailedRestarts: 0, secondaryOpenRetries: 0, applierFileHalts: 0, copyFailedRestarts: 0,
    listFailedStarts: 0, truncateFailedStarts: 0, removeFailedStarts: 0, releaseRemoveFailures: 0, shipReadErrors: 0, applierReadHalts: 0,
  };
  /** A start its log directory failed: which call (the message names it, files.ts). */
  const countFailedStart = (message: string): void => {
    if (/\blist \S+ failed: .*EIO/.test(message)) stats.listFailedStarts++;
    if (/\btruncate \S+ to \d+ failed: .*EIO/.test(message)) stats.truncateFailedStarts++;
    if (/\bremove \S+ failed: .*EIO/.test(message)) stats.removeFailedStarts++;
  };
  /** A store's release reports a removal that failed (log-store.ts maybeRelease). */
  const countRemoveWarning = (m: string): void => {
    if (/^replication log: removing \S+ failed: .*EIO/.test(m)) stats.releaseRemoveFailures++;
  };
  const fail = (invariant: string, detail: string): never => {
    throw new SimFailure(
      `replication sim seed ${seed}: ${invariant}: ${detail}\n  replay: SIM_SEED=${seed} bun test test/replication/replication-sim.test.ts\n` +
        tail(40),
    );
  };
  log(`options ${JSON.stringify({ blockSize, blocks, ...options, opsTotal, queueDepth, crashRate, secondaryCrashRate, transitCorruption, copyRotRate, logRotRate, replayDelayMs, primaryEio, secondaryEio, primaryFilesEio, secondaryFilesEio })}`);

  // ---- the primary ----
  const primaryFiles = new SimDisk(clock, prng.files, { latency: [0, 2], eioRate: primaryFilesEio, faults: ff });
  const forgetful = seedOptions.forgetfulDisks === true;
  const primaryDisk = new SimDiskPort(diskSize, clock, prng.port, f.chance(0.3), { prng: d, eioRate: primaryEio, forgetful });
  const shadow = new Map<number, ShadowRecord>();
  const now = () => clock.ticks * 1000 + 1;
  let primary = null as ReplicationPrimary | null;
  let primaryDead = false; // the log is corrupt beyond recovery: the primary stays down
  /** File errors injected before the current primary opened. */
  let primaryFileFailuresAtOpen = 0;
  /** A failed bitmap or state file refuses every later call until the process restarts. */
  const filesLatched = (p: ReplicationPrimary): boolean => p.bitmap["failed"] !== 0 || p["stateFile"]["failed"] !== 0;
  let primaryLogCorrupted = false;
  /** Where rot hit the primary's log (segment name and byte), once it did. */
  let logRotAt: { name: string; at: number } | null = null;
  /** The primary's durable seq when it last crashed: what it had acknowledged. */
  let durableAtCrash = 0;
  let maxApplied = 0;

  const onAppend = (point: ChainPoint, chunks: readonly Uint8Array[]) => {
    const header = decodeHeader(chunks[0]!);
    let payload: Uint8Array = chunks.length > 1 ? chunks[1]!.slice() : chunks[0]!.slice(RECORD_HEADER_SIZE);
    if (header.op !== RecordOp.WRITE) payload = new Uint8Array(0);
    shadow.set(point.seq, { chain: point.chain, op: header.op, flags: header.flags, offset: header.offset, length: header.length, payload });
    if (verbose) log(`append seq ${point.seq} op ${header.op} flags ${header.flags} at ${header.offset} len ${header.length}${payload.length > 0 ? ` value ${valueOf(payload, 0, Math.min(blockSize, payload.length))}` : ""}`);
  };

  async function openPrimary(): Promise<void> {
    const faults = primaryDisk.faults!;
    const eioRate = faults.eioRate;
    const filesEioRate = primaryFiles.eioRate;
    // A start the disk fails after recovery cut a torn tail leaves the log cut, and the next
    // start's report shows no cut: the first one's is taken from its log line.
    let cutBefore: RecoveryReport["tornTail"] = null;
    const primaryLog = simLog("primary");
    const openLog = {
      ...primaryLog,
      warn: (m: string) => {
        const c = /torn tail of (\d+) bytes cut at \S*\/(\S+) offset (\d+) \((.*)\); those records/.exec(m);
        if (c !== null) cutBefore ??= { segment: c[2]!, offset: Number(c[3]), bytes: Number(c[1]), reason: c[4]! };
        countRemoveWarning(m);
        primaryLog.warn(m);
      },
    };
    for (let attempt = 1; ; attempt++) {
      const failures = primaryDisk.failures;
      const fileFailures = primaryFiles.stats.eio;
      // After a few failed starts the disk is looked at (its errors were transient): one start
      // without them, or a seed with many records to replay might never start again.
      if (attempt % 4 === 0) {
        faults.eioRate = 0;
        primaryFiles.eioRate = 0;
      }
      primaryFileFailuresAtOpen = primaryFiles.stats.eio;
      try {
        primary = await settle(
          clock,
          ReplicationPrimary.open(primaryDisk.handle(), primaryFiles.directory(), { ...options, now, onAppend, log: openLog }),
        );
        break;
      } catch (error) {
        const message = (error as Error).message;
        if (primaryLogCorrupted && message.includes("is corrupt")) {
          log(`primary refuses its corrupt log: ${message.split(". ")[0]}`);
          primaryDead = true;
          return;
        }
        const cutAll = /recovery cut (\S+) at offset (\d+) as a torn tail/.exec(message);
        if (cutAll !== null && logRotAt !== null && logRotAt.name === cutAll[1] && logRotAt.at >= Number(cutAll[2])) {
          // The limit below (rotCuts), when the rotted segment was the only one left: the cut
          // leaves no record to continue the chain from the checkpoint, and the start is refused.
          log(`primary refuses a log whose rotted tail was cut below its checkpoint: the documented limit`);
          stats.rotCuts++;
          stats.rotCutsRefused++;
          primaryDead = true;
          return;
        }
        if ((primaryDisk.failures === failures && primaryFiles.stats.eio === fileFailures) || !message.includes("EIO")) fail("primary recovery", message);
        // The disk refused the replay or its flush, or the log directory a read, write or sync:
        // the start fails naming it (docs/replication.md §4), and the operator starts it again.
        log(`primary start ${attempt} failed: ${message}`);
        stats.openRetries++;
        countFailedStart(message);
        // A cut whose truncate failed after its effect (sim-files.ts) is not reported again by
        // the next start either: its failure names the segment and where it was cut.
        const t = /truncate (log-\d+\.dstl) to (\d+) failed/.exec(message);
        if (t !== null) cutBefore ??= { segment: t[1]!, offset: Number(t[2]), bytes: 0, reason: "cut by a start whose truncate failed" };
        primaryFiles.kill();
        primaryDisk.restart();
      } finally {
        faults.eioRate = eioRate;
        primaryFiles.eioRate = filesEioRate;
      }
    }
    const p = primary!;
    const cut = p.recovery.tornTail ?? cutBefore;
    if (cut !== null) stats.tornTails++;
    // Records the crash lost are gone from the shadow too; the secondary must never have one.
    const last = p.store.last.seq;
    const held = Math.max(maxApplied, secondary?.copy.last.seq ?? 0);
    if (primaryLogCorrupted && cut !== null && held > last) {
      // Rot in the last records of a group commit, with no later record to witness that they
      // were durable, reads as a torn tail and is cut (the documented limit, docs/replication.md
      // §3.3): this log lost records the secondary holds, and it halts at the fork. Not a
      // state the primary can serve on from.
      log(`primary's rotted tail was cut at seq ${last + 1}, below the secondary's seq ${held}: the documented limit`);
      stats.rotForks++;
      primaryDead = true;
      return;
    }
    // p.recovery.last: what recovery kept (the primary may have appended since, a resync's MARK).
    if (cut !== null && logRotAt !== null && logRotAt.name === cut.segment && logRotAt.at >= cut.offset && p.recovery.last < durableAtCrash) {
      // The same limit with the secondary behind: the rotted records were acknowledged, the
      // log was their only durable copy (above the checkpoint, the disk's write-back was lost
      // with the crash), and recovery, seeing no witness, cut them as a torn tail.
      log(`primary's rotted tail was cut at seq ${p.recovery.last + 1}, below its acknowledged seq ${durableAtCrash}, with no other copy: the documented limit`);
      stats.rotCuts++;
      if (p.store.last.seq > p.recovery.last) stats.rotCutsAppended++;
      primaryDead = true;
      return;
    }
    for (const seq of [...shadow.keys()]) if (seq > last) shadow.delete(seq);
    if (maxApplied > last) fail("secondary ahead of primary", `secondary applied seq ${maxApplied}, primary log ends at ${last}`);
    for (const [seq, r] of shadow) {
      if (seq === last && r.chain !== p.store.last.chain) fail("primary recovery", `seq ${seq} chain differs after recovery`);
    }
    reportedApplied = -1;
    if (p.status().secondaries.s1 === undefined) {
      const reason = p.addSecondary("s1", 0);
      if (reason !== null) fail("addSecondary", reason);
    }
    log(`primary open: last ${last}, checkpoint ${p.status().checkpoint}, mode ${p.status().mode}`);
  }

  // ---- the secondary ----
  const secondaryFiles = new SimDisk(clock, prng.files, { latency: [0, 2], eioRate: secondaryFilesEio, faults: ff });
  const secondaryDisk = new SimDiskPort(diskSize, clock, prng.port, f.chance(0.3), { prng: d, eioRate: secondaryEio, forgetful });
  let secondary = null as Secondary | null;
  let secondaryEpoch = 0;
  /** Disk errors injected before this secondary opened; its applier halted on one (counted once). */
  let secondaryFailuresAtOpen = 0;
  /** File errors injected before this secondary opened. */
  let secondaryFileFailuresAtOpen = 0;
  let diskHalted = false;
  const model = { seq: 0, bytes: new Uint8Array(diskSize) };

  function modelAt(seq: number): Uint8Array {
    if (seq < model.seq) fail("prefix", `model asked to go back from ${model.seq} to ${seq}`);
    while (model.seq < seq) {
      const r = shadow.get(model.seq + 1);
      if (r === undefined) fail("prefix", `record ${model.seq + 1} is not in the primary's log`);
      applyShadow(model.bytes, r!);
      model.seq++;
    }
    return model.bytes;
  }

  const secondaryTrace = simLog("secondary");
  const secondaryLog = { ...secondaryTrace, warn: (m: string) => (countRemoveWarning(m), secondaryTrace.warn(m)) };

  async function openSecondary(): Promise<void> {
    const epoch = ++secondaryEpoch;
    secondaryFailuresAtOpen = secondaryDisk.failures;
    const clockApi = {
      now,
      after: (ms: number, run: () => void) => {
        let live = true;
        clock.after(ms, () => live && epoch === secondaryEpoch && run());
        return () => (live = false);
      },
    };
    let s: Secondary;
    const filesEioRate = secondaryFiles.eioRate;
    for (let attempt = 1; ; attempt++) {
      secondaryFileFailuresAtOpen = secondaryFiles.stats.eio;
      if (attempt % 4 === 0) secondaryFiles.eioRate = 0; // the operator looked at the disk
      try {
        s = await settle(clock, Secondary.open(secondaryDisk.handle(), secondaryFiles.directory(), { clock: clockApi, replayDelayMs, segmentSize: options.segmentSize, maxBatchBytes: 64 * 1024, log: secondaryLog }));
        break;
      } catch (error) {
        const message = (error as Error).message;
        // Its log directory refused a read, write or sync: the start fails naming it, and the
        // operator starts it again. Nothing else may fail a start.
        if (secondaryFiles.stats.eio === secondaryFileFailuresAtOpen || !message.includes("EIO")) fail("secondary open", message);
        log(`secondary start ${attempt} failed: ${message}`);
        stats.secondaryOpenRetries++;
        countFailedStart(message);
        secondaryFiles.kill();
      } finally {
        secondaryFiles.eioRate = filesEioRate;
      }
    }
    secondary = s;
    s.applier.onApplied((point) => {
      if (epoch !== secondaryEpoch) return;
      const record = shadow.get(point.seq);
      if (record === undefined || record.chain !== point.chain) {
        fail("exact records", `secondary applied seq ${point.seq} (chain ${point.chain.toString(16)}) which is not the primary's record`);
      }
      stats.recordsApplied = Math.max(stats.recordsApplied, point.seq);
      maxApplied = Math.max(maxApplied, point.seq);
      const status = s.applier.status();
      if (status.consistent) {
        stats.prefixChecks++;
        const expected = modelAt(point.seq);
        const i = firstDifference(secondaryDisk.current, expected);
        if (i >= 0) fail("prefix", `secondary at seq ${point.seq} differs from the log prefix at byte ${i} (block ${Math.floor(i / blockSize)})`);
      }
      primary?.secondaryApplied("s1", point.seq);
    });
    log(`secondary open: copy ${s.copy.first}..${s.copy.last.seq}, applied ${s.applier.status().applied.seq}`);
  }

  // ---- shipping ----
  let reader: LogReader | null = null;
  let readerFor: ReplicationPrimary | null = null;
  let shipping = false;
  let shipError: string | null = null;
  /** A shipping error that is the primary's log directory failing a read or an open (retried), not a corrupt record. */
  const ioError = (error: string): boolean => /\(EIO\)/.test(error);
  /** Shipping stopped at a corrupt record of the primary's rotted log (it names the record and stays stopped). */
  const stoppedOnRot = (): boolean => primaryLogCorrupted && shipError !== null && !ioError(shipError);
  /** What this primary incarnation was last told the secondary applied. */
  let reportedApplied = -1;
  function ship(): void {
    if (shipping) return;
    const p = primary;
    const s = secondary;
    if (p === null || s === null) return;
    // Every FETCH carries the secondary's applied position (the primary may have restarted).
    const applied = s.applier.status().applied.seq;
    if (applied > reportedApplied && applied <= p.store.durable.seq) {
      reportedApplied = applied;
      p.secondaryApplied("s1", applied);
    }
    // A FETCH would long-poll; here: read only when the primary has more durable records.
    if (p.store.durable.seq <= s.wanted().seq && shipError === null) return;
    if (reader === null || readerFor !== p) {
      const from = s.wanted();
      reader = p.reader({ seq: from.seq + 1 }, from.seq === 0 ? null : from);
      readerFor = p;
    }
    shipping = true;
    const r = reader;
    r.read(4096 + f.int(16384), (error, chunk) => {
      shipping = false;
      if (p !== primary || s !== secondary) return;
      if (error !== null) {
        if (ioError(error)) {
          // The primary's log directory failed a read (or an open) of a segment: the read fails
          // naming it, never returning wrong data, and the next fetch reads again.
          if (primaryFiles.eioBy.read + primaryFiles.eioBy.open === 0) fail("errors", `shipping failed (${error}), but the primary's files failed no read or open`);
          stats.shipReadErrors++;
        }
        if (shipError === null) log(`shipping: ${error}`);
        shipError = error;
        reader = null;
        return;
      }
      shipError = null;
      if (chunk === null || chunk.records.length === 0) return;
      let bytes = chunk.bytes;
      if (prng.faults.chance(transitCorruption)) {
        bytes = bytes.slice();
        bytes[prng.faults.int(bytes.length)]! ^= 1 << prng.faults.int(8);
      }
      const reason = s.receive(bytes, () => {});
      if (reason !== null) {
        stats.transitRefused++;
        log(`secondary refused fetched records: ${reason}`);
        reader = null; // fetch again from what the copy holds
      }
    });
  }

  // ---- the workload ----
  const state: BlockState[] = Array.from({ length: blocks }, () => ({ candidates: [0], inFlight: null, reading: 0, failed: [], failedSinceAck: [], ackedAt: 0 }));
  /** Counts acknowledgements and failures of mutations (BlockState.failed, ackedAt). */
  let events = 0;
  let nextValue = 1;
  let inFlight = 0;
  let submitted = 0;
  let primaryIncarnation = 0;
  const pendingFlushes: { blocks: Map<number, number> }[] = [];

  function fill(value: number, count: number): Uint8Array {
    const out = new Uint8Array(count * blockSize);
    for (let b = 0; b < count; b++) {
      const view = new DataView(out.buffer, b * blockSize, blockSize);
      for (let i = 0; i + 4 <= blockSize; i += 4) view.setUint32(i, value);
    }
    return out;
  }

  /**
   * The primary refuses mutations and FLUSH until restarted over its disk: a logged write-back
   * refused for good (write-back.ts), or the flush a switch to overflow needs.
   */
  function failedClosed(p: ReplicationPrimary): boolean {
    return p.status().diskFailure !== null;
  }

  /**
   * The primary's log directory failed it (status logFailure): the log takes no more records
   * (it writes around it, marking the bitmap, until restarted), or the state cannot be saved
   * (a switch to overflow then fails it closed). An operator restarts it.
   */
  function logFailed(p: ReplicationPrimary): boolean {
    return p.status().logFailure !== null;
  }

  /**
   * A mutation or FLUSH may fail only over an I/O error: one the data disk or the log
   * directory returned while it ran, a disk latched by a failed flush, or a primary failed
   * closed (over its disk, or a state it cannot save). A failed bitmap or state file latches
   * (fsyncgate, dirty-bitmap.ts, state-file.ts), so an error of this incarnation's files
   * before it is behind it too. Any other failure fails the seed.
   */
  function mayFail(p: ReplicationPrimary, failuresAtSubmit: number, fileFailuresAtSubmit: number, what: string, errno: number): void {
    const files = primaryFiles.stats.eio > fileFailuresAtSubmit || (primaryFiles.stats.eio > primaryFileFailuresAtOpen && filesLatched(p));
    if (failedClosed(p) || logFailed(p) || files || primaryDisk.latched || primaryDisk.failures > failuresAtSubmit) {
      stats.failedOps++;
      if (verbose) log(`${what} failed with errno ${errno} (disk errors)`);
      return;
    }
    fail("errors", `${what} failed with errno ${errno}, but the disk failed nothing meanwhile`);
  }

  function submit(): void {
    const p = primary;
    if (p === null || submitted >= opsTotal || inFlight >= queueDepth) return;
    const w = prng.work;
    const kind = w.int(12);
    const incarnation = primaryIncarnation;
    const failures = primaryDisk.failures;
    const fileFailures = primaryFiles.stats.eio;
    if (kind >= 10) return submitRead(p, incarnation);
    if (kind === 0) {
      // FLUSH: afterwards, every value acknowledged before it is durable (and no mutation that failed before that one can come back).
      const snapshot = new Map<number, { value: number; ackedAt: number }>();
      state.forEach((b, i) => snapshot.set(i, { value: b.candidates[b.candidates.length - 1]!, ackedAt: b.ackedAt }));
      inFlight++;
      submitted++;
      stats.ops++;
      if (verbose) log("submit flush");
      p.flush((errno) => {
        if (incarnation !== primaryIncarnation) return;
        if (verbose) log("ack flush");
        inFlight--;
        if (errno !== 0) return mayFail(p, failures, fileFailures, "flush", errno); // promises nothing
        for (const [i, { value, ackedAt }] of snapshot) {
          const b = state[i]!;
          const at = b.candidates.indexOf(value);
          if (at > 0) b.candidates.splice(0, at);
          b.failed = b.failed.filter((x) => x.at > ackedAt);
        }
        stats.acked++;
      });
      return;
    }
    const first = w.int(blocks);
    let count = 1 + w.int(Math.min(8, blocks - first));
    for (let i = 0; i < count; i++) {
      if (state[first + i]!.inFlight !== null || state[first + i]!.reading > 0) {
        count = i;
        break;
      }
    }
    if (count === 0) return;
    const value = kind <= 6 ? nextValue++ : 0;
    const fua = w.chance(0.2);
    for (let i = 0; i < count; i++) state[first + i]!.inFlight = value;
    inFlight++;
    submitted++;
    stats.ops++;
    const what = `${kind <= 6 ? `write ${value}` : kind <= 8 ? "zero" : "trim"} blocks ${first}+${count}${fua ? " fua" : ""}`;
    if (verbose) log(`submit ${what}`);
    const done = (errno: number) => {
      if (incarnation !== primaryIncarnation) return;
      const early = p.store.durable.seq < p.store.last.seq && p.status().earlyAcked > 0;
      if (early && errno === 0 && !fua) stats.earlyAcks++;
      if (verbose) log(`ack ${what} (mode ${primary?.status().mode}${early ? ", log not durable yet" : ""})`);
      inFlight--;
      const at = ++events;
      if (errno !== 0) {
        mayFail(p, failures, fileFailures, what, errno);
        for (let i = 0; i < count; i++) {
          const b = state[first + i]!;
          b.inFlight = null;
          b.failed.push({ value, at });
          b.failedSinceAck.push(value);
        }
        return;
      }
      stats.acked++;
      for (let i = 0; i < count; i++) {
        const b = state[first + i]!;
        b.inFlight = null;
        b.failedSinceAck = [];
        b.ackedAt = at;
        if (fua) {
          b.candidates = [value];
          b.failed = []; // durable, and written after every mutation of the block that failed
        } else b.candidates.push(value);
      }
    };
    if (kind <= 6) writeRecycled(p, first * blockSize, fill(value, count), fua, value, done, (why) => fail("buffers", `write ${value}: ${why}`));
    else if (kind <= 8) p.zero(first * blockSize, count * blockSize, { fua, noHole: w.chance(0.5), fast: false }, done);
    else p.trim(first * blockSize, count * blockSize, fua, done);
  }

  /**
   * READ of blocks no mutation is in flight on: it returns the value acknowledged last, even
   * when that write is acknowledged but not yet durable nor written back (served from the
   * layer's ack window over the disk).
   */
  function submitRead(p: ReplicationPrimary, incarnation: number): void {
    const w = prng.work;
    const first = w.int(blocks);
    let count = 1 + w.int(Math.min(8, blocks - first));
    for (let i = 0; i < count; i++) {
      if (state[first + i]!.inFlight !== null) {
        count = i;
        break;
      }
    }
    if (count === 0) return;
    // The value acknowledged last, or one a mutation that failed since may have left.
    const expected = Array.from({ length: count }, (_, i) => [state[first + i]!.candidates.at(-1)!, ...state[first + i]!.failedSinceAck]);
    const overWindow = p.status().earlyAcked > 0;
    for (let i = 0; i < count; i++) state[first + i]!.reading++;
    inFlight++;
    submitted++;
    stats.ops++;
    if (verbose) log(`submit read blocks ${first}+${count}`);
    const into = new Uint8Array(count * blockSize);
    p.read(first * blockSize, into, (errno) => {
      if (incarnation !== primaryIncarnation) return;
      inFlight--;
      for (let i = 0; i < count; i++) state[first + i]!.reading--;
      if (errno !== 0) {
        // A primary failed closed refuses reads of what its disk lost (write-back.ts); nothing else may fail.
        if (p.status().diskFailure === null) fail("read", `read of blocks ${first}+${count} failed with errno ${errno}`);
        stats.readsRefused++;
        return;
      }
      for (let i = 0; i < count; i++) {
        const value = valueOf(into, i * blockSize, blockSize);
        if (value === null || !expected[i]!.includes(value)) {
          fail("read", `block ${first + i} read ${value === null ? "garbage" : `value ${value}`}, but the last write acknowledged was ${expected[i]![0]}${expected[i]!.length > 1 ? ` (failed since: ${expected[i]!.slice(1).join(", ")})` : ""}`);
        }
      }
      stats.reads++;
      if (overWindow) stats.readsOverWindow++;
    });
  }

  function checkPrimaryDisk(when: string): void {
    const bytes = primaryDisk.current;
    for (let i = 0; i < blocks; i++) {
      const value = valueOf(bytes, i * blockSize, blockSize);
      const b = state[i]!;
      const allowed = [...b.candidates, ...(b.inFlight === null ? [] : [b.inFlight]), ...b.failed.map((x) => x.value)];
      if (value === null || !allowed.includes(value)) {
        fail("durability", `${when}: block ${i} holds ${value === null ? "garbage" : `value ${value}`}, allowed ${JSON.stringify(allowed)}`);
      }
      if (value !== b.candidates.at(-1) && value !== b.inFlight && b.candidates.includes(value!)) stats.ackedLost++;
      b.candidates = [value!];
      b.inFlight = null;
      b.reading = 0;
      b.failed = [];
      b.failedSinceAck = [];
    }
  }

  // ---- faults ----
  async function crashPrimary(): Promise<void> {
    const mode = f.chance(0.5) ? "random" : "lose-all";
    durableAtCrash = primary?.store.durable.seq ?? durableAtCrash;
    log(`CRASH primary (${mode}) state ${JSON.stringify(primary?.["state"])} last ${primary?.store.last.seq} durable ${primary?.store.durable.seq} segments ${JSON.stringify(primary?.store.segmentTable().map((x) => [x.firstSeq, x.lastSeq, x.durableLast]))}`);
    stats.primaryCrashes++;
    primary = null;
    reader = null;
    shipping = false;
    primaryIncarnation++;
    inFlight = 0;
    primaryFiles.crash(mode);
    primaryDisk.crash(mode);
    await openPrimary();
    // A primary that ends the seed at the documented limit (rotForks, rotCuts) is not checked.
    if (primary !== null && !primaryDead) checkPrimaryDisk("after primary recovery");
  }

  /**
   * An operator restarts a primary that refuses writes over its disk: closed (or killed), its
   * page caches outlive it (sim-files.ts kill, sim-port.ts restart), and it recovers from its
   * log and disk as after a crash (write-back.ts: the restart replays what the disk lost).
   */
  async function restartPrimary(): Promise<void> {
    const p = primary!;
    const graceful = d.chance(0.5);
    durableAtCrash = p.store.durable.seq;
    const why = p.status().diskFailure ?? p.status().logFailure ?? (filesLatched(p) ? "its bitmap or state file failed" : "its disk refuses writes and flushes since a flush failed");
    log(`RESTART primary (${graceful ? "closed" : "killed"}): ${why}`);
    stats.primaryRestarts++;
    primary = null;
    reader = null;
    shipping = false;
    primaryIncarnation++;
    inFlight = 0;
    // Closed, it may checkpoint first (a demote's quiesce does, daemon/replica-node.ts): the
    // checkpoint must stay below what the disk lost, or the restart does not replay it.
    if (graceful && d.chance(0.5)) await settle(clock, new Promise((resolve) => p.checkpoint(resolve)));
    if (graceful) await settle(clock, p.close());
    primaryFiles.kill();
    primaryDisk.restart();
    await openPrimary();
    if (primary !== null && !primaryDead) checkPrimaryDisk("after primary restart");
  }

  /**
   * Restarts the secondary after a halt, as an operator would: closed, its disk's page cache
   * kept. After a disk error the disk is reopened too (its latch goes, sim-port.ts restart);
   * after corruption the new applier just takes a new handle, as before disk errors existed.
   */
  async function restartSecondary(reopenDisk: boolean): Promise<void> {
    const closing = secondary!;
    secondary = null;
    reader = null;
    shipping = false;
    secondaryEpoch++;
    diskHalted = false;
    await settle(clock, closing.close());
    // A latched disk is reopened whatever the caller decided: a process restart opens its disk
    // again. Its failures may have been counted before this open (a failed start, seed 595773),
    // or a flush the applier had running may fail while it closes (seed 25041).
    if (reopenDisk || secondaryDisk.latched) secondaryDisk.restart();
    await openSecondary();
  }

  /** Replay halted: on its disk or files (it stays halted until a restart), or on a corrupt copy (restarted at once). */
  async function onHalt(halted: string): Promise<void> {
    if (/^(saving the replay position|reading the log after seq \d+): .*EIO/.test(halted)) {
      // Its own files failed (the position's state file latches, state-file.ts; a read of its copy).
      if (secondaryFiles.stats.eio === secondaryFileFailuresAtOpen) fail("halt", `${halted}, but its files failed nothing`);
      if (!diskHalted) {
        diskHalted = true;
        stats.applierFileHalts++;
        if (halted.startsWith("reading the log")) stats.applierReadHalts++;
        log(`applier halted: ${halted}`);
      }
      if (ff.chance(0.2)) {
        log("RESTART secondary after its file error");
        await restartSecondary(secondaryDisk.failures > secondaryFailuresAtOpen);
      }
      return;
    }
    if (/^(applying record seq \d+ \(.+\)|flushing the disk after seq \d+): .*\(EIO\)$/.test(halted)) {
      if (!secondaryDisk.latched && secondaryDisk.failures === secondaryFailuresAtOpen) fail("halt", `${halted}, but the disk failed nothing`);
      if (!diskHalted) {
        diskHalted = true;
        stats.applierDiskHalts++;
        log(`applier halted: ${halted}`);
      }
      if (d.chance(0.2)) {
        log("RESTART secondary after its disk error");
        await restartSecondary(true);
      }
      return;
    }
    // The copy is corrupt (rot): the local half halts naming the record; a restart cuts it.
    stats.haltsOnCorruption++;
    log(`applier halted: ${halted}`);
    if (!/checksum|corrupt|chain|not a log record|version|flags|op |reserved|malformed|payload|seq/.test(halted)) fail("halt", halted);
    await restartSecondary(false);
  }

  async function crashSecondary(): Promise<void> {
    const mode = f.chance(0.5) ? "random" : "lose-all";
    log(`CRASH secondary (${mode})`);
    stats.secondaryCrashes++;
    secondary = null;
    reader = null;
    shipping = false;
    secondaryEpoch++;
    diskHalted = false;
    secondaryFiles.crash(mode);
    secondaryDisk.crash(mode);
    await openSecondary();
  }

  function rot(disk: SimDisk, what: string): boolean {
    const names = disk["names"]().filter((n: string) => parseSegmentName(n) !== null);
    if (names.length === 0) return false;
    const name = f.pick(names);
    const size = disk.durableSize(name);
    if (size === 0) return false;
    const at = f.int(size);
    if (!disk.corrupt(name, at)) return false;
    log(`ROT ${what} ${name} byte ${at}`);
    if (disk === primaryFiles) logRotAt = { name, at };
    return true;
  }

  // ---- run ----
  await openPrimary();
  await openSecondary();

  let steps = 0;
  let lastOverflow = false;
  /** The current primary was seen failed closed (counted once). */
  let sawFailedClosed = false;
  /** The current primary was seen with a failed log directory (counted once). */
  let sawLogFailure = false;
  while (submitted < opsTotal || inFlight > 0) {
    if (++steps > 200_000) fail("liveness", `workload stuck: ${submitted}/${opsTotal} submitted, ${inFlight} in flight`);
    if (!primaryDead) submit();
    ship();
    const status = primary?.status();
    if (status !== undefined) {
      const overflow = status.mode === "overflow";
      if (overflow && !lastOverflow) stats.overflows++;
      lastOverflow = overflow;
    }
    if (primary !== null && f.chance(crashRate)) await crashPrimary();
    if (secondary !== null && f.chance(secondaryCrashRate)) await crashSecondary();
    if (f.chance(copyRotRate) && rot(secondaryFiles, "secondary copy")) stats.copyRot++;
    if (!primaryLogCorrupted && f.chance(logRotRate) && rot(primaryFiles, "primary log")) {
      stats.logRot++;
      primaryLogCorrupted = true;
    }
    if (secondary !== null && f.chance(pauseRate)) {
      const s = secondary;
      s.applier.pause();
      clock.after(5 + f.int(50), () => s.applier.resume());
    }
    const halted = secondary?.applier.status().halted;
    if (halted) await onHalt(halted);
    else if (secondary !== null && secondary.copy.failed !== 0) {
      // Its log copy failed: it takes no more records (fetches are dropped) until restarted.
      if (secondaryFiles.stats.eio === secondaryFileFailuresAtOpen) fail("errors", `the secondary's copy failed (${secondary.copy.failure}), but its files failed nothing`);
      if (ff.chance(0.2)) {
        log(`RESTART secondary: its log copy failed (${secondary.copy.failure})`);
        stats.copyFailedRestarts++;
        await restartSecondary(secondaryDisk.failures > secondaryFailuresAtOpen);
      }
    }
    if (primary !== null && !primaryDead) {
      if (primary.status().diskFailure !== null && !sawFailedClosed) stats.failedClosed++;
      sawFailedClosed = primary.status().diskFailure !== null;
      // Refusing writes (or its disk refusing them): the operator notices after a while.
      if ((failedClosed(primary) || primaryDisk.latched) && d.chance(0.2)) await restartPrimary();
      // Its log directory failed (status logFailure; a failed bitmap or state file refuses
      // every mark or save): likewise. (Its own stream: seeds without file errors draw nothing.)
      else if (primary !== null && !primaryDead && (logFailed(primary) || filesLatched(primary))) {
        if (primaryFiles.stats.eio === primaryFileFailuresAtOpen) fail("errors", `the primary's log failed (${primary.status().logFailure ?? "bitmap or state file"}), but its files failed nothing`);
        if (!sawLogFailure) stats.logFailures++;
        sawLogFailure = true;
        if (ff.chance(0.2)) {
          stats.logFailedRestarts++;
          await restartPrimary();
        }
      }
      if (primary !== null && !logFailed(primary) && !filesLatched(primary)) sawLogFailure = false;
    }
    if (primaryDead) break;
    clock.runUntil(clock.ticks + 1);
    for (let i = 0; i < 2; i++) await null;
  }

  // ---- convergence: faults off ----
  primaryDisk.faults!.eioRate = 0;
  secondaryDisk.faults!.eioRate = 0;
  primaryFiles.eioRate = 0;
  secondaryFiles.eioRate = 0;
  stats.diskErrors = primaryDisk.failures + secondaryDisk.failures;
  stats.fileErrors = primaryFiles.stats.eio + secondaryFiles.stats.eio;
  if (primary !== null && !primaryDead && (failedClosed(primary) || primaryDisk.latched || logFailed(primary) || filesLatched(primary))) await restartPrimary();
  if (primary !== null && !primaryDead) {
    await settle(clock, new Promise<void>((resolve) => primary!.flush(() => resolve())));
    const deadline = clock.ticks + 200_000;
    let stable = 0;
    while (clock.ticks < deadline) {
      ship();
      const s = secondary!;
      const st = s.applier.status();
      if (st.halted) {
        if (stoppedOnRot()) break;
        await restartSecondary(secondaryDisk.failures > secondaryFailuresAtOpen);
        continue;
      }
      if (s.copy.failed !== 0) {
        log(`RESTART secondary: its log copy failed (${s.copy.failure})`);
        await restartSecondary(secondaryDisk.failures > secondaryFailuresAtOpen);
        continue;
      }
      if (st.paused) s.applier.resume();
      const p = primary!.status();
      if (stoppedOnRot()) break;
      if (st.applied.seq === p.durable && p.durable === p.last && st.consistent && p.mode === "logging" && !p.resyncPending && p.inFlight === 0) {
        if (++stable > 50) break;
      } else stable = 0;
      clock.runUntil(clock.ticks + 1);
      for (let i = 0; i < 8; i++) await null;
    }
    const p = primary!.status();
    const st = secondary!.applier.status();
    if (stoppedOnRot()) {
      // Shipping stops at the corrupt record and names it. (That replay never passes it is the
      // exact-records invariant: every applied record equals the primary's original.)
      if (!/seq \d+/.test(shipError!)) fail("corruption report", `shipping error does not name a record: ${shipError}`);
    } else {
      if (st.applied.seq !== p.last || !st.consistent || p.mode !== "logging" || p.resyncPending) {
        fail("convergence", `secondary at seq ${st.applied.seq} (consistent ${st.consistent}, recovering ${st.recovering}, paused ${st.paused}, delayed ${st.delayed}, copy ${secondary!.copy.first}..${secondary!.copy.durable.seq}, ship error ${shipError}), primary at ${p.last} (mode ${p.mode}, resync ${p.resyncPending}, ${p.dirtyRegions} dirty, log ${p.logBytes}/${p.logLimit})`);
      }
      const i = firstDifference(primaryDisk.current, secondaryDisk.current);
      if (i >= 0) fail("convergence", `primary and secondary differ at byte ${i} (block ${Math.floor(i / blockSize)}) with lag 0`);
      for (const [store, disk, who] of [[primary!.store, primaryFiles, "primary"], [secondary!.copy, secondaryFiles, "secondary"]] as const) {
        const problem = segmentsDiffer(store, disk);
        if (problem !== null) fail("segments", `the ${who}'s ${problem}`);
      }
      stats.converged = true;
      if (p.resyncPending === false && stats.overflows > 0) stats.resyncs++;
    }
    // Final durability: crash the primary once more; nothing acknowledged and flushed is lost.
    if (!primaryLogCorrupted) {
      await settle(clock, new Promise<void>((resolve) => primary!.flush(() => resolve())));
      state.forEach((b) => (b.candidates = [b.candidates[b.candidates.length - 1]!]));
      await crashPrimary();
    }
  }
  return stats;
}

/**
 * Segments: the store's table names exactly the segment files on its disk (checked when settled:
 * no rotation or release in flight). A release whose removal failed keeps the segment in its
 * table and on disk, and a later release retries it; one whose removal happened though it
 * reported EIO must not keep a segment that is gone (docs/replication.md §3.5).
 */
function segmentsDiffer(store: LogStore, disk: SimDisk): string | null {
  const table = store.segmentTable().map((s) => s.name).sort();
  const onDisk = disk.names().filter((n) => parseSegmentName(n) !== null);
  return table.join() === onDisk.join() ? null : `segment table ${JSON.stringify(table)} differs from its segment files ${JSON.stringify(onDisk)}`;
}

/** Index of the first differing byte, or -1 (native compare first: this runs on every batch). */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.compare(a, b) === 0) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return a.length;
}

/** The value a block holds: 0 (zeroes), the write's value, or null (garbage). */
export function valueOf(bytes: Uint8Array, offset: number, size: number): number | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, size);
  const first = view.getUint32(0);
  for (let i = 0; i + 4 <= size; i += 4) if (view.getUint32(i) !== first) return null;
  return first;
}

export function applyShadow(target: Uint8Array, r: ShadowRecord): void {
  switch (r.op) {
    case RecordOp.WRITE:
      target.set(r.payload, r.offset);
      return;
    case RecordOp.TRIM:
    case RecordOp.ZERO:
      target.fill(0, r.offset, Math.min(target.length, r.offset + r.length));
      return;
    default:
      return;
  }
}
