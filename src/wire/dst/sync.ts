/**
 * @module wire/dst/sync — the payloads of SYNC, the request a new (or repaired) secondary uses
 * to copy its primary's disk before it ships the log (docs/protocol.md §12). Pure: encode and
 * decode, never throws on peer input (decoders return a reason), no I/O.
 *
 * Request payload (SYNC_REQUEST_SIZE = 40 bytes, big-endian u64 each): kind (1 BEGIN, 2 COPY),
 * keepFrom (BEGIN: the seq after which the primary must keep its log; 0 = its own sync point),
 * then that record's chain value, Lamport stamp and generation (a fork repair names its last
 * record in common with the primary: the primary checks that its log continues it).
 * COPY: the header's offset/length are the disk range wanted; the reply carries at most
 * `length` data bytes and says where it stopped.
 *
 * BEGIN reply (48 bytes): the sync point — seq, chain, Lamport, generation of the record every
 * later read of the disk includes — then the disk's size and the primary's durable seq.
 * COPY reply: end (the range [offset, end) is covered), durable (the primary's durable seq
 * once the reads completed: replaying the log through it makes the copy consistent), count,
 * then `count` runs (offset, length) of data and their bytes back to back. Everything in
 * [offset, end) outside the runs reads as zeroes on the primary (holes, zero extents).
 */
import { readU64, writeU64 } from "./bytes.ts";
import { SYNC_BEGIN_REPLY_SIZE, SYNC_COPY_PREFIX, SYNC_MAX_RUNS, SYNC_REQUEST_SIZE, SYNC_RUN_SIZE, SyncKind } from "./constants.ts";

const U53 = Number.MAX_SAFE_INTEGER;

export interface SyncRequest {
  kind: (typeof SyncKind)[keyof typeof SyncKind];
  /** BEGIN: 0, or the point (seq > 0) the log must be kept after. */
  keepFrom: number;
  chain: bigint;
  lamport: number;
  generation: number;
}

export interface SyncPoint {
  seq: number;
  chain: bigint;
  lamport: number;
  generation: number;
}

export interface SyncBegin {
  point: SyncPoint;
  size: number;
  durable: number;
}

export interface SyncRun {
  offset: number;
  length: number;
  /** A view into the reply payload (decode) or the bytes to send (encode). */
  data: Uint8Array;
}

export interface SyncCopy {
  end: number;
  durable: number;
  runs: SyncRun[];
}

export function encodeSyncRequest(r: SyncRequest): Uint8Array {
  const out = new Uint8Array(SYNC_REQUEST_SIZE);
  writeU64(out, 0, r.kind);
  writeU64(out, 8, r.keepFrom);
  new DataView(out.buffer).setBigUint64(16, r.chain, false);
  writeU64(out, 24, r.lamport);
  writeU64(out, 32, r.generation);
  return out;
}

export function decodeSyncRequest(payload: Uint8Array): SyncRequest | string {
  if (payload.length !== SYNC_REQUEST_SIZE) return `SYNC payload length ${payload.length} is not ${SYNC_REQUEST_SIZE}`;
  const kind = readU64(payload, 0);
  const [keepFrom, lamport, generation] = [8, 24, 32].map((at) => readU64(payload, at)) as [number, number, number];
  if (kind !== SyncKind.BEGIN && kind !== SyncKind.COPY) return `SYNC kind ${kind} is not 1 (BEGIN) or 2 (COPY)`;
  if (keepFrom > U53 || lamport > U53 || generation > U53) return "SYNC request field exceeds 2^53";
  const chain = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getBigUint64(16, false);
  return { kind, keepFrom, chain, lamport, generation };
}

export function encodeSyncBegin(b: SyncBegin): Uint8Array {
  const out = new Uint8Array(SYNC_BEGIN_REPLY_SIZE);
  writeU64(out, 0, b.point.seq);
  new DataView(out.buffer).setBigUint64(8, b.point.chain, false);
  writeU64(out, 16, b.point.lamport);
  writeU64(out, 24, b.point.generation);
  writeU64(out, 32, b.size);
  writeU64(out, 40, b.durable);
  return out;
}

