/**
 * @module wire/dst/header — encode, decode and validate the fixed 56-byte DST frame header
 * (layout in constants.ts, prose in docs/protocol.md §3). Pure: no I/O, no timers; runs for
 * every frame, so it uses hand-written byte operations and lookup tables.
 *
 * decodeHeader never validates; invalidHeader returns a reason naming the problem (the
 * TigerBeetle `invalid()` shape), never throws. encodeHeader is only fed by dstd itself, so a
 * field that does not fit its wire width is a programmer error (assert).
 */
import { assert } from "../../lib/assert.ts";
import { hex, readU16, readU32, readU64, writeU16, writeU32, writeU64 } from "./bytes.ts";
import {
  DIGEST_MAX,
  DIGEST_SIZES,
  DST_MAGIC,
  DST_VERSION,
  FETCH_REQUEST_SIZE,
  SYNC_REQUEST_SIZE,
  FLAGS_KNOWN,
  Flag,
  HANDSHAKE_PAYLOAD_MAX,
  HEADER,
  HEADER_SIZE,
  Op,
  REPLY_BIT,
  opcodeName,
} from "./constants.ts";

export interface Header {
  version: number;
  opcode: number;
  flags: number;
  txid: number;
  offset: number;
  length: number;
  payloadLength: number;
  status: number;
  /** Set by decodeHeader; encodeHeader always writes DST_MAGIC. Absent = not checked. */
  magic?: number;
  /** Set by decodeHeader; encodeHeader always writes 0. Absent = not checked. */
  reserved?: number;
}

/** The header fields a sender chooses; the rest (magic, version, payloadLength) are derived. */
export interface FrameFields {
  opcode: number;
  flags?: number;
  txid: number;
  offset?: number;
  length?: number;
  status?: number;
}

// ---- per-opcode rules (docs/protocol.md §4) ----

/** What may follow the header. */
const enum Payload {
  /** Nothing: payloadLength must be 0. */
  None = 0,
  /** Exactly `length` bytes (WRITE request). */
  Length = 1,
  /** Exactly `length` bytes when status is 0, nothing otherwise (READ reply). */
  LengthIfOk = 2,
  /** TLV attributes, at most HANDSHAKE_PAYLOAD_MAX bytes (HELLO, WELCOME). */
  Attributes = 3,
  /** Exactly FETCH_REQUEST_SIZE bytes (FETCH request). */
  FetchRequest = 4,
  /** Any length up to the max payload (FETCH reply: prefix + records, or a reason). */
  Bounded = 5,
  /** Exactly SYNC_REQUEST_SIZE bytes (SYNC request). */
  SyncRequest = 6,
}

/** Flag bits each opcode accepts; -1 marks an opcode this version does not know. */
const allowedFlags = new Int32Array(256).fill(-1);
const payloadRule = new Uint8Array(256);

function rule(opcode: number, flags: number, payload: Payload): void {
  allowedFlags[opcode] = flags;
  payloadRule[opcode] = payload;
}
rule(Op.HELLO, 0, Payload.Attributes);
rule(Op.WELCOME, 0, Payload.Attributes);
rule(Op.AUTH, 0, Payload.Attributes);
rule(Op.CHALLENGE, 0, Payload.Attributes);
rule(Op.READ, 0, Payload.None);
rule(Op.READ | REPLY_BIT, Flag.DIGEST, Payload.LengthIfOk);
rule(Op.WRITE, Flag.FUA | Flag.DIGEST, Payload.Length);
rule(Op.WRITE | REPLY_BIT, 0, Payload.None);
rule(Op.FLUSH, 0, Payload.None);
rule(Op.FLUSH | REPLY_BIT, 0, Payload.None);
rule(Op.TRIM, Flag.FUA, Payload.None);
rule(Op.TRIM | REPLY_BIT, 0, Payload.None);
rule(Op.WRITE_ZEROES, Flag.FUA | Flag.NO_HOLE, Payload.None);
rule(Op.WRITE_ZEROES | REPLY_BIT, 0, Payload.None);
rule(Op.FETCH, Flag.ZSTD | Flag.FOLLOWS, Payload.FetchRequest);
rule(Op.FETCH | REPLY_BIT, Flag.ZSTD, Payload.Bounded);
rule(Op.SYNC, 0, Payload.SyncRequest);
rule(Op.SYNC | REPLY_BIT, 0, Payload.Bounded);
rule(Op.PING, 0, Payload.None);
rule(Op.PONG, 0, Payload.None);
rule(Op.SIZE_NOTICE, 0, Payload.None);

