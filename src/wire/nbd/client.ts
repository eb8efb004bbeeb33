/**
 * @module wire/nbd/client — byte codecs of the CLIENT side of NBD (proto.md "Fixed newstyle
 * negotiation", "NBD_OPT_INFO and NBD_OPT_GO", "Request message", "Simple reply message"):
 * encoders of client flags, option requests and request headers; incremental readers of the
 * server greeting, option replies, the EXPORT_NAME reply, and simple replies.
 *
 * Must not: touch a socket, decide policy (client/nbd-client.ts does), or throw on server
 * input — malformed bytes give a reason string and the reader stays failed.
 */
import { putU16, putU32, putU64 } from "./transmission.ts";
import { escapePeer } from "../../lib/peer-text.ts";
import {
  IHAVEOPT,
  Info,
  NBDMAGIC,
  OPTION_REPLY_MAGIC,
  Opt,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from "./constants.ts";

const utf8 = new TextEncoder();
const TWO_32 = 4294967296;

/** Client flags word (proto.md "Client flags"): 4 bytes. */
export function encodeClientFlags(flags: number): Uint8Array {
  const out = new Uint8Array(4);
  putU32(out, 0, flags);
  return out;
}

/** Option request: IHAVEOPT, u32 option, u32 length, data. */
export function encodeOptionRequest(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, IHAVEOPT);
  view.setUint32(8, option);
  view.setUint32(12, data.length);
  out.set(data, 16);
  return out;
}

/** OPT_GO / OPT_INFO: u32 name length, name, u16 count, u16 × count info requests. */
export function encodeGoOption(name: string, infoRequests: number[] = [], option: number = Opt.GO): Uint8Array {
  const nameBytes = utf8.encode(name);
  const data = new Uint8Array(6 + nameBytes.length + 2 * infoRequests.length);
  putU32(data, 0, nameBytes.length);
  data.set(nameBytes, 4);
  putU16(data, 4 + nameBytes.length, infoRequests.length);
  infoRequests.forEach((info, i) => putU16(data, 6 + nameBytes.length + 2 * i, info));
  return encodeOptionRequest(option, data);
}

/** OPT_EXPORT_NAME: the data is the bare name (proto.md "NBD_OPT_EXPORT_NAME"). */
export function encodeExportNameOption(name: string): Uint8Array {
  return encodeOptionRequest(Opt.EXPORT_NAME, utf8.encode(name));
}

/**
 * Request header (28 bytes) into `out` at `at`; the WRITE data is sent after it separately
 * so payloads are never copied. Returns the offset after the header.
 */
export function writeRequestHeader(
  out: Uint8Array,
  at: number,
  flags: number,
  type: number,
  cookie: number,
  offset: number,
  length: number,
): number {
  putU32(out, at, REQUEST_MAGIC);
  putU16(out, at + 4, flags);
  putU16(out, at + 6, type);
  putU64(out, at + 8, cookie);
  putU64(out, at + 16, offset);
  putU32(out, at + 24, length);
  return at + REQUEST_HEADER_SIZE;
}

export type ServerHandshakeEvent =
  | { kind: "greeting"; flags: number }
  | { kind: "option-reply"; option: number; type: number; data: Uint8Array }
  | { kind: "export"; size: number; flags: number }
  | { kind: "error"; reason: string };

/** Which server message the reader should decode next. */
export type ServerHandshakeExpect = "greeting" | "option-reply" | "export-name-reply";

/**
 * Incremental reader of what a server sends during the handshake. The caller says what it
 * expects next (the protocol is lock-step from the client's view); null means "need more".
 * Option reply data above `maxReplyData` is refused (a reason), not buffered.
 */
export class ServerHandshakeReader {
  private buffer = new Uint8Array(0);
  private failed = false;

  constructor(private readonly maxReplyData = 65536) {}

  push(chunk: Uint8Array): void {
    if (this.failed || chunk.length === 0) return;
    const next = new Uint8Array(this.buffer.length + chunk.length);
    next.set(this.buffer, 0);
    next.set(chunk, this.buffer.length);
    this.buffer = next;
  }

