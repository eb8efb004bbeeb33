/**
 * @module daemon/replica-node — composition of one replicated export (docs/replication.md
 * §10–§12) and its role changes. A node is, for the export, one of:
 * - primary: the replication layer over the disk (writes logged) and the FETCH server;
 * - secondary: the log copy + applier over the disk, the shipper fetching from the peer, the
 *   disk served read-only;
 * - diverged: its log forked from the peer's (an old primary after a failover): the disk is
 *   served read-only and nothing is replicated until an operator acts (demote, resync).
 *
 * The role is kept in the log directory (replication/role-file.ts); the configured role is
 * that of a new directory. A primary with a `peer` asks it at start whether it is a primary
 * already (fencing): if the peer's log continues ours, we start as its secondary; if it forked,
 * as diverged — never as a second primary. An unreachable peer cannot answer: we start as
 * primary (the risk MARS has too), and say so in the log.
 *
 * - syncing: a secondary copying its primary's disk (initial sync; `resync` of a diverged old
 *   primary), then a secondary replaying the log from the sync point (replication/initial-sync.ts).
 *
 * `promote --force`: fetching stops, the applier finishes what the copy holds, the copy goes,
 * and a primary log continues from the last applied record in a new generation (a MARK record
 * of that generation is durable before the first write is accepted). `demote`: the export
 * stops taking writes, the primary layer drains and closes, the applied position is set to its
 * last record, and the node fetches from its peer.
 *
 * Time, the link to the peer and the log options come from a `ReplicaEnv`: real timers and a
 * DST client (PeerLink) in dstd, simulated ones in the cluster simulation
 * (test/replication/cluster-sim.ts), which thus runs this very logic.
 */
import type { ExportConfig } from "../config/types.ts";
import { formatExportUrl } from "../lib/address.ts";
import { Errno } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import type { StoragePort } from "../storage/port.ts";
import { PassThrough } from "../storage/layers/pass-through.ts";
import { lockLogDirectory } from "../storage/local/lock.ts";
import { files, openLogDirectory, type LogDirectory } from "../replication/files.ts";
import { Applier, APPLIER_STATE_FILE } from "../replication/applier.ts";
import { ReplicationPrimary } from "../replication/primary.ts";
import { RecordFlag, RecordOp } from "../replication/record.ts";
import { readRole, saveRole, type Role } from "../replication/role-file.ts";
import { Secondary } from "../replication/secondary.ts";
import { AWAITING_FIRST_SECONDARY, LogShipServer } from "../replication/ship-server.ts";
import { Shipper } from "../replication/shipper.ts";
import { finishSync, InitialSync, readSyncState } from "../replication/initial-sync.ts";
import { productionEnv, type ReplicaEnv, type ReplicaLink } from "./replica-env.ts";
import type { PrimaryOptions } from "../replication/primary-types.ts";
import { planForkRepair, type SyncPlan } from "./replica-resync.ts";
import { fence, probePeer, type FenceEnv } from "./replica-fence.ts";
import { clearForPrimary, drain, drainedForHandover, drainSecondaries, keepForPeer, quiesce, writeApplied } from "./replica-handover.ts";
import type { LogSource } from "../export/fetch.ts";
import { replicaStatusOf, type ReplicaStatus, type StatusSample } from "./replica-status.ts";
import { restartDelayMs, STABLE_MS } from "./supervisor.ts";

export type PauseWhat = "fetch" | "replay" | "both";

/** How the export serves what the replica decides: its port, its log (primary), read-only or not. */
export type ExportBinder = (port: StoragePort, log: LogSource | undefined, readOnly: boolean) => void;

export interface ReplicaHandle {
  readonly name: string;
  readonly role: Role;
  readonly port: StoragePort;
  readonly log: LogSource | undefined;
  /** Why its primary refuses writes until it is opened again, or null: `dstd up` restarts the export group then (daemon/services.ts). */
  readonly failedClosed: string | null;
  status(): ReplicaStatus;
  pause(what: PauseWhat): string;
  resume(what: PauseWhat): string;
  promote(force: boolean): Promise<string>;
  demote(): Promise<string>;
  resync(full: boolean): Promise<string>;
  close(): Promise<void>;
}

