/**
 * @module replication/applier — a secondary's replay: reads records in order from a source
 * (its local copy of the primary's log, through replication/log-reader.ts) and applies them
 * to its disk (a StoragePort). docs/replication.md §6.
 *
 * Each batch: verify every record follows the last one applied (sequence number, chain,
 * Lamport time, generation) — the first that does not halts replay with a message naming
 * it, and nothing from it on is applied; save the intent "applying through seq N"; apply in
 * order; flush the disk; save the position (seq, chain, Lamport time, generation). After a
 * crash the applier resumes at the saved position and re-applies: replaying records again,
 * in order, is harmless. Until it has re-applied past the saved intent, the disk may hold a
 * mix of records, so it reports itself inconsistent; likewise between a RESYNC_BEGIN and a
 * RESYNC_END mark (regions the primary wrote around its log are being copied).
 *
 * `replayDelayMs` holds every record until its Lamport time (the primary's clock, µs) plus
 * the delay has passed on this node's clock: a delayed replica as an undo window. Pause and
 * resume stop and restart replay between batches; fetching goes on independently.
 *
 * Must not: apply a record past a gap or a checksum or chain failure; report a position as
 * applied before the disk was flushed; hold more than one batch of records (maxBatchBytes).
 */
import { errnoMessage } from "../lib/errno.ts";
import type { Log } from "../lib/log.ts";
import type { Done, StoragePort } from "../storage/port.ts";
import type { LogDirectory } from "./files.ts";
import type { LogPosition, RecordSource } from "./log-reader.ts";
import { CHAIN_ORIGIN, chainPointOf, hex64, invalidSuccessor, opName, RecordFlag, RecordOp, type ChainPoint, type LogRecord } from "./record.ts";
import { StateFile } from "./state-file.ts";
import { ReplayClip } from "./replay-clip.ts";

export const APPLIER_STATE_KIND = 2;
export const APPLIER_STATE_FILE = "applied.state";

/** What the applier keeps durably. */
export interface AppliedPosition {
  /** The last record applied and flushed. */
  point: ChainPoint;
  /** Records up to this seq may have reached the disk (≥ point.seq). */
  applyingThrough: number;
  /** A RESYNC_BEGIN was applied and its RESYNC_END not yet. */
  inResync: boolean;
}

function validatePosition(value: unknown): AppliedPosition | string {
  if (typeof value !== "object" || value === null) return "not an object";
  const v = value as Record<string, unknown>;
  const seqs = ["seq", "lamport", "generation", "applyingThrough"] as const;
  for (const key of seqs) {
    if (typeof v[key] !== "number" || !Number.isSafeInteger(v[key]) || (v[key] as number) < 0) return `${key} is not a non-negative integer`;
  }
  if (typeof v.chain !== "string" || !/^[0-9a-f]{16}$/.test(v.chain)) return "chain is not 16 hex digits";
  if (typeof v.inResync !== "boolean") return "inResync is not a boolean";
  if ((v.applyingThrough as number) < (v.seq as number)) return "applyingThrough is below seq";
  return {
    point: { seq: v.seq as number, chain: BigInt(`0x${v.chain}`), lamport: v.lamport as number, generation: v.generation as number },
    applyingThrough: v.applyingThrough as number,
    inResync: v.inResync,
  };
}

function encodePosition(p: AppliedPosition): Record<string, unknown> {
  return {
    seq: p.point.seq,
    chain: hex64(p.point.chain),
    lamport: p.point.lamport,
    generation: p.point.generation,
    applyingThrough: p.applyingThrough,
    inResync: p.inResync,
  };
}

/** Time for the replay delay; injected so the simulator runs it on simulated time. */
export interface ApplierClock {
  /** Microseconds, on the same scale as the primary's Lamport stamps. */
  now(): number;
  /** Runs `run` after `ms`; returns a cancel function. */
  after(ms: number, run: () => void): () => void;
}

