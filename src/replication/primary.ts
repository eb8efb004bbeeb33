/**
 * @module replication/primary — the primary side of asynchronous replication as a storage
 * layer over the export's backend (docs/replication.md §4–§5). Every mutation becomes a log
 * record (replication/log-store.ts) and completes once the record is durable (group commit)
 * and written back to the disk below; the disk follows the log, so the log is also the
 * disk's write-ahead log: recovery replays what followed the last checkpoint.
 *
 * Ordering: mutations queue in arrival order (= sequence order); one is written back only
 * when no earlier unfinished mutation overlaps it, so the disk sees overlapping mutations in
 * log order, exactly as a secondary replays them. Reads pass straight through: a mutation
 * completes only after its write-back, so reads see every completed one.
 *
 * FLUSH covers every mutation completed before it: logged ones are durable in the log
 * already, so only mutations written around the log (overflow) need a flush of the disk.
 *
 * Log space: past `highWater` × `logLimit` (or when the log failed) the layer stops logging
 * — after a checkpoint, so recovery never replays old records over newer data — and marks
 * the regions it writes in a persisted bitmap (replication/dirty-bitmap.ts). The primary's
 * writes never fail or wait for a secondary. Below `lowWater` it logs again, writing a
 * RESYNC_BEGIN mark, copies every dirty region into the log as RESYNC writes, then writes
 * RESYNC_END: a secondary replaying the log is inconsistent only between the two marks.
 *
 * Must not: complete a mutation before its record (or its dirty mark) is durable; write back
 * overlapping mutations out of log order; append a record for a region while a resync copy
 * of it is between reading the disk and appending (that record must follow the copy).
 */
import { assert } from "../lib/assert.ts";
import { Errno, errnoMessage } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import { PassThrough } from "../storage/layers/pass-through.ts";
import { call, type BufferHold, type Done, type ExtentsDone, type StoragePort, type ZeroFlags } from "../storage/port.ts";
import { SizeFence } from "../storage/size-fence.ts";
import { AckWindow } from "./ack-window.ts";
import { DirtyBitmap, DEFAULT_BITMAP_BYTES } from "./dirty-bitmap.ts";
import { OpenedFiles, type LogDirectory } from "./files.ts";
import { LogReader, type LogPosition } from "./log-reader.ts";
import { replayOnto } from "./replay-onto.ts";
import { DEFAULT_SEGMENT_SIZE, LogStore, type RecoveryReport } from "./log-store.ts";
import { failures, INITIAL_PRIMARY_STATE, isSecondaryName, logGap, MAX_SECONDARIES, PRIMARY_STATE_KIND, validatePrimaryState, type PrimaryState } from "./primary-state.ts";
import { EMPTY, newOp, OP_CODES, overlaps, recordBytes, type Op } from "./primary-op.ts";
import { MAX_RECORD_PAYLOAD, RECORD_HEADER_SIZE, RecordFlag, RecordOp, type ChainPoint } from "./record.ts";
import type { PrimaryOptions, PrimaryStatus } from "./primary-types.ts";
import { StateFile } from "./state-file.ts";
import { FlushLatch } from "../storage/layers/flush-latch.ts";
import { DiskFailure, DiskFlush, writeBack } from "./write-back.ts";

/** The files a primary keeps in its log directory besides segments. */
export const PRIMARY_STATE_FILE = "primary.state";
export const DIRTY_BITMAP_FILE = "dirty.bitmap";

export class ReplicationPrimary extends PassThrough {
  /** Mutations in arrival order, unfinished. */
  private readonly pipeline: Op[] = [];
  /** Mutations waiting to enter the pipeline (during a transition, or behind a copy lock). */
  private readonly held: Op[] = [];
  /** Resizes asked and not written back: a mutation past a queued shrink's end is refused on arrival (storage/size-fence.ts). */
  private readonly fence = new SizeFence(() => this.next.size);
  private holding = false;
  private transition: PrimaryStatus["transition"] = null;
  private mode: "logging" | "overflow";
  private state: PrimaryState;
  /** The state as last saved: the log is released by it, never by a checkpoint still being saved (cluster sim seed 138274). */
  private durableState: PrimaryState;
  /** Regions locked by a resync copy until its records are appended. */
  private readonly locks: Op[] = [];
  private copying = false;
  private resyncCursor = 0;
  private writtenBackSinceCheckpoint = 0;
  private checkpointing = false;
  /** A mode switch is saving the state. */
  private transitionSaving = false;
  private issuing = false;
  private issueAgain = false;
  /** Writes acknowledged before they are durable and written back. */
  private readonly window: AckWindow;
  private closed = false;
  /** The switch to overflow could not flush the disk or save the state: every mutation fails with this errno. */
  private broken = 0;
  /** What failed it, for status (diskFailure or logFailure). */
  private brokenBy: { disk: boolean; message: string } | null = null;
  /** The disk lost a logged write-back: the checkpoint stays below it; mutations, FLUSH and reads of it fail. */
  private readonly diskFailure = new DiskFailure();
  /** FLUSH's disk flush for writes made around the log, and write-back errors it reports. */
  private readonly diskFlush: DiskFlush;
  private readonly highWater: number;
  private readonly lowWater: number;
  private readonly resyncWater: number;
  private readonly checkpointBytes: number;
  /** Bytes one resync copy reads and logs (a piece of a region). */
  private readonly copyPiece: number;

