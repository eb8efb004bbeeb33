/**
 * @module wire/dst/handshake — HELLO / WELCOME frames and version negotiation
 * (docs/protocol.md §6); the TLV layer lives in attrs.ts and is re-exported here. Pure codecs:
 * decoding never throws on peer input and returns a reason string naming the problem; encoding
 * is fed by dstd and asserts its inputs. Decoded values own their bytes (copied out of the
 * payload), so chunks can be released.
 */
import { assert } from "../../lib/assert.ts";
import { decodeAttrs, decodeName, intAttr, u32, u64, u8, writeAttrs, type AttrRecord } from "./attrs.ts";
import {
  Attr,
  DST_VERSION,
  HEADER_SIZE,
  MESSAGE_MAX,
  NAME_MAX,
  Op,
  PAYLOAD_MAX_DEFAULT,
  PAYLOAD_MAX_MIN,
  RESUME_SECRET_SIZE,
  SESSION_ID_SIZE,
  opcodeName,
} from "./constants.ts";
import { encodeHeaderVersion, type Header } from "./header.ts";

export { decodeAttrs, encodeAttrs, type AttrRecord } from "./attrs.ts";

const utf8 = new TextEncoder();
const lenientUtf8 = new TextDecoder("utf-8", { ignoreBOM: true });

function checkPayloadMax(n: number, type: string): string | null {
  return n >= PAYLOAD_MAX_MIN ? null : `${type} MAX_PAYLOAD ${n} is below the minimum ${PAYLOAD_MAX_MIN}`;
}

/** A handshake frame of any opcode (CHALLENGE, AUTH) with the given attributes. */
export function encodeHandshakeFrame(opcode: number, records: AttrRecord[]): Uint8Array {
  return frame(DST_VERSION, opcode, 0, records);
}

function frame(version: number, opcode: number, status: number, records: AttrRecord[]): Uint8Array {
  let size = 0;
  for (const [, value] of records) size += 4 + value.length;
  const out = new Uint8Array(HEADER_SIZE + size);
  encodeHeaderVersion(out, 0, version, { opcode, txid: 0, status }, size);
  writeAttrs(out, HEADER_SIZE, records);
  return out;
}

function expectOpcode(header: Header, opcode: number): string | null {
  return header.opcode === opcode ? null : `expected ${opcodeName(opcode)}, got ${opcodeName(header.opcode)}`;
}

// ---- HELLO ----

export interface Hello {
  /** Header version: the highest DST version the client speaks. */
  version: number;
  exportName: string;
  /** Free-form, for logs; "" when absent. */
  clientName: string;
  /** Largest payload the client wants to send or receive; PAYLOAD_MAX_DEFAULT when absent. */
  maxPayload: number;
  /** Feature.* bits the client wants; 0 when absent. */
  features: number;
  /** SESSION_ID_SIZE bytes to resume a session, or null for a new one. */
  sessionId: Uint8Array | null;
  /** Lowest txid the client still has in flight; 0 when absent. */
  txidFloor: number;
  /** Anonymous resumption token of the session named by sessionId (null when absent). */
  resumeToken?: Uint8Array | null;
  /** The client's number for this connection (CONNECTION_SEQ); 0 when absent. */
  connectionSeq?: number;
}

/** A whole HELLO frame: header version = h.version, txid 0. Attributes in type order. */
export function encodeHello(h: Hello, extra: AttrRecord[] = []): Uint8Array {
  const name = utf8.encode(h.exportName);
  const client = utf8.encode(h.clientName);
  assert(name.length >= 1 && name.length <= NAME_MAX, `export name must be 1..${NAME_MAX} utf-8 bytes`);
  assert(client.length <= NAME_MAX, `client name must be at most ${NAME_MAX} utf-8 bytes`);
  assert(h.sessionId === null || h.sessionId.length === SESSION_ID_SIZE, "session id must be 16 bytes");
  const records: AttrRecord[] = [[Attr.EXPORT_NAME, name]];
  if (client.length > 0) records.push([Attr.CLIENT_NAME, client]);
  records.push([Attr.MAX_PAYLOAD, u32(h.maxPayload)], [Attr.FEATURES, u32(h.features)]);
  if (h.sessionId !== null) records.push([Attr.SESSION_ID, h.sessionId]);
  if (h.txidFloor !== 0) records.push([Attr.TXID_FLOOR, u64(h.txidFloor)]);
  if (h.resumeToken) records.push([Attr.RESUME_TOKEN, h.resumeToken]);
  if (h.connectionSeq) records.push([Attr.CONNECTION_SEQ, u64(h.connectionSeq)]);
  records.push(...extra);
  return frame(h.version, Op.HELLO, 0, records);
}

