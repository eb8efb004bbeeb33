/**
 * @module replication/log-store — the durable, sequential replication log in a directory of
 * segment files: appends with group commit, rotation, release of segments nobody needs,
 * recovery on open, and the table of segments the reader (replication/log-reader.ts) serves
 * from. docs/replication.md §3.
 *
 * Group commit, pipelined: appended records queue; one writev at a time writes every queued
 * record (up to maxBatchBytes) at the end of the active segment; one fdatasync at a time
 * covers every batch whose write completed before it started. While an fdatasync runs, the
 * next batch is written, and the records that arrive meanwhile wait for the next fdatasync:
 * N writers share one fdatasync instead of paying one each. All file calls are asynchronous
 * (replication/files.ts), so the event loop never waits for the disk.
 *
 * Memory: the store holds the queued records (their headers; the callers' payloads by reference
 * until completion) and nothing else per record; callers bound how many they queue (`queuedBytes`).
 *
 * Must not: call a completion before the record is durable; append after a failed write or
 * fdatasync (fsyncgate: the page cache can no longer be trusted, every later append fails
 * with the same errno); delete the segment that holds the last durable record (the chain
 * point must survive a restart); write into a new segment before its directory entry is durable.
 */
import { assert } from "../lib/assert.ts";
import { Errno, errnoMessage } from "../lib/errno.ts";
import type { Log } from "../lib/log.ts";
import { files, OpenedFiles, type LogDirectory, type LogFile } from "./files.ts";
import {
  chainPointOf,
  decodeHeader,
  encodeHeader,
  invalidHeader,
  invalidPayload,
  invalidSuccessor,
  MAX_RECORD_PAYLOAD,
  RECORD_HEADER_SIZE,
  type ChainPoint,
  type RecordOpCode,
} from "./record.ts";
import { recover, type RecoveryReport } from "./log-recovery.ts";
import { segmentName, type Segment } from "./segments.ts";

export type { RecoveryReport } from "./log-recovery.ts";

export const DEFAULT_SEGMENT_SIZE = 64 << 20;
export const DEFAULT_MAX_BATCH_BYTES = 8 << 20;

export interface LogStoreOptions {
  /** Rotate to a new segment once the active one reaches this many bytes. */
  segmentSize?: number;
  /** Most bytes one write call carries. */
  maxBatchBytes?: number;
  /** Clock for Lamport stamps, in microseconds (wall clock in production, simulated in tests). */
  now: () => number;
  /** Generation of the first record of a new, empty log. */
  generation?: number;
  /** An empty log continues from this point (a secondary's copy that starts mid-log). */
  base?: ChainPoint;
  /** A corrupt record that is not a torn tail: "refuse" (the primary: records past it were acknowledged) or "truncate" (a secondary's copy: fetch again from there). */
  onCorruption?: "refuse" | "truncate";
  /** Records up to this seq are known to have been durable (a checkpoint, a secondary's position): a bad one among them is corruption, never a torn tail. */
  durableThrough?: number;
  /** Discard every record after this sequence number at open (they were declared void). */
  voidAfter?: number;
  log?: Log;
  /** Observer of every record appended (header and payload chunks), e.g. a simulator's oracle. */
  onAppend?: (point: ChainPoint, chunks: readonly Uint8Array[]) => void;
}

export type AppendDone = (errno: number) => void;
export type DurableListener = (point: ChainPoint) => void;

interface Entry {
  seq: number;
  chunks: Uint8Array[];
  size: number;
  point: ChainPoint;
  done: AppendDone;
  /** Runs once the record is written to the segment (page cache), before it is durable. */
  written?: () => void;
}

interface Batch {
  entries: Entry[];
  segment: Segment;
  end: number;
}

