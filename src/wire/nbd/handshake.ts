/**
 * @module wire/nbd/handshake — byte codecs of the fixed newstyle handshake (proto.md
 * "Newstyle negotiation", "Fixed newstyle negotiation", "Option types", "Option reply
 * types"): the server greeting, an incremental reader of what the client sends (client flags,
 * then options), parsers of option payloads and encoders of option replies.
 *
 * Must not: decide policy (which export, which errors: nbd/handshake.ts does), touch a
 * socket, or throw on peer input — malformed bytes give a reason string.
 */
import {
  HandshakeFlag,
  IHAVEOPT,
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  Info,
  MAX_STRING,
  NBDMAGIC,
  OPTION_REPLY_MAGIC,
  Rep,
} from "./constants.ts";

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Server greeting (proto.md "Newstyle negotiation"): NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeServerGreeting(
  flags: number = HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES,
): Uint8Array {
  const out = new Uint8Array(18);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, NBDMAGIC);
  view.setBigUint64(8, IHAVEOPT);
  view.setUint16(16, flags);
  return out;
}

/** What HandshakeReader.next() produces; `null` from next() means "need more bytes". */
export type HandshakeEvent =
  | { kind: "client-flags"; flags: number }
  | { kind: "option"; option: number; data: Uint8Array }
  /** An option whose data exceeded the reader's limit: the data was consumed and dropped. */
  | { kind: "oversized"; option: number; length: number }
  | { kind: "error"; reason: string };

/**
 * Incremental reader of the client side of the handshake: first the 32-bit client flags,
 * then option requests (IHAVEOPT, u32 option, u32 length, data). Buffers at most one option
 * (≤ maxOptionData); larger option data is skipped without buffering so an unknown or
 * absurd option never costs memory and never breaks parsing of the next one (proto.md
 * "Baseline": ERR_UNSUP "MUST NOT fail to parse the next message").
 */
/** An empty reader keeps at most this much buffer (one largest option fits). */
const SHRINK_ABOVE = 65536 + 16;

export class HandshakeReader {
  private buffer = new Uint8Array(256);
  private start = 0;
  private end = 0;
  private flagsRead = false;
  private skipping = 0;
  private failed = false;

  constructor(private readonly maxOptionData = 65536) {}

  push(chunk: Uint8Array): void {
    if (this.failed || chunk.length === 0) return;
    let input = chunk;
    if (this.skipping > 0) {
      const n = Math.min(this.skipping, input.length);
      this.skipping -= n;
      input = input.subarray(n);
      if (input.length === 0) return;
    }
    this.reserve(input.length);
    this.buffer.set(input, this.end);
    this.end += input.length;
  }

  /** Bytes received but not consumed by an event (after GO: the first transmission bytes). */
  remainder(): Uint8Array {
    return this.buffer.slice(this.start, this.end);
  }

  /** True while an oversized option's data is still being skipped. */
  get busy(): boolean {
    return this.skipping > 0;
  }

  next(): HandshakeEvent | null {
    if (this.failed || this.skipping > 0) return null;
    const available = this.end - this.start;
    const view = new DataView(this.buffer.buffer, this.buffer.byteOffset + this.start, available);
    if (!this.flagsRead) {
      if (available < 4) return null;
      this.flagsRead = true;
      this.start += 4;
      return { kind: "client-flags", flags: view.getUint32(0) };
    }
    if (available < 16) return null;
    if (view.getUint32(0) !== IHAVEOPT_HI || view.getUint32(4) !== IHAVEOPT_LO) {
      this.failed = true;
      const got = view.getBigUint64(0).toString(16).padStart(16, "0");
      return { kind: "error", reason: `option request has magic 0x${got}, expected 0x${IHAVEOPT.toString(16)} (IHAVEOPT)` };
    }
    const option = view.getUint32(8);
    const length = view.getUint32(12);
    if (length > this.maxOptionData) {
      this.start += 16;
      const buffered = Math.min(length, this.end - this.start);
      this.start += buffered;
      this.skipping = length - buffered;
      this.compact();
      return { kind: "oversized", option, length };
    }
    if (available < 16 + length) return null;
    const data = this.buffer.slice(this.start + 16, this.start + 16 + length);
    this.start += 16 + length;
    this.compact();
    return { kind: "option", option, data };
  }