export interface ApplierOptions {
  /** Source of records from a position: a reader over the local copy of the log. */
  source: (from: LogPosition, after: ChainPoint | null) => RecordSource;
  clock: ApplierClock;
  replayDelayMs?: number;
  /** Most bytes read and applied per batch (default 8 MiB). */
  maxBatchBytes?: number;
  log?: Log;
  /**
   * Replay failed on its position file (the log directory: a reopen heals it, state-file.ts
   * latches) or on the disk (halted for good: a latched disk needs the process restarted).
   */
  onFailed?: (reason: string, where: "files" | "disk") => void;
}

export interface ApplierStatus {
  applied: ChainPoint;
  consistent: boolean;
  recovering: boolean;
  inResync: boolean;
  paused: boolean;
  /** Why replay stopped for good, naming the record; null while healthy. */
  halted: string | null;
  /** Records read but held back by the replay delay. */
  delayed: number;
}

export class Applier {
  private position: AppliedPosition;
  private source: RecordSource;
  private unsubscribe: (() => void) | null = null;
  /** The source said more is available since the last read began. */
  private signalled = false;
  private busy = false;
  /** close() waiting for the batch under way to stop (at its next step). */
  private idle: (() => void) | null = null;
  private pausedFlag = false;
  private haltedReason: string | null = null;
  private closed = false;
  private delayed: LogRecord[] = [];
  private cancelTimer: (() => void) | null = null;
  private readonly recoverUntil: number;
  private readonly listeners = new Set<(point: ChainPoint) => void>();
  private readonly maxBatchBytes: number;
  /** Records re-applied after a crash reaching past the end of a disk a later RESIZE already cut (replay-clip.ts). */
  private readonly clip = new ReplayClip();

  private constructor(
    private readonly port: StoragePort,
    private readonly state: StateFile<Record<string, unknown>>,
    position: AppliedPosition,
    private readonly options: ApplierOptions,
  ) {
    this.position = position;
    this.recoverUntil = position.applyingThrough;
    this.maxBatchBytes = options.maxBatchBytes ?? 8 << 20;
    this.source = this.makeSource();
    // Subscribed once, before any read: a wakeup that arrives while a read runs is not lost.
    this.unsubscribe = this.source.onAvailable(() => {
      this.signalled = true;
      if (!this.busy) this.pump();
    });
  }

  /** The position saved in `dir` (origin when none), without starting anything. */
  static async readPosition(dir: LogDirectory): Promise<AppliedPosition> {
    const state = await StateFile.open<Record<string, unknown>>(dir, APPLIER_STATE_FILE, APPLIER_STATE_KIND, (v) => {
      const p = validatePosition(v);
      return typeof p === "string" ? p : (v as Record<string, unknown>);
    });
    await state.close();
    return state.value === null ? { point: CHAIN_ORIGIN, applyingThrough: 0, inResync: false } : (validatePosition(state.value) as AppliedPosition);
  }

  /**
   * Saves `position` in `dir` without an applier running: a primary becoming a secondary
   * (demotion) whose disk holds every record through `position.point`, flushed.
   */
  static async writePosition(dir: LogDirectory, position: AppliedPosition): Promise<void> {
    const state = await StateFile.open<Record<string, unknown>>(dir, APPLIER_STATE_FILE, APPLIER_STATE_KIND, (v) => {
      const p = validatePosition(v);
      return typeof p === "string" ? p : (v as Record<string, unknown>);
    });
    try {
      await state.saveNow(encodePosition(position));
    } finally {
      await state.close();
    }
  }

  /** Opens the saved position in `dir` (origin when none) and starts replaying. */
  static async open(port: StoragePort, dir: LogDirectory, options: ApplierOptions): Promise<Applier> {
    const state = await StateFile.open<Record<string, unknown>>(dir, APPLIER_STATE_FILE, APPLIER_STATE_KIND, (v) => {
      const p = validatePosition(v);
      return typeof p === "string" ? p : (v as Record<string, unknown>);
    });
    const saved = state.value === null ? null : (validatePosition(state.value) as AppliedPosition);
    const position = saved ?? { point: CHAIN_ORIGIN, applyingThrough: 0, inResync: false };
    const applier = new Applier(port, state, position, options);
    applier.pump();
    return applier;
  }