export class LogStore {
  private readonly segments: Segment[];
  private active: { segment: Segment; file: LogFile } | null;
  /** After the last record appended (durable or not). */
  private tail: ChainPoint;
  private durablePoint: ChainPoint;
  private generationValue: number;
  private readonly queue: Entry[] = [];
  private queued = 0;
  private writing: Batch | null = null;
  private readonly written: Batch[] = [];
  private syncing = false;
  private rotating = false;
  private releasing = false;
  private releaseWanted = 0;
  private readonly releaseIdle: (() => void)[] = [];
  /** The close under way or done: every caller waits for the same one. */
  private closing: Promise<void> | null = null;
  /** Last seq of the segments a release chose (removed, or kept in the table after a failed removal): no longer served. */
  private releasedThrough = 0;
  private failedErrno = 0;
  private failedMessage = "";
  private closed = false;
  private readonly listeners = new Set<DurableListener>();
  private readonly freedListeners = new Set<() => void>();
  private readonly segmentSize: number;
  private readonly maxBatchBytes: number;

  private constructor(
    readonly dir: LogDirectory,
    private readonly options: LogStoreOptions,
    segments: Segment[],
    active: { segment: Segment; file: LogFile } | null,
    tail: ChainPoint,
  ) {
    this.segments = segments;
    this.active = active;
    this.tail = tail;
    this.durablePoint = tail;
    this.generationValue = Math.max(tail.generation, options.generation ?? 1);
    this.segmentSize = options.segmentSize ?? DEFAULT_SEGMENT_SIZE;
    this.maxBatchBytes = Math.max(options.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES, RECORD_HEADER_SIZE + MAX_RECORD_PAYLOAD);
    assert(this.segmentSize >= RECORD_HEADER_SIZE, "segment size too small");
  }

  /** Opens the log in `dir`: recovery (docs/replication.md §3.3), then ready to append; a recovery step that throws closes the segments it opened. */
  static async open(dir: LogDirectory, options: LogStoreOptions): Promise<{ store: LogStore; recovery: RecoveryReport }> {
    const opened = new OpenedFiles();
    try {
      const { segments, tail, report, activeFile } = await recover(dir, options, opened);
      return { store: new LogStore(dir, options, segments, activeFile && { segment: segments[segments.length - 1]!, file: activeFile }, tail), recovery: report };
    } catch (error) {
      return opened.fail(error);
    }
  }

  // ---- what it holds ----

  /** After the last record appended (not necessarily durable). */
  get last(): ChainPoint {
    return this.tail;
  }
  /** After the last durable record. */
  get durable(): ChainPoint {
    return this.durablePoint;
  }
  /**
   * First sequence number still held (durable + 1 when no segment holds a record). A segment
   * whose removal failed is not: the unlink may have taken effect (EIO after it), and a
   * secondary registered below it found the file gone for good (cluster sim seed 111327).
   */
  get first(): number {
    const first = this.segments.find((s) => s.lastSeq >= s.firstSeq && s.lastSeq > this.releasedThrough);
    return first === undefined ? this.durablePoint.seq + 1 : first.firstSeq;
  }
  get generation(): number {
    return this.generationValue;
  }
  /** Bytes in segment files plus bytes queued to be written. */
  get bytes(): number {
    let total = this.queued;
    for (const s of this.segments) total += s.size;
    return total;
  }
  /**
   * Bytes still needed if every record ≤ `upTo` could go: queued bytes plus the segments
   * holding a record after it. (A fully released active segment stays on disk only to keep
   * the chain point; it goes with the next rotation.)
   */
  neededBytes(upTo: number): number {
    let total = this.queued;
    for (const s of this.segments) if (s.lastSeq > Math.max(upTo, this.releasedThrough)) total += s.size;
    return total;
  }
  /** Bytes of records queued and not yet handed to a write. */
  get queuedBytes(): number {
    return this.queued;
  }
  /** The errno of the write or fdatasync that failed the log (0 while healthy). */
  get failed(): number {
    return this.failedErrno;
  }
  get failure(): string {
    return this.failedMessage;
  }
  /** A copy of the segment table (for the reader, status and tests). */
  segmentTable(): Segment[] {
    return this.segments.map((s) => ({ ...s }));
  }

