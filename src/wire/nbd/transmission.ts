/**
 * @module wire/nbd/transmission — byte codecs of the NBD transmission phase (proto.md
 * "Request message", "Simple reply message", "Structured reply chunk message", "Structured
 * reply types"): an incremental request decoder and reply writers that fill a caller's buffer
 * in place, so a server can put a reply header in front of data it read without copying.
 *
 * Must not: allocate per request on the fast path (the decoder reuses one request object and
 * hands out WRITE payloads as views of the received chunk when they arrive whole), interpret
 * commands (nbd/connection.ts does), or throw on peer input.
 */
import {
  OFFSET_DATA_HEADER_SIZE,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  ReplyType,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
  Cmd,
} from "./constants.ts";

const TWO_32 = 4294967296;

/** One decoded request. The decoder reuses this object: read the fields before calling next() again. */
export interface NbdRequest {
  flags: number;
  type: number;
  /** The 64-bit cookie ("handle") as two halves, echoed unchanged in every reply. */
  cookieHi: number;
  cookieLo: number;
  /** Exact up to 2^53; larger wire values become unsafe integers, which validation rejects. */
  offset: number;
  length: number;
  /**
   * WRITE data, or null for other commands and discarded payloads. Normally all `length`
   * bytes; with `streamWrites`, one piece of them starting at `pieceOffset`.
   */
  payload: Uint8Array | null;
  /** Where `payload` starts within the WRITE data (0 unless streaming). */
  pieceOffset: number;
  /** The last (or only) piece of this request: act on the request now. */
  final: boolean;
  /** The payload was assembled into a buffer from `allocate` (the caller may recycle it). */
  payloadOwned: boolean;
  /** A WRITE longer than maxPayload: its data was consumed and dropped; answer EINVAL. */
  payloadDiscarded: boolean;
}

export interface RequestDecoderOptions {
  /** Largest WRITE payload accepted into memory. */
  maxPayload: number;
  /**
   * WRITE payloads above maxPayload but at most this are read and dropped (the request is
   * then refused with EINVAL); above it the stream is declared broken. proto.md "Block size
   * constraints": lengths under 2^25 SHOULD NOT be treated as denial of service.
   */
  discardLimit: number;
  /** Buffer for a payload that arrives split over several chunks (default: new Uint8Array). */
  allocate?: (length: number) => Uint8Array;
  /**
   * Hand out a split WRITE payload as it arrives, one view per received chunk (same request
   * object, `pieceOffset` advancing, `final` on the last), instead of assembling a copy.
   * For consumers that use each piece before asking for the next.
   */
  streamWrites?: boolean;
}

const enum Phase {
  Header,
  Payload,
  Stream,
  Discard,
  Failed,
}

/**
 * Incremental decoder of compact requests (28-byte header, then `length` bytes of data for
 * NBD_CMD_WRITE only). push() queues received chunks; next() returns the next complete
 * request, null when more bytes are needed, or a reason string once the stream is broken
 * (bad magic, absurd WRITE length) — after which it returns null forever.
 */
export class RequestDecoder {
  private readonly chunks: Uint8Array[] = [];
  private chunkIndex = 0;
  private position = 0;
  private phase = Phase.Header;
  private readonly scratch = new Uint8Array(REQUEST_HEADER_SIZE);
  private scratchFill = 0;
  private payloadFill = 0;
  private discardLeft = 0;
  private readonly request: NbdRequest = {
    flags: 0,
    type: 0,
    cookieHi: 0,
    cookieLo: 0,
    offset: 0,
    length: 0,
    payload: null,
    pieceOffset: 0,
    final: true,
    payloadOwned: false,
    payloadDiscarded: false,
  };
  private readonly allocate: (length: number) => Uint8Array;

  constructor(private readonly options: RequestDecoderOptions) {
    this.allocate = options.allocate ?? ((length) => new Uint8Array(length));
  }

  push(chunk: Uint8Array): void {
    if (this.phase === Phase.Failed || chunk.length === 0) return;
    this.chunks.push(chunk);
  }

