/**
 * @module replication/record — the replication log record: layout, encoding, validation and
 * the chain that links every record to the one before it (docs/replication.md §2). Pure: no
 * I/O, no timers, no clock. Peer and disk input never makes it throw; a bad record yields a
 * reason naming its sequence number and what is wrong. Our own values that do not fit are
 * programmer errors (assert).
 *
 * Layout (big-endian, like the DST wire; 88-byte header, then `payloadLength` bytes):
 *
 *   0 u32 magic 0x4453544c "DSTL"   4 u8 version (1)   5 u8 op   6 u16 flags
 *   8 u32 payloadLength             12 u32 reserved (0)
 *  16 u64 seq         24 u64 generation   32 u64 lamport     40 u64 offset
 *  48 u64 length      56 u64 committed    64 u64 payloadDigest
 *  72 u64 prev        80 u64 chain = xxh3-64(bytes 0..80)
 *
 * `payloadDigest` is xxh3-64 of the payload, so `chain` covers the payload too without hashing
 * header and payload as one buffer; `prev` is the chain of the record before, so `chain`
 * commits to the whole history: a torn, corrupted, reordered or forked log is found at the
 * first record that differs. u64 fields hold JS numbers: values above 2^53-1 are refused.
 */
import { assert } from "../lib/assert.ts";
import { readU16, readU32, readU64, writeU16, writeU32, writeU64 } from "../wire/dst/bytes.ts";

export const RECORD_MAGIC = 0x4453544c;
export const RECORD_VERSION = 1;
export const RECORD_HEADER_SIZE = 88;
/** Largest payload one record carries: larger writes become several records (bounds every reader). */
export const MAX_RECORD_PAYLOAD = 1 << 20;
/** The largest encoded record. */
export const MAX_RECORD_SIZE = RECORD_HEADER_SIZE + MAX_RECORD_PAYLOAD;

/** Byte offsets of the header fields. */
export const FIELD = {
  magic: 0,
  version: 4,
  op: 5,
  flags: 6,
  payloadLength: 8,
  reserved: 12,
  seq: 16,
  generation: 24,
  lamport: 32,
  offset: 40,
  length: 48,
  committed: 56,
  payloadDigest: 64,
  prev: 72,
  chain: 80,
} as const;

export const RecordOp = {
  /** `length` bytes of payload at `offset`. */
  WRITE: 1,
  /** Discard [offset, offset+length): reads after may return zeroes or the old data. */
  TRIM: 2,
  /** [offset, offset+length) reads as zeroes. */
  ZERO: 3,
  /** The disk becomes `length` bytes long (offset 0). */
  RESIZE: 4,
  /** No effect on the disk; a note in the order of events (flags say which). */
  MARK: 5,
} as const;
export type RecordOpCode = (typeof RecordOp)[keyof typeof RecordOp];

export const RecordFlag = {
  /** ZERO: the range must stay allocated (NBD_CMD_FLAG_NO_HOLE). */
  NO_HOLE: 1,
  /** WRITE: a resync copy of a region the primary wrote while it was not logging. */
  RESYNC: 1,
  /** MARK: writes were made without logging before this record: inconsistent from here. */
  RESYNC_BEGIN: 1,
  /** MARK: every region written without logging has been copied into the log: consistent again. */
  RESYNC_END: 2,
  /** MARK: a promotion starts this record's generation here (docs/replication.md §11). */
  GENERATION: 4,
} as const;

/** Flags each op accepts. */
const FLAGS_ALLOWED: Readonly<Record<number, number>> = {
  [RecordOp.WRITE]: RecordFlag.RESYNC,
  [RecordOp.TRIM]: 0,
  [RecordOp.ZERO]: RecordFlag.NO_HOLE,
  [RecordOp.RESIZE]: 0,
  [RecordOp.MARK]: RecordFlag.RESYNC_BEGIN | RecordFlag.RESYNC_END | RecordFlag.GENERATION,
};

const OP_NAMES: Readonly<Record<number, string>> = {
  [RecordOp.WRITE]: "write",
  [RecordOp.TRIM]: "trim",
  [RecordOp.ZERO]: "write-zeroes",
  [RecordOp.RESIZE]: "resize",
  [RecordOp.MARK]: "mark",
};

export function opName(op: number): string {
  return OP_NAMES[op] ?? `op ${op}`;
}