  private constructor(
    next: StoragePort,
    readonly store: LogStore,
    private readonly stateFile: StateFile<PrimaryState>,
    readonly bitmap: DirtyBitmap,
    private readonly options: PrimaryOptions,
    readonly recovery: RecoveryReport,
  ) {
    const latch = new FlushLatch(next); // a flush that failed may have lost write-backs: never trust a later one (§4)
    super(latch);
    // Writes around the log (overflow, §5) since the last good flush are not in the log: a replay does not bring them back.
    latch.onLatched = (errno) => this.diskFailure.flushFailed(errno, this.state.checkpoint, this.options.log, this.mode !== "logging" || this.transition !== null || this.bitmap.dirtyRegions > 0);
    this.state = stateFile.value ?? INITIAL_PRIMARY_STATE;
    this.durableState = this.state;
    this.mode = this.state.mode;
    const limit = options.logLimit;
    this.highWater = limit * (options.highWater ?? 0.9);
    this.lowWater = limit * (options.lowWater ?? 0.5);
    this.resyncWater = limit * (options.resyncWater ?? 0.75);
    this.checkpointBytes = options.checkpointBytes ?? Math.max(1, Math.floor(limit / 8));
    this.copyPiece = Math.max(512, Math.min(MAX_RECORD_PAYLOAD, 2 ** Math.floor(Math.log2(Math.max(1, limit / 16)))));
    this.window = new AckWindow(options.ackWindowBytes, options.ackWindowOps);
    this.diskFlush = new DiskFlush(latch, this.diskFailure);
    store.onFreed(() => this.kick());
    store.onDurable(() => {
      // Records of a whole group commit became durable: write them back in one pass.
      this.issue();
      this.afterFinishSoon();
    });
  }

  /**
   * Opens the log, state and bitmap in `dir` over the disk `next`, replays the records that
   * follow the checkpoint onto the disk, flushes it and records the new checkpoint.
   * Throws DstdError naming the problem when the log is corrupt or lacks needed records.
   */
  static async open(next: StoragePort, dir: LogDirectory, options: PrimaryOptions): Promise<ReplicationPrimary> {
    assert(options.logLimit > 0, "logLimit must be positive");
    const now = options.now ?? (() => Date.now() * 1000);
    // A step that throws closes what the earlier ones opened (files.ts OpenedFiles); `next` is the caller's.
    const opened = new OpenedFiles();
    try {
      const stateFile = await StateFile.open(dir, PRIMARY_STATE_FILE, PRIMARY_STATE_KIND, validatePrimaryState);
      opened.hold(() => stateFile.close());
      const state = stateFile.value ?? INITIAL_PRIMARY_STATE;
      const { store, recovery } = await LogStore.open(dir, {
        now,
        // Several segments fit the limit, so releasing whole segments frees space in steps.
        segmentSize: Math.max(RECORD_HEADER_SIZE, Math.min(options.segmentSize ?? DEFAULT_SEGMENT_SIZE, Math.floor(options.logLimit / 4))),
        maxBatchBytes: options.maxBatchBytes,
        voidAfter: state.voidAfter ?? undefined,
        durableThrough: Math.max(state.checkpoint, ...Object.values(state.secondaries)),
        onCorruption: "refuse",
        base: options.base,
        log: options.log,
        onAppend: options.onAppend,
      });
      opened.hold(() => store.close());
      const gap = logGap(dir.path, store.first, store.last.seq, state.checkpoint, recovery.tornTail);
      if (gap !== null) throw new DstdError("E_LOG_GAP", gap);
      const bitmap = await DirtyBitmap.open(dir, DIRTY_BITMAP_FILE, next.size, options.maxBitmapBytes ?? DEFAULT_BITMAP_BYTES);
      opened.hold(() => bitmap.close());
      if (store.last.seq > state.checkpoint) {
        await replayOnto(next, store, state.checkpoint);
        await call.flush(next);
        await stateFile.saveNow({ ...state, checkpoint: store.last.seq });
      }
      if (state.mode === "logging" && bitmap.dirtyRegions > 0 && !state.resyncPending) {
        options.log?.warn(`replication: ${bitmap.dirtyRegions} dirty regions without a resync under way; resyncing them`);
        await stateFile.saveNow({ ...(stateFile.value ?? state), resyncPending: true }); // before its BEGIN, or a crash may leave no END (sim seed 152)
      }
      const primary = new ReplicationPrimary(next, store, stateFile, bitmap, options, recovery);
      // A resync under way: its RESYNC_BEGIN may not have been durable when we crashed (the
      // state is saved first): copies without a BEGIN before them would let a secondary call a
      // half-copied region consistent (cluster simulation seed 11666, docs/replication.md §8.2).
      // A second BEGIN is harmless: the resync restarts from its first region, and a secondary
      // already inconsistent stays so until RESYNC_END.
      if (primary.mode === "logging" && primary.state.resyncPending) primary.beginResync();
      primary.kick();
      return primary;
    } catch (error) {
      return opened.fail(error);
    }
  }

