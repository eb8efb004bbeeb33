/**
 * @module wire/dst/fetch — the payloads of FETCH, the request a secondary uses to copy its
 * primary's replication log (docs/protocol.md §11). Pure: encode and decode, never throws on
 * peer input (decoders return a reason), no I/O.
 *
 * Request payload (FETCH_REQUEST_SIZE = 48 bytes, big-endian u64 each):
 *   0 segment      the segment (its first seq) where the wanted seq starts, 0 = unknown
 *   8 offset       byte offset of the wanted seq in that segment
 *   16 applied     the highest seq the secondary applied durably (the primary may release below it)
 *   24 prevChain   chain value of the record before the wanted seq (0 before seq 1)
 *   32 prevLamport its Lamport stamp
 *   40 prevGen     its generation
 * The header's offset is the wanted seq, its length the most record bytes wanted.
 *
 * Reply payload on success (status 0): FETCH_REPLY_PREFIX = 48 bytes (next seq, next segment,
 * next offset, the primary's durable seq, the primary's generation, the durable log bytes after
 * the next position — the secondary's lag in bytes), then whole records back to back (possibly
 * none). On failure: a utf-8 reason (at most MESSAGE_MAX bytes).
 *
 * Compressed reply (header flag ZSTD, only to a request that carried it, §11.1): the same
 * prefix, the u64 byte count of the records, then one zstd frame of the records. The decoder
 * checks that count against what was asked before decompressing, has the frame decompressed
 * into at most that many bytes (the zstd work itself is injected — lib/zstd.ts — so this
 * codec stays pure), and refuses a frame that is corrupt or yields another count: a hostile
 * or broken primary cannot make the secondary allocate more than one answer, and bad input is
 * a reason (fetch again), never records. The records' own chained checksums are over the
 * uncompressed bytes (docs/replication.md §2) and are checked after this, as for a plain reply.
 */
import { readU64, writeU64 } from "./bytes.ts";
import { FETCH_REPLY_PREFIX, FETCH_REQUEST_SIZE, FETCH_ZSTD_LENGTH_SIZE, Flag, MESSAGE_MAX } from "./constants.ts";

export interface FetchRequest {
  /** First seq wanted (the header's offset). */
  seq: number;
  /** Most record bytes wanted (the header's length). */
  maxBytes: number;
  segment: number;
  offset: number;
  applied: number;
  prevChain: bigint;
  prevLamport: number;
  prevGeneration: number;
  /** The request carried Flag.ZSTD: a compressed reply is welcome. */
  zstd?: boolean;
  /**
   * The request carried Flag.FOLLOWS: the position fields name an earlier FETCH (the
   * predecessor), and the records wanted are the ones after that FETCH's answer (§11.2).
   */
  follows?: boolean;
}

export interface FetchReply {
  nextSeq: number;
  nextSegment: number;
  nextOffset: number;
  /** The primary's last durable seq (lag = durable − what the secondary holds). */
  durable: number;
  generation: number;
  /** Durable log bytes on the primary after the next position (what is still to fetch). */
  behind: number;
  /** Whole records (a view into the payload). */
  records: Uint8Array;
}

const U53 = Number.MAX_SAFE_INTEGER;

export function encodeFetchRequest(r: Omit<FetchRequest, "seq" | "maxBytes">): Uint8Array {
  const out = new Uint8Array(FETCH_REQUEST_SIZE);
  writeU64(out, 0, r.segment);
  writeU64(out, 8, r.offset);
  writeU64(out, 16, r.applied);
  new DataView(out.buffer).setBigUint64(24, r.prevChain, false);
  writeU64(out, 32, r.prevLamport);
  writeU64(out, 40, r.prevGeneration);
  return out;
}

export function decodeFetchRequest(seq: number, maxBytes: number, payload: Uint8Array, flags = 0): FetchRequest | string {
  if (payload.length !== FETCH_REQUEST_SIZE) return `FETCH payload length ${payload.length} is not ${FETCH_REQUEST_SIZE}`;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const fields = [0, 8, 16, 32, 40].map((at) => readU64(payload, at));
  if (fields.some((v) => v > U53)) return "FETCH position field exceeds 2^53";
  const [segment, offset, applied, prevLamport, prevGeneration] = fields as [number, number, number, number, number];
  if (seq < 1) return "FETCH seq must be at least 1";
  if (applied >= seq) return `FETCH applied seq ${applied} is not below the wanted seq ${seq}`;
  const request: FetchRequest = { seq, maxBytes, segment, offset, applied, prevChain: view.getBigUint64(24, false), prevLamport, prevGeneration };
  if ((flags & Flag.ZSTD) !== 0) request.zstd = true;
  if ((flags & Flag.FOLLOWS) !== 0) request.follows = true;
  return request;
}