  status(): ApplierStatus {
    // Halted in the middle of a batch (a write, the flush or the position's save failed): the
    // disk may hold part of the records after the applied point, as after a crash, until a
    // restart re-applies them from there (docs/replication.md §6; cluster simulation seed 3, §8.2).
    const midBatch = this.haltedReason !== null && this.position.applyingThrough > this.position.point.seq;
    const recovering = this.position.point.seq < this.recoverUntil || midBatch;
    return {
      applied: this.position.point,
      consistent: !recovering && !this.position.inResync,
      recovering,
      inResync: this.position.inResync,
      paused: this.pausedFlag,
      halted: this.haltedReason,
      delayed: this.delayed.length,
    };
  }

  /** Called after each batch is applied and flushed, with the new position. */
  onApplied(listener: (point: ChainPoint) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops replay after the batch under way (fetching is not affected). */
  pause(): void {
    this.pausedFlag = true;
  }

  resume(): void {
    this.pausedFlag = false;
    this.pump();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.cancelTimer?.();
    this.unsubscribe?.();
    // A batch under way stops at its next step: wait for it, or its writes and its position's
    // save ran on after the close — into a closed state file, failing the secondary for nothing,
    // over a disk a sync then copies onto (cluster simulation seed 20375, docs/replication.md §8.2).
    if (this.busy) await new Promise<void>((resolve) => (this.idle = resolve));
    await (this.source as { close?: () => Promise<void> }).close?.();
    await this.state.close();
  }

  private makeSource(): RecordSource {
    const p = this.position.point;
    return this.options.source({ seq: p.seq + 1 }, p.seq === 0 ? null : p);
  }

  private pump(): void {
    if (this.busy || this.pausedFlag || this.haltedReason !== null || this.closed) return;
    if (this.delayed.length > 0) return this.applyDue();
    this.busy = true;
    this.signalled = false;
    this.source.read(this.maxBatchBytes, (error, chunk) => {
      this.rest();
      if (this.closed) return;
      if (error !== null) return this.halt(`reading the log after seq ${this.position.point.seq}: ${error}`);
      if (chunk === null || chunk.records.length === 0) {
        // Nothing yet: the source's next wakeup pumps again (or one came during the read).
        if (this.signalled) this.pump();
        return;
      }
      this.delayed = chunk.records;
      this.applyDue();
    });
  }

  /** Applies the delayed records whose time has come; waits for the first that has not. */
  private applyDue(): void {
    const delayUs = (this.options.replayDelayMs ?? 0) * 1000;
    let due = this.delayed.length;
    if (delayUs > 0) {
      const now = this.options.clock.now();
      due = this.delayed.findIndex((r) => r.lamport + delayUs > now);
      if (due < 0) due = this.delayed.length;
    }
    if (due === 0) {
      if (this.cancelTimer === null) {
        const waitMs = Math.max(1, Math.ceil((this.delayed[0]!.lamport + delayUs - this.options.clock.now()) / 1000));
        this.cancelTimer = this.options.clock.after(waitMs, () => {
          this.cancelTimer = null;
          this.pump();
        });
      }
      return;
    }
    const batch = this.delayed.slice(0, due);
    this.delayed = this.delayed.slice(due);
    this.applyBatch(batch);
  }

  private applyBatch(records: LogRecord[]): void {
    // Verify the whole batch against the position before touching the disk: nothing past a
    // bad record may be applied, and nothing before it is lost either.
    let point = this.position.point;
    let good = 0;
    let problem: string | null = null;
    for (const record of records) {
      problem =
        point.seq === 0 ? (record.seq === 1 ? null : `the first record is seq ${record.seq}, not seq 1 (this secondary needs an initial sync)`) : invalidSuccessor(point, record);
      if (problem !== null) break;
      point = chainPointOf(record);
      good++;
    }
    const batch = records.slice(0, good);
    if (batch.length === 0) return this.halt(`replay stopped before applying: ${problem}`);
    this.busy = true;
    const last = batch[batch.length - 1]!;
    const intent: AppliedPosition = { ...this.position, applyingThrough: Math.max(this.position.applyingThrough, last.seq) };
    this.state.save(encodePosition(intent), (errno) => {
      if (errno !== 0) return this.fail(`saving the replay position: ${errnoMessage(errno)}`, "files");
      this.position = intent;
      let inResync = this.position.inResync;
      let i = 0;
      const next = (errno: number): void => {
        if (errno !== 0) return this.fail(`applying record seq ${batch[i - 1]!.seq} (${opName(batch[i - 1]!.op)}): ${errnoMessage(errno)}`, "disk");
        if (this.closed) return this.rest();
        if (i === batch.length) return this.port.flush(flushed);
        const record = batch[i++]!;
        if (record.op === RecordOp.MARK) {
          if (record.flags & RecordFlag.RESYNC_BEGIN) inResync = true;
          if (record.flags & RecordFlag.RESYNC_END) inResync = false;
        } else if (record.op === RecordOp.WRITE && record.flags & RecordFlag.RESYNC) {
          // A resync copy is only ever logged between the two marks; one without a BEGIN before
          // it (a primary that lost its mark) still leaves a region half copied until the END.
          inResync = true;
        }
        this.applyRecord(record, next);
      };
      const flushed = (errno: number): void => {
        if (errno !== 0) return this.fail(`flushing the disk after seq ${last.seq}: ${errnoMessage(errno)}`, "disk");
        if (this.closed) return this.rest();
        const unpaid = last.seq >= this.recoverUntil ? this.clip.unpaid() : null; // the re-applied records all cut by a RESIZE among them
        if (unpaid !== null) return this.fail(`re-applying the log after a crash: ${unpaid}`, "disk");
        const position: AppliedPosition = { point: chainPointOf(last), applyingThrough: this.position.applyingThrough, inResync };
        this.state.save(encodePosition(position), (saveErrno) => {
          if (saveErrno !== 0) return this.fail(`saving the replay position: ${errnoMessage(saveErrno)}`, "files");
          this.position = position;
          this.rest();
          for (const listener of this.listeners) listener(position.point);
          if (problem !== null) return this.halt(`replay stopped after seq ${last.seq}: ${problem}`);
          this.pump();
        });
      };
      next(0);
    });
  }

  private applyRecord(record: LogRecord, done: Done): void {
    // Applied before a crash, a record may now reach past the end of a disk that a later RESIZE,
    // also applied then, shrank: applied up to the end, the rest owed to that RESIZE (as a
    // primary's recovery does, replay-onto.ts). Found by a helper's audit of shrinks, 2026-12-07.
    const mutates = record.op === RecordOp.WRITE || record.op === RecordOp.TRIM || record.op === RecordOp.ZERO;
    const length = mutates && record.seq <= this.recoverUntil ? this.clip.clip(record.seq, record.offset, record.length, this.port.size) : record.length;
    if (mutates && length === 0) return done(0);
    switch (record.op) {
      case RecordOp.WRITE:
        return this.port.write(record.offset, length === record.length ? record.payload : record.payload.subarray(0, length), false, done);
      case RecordOp.TRIM:
        return this.port.trim(record.offset, length, false, done);
      case RecordOp.ZERO:
        return this.port.zero(record.offset, length, { fua: false, noHole: (record.flags & RecordFlag.NO_HOLE) !== 0, fast: false }, done);
      case RecordOp.RESIZE:
        if (this.port.resize === undefined) return done(95 /* ENOTSUP */);
        if (record.seq <= this.recoverUntil) this.clip.resized(record.length);
        return this.port.resize(record.length, done);
      default:
        return done(0);
    }
  }

  /** The batch or read under way is over (close() may be waiting for it). */
  private rest(): void {
    this.busy = false;
    const idle = this.idle;
    this.idle = null;
    idle?.();
  }

  private halt(reason: string): void {
    this.rest();
    if (this.haltedReason !== null) return;
    this.haltedReason = reason;
    this.options.log?.error(`replication: ${reason}`);
  }

  private fail(reason: string, where: "files" | "disk"): void {
    if (this.closed) return this.rest(); // a call its close cut short is no failure of the disk or files
    const first = this.haltedReason === null;
    this.halt(reason);
    if (first) this.options.onFailed?.(reason, where);
  }
}
