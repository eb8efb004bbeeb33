/**
 * @module replication/initial-sync — a secondary's initial sync (docs/replication.md §10.1):
 * copy the primary's disk while it keeps serving writes, then ship its log from the sync
 * point. The design of DRBD's and MARS's full sync: the primary names a sync point P (every
 * record ≤ P is in what its disk reads) and keeps its log after P for us; we copy the disk
 * (or, for a fork repair, the ranges that differ) in chunks, holes skipped; then the log is
 * replayed from P+1 over the copy. A block copied at some later state is brought to the
 * primary's latest value by that replay (records are idempotent, §1), so the copy is
 * consistent once the log is applied through the highest durable seq any COPY answer named
 * (`end`): until then the secondary reports itself inconsistent.
 *
 * Durable progress (`sync.state` in the log directory, two alternating slots): the sync
 * point, the ranges, how far the copy is done (saved after a disk flush, so a crash resumes
 * there, not at 0), `end`, the bytes moved. Phases: "copying", then "catching-up" (the
 * applier's position is P and the log copy starts empty after P), then the file is removed.
 *
 * The ranges are copied in slices of 32 MiB, three at a time, each with one COPY in flight
 * (≤ 8 MiB of data) or one answer being written: memory is three answers. Progress is saved
 * over whole slices in order. A failed COPY is asked again after `retryMs` (COPY only reads:
 * always safe to repeat). No timers of its own besides the injected clock.
 */
import { Errno, errnoMessage } from "../lib/errno.ts";
import type { Log } from "../lib/log.ts";
import type { StoragePort } from "../storage/port.ts";
import { SyncKind } from "../wire/dst/constants.ts";
import { decodeFetchReason } from "../wire/dst/fetch.ts";
import { decodeSyncBegin, decodeSyncCopy, type SyncRequest } from "../wire/dst/sync.ts";
import { Applier, APPLIER_STATE_FILE } from "./applier.ts";
import { files, type LogDirectory } from "./files.ts";
import { hex64, type ChainPoint } from "./record.ts";
import { parseSegmentName } from "./segments.ts";
import { StateFile } from "./state-file.ts";

export const SYNC_STATE_FILE = "sync.state";
export const SYNC_STATE_KIND = 4;
/** Most ranges a fork repair names (coalesced to fit; copying a little more is harmless). */
export const MAX_SYNC_RANGES = 64;
/** A slice of the disk copied by one lane, one COPY after the other (an answer stops earlier once it carries 8 MiB of data). */
const COPY_RANGE = 32 << 20;
/** Slices in copy at once. */
const LANES = 3;

interface Slice {
  /** Bytes into the ranges: [start, end); `cursor` = where the next COPY asks from. */
  start: number;
  end: number;
  cursor: number;
  inFlight: boolean;
  writing: boolean;
  /** Bytes of this slice written. */
  done: number;
  /** Written from `start` up to here, with no gap (answers of one slice are written in order). */
  writtenTo: number;
  /** No COPY before this moment (ms, after a failure). */
  retryAt: number;
}
/** Progress is made durable (disk flush, then the state) after this much of the disk. */
const SAVE_EVERY = 64 << 20;

/** Sends one SYNC; `done` once with the reply's status and payload. */
export type SyncTransport = (request: SyncRequest, offset: number, length: number, done: (status: number, payload: Uint8Array | null) => void) => void;

export interface SyncClock {
  /** Milliseconds. */
  now(): number;
  after(ms: number, run: () => void): () => void;
}

export interface SyncState {
  phase: "copying" | "catching-up";
  point: ChainPoint;
  size: number;
  /** [offset, length] pairs to copy, in order; the whole disk for a full sync. */
  ranges: [number, number][];
  /** Bytes of `ranges` copied and flushed. */
  done: number;
  /** Consistent once the log is applied through this seq. */
  end: number;
  /** Data bytes received (all runs, all attempts since the sync began). */
  moved: number;
  /** "full" or "fork repair from seq N". */
  why: string;
}

export interface SyncProgress {
  phase: "beginning" | "copying" | "catching-up" | "failed";
  reason: string | null;
  point: number;
  doneBytes: number;
  totalBytes: number;
  movedBytes: number;
  /** Bytes of the disk per second over this run (null: not measured yet). */
  rate: number | null;
  eta: number | null;
  end: number;
  retries: number;
}

