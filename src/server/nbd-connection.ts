/**
 * @module server/nbd-connection — one NBD connection: the fixed newstyle handshake
 * (server/nbd-handshake.ts) or none at all (kernel mode: the Linux client speaks only the
 * transmission phase and accepts only simple replies, landscape.md §2.3), then the
 * transmission phase against an NbdTarget.
 *
 * Data path (issue 6 performance notes): requests are decoded without copying where the bytes
 * arrived whole; a synchronous target reads straight into a batch buffer behind the reply
 * header, and every reply completed during one onData() leaves in one sink.write. Large reads
 * get their own pooled frame (header + data, one write, no copy). Ops are pooled objects with
 * callbacks bound once, so a request allocates nothing on the fast path.
 *
 * Bounded: at most maxInFlightBytes of requests in flight and maxQueuedBytes waiting in the
 * socket queue (NbdConnectionLimits); beyond either, reading stops (sink.pause) until replies drain.
 *
 * Must not: throw out of a ConnectionHandler method, answer a request twice, report a failed
 * request as success, or let one connection's bad input disturb another.
 */
import type { Extent } from "../backend/types.ts";
import { AssertionError } from "../lib/assert.ts";
import type { Access } from "../lib/acl.ts";
import { Errno, errnoMessage } from "../lib/errno.ts";
import { errorMessage } from "../lib/errors.ts";
import { describePeer, type AcceptHandler, type ConnectionHandler, type Peer, type Sink } from "../transport/types.ts";
import {
  Cmd,
  CmdFlag,
  DOS_PAYLOAD_LIMIT,
  OFFSET_DATA_HEADER_SIZE,
  REPLY_FLAG_DONE,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_HEADER_SIZE,
  State,
  commandName,
  nbdErrno,
} from "../wire/nbd/constants.ts";
import {
  RequestDecoder,
  blockStatusChunkSize,
  errorChunkSize,
  writeBlockStatusChunk,
  writeErrorChunk,
  writeNoneChunk,
  writeOffsetDataHeader,
  writeSimpleReply,
  type NbdRequest,
} from "../wire/nbd/transmission.ts";
import { giveBuffer, takeBuffer } from "./nbd-buffers.ts";
import { BASE_ALLOCATION_ID, NbdHandshake, transmissionFlags, type NbdServerOptions, type Transmission } from "./nbd-handshake.ts";
import type { NbdTarget } from "./nbd-target.ts";
import { validateRequest, type RequestKind, type RequestLimits } from "./validate.ts";

export type { NbdLog, NbdResolution, NbdServerOptions } from "./nbd-handshake.ts";

export interface NbdConnectionOptions extends NbdServerOptions {
  mode: "newstyle" | "kernel";
  /** Kernel mode: the export to resolve (there is no handshake to name one). Default "". */
  exportName?: string;
  /** Memory bounds; the defaults suit production, tests shrink them. */
  limits?: Partial<NbdConnectionLimits>;
}

export interface NbdConnectionLimits {
  /** Bytes of READ/WRITE data being served at once before reading stops (default 64 MiB). */
  maxInFlightBytes: number;
  /** Requests being served at once (default 1024). */
  maxInFlightRequests: number;
  /** Bytes waiting in the sink's queue before reading stops (default 16 MiB). */
  maxQueuedBytes: number;
}

const DEFAULT_LIMITS: NbdConnectionLimits = {
  maxInFlightBytes: 64 * 1024 * 1024,
  maxInFlightRequests: 1024,
  maxQueuedBytes: 16 * 1024 * 1024,
};
const MAX_WIRE_PAYLOAD = 0xffffffff - 64;
const BATCH_SIZE = 256 * 1024;
/** Reads up to this size are answered inside the batch buffer; larger ones get a frame. */
const INLINE_READ_MAX = 128 * 1024;
/** Most descriptors per BLOCK_STATUS reply (proto.md: a server MAY return fewer). */
const MAX_DESCRIPTORS = 2048;

const utf8 = new TextEncoder();