  override get kind(): string {
    return "replication-primary";
  }
  override get synchronous(): boolean {
    return false;
  }
  /** A fast zero could not be undone once logged: never promised. */
  override get canFastZero(): boolean {
    return false;
  }

  // ---- the port ----

  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    this.submit(newOp("write", offset, offset + data.length, data, false, fua, 0, done));
  }

  /** An early write keeps a handed-over buffer in the ack window (held before its completion), no copy (docs/replication.md §4). */
  override get writeHandedOver(): StoragePort["writeHandedOver"] {
    return this.handedOver;
  }
  private readonly handedOver = (offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done, xxh3?: bigint): void =>
    this.submit({ ...newOp("write", offset, offset + data.length, data, false, fua, 0, done), hold, xxh3 });

  override trim(offset: number, length: number, fua: boolean, done: Done): void {
    this.submit(newOp("trim", offset, offset + length, null, false, fua, 0, done));
  }

  override zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    if (flags.fast) return done(Errno.ENOTSUP);
    this.submit(newOp("zero", offset, offset + length, null, flags.noHole, flags.fua, 0, done));
  }

  override get resize(): ((size: number, done: Done) => void) | undefined {
    if (this.next.resize === undefined) return undefined;
    return (size: number, done: Done) => this.submit(newOp("resize", 0, Infinity, null, false, false, size, this.fence.enter(size, done)));
  }
  /** The disk's size, or a queued shrink's: requests checked against it now fit when written back. */
  override get size(): number {
    return this.fence.size;
  }

  /** Reads see every completed write: the disk below, with the ack window's writes on top. */
  override read(offset: number, into: Uint8Array, done: Done): void {
    const checked = this.unlost(offset, into.length, done); // older than the log: never served
    if (this.window.ops === 0) return this.next.read(offset, into, checked);
    this.window.read(offset, into, (below) => this.next.read(offset, into, below), checked);
  }

  /** `done`, failing with EIO a read of what the disk lost — checked at completion: a flush failing meanwhile may lose it (§4). */
  private unlost(offset: number, length: number, done: Done): Done {
    return (errno) => done(errno === 0 && this.diskFailure.covers(offset, offset + length) ? Errno.EIO : errno);
  }

  /**
   * What the disk below holds: every logged record ≤ `syncPoint()` and none that is not
   * durable (the initial sync copies this, never an early write a crash could take back).
   */
  readDisk(offset: number, into: Uint8Array, done: Done): void {
    this.next.read(offset, into, this.unlost(offset, into.length, done));
  }

  /** The disk's map, with any extent under an early write (not on the disk yet) reported as data. */
  override extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
    this.next.extents(offset, length, maxExtents, (errno, extents) =>
      done(errno, errno !== 0 || extents === null ? extents : this.window.extents(offset, extents)),
    );
  }

  override flush(done: Done): void {
    if (this.closed) return done(Errno.ESHUTDOWN);
    if (this.broken !== 0) return done(this.broken); // failed closed: what went around the log since, a replay at the next start may undo
    // Early writes acknowledged before this FLUSH must be durable and written back first
    // (written back: a write that fell around a failed log is on the disk, counted below).
    if (!this.window.hold(done)) this.diskFlush.flush(done);
  }

  override async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const op of this.held.splice(0)) op.done(Errno.ESHUTDOWN);
    // Early writes not written back: their records were written, so recovery replays those
    // that reached the file (as the plain export leaves unflushed writes in the page cache).
    this.window.close(Errno.ESHUTDOWN);
    await this.store.close();
    await this.stateFile.close();
    await this.bitmap.close();
    await this.next.close();
  }

  // ---- what the shipping plugs into ----

  /** A reader of durable records from `from` (a secondary's FETCH). */
  reader(from: LogPosition, after: ChainPoint | null = null): LogReader {
    return new LogReader(this.store, from, after);
  }

  /** Registers a secondary: segments it has not applied are kept for it. */
  addSecondary(name: string, applied: number, done: Done = () => {}): string | null {
    if (!isSecondaryName(name)) return `secondary name ${JSON.stringify(name)} is invalid`;
    if (!(name in this.state.secondaries) && Object.keys(this.state.secondaries).length >= MAX_SECONDARIES) {
      return `at most ${MAX_SECONDARIES} secondaries are kept (take the replica right from those that are gone and reload: they are forgotten)`;
    }
    if (applied + 1 < this.store.first && applied < this.store.last.seq) {
      return `secondary ${name} applied seq ${applied}, but the log starts at seq ${this.store.first}: it needs a full sync`;
    }
    // Registering may raise the release bound (a secondary replaced by a sync's at its sync
    // point): release and kick as secondaryApplied does, or an idle primary in overflow whose
    // log is now free stays there until its next write (cluster simulation, docs/replication.md §8.2).
    this.saveState({ ...this.state, secondaries: { ...this.state.secondaries, [name]: applied } }, (errno) => {
      if (errno === 0) this.releaseLog();
      done(errno);
    });
    return null;
  }

  removeSecondary(name: string, done: Done = () => {}): void {
    const secondaries = { ...this.state.secondaries };
    delete secondaries[name];
    this.saveState({ ...this.state, secondaries }, (errno) => {
      this.releaseLog();
      done(errno);
    });
  }

  /** Secondary `name` has applied every record ≤ seq durably: the log may drop them. */
  secondaryApplied(name: string, seq: number, done: Done = () => {}): string | null {
    const current = this.state.secondaries[name];
    if (current === undefined) return `unknown secondary ${JSON.stringify(name)}`;
    if (seq > this.store.durable.seq) return `secondary ${name} claims seq ${seq}, beyond the durable log (seq ${this.store.durable.seq})`;
    if (seq <= current) {
      done(0);
      return null;
    }
    this.saveState({ ...this.state, secondaries: { ...this.state.secondaries, [name]: seq } }, (errno) => {
      if (errno === 0) this.releaseLog();
      done(errno);
    });
    return null;
  }

  /**
   * The newest seq a read of the disk is sure to include: every record ≤ it is durable and
   * written back (a secondary's initial sync copies the disk from here and replays the log
   * after it, docs/replication.md §10.1).
   */
  syncPoint(): number {
    return Math.min(this.writtenBackThrough(), this.store.durable.seq);
  }

  /** Up to `max` runs of regions written around the log and not yet copied into it. */
  dirtyRegions(from = 0, max = 1024): { offset: number; length: number }[] {
    return this.bitmap.runs(from, max);
  }

  /**
   * Why the layer refuses writes and FLUSH until it is opened again (its disk failed a logged
   * write-back or a flush, or neither the log nor the state could be written: §4), or null.
   * `dstd up` restarts the export group on it (daemon/services.ts); the open replays the log.
   * Null too when the disk lost a write the replay does not bring back (DiskFailure.replayable):
   * reads of it fail until an operator restarts, rather than turn stale by themselves.
   */
  get failedClosed(): string | null {
    if (this.diskFailure.failed) return this.diskFailure.replayable ? (this.diskFailure.message ?? "the disk failed") : null;
    return this.broken !== 0 ? (this.brokenBy?.message ?? errnoMessage(this.broken)) : null;
  }

  status(): PrimaryStatus {
    return {
      mode: this.mode,
      transition: this.transition,
      generation: this.store.generation,
      first: this.store.first,
      last: this.store.last.seq,
      durable: this.store.durable.seq,
      checkpoint: this.state.checkpoint,
      logBytes: this.logUsage(),
      logLimit: this.options.logLimit,
      logFailure: failures(this.brokenBy?.disk === false ? this.brokenBy.message : null, this.store.failed !== 0 ? `the log: ${this.store.failure}` : null, this.bitmap.failure, this.stateFile.failure),
      diskFailure: this.diskFailure.message ?? (this.brokenBy?.disk ? this.brokenBy.message : null),
      dirtyRegions: this.bitmap.dirtyRegions,
      regionSize: this.bitmap.regionSize,
      resyncPending: this.state.resyncPending,
      secondaries: { ...this.state.secondaries },
      inFlight: this.pipeline.length + this.held.length,
      earlyAcked: this.window.ops,
      earlyBytes: this.window.bytes,
    };
  }

  /** Flushes the disk and advances the checkpoint now (normally driven by write-back volume). */
  checkpoint(done: Done = () => {}): void {
    this.runCheckpoint(done);
  }

  // ---- admission ----

  private submit(op: Op): void {
    if (this.closed) return op.done(Errno.ESHUTDOWN);
    if (this.broken !== 0 || this.diskFailure.failed) return op.done(Errno.EIO);
    const outside = op.kind === "resize" || op.kind === "copy" ? 0 : this.fence.refusal(op.kind, op.offset, op.end - op.offset);
    if (outside !== 0) return op.done(outside); // logged after a queued shrink, it would lie past the end
    if (this.holding || this.held.length > 0 || this.locks.some((lock) => overlaps(lock, op))) {
      this.held.push(op);
      return;
    }
    this.admit(op);
  }

  private admit(op: Op): void {
    if (this.broken !== 0 || this.diskFailure.failed) return op.done(Errno.EIO);
    if (this.mode === "logging") {
      if (this.store.failed === 0 && this.logUsage() + recordBytes(op) <= this.highWater) {
        this.pipeline.push(op);
        this.logOp(op);
        return;
      }
      this.held.push(op);
      this.startOverflow();
      return;
    }
    this.pipeline.push(op);
    this.markDirect(op);
  }

  /** Admits held mutations in order, until a transition or a copy lock holds them again. */
  private releaseHeld(): void {
    while (this.held.length > 0 && !this.holding) {
      const op = this.held[0]!;
      if (this.locks.some((lock) => overlaps(lock, op))) {
        // Keep arrival order among held mutations: the rest waits behind this one.
        return;
      }
      this.held.shift();
      this.admit(op);
    }
  }

  private logOp(op: Op): void {
    op.logged = true;
    if (op.kind === "write") {
      const pieces = Math.ceil(op.data!.length / MAX_RECORD_PAYLOAD);
      const length = op.data!.length;
      const data = op.data!;
      let written: (() => void) | undefined;
      op.early = op.fua ? null : this.window.enter(op.offset, data, op.hold);
      if (op.early !== null) {
        // Completes once its records are written (page cache); the caller recycles its buffer then (unless handed over).
        op.data = op.early.data;
        op.unwritten = pieces;
        written = () => {
          if (--op.unwritten === 0) this.ackEarly(op);
        };
      }
      const logged = op.data!;
      op.waiting = pieces;
      for (let i = 0; i < pieces; i++) {
        const at = i * MAX_RECORD_PAYLOAD;
        const piece = logged.subarray(at, Math.min(data.length, at + MAX_RECORD_PAYLOAD));
        const digest = pieces === 1 ? op.xxh3 : undefined; // the caller's hash is the digest of a one-record write
        const seq = this.store.append(RecordOp.WRITE, 0, op.offset + at, piece.length, piece, (errno) => this.recordDurable(op, errno), written, digest);
        if (i === 0) op.firstSeq = seq;
        op.lastSeq = seq;
      }
      return;
    }
    assert(op.kind !== "copy", "copies are logged by runCopy");
    op.waiting = 1;
    const flags = op.kind === "zero" && op.noHole ? RecordFlag.NO_HOLE : 0;
    const offset = op.kind === "resize" ? 0 : op.offset;
    const length = op.kind === "resize" ? op.newSize : op.end - op.offset;
    const seq = this.store.append(OP_CODES[op.kind], flags, offset, length, EMPTY, (errno) => this.recordDurable(op, errno));
    op.firstSeq = op.lastSeq = seq;
  }

  /** An early write's records are all written: it completes now (FLUSH makes it durable). */
  private ackEarly(op: Op): void {
    if (this.closed) return;
    this.window.acknowledged(op.early!);
    op.done(0);
  }

  private recordDurable(op: Op, errno: number): void {
    if (errno !== 0 && op.errno === 0) op.errno = errno;
    if (--op.waiting > 0) return;
    if (this.closed) {
      this.pipeline.splice(this.pipeline.indexOf(op), 1);
      // Out of the window: a handed-over buffer goes back to its owner (no FLUSH waits any more).
      if (op.early !== null) this.window.leave(op.early, (flushDone) => flushDone(Errno.ESHUTDOWN));
      if (op.early?.acked) return;
      return op.done(op.errno || Errno.ESHUTDOWN);
    }
    if (op.errno !== 0 && this.diskFailure.failed) {
      op.ready = true; // nothing goes around the log any more: start() fails it, finish() keeps the checkpoint below its durable pieces
      return this.issue();
    }
    if (op.errno !== 0) {
      // Its records failed (void: startOverflow): around the log once the switch saved its checkpoint (else a replay may undo it).
      op.errno = 0;
      op.logged = false;
      op.awaitingSwitch = true;
      this.startOverflow();
      this.afterFinishSoon();
      return;
    }
    op.ready = true;
    // Durable with its group: the store's durable listener issues the write-back of the whole
    // group in one pass.
    if (errno !== 0 || this.store.durable.seq < op.lastSeq) this.issue();
  }

  private markDirect(op: Op): void {
    const covered = Math.max(this.next.size, this.bitmap.regions * this.bitmap.regionSize);
    op.waiting = op.kind === "resize" && op.newSize < covered ? 2 : 1;
    const marked = (errno: number): void => {
      // The bitmap or state cannot be persisted: going on would leave a change no resync
      // knows about. Fail the mutation (the disk below the log is failing too, most likely).
      if (errno !== 0) op.errno = errno;
      if (--op.waiting > 0) return;
      op.ready = true;
      this.issue();
    };
    if (op.kind !== "resize") return this.bitmap.mark(op.offset, op.end - op.offset, marked, this.next.size);
    // Resized around the log: the secondaries are owed the size (beginResync), and a shrink marks what it cuts, which a
    // regrow refills with zeros here only (docs/replication.md §5); both durable before the disk changes.
    if (op.newSize < covered) this.bitmap.mark(op.newSize, covered - op.newSize, marked);
    this.saveState({ ...this.state, resizeOwed: true }, marked);
  }

  // ---- write-back in log order ----

  private issue(): void {
    if (this.issuing) {
      this.issueAgain = true;
      return;
    }
    this.issuing = true;
    do {
      this.issueAgain = false;
      for (let i = 0; i < this.pipeline.length; i++) {
        const op = this.pipeline[i]!;
        if (op.started || !op.ready) continue;
        let blocked = false;
        for (let j = 0; j < i; j++) {
          if (overlaps(this.pipeline[j]!, op)) {
            blocked = true;
            break;
          }
        }
        if (!blocked) this.start(op);
      }
    } while (this.issueAgain);
    this.issuing = false;
  }

  private start(op: Op): void {
    op.started = true;
    if (op.errno !== 0) return this.finish(op, op.errno);
    if (op.kind === "copy") return this.runCopy(op);
    writeBack(this.next, op, !op.logged && op.fua, (errno) => this.finish(op, errno));
  }

  private finish(op: Op, errno: number): void {
    const index = this.pipeline.indexOf(op);
    assert(index >= 0, "finished mutation not in the pipeline");
    this.pipeline.splice(index, 1);
    if (op.kind !== "copy") {
      // A logged one the disk refused (retried): the log and the secondaries have it, the disk not: fail closed.
      if (op.logged && errno !== 0 && !this.closed) this.diskFailure.record(op, op.firstSeq, errno, this.options.log);
      else if (errno !== 0 && op.early?.acked === true && !this.closed) this.diskFailure.recordAround(op, errno, this.options.log);
      if (!op.logged && errno === 0) this.diskFlush.wroteAround();
      if (op.logged) this.writtenBackSinceCheckpoint += op.end === Infinity ? 0 : op.end - op.offset;
      if (!op.early?.acked) op.done(errno);
      else if (errno !== 0) {
        // Acknowledged already: the disk below lost it. Like a write-back error in a page cache,
        // the next FLUSH reports it (a logged one: every FLUSH, the disk failed).
        this.diskFlush.lost(errno);
        if (!op.logged) this.options.log?.error(`replication: write-back of ${op.end - op.offset} bytes at ${op.offset} failed: ${errnoMessage(errno)}; the next FLUSH fails`);
      }
      // A FLUSH held for it since before the layer failed closed fails as one arriving now does (flush): what went
      // around the log since, a replay at the next start may undo (docs/replication.md §4, replication sim seed 149927).
      if (op.early !== null) this.window.leave(op.early, (done) => (this.broken !== 0 ? done(this.broken) : this.diskFlush.flush(done)));
    }
    this.issue();
    this.afterFinish();
  }

  private afterFinish(): void {
    if (this.transition === "to-overflow") this.afterFinishSoon();
    else if (this.transition === "to-logging" && !this.pipeline.some((op) => !op.logged)) this.finishResume();
    this.maybeCheckpoint();
    this.kick();
  }

  // ---- checkpoints and log release ----

  /** After enough write-back, or whenever the log is filling and a checkpoint would free some. */
  private maybeCheckpoint(): void {
    if (this.checkpointing) return;
    const behind = this.writtenBackThrough() > this.state.checkpoint;
    if (!behind) return;
    // Enough written back, or the log fills (a resync copy would not fit): flush the disk
    // once and let the log go. (Not when merely idle: a disk flush on a synchronous port
    // runs on the event loop, and an idle log costs nothing.)
    const filling = this.logUsage() + this.copyPiece + RECORD_HEADER_SIZE > this.resyncWater;
    if (this.writtenBackSinceCheckpoint >= this.checkpointBytes || filling) this.runCheckpoint(() => {});
  }

  /** Every logged record ≤ this has been written back (or has no effect on the disk). */
  private writtenBackThrough(): number {
    let min = this.store.last.seq;
    for (const op of this.pipeline) if (op.logged && op.firstSeq - 1 < min) min = op.firstSeq - 1;
    return this.diskFailure.bound(min); // never past a record the disk lost
  }

  private runCheckpoint(done: Done): void {
    if (this.checkpointing || this.closed) return done(0);
    const through = Math.min(this.writtenBackThrough(), this.store.durable.seq);
    if (through <= this.state.checkpoint) return done(0);
    this.checkpointing = true;
    this.writtenBackSinceCheckpoint = 0;
    this.next.flush((errno) => {
      if (errno !== 0 || this.diskFailure.failed) { // failed meanwhile: a disk that lost write-backs at another flush may still answer this one (§4)
        this.checkpointing = false;
        if (errno !== 0) this.options.log?.warn(`replication: checkpoint flush failed: ${errnoMessage(errno)}`);
        return done(errno || this.diskFailure.errno);
      }
      this.saveState({ ...this.state, checkpoint: Math.max(this.state.checkpoint, through) }, (saveErrno) => {
        this.checkpointing = false;
        if (saveErrno === 0) this.releaseLog();
        done(saveErrno);
        this.afterFinishSoon();
      });
    });
  }

  /**
   * What counts against logLimit: records not yet released (applied by every secondary and
   * checkpointed) plus queued ones. A released segment that still carries the chain point
   * stays on disk until the next rotation, so the disk may hold one segment more (≤ logLimit/4).
   */
  private logUsage(): number {
    return this.store.neededBytes(this.releaseBound());
  }

  /** Records every secondary applied and the disk holds durably, by the durable state: the log may drop them. */
  private releaseBound(): number {
    let upTo = this.durableState.checkpoint;
    for (const applied of Object.values(this.durableState.secondaries)) upTo = Math.min(upTo, applied);
    return upTo;
  }

  private releaseLog(): void {
    this.store.release(this.releaseBound());
    this.kick();
  }

  private saveState(next: PrimaryState, done: Done): void {
    this.state = next;
    this.stateFile.save(next, (errno) => {
      if (errno === 0) this.durableState = next; // waiters complete in save order, each once a state as new is on disk
      done(errno);
    });
  }

  // ---- overflow: writing around a full (or failed) log ----

  private startOverflow(): void {
    if (this.mode === "overflow" || this.transition === "to-overflow") return;
    this.options.log?.warn(
      this.store.failed !== 0
        ? `replication: the log failed (${this.store.failure}); writing around it and marking dirty regions`
        : `replication: log at ${this.logUsage()} of ${this.options.logLimit} bytes (high-water mark); writing around it and marking dirty regions`,
    );
    this.transition = "to-overflow";
    this.holding = true;
    this.resyncCursor = 0;
    this.afterFinishSoon();
  }

  /** Once no logged mutation is unfinished: checkpoint, declare later records void, switch. */
  private finishOverflow(): void {
    if (this.transitionSaving) return;
    this.transitionSaving = true;
    const through = this.store.durable.seq;
    const enter = (errno: number, disk = false): void => {
      this.transitionSaving = false;
      this.transition = null;
      if (errno !== 0) {
        // Neither the log nor the state can be written (or the disk flushed, which the state's
        // checkpoint needs): writing on without a record would let the secondaries diverge
        // silently and let recovery replay old records over new data. Fail closed: mutations
        // fail with EIO until a restart (reads go on); status names it (not a log merely full).
        const message = `cannot write around the log (${disk ? "the disk flush" : "saving the state"} failed: ${errnoMessage(errno)}); refusing writes until restarted`;
        this.options.log?.error(`replication: ${message}`);
        this.broken = errno;
        this.brokenBy = { disk, message };
      }
      // Those whose records failed with the log: around it now; failed with the switch, except early acks (reads see them; no FLUSH
      // succeeds). Failed too if the disk failed meanwhile: the checkpoint saved stays below the record it lost, and a restart
      // replays the records after it over what went around (docs/replication.md §4, replication sim seed 16525).
      const failWith = this.closed ? Errno.ESHUTDOWN : errno || this.diskFailure.errno;
      for (const op of this.pipeline.filter((o) => o.awaitingSwitch)) {
        op.awaitingSwitch = false;
        if (failWith === 0 || (!this.closed && op.early?.acked === true)) this.markDirect(op);
        else [op.errno, op.ready] = [failWith, true];
      }
      if (failWith !== 0) this.issue();
      this.mode = "overflow";
      this.holding = false;
      this.releaseHeld();
      this.kick();
    };
    this.next.flush((errno) => {
      if (errno !== 0) return enter(errno, true);
      this.saveState({ ...this.state, mode: "overflow", checkpoint: Math.max(this.state.checkpoint, this.diskFailure.bound(through)), voidAfter: through }, (saveErrno) => {
        if (saveErrno === 0) this.releaseLog();
        enter(saveErrno);
      });
    });
  }

  /** A switch to overflow waits for every logged mutation and every appended record (marks). */
  private afterFinishSoon(): void {
    // With the log failed, a resync copy not started appends nothing (runCopy): waiting for it deadlocked behind an
    // overlapping write whose records failed, itself waiting for this switch (docs/replication.md §5, sync sim seed 755).
    const appending = (op: Op) => op.logged && (op.kind !== "copy" || op.started || this.store.failed === 0);
    if (this.transition !== "to-overflow" || this.pipeline.some(appending)) return;
    if (this.store.failed === 0 && this.store.durable.seq !== this.store.last.seq) return;
    this.finishOverflow();
  }

  /** Resumes logging when the log has room again (and it is healthy). */
  private kick(): void {
    if (this.closed) return;
    // A failed disk: no resync copy (it would log what the disk holds, older than the log) and no switch.
    if (this.diskFailure.failed) return this.maybeCheckpoint();
    if (this.mode === "overflow" && this.transition === null && this.store.failed === 0 && this.store.neededBytes(this.releaseBound()) <= this.lowWater) {
      this.transition = "to-logging";
      this.holding = true;
      if (!this.pipeline.some((op) => !op.logged)) this.finishResume();
      return;
    }
    if (this.mode === "logging" && this.transition === null) this.resyncStep();
    this.maybeCheckpoint();
  }

  private finishResume(): void {
    if (this.transition !== "to-logging" || this.transitionSaving) return;
    this.transitionSaving = true;
    // Writes made around the log become durable first: a resync copy must never capture
    // data a crash could still take back (recovery would replay the copy over the older
    // data the crash left, mixing two states in one region).
    this.next.flush((flushErrno) => {
      if (flushErrno !== 0) {
        this.transitionSaving = false;
        this.transition = null;
        this.options.log?.warn(`replication: flush before resuming the log failed: ${errnoMessage(flushErrno)}; staying around it`);
        this.holding = false;
        this.releaseHeld();
        return;
      }
      this.diskFlush.flushed();
      this.saveResume();
    });
  }

  private saveResume(): void {
    // The state must say "logging" before any new record exists: recovery would otherwise
    // treat those records as void.
    this.saveState({ ...this.state, mode: "logging", voidAfter: null, resyncPending: true }, (errno) => {
      this.transitionSaving = false;
      this.transition = null;
      if (this.closed) return; // closed meanwhile (a demote): no record after close
      if (errno !== 0) {
        this.options.log?.error(`replication: cannot resume logging: ${errnoMessage(errno)}`);
        this.holding = false;
        this.releaseHeld();
        return;
      }
      this.options.log?.info(`replication: log has room again; logging, then resyncing ${this.bitmap.dirtyRegions} dirty regions`);
      this.beginResync();
      this.mode = "logging";
      this.resyncCursor = 0;
      this.holding = false;
      this.releaseHeld();
      this.kick();
    });
  }

  // ---- resync: copying dirty regions into the log ----

  /** RESYNC_BEGIN; then, if the disk was resized around the log, its size, which every copy must find. */
  private beginResync(): void {
    this.store.append(RecordOp.MARK, RecordFlag.RESYNC_BEGIN, 0, 0, EMPTY, () => {});
    if (this.state.resizeOwed) this.store.append(RecordOp.RESIZE, 0, 0, this.next.size, EMPTY, () => {});
  }

  /**
   * Copies the next piece of the next dirty region. A region's bit is cleared once its last
   * piece is durable; an overflow in between restarts the region (resyncCursor reset), so a
   * write around the log into an already copied piece is never lost.
   */
  private resyncStep(): void {
    if (!this.state.resyncPending || this.copying || this.holding || this.store.failed !== 0) return;
    let runs = this.bitmap.runs(this.resyncCursor, 1);
    if (runs.length === 0 && this.resyncCursor > 0) {
      this.resyncCursor = 0;
      runs = this.bitmap.runs(0, 1);
    }
    if (runs.length === 0) return this.finishResync();
    if (this.logUsage() + this.copyPiece + RECORD_HEADER_SIZE > this.resyncWater) return;
    const region = this.bitmap.regionSize;
    const regionStart = Math.floor(Math.max(runs[0]!.offset, this.resyncCursor) / region) * region;
    const offset = Math.max(runs[0]!.offset, this.resyncCursor, regionStart);
    const regionEnd = Math.min(regionStart + region, this.next.size);
    if (offset >= regionEnd) {
      // A region past the end of a shrunk disk, or wholly copied: nothing (more) to copy.
      this.bitmap.clear(regionStart, region);
      this.resyncCursor = regionStart + region;
      return this.resyncStep();
    }
    const end = Math.min(regionEnd, offset + this.copyPiece);
    const copy = newOp("copy", offset, end, null, false, false, 0, () => {});
    copy.logged = true;
    copy.ready = true;
    copy.firstSeq = this.store.last.seq + 1;
    copy.newSize = end >= regionEnd ? regionStart : -1; // ≥ 0: the region to clear when durable
    this.resyncCursor = end;
    this.copying = true;
    this.locks.push(copy);
    this.pipeline.push(copy);
    this.issue();
  }

  /** Runs when no earlier mutation overlaps the region: read it, log it, unlock, wait durable. */
  private runCopy(op: Op): void {
    const length = op.end - op.offset;
    const data = new Uint8Array(length);
    this.next.read(op.offset, data, (errno) => {
      const unlock = (): void => {
        this.locks.splice(this.locks.indexOf(op), 1);
        this.releaseHeld();
      };
      if (errno !== 0 || this.store.failed !== 0 || this.closed || this.diskFailure.failed) {
        unlock();
        this.copying = false;
        const why = errno || this.store.failed || this.diskFailure.errno || Errno.ESHUTDOWN;
        if (!this.closed) this.options.log?.warn(`replication: resync copy of ${length} bytes at ${op.offset} failed: ${errnoMessage(why)}`);
        return this.finish(op, why);
      }
      const pieces = Math.ceil(length / MAX_RECORD_PAYLOAD);
      let waiting = pieces;
      let failed = 0;
      op.firstSeq = this.store.last.seq + 1;
      for (let i = 0; i < pieces; i++) {
        const at = i * MAX_RECORD_PAYLOAD;
        const piece = data.subarray(at, Math.min(length, at + MAX_RECORD_PAYLOAD));
        op.lastSeq = this.store.append(RecordOp.WRITE, RecordFlag.RESYNC, op.offset + at, piece.length, piece, (e) => {
          if (e !== 0) failed = e;
          if (--waiting > 0) return;
          this.copying = false;
          if (failed === 0 && op.newSize >= 0 && this.mode === "logging" && !this.holding) this.bitmap.clear(op.newSize, this.bitmap.regionSize);
          if (failed !== 0) this.resyncCursor = 0;
          this.finish(op, failed);
        });
      }
      // Records of later mutations of this region now follow the copy's.
      unlock();
    });
  }

  private finishResync(): void {
    if (!this.state.resyncPending || this.copying) return;
    this.copying = true;
    // Cleared bits must be durable before the state says the resync is over.
    this.bitmap.persist((errno) => {
      if (errno !== 0 || this.bitmap.dirtyRegions > 0 || this.mode !== "logging" || this.holding || this.closed) {
        this.copying = false;
        return;
      }
      this.store.append(RecordOp.MARK, RecordFlag.RESYNC_END, 0, 0, EMPTY, (appendErrno) => {
        this.copying = false;
        if (appendErrno !== 0) return;
        this.saveState({ ...this.state, resyncPending: false, resizeOwed: false }, () => this.kick()); // no resize went around the log since: overflow waits for this record
      });
    });
  }
}