/** What a writer chooses for one record; the codec derives the rest. */
export interface RecordFields {
  op: RecordOpCode;
  flags: number;
  seq: number;
  generation: number;
  lamport: number;
  offset: number;
  length: number;
  /** Highest sequence number known durable when this record was written (< seq). */
  committed: number;
}

/** A decoded header (and, once read, its payload). */
export interface RecordHeader extends RecordFields {
  payloadLength: number;
  payloadDigest: bigint;
  prev: bigint;
  chain: bigint;
}

export interface LogRecord extends RecordHeader {
  /** WRITE data (`length` bytes); empty for every other op. */
  payload: Uint8Array;
}

/** Where the chain stands after a record: what the next record must continue from. */
export interface ChainPoint {
  /** Sequence number of the last record (0 before the first). */
  seq: number;
  /** Its chain value (the next record's `prev`). */
  chain: bigint;
  lamport: number;
  generation: number;
}

export const CHAIN_ORIGIN: ChainPoint = { seq: 0, chain: 0n, lamport: 0, generation: 0 };

export function chainPointOf(header: RecordHeader): ChainPoint {
  return { seq: header.seq, chain: header.chain, lamport: header.lamport, generation: header.generation };
}

export function encodedSize(header: { payloadLength: number }): number {
  return RECORD_HEADER_SIZE + header.payloadLength;
}

const SCRATCH_HEADER = new Uint8Array(RECORD_HEADER_SIZE);
const SCRATCH_CHAINED = SCRATCH_HEADER.subarray(0, FIELD.chain);

function digest(bytes: Uint8Array): bigint {
  return Bun.hash.xxHash3(bytes);
}

function writeBig64(t: Uint8Array, at: number, v: bigint): void {
  writeU32(t, at, Number(v >> 32n));
  writeU32(t, at + 4, Number(v & 0xffffffffn));
}

function readBig64(s: Uint8Array, at: number): bigint {
  return (BigInt(readU32(s, at)) << 32n) | BigInt(readU32(s, at + 4));
}

function checkU64(name: string, v: number): void {
  // The message is built only on failure: this runs six times per record appended.
  if (!(Number.isSafeInteger(v) && v >= 0)) assert(false, `record ${name} ${v} is not a u64 safe integer`);
}

/**
 * Writes the 88-byte header of the record (`fields`, `payload`) that follows `prev` into
 * `target` at `at`, and returns its chain value. The payload is not copied: the caller writes
 * it after the header (writev). Only dstd's own values reach here, so misuse asserts.
 */
export function encodeHeader(
  fields: RecordFields,
  payload: Uint8Array,
  prev: bigint,
  target: Uint8Array,
  at = 0,
  /** xxh3-64 of `payload` when the caller has it already (one hash pass per write, docs/replication.md §9). */
  payloadDigest?: bigint,
): bigint {
  // Messages are built only on failure (`if (!…) assert(false, …)`): this runs per record appended.
  assert(target.length - at >= RECORD_HEADER_SIZE, "no room for a record header");
  checkU64("seq", fields.seq);
  checkU64("generation", fields.generation);
  checkU64("lamport", fields.lamport);
  checkU64("offset", fields.offset);
  checkU64("length", fields.length);
  checkU64("committed", fields.committed);
  assert(fields.seq >= 1 && fields.generation >= 1, "record seq and generation start at 1");
  if (!(fields.committed < fields.seq)) assert(false, `record ${fields.seq} claims committed ${fields.committed}`);
  if (((FLAGS_ALLOWED[fields.op] ?? -1) & fields.flags) !== fields.flags) assert(false, `flags ${fields.flags} on ${opName(fields.op)}`);
  const payloadLength = fields.op === RecordOp.WRITE ? fields.length : 0;
  if (payload.length !== payloadLength) assert(false, `payload of ${payload.length} bytes for ${opName(fields.op)} of ${fields.length}`);
  if (payloadLength > MAX_RECORD_PAYLOAD) assert(false, `record payload ${payloadLength} over ${MAX_RECORD_PAYLOAD}`);
  assert(fields.op !== RecordOp.WRITE || payloadLength > 0, "empty write record");
  // Built in a scratch header whose chained prefix is a view made once: two fewer typed-array
  // allocations per record appended (bun --cpu-prof, docs/replication.md §9).
  const h = SCRATCH_HEADER;
  writeU32(h, FIELD.magic, RECORD_MAGIC);
  h[FIELD.version] = RECORD_VERSION;
  h[FIELD.op] = fields.op;
  writeU16(h, FIELD.flags, fields.flags);
  writeU32(h, FIELD.payloadLength, payloadLength);
  writeU32(h, FIELD.reserved, 0);
  writeU64(h, FIELD.seq, fields.seq);
  writeU64(h, FIELD.generation, fields.generation);
  writeU64(h, FIELD.lamport, fields.lamport);
  writeU64(h, FIELD.offset, fields.offset);
  writeU64(h, FIELD.length, fields.length);
  writeU64(h, FIELD.committed, fields.committed);
  writeBig64(h, FIELD.payloadDigest, payloadDigest ?? digest(payload));
  writeBig64(h, FIELD.prev, prev);
  const chain = digest(SCRATCH_CHAINED);
  writeBig64(h, FIELD.chain, chain);
  target.set(h, at);
  return chain;
}