  private compact(): void {
    if (this.start !== this.end) return;
    this.start = this.end = 0;
    // A burst of options grew the buffer to a socket read's size: give that memory back
    // rather than hold it for the rest of the handshake.
    if (this.buffer.length > SHRINK_ABOVE) this.buffer = new Uint8Array(256);
  }

  private reserve(extra: number): void {
    if (this.end + extra <= this.buffer.length) return;
    const live = this.end - this.start;
    let size = this.buffer.length;
    while (size < live + extra) size *= 2;
    if (size === this.buffer.length) {
      this.buffer.copyWithin(0, this.start, this.end);
    } else {
      const next = new Uint8Array(size);
      next.set(this.buffer.subarray(this.start, this.end), 0);
      this.buffer = next;
    }
    this.start = 0;
    this.end = live;
  }
}

/**
 * A protocol string (proto.md "Conventions"): UTF-8, no NUL, at most 4096 bytes. Returns the
 * text or a reason it is not acceptable.
 */
export function decodeString(bytes: Uint8Array, what: string): { ok: true; value: string } | { ok: false; reason: string } {
  if (bytes.length > MAX_STRING) return { ok: false, reason: `${what} is ${bytes.length} bytes, more than 4096` };
  if (bytes.includes(0)) return { ok: false, reason: `${what} contains a NUL byte` };
  try {
    return { ok: true, value: strictUtf8.decode(bytes) };
  } catch {
    return { ok: false, reason: `${what} is not valid UTF-8` };
  }
}

export interface InfoRequest {
  name: string;
  /** NBD_INFO_* types requested (unknown ones included; the server ignores them). */
  requests: number[];
}

/**
 * OPT_INFO / OPT_GO data (proto.md "NBD_OPT_INFO (6) and NBD_OPT_GO (7)"): u32 name length
 * (≤ data length − 6), name, u16 count, u16 × count. Trailing bytes make it invalid.
 */
export function parseInfoRequest(data: Uint8Array): InfoRequest | string {
  if (data.length < 6) return `option data is ${data.length} bytes, at least 6 needed`;
  const view = new DataView(data.buffer, data.byteOffset, data.length);
  const nameLength = view.getUint32(0);
  if (nameLength > data.length - 6) return `export name length ${nameLength} exceeds the option data`;
  const name = decodeString(data.subarray(4, 4 + nameLength), "export name");
  if (!name.ok) return name.reason;
  const count = view.getUint16(4 + nameLength);
  const expected = 6 + nameLength + 2 * count;
  if (data.length !== expected) {
    return `option data is ${data.length} bytes but ${count} information requests need ${expected}`;
  }
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(view.getUint16(6 + nameLength + 2 * i));
  return { name: name.value, requests };
}

export interface MetaContextRequest {
  name: string;
  queries: string[];
}

/**
 * LIST_META_CONTEXT / SET_META_CONTEXT data (proto.md "NBD_OPT_LIST_META_CONTEXT (9)"):
 * u32 name length, name, u32 query count, then {u32 length, query} × count. A length that
 * reaches past the option data is invalid (the spec's own example of ERR_INVALID).
 */
export function parseMetaContextRequest(data: Uint8Array): MetaContextRequest | string {
  const view = new DataView(data.buffer, data.byteOffset, data.length);
  if (data.length < 8) return `option data is ${data.length} bytes, at least 8 needed`;
  const nameLength = view.getUint32(0);
  if (nameLength > data.length - 8) return `export name length ${nameLength} exceeds the option data`;
  const name = decodeString(data.subarray(4, 4 + nameLength), "export name");
  if (!name.ok) return name.reason;
  let at = 4 + nameLength;
  const count = view.getUint32(at);
  at += 4;
  // Each query needs at least its 4-byte length: bound the loop by the data, not by `count`.
  if (count > (data.length - at) / 4) return `${count} queries cannot fit in the option data`;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (data.length - at < 4) return `query ${i + 1} of ${count} is cut off`;
    const length = view.getUint32(at);
    at += 4;
    if (length > data.length - at) return `query ${i + 1} length ${length} exceeds the option data`;
    const query = decodeString(data.subarray(at, at + length), `query ${i + 1}`);
    if (!query.ok) return query.reason;
    queries.push(query.value);
    at += length;
  }
  if (at !== data.length) return `${data.length - at} unexpected bytes after the queries`;
  return { name: name.value, queries };
}