  /** Bytes received but not consumed (after the handshake: the first transmission bytes). */
  remainder(): Uint8Array {
    return this.buffer;
  }

  next(expect: ServerHandshakeExpect, noZeroes = true): ServerHandshakeEvent | null {
    if (this.failed) return null;
    const b = this.buffer;
    const view = new DataView(b.buffer, b.byteOffset, b.length);
    if (expect === "greeting") {
      if (b.length < 18) return null;
      if (view.getBigUint64(0) !== NBDMAGIC) return this.fail(`server greeting does not start with NBDMAGIC (got ${hex64(view, 0)}): not an NBD server?`);
      const second = view.getBigUint64(8);
      if (second !== IHAVEOPT) {
        return this.fail(
          second === 0x00420281861253n
            ? "server speaks oldstyle NBD negotiation, which is not supported"
            : `server greeting has ${hex64(view, 8)} where IHAVEOPT was expected`,
        );
      }
      return this.take(18, { kind: "greeting", flags: view.getUint16(16) });
    }
    if (expect === "export-name-reply") {
      const size = noZeroes ? 10 : 134;
      if (b.length < size) return null;
      const value = view.getBigUint64(0);
      if (value > BigInt(Number.MAX_SAFE_INTEGER)) return this.fail(`server reports export size ${value}, too large`);
      return this.take(size, { kind: "export", size: Number(value), flags: view.getUint16(8) });
    }
    if (b.length < 20) return null;
    if (view.getBigUint64(0) !== OPTION_REPLY_MAGIC) return this.fail(`option reply has magic ${hex64(view, 0)}, expected 0x0003e889045565a9`);
    const length = view.getUint32(16);
    if (length > this.maxReplyData) return this.fail(`option reply carries ${length} bytes, more than the ${this.maxReplyData} accepted`);
    if (b.length < 20 + length) return null;
    const data = b.slice(20, 20 + length);
    return this.take(20 + length, { kind: "option-reply", option: view.getUint32(8), type: view.getUint32(12), data });
  }

  private take(count: number, event: ServerHandshakeEvent): ServerHandshakeEvent {
    this.buffer = this.buffer.subarray(count);
    return event;
  }

  private fail(reason: string): ServerHandshakeEvent {
    this.failed = true;
    this.buffer = new Uint8Array(0);
    return { kind: "error", reason };
  }
}

export type InfoReply =
  | { info: typeof Info.EXPORT; size: number; flags: number }
  | { info: typeof Info.BLOCK_SIZE; minimum: number; preferred: number; maximum: number }
  | { info: number };

/** Payload of NBD_REP_INFO (proto.md "NBD_REP_INFO"): u16 type, then type-specific fields. */
export function parseInfoReply(data: Uint8Array): InfoReply | string {
  if (data.length < 2) return `REP_INFO carries ${data.length} bytes, at least 2 needed`;
  const view = new DataView(data.buffer, data.byteOffset, data.length);
  const info = view.getUint16(0);
  if (info === Info.EXPORT) {
    if (data.length !== 12) return `INFO_EXPORT is ${data.length} bytes, expected 12`;
    const size = view.getBigUint64(2);
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) return `INFO_EXPORT size ${size} is too large`;
    return { info, size: Number(size), flags: view.getUint16(10) };
  }
  if (info === Info.BLOCK_SIZE) {
    if (data.length !== 14) return `INFO_BLOCK_SIZE is ${data.length} bytes, expected 14`;
    return { info, minimum: view.getUint32(2), preferred: view.getUint32(6), maximum: view.getUint32(10) };
  }
  return { info };
}

/**
 * Text of an option error reply's data (proto.md: error replies MAY carry a message), made
 * printable and bounded (lib/peer-text.ts): the server chose it, and it reaches a terminal.
 */
export function optionErrorMessage(data: Uint8Array): string {
  return escapePeer(data, 200);
}

