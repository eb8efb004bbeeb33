/**
 * @module replication/log-reader — streams durable records out of a LogStore from a position
 * (a sequence number, optionally with the segment and byte offset where it starts), in
 * chunks of whole records. The shipping serves a secondary's FETCH from it; the applier of a
 * secondary replays its local copy through it. docs/replication.md §3.4.
 *
 * Only durable records are ever returned: a secondary must never hold a record its primary
 * could still lose in a crash (that record's sequence number would be reused by another).
 * Every record is verified in itself and as the successor of the one before; the first bad
 * one ends the reader with a reason naming the record, its segment and offset.
 *
 * Memory: one chunk (≤ max(maxBytes, one record)) per read. Must not: read past the durable
 * end of a segment, or skip a record.
 */
import { errnoMessage } from "../lib/errno.ts";
import { files, FileError, type LogFile } from "./files.ts";
import type { LogStore } from "./log-store.ts";
import {
  CHAIN_ORIGIN,
  chainPointOf,
  decodeRecordAt,
  invalidSuccessor,
  MAX_RECORD_SIZE,
  type ChainPoint,
  type LogRecord,
} from "./record.ts";
import { scanSegment, type Segment } from "./segments.ts";

/** Where to read from. `segment` (its first seq) and `offset` make resuming exact and cheap. */
export interface LogPosition {
  /** Sequence number of the next record wanted. */
  seq: number;
  segment?: number;
  offset?: number;
}

export interface ReadChunk {
  /** The records, encoded, back to back (what a FETCH reply carries). */
  bytes: Uint8Array;
  records: LogRecord[];
  /** Where the next read starts. */
  next: Required<LogPosition>;
}

export type ReadDone = (error: string | null, chunk: ReadChunk | null) => void;

/** Anything the applier can replay from. */
export interface RecordSource {
  /** Up to `maxBytes` (at least one record when any is available); an empty chunk: none yet. */
  read(maxBytes: number, done: ReadDone): void;
  /** Calls `listener` when more may be available; returns the unsubscribe. */
  onAvailable(listener: () => void): () => void;
}

export class LogReader implements RecordSource {
  private segment: number | null = null;
  private offset = 0;
  private file: LogFile | null = null;
  private fileSegment = 0;
  private closed = false;
  private point: ChainPoint | null;
  private nextSeq: number;
  private error: string | null = null;
  private errnoValue = 0;
  private busy = false;
  /** The position came with a segment/offset not yet confirmed by reading its record. */
  private hinted = false;

  /** @param after the chain point the first record must follow, when the caller knows it. */
  constructor(
    private readonly store: LogStore,
    from: LogPosition,
    after: ChainPoint | null = null,
  ) {
    this.nextSeq = from.seq;
    this.point = after;
    if (from.segment !== undefined && from.offset !== undefined) {
      this.segment = from.segment;
      this.offset = from.offset;
      this.hinted = true;
    }
  }

  /** The errno of the file call that failed the reader (0: none, or not a file call: a bad record, a released seq). */
  get errno(): number {
    return this.errnoValue;
  }

  get position(): Required<LogPosition> {
    return { seq: this.nextSeq, segment: this.segment ?? 0, offset: this.offset };
  }

  onAvailable(listener: () => void): () => void {
    return this.store.onDurable(() => listener());
  }

  read(maxBytes: number, done: ReadDone): void {
    if (this.error !== null) return done(this.error, null);
    if (this.busy) return done("a read is already running on this reader", null);
    this.busy = true;
    this.readAsync(maxBytes)
      .catch((error: unknown) => (error === retry ? this.readAsync(maxBytes) : Promise.reject(error)))
      .then(
      (chunk) => {
        this.busy = false;
        done(null, chunk);
      },
      (error: unknown) => {
        this.busy = false;
        if (error instanceof FileError) this.errnoValue = error.errno;
        this.error = error instanceof FileError ? error.message : error instanceof Error ? error.message : String(error);
        done(this.error, null);
      },
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.file !== null) await files.close(this.file).catch(() => {});
    this.file = null;
  }

  private empty(): ReadChunk {
    return { bytes: new Uint8Array(0), records: [], next: this.position };
  }