/** Factory for listeners: every accepted connection does the newstyle handshake. */
export function acceptNbd(options: Omit<NbdConnectionOptions, "mode">): AcceptHandler {
  return (sink, peer) => new NbdConnection(sink, peer, { ...options, mode: "newstyle" });
}

/** A request being served. Pooled; callbacks are bound once per object, not per request. */
class Op {
  cookieHi = 0;
  cookieLo = 0;
  type = 0;
  flags = 0;
  offset = 0;
  length = 0;
  /** READ: the buffer the reply is built in (batch or frame); WRITE: owned payload or null. */
  buffer: Uint8Array | null = null;
  /** READ into the batch: where the reply starts. -1 for a separate frame. */
  at = -1;
  accounted = 0;
  active = false;
  readonly readDone: (errno: number) => void;
  readonly statusDone: (errno: number) => void;
  readonly extentsDone: (errno: number, extents: Extent[] | null) => void;

  constructor(connection: NbdConnection) {
    this.readDone = (errno) => connection.completeRead(this, errno);
    this.statusDone = (errno) => connection.completeStatus(this, errno);
    this.extentsDone = (errno, extents) => connection.completeExtents(this, errno, extents);
  }
}

type Phase = "handshake" | "transmission" | "closed";

export class NbdConnection implements ConnectionHandler {
  private phase: Phase = "handshake";
  private readonly handshake: NbdHandshake | null = null;
  private tx: Transmission | null = null;
  private target: NbdTarget | null = null;
  private limits: RequestLimits = { size: 0, writable: false, maxPayload: 0 };
  private decoder: RequestDecoder | null = null;
  private readonly ops: Op[] = [];
  private inFlight = 0;
  private inFlightBytes = 0;
  private batch: Uint8Array = new Uint8Array(BATCH_SIZE);
  private batchLength = 0;
  private spareBatch: Uint8Array | null = null;
  /** A batch the sink may still hold (it queued part of it); ours again once it drains. */
  private heldBatch: Uint8Array | null = null;
  /** Frames the sink may still hold; back to the pool once it drains. */
  private readonly heldFrames: Uint8Array[] = [];
  private pumping = false;
  private paused = false;
  private disconnecting = false;
  private flushScheduled = false;
  private readonly bounds: NbdConnectionLimits;
  private readonly lengths = new Uint32Array(MAX_DESCRIPTORS);
  private readonly statuses = new Uint32Array(MAX_DESCRIPTORS);
  /** errno of the WRITE being streamed piece by piece (first failure wins). */
  private pieceErrno = 0;
  private readonly pieceDone = (errno: number) => {
    if (errno !== 0 && this.pieceErrno === 0) this.pieceErrno = errno;
  };
  private readonly flushTask = () => {
    this.flushScheduled = false;
    this.afterCompletion();
  };

  constructor(
    private readonly sink: Sink,
    private readonly peer: Peer,
    private readonly options: NbdConnectionOptions,
  ) {
    this.bounds = { ...DEFAULT_LIMITS, ...options.limits };
    if (options.mode === "kernel") {
      this.startKernel();
    } else {
      this.handshake = new NbdHandshake(peer, options, (bytes) => sink.write(bytes));
      this.handshake.start();
    }
  }

  onData(chunk: Uint8Array): void {
    if (this.phase === "closed") return;
    try {
      if (this.phase === "handshake") this.feedHandshake(chunk);
      else if (!this.disconnecting) {
        this.decoder!.push(chunk);
        this.pump();
      }
    } catch (error) {
      this.crash(error);
    }
  }

  onDrain(): void {
    if (this.phase !== "transmission") return;
    try {
      // The queue is empty: whatever we handed the sink is ours again.
      this.reclaim();
      this.pump();
    } catch (error) {
      this.crash(error);
    }
  }

  /** Only when the sink's queue is empty: nothing we handed it is referenced any more. */
  private reclaim(): void {
    if (this.sink.queuedBytes !== 0) return;
    for (const frame of this.heldFrames) giveBuffer(frame);
    this.heldFrames.length = 0;
    if (this.heldBatch !== null) {
      this.spareBatch = this.heldBatch;
      this.heldBatch = null;
    }
  }