// ---- encode / decode ----

function writeHeader(
  t: Uint8Array,
  at: number,
  version: number,
  f: FrameFields,
  payloadLength: number,
): void {
  const flags = f.flags ?? 0;
  const offset = f.offset ?? 0;
  const length = f.length ?? 0;
  const status = f.status ?? 0;
  assert(at >= 0 && at + HEADER_SIZE <= t.length, `header at ${at} does not fit a ${t.length}-byte buffer`);
  assert(
    (version & 0xff) === version &&
      (f.opcode & 0xff) === f.opcode &&
      (flags & 0xffff) === flags &&
      f.txid >= 0 && Number.isSafeInteger(f.txid) &&
      offset >= 0 && Number.isSafeInteger(offset) &&
      length >>> 0 === length && payloadLength >>> 0 === payloadLength && status >>> 0 === status,
    "header field out of range for its wire width",
  );
  writeU32(t, at + HEADER.magic, DST_MAGIC);
  t[at + HEADER.version] = version;
  t[at + HEADER.opcode] = f.opcode;
  writeU16(t, at + HEADER.flags, flags);
  writeU64(t, at + HEADER.txid, f.txid);
  writeU64(t, at + HEADER.offset, offset);
  writeU32(t, at + HEADER.length, length);
  writeU32(t, at + HEADER.payloadLength, payloadLength);
  writeU32(t, at + HEADER.status, status);
  // reserved + authTag: zero explicitly, the target may be a reused buffer.
  for (let i = at + HEADER.reserved; i < at + HEADER_SIZE; i++) t[i] = 0;
}

/** Writes HEADER_SIZE bytes at `at`: magic, the fields of h, reserved = 0, authTag = 0. */
export function encodeHeader(target: Uint8Array, at: number, h: Header): void {
  writeHeader(target, at, h.version, h, h.payloadLength);
}

/** Reads the header at `at` without validating anything (see invalidHeader). */
export function decodeHeader(source: Uint8Array, at: number): Header {
  return {
    version: source[at + HEADER.version] ?? 0,
    opcode: source[at + HEADER.opcode] ?? 0,
    flags: readU16(source, at + HEADER.flags),
    txid: readU64(source, at + HEADER.txid),
    offset: readU64(source, at + HEADER.offset),
    length: readU32(source, at + HEADER.length),
    payloadLength: readU32(source, at + HEADER.payloadLength),
    status: readU32(source, at + HEADER.status),
    magic: readU32(source, at + HEADER.magic),
    reserved: readU32(source, at + HEADER.reserved),
  };
}

/**
 * Header and payload in one new buffer (version DST_VERSION, payloadLength = payload.length).
 * Copies the payload: for large payloads prefer frameBuffer and fill it in place.
 */
export function encodeFrame(h: FrameFields, payload?: Uint8Array): Uint8Array {
  const frame = frameBuffer(h, payload?.length ?? 0);
  if (payload !== undefined) frame.set(payload, HEADER_SIZE);
  return frame;
}

/**
 * Allocates HEADER_SIZE + payloadLength bytes with the header written and the payload area
 * (frame.subarray(HEADER_SIZE)) left zeroed for the caller to fill, e.g. pread straight into
 * it — one allocation, no copy.
 */
export function frameBuffer(h: FrameFields, payloadLength: number): Uint8Array {
  const frame = new Uint8Array(HEADER_SIZE + payloadLength);
  writeHeader(frame, 0, DST_VERSION, h, payloadLength);
  return frame;
}

/** Writes a header with an explicit version (HELLO carries the client's highest version). */
export function encodeHeaderVersion(target: Uint8Array, at: number, version: number, h: FrameFields, payloadLength: number): void {
  writeHeader(target, at, version, h, payloadLength);
}

// ---- validation ----