  /** Bytes pushed but not yet consumed into a request. */
  get buffered(): number {
    let total = -this.position;
    for (let i = this.chunkIndex; i < this.chunks.length; i++) total += this.chunks[i]!.length;
    return Math.max(total, 0);
  }

  /**
   * Memory the request being received holds: a partial header, a WRITE payload's whole buffer
   * once allocated (streamed or discarded: what arrived), plus anything buffered (0 exactly
   * between requests). For the frame deadlines (transport/guard.ts): a peer that stops half
   * way through a request holds memory.
   */
  get partialBytes(): number {
    const buffered = this.buffered;
    switch (this.phase) {
      case Phase.Header:
        return this.scratchFill + buffered;
      case Phase.Payload:
        return REQUEST_HEADER_SIZE + this.request.length + buffered;
      case Phase.Stream:
        return REQUEST_HEADER_SIZE + this.payloadFill + buffered;
      case Phase.Discard:
        return REQUEST_HEADER_SIZE + this.request.length - this.discardLeft + buffered;
      case Phase.Failed:
        return 0;
    }
  }

  /** Bytes allocated for the WRITE payload being assembled (0 between requests and when streaming). */
  get assembling(): number {
    return this.phase === Phase.Payload ? this.request.length : 0;
  }

  next(): NbdRequest | string | null {
    for (;;) {
      const chunk = this.chunks[this.chunkIndex];
      if (chunk === undefined) {
        this.chunks.length = 0;
        this.chunkIndex = 0;
        this.position = 0;
        return null;
      }
      if (this.position >= chunk.length) {
        this.chunks[this.chunkIndex] = EMPTY; // let the chunk go before the array is reset
        this.chunkIndex++;
        this.position = 0;
        continue;
      }
      switch (this.phase) {
        case Phase.Header: {
          const result = this.readHeader(chunk);
          if (result !== null) return result;
          break;
        }
        case Phase.Payload:
          if (this.readPayload(chunk)) return this.request;
          break;
        case Phase.Stream:
          return this.readPiece(chunk);
        case Phase.Discard:
          if (this.discard(chunk)) return this.request;
          break;
        case Phase.Failed:
          return null;
      }
    }
  }

  private readHeader(chunk: Uint8Array): NbdRequest | string | null {
    let header: Uint8Array;
    let at: number;
    if (this.scratchFill === 0 && chunk.length - this.position >= REQUEST_HEADER_SIZE) {
      header = chunk;
      at = this.position;
      this.position += REQUEST_HEADER_SIZE;
    } else {
      const n = Math.min(REQUEST_HEADER_SIZE - this.scratchFill, chunk.length - this.position);
      this.scratch.set(chunk.subarray(this.position, this.position + n), this.scratchFill);
      this.scratchFill += n;
      this.position += n;
      if (this.scratchFill < REQUEST_HEADER_SIZE) return null;
      this.scratchFill = 0;
      header = this.scratch;
      at = 0;
    }
    const magic = u32(header, at);
    if (magic !== REQUEST_MAGIC) {
      this.fail();
      return `request magic is 0x${magic.toString(16).padStart(8, "0")}, expected 0x${REQUEST_MAGIC.toString(16)}`;
    }
    const r = this.request;
    r.flags = (header[at + 4]! << 8) | header[at + 5]!;
    r.type = (header[at + 6]! << 8) | header[at + 7]!;
    r.cookieHi = u32(header, at + 8);
    r.cookieLo = u32(header, at + 12);
    r.offset = u32(header, at + 16) * TWO_32 + u32(header, at + 20);
    r.length = u32(header, at + 24);
    r.payload = null;
    r.pieceOffset = 0;
    r.final = true;
    r.payloadOwned = false;
    r.payloadDiscarded = false;
    if (r.type !== Cmd.WRITE || r.length === 0) return r;
    if (r.length > this.options.maxPayload) {
      if (r.length > this.options.discardLimit) {
        this.fail();
        return `WRITE of ${r.length} bytes exceeds the ${this.options.discardLimit}-byte limit`;
      }
      this.phase = Phase.Discard;
      this.discardLeft = r.length;
      r.payloadDiscarded = true;
      return null;
    }
    // Zero copy when the whole payload is already here (Bun hands each data() callback a fresh
    // buffer, so a view stays valid after the callback returns).
    if (chunk.length - this.position >= r.length) {
      r.payload = chunk.subarray(this.position, this.position + r.length);
      this.position += r.length;
      return r;
    }
    this.payloadFill = 0;
    if (this.options.streamWrites) {
      this.phase = Phase.Stream;
      return this.position < chunk.length ? this.readPiece(chunk) : null;
    }
    r.payload = this.allocate(r.length);
    r.payloadOwned = true;
    this.phase = Phase.Payload;
    return null;
  }

