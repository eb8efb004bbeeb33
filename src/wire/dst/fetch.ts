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
 */
import { readU64, writeU64 } from "./bytes.ts";
import { FETCH_REPLY_PREFIX, FETCH_REQUEST_SIZE, MESSAGE_MAX } from "./constants.ts";

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

export function decodeFetchRequest(seq: number, maxBytes: number, payload: Uint8Array): FetchRequest | string {
  if (payload.length !== FETCH_REQUEST_SIZE) return `FETCH payload length ${payload.length} is not ${FETCH_REQUEST_SIZE}`;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const fields = [0, 8, 16, 32, 40].map((at) => readU64(payload, at));
  if (fields.some((v) => v > U53)) return "FETCH position field exceeds 2^53";
  const [segment, offset, applied, prevLamport, prevGeneration] = fields as [number, number, number, number, number];
  if (seq < 1) return "FETCH seq must be at least 1";
  if (applied >= seq) return `FETCH applied seq ${applied} is not below the wanted seq ${seq}`;
  return { seq, maxBytes, segment, offset, applied, prevChain: view.getBigUint64(24, false), prevLamport, prevGeneration };
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

export function decodeFetchReply(payload: Uint8Array): FetchReply | string {
  if (payload.length < FETCH_REPLY_PREFIX) return `FETCH reply of ${payload.length} bytes is shorter than its ${FETCH_REPLY_PREFIX}-byte prefix`;
  const fields = [0, 8, 16, 24, 32, 40].map((at) => readU64(payload, at));
  if (fields.some((v) => v > U53)) return "FETCH reply field exceeds 2^53";
  const [nextSeq, nextSegment, nextOffset, durable, generation, behind] = fields as [number, number, number, number, number, number];
  return { nextSeq, nextSegment, nextOffset, durable, generation, behind, records: payload.subarray(FETCH_REPLY_PREFIX) };
}

/** A failed FETCH's reason, cut to MESSAGE_MAX bytes. */
export function encodeFetchReason(reason: string): Uint8Array {
  const bytes = new TextEncoder().encode(reason);
  return bytes.length <= MESSAGE_MAX ? bytes : bytes.subarray(0, MESSAGE_MAX);
}

export function decodeFetchReason(payload: Uint8Array): string {
  return new TextDecoder("utf-8", { fatal: false }).decode(payload.subarray(0, MESSAGE_MAX));
}