/**
 * Why this header cannot start a valid frame, or null. `maxPayload` is the limit in force
 * (HANDSHAKE_PAYLOAD_MAX before the handshake, the negotiated value after). The authTag is
 * not looked at: it is unused (a sealed record's tag covers the whole frame). Order of checks: identity (magic, version,
 * opcode) first so that talking to the wrong service gives the clearest reason.
 */
export function invalidHeader(h: Header, maxPayload: number): string | null {
  if (h.magic !== undefined && h.magic !== DST_MAGIC) {
    return `bad magic ${hex(h.magic, 8)} (expected ${hex(DST_MAGIC, 8)} "DST1")`;
  }
  const op = h.opcode;
  if (op === Op.HELLO && h.version !== DST_VERSION) return invalidForeignHello(h, maxPayload);
  if (h.version !== DST_VERSION) return `unsupported version ${h.version} (this build speaks ${DST_VERSION})`;
  const allowed = allowedFlags[op] ?? -1;
  if (allowed < 0) return `unknown opcode ${hex(op, 2)}`;
  if ((h.flags & ~FLAGS_KNOWN) !== 0) return `unknown flags ${hex(h.flags, 4)}`;
  if ((h.flags & ~allowed) !== 0) return `flags ${hex(h.flags, 4)} not allowed on ${opcodeName(op)}`;
  if (h.reserved !== undefined && h.reserved !== 0) return "reserved field is not zero";
  if ((op & REPLY_BIT) === 0 && h.status !== 0) return "status set in a request";
  if (h.txid > Number.MAX_SAFE_INTEGER) return "txid exceeds 2^53";
  if (h.offset > Number.MAX_SAFE_INTEGER) return "offset exceeds 2^53";
  return invalidPayload(h, op, maxPayload);
}

function invalidPayload(h: Header, op: number, maxPayload: number): string | null {
  const n = h.payloadLength;
  const digest = (h.flags & Flag.DIGEST) !== 0;
  if (n > maxPayload + (digest ? DIGEST_MAX : 0)) return `payload length ${n} exceeds max payload ${maxPayload}`;
  switch (payloadRule[op]) {
    case Payload.None:
      return n === 0 ? null : `payload on an opcode that carries none (${opcodeName(op)}, ${n} bytes)`;
    case Payload.Length:
      return matchesLength(h, op, n, digest);
    case Payload.FetchRequest:
      return n === FETCH_REQUEST_SIZE ? null : `FETCH payload length ${n} is not ${FETCH_REQUEST_SIZE}`;
    case Payload.SyncRequest:
      return n === SYNC_REQUEST_SIZE ? null : `SYNC payload length ${n} is not ${SYNC_REQUEST_SIZE}`;
    case Payload.Bounded:
      return null;
    case Payload.LengthIfOk:
      if (h.status !== 0) {
        return n === 0 ? null : `payload on an opcode that carries none (failed ${opcodeName(op)}, ${n} bytes)`;
      }
      return matchesLength(h, op, n, digest);
    default:
      return n <= HANDSHAKE_PAYLOAD_MAX
        ? null
        : `${opcodeName(op)} payload length ${n} exceeds the handshake limit ${HANDSHAKE_PAYLOAD_MAX}`;
  }
}

/** Data payloads: exactly `length` bytes, plus a digest of a known size when DIGEST is set. */
function matchesLength(h: Header, op: number, n: number, digest: boolean): string | null {
  if (!digest) return n === h.length ? null : `${opcodeName(op)} payload length ${n} does not match length ${h.length}`;
  return DIGEST_SIZES.includes(n - h.length)
    ? null
    : `${opcodeName(op)} payload length ${n} is not length ${h.length} plus a digest (${DIGEST_SIZES.join(" or ")} bytes)`;
}

/**
 * A HELLO whose version is not ours. The header layout is fixed forever, so the frame can
 * still be read and answered (docs/protocol.md §6.4): only the size bound is checked here —
 * flags, reserved and the other fields belong to the version the peer speaks. Whether the
 * version is acceptable is the handshake layer's call (negotiateVersion).
 */
function invalidForeignHello(h: Header, maxPayload: number): string | null {
  const limit = Math.min(maxPayload, HANDSHAKE_PAYLOAD_MAX);
  return h.payloadLength <= limit
    ? null
    : `HELLO payload length ${h.payloadLength} exceeds the handshake limit ${limit}`;
}