/** The whole record as one buffer (tests, tools; the log writes header and payload apart). */
export function encodeRecord(fields: RecordFields, payload: Uint8Array, prev: bigint): Uint8Array {
  const out = new Uint8Array(RECORD_HEADER_SIZE + payload.length);
  encodeHeader(fields, payload, prev, out, 0);
  out.set(payload, RECORD_HEADER_SIZE);
  return out;
}

/** Reads the header fields at `at` without judging them (see invalidHeader). */
export function decodeHeader(s: Uint8Array, at = 0): RecordHeader & { magic: number; version: number; reserved: number } {
  return {
    magic: readU32(s, at + FIELD.magic),
    version: s[at + FIELD.version]!,
    op: s[at + FIELD.op]! as RecordOpCode,
    flags: readU16(s, at + FIELD.flags),
    payloadLength: readU32(s, at + FIELD.payloadLength),
    reserved: readU32(s, at + FIELD.reserved),
    seq: readU64(s, at + FIELD.seq),
    generation: readU64(s, at + FIELD.generation),
    lamport: readU64(s, at + FIELD.lamport),
    offset: readU64(s, at + FIELD.offset),
    length: readU64(s, at + FIELD.length),
    committed: readU64(s, at + FIELD.committed),
    payloadDigest: readBig64(s, at + FIELD.payloadDigest),
    prev: readBig64(s, at + FIELD.prev),
    chain: readBig64(s, at + FIELD.chain),
  };
}

/**
 * Why the 88 header bytes at `at` are not a record header this version accepts, or null. The
 * chain value is checked first, so any flipped header bit is reported as a checksum failure
 * before any field is trusted; a reason names the record by its sequence number where the
 * header is intact enough to have one.
 */
export function invalidHeader(s: Uint8Array, at = 0): string | null {
  if (s.length - at < RECORD_HEADER_SIZE) return `record header needs ${RECORD_HEADER_SIZE} bytes, got ${s.length - at}`;
  const magic = readU32(s, at + FIELD.magic);
  if (magic !== RECORD_MAGIC) return `not a log record (magic 0x${magic.toString(16).padStart(8, "0")})`;
  const stored = readBig64(s, at + FIELD.chain);
  const computed = digest(s.subarray(at, at + FIELD.chain));
  const h = decodeHeader(s, at);
  const name = Number.isSafeInteger(h.seq) ? `record seq ${h.seq}` : "record";
  if (stored !== computed) return `${name}: header checksum mismatch (corrupt or torn header)`;
  if (h.version !== RECORD_VERSION) return `${name}: format version ${h.version} (this build reads version ${RECORD_VERSION})`;
  const allowed = FLAGS_ALLOWED[h.op];
  if (allowed === undefined) return `${name}: unknown op ${h.op}`;
  if ((h.flags & ~allowed) !== 0) return `${name}: flags 0x${h.flags.toString(16)} not valid on ${opName(h.op)}`;
  if (h.reserved !== 0) return `${name}: reserved field is ${h.reserved}, not 0`;
  for (const field of ["seq", "generation", "lamport", "offset", "length", "committed"] as const) {
    if (!Number.isSafeInteger(h[field])) return `${name}: ${field} is beyond 2^53`;
  }
  if (h.seq < 1) return "record seq 0 (sequence numbers start at 1)";
  if (h.generation < 1) return `${name}: generation 0 (generations start at 1)`;
  if (h.committed >= h.seq) return `${name}: committed ${h.committed} is not below its own seq`;
  if (!Number.isSafeInteger(h.offset + h.length)) return `${name}: offset ${h.offset} + length ${h.length} overflows`;
  if (h.op === RecordOp.WRITE) {
    if (h.length === 0 || h.length > MAX_RECORD_PAYLOAD) return `${name}: write of ${h.length} bytes (1..${MAX_RECORD_PAYLOAD})`;
    if (h.payloadLength !== h.length) return `${name}: payload of ${h.payloadLength} bytes for a write of ${h.length}`;
  } else if (h.payloadLength !== 0) {
    return `${name}: ${opName(h.op)} carries a ${h.payloadLength}-byte payload`;
  }
  if ((h.op === RecordOp.RESIZE || h.op === RecordOp.MARK) && h.offset !== 0) return `${name}: ${opName(h.op)} with offset ${h.offset}`;
  if (h.op === RecordOp.MARK && (h.length !== 0 || h.flags === 0)) return `${name}: malformed mark`;
  return null;
}