function validateSyncState(v: unknown): SyncState | string {
  if (typeof v !== "object" || v === null) return "not an object";
  const s = v as Record<string, unknown>;
  if (s.phase !== "copying" && s.phase !== "catching-up") return "phase is not copying or catching-up";
  for (const key of ["seq", "lamport", "generation", "size", "done", "end", "moved"]) {
    if (typeof s[key] !== "number" || !Number.isSafeInteger(s[key]) || (s[key] as number) < 0) return `${key} is not a non-negative integer`;
  }
  if (typeof s.chain !== "string" || !/^[0-9a-f]{16}$/.test(s.chain)) return "chain is not 16 hex digits";
  if (!Array.isArray(s.ranges) || s.ranges.length > MAX_SYNC_RANGES) return `ranges is not a list of at most ${MAX_SYNC_RANGES}`;
  for (const r of s.ranges as unknown[]) {
    if (!Array.isArray(r) || r.length !== 2 || !r.every((n) => Number.isSafeInteger(n) && (n as number) >= 0)) return "a range is not [offset, length]";
  }
  return {
    phase: s.phase,
    point: { seq: s.seq as number, chain: BigInt(`0x${s.chain}`), lamport: s.lamport as number, generation: s.generation as number },
    size: s.size as number,
    ranges: s.ranges as [number, number][],
    done: s.done as number,
    end: s.end as number,
    moved: s.moved as number,
    why: typeof s.why === "string" ? s.why : "full",
  };
}

function encodeSyncState(s: SyncState): Record<string, unknown> {
  return { phase: s.phase, seq: s.point.seq, chain: hex64(s.point.chain), lamport: s.point.lamport, generation: s.point.generation, size: s.size, ranges: s.ranges, done: s.done, end: s.end, moved: s.moved, why: s.why };
}

const openState = (dir: LogDirectory) =>
  StateFile.open<Record<string, unknown>>(dir, SYNC_STATE_FILE, SYNC_STATE_KIND, (v) => {
    const s = validateSyncState(v);
    return typeof s === "string" ? s : (v as Record<string, unknown>);
  });

/** The sync under way in `dir` (null: none). */
export async function readSyncState(dir: LogDirectory): Promise<SyncState | null> {
  if (!(await files.list(dir)).includes(SYNC_STATE_FILE)) return null;
  const state = await openState(dir);
  await state.close();
  return state.value === null ? null : (validateSyncState(state.value) as SyncState);
}

/** The initial sync is over (the log was applied through `end`): its state goes. */
export async function finishSync(dir: LogDirectory): Promise<void> {
  await files.remove(dir, SYNC_STATE_FILE);
  await files.syncDir(dir);
}

/**
 * Ranges sorted, aligned, merged, and coalesced (closing the smallest gaps) to at most `max`;
 * none past the disk's `size` (a disk that is not a multiple of `align`: a range rounded up
 * past its end is a COPY the primary refuses, and the sync retries it forever — found by the
 * cluster simulation, docs/replication.md §8.2).
 */
export function coalesceRanges(ranges: readonly [number, number][], size: number, max = MAX_SYNC_RANGES, align = 4096): [number, number][] {
  const sorted = ranges
    .filter(([o, l]) => l > 0 && o < size)
    .map(([o, l]) => [Math.floor(o / align) * align, Math.min(size, Math.ceil((o + l) / align) * align)] as [number, number])
    .sort((x, y) => x[0] - y[0]);
  const merged: [number, number][] = [];
  for (const [start, end] of sorted) {
    const last = merged[merged.length - 1];
    if (last !== undefined && start <= last[1]) last[1] = Math.max(last[1], end);
    else merged.push([start, end]);
  }
  while (merged.length > max) {
    let best = 1;
    for (let i = 2; i < merged.length; i++) if (merged[i]![0] - merged[i - 1]![1] < merged[best]![0] - merged[best - 1]![1]) best = i;
    merged[best - 1]![1] = merged[best]![1];
    merged.splice(best, 1);
  }
  return merged.map(([s, e]) => [s, e - s]);
}

export interface SyncOptions {
  retryMs?: number;
  /** Bytes of the disk per slice (default 32 MiB). */
  copyRange?: number;
  /** Slices in copy at once (default 3). */
  lanes?: number;
  /** Progress is saved after this much of the ranges (default 64 MiB). */
  saveEvery?: number;
  log?: Log;
}

