/**
 * @module replication/segments — the segment files of a log directory: their names
 * (`log-<first seq, 16 digits>.dstl`), what the store knows of each, and the scan that reads
 * one back record by record with bounded memory (the recovery and the reader use it).
 * docs/replication.md §3.
 */
import { files, type LogFile } from "./files.ts";
import {
  CHAIN_ORIGIN,
  chainPointOf,
  decodeRecordAt,
  invalidHeader,
  invalidSuccessor,
  decodeHeader,
  MAX_RECORD_SIZE,
  RECORD_HEADER_SIZE,
  RECORD_MAGIC,
  type ChainPoint,
  type LogRecord,
  type RecordHeader,
} from "./record.ts";

const NAME = /^log-(\d{16})\.dstl$/;

export function segmentName(firstSeq: number): string {
  return `log-${String(firstSeq).padStart(16, "0")}.dstl`;
}

/** The first sequence number a segment name claims, or null for any other file. */
export function parseSegmentName(name: string): number | null {
  const match = NAME.exec(name);
  if (match === null) return null;
  const seq = Number(match[1]);
  return Number.isSafeInteger(seq) && seq >= 1 ? seq : null;
}

/** What the store knows of one segment. */
export interface Segment {
  name: string;
  /** Sequence number of its first record (from its name). */
  firstSeq: number;
  /** Bytes written or being written (the append position). */
  size: number;
  /** Bytes known durable. */
  durableSize: number;
  /** Last sequence number written into it (firstSeq - 1 when none). */
  lastSeq: number;
  /** Last sequence number known durable in it (firstSeq - 1 when none). */
  durableLast: number;
}

/** How a scan of one segment ended. */
export interface ScanEnd {
  /** Bytes of valid records from the start. */
  validBytes: number;
  /** Chain point after the last valid record (the starting point when none). */
  point: ChainPoint;
  records: number;
  /** Size of the file. */
  fileSize: number;
  /**
   * Why the scan stopped before the end of the file, or null when it reached the end.
   * `incomplete`: the file ends inside the record; `beyondLimit`: the record is past `limit`.
   */
  problem: null | { offset: number; reason: string; incomplete: boolean; beyondLimit: boolean };
}

/** Read size of a scan: large enough to amortize a call, small enough to bound memory. */
const SCAN_CHUNK = 4 << 20;

/**
 * Reads `file` from its start, checking every record in itself and as the successor of the
 * one before (the first must carry `firstSeq`; `after` is what it must follow, CHAIN_ORIGIN
 * when unknown). Stops before a record whose seq is above `limit`. Calls `onRecord` for each
 * valid record (payload views are only valid during the call). Holds at most
 * SCAN_CHUNK + MAX_RECORD_SIZE bytes.
 */
export async function scanSegment(
  file: LogFile,
  firstSeq: number,
  after: ChainPoint,
  limit = Number.MAX_SAFE_INTEGER,
  onRecord?: (record: LogRecord, offset: number) => void,
): Promise<ScanEnd> {
  const fileSize = await files.size(file);
  let point = after;
  let records = 0;
  let offset = 0;
  let buffer = new Uint8Array(0);
  let bufferAt = 0;
  while (offset < fileSize) {
    const at = offset - bufferAt;
    let result = decodeRecordAt(buffer, at);
    if (result.kind === "short") {
      const want = Math.min(Math.max(result.need, SCAN_CHUNK), MAX_RECORD_SIZE + SCAN_CHUNK, fileSize - offset);
      if (want < result.need || want <= buffer.length - at) {
        return end(offset, `file ends inside the record at offset ${offset} (${fileSize - offset} of ${result.need} bytes)`, true, false);
      }
      buffer = new Uint8Array(want);
      const n = await files.read(file, offset, buffer);
      if (n < want) buffer = buffer.subarray(0, n);
      bufferAt = offset;
      result = decodeRecordAt(buffer, 0);
      if (result.kind === "short") {
        return end(offset, `file ends inside the record at offset ${offset} (${n} of ${result.need} bytes)`, true, false);
      }
    }
    if (result.kind === "invalid") return end(offset, result.reason, false, false);
    const record = result.record;
    const expected = point.seq === 0 ? firstSeq : point.seq + 1;
    const bad =
      record.seq !== expected
        ? `record seq ${record.seq} where seq ${expected} belongs`
        : invalidSuccessor(point.seq === 0 ? CHAIN_ORIGIN : point, record);
    if (bad !== null) return end(offset, bad, false, false);
    if (record.seq > limit) return end(offset, `record seq ${record.seq} is past seq ${limit}`, false, true);
    onRecord?.(record, offset);
    point = chainPointOf(record);
    records++;
    offset += result.size;
  }
  return { validBytes: offset, point, records, fileSize, problem: null };

  function end(at: number, reason: string, incomplete: boolean, beyondLimit: boolean): ScanEnd {
    return { validBytes: at, point, records, fileSize, problem: { offset: at, reason, incomplete, beyondLimit } };
  }
}

/**
 * Looks past a bad record at `from` (it should have been seq `seq`, after the intact record
 * `last`) for a later record header that is intact in itself and was written after record
 * `seq` was known durable (its `committed` ≥ seq). Finding one proves the bad record had been
 * made durable, so it is corruption, not a torn write; a torn tail never has such a successor
 * (docs/replication.md §3.3). A torn record's payload is guest data, which may hold records of
 * other logs (a guest running dstd, a copied log directory): a witness must also be of this
 * log's future — a seq after `seq` but no further than the bytes in between leave room for
 * (each record takes a header at least), a generation and Lamport time not before `last`'s.
 * Returns its offset or -1.
 */
export async function findDurableSuccessor(file: LogFile, from: number, seq: number, last: ChainPoint, fileSize: number): Promise<number> {
  const magic = new Uint8Array(4);
  new DataView(magic.buffer).setUint32(0, RECORD_MAGIC);
  const witness = (header: RecordHeader, at: number): boolean =>
    header.committed >= seq &&
    header.seq > seq &&
    header.seq - seq <= Math.floor((at - from) / RECORD_HEADER_SIZE) &&
    header.generation >= last.generation &&
    header.lamport >= last.lamport;
  let position = from + 1;
  while (position + RECORD_HEADER_SIZE <= fileSize) {
    const length = Math.min(SCAN_CHUNK + RECORD_HEADER_SIZE, fileSize - position);
    const buffer = new Uint8Array(length);
    const n = await files.read(file, position, buffer);
    const view = Buffer.from(buffer.buffer, buffer.byteOffset, n);
    let i = view.indexOf(magic);
    while (i >= 0 && i + RECORD_HEADER_SIZE <= n) {
      if (invalidHeader(buffer, i) === null && witness(decodeHeader(buffer, i), position + i)) return position + i;
      i = view.indexOf(magic, i + 1);
    }
    if (n < length) break;
    position += Math.max(1, n - RECORD_HEADER_SIZE + 1);
  }
  return -1;
}