/** Why `payload` is not the payload `header` describes, or null. */
export function invalidPayload(header: RecordHeader, payload: Uint8Array): string | null {
  if (payload.length !== header.payloadLength) {
    return `record seq ${header.seq}: payload of ${payload.length} bytes, header says ${header.payloadLength}`;
  }
  if (digest(payload) !== header.payloadDigest) return `record seq ${header.seq}: payload checksum mismatch`;
  return null;
}

/**
 * Why `header` cannot follow `after` in one log, or null: the next sequence number, the chain
 * value, a Lamport timestamp that never goes back, a generation that never goes back. The
 * origin (seq 0) accepts any first record; a reader that starts mid-log passes the chain
 * point it trusts (e.g. a secondary's persisted position).
 */
export function invalidSuccessor(after: ChainPoint, header: RecordHeader): string | null {
  if (after.seq === 0) return null;
  if (header.seq !== after.seq + 1) {
    return header.seq > after.seq + 1
      ? `gap: record seq ${header.seq} follows seq ${after.seq} (records ${after.seq + 1}..${header.seq - 1} missing)`
      : `record seq ${header.seq} follows seq ${after.seq} (out of order or repeated)`;
  }
  if (header.prev !== after.chain) {
    return `record seq ${header.seq}: chain broken (prev 0x${hex64(header.prev)}, seq ${after.seq} ends 0x${hex64(after.chain)}): the log forked or was replaced`;
  }
  if (header.generation < after.generation) return `record seq ${header.seq}: generation ${header.generation} after ${after.generation}`;
  if (header.lamport <= after.lamport) return `record seq ${header.seq}: Lamport time ${header.lamport} not after ${after.lamport}`;
  return null;
}

export function hex64(v: bigint): string {
  return v.toString(16).padStart(16, "0");
}

/** Outcome of decoding at one position of a buffer. */
export type DecodeResult =
  | { kind: "record"; record: LogRecord; size: number }
  | { kind: "short"; /** bytes needed from `at` to go on */ need: number }
  | { kind: "invalid"; reason: string };

/**
 * Decodes the record at `at` of `s` (header and payload), checking it in itself (not its
 * place in a chain). The payload is a view of `s`, not a copy.
 */
export function decodeRecordAt(s: Uint8Array, at: number): DecodeResult {
  const available = s.length - at;
  if (available < RECORD_HEADER_SIZE) return { kind: "short", need: RECORD_HEADER_SIZE };
  const reason = invalidHeader(s, at);
  if (reason !== null) return { kind: "invalid", reason };
  const header = decodeHeader(s, at);
  const size = RECORD_HEADER_SIZE + header.payloadLength;
  if (available < size) return { kind: "short", need: size };
  const payload = s.subarray(at + RECORD_HEADER_SIZE, at + size);
  const bad = invalidPayload(header, payload);
  if (bad !== null) return { kind: "invalid", reason: bad };
  return { kind: "record", record: toRecord(header, payload), size };
}

function toRecord(h: RecordHeader, payload: Uint8Array): LogRecord {
  return {
    op: h.op,
    flags: h.flags,
    seq: h.seq,
    generation: h.generation,
    lamport: h.lamport,
    offset: h.offset,
    length: h.length,
    committed: h.committed,
    payloadLength: h.payloadLength,
    payloadDigest: h.payloadDigest,
    prev: h.prev,
    chain: h.chain,
    payload,
  };
}