  onClose(reason: string | null): void {
    if (this.phase === "closed") return;
    this.phase = "closed";
    // In-flight ops may still complete into their buffers; those buffers are not recycled.
    if (reason !== null) this.options.log?.info(`NBD ${describePeer(this.peer)} closed: ${reason}`);
  }

  // ---- handshake ------------------------------------------------------------------------

  private feedHandshake(chunk: Uint8Array): void {
    const step = this.handshake!.feed(chunk);
    if (step.kind === "continue") return;
    if (step.kind === "close") {
      if (step.graceful) {
        this.phase = "closed";
        this.sink.end();
      } else this.fail(`handshake: ${step.reason}`);
      return;
    }
    this.enterTransmission(step.transmission);
    if (step.remainder.length > 0) this.onData(step.remainder);
  }

  private startKernel(): void {
    const name = this.options.exportName ?? "";
    const resolved = this.options.resolve(name, this.peer);
    if ("refuse" in resolved) {
      this.fail(`kernel export ${JSON.stringify(name)} refused: ${resolved.refuse}`);
      return;
    }
    const { target, access } = resolved;
    // The kernel negotiates nothing: no structured replies, no meta contexts (landscape.md §2.3).
    this.enterTransmission({
      name,
      target,
      access,
      structured: false,
      blockStatus: false,
      flags: transmissionFlags(target, access, false),
    });
  }

  private enterTransmission(tx: Transmission): void {
    this.tx = tx;
    this.target = tx.target;
    // An OFFSET_DATA chunk's u32 length holds 8 + data: cap requests well below 2^32.
    const maxPayload = Math.min(tx.target.maxPayload, MAX_WIRE_PAYLOAD);
    this.limits = { size: tx.target.size, writable: isWritable(tx.target, tx.access), maxPayload };
    this.decoder = new RequestDecoder({
      maxPayload,
      discardLimit: Math.max(DOS_PAYLOAD_LIMIT, maxPayload),
      allocate: takeBuffer,
      // A synchronous target uses each piece before the next arrives: no assembly copy.
      streamWrites: tx.target.synchronous,
    });
    this.phase = "transmission";
    this.options.log?.info(
      `NBD ${describePeer(this.peer)}: serving ${JSON.stringify(tx.name)} ${this.limits.writable ? "rw" : "ro"}` +
        (this.options.mode === "kernel" ? " (kernel)" : tx.structured ? " (structured replies)" : ""),
    );
  }

  // ---- request loop ---------------------------------------------------------------------

  private blocked(): boolean {
    const bounds = this.bounds;
    return (
      this.inFlightBytes > bounds.maxInFlightBytes ||
      this.inFlight >= bounds.maxInFlightRequests ||
      this.sink.queuedBytes > bounds.maxQueuedBytes
    );
  }

  /** Serve decoded requests until input runs out or a bound is hit; then send the batch. */
  private pump(): void {
    if (this.pumping || this.phase !== "transmission") return;
    this.pumping = true;
    try {
      while (!this.disconnecting && this.phase === "transmission" && !this.blocked()) {
        const request = this.decoder!.next();
        if (request === null) break;
        if (typeof request === "string") {
          this.fail(request);
          return;
        }
        this.serve(request);
      }
    } finally {
      this.pumping = false;
    }
    if (this.phase !== "transmission") return;
    this.flushBatch();
    this.updateFlow();
    this.finishIfDisconnected();
  }

  private updateFlow(): void {
    const blocked = this.blocked();
    if (blocked && !this.paused) {
      this.paused = true;
      this.sink.pause();
    } else if (!blocked && this.paused) {
      this.paused = false;
      this.sink.resume();
    }
  }

