/**
 * @module nbd/replies — where an NBD connection's replies are built: a batch buffer
 * that collects every small reply completed in one onData() (or one microtask) and leaves in
 * one sink.write, READ data read in place behind its header, and separate frames for large
 * READs. Simple or structured framing per proto.md "Simple reply message" / "Structured reply
 * chunk message", chosen by what the client negotiated.
 *
 * Buffer ownership (transport/tcp.ts queues views of what it could not send): a batch or frame
 * handed to the sink is not touched again until the sink's queue is empty (reclaim()).
 * Must not: decide what to answer (nbd/connection.ts does) or write to a closed sink.
 */
import { errnoMessage } from "../lib/errno.ts";
import type { Sink } from "../transport/types.ts";
import { OFFSET_DATA_HEADER_SIZE, REPLY_FLAG_DONE, SIMPLE_REPLY_SIZE, STRUCTURED_HEADER_SIZE, nbdErrno } from "../wire/nbd/constants.ts";
import {
  blockStatusChunkSize,
  errorChunkSize,
  writeBlockStatusChunk,
  writeErrorChunk,
  writeNoneChunk,
  writeOffsetDataHeader,
  writeSimpleReply,
} from "../wire/nbd/transmission.ts";
import { giveBuffer } from "../lib/buffer-pool.ts";

const BATCH_SIZE = 256 * 1024;
/** READs up to this size are answered inside the batch; larger ones get their own frame. */
export const INLINE_READ_MAX = 128 * 1024;
const MAX_MESSAGE = 1024;
const utf8 = new TextEncoder();

export class ReplyBatch {
  /** Current batch; bytes [0, length) are replies not yet handed to the sink. */
  buffer: Uint8Array = new Uint8Array(BATCH_SIZE);
  length = 0;
  /** READ reply header size: OFFSET_DATA chunk (28) when structured, simple reply (16) otherwise. */
  readonly readHeaderSize: number;
  private spare: Uint8Array | null = null;
  private heldBatch: Uint8Array | null = null;
  private readonly heldFrames: Uint8Array[] = [];

  constructor(
    private readonly sink: Sink,
    /** Structured replies negotiated (never in kernel mode: it accepts only simple replies). */
    readonly structured: boolean,
  ) {
    this.readHeaderSize = structured ? OFFSET_DATA_HEADER_SIZE : SIMPLE_REPLY_SIZE;
  }

  /** Make room for `bytes` at `length`, sending what the batch holds if needed. */
  reserve(bytes: number): void {
    if (this.length + bytes > this.buffer.length) this.flush();
  }

  /** Success without data (simple replies are fine for that even when structured, except READ). */
  ok(cookieHi: number, cookieLo: number): void {
    this.reserve(SIMPLE_REPLY_SIZE);
    this.length = writeSimpleReply(this.buffer, this.length, 0, cookieHi, cookieLo);
  }

  /** Zero-length READ: no data, but never a simple reply once structured (proto.md). */
  emptyRead(cookieHi: number, cookieLo: number): void {
    if (!this.structured) return this.ok(cookieHi, cookieLo);
    this.reserve(STRUCTURED_HEADER_SIZE);
    this.length = writeNoneChunk(this.buffer, this.length, cookieHi, cookieLo);
  }

  /**
   * A failed request. Structured: an ERROR chunk with a message (proto.md: servers SHOULD
   * prefer those). Simple: the error field alone — a failed READ carries no payload.
   */
  error(cookieHi: number, cookieLo: number, errno: number, context: string): void {
    const wire = nbdErrno(errno);
    if (this.structured) {
      const message = utf8.encode(`${context}: ${errnoMessage(errno)}`.slice(0, MAX_MESSAGE));
      this.reserve(errorChunkSize(message));
      this.length = writeErrorChunk(this.buffer, this.length, REPLY_FLAG_DONE, cookieHi, cookieLo, wire, message);
    } else {
      this.reserve(SIMPLE_REPLY_SIZE);
      this.length = writeSimpleReply(this.buffer, this.length, wire, cookieHi, cookieLo);
    }
  }

  blockStatus(cookieHi: number, cookieLo: number, contextId: number, lengths: Uint32Array, statuses: Uint32Array, count: number): void {
    this.reserve(blockStatusChunkSize(count));
    this.length = writeBlockStatusChunk(this.buffer, this.length, REPLY_FLAG_DONE, cookieHi, cookieLo, contextId, lengths, statuses, count);
  }

  /** The READ reply header in front of data already placed at `at + readHeaderSize`. */
  writeReadHeader(buffer: Uint8Array, at: number, cookieHi: number, cookieLo: number, offset: number, length: number): void {
    if (this.structured) writeOffsetDataHeader(buffer, at, REPLY_FLAG_DONE, cookieHi, cookieLo, offset, length);
    else writeSimpleReply(buffer, at, 0, cookieHi, cookieLo);
  }

  /** Hand the batch to the sink. If the sink kept part of it, switch buffers until it drains. */
  flush(): void {
    if (this.length === 0) return;
    this.sink.write(this.buffer.subarray(0, this.length));
    this.length = 0;
    if (this.sink.queuedBytes > 0) {
      this.heldBatch = this.buffer; // an older held batch is dropped: the GC frees it once the sink lets go
      this.buffer = this.spare ?? new Uint8Array(BATCH_SIZE);
      this.spare = null;
    }
  }

  /** A large READ reply (header + data in one pooled frame), after the batched small ones. */
  sendFrame(frame: Uint8Array): void {
    this.flush();
    this.sink.write(frame);
    if (this.sink.queuedBytes > 0) this.heldFrames.push(frame);
    else giveBuffer(frame);
  }

  /** Only with the sink's queue empty: nothing we handed it is referenced any more. */
  reclaim(): void {
    if (this.sink.queuedBytes !== 0) return;
    for (const frame of this.heldFrames) giveBuffer(frame);
    this.heldFrames.length = 0;
    if (this.heldBatch !== null) {
      this.spare = this.heldBatch;
      this.heldBatch = null;
    }
  }
}