/** One option reply (proto.md "Fixed newstyle negotiation"): magic, option, type, length, data. */
export function encodeOptionReply(option: number, type: number, payload?: Uint8Array): Uint8Array {
  const length = payload?.length ?? 0;
  const out = new Uint8Array(20 + length);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, OPTION_REPLY_MAGIC);
  view.setUint32(8, option);
  view.setUint32(12, type);
  view.setUint32(16, length);
  if (payload) out.set(payload, 20);
  return out;
}

/** An error reply whose data is a human-readable message (proto.md: "All error replies MAY have some data"). */
export function encodeOptionError(option: number, type: number, message: string): Uint8Array {
  return encodeOptionReply(option, type, truncatedUtf8(message));
}

/** NBD_INFO_EXPORT payload: u16 0, u64 size, u16 transmission flags (length 12). */
export function infoExport(size: number, transmissionFlags: number): Uint8Array {
  const out = new Uint8Array(12);
  const view = new DataView(out.buffer);
  view.setUint16(0, Info.EXPORT);
  view.setBigUint64(2, BigInt(size));
  view.setUint16(10, transmissionFlags);
  return out;
}

export function infoName(name: string): Uint8Array {
  return typedString(Info.NAME, name);
}

export function infoDescription(description: string): Uint8Array {
  return typedString(Info.DESCRIPTION, description);
}

/** NBD_INFO_BLOCK_SIZE payload: u16 3, u32 minimum, u32 preferred, u32 maximum (length 14). */
export function infoBlockSize(minimum: number, preferred: number, maximum: number): Uint8Array {
  const out = new Uint8Array(14);
  const view = new DataView(out.buffer);
  view.setUint16(0, Info.BLOCK_SIZE);
  view.setUint32(2, minimum);
  view.setUint32(6, preferred);
  view.setUint32(10, maximum);
  return out;
}

/** NBD_REP_SERVER payload: u32 name length, name, then the description (proto.md "NBD_REP_SERVER"). */
export function repServer(name: string, description: string): Uint8Array {
  const nameBytes = truncatedUtf8(name);
  const descriptionBytes = truncatedUtf8(description);
  const out = new Uint8Array(4 + nameBytes.length + descriptionBytes.length);
  new DataView(out.buffer).setUint32(0, nameBytes.length);
  out.set(nameBytes, 4);
  out.set(descriptionBytes, 4 + nameBytes.length);
  return out;
}

/** NBD_REP_META_CONTEXT payload: u32 context id, name. */
export function repMetaContext(id: number, name: string): Uint8Array {
  const nameBytes = utf8.encode(name);
  const out = new Uint8Array(4 + nameBytes.length);
  new DataView(out.buffer).setUint32(0, id);
  out.set(nameBytes, 4);
  return out;
}

/**
 * Reply to OPT_EXPORT_NAME (proto.md "Newstyle negotiation"): u64 size, u16 transmission flags,
 * then 124 zero bytes unless the client set NBD_FLAG_C_NO_ZEROES.
 */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Uint8Array {
  const out = new Uint8Array(noZeroes ? 10 : 134);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(size));
  view.setUint16(8, transmissionFlags);
  return out;
}

/** Reply-type name for logs and test failures: "ERR_UNSUP", "ACK". */
export function replyName(type: number): string {
  for (const [name, value] of Object.entries(Rep)) if (value === type) return name;
  return `reply ${type}`;
}

function typedString(type: number, text: string): Uint8Array {
  const bytes = truncatedUtf8(text);
  const out = new Uint8Array(2 + bytes.length);
  new DataView(out.buffer).setUint16(0, type);
  out.set(bytes, 2);
  return out;
}

/** UTF-8 bytes cut to the 4096-byte string limit at a character boundary. */
function truncatedUtf8(text: string): Uint8Array {
  const bytes = utf8.encode(text);
  if (bytes.length <= MAX_STRING) return bytes;
  let end = MAX_STRING;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}