  private serve(r: NbdRequest): void {
    switch (r.type) {
      case Cmd.READ:
        return this.read(r);
      case Cmd.WRITE:
        return this.write(r);
      case Cmd.DISC:
        // proto.md NBD_CMD_DISC: finish outstanding requests, then close; no reply.
        this.disconnecting = true;
        return;
      case Cmd.FLUSH:
        return this.simple(r, "flush");
      case Cmd.TRIM:
        return this.simple(r, "trim");
      case Cmd.CACHE:
        return this.simple(r, "cache");
      case Cmd.WRITE_ZEROES:
        return this.simple(r, "zero");
      case Cmd.BLOCK_STATUS:
        return this.blockStatus(r);
      default:
        // proto.md "Error values": "SHOULD return NBD_EINVAL if it receives an unknown command".
        return this.replyError(r.cookieHi, r.cookieLo, Errno.EINVAL, `unknown command ${r.type}`);
    }
  }

  /** Flags each command may carry (proto.md "Command flags"); FUA is accepted on all. */
  private flagError(r: NbdRequest): number {
    let allowed: number = CmdFlag.FUA;
    const tx = this.tx!;
    if (r.type === Cmd.READ && tx.structured) allowed |= CmdFlag.DF;
    if (r.type === Cmd.WRITE_ZEROES) {
      allowed |= CmdFlag.NO_HOLE;
      if (this.target!.canFastZero) allowed |= CmdFlag.FAST_ZERO;
    }
    if (r.type === Cmd.BLOCK_STATUS) allowed |= CmdFlag.REQ_ONE;
    return (r.flags & ~allowed) === 0 ? 0 : Errno.EINVAL;
  }

  private read(r: NbdRequest): void {
    const invalid = this.flagError(r) || validateRequest("read", r.offset, r.length, this.limits);
    if (invalid !== 0) return this.replyError(r.cookieHi, r.cookieLo, invalid, this.why(r, invalid));
    const structured = this.tx!.structured;
    if (r.length === 0) return this.replyEmptyRead(r.cookieHi, r.cookieLo);
    const header = structured ? OFFSET_DATA_HEADER_SIZE : SIMPLE_REPLY_SIZE;
    const op = this.takeOp(r);
    const target = this.target!;
    if (target.synchronous && r.length <= INLINE_READ_MAX) {
      this.reserve(header + r.length);
      op.buffer = this.batch;
      op.at = this.batchLength;
      const start = op.at + header;
      target.read(r.offset, this.batch.subarray(start, start + r.length), op.readDone);
      if (op.active) throw new AssertionError("a synchronous NBD target returned before completing a read");
      return;
    }
    const frame = takeBuffer(header + r.length);
    op.buffer = frame;
    op.at = -1;
    this.account(op, r.length);
    target.read(r.offset, frame.subarray(header, header + r.length), op.readDone);
  }

  /** Called by the target (through Op.readDone) when a READ finished. */
  completeRead(op: Op, errno: number): void {
    if (!this.finishOp(op)) return;
    const buffer = op.buffer!;
    op.buffer = null;
    if (errno !== 0) {
      if (op.at < 0) giveBuffer(buffer);
      this.replyError(op.cookieHi, op.cookieLo, errno, `READ at offset ${op.offset} length ${op.length} failed`);
    } else if (op.at >= 0) {
      // Inline: the data already sits in the batch behind the reserved header.
      this.writeReadHeader(buffer, op.at, op);
      this.batchLength = op.at + this.readHeaderSize() + op.length;
    } else {
      this.writeReadHeader(buffer, 0, op);
      this.sendFrame(buffer);
    }
    this.releaseOp(op);
  }

  private writeError(r: NbdRequest): number {
    let invalid = this.flagError(r) || (this.limits.writable ? 0 : Errno.EPERM);
    if (invalid === 0 && r.payloadDiscarded) invalid = Errno.EINVAL;
    if (invalid === 0) invalid = validateRequest("write", r.offset, r.length, this.limits);
    return invalid;
  }

  private write(r: NbdRequest): void {
    if (!r.final || r.pieceOffset > 0) return this.writePiece(r);
    const payload = r.payloadOwned ? r.payload : null;
    const invalid = this.writeError(r);
    if (invalid !== 0) {
      if (payload) giveBuffer(payload);
      return this.replyError(r.cookieHi, r.cookieLo, invalid, this.why(r, invalid));
    }
    const op = this.takeOp(r);
    op.buffer = payload;
    this.account(op, r.length);
    this.target!.write(r.offset, r.payload ?? EMPTY, (r.flags & CmdFlag.FUA) !== 0, op.statusDone);
  }