  /** Streaming: the part of the WRITE data this chunk holds, as a view. */
  private readPiece(chunk: Uint8Array): NbdRequest {
    const r = this.request;
    const n = Math.min(r.length - this.payloadFill, chunk.length - this.position);
    r.payload = chunk.subarray(this.position, this.position + n);
    r.pieceOffset = this.payloadFill;
    this.payloadFill += n;
    this.position += n;
    r.final = this.payloadFill === r.length;
    if (r.final) this.phase = Phase.Header;
    return r;
  }

  private readPayload(chunk: Uint8Array): boolean {
    const payload = this.request.payload!;
    const n = Math.min(payload.length - this.payloadFill, chunk.length - this.position);
    payload.set(chunk.subarray(this.position, this.position + n), this.payloadFill);
    this.payloadFill += n;
    this.position += n;
    if (this.payloadFill < payload.length) return false;
    this.phase = Phase.Header;
    return true;
  }

  private discard(chunk: Uint8Array): boolean {
    const n = Math.min(this.discardLeft, chunk.length - this.position);
    this.discardLeft -= n;
    this.position += n;
    if (this.discardLeft > 0) return false;
    this.phase = Phase.Header;
    return true;
  }

  private fail(): void {
    this.phase = Phase.Failed;
    this.chunks.length = 0;
    this.chunkIndex = 0;
    this.position = 0;
  }
}

const EMPTY = new Uint8Array(0);

function u32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

export function putU16(out: Uint8Array, at: number, value: number): void {
  out[at] = value >>> 8;
  out[at + 1] = value;
}

export function putU32(out: Uint8Array, at: number, value: number): void {
  out[at] = value >>> 24;
  out[at + 1] = value >>> 16;
  out[at + 2] = value >>> 8;
  out[at + 3] = value;
}

/** Big-endian u64 from a non-negative safe integer. */
export function putU64(out: Uint8Array, at: number, value: number): void {
  const hi = Math.floor(value / TWO_32);
  putU32(out, at, hi);
  putU32(out, at + 4, value - hi * TWO_32);
}

/** Simple reply (16 bytes): magic, error, cookie. Returns the offset after it. */
export function writeSimpleReply(out: Uint8Array, at: number, error: number, cookieHi: number, cookieLo: number): number {
  putU32(out, at, SIMPLE_REPLY_MAGIC);
  putU32(out, at + 4, error);
  putU32(out, at + 8, cookieHi);
  putU32(out, at + 12, cookieLo);
  return at + 16;
}

/** Structured reply chunk header (20 bytes): magic, flags, type, cookie, payload length. */
export function writeStructuredHeader(
  out: Uint8Array,
  at: number,
  flags: number,
  type: number,
  cookieHi: number,
  cookieLo: number,
  length: number,
): number {
  putU32(out, at, STRUCTURED_REPLY_MAGIC);
  putU16(out, at + 4, flags);
  putU16(out, at + 6, type);
  putU32(out, at + 8, cookieHi);
  putU32(out, at + 12, cookieLo);
  putU32(out, at + 16, length);
  return at + STRUCTURED_HEADER_SIZE;
}