  private async readAsync(maxBytes: number): Promise<ReadChunk> {
    const table = this.store.segmentTable();
    if (this.segment === null) {
      // Not there yet (a secondary whose copy is behind its applier, or a reader that follows
      // the log): nothing to read until the log reaches the seq. Callers that must tell a
      // position beyond the log from one not yet reached compare with the store's end.
      if (this.nextSeq > this.store.durable.seq + 1) return this.empty();
      await this.locate(table);
    }
    let relocated = false;
    for (;;) {
      const current = table.find((s) => s.firstSeq === this.segment);
      if (current === undefined) {
        if (this.nextSeq < this.store.first) {
          throw new Error(`seq ${this.nextSeq} is no longer in the log (released; the log starts at seq ${this.store.first})`);
        }
        // Its segment was released under us (we had read all of it) or does not exist yet.
        this.segment = null;
        if (this.nextSeq > this.store.durable.seq || relocated) return this.empty();
        relocated = true;
        await this.locate(table);
        continue;
      }
      if (this.offset < current.durableSize) return this.readFrom(current, maxBytes);
      // At the durable end of this segment: go on in the next one once it holds durable records.
      const next = table.find((s) => s.firstSeq === this.nextSeq && s.durableLast >= s.firstSeq);
      if (next === undefined || current.durableLast < this.nextSeq - 1) return this.empty();
      this.segment = next.firstSeq;
      this.offset = 0;
    }
  }

  private async readFrom(segment: Segment, maxBytes: number): Promise<ReadChunk> {
    const file = await this.open(segment);
    const available = segment.durableSize - this.offset;
    const size = Math.min(available, Math.max(maxBytes, MAX_RECORD_SIZE));
    const buffer = new Uint8Array(size);
    const n = await files.read(file, this.offset, buffer);
    if (n < size) throw new Error(`${segment.name}: ${n} of ${size} durable bytes readable at offset ${this.offset} (file shrank?)`);
    const records: LogRecord[] = [];
    let point = this.point;
    let at = 0;
    while (at < n) {
      const result = decodeRecordAt(buffer, at);
      if (result.kind === "short") break;
      const where = `${segment.name} offset ${this.offset + at} (where seq ${point === null ? this.nextSeq : point.seq + 1} belongs)`;
      let reason = result.kind === "invalid" ? result.reason : null;
      if (reason === null && result.kind === "record") {
        const record = result.record;
        if (point === null) {
          if (record.seq !== this.nextSeq) reason = `holds seq ${record.seq}, not seq ${this.nextSeq}`;
        } else {
          reason = invalidSuccessor(point, record);
        }
      }
      if (reason !== null || result.kind !== "record") {
        // Return the good records before it; the next read starts at the bad one and fails.
        if (records.length > 0) break;
        if (this.hinted && at === 0) {
          // The position's segment/offset did not match its seq: find the seq instead.
          this.hinted = false;
          this.segment = null;
          throw retry;
        }
        throw new Error(`${where}: ${reason}`);
      }
      if (records.length > 0 && at + result.size > maxBytes) break;
      records.push(result.record);
      point = chainPointOf(result.record);
      at += result.size;
    }
    this.hinted = false;
    if (records.length === 0) throw new Error(`${segment.name} offset ${this.offset}: no whole record in ${n} durable bytes`);
    const last = records[records.length - 1]!;
    this.point = point;
    const chunk = buffer.subarray(0, at);
    this.offset += at;
    this.nextSeq = last.seq + 1;
    return { bytes: chunk, records, next: this.position };
  }

  private async open(segment: Segment): Promise<LogFile> {
    if (this.file !== null && this.fileSegment === segment.firstSeq) return this.file;
    if (this.file !== null) await files.close(this.file).catch(() => {});
    this.file = null;
    try {
      this.file = await files.open(this.store.dir, segment.name, false);
    } catch (error) {
      const errno = error instanceof FileError ? error.errno : 5;
      throw new Error(`seq ${this.nextSeq}: cannot open ${segment.name} (${errnoMessage(errno)}); released?`);
    }
    if (this.closed) {
      // Closed while the open ran (an applier closed mid-read): nothing else would close it.
      await files.close(this.file).catch(() => {});
      this.file = null;
      throw new Error("the reader was closed");
    }
    this.fileSegment = segment.firstSeq;
    return this.file;
  }

  /** Finds the segment and offset of `nextSeq` (a scan of one segment's headers). */
  private async locate(table: Segment[]): Promise<void> {
    const first = this.store.first;
    if (this.nextSeq < first) throw new Error(`seq ${this.nextSeq} is no longer in the log (released; the log starts at seq ${first})`);
    let segment = table[0];
    for (const s of table) if (s.firstSeq <= this.nextSeq) segment = s;
    if (segment === undefined) {
      this.segment = this.nextSeq;
      this.offset = 0;
      return;
    }
    this.segment = segment.firstSeq;
    if (this.nextSeq === segment.firstSeq) {
      this.offset = 0;
      return;
    }
    const file = await this.open(segment);
    const scan = await scanSegment(file, segment.firstSeq, CHAIN_ORIGIN, this.nextSeq - 1);
    if (scan.point.seq !== this.nextSeq - 1) {
      throw new Error(`${segment.name}: cannot find seq ${this.nextSeq} (${scan.problem?.reason ?? "segment ends before it"})`);
    }
    this.offset = scan.validBytes;
    this.point = this.point ?? scan.point;
  }
}

/** Thrown when a position's segment/offset hint was wrong: locate by seq and read again. */
const retry = new Error("retry");