  /**
   * A piece of a WRITE split over several socket reads (synchronous targets only: the decoder
   * streams pieces instead of assembling a copy). Each piece is written as it arrives; FUA
   * rides on the last one (a backend's FUA is an fdatasync, which covers the earlier pieces).
   * The first failure is remembered and answered once the whole payload is consumed.
   */
  private writePiece(r: NbdRequest): void {
    if (r.pieceOffset === 0) this.pieceErrno = this.writeError(r);
    if (this.pieceErrno === 0 && r.payload !== null) {
      const fua = r.final && (r.flags & CmdFlag.FUA) !== 0;
      this.target!.write(r.offset + r.pieceOffset, r.payload, fua, this.pieceDone);
    }
    if (!r.final) return;
    if (this.pieceErrno === 0) this.replyOk(r.cookieHi, r.cookieLo);
    else this.replyError(r.cookieHi, r.cookieLo, this.pieceErrno, `WRITE at offset ${r.offset} length ${r.length} failed`);
  }

  /** FLUSH, TRIM, CACHE, WRITE_ZEROES: no payload either way, a status reply. */
  private simple(r: NbdRequest, kind: RequestKind & ("flush" | "trim" | "cache" | "zero")): void {
    const target = this.target!;
    let invalid = this.flagError(r);
    if (invalid === 0) {
      if (kind === "flush") invalid = target.canFlush && r.offset === 0 && r.length === 0 ? 0 : Errno.EINVAL;
      else if (kind === "trim" && this.limits.writable && !target.canTrim) invalid = Errno.EINVAL;
      else if (kind === "zero" && this.limits.writable && !target.canZero) invalid = Errno.EINVAL;
      else if (kind === "cache" && r.length > target.maxPayload) invalid = Errno.EINVAL;
    }
    if (invalid === 0) invalid = validateRequest(kind, r.offset, r.length, this.limits);
    if (invalid !== 0) return this.replyError(r.cookieHi, r.cookieLo, invalid, this.why(r, invalid));
    // CACHE is a hint (proto.md NBD_CMD_CACHE); replying at once is allowed and honest.
    if (kind === "cache") return this.replyOk(r.cookieHi, r.cookieLo);
    const op = this.takeOp(r);
    this.account(op, 0);
    const fua = (r.flags & CmdFlag.FUA) !== 0;
    if (kind === "flush") target.flush(op.statusDone);
    else if (kind === "trim") target.trim(r.offset, r.length, fua, op.statusDone);
    else {
      const noHole = (r.flags & CmdFlag.NO_HOLE) !== 0;
      const fast = (r.flags & CmdFlag.FAST_ZERO) !== 0;
      target.zero(r.offset, r.length, { fua, noHole, fast }, op.statusDone);
    }
  }

  /** Called by the target when a WRITE, FLUSH, TRIM or WRITE_ZEROES finished. */
  completeStatus(op: Op, errno: number): void {
    if (!this.finishOp(op)) return;
    if (op.buffer !== null) giveBuffer(op.buffer);
    op.buffer = null;
    if (errno === 0) this.replyOk(op.cookieHi, op.cookieLo);
    else this.replyError(op.cookieHi, op.cookieLo, errno, `${commandName(op.type)} at offset ${op.offset} length ${op.length} failed`);
    this.releaseOp(op);
  }

  private blockStatus(r: NbdRequest): void {
    let invalid = this.flagError(r);
    // proto.md NBD_CMD_BLOCK_STATUS: without a selected context, "SHOULD reply with NBD_EINVAL".
    if (invalid === 0 && !this.tx!.blockStatus) invalid = Errno.EINVAL;
    if (invalid === 0 && r.length === 0) invalid = Errno.EINVAL;
    if (invalid === 0) invalid = validateRequest("block-status", r.offset, r.length, this.limits);
    if (invalid !== 0) return this.replyError(r.cookieHi, r.cookieLo, invalid, this.why(r, invalid));
    const op = this.takeOp(r);
    this.account(op, 0);
    this.target!.extents(r.offset, r.length, op.extentsDone);
  }