export function decodeHello(header: Header, payload: Uint8Array): Hello | string {
  const wrong = expectOpcode(header, Op.HELLO);
  if (wrong !== null) return wrong;
  const attrs = decodeAttrs(payload);
  if (typeof attrs === "string") return attrs;
  const exportName = decodeName(attrs, Attr.EXPORT_NAME, true);
  if (typeof exportName === "string") return exportName;
  const clientName = decodeName(attrs, Attr.CLIENT_NAME, false);
  if (typeof clientName === "string") return clientName;
  const maxPayload = intAttr(attrs, Attr.MAX_PAYLOAD, 4, PAYLOAD_MAX_DEFAULT);
  if (typeof maxPayload === "string") return maxPayload;
  const tooSmall = checkPayloadMax(maxPayload, "HELLO");
  if (tooSmall !== null) return tooSmall;
  const features = intAttr(attrs, Attr.FEATURES, 4, 0);
  if (typeof features === "string") return features;
  const txidFloor = intAttr(attrs, Attr.TXID_FLOOR, 8, 0);
  if (typeof txidFloor === "string") return txidFloor;
  const connectionSeq = intAttr(attrs, Attr.CONNECTION_SEQ, 8, 0);
  if (typeof connectionSeq === "string") return connectionSeq;
  const session = attrs.get(Attr.SESSION_ID);
  if (session !== undefined && session.length !== SESSION_ID_SIZE) {
    return `SESSION_ID is ${session.length} bytes, expected ${SESSION_ID_SIZE}`;
  }
  const token = attrs.get(Attr.RESUME_TOKEN);
  if (token !== undefined && token.length !== RESUME_SECRET_SIZE) {
    return `RESUME_TOKEN is ${token.length} bytes, expected ${RESUME_SECRET_SIZE}`;
  }
  const hello: Hello = {
    version: header.version,
    exportName: exportName.value,
    clientName: clientName.value,
    maxPayload,
    features,
    sessionId: session === undefined ? null : copyOf(session),
    txidFloor,
  };
  if (token !== undefined) hello.resumeToken = copyOf(token);
  if (connectionSeq !== 0) hello.connectionSeq = connectionSeq;
  return hello;
}

// ---- WELCOME ----

export interface Welcome {
  /** Export size in bytes. */
  size: number;
  /** Requests should be aligned to this (a power of two). */
  blockMin: number;
  /** Preferred request size (a power of two >= blockMin). */
  blockPreferred: number;
  /** Negotiated max payload: min(client's, export's). */
  maxPayload: number;
  /** Perm.* bits. */
  permissions: number;
  /** Feature.* bits granted (a subset of those asked for). */
  features: number;
  /** SESSION_ID_SIZE bytes: the session in force. */
  sessionId: Uint8Array;
  /** Changes whenever the export process restarts. */
  epoch: number;
  /** Most requests in flight the export accepts on one connection (>= 1). */
  maxInflight: number;
  /** Data checksum the export chose from the client's offer (absent or "none": no digests). */
  checksum?: string;
  /** Most txids beyond the client's floor the export remembers per session (0: not advertised). */
  maxTxidSpan?: number;
  /** Anonymous sessions: the token that resumes this session next time (null/absent otherwise). */
  resumeToken?: Uint8Array | null;
}

export type WelcomeResult = { ok: true; welcome: Welcome } | { ok: false; status: number; message: string };

/** A whole WELCOME frame, status 0, version DST_VERSION, txid 0. Every attribute, in type order. */
export function encodeWelcome(w: Welcome): Uint8Array {
  assert(w.sessionId.length === SESSION_ID_SIZE, "session id must be 16 bytes");
  return frame(DST_VERSION, Op.WELCOME, 0, [
    [Attr.SIZE, u64(w.size)],
    [Attr.BLOCK_MIN, u32(w.blockMin)],
    [Attr.BLOCK_PREFERRED, u32(w.blockPreferred)],
    [Attr.MAX_PAYLOAD, u32(w.maxPayload)],
    [Attr.PERMISSIONS, u8(w.permissions)],
    [Attr.FEATURES, u32(w.features)],
    [Attr.SESSION_ID, w.sessionId],
    [Attr.EPOCH, u64(w.epoch)],
    [Attr.MAX_INFLIGHT, u32(w.maxInflight)],
    ...(w.checksum && w.checksum !== "none" ? [[Attr.CHECKSUM, utf8.encode(w.checksum)] as AttrRecord] : []),
    ...(w.resumeToken ? [[Attr.RESUME_TOKEN, w.resumeToken] as AttrRecord] : []),
    ...(w.maxTxidSpan ? [[Attr.MAX_TXID_SPAN, u32(w.maxTxidSpan)] as AttrRecord] : []),
  ]);
}

/** A WELCOME refusing the handshake: header status = errno, MESSAGE cut to MESSAGE_MAX bytes. */
export function encodeRefusal(status: number, message: string): Uint8Array {
  assert(status > 0 && status >>> 0 === status, `refusal status must be a non-zero errno, got ${status}`);
  return frame(DST_VERSION, Op.WELCOME, status, [[Attr.MESSAGE, truncateUtf8(utf8.encode(message), MESSAGE_MAX)]]);
}

/** Cuts at most `max` bytes without splitting a utf-8 sequence. */
function truncateUtf8(bytes: Uint8Array, max: number): Uint8Array {
  if (bytes.length <= max) return bytes;
  let cut = max;
  while (cut > 0 && (bytes[cut]! & 0xc0) === 0x80) cut--; // back off continuation bytes
  return bytes.subarray(0, cut);
}