/** The reply payload: the prefix written, `records` copied behind it. */
export function encodeFetchReply(r: Omit<FetchReply, "records">, records: Uint8Array, target?: Uint8Array): Uint8Array {
  const out = target ?? new Uint8Array(FETCH_REPLY_PREFIX + records.length);
  writeU64(out, 0, r.nextSeq);
  writeU64(out, 8, r.nextSegment);
  writeU64(out, 16, r.nextOffset);
  writeU64(out, 24, r.durable);
  writeU64(out, 32, r.generation);
  writeU64(out, 40, r.behind);
  out.set(records, FETCH_REPLY_PREFIX);
  return out;
}

/** Decompresses one frame into at most `length` bytes, or says why it cannot (lib/zstd.ts). */
export type Inflate = (frame: Uint8Array, length: number) => Uint8Array | string;
/** Compresses bytes into one frame (lib/zstd.ts). */
export type Deflate = (bytes: Uint8Array) => Uint8Array;

const noInflate: Inflate = () => "compressed FETCH reply, but no decompressor";

/**
 * A successful reply's payload. `flags` are the reply header's (Flag.ZSTD: compressed);
 * `maxRecordBytes` is what the request asked for — a compressed reply declaring more is
 * refused before anything is decompressed.
 */
export function decodeFetchReply(payload: Uint8Array, flags = 0, maxRecordBytes = Number.MAX_SAFE_INTEGER, inflate = noInflate): FetchReply | string {
  if (payload.length < FETCH_REPLY_PREFIX) return `FETCH reply of ${payload.length} bytes is shorter than its ${FETCH_REPLY_PREFIX}-byte prefix`;
  const fields = [0, 8, 16, 24, 32, 40].map((at) => readU64(payload, at));
  if (fields.some((v) => v > U53)) return "FETCH reply field exceeds 2^53";
  const [nextSeq, nextSegment, nextOffset, durable, generation, behind] = fields as [number, number, number, number, number, number];
  const prefix = { nextSeq, nextSegment, nextOffset, durable, generation, behind };
  if ((flags & Flag.ZSTD) === 0) return { ...prefix, records: payload.subarray(FETCH_REPLY_PREFIX) };
  const records = decompressRecords(payload.subarray(FETCH_REPLY_PREFIX), maxRecordBytes, inflate);
  return typeof records === "string" ? records : { ...prefix, records };
}

/**
 * The compressed form of a plain reply payload (prefix + records), or null when compressing
 * does not make it smaller (random data, or no records): then the plain payload is sent.
 */
export function compressFetchReply(plain: Uint8Array, deflate: Deflate): Uint8Array | null {
  const records = plain.subarray(FETCH_REPLY_PREFIX);
  if (records.length === 0) return null;
  const frame = deflate(records);
  const size = FETCH_REPLY_PREFIX + FETCH_ZSTD_LENGTH_SIZE + frame.length;
  if (size >= plain.length) return null;
  const out = new Uint8Array(size);
  out.set(plain.subarray(0, FETCH_REPLY_PREFIX));
  writeU64(out, FETCH_REPLY_PREFIX, records.length);
  out.set(frame, FETCH_REPLY_PREFIX + FETCH_ZSTD_LENGTH_SIZE);
  return out;
}

/** The records of a compressed reply (after the prefix): bounded, checked, or a reason. */
function decompressRecords(body: Uint8Array, maxRecordBytes: number, inflate: Inflate): Uint8Array | string {
  if (body.length < FETCH_ZSTD_LENGTH_SIZE) return `compressed FETCH reply of ${body.length} bytes after the prefix has no record length`;
  const length = readU64(body, 0);
  if (length === 0 || length > maxRecordBytes) {
    return `compressed FETCH reply declares ${length} bytes of records; 1 to ${maxRecordBytes} were asked for`;
  }
  const out = inflate(body.subarray(FETCH_ZSTD_LENGTH_SIZE), length);
  if (typeof out === "string") return `compressed FETCH reply is corrupt or larger than its declared ${length} bytes: ${out}`;
  if (out.length !== length) return `compressed FETCH reply decompressed to ${out.length} bytes, not its declared ${length}`;
  return out;
}

/** A failed FETCH's reason, cut to MESSAGE_MAX bytes. */
export function encodeFetchReason(reason: string): Uint8Array {
  const bytes = new TextEncoder().encode(reason);
  return bytes.length <= MESSAGE_MAX ? bytes : bytes.subarray(0, MESSAGE_MAX);
}

export function decodeFetchReason(payload: Uint8Array): string {
  return new TextDecoder("utf-8", { fatal: false }).decode(payload.subarray(0, MESSAGE_MAX));
}