  /** Called by the target with the allocation map for a BLOCK_STATUS request. */
  completeExtents(op: Op, errno: number, extents: Extent[] | null): void {
    if (!this.finishOp(op)) return;
    if (errno !== 0 || extents === null) {
      this.replyError(op.cookieHi, op.cookieLo, errno || Errno.EIO, `BLOCK_STATUS at offset ${op.offset} failed`);
    } else {
      const count = this.describe(extents, op.length, (op.flags & CmdFlag.REQ_ONE) !== 0);
      this.reserve(blockStatusChunkSize(count));
      this.batchLength = writeBlockStatusChunk(
        this.batch, this.batchLength, REPLY_FLAG_DONE, op.cookieHi, op.cookieLo,
        BASE_ALLOCATION_ID, this.lengths, this.statuses, count,
      );
    }
    this.releaseOp(op);
  }

  /**
   * Turn extents into base:allocation descriptors in this.lengths/statuses: merged runs of
   * equal status, clipped so the total never exceeds the request (64-bit-safe: every length
   * is a JS number ≤ the 32-bit request length; CVE-2025-47711/47712, landscape.md P23).
   * REQ_ONE gives exactly one. Never zero descriptors: status 0 is always a truthful answer.
   */
  private describe(extents: Extent[], length: number, one: boolean): number {
    let count = 0;
    let remaining = length;
    for (const extent of extents) {
      if (remaining === 0) break;
      const size = extent.length;
      if (!Number.isSafeInteger(size) || size <= 0) break; // a broken map: report what we have
      const n = Math.min(size, remaining);
      const status = (extent.hole ? State.HOLE : 0) | (extent.zero || extent.hole ? State.ZERO : 0);
      if (count > 0 && this.statuses[count - 1] === status) this.lengths[count - 1]! += n;
      else {
        if (count === (one ? 1 : MAX_DESCRIPTORS)) break;
        this.lengths[count] = n;
        this.statuses[count] = status;
        count++;
      }
      remaining -= n;
    }
    if (count === 0) {
      this.lengths[0] = length;
      this.statuses[0] = 0;
      count = 1;
    }
    return count;
  }

  // ---- replies ---------------------------------------------------------------------------

  private readHeaderSize(): number {
    return this.tx!.structured ? OFFSET_DATA_HEADER_SIZE : SIMPLE_REPLY_SIZE;
  }

  private writeReadHeader(buffer: Uint8Array, at: number, op: Op): void {
    if (this.tx!.structured) writeOffsetDataHeader(buffer, at, REPLY_FLAG_DONE, op.cookieHi, op.cookieLo, op.offset, op.length);
    else writeSimpleReply(buffer, at, 0, op.cookieHi, op.cookieLo);
  }

  private replyOk(cookieHi: number, cookieLo: number): void {
    this.reserve(SIMPLE_REPLY_SIZE);
    // Simple replies are allowed for every payload-less success even with structured replies
    // negotiated — but not for READ (proto.md "Simple reply message"), hence the NONE chunk.
    this.batchLength = writeSimpleReply(this.batch, this.batchLength, 0, cookieHi, cookieLo);
  }

  /** Zero-length READ: success without data, but never a simple reply once structured. */
  private replyEmptyRead(cookieHi: number, cookieLo: number): void {
    if (!this.tx!.structured) return this.replyOk(cookieHi, cookieLo);
    this.reserve(STRUCTURED_HEADER_SIZE);
    this.batchLength = writeNoneChunk(this.batch, this.batchLength, cookieHi, cookieLo);
  }

  private replyError(cookieHi: number, cookieLo: number, errno: number, context: string): void {
    const wire = nbdErrno(errno);
    if (this.tx!.structured) {
      // proto.md: the server SHOULD prefer structured errors, which carry a message.
      const message = utf8.encode(`${context}: ${errnoMessage(errno)}`.slice(0, 1024));
      this.reserve(errorChunkSize(message));
      this.batchLength = writeErrorChunk(this.batch, this.batchLength, REPLY_FLAG_DONE, cookieHi, cookieLo, wire, message);
    } else {
      // A simple READ error carries no payload (proto.md NBD_CMD_READ "Simple replies").
      this.reserve(SIMPLE_REPLY_SIZE);
      this.batchLength = writeSimpleReply(this.batch, this.batchLength, wire, cookieHi, cookieLo);
    }
  }

