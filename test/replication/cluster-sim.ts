/**
 * @module test/replication/cluster-sim — one seed of the cluster-level replication simulation
 * (docs/replication.md §8.2): two or three nodes, each the real `ReplicaNode`
 * (src/daemon/replica-node.ts: fencing at start, promote, demote) over the real primary layer,
 * log store, ship server, shipper, secondary and applier, on simulated disks (sim-files.ts,
 * sim-port.ts) and simulated time, with FETCH carried by a simulated network.
 *
 * The network delivers each FETCH to the peer's ship server (its `LogSource`, as the export
 * would: ENOTSUP when the peer has none) and the answer back, each way after a seeded latency;
 * it compresses answers the way the export does (docs/protocol.md §11.1) when the seed turns
 * compression on. Faults, drawn from the seed: crashes of any node (unsynced file changes kept,
 * dropped or torn; unflushed disk writes kept or dropped) and restarts, link cuts and
 * partitions (a FETCH in flight then fails, as the engine's deadline would), slow links, bytes
 * flipped in transit (after compression: corrupt frames and corrupt records), a planned
 * handover (demote, then promote), and a forced failover while the primary is down (half of
 * them once the secondary has the whole log), the old primary coming back with its peer set;
 * I/O errors of each node's data disk (sim-port.ts: a failed flush latches the disk until the
 * process restarts) and log directory (sim-files.ts: writes, fdatasyncs, opens, renames,
 * directory fsyncs), at a rate per node drawn from their own streams (toggles: `diskErrors`,
 * `fileErrors`). The operator (as in replication-sim.ts) restarts, after a while, a node whose
 * export refuses writes (its primary layer failed closed, its log failed, its disk latched), a
 * secondary stalled on a failure (unless its own reopen, replica-node.ts `reopen`, heals it
 * first) and a node whose start failed over an I/O error; errors are off for the final check.
 *
 * Invariants, checked on every step (and at the end):
 * - anytime consistency (prefix): whenever a secondary's applier reports itself consistent
 *   after applying, its disk equals the replay of exactly the chain of records it applied —
 *   records as their primaries appended them (keyed by chain value, which names the whole
 *   history: no gap, no fork, no record that no primary wrote); a promoted node's disk too,
 *   unless its copy held writes made around its old primary's log: then that disk is the base
 *   of its new generation (`promotedDisks`);
 * - replicated is never lost: a secondary's applied position never goes below what it reported
 *   to its primary (the primary may release the log below it), across crashes;
 * - durability: after a primary's crash and recovery each block holds a value it may hold
 *   (acknowledged and flushed data is never lost); a planned handover loses no write;
 * - one writer: at no step do two nodes accept writes — after a forced failover the old
 *   primary comes back diverged or as a secondary, never as a second primary;
 * - errors: a write or FLUSH fails only over an I/O error of the writer's disk or files (one while
 *   it ran, or a latched disk, a failed-closed layer, a failed log, bitmap or state file); a
 *   write that failed is not acknowledged: its value may be on the disks or not (durability
 *   allows it until an acknowledged write after it is flushed), the replay of records stays the
 *   model; a start, promote or demote fails only over an I/O error; a failed node's status
 *   names its failure;
 * - convergence: with faults off every non-diverged secondary catches up and equals the primary.
 *
 * `plant` injects a bug the checkers must catch (test/replication/cluster-sim.test.ts).
 */
import type { ExportConfig } from "../../src/config/types.ts";
import type { ReplicaEnv } from "../../src/daemon/replica-env.ts";
import { ReplicaNode } from "../../src/daemon/replica-node.ts";
import type { LogSource } from "../../src/export/fetch.ts";
import { parseExportUrl, type ExportUrl } from "../../src/lib/address.ts";
import { Errno, errnoMessage } from "../../src/lib/errno.ts";
import { Prng } from "../../src/lib/prng.ts";
import { zstdCompress } from "../../src/lib/zstd.ts";
import { decodeHeader, RecordFlag, RecordOp, RECORD_HEADER_SIZE, type ChainPoint } from "../../src/replication/record.ts";
import { readRole } from "../../src/replication/role-file.ts";
import { AWAITING_FIRST_SECONDARY } from "../../src/replication/ship-server.ts";
import type { FetchTransport } from "../../src/replication/shipper.ts";
import type { SyncTransport } from "../../src/replication/initial-sync.ts";
import { decodeSyncBegin, decodeSyncCopy, encodeSyncCopy } from "../../src/wire/dst/sync.ts";
import type { StoragePort } from "../../src/storage/port.ts";
import { Flag, SyncKind } from "../../src/wire/dst/constants.ts";
import { compressFetchReply, encodeFetchReason } from "../../src/wire/dst/fetch.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { simTrace } from "./sim-trace.ts";
import { applyShadow, firstDifference, SimFailure, valueOf, type ShadowRecord } from "./replication-sim.ts";
import { settle, SimDisk } from "./sim-files.ts";
import { SimDiskPort } from "./sim-port.ts";
import { writeRecycled } from "./sim-buffers.ts";

export type PlantedBug = "none" | "no-fence" | "scribble" | "stale-copy" | "early-consistent" | "repair-no-copy" | "no-repoint";

export interface ClusterStats {
  ops: number;
  acked: number;
  crashes: number;
  primaryCrashes: number;
  cuts: number;
  transitCorruptions: number;
  compressedAnswers: number;
  /** Pipelined FETCHes (FOLLOWS, docs/protocol.md §11.2) sent, and those a primary did not know the predecessor of (a restart, a resend). */
  follows: number;
  followsUnknown: number;
  handovers: number;
  failovers: number;
  oldPrimaryReturns: number;
  diverged: number;
  rejoined: number;
  /** Failovers onto a secondary that was mid-resync (inconsistent). */
  inconsistentPromotions: number;
  prefixChecks: number;
  threeNodes: number;
  converged: number;
  /** Initial syncs begun (SYNC BEGIN answered), and copies that completed into a catching-up secondary. */
  syncsBegun: number;
  syncsCopied: number;
  /** Secondaries that came back with a new, empty disk (a replaced machine), and late joiners. */
  replaced: number;
  joined: number;
  /** Secondaries that finished an initial sync (consistent at the copy's end). */
  syncsConsistent: number;
  /** `resync` (fork repair) and `resync --full` started by the operator, and repaired nodes equal to the primary at the end. */
  forkRepairs: number;
  fullResyncs: number;
  repairedConverged: number;
  /** promote refused on a syncing or catching-up secondary. */
  refusedPromotes: number;
  /** Forced failovers in three-node runs, and third nodes re-pointed at the new primary. */
  threeNodeFailovers: number;
  repointed: number;
  /** Consistent secondaries stopped (released, diverged) after a three-node role change, resynced --full. */
  stoppedSecondaries: number;
  /** I/O errors the data disks and the log directories returned; writes and FLUSHes failed by them. */
  diskErrors: number;
  fileErrors: number;
  failedOps: number;
  /** Primaries seen failed closed over their disk (status diskFailure), or with a failed log (logFailure). */
  failedClosed: number;
  logFailures: number;
  /** Secondaries seen stalled on an I/O failure: their copy or position (reopened by the node), or their disk (replay halted). */
  secondaryFailures: number;
  applierHalts: number;
  /** Secondaries the node opened again by itself (replica-node.ts reopen). */
  secondaryReopens: number;
  /** Restarts of a failed node by the operator; starts failed by an I/O error (retried); role changes refused over one. */
  operatorRestarts: number;
  startRetries: number;
  failedRoleChanges: number;
}

export interface ClusterOptions {
  verbose?: boolean;
  plant?: PlantedBug;
  /** I/O errors of the data disks (default on: a rate per node, as the seed picks). */
  diskErrors?: boolean;
  /** I/O errors of the log directories (default on, likewise). */
  fileErrors?: boolean;
}

interface SimNode {
  name: string;
  files: SimDisk;
  disk: SimDiskPort;
  replica: ReplicaNode | null;
  epoch: number;
  bound: { port: StoragePort; log: LogSource | undefined; readOnly: boolean } | null;
  peer: string | null;
  /** The highest applied seq this node reported to a primary in a FETCH (its log may be released below). */
  reported: { seq: number; generation: number };
  /** The replay of what this node applied: the chain point and the disk it implies. */
  model: { chain: bigint; seq: number; bytes: Uint8Array } | null;
  downUntil: number | null;
  /** This node's I/O error rates (data disk, log directory), fixed for the seed. */
  eio: { disk: number; files: number };
  /** File errors injected before the current incarnation started (a latched bitmap or state file is behind a failure only after one). */
  fileFailuresAtStart: number;
  /** Since when the operator sees it failed (status names a failure), and when it acts. */
  failing: { since: number; restartAt: number } | null;
}