export function decodeWelcome(header: Header, payload: Uint8Array): WelcomeResult | string {
  const wrong = expectOpcode(header, Op.WELCOME);
  if (wrong !== null) return wrong;
  if (header.version !== DST_VERSION) return versionMismatch(header.version);
  const attrs = decodeAttrs(payload);
  if (typeof attrs === "string") return attrs;
  if (header.status !== 0) {
    const message = attrs.get(Attr.MESSAGE);
    return { ok: false, status: header.status, message: message === undefined ? "" : lenientUtf8.decode(message) };
  }
  const ints: number[] = [];
  const fields: Array<[number, 1 | 4 | 8]> = [
    [Attr.SIZE, 8], [Attr.BLOCK_MIN, 4], [Attr.BLOCK_PREFERRED, 4], [Attr.MAX_PAYLOAD, 4],
    [Attr.PERMISSIONS, 1], [Attr.FEATURES, 4], [Attr.EPOCH, 8], [Attr.MAX_INFLIGHT, 4],
  ];
  for (const [type, size] of fields) {
    const v = intAttr(attrs, type, size);
    if (typeof v === "string") return `WELCOME ${v}`;
    ints.push(v);
  }
  const [size, blockMin, blockPreferred, maxPayload, permissions, features, epoch, maxInflight] = ints as [
    number, number, number, number, number, number, number, number,
  ];
  const session = attrs.get(Attr.SESSION_ID);
  if (session === undefined) return "WELCOME missing SESSION_ID";
  if (session.length !== SESSION_ID_SIZE) return `SESSION_ID is ${session.length} bytes, expected ${SESSION_ID_SIZE}`;
  const checksumBytes = attrs.get(Attr.CHECKSUM);
  const checksum = checksumBytes === undefined ? "none" : lenientUtf8.decode(checksumBytes);
  const token = attrs.get(Attr.RESUME_TOKEN);
  if (token !== undefined && token.length !== RESUME_SECRET_SIZE) return `RESUME_TOKEN is ${token.length} bytes, expected ${RESUME_SECRET_SIZE}`;
  const maxTxidSpan = intAttr(attrs, Attr.MAX_TXID_SPAN, 4, 0);
  if (typeof maxTxidSpan === "string") return `WELCOME ${maxTxidSpan}`;
  const welcome: Welcome = { size, blockMin, blockPreferred, maxPayload, permissions, features, sessionId: copyOf(session), epoch, maxInflight, checksum };
  // Optional attributes appear in the decoded value only when present (absent = not advertised).
  if (maxTxidSpan !== 0) welcome.maxTxidSpan = maxTxidSpan;
  if (token !== undefined) welcome.resumeToken = copyOf(token);
  const problem = invalidWelcome(welcome);
  return problem ?? { ok: true, welcome };
}

/** Cross-field checks a client relies on before it sizes buffers and queues. */
function invalidWelcome(w: Welcome): string | null {
  if (!isPowerOfTwo(w.blockMin)) return `WELCOME BLOCK_MIN ${w.blockMin} is not a power of two`;
  if (!isPowerOfTwo(w.blockPreferred) || w.blockPreferred < w.blockMin) {
    return `WELCOME BLOCK_PREFERRED ${w.blockPreferred} is not a power of two >= BLOCK_MIN ${w.blockMin}`;
  }
  const tooSmall = checkPayloadMax(w.maxPayload, "WELCOME");
  if (tooSmall !== null) return tooSmall;
  if (w.maxPayload > PAYLOAD_MAX_DEFAULT) {
    return `WELCOME MAX_PAYLOAD ${w.maxPayload} exceeds the upper bound ${PAYLOAD_MAX_DEFAULT}`;
  }
  if (w.maxPayload < w.blockMin) return `WELCOME MAX_PAYLOAD ${w.maxPayload} is below BLOCK_MIN ${w.blockMin}`;
  if (w.maxInflight === 0) return "WELCOME MAX_INFLIGHT is 0";
  return null;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

// ---- version negotiation (docs/protocol.md §6.4) ----

/** The refusal message (sent with EPROTONOSUPPORT) for a peer speaking another version. */
export function versionMismatch(peerVersion: number): string {
  return `peer speaks DST version ${peerVersion}, this build speaks ${DST_VERSION}`;
}

/**
 * Server side: the version to answer a HELLO with, given the highest version the client
 * speaks (its header version), or the refusal message when there is none in common.
 * Versions are cumulative, so the answer is min(clientMax, DST_VERSION); 0 was never a version.
 */
export function negotiateVersion(clientMax: number): number | string {
  if (!Number.isInteger(clientMax) || clientMax < 1) return versionMismatch(clientMax);
  return Math.min(clientMax, DST_VERSION);
}

/**
 * A copy that owns its bytes. Kept values (a session id, a token) must not be views into the
 * frame they came in: a payload opened from a record may be a Buffer, whose slice() is a view,
 * and record buffers are reused — the client would resume with whatever bytes came next.
 */
function copyOf(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}