  private why(r: NbdRequest, errno: number): string {
    return `${commandName(r.type)} flags 0x${r.flags.toString(16)} offset ${r.offset} length ${r.length} refused (${errnoMessage(errno)})`;
  }

  /** Make room for `bytes` in the batch, sending what it holds if needed. */
  private reserve(bytes: number): void {
    if (this.batchLength + bytes > this.batch.length) this.flushBatch();
  }

  private flushBatch(): void {
    if (this.batchLength === 0 || this.phase !== "transmission") return;
    this.sink.write(this.batch.subarray(0, this.batchLength));
    this.batchLength = 0;
    if (this.sink.queuedBytes > 0) {
      // The sink kept a view of our batch: switch buffers until the queue drains. An older
      // held batch is simply dropped (the GC frees it once the sink lets go).
      this.heldBatch = this.batch;
      this.batch = this.spareBatch ?? new Uint8Array(BATCH_SIZE);
      this.spareBatch = null;
    }
  }

  /** A large READ reply: its own frame, after whatever small replies are batched. */
  private sendFrame(frame: Uint8Array): void {
    this.flushBatch();
    this.sink.write(frame);
    if (this.sink.queuedBytes > 0) this.heldFrames.push(frame);
    else giveBuffer(frame);
  }

  // ---- op bookkeeping ----------------------------------------------------------------------

  private takeOp(r: NbdRequest): Op {
    const op = this.ops.pop() ?? new Op(this);
    op.cookieHi = r.cookieHi;
    op.cookieLo = r.cookieLo;
    op.type = r.type;
    op.flags = r.flags;
    op.offset = r.offset;
    op.length = r.length;
    op.active = true;
    op.accounted = 0;
    this.inFlight++;
    return op;
  }

  private account(op: Op, bytes: number): void {
    op.accounted = bytes;
    this.inFlightBytes += bytes;
  }

  /** False when the op was already completed (a target calling done twice) or we are closed. */
  private finishOp(op: Op): boolean {
    if (!op.active) {
      this.options.log?.warn(`NBD ${describePeer(this.peer)}: target completed ${commandName(op.type)} twice; ignored`);
      return false;
    }
    op.active = false;
    this.inFlight--;
    this.inFlightBytes -= op.accounted;
    return this.phase === "transmission";
  }

  private releaseOp(op: Op): void {
    this.ops.push(op);
    // Completions outside pump() (an asynchronous target) are sent in one microtask batch.
    if (!this.pumping && !this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flushTask);
    }
  }

  private afterCompletion(): void {
    if (this.phase !== "transmission") return;
    try {
      this.flushBatch();
      this.reclaim();
      this.pump();
    } catch (error) {
      this.crash(error);
    }
  }

  private finishIfDisconnected(): void {
    if (!this.disconnecting || this.inFlight > 0 || this.phase !== "transmission") return;
    this.flushBatch();
    this.phase = "closed";
    this.sink.end();
  }

  // ---- failure ---------------------------------------------------------------------------

  /** Peer broke the protocol: log why and drop this connection only (hard disconnect). */
  private fail(reason: string): void {
    if (this.phase === "closed") return;
    this.phase = "closed";
    this.options.log?.warn(`NBD ${describePeer(this.peer)}: ${reason}; closing the connection`);
    this.sink.destroy();
  }

  /** An unexpected exception: a dstd bug. Assertions crash (lib/assert.ts); others drop the connection. */
  private crash(error: unknown): void {
    if (error instanceof AssertionError) throw error;
    this.fail(`internal error: ${errorMessage(error)}`);
  }
}

const EMPTY = new Uint8Array(0);

function isWritable(target: NbdTarget, access: Access): boolean {
  return access === "rw" && !target.readOnly;
}