export function decodeSyncBegin(payload: Uint8Array): SyncBegin | string {
  if (payload.length !== SYNC_BEGIN_REPLY_SIZE) return `SYNC BEGIN reply of ${payload.length} bytes is not ${SYNC_BEGIN_REPLY_SIZE}`;
  const fields = [0, 16, 24, 32, 40].map((at) => readU64(payload, at));
  if (fields.some((v) => v > U53)) return "SYNC BEGIN reply field exceeds 2^53";
  const [seq, lamport, generation, size, durable] = fields as [number, number, number, number, number];
  if (durable < seq) return `SYNC BEGIN reply: sync point seq ${seq} is beyond the durable seq ${durable}`;
  const chain = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getBigUint64(8, false);
  return { point: { seq, chain, lamport, generation }, size, durable };
}

/** Bytes a COPY reply with these runs takes. */
export function syncCopySize(runs: readonly { length: number }[]): number {
  let total = SYNC_COPY_PREFIX + runs.length * SYNC_RUN_SIZE;
  for (const r of runs) total += r.length;
  return total;
}

export function encodeSyncCopy(c: SyncCopy): Uint8Array {
  const out = new Uint8Array(syncCopySize(c.runs));
  writeU64(out, 0, c.end);
  writeU64(out, 8, c.durable);
  writeU64(out, 16, c.runs.length);
  let at = SYNC_COPY_PREFIX;
  for (const r of c.runs) {
    writeU64(out, at, r.offset);
    writeU64(out, at + 8, r.length);
    at += SYNC_RUN_SIZE;
  }
  for (const r of c.runs) {
    out.set(r.data.subarray(0, r.length), at);
    at += r.length;
  }
  return out;
}

/**
 * Decodes a COPY reply to a request for [offset, offset + length): the runs must lie in
 * [offset, end), in order, not overlapping, and their bytes must fill the payload exactly.
 */
export function decodeSyncCopy(payload: Uint8Array, offset: number, length: number): SyncCopy | string {
  if (payload.length < SYNC_COPY_PREFIX) return `SYNC COPY reply of ${payload.length} bytes is shorter than its ${SYNC_COPY_PREFIX}-byte prefix`;
  const end = readU64(payload, 0);
  const durable = readU64(payload, 8);
  const count = readU64(payload, 16);
  if (end > U53 || durable > U53) return "SYNC COPY reply field exceeds 2^53";
  if (end <= offset || end > offset + length) return `SYNC COPY reply end ${end} is outside (${offset}, ${offset + length}]`;
  if (count > SYNC_MAX_RUNS) return `SYNC COPY reply lists ${count} runs, more than ${SYNC_MAX_RUNS}`;
  if (payload.length < SYNC_COPY_PREFIX + count * SYNC_RUN_SIZE) return `SYNC COPY reply too short for its ${count} runs`;
  const runs: SyncRun[] = [];
  let data = SYNC_COPY_PREFIX + count * SYNC_RUN_SIZE;
  let after = offset;
  for (let i = 0; i < count; i++) {
    const at = SYNC_COPY_PREFIX + i * SYNC_RUN_SIZE;
    const runOffset = readU64(payload, at);
    const runLength = readU64(payload, at + 8);
    if (runOffset < after || runLength === 0 || runOffset + runLength > end) return `SYNC COPY run ${i} [${runOffset}, +${runLength}) is out of order or outside [${offset}, ${end})`;
    if (data + runLength > payload.length) return `SYNC COPY run ${i} needs ${runLength} bytes, the payload has ${payload.length - data} left`;
    runs.push({ offset: runOffset, length: runLength, data: payload.subarray(data, data + runLength) });
    data += runLength;
    after = runOffset + runLength;
  }
  if (data !== payload.length) return `SYNC COPY reply has ${payload.length - data} bytes after its runs`;
  return { end, durable, runs };
}