export class InitialSync {
  private state: SyncState | null = null;
  private file: StateFile<Record<string, unknown>> | null = null;
  /** Slices of the ranges being copied, in order (at most `lanes`). */
  private slices: Slice[] = [];
  private phase: SyncProgress["phase"] = "beginning";
  private reason: string | null = null;
  private stopped = false;
  private paused = false;
  private retries = 0;
  /**
   * Stopped for good: a fork repair whose fork point the primary no longer keeps or shares (a
   * released log, a log forked elsewhere). Trying it again cannot help; a full sync can.
   */
  final = false;
  private cancelTimer: (() => void) | null = null;
  /** Bytes of the ranges requested so far this run, written so far, and at the last save. */
  private asked = 0;
  private written = 0;
  private savedAt = 0;
  private writing = 0;
  private saving = false;
  private startedAt = 0;
  private startedDone = 0;
  private finished: ((error: string | null) => void) | null = null;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    private readonly disk: StoragePort,
    private readonly dir: LogDirectory,
    private readonly transport: SyncTransport,
    private readonly clock: SyncClock,
    private readonly options: SyncOptions = {},
  ) {}

  /**
   * Begins (or, with a saved state in "copying", resumes) the copy. `keepFrom`/`from`: a fork
   * repair — the primary keeps its log after `from` (our own last common record) and only
   * `ranges` are copied; else a full sync from the primary's own sync point. `done` runs once
   * the copy is complete and durable and the applier's position is the sync point (the caller
   * then opens the secondary), or with the reason it cannot go on.
   */
  async start(plan: { from: ChainPoint | null; ranges: [number, number][] | null; why: string }, done: (error: string | null) => void): Promise<void> {
    this.finished = done;
    try {
      this.file = await openState(this.dir);
    } catch (error) {
      // A state file the log directory fails to open or read: stopped, naming it, as any other
      // failure. Thrown, it was a rejection nobody awaits (the daemon starts a sync with `void`)
      // and `done` never ran: stuck at "0 of 0 bytes" naming nothing (cluster simulation seed
      // 7381, §8.2; sync sim seed 12).
      return this.fail(`reading the sync state failed: ${(error as Error).message}`);
    }
    const saved = this.file.value === null ? null : (validateSyncState(this.file.value) as SyncState);
    if (saved !== null && saved.phase === "copying") {
      this.state = saved;
      this.options.log?.info(`replication: resuming the initial sync (${saved.why}) at ${saved.done} of ${total(saved)} bytes, sync point seq ${saved.point.seq}`);
      // The removals of the first run may not have reached the disk before a crash (they are
      // durable only with the directory's fsync): do them again, or the old log (an old
      // primary's own records after the sync point) is taken for the copy of the new primary's
      // (cluster simulation seed 2639, docs/replication.md §8.2).
      try {
        await this.removeOld();
      } catch (error) {
        return this.fail(`clearing the old log failed: ${(error as Error).message}`);
      }
      return this.confirmResume(plan);
    }
    this.begin(plan);
  }

  /**
   * A saved copy goes on only with a primary whose log continues its sync point: SYNC BEGIN
   * naming that point (as a fork repair does) checks it and registers us there again. The
   * primary may have changed meanwhile — a failover repoints a syncing secondary to the one
   * promoted — and a copy begun from another log's state, finished from this one's and replayed
   * after a point this log does not have is a disk that matches no state of either (cluster
   * simulation seed 116655, docs/replication.md §10.1). Refused (diverged, released), or a
   * point at seq 0, which cannot be checked: the sync begins anew (the copy zeroes what it
   * does not send, so the half-done copy leaves nothing behind).
   */
  private confirmResume(plan: { from: ChainPoint | null; ranges: [number, number][] | null; why: string }): void {
    if (this.stopped) return;
    const point = this.state!.point;
    const anew = (why: string) => {
      this.options.log?.warn(`replication: the saved initial sync (sync point seq ${point.seq}) cannot go on: ${why}; it begins anew`);
      this.state = null;
      this.begin(plan);
    };
    if (point.seq === 0) return anew("a sync point at seq 0 cannot be checked against this primary's log");
    this.phase = "beginning";
    this.transport({ kind: SyncKind.BEGIN, keepFrom: point.seq, chain: point.chain, lamport: point.lamport, generation: point.generation }, 0, 0, (status, payload) => {
      if (this.stopped) return;
      const why = () => (payload !== null && payload.length > 0 ? decodeFetchReason(payload) : errnoMessage(status));
      if (status === Errno.ESTALE || status === Errno.ENODATA) return anew(`the primary refused it: ${why()}`);
      if (status === Errno.ENOTSUP || status === Errno.EPERM) return this.fail(`the primary refused the sync: ${why()}`);
      if (status !== 0) return this.retry(`SYNC BEGIN failed: ${why()}`, () => this.confirmResume(plan));
      const begun = decodeSyncBegin(payload ?? new Uint8Array(0));
      if (typeof begun === "string") return this.retry(begun, () => this.confirmResume(plan));
      if (begun.size !== this.disk.size) return this.fail(`the primary's disk is ${begun.size} bytes, this one ${this.disk.size}: sizes must match`);
      this.copying();
    });
  }

  status(): SyncProgress {
    const s = this.state;
    const totalBytes = s === null ? 0 : total(s);
    // Everything before the first slice in copy is written; of those in copy, what each wrote.
    const before = this.slices[0]?.start ?? this.written;
    const doneBytes = s === null ? 0 : Math.max(s.done, before + this.slices.reduce((n, slice) => n + slice.done, 0));
    const span = (this.clock.now() - this.startedAt) / 1000;
    const rate = s !== null && this.startedAt > 0 && span >= 1 ? Math.round((doneBytes - this.startedDone) / span) : null;
    return {
      phase: this.phase,
      reason: this.reason,
      point: s?.point.seq ?? 0,
      doneBytes,
      totalBytes,
      movedBytes: s?.moved ?? 0,
      rate,
      eta: rate !== null && rate > 0 ? Math.round((totalBytes - doneBytes) / rate) : null,
      end: s?.end ?? 0,
      retries: this.retries,
    };
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.phase === "copying") this.next();
  }

  /** Stops; resolves once no write or save of ours is under way and the state file is closed. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelTimer?.();
    if (this.writing > 0 || this.saving) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    await this.file?.close();
    this.file = null;
  }

  private settled(): void {
    if (this.writing > 0 || this.saving) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  // ---- begin -------------------------------------------------------------------------------

  private begin(plan: { from: ChainPoint | null; ranges: [number, number][] | null; why: string }): void {
    if (this.stopped) return;
    this.phase = "beginning";
    const from = plan.from ?? { seq: 0, chain: 0n, lamport: 0, generation: 0 };
    this.transport({ kind: SyncKind.BEGIN, keepFrom: from.seq, chain: from.chain, lamport: from.lamport, generation: from.generation }, 0, 0, (status, payload) => {
      if (this.stopped) return;
      if (status !== 0) {
        const why = payload !== null && payload.length > 0 ? decodeFetchReason(payload) : errnoMessage(status);
        // The primary refused (a released log, not a primary): nothing to retry blindly. A fork
        // repair refused so for its fork point is refused for good (`final`).
        if (status === Errno.ENODATA || status === Errno.ESTALE || status === Errno.ENOTSUP || status === Errno.EPERM) {
          this.final = plan.from !== null && (status === Errno.ENODATA || status === Errno.ESTALE);
          return this.fail(`the primary refused the sync: ${why}`);
        }
        return this.retry(`SYNC BEGIN failed: ${why}`, () => this.begin(plan));
      }
      const begun = decodeSyncBegin(payload ?? new Uint8Array(0));
      if (typeof begun === "string") return this.retry(begun, () => this.begin(plan));
      if (begun.size !== this.disk.size) return this.fail(`the primary's disk is ${begun.size} bytes, this one ${this.disk.size}: sizes must match`);
      const point = plan.from ?? begun.point;
      this.state = { phase: "copying", point, size: begun.size, ranges: plan.ranges ?? [[0, begun.size]], done: 0, end: begun.durable, moved: 0, why: plan.why };
      void this.prepare();
    });
  }

  /** The sync is recorded before anything local goes: then the old applier state and log copy. */
  private async prepare(): Promise<void> {
    try {
      await this.file!.saveNow(encodeSyncState(this.state!));
      await this.removeOld();
    } catch (error) {
      return this.fail(`recording the sync failed: ${(error as Error).message}`);
    }
    this.options.log?.info(`replication: initial sync (${this.state!.why}) of ${total(this.state!)} bytes from sync point seq ${this.state!.point.seq}`);
    this.copying();
  }

  /** The old applied position and log copy go (durably): the sync replaces them. */
  private async removeOld(): Promise<void> {
    for (const name of await files.list(this.dir)) {
      if (name === APPLIER_STATE_FILE || parseSegmentName(name) !== null) await files.remove(this.dir, name);
    }
    await files.syncDir(this.dir);
  }

  // ---- copy --------------------------------------------------------------------------------

  private copying(): void {
    this.phase = "copying";
    this.asked = this.written = this.savedAt = this.state!.done;
    this.slices = [];
    this.startedAt = this.clock.now();
    this.startedDone = this.state!.done;
    this.next();
  }

  /** Where `at` bytes into the ranges falls on the disk, and how much of that range is left. */
  private locate(at: number): { offset: number; left: number } | null {
    let before = 0;
    for (const [offset, length] of this.state!.ranges) {
      if (at < before + length) return { offset: offset + (at - before), left: before + length - at };
      before += length;
    }
    return null;
  }

  /**
   * Keeps `lanes` slices of the ranges in copy, one COPY in flight or one answer being written
   * per slice: the link stays busy while answers are produced, sealed and written (one COPY at
   * a time leaves it idle for a round trip and both ends' work per answer).
   */
  private next(): void {
    if (this.stopped || this.paused || this.phase !== "copying") return;
    const sliceBytes = this.options.copyRange ?? COPY_RANGE;
    while (this.slices.length < (this.options.lanes ?? LANES)) {
      const where = this.locate(this.asked);
      if (where === null) break;
      const length = Math.min(where.left, sliceBytes);
      this.slices.push({ start: this.asked, end: this.asked + length, cursor: this.asked, inFlight: false, writing: false, done: 0, writtenTo: this.asked, retryAt: 0 });
      this.asked += length;
    }
    const now = this.clock.now();
    for (const slice of this.slices) if (!slice.inFlight && !slice.writing && slice.cursor < slice.end && now >= slice.retryAt) this.ask(slice);
    this.maybeComplete();
  }

  private ask(slice: Slice): void {
    const where = this.locate(slice.cursor)!;
    const length = slice.end - slice.cursor;
    slice.inFlight = true;
    this.transport({ kind: SyncKind.COPY, keepFrom: 0, chain: 0n, lamport: 0, generation: 0 }, where.offset, length, (status, payload) => {
      slice.inFlight = false;
      if (this.stopped) return;
      if (status !== 0) {
        const why = payload !== null && payload.length > 0 ? decodeFetchReason(payload) : errnoMessage(status);
        if (status === Errno.ENOTSUP || status === Errno.EPERM) return this.fail(`the primary refused the copy: ${why}`);
        return this.retrySlice(slice, `SYNC COPY at ${where.offset} failed: ${why}`);
      }
      const reply = decodeSyncCopy(payload ?? new Uint8Array(0), where.offset, length);
      if (typeof reply === "string") return this.retrySlice(slice, reply);
      this.reason = null;
      const covered = reply.end - where.offset;
      slice.cursor += covered;
      const state = this.state!;
      state.end = Math.max(state.end, reply.durable);
      let moved = 0;
      for (const r of reply.runs) moved += r.length;
      state.moved += moved;
      this.write(slice, where.offset, reply.end, reply.runs, covered);
      this.next();
    });
  }

  /** Writes the runs and zeroes the gaps between them (the primary reads zeroes there). */
  private write(slice: Slice, offset: number, end: number, runs: { offset: number; length: number; data: Uint8Array }[], covered: number): void {
    this.writing++;
    slice.writing = true;
    const through = slice.cursor; // advanced over this answer already
    const jobs: ((done: (errno: number) => void) => void)[] = [];
    let at = offset;
    const zero = (from: number, to: number) => jobs.push((d) => this.zero(from, to, d));
    for (const r of runs) {
      if (r.offset > at) zero(at, r.offset);
      jobs.push((d) => this.disk.write(r.offset, r.data, false, d));
      at = r.offset + r.length;
    }
    if (end > at) zero(at, end);
    let left = jobs.length;
    let failed = 0;
    const one = (errno: number) => {
      if (errno !== 0 && failed === 0) failed = errno;
      if (--left > 0) return;
      this.writing--;
      slice.writing = false;
      if (this.stopped) return this.settled();
      if (failed !== 0) return this.fail(`writing the copy at ${offset} failed: ${errnoMessage(failed)}`);
      // Stopped by a failed write meanwhile: nothing more is claimed. A slice whose last write
      // failed looks done below (its cursor at its end, nothing in flight), and a later lane's
      // write carried `written`, and a save, past the range never written: a restart resumed
      // beyond it (docs/replication.md §10.1, initial-sync.test.ts).
      if (this.phase === "failed") return;
      slice.done += covered;
      slice.writtenTo = through;
      // `written` advances over whole slices, then through what the first slice has written,
      // in order: a save never claims a gap, and a crash in the middle of a slice (32 MiB by
      // default) resumes after its last save, not at the slice's start (sync sim seed 1952: a
      // secondary that lost power more often than one slice took never finished).
      for (let first = this.slices[0]; first !== undefined && first.cursor === first.end && !first.inFlight && !first.writing; first = this.slices[0]) {
        this.written = first.end;
        this.slices.shift();
      }
      const first = this.slices[0];
      if (first !== undefined) this.written = Math.max(this.written, first.writtenTo);
      if (this.written - this.savedAt >= (this.options.saveEvery ?? SAVE_EVERY)) this.save(() => this.next());
      else this.next();
    };
    if (left === 0) {
      left = 1;
      return one(0);
    }
    for (const job of jobs) job(one);
  }

  private retrySlice(slice: Slice, reason: string): void {
    this.retries++;
    if (this.reason !== reason) this.options.log?.warn(`replication: ${reason}; retrying`);
    this.reason = reason;
    const retryMs = this.options.retryMs ?? 1000;
    slice.retryAt = this.clock.now() + retryMs;
    this.clock.after(retryMs, () => this.next());
  }

  private zero(from: number, to: number, done: (errno: number) => void): void {
    if (this.disk.canZero) return this.disk.zero(from, to - from, { fua: false, noHole: false, fast: false }, done);
    // Without write-zeroes: zero buffers, 1 MiB at a time.
    const step = (at: number) => {
      if (at >= to) return done(0);
      const n = Math.min(1 << 20, to - at);
      this.disk.write(at, new Uint8Array(n), false, (errno) => (errno !== 0 ? done(errno) : step(at + n)));
    };
    step(from);
  }

  /** Flushes the disk, then records how far the copy is done (written in order: one COPY at a time). */
  private save(then: () => void): void {
    if (this.saving) return then();
    this.saving = true;
    const through = this.written;
    this.disk.flush((errno) => {
      if (errno !== 0 || this.stopped) {
        this.saving = false;
        this.settled();
        return errno !== 0 ? this.fail(`flushing the copy failed: ${errnoMessage(errno)}`) : undefined;
      }
      const state = this.state!;
      state.done = Math.max(state.done, through);
      this.file!.save(encodeSyncState(state), (saveErrno) => {
        this.saving = false;
        this.settled();
        if (this.stopped) return;
        if (saveErrno !== 0) return this.fail(`saving the sync progress failed: ${errnoMessage(saveErrno)}`);
        this.savedAt = through;
        then();
      });
    });
  }

  private maybeComplete(): void {
    const state = this.state!;
    if (this.stopped || this.phase !== "copying" || this.writing > 0 || this.slices.length > 0 || this.saving || this.written < total(state)) return;
    this.phase = "catching-up";
    void this.complete();
  }

  /** Copy flushed → the applier's position is the sync point → the state says catching-up. */
  private async complete(): Promise<void> {
    const state = this.state!;
    try {
      await new Promise<void>((resolve, reject) => this.disk.flush((errno) => (errno === 0 ? resolve() : reject(new Error(`flushing the copy failed: ${errnoMessage(errno)}`)))));
      await Applier.writePosition(this.dir, { point: state.point, applyingThrough: state.point.seq, inResync: false });
      state.done = total(state);
      state.phase = "catching-up";
      await this.file!.saveNow(encodeSyncState(state));
      await this.file!.close();
      this.file = null;
    } catch (error) {
      return this.fail(`completing the sync failed: ${(error as Error).message}`);
    }
    this.options.log?.info(`replication: initial sync copied ${state.done} bytes (${state.moved} bytes of data moved); replaying the log from seq ${state.point.seq + 1}, consistent at seq ${state.end}`);
    this.finished?.(null);
  }

  // ---- failures ----------------------------------------------------------------------------

  private retry(reason: string, again: () => void): void {
    this.retries++;
    if (this.reason !== reason) this.options.log?.warn(`replication: ${reason}; retrying`);
    this.reason = reason;
    this.cancelTimer = this.clock.after(this.options.retryMs ?? 1000, () => {
      this.cancelTimer = null;
      again();
    });
  }

  private fail(reason: string): void {
    if (this.phase === "failed") return;
    this.phase = "failed";
    this.reason = reason;
    this.options.log?.error(`replication: initial sync stopped: ${reason}`);
    this.finished?.(reason);
  }
}

function total(s: SyncState): number {
  let n = 0;
  for (const [, length] of s.ranges) n += length;
  return n;
}