type NodeSide =
  | { kind: "primary"; primary: import("../../src/replication/primary.ts").ReplicationPrimary }
  | { kind: "diverged" }
  | { kind: "syncing"; sync: import("../../src/replication/initial-sync.ts").InitialSync; failure: string | null }
  | {
      kind: "secondary";
      secondary: { applier: import("../../src/replication/applier.ts").Applier; copy: { last: ChainPoint; durable: ChainPoint } };
      shipper: { status(): { state: string; reason: string | null } };
      catchingUp: { end: number } | null;
      failure: string | null;
    };

interface BlockState {
  candidates: number[];
  inFlight: number | null;
  /**
   * Values of mutations that failed (on the disks or not, replayed from the log or not), each
   * with the event it failed at: allowed until an acknowledged mutation after it is flushed
   * (replication-sim.ts BlockState).
   */
  failed: { value: number; at: number }[];
  /** The event the last acknowledged mutation completed at. */
  ackedAt: number;
}

const NAMES = ["a", "b", "c"] as const;

/** An error a start or role change may fail with over an injected I/O error (the errno named, or DstdError E_IO's errno). */
const IO_ERROR = /EIO|errno 5\b/;

type Layer = import("../../src/replication/primary.ts").ReplicationPrimary;

/** A failed bitmap or state file refuses every later mark or save until the process restarts (replication-sim.ts). */
const filesLatched = (p: Layer): boolean => p.bitmap["failed"] !== 0 || p["stateFile"]["failed"] !== 0;