  /** Later records carry `generation` (a promotion starts a new one; never goes back). */
  startGeneration(generation: number): void {
    assert(generation > this.generationValue, `generation ${generation} is not after ${this.generationValue}`);
    this.generationValue = generation;
  }

  onDurable(listener: DurableListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Calls `listener` after released segments were removed (space was freed). */
  onFreed(listener: () => void): () => void {
    this.freedListeners.add(listener);
    return () => this.freedListeners.delete(listener);
  }

  // ---- appending ----

  /**
   * Appends one record and returns its sequence number; `done` runs once it is durable (or
   * with the errno that failed the log). `payload` is kept by reference until then.
   * `written`, if given, runs once the record's write call completed (it is in the page
   * cache, not yet durable; a process crash keeps it, a power loss may not): the primary
   * acknowledges a write without FUA then (docs/replication.md §4). It never runs if the
   * write failed. `payloadDigest`, if given, is xxh3-64 of `payload` (the caller hashed it
   * already: record.ts encodeHeader).
   */
  append(op: RecordOpCode, flags: number, offset: number, length: number, payload: Uint8Array, done: AppendDone, written?: () => void, payloadDigest?: bigint): number {
    assert(!this.closed, "append to a closed log");
    const seq = this.tail.seq + 1;
    const lamport = Math.max(Math.floor(this.options.now()), this.tail.lamport + 1);
    const header = new Uint8Array(RECORD_HEADER_SIZE);
    const fields = { op, flags, seq, generation: this.generationValue, lamport, offset, length, committed: this.durablePoint.seq };
    const chain = encodeHeader(fields, payload, this.tail.chain, header, 0, payloadDigest);
    const point = { seq, chain, lamport, generation: this.generationValue };
    this.enqueue({ seq, chunks: payload.length > 0 ? [header, payload] : [header], size: RECORD_HEADER_SIZE + payload.length, point, done, written });
    return seq;
  }

  /**
   * Appends records encoded elsewhere (a secondary storing what it fetched), verbatim. Each
   * must be valid and follow the last one appended; the first bad one is refused with a
   * reason naming it and nothing from it on is appended. Returns null or that reason.
   * `done` runs once when every appended record is durable.
   */
  appendEncoded(bytes: Uint8Array, done: AppendDone): string | null {
    assert(!this.closed, "append to a closed log");
    let at = 0;
    const entries: Entry[] = [];
    let point = this.tail;
    let problem: string | null = null;
    while (at < bytes.length) {
      const reason = invalidHeader(bytes, at);
      if (reason !== null) {
        problem = reason;
        break;
      }
      const header = decodeHeader(bytes, at);
      const size = RECORD_HEADER_SIZE + header.payloadLength;
      if (bytes.length - at < size) {
        problem = `record seq ${header.seq}: ${bytes.length - at} of its ${size} bytes`;
        break;
      }
      const bad =
        invalidPayload(header, bytes.subarray(at + RECORD_HEADER_SIZE, at + size)) ??
        (point.seq === 0 ? null : invalidSuccessor(point, header));
      if (bad !== null) {
        problem = bad;
        break;
      }
      point = chainPointOf(header);
      entries.push({ seq: header.seq, chunks: [bytes.subarray(at, at + size)], size, point, done: () => {} });
      at += size;
    }
    if (entries.length === 0) {
      done(this.failedErrno);
      return problem;
    }
    if (point.generation > this.generationValue) this.generationValue = point.generation;
    let remaining = entries.length;
    let first = 0;
    const each = (errno: number): void => {
      if (errno !== 0 && first === 0) first = errno;
      if (--remaining === 0) done(first);
    };
    for (const entry of entries) {
      entry.done = each;
      this.enqueue(entry);
    }
    return problem;
  }

  private enqueue(entry: Entry): void {
    if (this.failedErrno !== 0) return entry.done(this.failedErrno);
    this.tail = entry.point;
    this.options.onAppend?.(entry.point, entry.chunks);
    this.queue.push(entry);
    this.queued += entry.size;
    this.pump();
  }

  private pump(): void {
    if (this.failedErrno !== 0 || this.closed) return;
    this.startSync();
    if (this.writing !== null || this.rotating || this.queue.length === 0) return;
    const active = this.active;
    if (active === null || (active.segment.size >= this.segmentSize && active.segment.lastSeq >= active.segment.firstSeq)) {
      // Rotation waits until the old segment is wholly durable: a later segment then never
      // exists beside a torn earlier one (recovery relies on it).
      if (this.written.length === 0 && !this.syncing) this.rotate();
      return;
    }
    const entries: Entry[] = [];
    const chunks: Uint8Array[] = [];
    let size = 0;
    while (this.queue.length > 0) {
      const next = this.queue[0]!;
      if (entries.length > 0 && size + next.size > this.maxBatchBytes) break;
      if (entries.length > 0 && active.segment.size + size >= this.segmentSize) break;
      this.queue.shift();
      entries.push(next);
      for (const chunk of next.chunks) chunks.push(chunk);
      size += next.size;
    }
    this.queued -= size;
    const segment = active.segment;
    const position = segment.size;
    segment.size += size;
    segment.lastSeq = entries[entries.length - 1]!.seq;
    const batch: Batch = { entries, segment, end: segment.size };
    this.writing = batch;
    active.file.write(position, chunks, (errno) => {
      if (this.failedErrno !== 0) return; // failed meanwhile: fail() completed its records (not written too: sim seed 1226)
      if (errno !== 0) return this.fail(errno, `writing ${size} bytes at ${position} of ${this.dir.path}/${segment.name}`); // still `writing`: fail() completes its records
      this.writing = null;
      this.written.push(batch);
      for (const entry of entries) entry.written?.();
      this.pump();
    });
  }

  private startSync(): void {
    if (this.syncing || this.written.length === 0 || this.active === null) return;
    const batches = this.written.splice(0);
    const { file, segment } = this.active;
    assert(batches.every((b) => b.segment === segment), "a sync spans segments");
    this.syncing = true;
    file.sync((errno) => {
      this.syncing = false;
      if (errno !== 0 && this.failedErrno === 0) {
        this.written.unshift(...batches); // fail() completes their records
        return this.fail(errno, `fdatasync of ${this.dir.path}/${segment.name}`);
      }
      // Failed meanwhile: nothing is durable after a failure (the switch to overflow's voidAfter voids it: sim seed 269).
      // Whether this sync failed too or not, fail() ran already and completes nothing more: these complete here, or
      // their mutations waited forever and the primary's switch to overflow held every later one (docs/replication.md
      // §3.2, sync sim seed 2).
      if (this.failedErrno !== 0) return batches.forEach((b) => b.entries.forEach((entry) => entry.done(this.failedErrno)));
      const last = batches[batches.length - 1]!;
      segment.durableSize = last.end;
      const lastEntry = last.entries[last.entries.length - 1]!;
      segment.durableLast = lastEntry.seq;
      this.durablePoint = lastEntry.point;
      for (const batch of batches) for (const entry of batch.entries) entry.done(0);
      for (const listener of this.listeners) listener(this.durablePoint);
      this.pump();
      this.maybeRelease();
    });
  }

  private rotate(): void {
    this.rotating = true;
    const firstSeq = this.queue[0]!.seq;
    const name = segmentName(firstSeq);
    const previous = this.active;
    this.dir.open(name, true, (errno, file) => {
      if (errno !== 0 || file === null) {
        this.rotating = false;
        return this.fail(errno, `creating ${this.dir.path}/${name}`);
      }
      this.dir.sync((syncErrno) => {
        this.rotating = false;
        if (syncErrno !== 0) return this.fail(syncErrno, `fsync of directory ${this.dir.path} after creating ${name}`);
        const segment: Segment = { name, firstSeq, size: 0, durableSize: 0, lastSeq: firstSeq - 1, durableLast: firstSeq - 1 };
        this.segments.push(segment);
        this.active = { segment, file };
        // The old segment's descriptor is no longer written; readers open their own.
        previous?.file.close(() => {});
        this.pump();
      });
    });
  }

  private fail(errno: number, what: string): void {
    if (this.failedErrno !== 0) return;
    this.failedErrno = errno;
    this.failedMessage = `${what} failed: ${errnoMessage(errno)}`;
    this.options.log?.error(`replication log ${this.dir.path}: ${this.failedMessage}; the log takes no more records`);
    const victims: Entry[] = [];
    if (this.writing !== null) victims.push(...this.writing.entries);
    for (const batch of this.written) victims.push(...batch.entries);
    victims.push(...this.queue);
    this.writing = null;
    this.written.length = 0;
    this.queue.length = 0;
    this.queued = 0;
    for (const entry of victims) entry.done(errno);
  }

  // ---- releasing ----

  /**
   * Deletes every segment whose records are all ≤ `upTo` (applied by every secondary and
   * written back to the disk), except the one holding the last durable record. Asynchronous
   * and serialized; a later call raises the bound of a running one.
   */
  release(upTo: number): void {
    this.releaseWanted = Math.max(this.releaseWanted, upTo);
    this.maybeRelease();
  }

  private maybeRelease(): void {
    if (this.releasing || this.closed || this.failedErrno !== 0) return;
    const keepFrom = this.lastDurableSegmentIndex();
    const victims: Segment[] = [];
    for (let i = 0; i < keepFrom; i++) {
      const s = this.segments[i]!;
      if (s.lastSeq <= this.releaseWanted && s.durableLast === s.lastSeq) victims.push(s);
      else break;
    }
    if (victims.length === 0) return;
    this.releasing = true;
    this.releasedThrough = Math.max(this.releasedThrough, victims[victims.length - 1]!.lastSeq);
    const removeNext = (i: number): void => {
      if (i === victims.length) {
        this.dir.sync(() => {
          this.released();
          for (const listener of this.freedListeners) listener();
          this.maybeRelease();
        });
        return;
      }
      const victim = victims[i]!;
      this.dir.remove(victim.name, (errno) => {
        // ENOENT: gone already (no one else removes our segments: the directory is locked, §3.1).
        // An unlink that failed with EIO may have removed the entry anyway; taking the retry's
        // ENOENT for a failure kept the segment in the table and stopped every later release
        // (docs/replication.md §3.5, replication sim seed 424).
        if (errno !== 0 && errno !== Errno.ENOENT) {
          this.released();
          this.options.log?.warn(`replication log: removing ${this.dir.path}/${victim.name} failed: ${errnoMessage(errno)}`);
          return;
        }
        const index = this.segments.indexOf(victim);
        if (index >= 0) this.segments.splice(index, 1);
        removeNext(i + 1);
      });
    };
    removeNext(0);
  }

  /** A release ended: close() may go on (it waits, so that the next opener of the directory lists no segment still being removed). */
  private released(): void {
    this.releasing = false;
    for (const idle of this.releaseIdle.splice(0)) idle();
  }

  private lastDurableSegmentIndex(): number {
    for (let i = this.segments.length - 1; i >= 0; i--) {
      const s = this.segments[i]!;
      if (s.durableLast >= s.firstSeq) return i;
    }
    return 0;
  }

  /** Stops taking records; queued records fail with ESHUTDOWN, durable ones stay; resolves once a release under way has ended. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      for (const entry of this.queue.splice(0)) entry.done(108 /* ESHUTDOWN */);
      this.queued = 0;
      this.listeners.clear();
      this.freedListeners.clear();
      if (this.releasing) await new Promise<void>((resolve) => this.releaseIdle.push(resolve));
      if (this.active !== null) await files.close(this.active.file).catch(() => {});
    })();
    return this.closing;
  }
}