/** The disk lent to a replication layer: closing the layer leaves the disk open (roles change). */
class Borrowed extends PassThrough {
  override close(): Promise<void> {
    return Promise.resolve();
  }
}

type SecondarySide = Extract<Side, { kind: "secondary" }>;

/** After a sync's copy: consistent once the log is applied through `end`. */
type CatchingUp = { point: number; end: number; moved: number; total: number };

type Side =
  | { kind: "primary"; primary: ReplicationPrimary; server: LogShipServer }
  | { kind: "secondary"; secondary: Secondary; shipper: Shipper; link: ReplicaLink; samples: StatusSample[]; catchingUp: CatchingUp | null; failure: string | null }
  | { kind: "syncing"; sync: InitialSync; link: ReplicaLink; paused: boolean; failure: string | null }
  | { kind: "diverged"; reason: string; generation: number };

/** Opens the replication of `config` over its disk; `bind` is called whenever what the export serves changes. */
export async function openReplica(config: ExportConfig, disk: StoragePort, log: Log, bind: ExportBinder): Promise<ReplicaHandle> {
  const dir = openLogDirectory(config.replication!.logDir);
  const release = lockLogDirectory(dir.path); // one export per log_dir, let go when it closes
  const node = new ReplicaNode(config, disk, dir, log, bind, productionEnv(config, log), release);
  await node.start().catch((error: unknown) => (release(), Promise.reject(error)));
  return node;
}

export class ReplicaNode implements ReplicaHandle {
  private side: Side = { kind: "diverged", reason: "starting", generation: 0 };
  readonly name: string;