export async function runClusterSeed(seed: number, options: ClusterOptions = {}): Promise<ClusterStats> {
  const verbose = options.verbose === true;
  const plant = options.plant ?? "none";
  const clock = new SimClock();
  const { log, tail } = simTrace(clock, verbose, 300);
  const fail = (invariant: string, detail: string): never => {
    throw new SimFailure(
      `cluster sim seed ${seed}${plant !== "none" ? ` (planted bug ${plant})` : ""}: ${invariant}: ${detail}\n  replay: CLUSTER_SIM_SEED=${seed} bun test test/replication/cluster-sim.test.ts\n` +
        tail(60),
    );
  };
  const root = new Prng(seed);
  const prng = {
    files: new Prng(root.next()),
    port: new Prng(root.next()),
    work: new Prng(root.next()),
    net: new Prng(root.next()),
    faults: new Prng(root.next()),
    // Their own streams, split off after the others: the rates, which calls fail and what a
    // failed one left, and the operator's reactions. A seed whose rates are all 0 draws nothing
    // from them and runs as before they existed; one with a rate draws otherwise from the
    // first error on (its world changes from there: more calls, restarts).
    disk: new Prng(root.next()),
    fileFaults: new Prng(root.next()),
    operator: new Prng(root.next()),
  };
  const f = prng.faults;
  const blockSize = f.pick([512, 4096]);
  const blocks = 8 + f.int(24);
  const diskSize = blockSize * blocks;
  const threeNodes = f.chance(0.25);
  const scenario = threeNodes ? f.pick(["plain", "handover", "failover", "join"] as const) : f.pick(["plain", "handover", "failover", "failover"] as const);
  // A secondary's machine replaced (an empty disk and log directory): it needs an initial sync.
  const replaceAt = f.chance(0.25) ? 0.2 + f.float() * 0.5 : -1;
  // After a forced failover, what the operator does with the old primary when it comes back diverged.
  const repair = f.pick(["resync", "resync", "resync --full", "none"] as const);
  // SYNC answers' size (the export bounds them by its reply reservations): many COPYs, or one.
  const syncBudget = f.pick([4096, 4096 + f.int(8192), 1 << 20]);
  const compress = f.chance(0.5);
  const latency = f.pick([[1, 3], [1, 3], [5, 40]] as const);
  const crashRate = f.pick([0, 0.005, 0.015]);
  const cutRate = f.pick([0, 0.01, 0.03]);
  const corruptRate = f.pick([0, 0, 0.03]);
  const opsTotal = 40 + f.int(80);
  const queueDepth = 1 + f.int(6);
  const logOptions = {
    logLimit: f.chance(0.3) ? blockSize * (8 + f.int(24)) : 1 << 24,
    segmentSize: f.pick([4096, 1 << 16]),
    maxBatchBytes: RECORD_HEADER_SIZE + (1 << 20),
    checkpointBytes: blockSize * (1 + f.int(16)),
    maxBitmapBytes: 64,
  };
  const stats: ClusterStats = {
    ops: 0, acked: 0, crashes: 0, primaryCrashes: 0, cuts: 0, transitCorruptions: 0, compressedAnswers: 0, follows: 0, followsUnknown: 0, handovers: 0, failovers: 0,
    oldPrimaryReturns: 0, diverged: 0, rejoined: 0, inconsistentPromotions: 0, prefixChecks: 0, threeNodes: threeNodes ? 1 : 0, converged: 0,
    syncsBegun: 0, syncsCopied: 0, replaced: 0, joined: 0, syncsConsistent: 0, forkRepairs: 0, fullResyncs: 0, repairedConverged: 0, refusedPromotes: 0,
    threeNodeFailovers: 0, repointed: 0, stoppedSecondaries: 0,
    diskErrors: 0, fileErrors: 0, failedOps: 0, failedClosed: 0, logFailures: 0, secondaryFailures: 0, applierHalts: 0, secondaryReopens: 0,
    operatorRestarts: 0, startRetries: 0, failedRoleChanges: 0,
  };
  const diskRate = () => (options.diskErrors === false ? 0 : prng.disk.pick([0, 0, 0.001, 0.005, 0.02]));
  const filesRate = () => (options.fileErrors === false ? 0 : prng.fileFaults.pick([0, 0, 0, 0.001, 0.005, 0.02]));
  log(`options ${JSON.stringify({ blockSize, blocks, threeNodes, scenario, replaceAt, repair, syncBudget, compress, latency, crashRate, cutRate, corruptRate, opsTotal, queueDepth, ...logOptions })}`);

  // ---- records, as every primary appended them, keyed by chain (which names the whole history) ----
  const shadow = new Map<bigint, ShadowRecord & { seq: number; prev: bigint }>();
  const onAppend = (point: ChainPoint, chunks: readonly Uint8Array[]) => {
    const header = decodeHeader(chunks[0]!);
    let payload: Uint8Array = chunks.length > 1 ? chunks[1]!.slice() : chunks[0]!.slice(RECORD_HEADER_SIZE);
    if (header.op !== RecordOp.WRITE) payload = new Uint8Array(0);
    shadow.set(point.chain, { seq: point.seq, prev: header.prev, chain: point.chain, op: header.op, flags: header.flags, offset: header.offset, length: header.length, payload });
  };

  /**
   * The disk after the chain of records ending at `point`: from the node's model, from the disk
   * of a promotion that started a history (`promotedDisks`), or from zero.
   */
  function replay(node: SimNode, point: ChainPoint): Uint8Array {
    const path: (ShadowRecord & { seq: number; prev: bigint })[] = [];
    let chain = point.chain;
    let seq = point.seq;
    const base = node.model;
    let promoted: Uint8Array | undefined;
    while (seq > 0 && !(base !== null && base.seq === seq && base.chain === chain)) {
      promoted = promotedDisks.get(chain);
      if (promoted !== undefined) break;
      const r = shadow.get(chain);
      if (r === undefined) fail("exact records", `${node.name} applied seq ${seq} (chain ${chain.toString(16)}), which no primary wrote`);
      if (r!.seq !== seq) fail("exact records", `${node.name}: chain ${chain.toString(16)} is seq ${r!.seq} of a primary, applied as seq ${seq}`);
      path.push(r!);
      chain = r!.prev;
      seq--;
    }
    const bytes = promoted !== undefined ? promoted.slice() : seq > 0 ? base!.bytes : new Uint8Array(diskSize);
    for (let i = path.length - 1; i >= 0; i--) applyShadow(bytes, path[i]!);
    const after = aroundInCopy.get(node.name);
    if (after !== undefined && path.some((r) => r.seq > after && (r.flags & RecordFlag.RESYNC_END) !== 0)) aroundInCopy.delete(node.name);
    node.model = { chain: point.chain, seq: point.seq, bytes };
    return bytes;
  }

  /**
   * A promoted node's disk when it is not the replay of the records it applied, keyed by the
   * chain of the promotion's GENERATION MARK (which names that history alone): the disk every
   * record of the new generation was written over. Only a node consistent over a copy that held
   * writes made around its old primary's log (`aroundInCopy`, below) is promoted so: it is the
   * old primary's disk at the copy's point — the around-the-log writes included, their resync
   * not yet logged — so the chain of records it applied alone does not give it (seed 726988).
   */
  const promotedDisks = new Map<bigint, Uint8Array>();
  function promoted(node: SimNode): void {
    const mark = (sideOf(node) as Extract<NodeSide, { kind: "primary" }>).primary.store.last;
    const r = shadow.get(mark.chain);
    if (r === undefined || r.op !== RecordOp.MARK || (r.flags & RecordFlag.GENERATION) === 0) return fail("harness", `${node.name} promoted: its last record (seq ${mark.seq}) is not its generation's MARK`);
    if (aroundInCopy.has(node.name)) {
      promotedDisks.set(mark.chain, node.disk.current.slice());
      aroundInCopy.delete(node.name);
      log(`${node.name} promoted over a copy holding writes made around its old primary's log: its disk is the base of generation ${mark.generation}`);
      return;
    }
    // Otherwise the disk it serves from now on is the replay of what it applied (also mid-resync:
    // half-copied regions are what the copies' replay gives), checked here as after a batch.
    const expected = replay(node, { ...mark, seq: mark.seq - 1, chain: r.prev });
    stats.prefixChecks++;
    const i = firstDifference(node.disk.current, expected);
    if (i >= 0) fail("prefix", `${node.name} promoted at seq ${mark.seq - 1} differs from the replay of the records it applied at byte ${i} (block ${Math.floor(i / blockSize)})`);
  }

  // ---- nodes ----
  const url = (name: string): ExportUrl => parseExportUrl(`dst://${name}:10810/disk`) as ExportUrl;
  const count = threeNodes ? 3 : 2;
  const nodes: SimNode[] = NAMES.slice(0, count).map((name) => {
    const eio = { disk: diskRate(), files: filesRate() };
    return {
      name,
      files: new SimDisk(clock, prng.files, { latency: [0, 2], eioRate: eio.files, faults: prng.fileFaults }),
      disk: new SimDiskPort(diskSize, clock, prng.port, f.chance(0.3), { prng: prng.disk, eioRate: eio.disk }),
      eio,
      fileFailuresAtStart: 0,
      failing: null,
      replica: null,
      epoch: 0,
      bound: null,
      // a ↔ b name each other (fencing, handover); c follows a.
      peer: name === "a" ? "b" : "a",
      reported: { seq: 0, generation: 0 },
      model: null,
      downUntil: null,
    };
  });
  log(`I/O error rates ${JSON.stringify(Object.fromEntries(nodes.map((n) => [n.name, n.eio])))}`);
  const byName = (name: string) => nodes.find((n) => n.name === name)!;

  // ---- the network ----
  const linkDown = new Set<string>(); // "a-b" (sorted)
  const linkKey = (x: string, y: string) => (x < y ? `${x}-${y}` : `${y}-${x}`);
  const delay = () => latency[0] + prng.net.int(latency[1] - latency[0] + 1);

  /**
   * One request over the simulated link to `to`'s ship server and back, each way after a
   * seeded latency: a cut link or a node that is down fails it later (ETIMEDOUT), a node
   * without a log answers ENOTSUP as the export does, and an answer that never comes (the
   * primary crashed with it) fails at the engine's deadline so the caller asks again.
   * `ask` calls the server; `atServer` sees the answer there; `deliver` gets a successful
   * answer back at `from`; `fail` gets everything else.
   */
  function overLink<A extends { status: number }>(
    from: SimNode,
    epoch: number,
    to: string,
    isClosed: () => boolean,
    fail: (errno: number, reason: Uint8Array | null) => void,
    ask: (source: LogSource, answer: (a: A) => void) => void,
    atServer: (target: SimNode, source: LogSource, answer: A) => void,
    deliver: (answer: A) => void,
  ): void {
    const alive = () => from.epoch === epoch && !isClosed();
    const key = linkKey(from.name, to);
    const failLater = (errno: number) => clock.after(delay() * 4, () => alive() && fail(errno, null));
    if (linkDown.has(key)) return failLater(Errno.ETIMEDOUT);
    clock.after(delay(), () => {
      const target = byName(to);
      if (linkDown.has(key) || target.replica === null || target.bound === null) return failLater(Errno.ETIMEDOUT);
      const source = target.bound.log;
      if (source === undefined) {
        const reason = encodeFetchReason(`export disk is not a replication primary`);
        return clock.after(delay(), () => alive() && fail(Errno.ENOTSUP, reason));
      }
      const targetEpoch = target.epoch;
      let answered = false;
      clock.after(2000, () => {
        if (answered) return;
        answered = true;
        if (alive()) fail(Errno.ETIMEDOUT, null);
      });
      ask(source, (answer) => {
        if (target.epoch !== targetEpoch || answered) return; // lost with the primary, or timed out
        answered = true;
        atServer(target, source, answer);
        clock.after(delay(), () => {
          if (!alive()) return;
          if (linkDown.has(key)) return failLater(Errno.ETIMEDOUT);
          if (answer.status !== 0) return fail(answer.status, encodeFetchReason((answer as unknown as { reason: string }).reason));
          deliver(answer);
        });
      });
    });
  }

  function fetch(from: SimNode, epoch: number, to: string, isClosed: () => boolean): FetchTransport {
    return (request, done) =>
      overLink<Parameters<Parameters<LogSource["fetch"]>[2]>[0]>(
        from,
        epoch,
        to,
        isClosed,
        done,
        (source, answer) => {
          if (request.follows === true) stats.follows++;
          source.fetch(request, from.name, answer);
        },
        (target, source, answer) => {
          if (request.follows === true && answer.status === Errno.EAGAIN) stats.followsUnknown++;
          // Applied positions reported to a primary: the primary may release the log below them.
          if (from.epoch === epoch && answer.status === 0) {
            const generation = source === target.bound?.log ? target.replica!.status().generation : 0;
            if (request.applied > from.reported.seq || generation !== from.reported.generation) from.reported = { seq: request.applied, generation };
          }
        },
        (answer) => {
          let payload = (answer as { payload: Uint8Array }).payload;
          let flags = 0;
          if (request.zstd === true) {
            const packed = compressFetchReply(payload, zstdCompress);
            if (packed !== null) {
              payload = packed;
              flags = Flag.ZSTD;
              stats.compressedAnswers++;
            }
          }
          if (payload.length > 48 && prng.net.chance(corruptRate)) {
            payload = payload.slice();
            payload[48 + prng.net.int(payload.length - 48)]! ^= 1 << prng.net.int(8);
            stats.transitCorruptions++;
            log(`CORRUPT answer to ${from.name} (${flags !== 0 ? "compressed" : "plain"})`);
          }
          done(0, payload, flags);
        },
      );
  }

  /**
   * SYNC (initial sync, fork repair: docs/replication.md §10.1, §11) to the peer's ship server,
   * as the export answers it. The real link is sealed: a corrupt answer is a failed one
   * (dropped here in cuts), never wrong data.
   */
  function sync(from: SimNode, epoch: number, to: string, isClosed: () => boolean): SyncTransport {
    return (request, offset, length, done) =>
      overLink<Parameters<Parameters<LogSource["sync"]>[5]>[0]>(
        from,
        epoch,
        to,
        isClosed,
        done,
        (source, answer) => source.sync(request, offset, length, syncBudget, from.name, answer),
        (target, _source, answer) => {
          const side = sideOf(target);
          if (request.kind === SyncKind.COPY && answer.status === 0 && side?.kind === "primary") {
            const p = side.primary.status();
            if (p.mode !== "logging" || p.resyncPending || p.dirtyRegions > 0) aroundInCopy.set(from.name, Math.max(aroundInCopy.get(from.name) ?? 0, side.primary.store.durable.seq));
          }
          if (request.kind === SyncKind.BEGIN && answer.status === 0 && request.keepFrom === 0) {
            stats.syncsBegun++;
            log(`SYNC BEGIN ${from.name} from ${to}: ${JSON.stringify(decodeSyncBegin((answer as { payload: Uint8Array }).payload), (_k, v) => (typeof v === "bigint" ? v.toString(16) : v))}`);
          }
        },
        (answer) => {
          let payload = (answer as { payload: Uint8Array }).payload;
          if (request.kind === SyncKind.COPY) payload = plantInCopy(from, offset, length, payload);
          done(0, payload);
        },
      );
  }

  /** Planted bugs of the copy: the coverage it reports, or the copy itself. */
  function plantInCopy(from: SimNode, offset: number, length: number, payload: Uint8Array): Uint8Array {
    if (plant !== "stale-copy" && plant !== "repair-no-copy") return payload;
    const reply = decodeSyncCopy(payload, offset, length);
    if (typeof reply === "string") return payload;
    // "stale-copy": the copy claims to be covered by the log up to the sync point only, though it
    // read writes made after it — the secondary would call itself consistent too early.
    if (plant === "stale-copy") return encodeSyncCopy({ ...reply, durable: 0 });
    // "repair-no-copy": a fork repair that copies nothing (the node's own bytes come back), so the
    // old primary keeps what it wrote after the fork.
    if (!repairing.has(from.name)) return payload;
    return encodeSyncCopy({ end: reply.end, durable: reply.durable, runs: [{ offset, length: reply.end - offset, data: from.disk.current.slice(offset, reply.end) }] });
  }
  const repairing = new Set<string>();
  /**
   * Nodes whose copy was read while its primary had regions written around its log (overflow
   * or a resync under way), with the primary's durable seq then: such writes are in no record,
   * so until the node replays a RESYNC_END after that seq its disk may legitimately hold them —
   * the replay of records is not the model then (the primary's disk is).
   */
  const aroundInCopy = new Map<string, number>();

  function config(node: SimNode, peer: string | null): ExportConfig {
    const role = node.name === "a" ? "primary" : "secondary";
    return {
      name: "disk",
      readOnly: false,
      replication: { logDir: `/sim/${node.name}`, logSize: logOptions.logLimit, role, peer: peer === null ? null : url(peer), keyFile: null, replayDelayMs: 0, compress, bandwidth: 0 },
    } as unknown as ExportConfig;
  }

  /**
   * Starts `node`; a start an I/O error fails (naming it, docs/replication.md §4) is retried by
   * the operator as a restart (the process gone, its page caches kept); every fourth attempt
   * without errors (the operator looked at the disk: its errors were transient), or a seed with
   * many records to replay might never start again (replication-sim.ts openPrimary).
   */
  async function start(node: SimNode, withPeer = true): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const failures = node.disk.failures;
      const fileFailures = node.files.stats.eio;
      const quiet = attempt % 4 === 0;
      if (quiet) setRates(node, false);
      try {
        return await startOnce(node, withPeer);
      } catch (error) {
        const message = (error as Error).message;
        if (error instanceof SimFailure) throw error;
        // A peer that is a primary but cannot answer the fencing probe (its files failed) fails the start too.
        const peerFailed = /is a replication primary but cannot answer/.test(message);
        if (!peerFailed && ((node.disk.failures === failures && node.files.stats.eio === fileFailures) || !IO_ERROR.test(message))) fail("errors", `${node.name} failed to start: ${message}`);
        log(`${node.name} start ${attempt} failed: ${message}`);
        stats.startRetries++;
        kill(node);
        // The operator looks at the peer too: it answers the fencing probe with EIO until restarted
        // (a failed state file latches), and nothing else runs while this start is retried.
        const peer = node.peer === null ? null : byName(node.peer);
        if (peerFailed && peer !== null && peer.replica !== null) await operatorRestart(peer, `it cannot answer ${node.name}'s fencing probe`);
      } finally {
        if (quiet) setRates(node, errorsOn);
      }
    }
  }

  async function startOnce(node: SimNode, withPeer: boolean): Promise<void> {
    const epoch = ++node.epoch;
    node.fileFailuresAtStart = node.files.stats.eio;
    node.failing = null;
    const timer = {
      now: () => clock.now,
      after: (ms: number, run: () => void) => {
        let live = true;
        clock.after(Math.max(1, ms), () => live && node.epoch === epoch && run());
        return () => (live = false);
      },
    };
    const env: ReplicaEnv = {
      timer,
      wallMicros: () => clock.ticks * 1000 + 1,
      link: () => {
        let closed = false;
        return {
          transport: fetch(node, epoch, node.peer!, () => closed),
          sync: sync(node, epoch, node.peer!, () => closed),
          close: () => (closed = true),
        };
      },
      primaryOptions: { ...logOptions, now: () => clock.ticks * 1000 + 1, onAppend },
      secondaryOptions: { segmentSize: logOptions.segmentSize, maxBatchBytes: 64 * 1024 },
    };
    const quiet = (m: string) => verbose && log(`${node.name}: ${m}`);
    const info = (m: string) => {
      if (m.includes("the secondary opened again after") && node.epoch === epoch) stats.secondaryReopens++;
      quiet(m);
    };
    const logger = { error: (m: string) => log(`${node.name} error: ${m}`), warn: (m: string) => log(`${node.name} warn: ${m}`), info, debug: quiet };
    const replica = new ReplicaNode(config(node, withPeer ? node.peer : null), node.disk.handle(), node.files.directory(`/sim/${node.name}`), logger as never, (port, source, readOnly) => {
      if (node.epoch !== epoch) return;
      node.bound = { port, log: source, readOnly };
      if (!readOnly) singleWriter(`${node.name} takes writes`);
      sideChanged(node, replica);
    }, env);
    node.replica = replica;
    node.model = null;
    await settle(clock, replica.start());
    if (epoch === 1 && node.name === "a" && threeNodes && scenario !== "join") {
      // Both secondaries known from the start: a secondary joining after the log was released
      // needs an initial sync (docs/replication.md §10, not this simulation's subject).
      const layer = (replica["side"] as { primary: import("../../src/replication/primary.ts").ReplicationPrimary }).primary;
      // This setup is no product path: a registration its state file failed (unsaved, so the log
      // may be released under it) fails the start, which is then retried.
      const saved: number[] = [];
      for (const name of ["b", "c"]) saved.push(await settle(clock, new Promise<number>((resolve) => layer.addSecondary(name, 0, resolve))));
      saved.push(await settle(clock, new Promise<number>((resolve) => layer.removeSecondary(AWAITING_FIRST_SECONDARY, resolve))));
      if (saved.some((errno) => errno !== 0)) throw new Error(`registering the secondaries failed: ${errnoMessage(Errno.EIO)}`);
    }
    const s = replica.status();
    log(`${node.name} started: ${s.role} ${s.state} seq ${s.seq} generation ${s.generation}`);
    const started = applier(node);
    if (started !== null) {
      const applied = started.status().applied;
      if (applied.generation === node.reported.generation && applied.seq < node.reported.seq) {
        fail("replicated is never lost", `${node.name} restarted at applied seq ${applied.seq}, below the seq ${node.reported.seq} it had reported to its primary`);
      }
    }
  }

  function applier(node: SimNode) {
    const side = sideOf(node);
    return side?.kind === "secondary" ? side.secondary.applier : null;
  }

  function sideOf(node: SimNode): NodeSide | null {
    return node.replica === null ? null : (node.replica["side"] as NodeSide);
  }

  /** Syncing, or replaying the log over a fresh copy: not a state of the primary (never promoted, never served as consistent). */
  function inconsistentSync(node: SimNode): boolean {
    const side = sideOf(node);
    return side !== null && (side.kind === "syncing" || (side.kind === "secondary" && side.catchingUp !== null));
  }

  /** Whenever the node changes sides (start, sync, demote, promote): the checks follow its new applier. */
  const hooked = new WeakSet<object>();
  function sideChanged(node: SimNode, replica: ReplicaNode): void {
    const side = replica["side"] as NodeSide;
    if (side.kind === "syncing") {
      // The copy replaces the disk and the applied position: what it reported before is void.
      node.reported = { seq: 0, generation: 0 };
      node.model = null;
      aroundInCopy.delete(node.name);
      return;
    }
    if (side.kind !== "secondary" || hooked.has(side)) return;
    hooked.add(side);
    if (side.catchingUp !== null) {
      stats.syncsCopied++;
      log(`${node.name} catching up after a sync: consistent at seq ${side.catchingUp.end}`);
      // Planted "early-consistent": the sync's end is forgotten, so the copy (a mix of the
      // primary's states while it was read) is served as consistent at the sync point.
      if (plant === "early-consistent") side.catchingUp = null;
    }
    hook(node, replica, side);
  }

  /**
   * Prefix and exact-records checks after every batch a secondary applies. Consistent = the
   * applier says so and the node is not catching up after a sync (what status serves as
   * consistent, and what promote accepts).
   */
  function hook(node: SimNode, replica: ReplicaNode, side: Extract<NodeSide, { kind: "secondary" }>): void {
    const a = side.secondary.applier;
    const epoch = node.epoch;
    let synced = side.catchingUp !== null;
    a.onApplied((point) => {
      if (node.epoch !== epoch || node.replica !== replica || replica["side"] !== side) return;
      const status = a.status();
      if (!status.consistent || side.catchingUp !== null) {
        replay(node, point); // still checks that every record applied is a primary's own, in order
        return;
      }
      if (synced) {
        synced = false;
        stats.syncsConsistent++;
        log(`${node.name} consistent after its sync at seq ${point.seq}`);
      }
      const expected = replay(node, point);
      if (aroundInCopy.has(node.name)) return;
      stats.prefixChecks++;
      const i = firstDifference(node.disk.current, expected);
      if (i >= 0) fail("prefix", `${node.name} at seq ${point.seq} differs from the replay of the records it applied at byte ${i} (block ${Math.floor(i / blockSize)})`);
    });
  }

  function singleWriter(when: string): void {
    const writers = nodes.filter((n) => n.replica !== null && n.bound !== null && !n.bound.readOnly).map((n) => n.name);
    if (writers.length > 1) fail("one writer", `${when}: ${writers.join(" and ")} both accept writes`);
  }

  function writer(): SimNode | null {
    return nodes.find((n) => n.replica !== null && n.bound !== null && !n.bound.readOnly) ?? null;
  }

  // ---- the workload (on whichever node takes writes) ----
  /** A block's value when it holds no single value (half copied by a resync, then promoted). */
  const MIXED = -1;
  const state: BlockState[] = Array.from({ length: blocks }, () => ({ candidates: [0], inFlight: null, failed: [], ackedAt: 0 }));
  /** Counts acknowledgements and failures of mutations (BlockState.failed, ackedAt). */
  let events = 0;
  let nextValue = 1;
  let holdWrites = false;
  let inFlight = 0;
  let submitted = 0;
  let incarnation = 0; // bumped when the writer crashes or changes: its callbacks are void

  function fill(value: number, n: number): Uint8Array {
    const out = new Uint8Array(n * blockSize);
    const view = new DataView(out.buffer);
    for (let i = 0; i + 4 <= out.length; i += 4) view.setUint32(i, value);
    return out;
  }

  /** The primary layer `node` serves, if it is primary. */
  function layerOf(node: SimNode): Layer | null {
    const side = sideOf(node);
    return side?.kind === "primary" ? side.primary : null;
  }

  /**
   * A write or FLUSH may fail only over an I/O error: one the writer's data disk or log
   * directory returned while it ran, its disk latched by a failed flush, its layer failed closed
   * or its log failed, or a bitmap or state file latched by an error of this incarnation.
   */
  function mayFail(node: SimNode, failuresAtSubmit: number, fileFailuresAtSubmit: number, what: string, errno: number): void {
    const layer = layerOf(node);
    const files = node.files.stats.eio > fileFailuresAtSubmit || (node.files.stats.eio > node.fileFailuresAtStart && layer !== null && filesLatched(layer));
    const failed = layer !== null && (layer.status().diskFailure !== null || layer.status().logFailure !== null);
    if (!(files || failed || node.disk.latched || node.disk.failures > failuresAtSubmit)) fail("errors", `${what} on ${node.name} failed with errno ${errno}, but its disks failed nothing meanwhile`);
    stats.failedOps++;
    if (verbose) log(`${what} on ${node.name} failed with errno ${errno} (I/O errors)`);
  }

  function submit(): void {
    const node = writer();
    if (node === null || submitted >= opsTotal || inFlight >= queueDepth) return;
    if (handoverDue()) return; // let the writes drain so the handover can be tried
    if (holdWrites) return;
    const port = node.bound!.port;
    const w = prng.work;
    const kind = w.int(10);
    const mine = incarnation;
    const failures = node.disk.failures;
    const fileFailures = node.files.stats.eio;
    if (kind === 0) {
      const snapshot = state.map((b) => ({ value: b.candidates[b.candidates.length - 1]!, ackedAt: b.ackedAt }));
      inFlight++;
      submitted++;
      stats.ops++;
      port.flush((errno) => {
        if (mine !== incarnation) return;
        inFlight--;
        if (errno !== 0) return mayFail(node, failures, fileFailures, "flush", errno); // promises nothing
        if (verbose) log(`ack flush on ${node.name}`);
        snapshot.forEach(({ value, ackedAt }, i) => {
          const b = state[i]!;
          const at = b.candidates.indexOf(value);
          if (at > 0) b.candidates.splice(0, at);
          b.failed = b.failed.filter((x) => x.at > ackedAt);
        });
        stats.acked++;
      });
      return;
    }
    const first = w.int(blocks);
    let n = 1 + w.int(Math.min(6, blocks - first));
    for (let i = 0; i < n; i++) if (state[first + i]!.inFlight !== null) n = i;
    if (n === 0) return;
    const value = kind <= 6 ? nextValue++ : 0;
    const fua = w.chance(0.2);
    for (let i = 0; i < n; i++) state[first + i]!.inFlight = value;
    inFlight++;
    submitted++;
    stats.ops++;
    const done = (errno: number) => {
      if (mine !== incarnation) return;
      inFlight--;
      const at = ++events;
      if (errno !== 0) {
        // Not acknowledged: its value may be on the disks or not, and its record in the log or not.
        mayFail(node, failures, fileFailures, `mutation ${value} of blocks ${first}+${n}`, errno);
        for (let i = 0; i < n; i++) {
          const b = state[first + i]!;
          b.inFlight = null;
          b.failed.push({ value, at });
        }
        return;
      }
      stats.acked++;
      if (verbose) log(`ack mutation ${value} of blocks ${first}+${n}${fua ? " fua" : ""} on ${node.name}`);
      for (let i = 0; i < n; i++) {
        const b = state[first + i]!;
        b.inFlight = null;
        b.ackedAt = at;
        if (fua) {
          b.candidates = [value];
          b.failed = []; // durable, and written after every mutation of the block that failed
        } else b.candidates.push(value);
      }
    };
    if (kind <= 6) writeRecycled(port, first * blockSize, fill(value, n), fua, value, done, (why) => fail("workload", `write ${value}: ${why}`));
    else if (kind <= 8) port.zero(first * blockSize, n * blockSize, { fua, noHole: false, fast: false }, done);
    else port.trim(first * blockSize, n * blockSize, fua, done);
  }

  /** The writer's disk after a crash and recovery (or a handover): each block holds a value it may hold. */
  function checkDisk(node: SimNode, when: string): void {
    for (let i = 0; i < blocks; i++) {
      const value = valueOf(node.disk.current, i * blockSize, blockSize) ?? MIXED;
      const b = state[i]!;
      const allowed = [...b.candidates, ...(b.inFlight === null ? [] : [b.inFlight]), ...b.failed.map((x) => x.value)];
      if (!allowed.includes(value)) fail("durability", `${when}: block ${i} of ${node.name} holds ${value === MIXED ? "garbage" : `value ${value}`}, allowed ${JSON.stringify(allowed)}`);
      b.candidates = [value];
      b.inFlight = null;
      b.failed = [];
    }
  }

  /** After a failover: what the new primary holds is what is known (writes not replicated are legitimately lost). */
  function adopt(node: SimNode, inconsistent: boolean): void {
    for (let i = 0; i < blocks; i++) {
      const value = valueOf(node.disk.current, i * blockSize, blockSize);
      // A consistent secondary holds a prefix: whole values. One promoted mid-resync may hold a
      // block half copied from the old primary (the promotion says so in its log line).
      if (value === null && !inconsistent) fail("prefix", `${node.name} promoted with garbage in block ${i}`);
      state[i] = { candidates: [value ?? MIXED], inFlight: null, failed: [], ackedAt: 0 };
    }
  }

  // ---- faults ----
  function crash(node: SimNode): void {
    const wasWriter = writer() === node;
    const mode = f.chance(0.5) ? "random" : "lose-all";
    log(`CRASH ${node.name} (${mode}, ${node.replica?.role})`);
    stats.crashes++;
    if (wasWriter) {
      stats.primaryCrashes++;
      incarnation++;
      inFlight = 0;
    }
    node.epoch++;
    node.replica = null;
    node.bound = null;
    node.files.crash(mode);
    node.disk.crash(mode);
    node.downUntil = clock.ticks + 20 + f.int(400);
  }

  /** I/O errors on (the seed's rates) until the final convergence check. */
  let errorsOn = true;
  function setRates(node: SimNode, on: boolean): void {
    node.disk.faults!.eioRate = on ? node.eio.disk : 0;
    node.files.eioRate = on ? node.eio.files : 0;
  }

  /**
   * The process dies or is restarted (not the power): its calls in flight are dropped, its page
   * caches outlive it (sim-files.ts kill; sim-port.ts restart: after a failed flush each change
   * reached the disk or not, and the reopened disk takes writes again).
   */
  function kill(node: SimNode): void {
    if (writer() === node || sideOf(node)?.kind === "primary") {
      incarnation++;
      inFlight = 0;
    }
    node.epoch++;
    node.replica = null;
    node.bound = null;
    node.failing = null;
    node.files.kill();
    node.disk.restart();
  }

  /**
   * What the operator sees failed on `node` (and restarts it over, after a while), or null: a
   * primary refusing writes (its layer failed closed over its disk, its log failed, a bitmap or
   * state file or its disk latched; or left read-only by a role change that failed), a secondary
   * stalled on its copy, position or disk, a sync over a latched disk.
   */
  function failureOf(node: SimNode): string | null {
    const side = sideOf(node);
    if (side === null) return null;
    if (side.kind === "primary") {
      const s = side.primary.status();
      if (s.diskFailure !== null || s.logFailure !== null) return s.diskFailure ?? s.logFailure;
      if (filesLatched(side.primary)) return "its bitmap or state file failed";
      if (node.bound?.readOnly === true) return "a primary serving read-only: a role change failed";
    } else if (side.kind === "secondary") {
      if (side.failure !== null) return side.failure;
      const halted = side.secondary.applier.status().halted;
      if (halted !== null) return `replay halted: ${halted}`;
    } else if (side.kind === "syncing" && side.failure !== null) {
      return side.failure;
    }
    return node.disk.latched ? "its disk refuses writes and flushes since a flush failed" : null;
  }

  /** Whether `operate` has anything to do (checked first: an await where none is needed would change the seed's world). */
  function failing(node: SimNode): boolean {
    return node.replica !== null && (node.failing !== null || failureOf(node) !== null);
  }

  /** The operator: a failed node is restarted after a while (a secondary's own reopen may come first, after 1 s). */
  async function operate(node: SimNode): Promise<void> {
    const why = failureOf(node);
    if (why === null) {
      node.failing = null;
      return;
    }
    if (node.failing === null) {
      node.failing = { since: clock.ticks, restartAt: clock.ticks + 100 + prng.operator.int(4000) };
      const side = sideOf(node)!;
      if (node.disk.failures === 0 && node.files.stats.eio === 0) fail("errors", `${node.name} (${side.kind}) failed (${why}), but its disks failed nothing`);
      if (side.kind === "primary" && side.primary.status().diskFailure !== null) stats.failedClosed++;
      else if (side.kind === "primary" && side.primary.status().logFailure !== null) stats.logFailures++;
      else if (side.kind === "secondary" && side.failure !== null) stats.secondaryFailures++;
      else if (side.kind === "secondary" && side.secondary.applier.status().halted !== null) stats.applierHalts++;
      // Status names it: an operator sees why the node stopped.
      const status = node.replica!.status();
      if ((side.kind === "primary" && (side.primary.status().diskFailure ?? side.primary.status().logFailure) !== null) || (side.kind === "secondary" && (side.failure !== null || side.secondary.applier.status().halted !== null))) {
        if (status.reason === null || !["stalled", "primary", "diverged", "inconsistent"].includes(status.state)) fail("status", `${node.name} failed (${why}), but its status says ${status.state}: ${status.reason}`);
      }
      log(`${node.name} failed: ${why} (status ${status.state}: ${status.reason})`);
    }
    if (clock.ticks >= node.failing.restartAt) await operatorRestart(node, why);
  }

  async function operatorRestart(node: SimNode, why: string): Promise<void> {
    log(`RESTART ${node.name} (operator): ${why}`);
    stats.operatorRestarts++;
    kill(node);
    await restart(node);
  }

  async function restart(node: SimNode): Promise<void> {
    const roleBefore = await roleOf(node);
    node.downUntil = null;
    const failedOver = failover.done && node.name === failover.old;
    // Planted "no-fence": the old primary comes back without its peer, so nothing stops it.
    await start(node, !(failedOver && plant === "no-fence"));
    if (failedOver) {
      stats.oldPrimaryReturns++;
      const role = node.replica!.role;
      if (role === "diverged") stats.diverged++;
      if (role === "secondary") stats.rejoined++;
      log(`old primary ${node.name} returned as ${role}`);
      // The operator repairs it a while later (docs/replication.md §11).
      // Left diverged ("none"), it pins the new primary's log from the fork; with a third node
      // following, that primary stays in overflow and a copy read in overflow never becomes
      // consistent: the operator repairs it at the end then.
      if (role === "diverged" && !repairDue.has(node.name) && (repair !== "none" || threeNodes)) {
        repairDue.set(node.name, { at: repair === "none" ? Number.MAX_SAFE_INTEGER : clock.ticks + f.int(300), full: repair === "resync --full" });
      }
    }
    if (roleBefore === "primary" && node.replica!.role === "primary") checkDisk(node, `${node.name} recovered`);
  }

  async function roleOf(node: SimNode): Promise<string | null> {
    // The harness's own look: no injected error (and no draw from the fault streams).
    const rate = node.files.eioRate;
    node.files.eioRate = 0;
    try {
      const saved = await settle(clock, readRole(node.files.directory(`/sim/${node.name}`)));
      return saved?.role ?? (node.name === "a" ? "primary" : "secondary");
    } finally {
      node.files.eioRate = rate;
    }
  }

  const failover = { done: false, old: "" };

  async function handover(): Promise<void> {
    const primary = writer();
    if (primary === null || primary.name !== "a" && primary.name !== "b") return;
    const next = byName(primary.peer!);
    if (next.replica === null || linkDown.has(linkKey(primary.name, next.name))) return;
    log(`HANDOVER ${primary.name} → ${next.name}: demote`);
    let demoted = true;
    let failed = false;
    await settle(clock, primary.replica!.demote()).catch((error: Error) => {
      demoted = false;
      if (IO_ERROR.test(error.message)) failed = true;
      if (failed) roleChangeFailed(primary, "demote", error);
      else log(`demote refused: ${error.message}`);
    });
    // A demote an I/O error broke off: the operator restarts the node, and goes on with the
    // handover if it comes back a secondary (its role saved), as it would by hand.
    if (failed) await operatorRestart(primary, "its demote failed");
    if ((!demoted && !failed) || primary.replica?.role !== "secondary") return;
    incarnation++;
    inFlight = 0;
    // A promote an I/O error broke off is tried again after a restart of the node, once its
    // replay has caught up again (it may be refused meanwhile: not drained); else no node is
    // primary. Without an I/O error a refusal ends the handover, as before.
    let broken = false;
    for (let attempt = 0; attempt < 6 && next.replica?.role !== "primary"; attempt++) {
      if (attempt > 0) {
        if (next.replica?.role === "secondary") await operatorRestart(next, "its promote failed");
        await drained(next, 3000);
      }
      if (next.replica?.role !== "secondary") break;
      let again = false;
      await settle(clock, next.replica.promote(false)).catch((error: Error) => {
        if (IO_ERROR.test(error.message)) {
          broken = true;
          roleChangeFailed(next, "promote", error);
        } else log(`promote refused: ${error.message}`);
        again = broken;
      });
      if (!again) break;
    }
    if (next.replica?.role !== "primary") {
      // The handover cannot finish (the new primary refused: it cannot tell it has the whole
      // log): the operator makes the demoted node, which has every write, primary again.
      if (primary.replica?.role === "secondary") await undoHandover(primary);
      return;
    }
    stats.handovers++;
    promoted(next);
    primary.model = null;
    // No write lost: the new primary's disk is the old one's.
    const i = firstDifference(next.disk.current, primary.disk.current);
    if (i >= 0) fail("handover", `after the handover ${next.name} differs from ${primary.name} at byte ${i}`);
    checkDisk(next, `handover to ${next.name}`);
    next.reported = { seq: 0, generation: 0 };
    primary.reported = { seq: 0, generation: 0 };
    log(`handover done: ${next.name} primary`);
    // The third node followed the old primary, which drained it: it continues the new one's log.
    const third = nodes.find((n) => n !== primary && n !== next);
    if (third !== undefined && plant !== "no-repoint") await repoint(third, next.name);
  }

  // ---- the operator: repairs (resync), re-pointing, promote attempts ----
  const repairDue = new Map<string, { at: number; full: boolean }>();
  const repaired = new Set<string>();
  const repointed = new Set<string>();
  const replacedNodes = new Set<string>();
  /** I/O errors of replaced disks (for the stats). */
  const retired = { disk: 0, files: 0 };

  /** `dstd replica resync [--full]` on `node`; a fork repair it refuses is tried again with --full. */
  async function resync(node: SimNode, full: boolean, why: string): Promise<void> {
    log(`RESYNC${full ? " --full" : ""} ${node.name} (${why})`);
    if (!full) repairing.add(node.name);
    let started = true;
    await settle(clock, node.replica!.resync(full)).catch((error: Error) => {
      started = false;
      log(`resync refused: ${error.message}`);
    });
    if (!started) {
      if (!full && node.replica?.role === "diverged") repairDue.set(node.name, { at: clock.ticks + 20, full: true });
      return;
    }
    if (full) stats.fullResyncs++;
    else stats.forkRepairs++;
    repaired.add(node.name);
  }

  /** What an operator does on seeing the nodes' states (only where the peer is the primary and reachable). */
  async function tend(final: boolean): Promise<void> {
    for (const node of nodes) {
      const side = sideOf(node);
      if (side === null || node.peer === null) continue;
      const peer = byName(node.peer);
      if (peer !== writer() || linkDown.has(linkKey(node.name, peer.name))) continue;
      const due = repairDue.get(node.name);
      if (side.kind === "diverged" && due !== undefined && (final || clock.ticks >= due.at)) {
        repairDue.delete(node.name);
        await resync(node, due.full, "the old primary came back diverged");
      } else if (side.kind === "syncing" && side.sync.status().phase === "failed") {
        await resync(node, true, `its sync failed: ${side.sync.status().reason}`);
      } else if (side.kind === "secondary" && side.catchingUp === null && ((threeNodes && (repointed.size > 0 || failover.done)) || replacedNodes.has(node.name) || handoverUndone) && ["released", "diverged"].includes(side.shipper.status().state)) {
        // Three nodes after a role change: the re-pointed node is behind the new primary's log, or
        // ahead of it (records the old primary wrote that the new one never had); or the old
        // primary comes second to a log the re-pointed node's first FETCH let go (the promotion
        // keeps it for the first secondary that fetches, docs/replication.md §11). A consistent
        // secondary then waits for the operator: a full copy (a secondary has no fork to repair).
        // Likewise a replaced secondary: it keeps its name, so the primary's registration is its
        // predecessor's position and the log may be released past what the new disk applied.
        // Likewise after a handover undone (`undoHandover`): the old primary's new generation is
        // ahead of what a third node holds. (A promotion an I/O error broke off once its
        // generation's MARK was logged is no reason any more: the node, a secondary again, cuts
        // that MARK when it opens — replication/secondary.ts; seeds 550, 1221, 1224 stopped
        // released or diverged before, docs/replication.md §8.2, §11.)
        stats.stoppedSecondaries++;
        await resync(node, true, `following ${peer.name}: ${side.shipper.status().state}: ${side.shipper.status().reason}`);
      }
    }
  }

  /** A syncing or catching-up secondary is never promoted, planned or forced (docs/replication.md §10.1). */
  async function tryPromoteInconsistent(): Promise<void> {
    for (const node of nodes) {
      if (!inconsistentSync(node) || !f.chance(0.05)) continue;
      const force = f.chance(0.3);
      let promoted = false;
      await settle(clock, node.replica!.promote(force)).then(
        () => (promoted = true),
        (error: Error) => {
          stats.refusedPromotes++;
          log(`promote${force ? " --force" : ""} of ${node.name} while syncing refused: ${error.message}`);
        },
      );
      if (promoted) fail("inconsistent never promoted", `${node.name} was promoted${force ? " (--force)" : ""} while its sync had not made it consistent`);
    }
  }

  /** After a three-node failover the third node is pointed at the new primary (the operator's config change and restart). */
  async function repoint(node: SimNode, to: string): Promise<void> {
    node.peer = to;
    repointed.add(node.name);
    stats.repointed++;
    log(`REPOINT ${node.name} at ${to}`);
    const replica = node.replica;
    if (replica === null) return; // it starts with the new peer
    node.replica = null;
    node.bound = null;
    node.epoch++;
    // A close that fails an I/O leaves the process to exit anyway: its page caches outlive it.
    await settle(clock, replica.close()).catch((error: Error) => {
      roleChangeFailed(node, "close", error);
      kill(node);
    });
    await start(node);
  }

  /**
   * `promote --force` of a demoted node whose handover could not finish (a restart between tries
   * if an I/O error broke it off); the fourth try without errors (the operator looked at the
   * disk, as `start` does): after four failed tries it gave up, leaving two secondaries and no
   * primary (seed 52883).
   */
  async function undoHandover(node: SimNode): Promise<void> {
    for (let attempt = 0; attempt < 4 && node.replica?.role === "secondary"; attempt++) {
      if (attempt > 0) await operatorRestart(node, "its promote --force failed");
      if (node.replica?.role !== "secondary") break;
      log(`UNDO HANDOVER: promote --force ${node.name}`);
      if (attempt === 3) setRates(node, false);
      try {
        await settle(clock, node.replica.promote(true)).catch((error: Error) => roleChangeFailed(node, "promote --force", error));
      } finally {
        setRates(node, errorsOn);
      }
    }
    if (node.replica?.role !== "primary") return;
    handoverUndone = true;
    promoted(node);
    checkDisk(node, `${node.name} primary again`);
    node.reported = { seq: 0, generation: 0 };
  }

  /** Runs the clock until `node` has applied all its copy holds, consistent (or `limit` ticks pass, or it stalls). */
  async function drained(node: SimNode, limit: number): Promise<void> {
    const until = clock.ticks + limit;
    while (clock.ticks < until) {
      const side = sideOf(node);
      if (side?.kind !== "secondary" || side.failure !== null) return;
      const s = side.secondary.applier.status();
      if (s.halted !== null || (s.consistent && s.applied.seq >= side.secondary.copy.last.seq && side.shipper.status().state !== "retrying")) return;
      clock.runUntil(clock.ticks + 1);
      for (let i = 0; i < 2; i++) await null;
    }
  }

  /** A handover was undone (the operator's resync --full may follow: `tend`). */
  let handoverUndone = false;

  /** A role change (or close) refused over an injected I/O error; anything else fails the seed. */
  function roleChangeFailed(node: SimNode, what: string, error: Error): void {
    if (error instanceof SimFailure) throw error;
    if ((node.disk.failures === 0 && node.files.stats.eio === 0) || !IO_ERROR.test(error.message)) fail("errors", `${what} on ${node.name} failed: ${error.message}`);
    stats.failedRoleChanges++;
    log(`${what} on ${node.name} failed: ${error.message}`);
  }

  /** A secondary's machine replaced: it comes back with an empty disk and log directory. */
  function replace(node: SimNode): void {
    crash(node);
    const synchronous = node.disk.synchronousCompletions;
    retired.disk += node.disk.failures;
    retired.files += node.files.stats.eio;
    node.files = new SimDisk(clock, prng.files, { latency: [0, 2], eioRate: node.eio.files, faults: prng.fileFaults });
    node.disk = new SimDiskPort(diskSize, clock, prng.port, synchronous, { prng: prng.disk, eioRate: node.eio.disk });
    node.reported = { seq: 0, generation: 0 };
    node.model = null;
    stats.replaced++;
    replacedNodes.add(node.name);
    log(`REPLACE ${node.name}: an empty disk`);
  }

  async function forceFailover(): Promise<void> {
    const primary = writer();
    if (primary === null) return;
    const next = byName(primary.peer!);
    // Only a consistent secondary can take over (a syncing one refuses: tryPromoteInconsistent).
    // An applier in the middle of a resync holds regions half copied (regions need not be whole
    // blocks): a failover then adopts torn blocks, which the workload's model cannot tell from
    // corruption — the operator waits until status says consistent.
    if (next.replica === null || next.replica.role !== "secondary" || inconsistentSync(next) || applier(next)?.status().consistent !== true) return;
    if (f.chance(0.5)) {
      // A clean failover: the secondary has applied the whole log when the primary dies, so the
      // old primary's log is a prefix of the new one's and it may come back as a secondary.
      holdWrites = true;
      const layer = (primary.replica!["side"] as { primary: import("../../src/replication/primary.ts").ReplicationPrimary }).primary;
      const until = clock.ticks + 5000;
      // Clean also means consistent: a secondary between RESYNC_BEGIN and RESYNC_END has the
      // whole log so far but not yet every region written around it (seed 5151).
      const caughtUp = () => {
        const s = applier(next)?.status();
        return s !== undefined && s.applied.seq >= layer.store.last.seq && s.consistent && layer.status().mode === "logging" && !layer.status().resyncPending;
      };
      while (clock.ticks < until && (inFlight > 0 || !caughtUp())) {
        clock.runUntil(clock.ticks + 1);
        for (let i = 0; i < 2; i++) await null;
      }
      holdWrites = false;
      log(`clean failover: ${next.name} applied ${applier(next)?.status().applied.seq} of ${layer.store.last.seq}`);
      // Meanwhile it may have entered a resync (RESYNC_BEGIN applied): wait for consistency again.
      if (applier(next)?.status().consistent !== true || inconsistentSync(next)) return;
    }
    crash(primary);
    primary.downUntil = clock.ticks + 200 + f.int(400);
    log(`FAILOVER: ${primary.name} down, promote --force ${next.name}`);
    // The drain before the promotion may still apply a RESYNC_BEGIN and some copies: then the
    // promotion says the disk was inconsistent, and only then may blocks be half copied.
    let said = "";
    let syncing = false;
    await settle(clock, next.replica.promote(true)).then(
      (message) => void (said = message),
      // Released just before, its switch to a full sync ran first in the node's turn: it refuses
      // the promotion (it holds no consistent state), and there is no failover (seed 65734).
      (error: Error) => (syncing = inconsistentSync(next) && error.message.includes("its initial sync has not finished")) || roleChangeFailed(next, "promote --force", error),
    );
    if (syncing) return log(`FAILOVER refused: ${next.name} is syncing`);
    if (said === "") {
      // Broken off by an I/O error: the operator restarts the node. Its promotion may have gone
      // far enough (its role saved) that it comes back primary; else the failover is tried again.
      // Whether its disk was consistent is then what it was before (the drain applies no resync
      // the checker could not see: a half-copied block is what adopt allows then).
      const wasConsistent = applier(next)?.status().consistent === true;
      kill(next);
      await start(next);
      if ((next.replica as ReplicaNode | null)?.role !== "primary") return;
      said = wasConsistent ? "" : "the disk was inconsistent";
    }
    const consistent = !said.includes("the disk was inconsistent");
    if ((next.replica as ReplicaNode | null)?.role !== "primary") fail("failover", `${next.name} did not become primary`);
    stats.failovers++;
    failover.done = true;
    failover.old = primary.name;
    incarnation++;
    inFlight = 0;
    promoted(next);
    adopt(next, !consistent);
    if (!consistent) stats.inconsistentPromotions++;
    next.reported = { seq: 0, generation: 0 };
    if (threeNodes) {
      stats.threeNodeFailovers++;
      // The third node followed the old primary. Planted "no-repoint": it is left pointing there.
      const third = nodes.find((n) => n !== primary && n !== next)!;
      if (plant !== "no-repoint") await repoint(third, next.name);
    }
  }

  // ---- run ----
  for (const node of nodes) {
    if (scenario === "join" && node.name === "c") continue; // joins later: an initial sync
    await start(node);
  }
  const joinAt = scenario === "join" ? Math.floor(opsTotal * (0.2 + f.float() * 0.5)) : -1;
  let replacedOne = false;
  const handoverAt = scenario === "handover" ? Math.floor(opsTotal * (0.3 + f.float() * 0.4)) : -1;
  const failoverAt = scenario === "failover" ? Math.floor(opsTotal * (0.3 + f.float() * 0.4)) : -1;
  let steps = 0;
  let scribbled = false;
  let handoverTries = 0;
  function handoverDue(): boolean {
    return handoverAt >= 0 && submitted >= handoverAt && stats.handovers === 0 && handoverTries < 3;
  }
  while (submitted < opsTotal || inFlight > 0) {
    if (++steps > 100_000) fail("liveness", `workload stuck: ${submitted}/${opsTotal} submitted, ${inFlight} in flight`);
    submit();
    if (handoverDue() && inFlight === 0) {
      handoverTries++;
      await handover();
    }
    if (submitted >= failoverAt && failoverAt >= 0 && !failover.done) await forceFailover();
    if (joinAt >= 0 && submitted >= joinAt && stats.joined === 0) {
      stats.joined++;
      log(`JOIN c (an empty disk)`);
      await start(byName("c"));
    }
    if (replaceAt >= 0 && !replacedOne && submitted >= opsTotal * replaceAt) {
      const victim = nodes.find((n) => n.name !== "a" && sideOf(n)?.kind === "secondary" && n.name !== failover.old);
      if (victim !== undefined) {
        replacedOne = true;
        replace(victim);
      }
    }
    await tend(false);
    await tryPromoteInconsistent();
    for (const node of nodes) {
      if (node.replica !== null && f.chance(crashRate) && !(failover.done && writer() === null)) crash(node);
      if (node.replica === null && node.downUntil !== null && clock.ticks >= node.downUntil) {
        // The old primary returns only once its peer is up and can answer: a node cannot tell
        // a dead peer from a partition (docs/replication.md §11), so an operator brings it back then.
        if (failover.done && node.name === failover.old) {
          if (byName(node.peer!).replica === null) continue;
          linkDown.delete(linkKey(node.name, node.peer!));
        }
        await restart(node);
      }
    }
    for (const node of nodes) if (failing(node)) await operate(node);
    if (f.chance(cutRate)) {
      const [x, y] = [NAMES[f.int(count)]!, NAMES[f.int(count)]!];
      if (x !== y && !linkDown.has(linkKey(x, y))) {
        const key = linkKey(x, y);
        linkDown.add(key);
        stats.cuts++;
        log(`CUT ${key}`);
        clock.after(10 + f.int(300), () => linkDown.delete(key));
      }
    }
    if (plant === "scribble" && !scribbled && submitted > opsTotal / 2) {
      const victim = nodes.find((n) => n.replica?.role === "secondary");
      if (victim !== undefined) {
        scribbled = true;
        const at = f.int(diskSize);
        victim.disk.current[at]! ^= 0xff;
        victim.disk.durable[at]! ^= 0xff;
        log(`SCRIBBLE ${victim.name} byte ${at}`);
      }
    }
    singleWriter("step");
    clock.runUntil(clock.ticks + 1);
    for (let i = 0; i < 2; i++) await null;
  }

  // ---- convergence: faults off, everything healed and restarted ----
  linkDown.clear();
  errorsOn = false;
  for (const node of nodes) setRates(node, false);
  stats.diskErrors = nodes.reduce((n, node) => n + node.disk.failures, retired.disk);
  stats.fileErrors = nodes.reduce((n, node) => n + node.files.stats.eio, retired.files);
  // What still fails is restarted now (the operator's last round), the primary first.
  for (const node of nodes) {
    const why = node.replica === null ? null : failureOf(node);
    if (why !== null) await operatorRestart(node, why);
  }
  for (const node of [...nodes].sort((x, y) => Number(x.name === failover.old) - Number(y.name === failover.old))) if (node.replica === null) await restart(node);
  const primary = writer();
  if (primary === null) fail("convergence", "no node takes writes at the end");
  await settle(clock, new Promise<void>((resolve) => primary!.bound!.port.flush(() => resolve())));
  await tend(true);
  // Every secondary follows the primary (a third node is re-pointed after a handover or failover),
  // or its replication silently stopped.
  const strays = nodes.filter((n) => n !== primary && n.replica!.role === "secondary" && n.peer !== primary!.name);
  if (strays.length > 0) fail("followers", `${strays.map((n) => `${n.name} follows ${n.peer}`).join(", ")}, not the primary ${primary!.name}: their replication stopped`);
  const followers = nodes.filter((n) => n !== primary && n.replica!.role === "secondary");
  const deadline = clock.ticks + 100_000;
  const primaryLayer = () => (primary!.replica!["side"] as { primary: import("../../src/replication/primary.ts").ReplicationPrimary }).primary;
  const layer = () => primaryLayer().status();
  const last = () => layer().last;
  for (;;) {
    const p = layer();
    const settled = p.durable === p.last && p.mode === "logging" && !p.resyncPending && p.inFlight === 0;
    const behind = followers.filter((n) => {
      const a = applier(n);
      if (a === null || inconsistentSync(n)) return true;
      const s = a.status();
      // The same seq is not the same record: a re-pointed node that applied the old primary's
      // records after the fork can stand at the new primary's last seq with other contents,
      // until its next FETCH finds the fork (seed 431584).
      return s.applied.seq !== p.last || !s.consistent || s.applied.chain !== primaryLayer().store.durable.chain;
    });
    // No follower (the old primary diverged): nothing to converge; the log is kept for it.
    if (followers.length === 0 || (behind.length === 0 && settled)) break;
    if (clock.ticks > deadline) {
      const n = behind[0];
      const s = n?.replica!.status();
      const p = layer();
      const side = n?.replica?.["side"] as { shipper?: { status(): unknown }; secondary?: { copy: { last: ChainPoint; durable: ChainPoint } } } | undefined;
      log(`stuck: shipper ${JSON.stringify(side?.shipper?.status())} applier ${JSON.stringify(n === undefined ? null : applier(n)?.status(), (_k, v) => (typeof v === "bigint" ? v.toString(16) : v))} copy ${side?.secondary?.copy.last.seq}/${side?.secondary?.copy.durable.seq}`);
      fail("convergence", `${n?.name} at seq ${s?.seq} (${s?.state}: ${s?.reason}) while ${primary!.name} is at seq ${last()} (mode ${p.mode}, resync ${p.resyncPending}, log ${p.logBytes}/${p.logLimit}, checkpoint ${p.checkpoint}, secondaries ${JSON.stringify(p.secondaries)})`);
    }
    await tend(true);
    for (const node of nodes) if (failing(node)) await operate(node);
    clock.runUntil(clock.ticks + 1);
    for (let i = 0; i < 4; i++) await null;
  }
  for (const n of followers) {
    const i = firstDifference(primary!.disk.current, n.disk.current);
    // After resync the repaired node equals the primary once its lag is 0 (docs/replication.md §11).
    if (i >= 0) fail(repaired.has(n.name) ? "resync" : "convergence", `${n.name} differs from the primary ${primary!.name} at byte ${i} with lag 0${repaired.has(n.name) ? " after its resync" : ""}`);
    if (repaired.has(n.name)) stats.repairedConverged++;
  }
  if (followers.length > 0) stats.converged++;
  for (const node of nodes) await settle(clock, node.replica!.close());
  return stats;
}