/** Called once per record, in order; `bytes` is the whole encoded record (header + payload). */
export type RecordHandler = (record: LogRecord, bytes: Uint8Array) => void;

/**
 * Incremental decoder over a byte stream of records (a shipped log, a segment read in chunks):
 * chunks in, verified records out, each checked in itself and as the successor of the one
 * before (seq, chain, Lamport time, generation). Never throws on input, never loops without
 * consuming; the first bad record kills it with a reason naming that record, and nothing
 * after it is delivered. Holds at most one record (MAX_RECORD_SIZE) of partial input.
 */
export class RecordDecoder {
  private error: string | null = null;
  private point: ChainPoint;
  private partial: Uint8Array | null = null;
  private partialFill = 0;
  private readonly headerBytes = new Uint8Array(RECORD_HEADER_SIZE);
  /** Stream bytes consumed by delivered records. */
  consumed = 0;

  /** @param after the chain point the first record must follow (CHAIN_ORIGIN: anything). */
  constructor(after: ChainPoint = CHAIN_ORIGIN) {
    this.point = after;
  }

  /** The last record delivered (or the starting point). */
  get position(): ChainPoint {
    return this.point;
  }

  /** Bytes held waiting for the rest of a record. */
  get bufferedBytes(): number {
    return this.partialFill;
  }

  get failure(): string | null {
    return this.error;
  }

  /** Feeds a chunk; returns null while the stream is fine, else the reason it is not. */
  push(chunk: Uint8Array, onRecord: RecordHandler): string | null {
    if (this.error !== null) return this.error;
    let pos = 0;
    while (pos < chunk.length || (this.partial !== null && this.partialFill === this.partial.length)) {
      if (this.partial === null && this.partialFill === 0 && chunk.length - pos >= RECORD_HEADER_SIZE) {
        // Fast path: the header is in this chunk.
        const reason = invalidHeader(chunk, pos);
        if (reason !== null) return this.fail(reason);
        const size = RECORD_HEADER_SIZE + readU32(chunk, pos + FIELD.payloadLength);
        if (chunk.length - pos >= size) {
          if (this.deliver(chunk.subarray(pos, pos + size), onRecord) !== null) return this.error;
          pos += size;
          continue;
        }
        this.partial = new Uint8Array(size);
        this.partial.set(chunk.subarray(pos), 0);
        this.partialFill = chunk.length - pos;
        return null;
      }
      if (this.partial === null) {
        // Gathering a header across chunks.
        const n = Math.min(RECORD_HEADER_SIZE - this.partialFill, chunk.length - pos);
        this.headerBytes.set(chunk.subarray(pos, pos + n), this.partialFill);
        this.partialFill += n;
        pos += n;
        if (this.partialFill < RECORD_HEADER_SIZE) return null;
        const reason = invalidHeader(this.headerBytes, 0);
        if (reason !== null) return this.fail(reason);
        this.partial = new Uint8Array(RECORD_HEADER_SIZE + readU32(this.headerBytes, FIELD.payloadLength));
        this.partial.set(this.headerBytes, 0);
        continue;
      }
      const n = Math.min(this.partial.length - this.partialFill, chunk.length - pos);
      this.partial.set(chunk.subarray(pos, pos + n), this.partialFill);
      this.partialFill += n;
      pos += n;
      if (this.partialFill < this.partial.length) return null;
      const whole = this.partial;
      this.partial = null;
      this.partialFill = 0;
      if (this.deliver(whole, onRecord) !== null) return this.error;
    }
    return null;
  }

  private deliver(bytes: Uint8Array, onRecord: RecordHandler): string | null {
    const header = decodeHeader(bytes, 0);
    const payload = bytes.subarray(RECORD_HEADER_SIZE);
    const reason = invalidPayload(header, payload) ?? invalidSuccessor(this.point, header);
    if (reason !== null) return this.fail(reason);
    this.point = chainPointOf(header);
    this.consumed += bytes.length;
    onRecord(toRecord(header, payload), bytes);
    return null;
  }

  private fail(reason: string): string {
    this.error = reason;
    this.partial = null;
    this.partialFill = 0;
    return reason;
  }
}