  constructor(
    private readonly config: ExportConfig,
    private readonly disk: StoragePort,
    private readonly dir: LogDirectory,
    private readonly logger: Log,
    private readonly bind: ExportBinder,
    private readonly env: ReplicaEnv,
    private release: () => void = () => {},
  ) {
    this.name = config.name;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.env.timer.after(ms, resolve));
  }

  /**
   * Role changes and the background reopens of a failed side each take the log directory and
   * its files; one at a time, in order. A reopen due during a promote opened a secondary over
   * the directory the promote was making a primary's, and removed its log (cluster simulation
   * seed 60056, docs/replication.md §8.2). Each re-checks, once it runs, that its side is current.
   */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private exclusive<T>(run: () => Promise<T>): Promise<T> {
    const turn = this.queue.then(run, run);
    this.queue = turn.catch(() => {});
    return turn;
  }

  private fenceEnv(): FenceEnv {
    return { env: this.env, peer: formatExportUrl(this.replication.peer!), name: this.name, logger: this.logger };
  }

  private primaryOptions(): PrimaryOptions {
    return { logLimit: this.replication.logSize, log: this.logger, ...this.env.primaryOptions };
  }

  private get replication() {
    return this.config.replication!;
  }

  get role(): Role {
    return this.side.kind === "syncing" ? "secondary" : this.side.kind;
  }

  get port(): StoragePort {
    return this.side.kind === "primary" ? this.side.primary : this.disk;
  }

  get log(): LogSource | undefined {
    return this.side.kind === "primary" ? this.side.server : undefined;
  }

  /** Why this node's primary refuses writes until it is opened again (ReplicationPrimary.failedClosed), or null. */
  get failedClosed(): string | null {
    return this.side.kind === "primary" ? this.side.primary.failedClosed : null;
  }

  async start(): Promise<void> {
    const saved = await readRole(this.dir);
    const role = saved?.role ?? this.replication.role;
    if (saved !== null && saved.role !== this.replication.role) {
      this.logger.warn(`export '${this.name}': the log directory says ${saved.role} (${saved.reason ?? "a role change"}); the config's role ${this.replication.role} applies only to a new log directory`);
    }
    if (role === "diverged") return this.become({ kind: "diverged", reason: saved?.reason ?? "diverged", generation: saved?.generation ?? 0 });
    if (role === "secondary") return this.become(await this.openSecondary());
    const side = await this.openPrimary();
    if (this.replication.peer === null) return this.become(side);
    const fenced = await fence(side.primary, this.fenceEnv());
    if (fenced === null) return this.become(side);
    await side.primary.close();
    if (fenced === "secondary") {
      await writeApplied(this.dir, this.disk, side.primary);
      await saveRole(this.dir, { role: "secondary", generation: side.primary.status().generation, reason: "the peer is primary and our log is a prefix of its log" });
      return this.become(await this.openSecondary());
    }
    await saveRole(this.dir, { role: "diverged", generation: side.primary.status().generation, reason: fenced });
    return this.become({ kind: "diverged", reason: fenced, generation: side.primary.status().generation });
  }

  // ---- sides ------------------------------------------------------------------------------

  private async openPrimary(): Promise<Extract<Side, { kind: "primary" }>> {
    const primary = await ReplicationPrimary.open(new Borrowed(this.disk), this.dir, this.primaryOptions());
    const server = new LogShipServer(primary, this.env.timer, { log: this.logger });
    const s = primary.status();
    if (Object.keys(s.secondaries).length === 0 && primary.store.first <= 1) {
      // A new log: keep it for the first secondary, whenever it comes.
      const why = primary.addSecondary(AWAITING_FIRST_SECONDARY, 0);
      if (why !== null) this.logger.warn(`export '${this.name}': ${why}`);
    }
    this.logger.info(`export '${this.name}': replication primary, log ${this.replication.logDir} (seq ${s.last}, generation ${s.generation})`);
    return { kind: "primary", primary, server };
  }

  private async openSecondary(): Promise<Extract<Side, { kind: "secondary" | "syncing" }>> {
    const peer = this.replication.peer;
    if (peer === null) throw new DstdError("E_USAGE", `export '${this.name}' is a secondary but has no peer = "dst://HOST:PORT/NAME" in [export.replication]`);
    const synced = await readSyncState(this.dir);
    if (synced?.phase === "copying") return this.openSyncing({ from: null, ranges: null, why: synced.why });
    // A sync begun (the role says so) but not recorded before a crash: the disk holds what it
    // held before (an old primary's writes) and no applied position says so — replaying the
    // log from seq 1 over it served a mixed disk as consistent (cluster simulation, §8.2).
    // Start over with a full copy; once the sync's state is recorded it speaks instead.
    const role = await readRole(this.dir);
    if (role?.syncing === true && synced === null) return this.openSyncing({ from: null, ranges: null, why: `resync --full (${role.reason ?? "a sync"} was interrupted before it began)` });
    if (role?.syncing === true) await saveRole(this.dir, { ...role, syncing: false });
    const catchingUp = synced === null ? null : { point: synced.point.seq, end: synced.end, moved: synced.moved, total: synced.done };
    let opened: SecondarySide | null = null;
    const secondary = await Secondary.open(this.disk, this.dir, {
      ...this.env.secondaryOptions,
      clock: { now: () => this.env.wallMicros(), after: (ms, run) => this.env.timer.after(ms, run) },
      replayDelayMs: this.replication.replayDelayMs,
      log: this.logger,
      onFailed: (reason) => void (opened !== null && this.reopen(opened, reason)),
    });
    const link = this.env.link("retry");
    const side: SecondarySide = { kind: "secondary", secondary, shipper: null as unknown as Shipper, link, samples: [], catchingUp, failure: null };
    side.shipper = new Shipper(secondary, link.transport, this.env.timer, {
      log: this.logger,
      zstd: this.replication.compress,
      bandwidth: this.replication.bandwidth,
      // A new secondary (nothing applied) or one still inconsistent after a sync: the primary
      // no longer has its log from there, so copy the disk (a consistent secondary waits for
      // an operator: resync --full would make it inconsistent for the copy's duration).
      onStopped: (state) => {
        if (state === "released" && this.side === side && (secondary.applier.status().applied.seq === 0 || side.catchingUp !== null)) {
          void this.exclusive(async () => this.side === side && !this.closed && (await this.switchToSync({ from: null, ranges: null, why: "initial sync" }))).catch((e: Error) => this.logger.error(`export '${this.name}': ${e.message}`));
        }
      },
    });
    const consistent = () => {
      const a = secondary.applier.status();
      if (side.catchingUp === null || a.applied.seq < side.catchingUp.end || !a.consistent) return;
      side.catchingUp = null;
      this.logger.info(`export '${this.name}': initial sync complete: consistent at seq ${a.applied.seq}`);
      void finishSync(this.dir).catch((e: Error) => this.logger.warn(`export '${this.name}': ${e.message}`));
    };
    secondary.applier.onApplied(consistent);
    consistent();
    opened = side;
    if (secondary.failure !== null) void this.reopen(side, secondary.failure);
    else side.shipper.start();
    this.logger.info(`export '${this.name}': replication secondary of ${formatExportUrl(peer)}, applied through seq ${secondary.applier.status().applied.seq}`);
    return side;
  }

  /**
   * The secondary's copy or replay failed an I/O (Secondary `onFailed`): fetching stops, and the
   * secondary is closed and opened again — recovery cuts what was not durable and replay goes
   * on from its saved position, as after a crash (docs/replication.md §6) — after 1 s, then
   * every 2, 4 … 60 s while opening fails. Until then its status is stalled, naming the failure.
   */
  private async reopen(side: SecondarySide, reason: string): Promise<void> {
    if (side.failure !== null) return;
    side.shipper.stop();
    side.link.close();
    // Checked after each wait: a failure found while opening comes before the side is served.
    for (let wait = 1000; ; wait = Math.min(wait * 2, 60_000)) {
      side.failure = `${reason}; opening the secondary again in ${wait / 1000} s`;
      this.logger.error(`export '${this.name}': ${side.failure}`);
      await this.sleep(wait);
      const opened = await this.exclusive(async () => {
        if (this.side !== side || this.closed) return true;
        await side.secondary.close();
        this.become(await this.openSecondary());
        this.logger.info(`export '${this.name}': the secondary opened again after: ${reason}`);
        return true;
      }).catch((error: Error) => void (reason = `opening the secondary again failed: ${error.message}`));
      if (opened === true) return;
    }
  }

  /** Copies the primary's disk (all of it, or a fork repair's ranges), then opens the secondary; `failures`: stops in a row before (syncAgain). */
  private openSyncing(plan: SyncPlan, failures = 0, paused = false): Extract<Side, { kind: "syncing" }> {
    const link = this.env.link("retry");
    const sync = new InitialSync(this.disk, this.dir, link.sync, this.env.timer, { log: this.logger });
    const side: Extract<Side, { kind: "syncing" }> = { kind: "syncing", sync, link, paused, failure: null };
    if (paused) sync.pause(); // an operator's pause outlives a retry (syncAgain)
    const began = this.env.timer.now();
    void sync.start(plan, (error) => {
      if (this.side !== side) return;
      if (error !== null) return void this.syncAgain(side, plan, error, this.env.timer.now() - began >= STABLE_MS ? 1 : failures + 1);
      link.close();
      void sync.stop().then(() => this.openAfterSync(side));
    });
    return side;
  }

  /** The sync stopped (an I/O error here; the primary refused it: no `replica` grant yet, a released log, another size): started again
   * from its saved progress after a supervised unit's backoff (daemon/supervisor.ts), stalled naming why until then, as `reopen` does. */
  private async syncAgain(side: Extract<Side, { kind: "syncing" }>, plan: SyncPlan, reason: string, failures: number): Promise<void> {
    if (side.sync.final) {
      side.failure = `initial sync stopped: ${reason}; the fork repair cannot go on: run dstd replica resync ${this.name} --full`;
      return this.logger.error(`export '${this.name}': ${side.failure}`);
    }
    side.failure = `initial sync stopped: ${reason}; trying again in ${restartDelayMs(failures) / 1000} s`;
    this.logger.warn(`export '${this.name}': ${side.failure}`);
    await this.sleep(restartDelayMs(failures));
    await this.exclusive(async () => {
      if (this.side !== side || this.closed) return;
      side.link.close();
      await side.sync.stop();
      this.become(this.openSyncing(plan, failures, side.paused));
    }).catch((error: Error) => this.logger.error(`export '${this.name}': starting the sync again failed: ${error.message}`));
  }

  /**
   * The copy done, opens the secondary; a failed open is tried again after 1 s, then 2, 4 … 60 s, status stalled naming it, as
   * `reopen` does. It used to be logged once, leaving the node "syncing" a finished copy for good (cluster sim seed 284, §8.2).
   */
  private async openAfterSync(side: Extract<Side, { kind: "syncing" }>): Promise<void> {
    for (let wait = 1000; this.side === side; wait = Math.min(wait * 2, 60_000)) {
      try {
        return await this.exclusive(async () => void (this.side === side && !this.closed && this.become(await this.openSecondary())));
      } catch (error) {
        side.failure = `opening the secondary after the sync failed: ${(error as Error).message}; trying again in ${wait / 1000} s`;
        this.logger.error(`export '${this.name}': ${side.failure}`);
      }
      await this.sleep(wait);
    }
  }

  /** Leaves the current side for a sync (the role file says secondary first). */
  private async switchToSync(plan: SyncPlan): Promise<void> {
    const side = this.side;
    const generation = this.status().generation;
    try {
      await this.closeSide(side);
      await saveRole(this.dir, { role: "secondary", generation, reason: plan.why, syncing: true });
    } catch (error) {
      // A secondary closed for nothing: opened again (stalled, naming it, until then), it is
      // released again and retries. It stayed closed, "replicating" (cluster sim seed 10916, §8.2).
      if (side.kind === "secondary") void this.reopen(side, `switching to the sync failed: ${(error as Error).message}`);
      throw error;
    }
    this.become(this.openSyncing(plan));
  }

  private async closeSide(side: Side): Promise<void> {
    if (side.kind === "primary") await side.primary.close();
    if (side.kind === "secondary") {
      side.shipper.stop();
      side.link.close();
      await side.secondary.close();
    }
    if (side.kind === "syncing") {
      side.link.close();
      await side.sync.stop();
    }
  }

  private become(side: Side): void {
    this.side = side;
    const readOnly = this.config.readOnly || side.kind !== "primary";
    this.bind(this.port, this.log, readOnly);
  }

  // ---- operations -------------------------------------------------------------------------

  status(): ReplicaStatus {
    const side = this.side;
    const now = this.env.timer.now();
    if (side.kind === "primary") return replicaStatusOf({ name: this.name, role: "primary", primary: side.primary.status(), contacts: side.server.secondaries(), now });
    if (side.kind === "diverged") return replicaStatusOf({ name: this.name, role: "diverged", reason: side.reason, generation: side.generation });
    if (side.kind === "syncing") return replicaStatusOf({ name: this.name, role: "syncing", peer: formatExportUrl(this.replication.peer!), sync: side.sync.status(), paused: side.paused, failure: side.failure });
    return replicaStatusOf({
      name: this.name,
      role: "secondary",
      peer: formatExportUrl(this.replication.peer!),
      applier: side.secondary.applier.status(),
      copyLast: side.secondary.copy.last.seq,
      copyBytes: side.secondary.copy.bytes,
      shipper: side.shipper.status(),
      catchingUp: side.catchingUp,
      failure: side.failure,
      samples: side.samples,
      now,
    });
  }

  pause(what: PauseWhat): string {
    const side = this.side;
    if (side.kind === "syncing" && what !== "replay") {
      side.paused = true;
      side.sync.pause();
      return `export '${this.name}': the initial sync's copy paused`;
    }
    if (side.kind !== "secondary") return `export '${this.name}' is ${side.kind}: nothing to pause (pause fetching or replay on its secondary)`;
    if (what !== "replay") side.shipper.pause();
    if (what !== "fetch") side.secondary.applier.pause();
    return `export '${this.name}': ${describeWhat(what)} paused`;
  }

  resume(what: PauseWhat): string {
    const side = this.side;
    if (side.kind === "syncing" && what !== "replay") {
      side.paused = false;
      side.sync.resume();
      return `export '${this.name}': the initial sync's copy resumed`;
    }
    if (side.kind !== "secondary") return `export '${this.name}' is ${side.kind}: nothing to resume`;
    if (what !== "replay") side.shipper.resume();
    if (what !== "fetch") side.secondary.applier.resume();
    return `export '${this.name}': ${describeWhat(what)} resumed`;
  }

  /** Judged as the node is when asked, and again when its turn comes (a sync may finish meanwhile, or a promote run). */
  async promote(force: boolean): Promise<string> {
    this.refuseInconsistent();
    return await this.exclusive(() => this.promoteNow(force));
  }

  private refuseInconsistent(): void {
    const side = this.side;
    if (side.kind === "syncing" || (side.kind === "secondary" && side.catchingUp !== null)) {
      throw new DstdError("E_STATE", `export '${this.name}' is inconsistent: its initial sync has not finished (dstd replica status ${this.name}); promoting it would serve a disk that matches no state of the primary`);
    }
  }

  private async promoteNow(force: boolean): Promise<string> {
    const side = this.side;
    if (side.kind === "primary") return `export '${this.name}' is primary already (generation ${side.primary.status().generation})`;
    this.refuseInconsistent();
    if (!force) await this.checkHandover(side);
    let point = side.kind === "secondary" ? side.secondary.applier.status().applied : null;
    let generation = side.kind === "diverged" ? side.generation : 0;
    let inconsistent = false;
    if (side.kind === "secondary") {
      side.shipper.stop();
      side.link.close();
      await drain(side.secondary, this.env.timer);
      const applier = side.secondary.applier.status();
      if (applier.halted !== null && applier.recovering) {
        // Replay halted in the middle of a batch: the disk holds part of the records after the
        // applied point, so a new generation from there would be written over a mix. A restart
        // re-applies them from the saved position (docs/replication.md §6, §11; cluster
        // simulation seed 3, §8.2). Fetching stays stopped: the node needs that restart anyway.
        throw new DstdError("E_STATE", `export '${this.name}': replay halted (${applier.halted}) in the middle of records after seq ${applier.applied.seq}, part of which may be on the disk: restart the export (replay resumes from its saved position), then promote`);
      }
      point = applier.applied;
      // Between RESYNC_BEGIN and RESYNC_END (docs/replication.md §5) the disk mixes regions
      // copied from the old primary with regions not yet copied: a forced promotion serves it
      // as it is (the only copy left), and says so.
      inconsistent = !applier.consistent;
      generation = Math.max(point.generation, side.secondary.copy.generation, side.shipper.status().primaryGeneration);
      await side.secondary.close();
      // An intent whose save failed may have landed: it would keep a broken-off MARK from being cut (secondary.ts; cluster sim seed 128275).
      if (!applier.recovering) await Applier.writePosition(this.dir, { point, applyingThrough: point.seq, inResync: applier.inResync });
    }
    this.bind(this.disk, undefined, true);
    if (point === null) {
      // Diverged: this node was a primary; its own log continues in a new generation.
      const primary = await ReplicationPrimary.open(new Borrowed(this.disk), this.dir, this.primaryOptions());
      point = primary.store.last;
      generation = Math.max(generation, primary.status().generation);
      await primary.close();
    } else {
      await clearForPrimary(this.dir, point.seq);
    }
    const next = generation + 1;
    const primary = await ReplicationPrimary.open(new Borrowed(this.disk), this.dir, { ...this.primaryOptions(), base: point });
    primary.store.startGeneration(next);
    // The new generation is durable before any write is accepted.
    try {
      const errno = await new Promise<number>((resolve) => primary.store.append(RecordOp.MARK, RecordFlag.GENERATION, 0, 0, new Uint8Array(0), resolve));
      if (errno !== 0) throw new DstdError("E_IO", `promote: the new generation could not be logged (errno ${errno})`);
      await keepForPeer(primary, point.seq, (why) => this.logger.warn(`export '${this.name}': ${why}`));
      await saveRole(this.dir, { role: "primary", generation: next, reason: `promoted --force at seq ${point.seq}` });
    } catch (error) {
      await primary.close(); // broken off: a secondary again at the next open, which cuts that MARK (replication/secondary.ts)
      throw error;
    }
    await files.remove(this.dir, APPLIER_STATE_FILE).catch(() => {});
    const message = force
      ? `export '${this.name}': promoted to primary (failover) at seq ${point.seq}, generation ${next}; the old primary must not take writes: it is detected as diverged when it comes back with peer = this node` +
        (inconsistent ? `; the disk was inconsistent (a resync of regions written around the old primary's log had not finished): those regions may mix older and newer data — check the file system before use` : "")
      : `export '${this.name}': promoted to primary (handover) at seq ${point.seq}, generation ${next}; the old primary follows it as a secondary`;
    this.logger.warn(message);
    this.become({ kind: "primary", primary, server: new LogShipServer(primary, this.env.timer, { log: this.logger }) });
    return message;
  }

  /**
   * A planned promote: the primary must have stepped down (demote: it answers FETCH with "not a
   * replication primary") and everything it logged must be applied here.
   */
  private async checkHandover(side: Side): Promise<void> {
    if (side.kind !== "secondary") throw new DstdError("E_STATE", `export '${this.name}' is ${side.kind}: only promote --force makes it primary`);
    const peer = formatExportUrl(this.replication.peer!);
    const answer = await probePeer(this.env, side.secondary.wanted(), side.secondary.applier.status().applied.seq);
    if (answer.status === 0 || answer.status === Errno.ESTALE || answer.status === Errno.ENODATA) {
      throw new DstdError("E_STATE", `the primary ${peer} still serves its log: run dstd replica demote ${this.name} on it first (it drains to this node), or fail over with --force if it is gone`);
    }
    if (answer.status !== Errno.ENOTSUP) {
      throw new DstdError("E_STATE", `cannot check that the primary ${peer} stepped down (${answer.reason}): fail over with promote ${this.name} --force if it is gone`);
    }
    const notDrained = await drainedForHandover(side.secondary, side.shipper, this.env.timer);
    if (notDrained !== null) throw new DstdError("E_STATE", notDrained);
  }

  demote(): Promise<string> {
    return this.exclusive(() => this.demoteNow());
  }

  private async demoteNow(): Promise<string> {
    const side = this.side;
    if (this.replication.peer === null) throw new DstdError("E_USAGE", `export '${this.name}' has no peer in [export.replication]: a secondary of whom?`);
    if (side.kind === "secondary" || side.kind === "syncing") return `export '${this.name}' is a secondary already`;
    // No more writes; a primary keeps serving its log so its secondaries drain and report.
    // Reads go on through the layer until it closes: writes it acknowledged before their
    // write-back are read from its ack window (docs/replication.md §4), not from the disk.
    if (side.kind === "primary") this.bind(side.primary, side.server, true);
    else this.bind(this.disk, undefined, true);
    if (side.kind === "primary") {
      await quiesce(side.primary, this.env.timer);
      const behind = await drainSecondaries(side.primary, side.server, this.env.timer);
      if (behind !== null) {
        this.bind(side.primary, side.server, this.config.readOnly);
        throw new DstdError("E_STATE", `demote: ${behind}; still primary, nothing changed (try again, or stop the secondary's fetching to demote anyway with a restart)`);
      }
      // Failed closed over its disk (write-back.ts): a logged write never reached the disk, so
      // the applied position at the last record would be a lie the secondary never repairs
      // (docs/replication.md §4, §11; cluster simulation seed 133, §8.2). The restart replays it.
      const failed = side.primary.status().diskFailure;
      if (failed !== null) {
        this.bind(side.primary, side.server, this.config.readOnly);
        throw new DstdError("E_STATE", `demote: ${failed}; still primary: restart the export first, then demote`);
      }
      this.bind(this.disk, side.server, true);
      await side.primary.close();
      await writeApplied(this.dir, this.disk, side.primary);
    }
    await saveRole(this.dir, { role: "secondary", generation: side.kind === "primary" ? side.primary.status().generation : side.generation, reason: "demoted" });
    this.become(await this.openSecondary());
    const message = `export '${this.name}': demoted to secondary of ${formatExportUrl(this.replication.peer)}; its disk is served read-only`;
    this.logger.warn(message);
    return message;
  }

  /**
   * `resync` (docs/replication.md §11): a diverged old primary copies from its peer the ranges
   * written on either side since the fork and follows it; `--full` (also for a secondary)
   * copies the whole disk. Returns once the sync has started.
   */
  resync(full: boolean): Promise<string> {
    return this.exclusive(() => this.resyncNow(full));
  }

  private async resyncNow(full: boolean): Promise<string> {
    const side = this.side;
    if (this.replication.peer === null) throw new DstdError("E_USAGE", `export '${this.name}' has no peer in [export.replication]: resync from whom?`);
    if (side.kind === "primary") throw new DstdError("E_STATE", `export '${this.name}' is the primary: resync runs on a diverged old primary or a secondary, copying from its primary`);
    if (side.kind === "syncing" && side.sync.status().phase !== "failed") return `export '${this.name}': a sync is already under way (${side.sync.status().doneBytes} of ${side.sync.status().totalBytes} bytes)`;
    const peer = formatExportUrl(this.replication.peer);
    const answer = await probePeer(this.env, { seq: 0, chain: 0n, lamport: 0, generation: 0 });
    if (answer.status === Errno.ENOTSUP) throw new DstdError("E_STATE", `the peer ${peer} is not a replication primary (${answer.reason}): nothing to resync from`);
    if (answer.status !== 0 && answer.status !== Errno.ESTALE && answer.status !== Errno.ENODATA) throw new DstdError("E_STATE", `the peer ${peer} cannot be asked (${answer.reason}): resync needs its primary`);
    let plan: SyncPlan = { from: null, ranges: null, why: "resync --full" };
    if (!full) {
      if (side.kind !== "diverged") throw new DstdError("E_STATE", `export '${this.name}' is a secondary, not diverged: no fork to repair (a secondary its primary released needs resync --full)`);
      const link = this.env.link("fail");
      try {
        plan = await planForkRepair(this.dir, new Borrowed(this.disk), this.replication.logSize, link.sync, this.logger);
      } finally {
        link.close();
      }
    }
    await this.switchToSync(plan);
    const total = plan.ranges === null ? this.disk.size : plan.ranges.reduce((n, [, l]) => n + l, 0);
    const message = `export '${this.name}': ${plan.why} from ${peer} started: copying ${total} bytes, then following it as a secondary (dstd replica status ${this.name})`;
    this.logger.warn(message);
    return message;
  }

  close(): Promise<void> {
    return this.exclusive(() => this.closeNow());
  }

  private async closeNow(): Promise<void> {
    this.closed = true;
    await this.closeSide(this.side);
    const release = this.release;
    this.release = () => {};
    release();
  }
}

function describeWhat(what: PauseWhat): string {
  return what === "both" ? "fetching and replay" : what === "fetch" ? "fetching" : "replay";
}