/** One decoded simple reply; `data` is the caller's buffer filled, or null. */
export interface SimpleReply {
  cookie: number;
  error: number;
  data: Uint8Array | null;
}

/**
 * Incremental decoder of simple replies (16-byte header; READ data follows only when error
 * is 0, proto.md "Simple reply message"). `payloadFor(cookie)` tells how to receive the
 * reply: a buffer to fill with the READ data (its length is the expected data length), null
 * for a reply without data, undefined for a cookie that is not outstanding (a broken stream).
 */
export class SimpleReplyDecoder {
  private readonly chunks: Uint8Array[] = [];
  private chunkIndex = 0;
  private position = 0;
  private readonly header = new Uint8Array(SIMPLE_REPLY_SIZE);
  private headerFill = 0;
  private reply: SimpleReply | null = null;
  private dataFill = 0;
  private failed = false;

  constructor(private readonly payloadFor: (cookie: number) => Uint8Array | null | undefined) {}

  push(chunk: Uint8Array): void {
    if (this.failed || chunk.length === 0) return;
    this.chunks.push(chunk);
  }

  /** The next complete reply, null when more bytes are needed, a reason once broken. */
  next(): SimpleReply | string | null {
    for (;;) {
      if (this.failed) return null;
      const chunk = this.chunks[this.chunkIndex];
      if (chunk === undefined) {
        this.chunks.length = 0;
        this.chunkIndex = 0;
        this.position = 0;
        return null;
      }
      if (this.position >= chunk.length) {
        this.chunks[this.chunkIndex] = EMPTY;
        this.chunkIndex++;
        this.position = 0;
        continue;
      }
      const result = this.reply === null ? this.readHeader(chunk) : this.readData(chunk);
      if (result !== null) return result;
    }
  }

  private readHeader(chunk: Uint8Array): SimpleReply | string | null {
    const n = Math.min(SIMPLE_REPLY_SIZE - this.headerFill, chunk.length - this.position);
    this.header.set(chunk.subarray(this.position, this.position + n), this.headerFill);
    this.headerFill += n;
    this.position += n;
    if (this.headerFill < SIMPLE_REPLY_SIZE) return null;
    this.headerFill = 0;
    const h = this.header;
    const magic = u32(h, 0);
    if (magic !== SIMPLE_REPLY_MAGIC) {
      return this.fail(
        magic === STRUCTURED_REPLY_MAGIC
          ? "server sent a structured reply, which was not negotiated"
          : `reply magic is 0x${magic.toString(16).padStart(8, "0")}, expected 0x${SIMPLE_REPLY_MAGIC.toString(16)}`,
      );
    }
    const error = u32(h, 4);
    const cookie = u32(h, 8) * TWO_32 + u32(h, 12);
    const target = this.payloadFor(cookie);
    if (target === undefined) return this.fail(`reply for cookie ${cookie}, which is not outstanding`);
    const reply: SimpleReply = { cookie, error, data: null };
    if (error !== 0 || target === null || target.length === 0) {
      if (error === 0 && target !== null) reply.data = target;
      return reply;
    }
    reply.data = target;
    this.reply = reply;
    this.dataFill = 0;
    return null;
  }

  private readData(chunk: Uint8Array): SimpleReply | null {
    const reply = this.reply!;
    const data = reply.data!;
    const n = Math.min(data.length - this.dataFill, chunk.length - this.position);
    data.set(chunk.subarray(this.position, this.position + n), this.dataFill);
    this.dataFill += n;
    this.position += n;
    if (this.dataFill < data.length) return null;
    this.reply = null;
    return reply;
  }

  private fail(reason: string): string {
    this.failed = true;
    this.chunks.length = 0;
    this.chunkIndex = 0;
    this.position = 0;
    return reason;
  }
}

const EMPTY = new Uint8Array(0);

function u32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

function hex64(view: DataView, at: number): string {
  return `0x${view.getBigUint64(at).toString(16).padStart(16, "0")}`;
}