/**
 * OFFSET_DATA chunk header (28 bytes): structured header with length 8 + dataLength, then the
 * u64 offset. The caller puts `dataLength` bytes of data right after it.
 */
export function writeOffsetDataHeader(
  out: Uint8Array,
  at: number,
  flags: number,
  cookieHi: number,
  cookieLo: number,
  offset: number,
  dataLength: number,
): number {
  writeStructuredHeader(out, at, flags, ReplyType.OFFSET_DATA, cookieHi, cookieLo, 8 + dataLength);
  putU64(out, at + STRUCTURED_HEADER_SIZE, offset);
  return at + OFFSET_DATA_HEADER_SIZE;
}

/** OFFSET_HOLE chunk (32 bytes): payload u64 offset, u32 hole size (nonzero). */
export function writeOffsetHole(
  out: Uint8Array,
  at: number,
  flags: number,
  cookieHi: number,
  cookieLo: number,
  offset: number,
  size: number,
): number {
  writeStructuredHeader(out, at, flags, ReplyType.OFFSET_HOLE, cookieHi, cookieLo, 12);
  putU64(out, at + 20, offset);
  putU32(out, at + 28, size);
  return at + 32;
}

/** NONE chunk (20 bytes): always with DONE, no payload. */
export function writeNoneChunk(out: Uint8Array, at: number, cookieHi: number, cookieLo: number): number {
  return writeStructuredHeader(out, at, 1, ReplyType.NONE, cookieHi, cookieLo, 0);
}

export function errorChunkSize(message: Uint8Array): number {
  return STRUCTURED_HEADER_SIZE + 6 + message.length;
}

/** ERROR chunk: u32 error (nonzero), u16 message length, message (≤ 4096 bytes; caller's job). */
export function writeErrorChunk(
  out: Uint8Array,
  at: number,
  flags: number,
  cookieHi: number,
  cookieLo: number,
  error: number,
  message: Uint8Array,
): number {
  writeStructuredHeader(out, at, flags, ReplyType.ERROR, cookieHi, cookieLo, 6 + message.length);
  putU32(out, at + 20, error);
  putU16(out, at + 24, message.length);
  out.set(message, at + 26);
  return at + 26 + message.length;
}

export function blockStatusChunkSize(descriptors: number): number {
  return STRUCTURED_HEADER_SIZE + 4 + 8 * descriptors;
}

/**
 * BLOCK_STATUS chunk (type 5): u32 context id, then `count` descriptors of u32 length
 * (nonzero) and u32 status flags. The caller guarantees lengths fit in 32 bits.
 */
export function writeBlockStatusChunk(
  out: Uint8Array,
  at: number,
  flags: number,
  cookieHi: number,
  cookieLo: number,
  contextId: number,
  lengths: ArrayLike<number>,
  statuses: ArrayLike<number>,
  count: number,
): number {
  writeStructuredHeader(out, at, flags, ReplyType.BLOCK_STATUS, cookieHi, cookieLo, 4 + 8 * count);
  putU32(out, at + 20, contextId);
  let p = at + 24;
  for (let i = 0; i < count; i++) {
    putU32(out, p, lengths[i]!);
    putU32(out, p + 4, statuses[i]!);
    p += 8;
  }
  return p;
}

/** Encode a request (28-byte header + data): for tests, fuzzing and NBD clients. */
export function encodeRequest(request: {
  flags?: number;
  type: number;
  cookie?: bigint;
  offset?: number | bigint;
  length?: number;
  data?: Uint8Array;
}): Uint8Array {
  const data = request.data ?? new Uint8Array(0);
  const out = new Uint8Array(REQUEST_HEADER_SIZE + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, REQUEST_MAGIC);
  view.setUint16(4, request.flags ?? 0);
  view.setUint16(6, request.type);
  view.setBigUint64(8, request.cookie ?? 0n);
  view.setBigUint64(16, BigInt(request.offset ?? 0));
  view.setUint32(24, request.length ?? data.length);
  out.set(data, REQUEST_HEADER_SIZE);
  return out;
}
