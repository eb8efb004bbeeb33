/**
 * @module nbd/transmission — the NBD transmission phase of one connection (proto.md
 * "Transmission", "Request types"): decode requests, check them, hand them to the StoragePort,
 * answer as they complete (out of order is allowed), keep memory bounded.
 *
 * Data path (issue 6): requests are decoded without copying where the bytes arrived whole;
 * split WRITE payloads stream to a synchronous target piece by piece instead of being
 * reassembled; a synchronous target reads straight into the reply batch behind the header.
 * Ops are pooled and their callbacks bound once, so a request allocates nothing. A WRITE
 * payload gathered into a pooled buffer is handed over to a port that takes buffers (the
 * remote engine: no copy at submit) and goes back to the pool when its last hold is dropped.
 *
 * Bounded: beyond maxInFlightBytes / maxInFlightRequests being served, or maxQueuedBytes
 * waiting in the sink, reading stops (sink.pause) until completions or a drain free room.
 * Must not: answer a request twice, report a failure as success, or throw on peer input.
 */
import type { Extent } from "../storage/local/backend.ts";
import { AssertionError } from "../lib/assert.ts";
import { Errno } from "../lib/errno.ts";
import type { Sink } from "../transport/types.ts";
import type { Budget } from "../export/budget.ts";
import { Cmd, CmdFlag, DOS_PAYLOAD_LIMIT, commandName } from "../wire/nbd/constants.ts";
import { RequestDecoder, type NbdRequest } from "../wire/nbd/transmission.ts";
import { giveBuffer, takeBuffer } from "../lib/buffer-pool.ts";
import { describeExtents } from "./extents.ts";
import { BASE_ALLOCATION_ID, type Transmission } from "./handshake.ts";
import { INLINE_READ_MAX, ReplyBatch } from "./replies.ts";
import { completesInline, type BufferHold, type StoragePort } from "../storage/port.ts";
import { validateRequest, type RequestKind, type RequestLimits } from "../storage/validate.ts";

export interface NbdConnectionLimits {
  /** Bytes of READ/WRITE data being served at once before reading stops (default 64 MiB). */
  maxInFlightBytes: number;
  /** Requests being served at once (default 1024). */
  maxInFlightRequests: number;
  /** Bytes waiting in the sink's queue before reading stops (default 8 MiB). */
  maxQueuedBytes: number;
}

export const DEFAULT_LIMITS: NbdConnectionLimits = {
  maxInFlightBytes: 64 * 1024 * 1024,
  maxInFlightRequests: 1024,
  maxQueuedBytes: 8 * 1024 * 1024,
};

/** An OFFSET_DATA chunk's u32 length holds 8 + data: requests stay well below 2^32. */
const MAX_WIRE_PAYLOAD = 0xffffffff - 64;
/** Most descriptors per BLOCK_STATUS reply (proto.md: a server MAY return fewer). */
const MAX_DESCRIPTORS = 2048;

/** What the transmission phase needs from its connection. */
export interface TransmissionHost {
  /** Hard disconnect: the peer broke the protocol. */
  fail(reason: string): void;
  /** Soft disconnect done (DISC served): flush and close. */
  finished(): void;
  /** A target completed an op twice (a target bug); logged, ignored. */
  warn(message: string): void;
  /** An exception escaped while sending completions outside onData (a dstd bug). */
  crash(error: unknown): void;
  /** Run `work` after the current event (default queueMicrotask; the simulator's clock in tests). */
  defer?(work: () => void): void;
}

/**
 * The holds on a WRITE payload handed over to the target (storage/port.ts BufferHold): one
 * for the front until the completion, one per reference the target keeps (the remote engine:
 * its txn, socket queue and replay-log entry, engine/lease.ts). The pooled buffer goes back
 * to the pool when the last one is dropped, never earlier: nobody writes into it while the
 * engine's digest of it or a resend of it could still be read.
 */
class PayloadHold implements BufferHold {
  private holders = 1;

  constructor(private readonly buffer: Uint8Array) {}

  hold(): void {
    if (this.holders <= 0) throw new AssertionError("a WRITE payload held after it went back to the pool");
    this.holders++;
  }

  drop(): void {
    if (this.holders <= 0) throw new AssertionError("a WRITE payload hold dropped more often than held");
    if (--this.holders === 0) giveBuffer(this.buffer);
  }
}

/** A request being served. Pooled; its callbacks are bound once per object, not per request. */
class Op {
  cookieHi = 0;
  cookieLo = 0;
  type = 0;
  flags = 0;
  offset = 0;
  length = 0;
  /** READ: the buffer the reply is built in (batch or frame); WRITE: an owned payload, or null. */
  buffer: Uint8Array | null = null;
  /** WRITE handed over to the target (writeHandedOver): the front's own hold on its payload. */
  hold: PayloadHold | null = null;
  /** READ inside the batch: where its reply starts; -1 for a separate frame. */
  at = -1;
  accounted = 0;
  active = false;
  readonly readDone: (errno: number) => void;
  readonly statusDone: (errno: number) => void;
  readonly extentsDone: (errno: number, extents: Extent[] | null) => void;

  constructor(owner: NbdTransmission) {
    this.readDone = (errno) => owner.completeRead(this, errno);
    this.statusDone = (errno) => owner.completeStatus(this, errno);
    this.extentsDone = (errno, extents) => owner.completeExtents(this, errno, extents);
  }
}

export class NbdTransmission {
  private readonly target: StoragePort;
  private readonly limits: RequestLimits;
  private readonly decoder: RequestDecoder;
  private readonly replies: ReplyBatch;
  private readonly ops: Op[] = [];
  private inFlight = 0;
  private inFlightBytes = 0;
  private pumping = false;
  private paused = false;
  private disconnecting = false;
  private closed = false;
  private flushScheduled = false;
  private readonly lengths = new Uint32Array(MAX_DESCRIPTORS);
  private readonly statuses = new Uint32Array(MAX_DESCRIPTORS);
  /** errno of the WRITE being streamed piece by piece (the first failure wins). */
  private pieceErrno = 0;
  private readonly pieceDone = (errno: number) => {
    if (errno !== 0 && this.pieceErrno === 0) this.pieceErrno = errno;
  };
  private readonly flushTask = () => {
    this.flushScheduled = false;
    try {
      this.resume();
    } catch (error) {
      this.host.crash(error);
    }
  };

  /** Bytes charged to the shared memory budget: in flight, queued in the sink, being assembled. */
  private charged = 0;
  private waitingForRoom = false;
  private readonly roomAgain = () => {
    this.waitingForRoom = false;
    this.pump();
  };

  constructor(
    private readonly sink: Sink,
    private readonly tx: Transmission,
    private readonly bounds: NbdConnectionLimits,
    private readonly host: TransmissionHost,
    /** The export's memory budget, shared with its other connections (null: per-connection bounds only). */
    private readonly memory: Budget | null = null,
  ) {
    this.target = tx.target;
    const maxPayload = Math.min(tx.target.maxPayload, MAX_WIRE_PAYLOAD);
    const target = tx.target;
    // The size follows the target: an export resized online (a kernel device grown in band by
    // `dstd attach`, docs/kernel.md) serves its new range at once, and a shrunk one refuses the old tail.
    this.limits = {
      get size() {
        return target.size;
      },
      writable: tx.access === "rw" && !tx.target.readOnly,
      maxPayload,
    };
    this.decoder = new RequestDecoder({
      maxPayload,
      discardLimit: Math.max(DOS_PAYLOAD_LIMIT, maxPayload),
      allocate: takeBuffer,
      // A synchronous target is done with each piece before the next arrives: no reassembly.
      streamWrites: tx.target.synchronous,
    });
    this.replies = new ReplyBatch(sink, tx.structured);
  }

  get writable(): boolean {
    return this.limits.writable;
  }

  /** The port this connection serves: fixed for its life (a role change onto another port closes it: nbd/connection.ts rebound). */
  get port(): StoragePort {
    return this.target;
  }

  /**
   * The export's grant to this peer now allows writing or not (a reload took it away; a replica's
   * role change, which may be undone: a demote that failed): writes follow it (refused with EPERM,
   * as for a read-only export; the client learns per request), but never past what the handshake
   * told the client. Returns whether that changed.
   */
  setWritable(allowed: boolean): boolean {
    const writable = allowed && this.tx.access === "rw" && !this.target.readOnly;
    if (writable === this.limits.writable) return false;
    this.limits.writable = writable;
    return true;
  }

  /** The export this connection serves. */
  get exportName(): string {
    return this.tx.name;
  }


  /** Bytes of a request not yet complete (transport/guard.ts frame deadline). */
  partialBytes(): number {
    return this.closed ? 0 : this.decoder.partialBytes;
  }

  /** Bytes from the socket. After DISC the client MUST NOT send more; anything is ignored. */
  push(chunk: Uint8Array): void {
    if (this.disconnecting || this.closed) return;
    this.decoder.push(chunk);
    this.pump();
  }

  /** The sink's queue emptied: buffers it held are ours again; continue if we had stopped. */
  drained(): void {
    if (this.closed) return;
    this.replies.reclaim();
    this.pump();
  }

  /** The connection is gone: late completions are dropped (their buffers are not recycled). */
  close(): void {
    this.closed = true;
    if (this.memory === null) return;
    this.memory.cancel(this.roomAgain);
    this.memory.give(this.charged);
    this.charged = 0;
  }

  // ---- request loop ---------------------------------------------------------------------

  private blocked(): boolean {
    const b = this.bounds;
    const overBudget = this.overBudget(); // first: it also brings the charge up to date
    return overBudget || this.inFlightBytes > b.maxInFlightBytes || this.inFlight >= b.maxInFlightRequests || this.sink.queuedBytes > b.maxQueuedBytes;
  }

  /**
   * The shared budget (docs/security.md "Resource limits"): what this connection holds is
   * charged to it as it changes, and while it is spent no connection starts a new request; it
   * waits for bytes given back. A WRITE being assembled is finished first (its buffer is
   * charged already; stopping it half way would let connections wait on each other for ever).
   * A peer that leaves its replies unread is closed by the guard's reply deadline, so the
   * budget it held comes back.
   */
  private overBudget(): boolean {
    const memory = this.memory;
    if (memory === null || this.closed) return false;
    const held = this.inFlightBytes + this.sink.queuedBytes + this.decoder.assembling;
    if (held > this.charged) memory.force(held - this.charged);
    else if (held < this.charged) memory.give(this.charged - held);
    this.charged = held;
    if (this.decoder.assembling > 0 || !memory.spent(held)) return false;
    if (!this.waitingForRoom) {
      this.waitingForRoom = true;
      memory.wait(this.roomAgain);
    }
    return true;
  }

  /** Serve decoded requests until input runs out or a bound is hit; then send the batch. */
  private pump(): void {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    try {
      while (!this.disconnecting && !this.closed && !this.blocked()) {
        const request = this.decoder.next();
        if (request === null) break;
        if (typeof request === "string") {
          this.closed = true;
          return this.host.fail(request);
        }
        this.serve(request);
      }
    } finally {
      this.pumping = false;
    }
    if (this.closed) return;
    this.replies.flush();
    this.updateFlow();
    if (this.disconnecting && this.inFlight === 0) {
      this.closed = true;
      this.host.finished();
    }
  }

  private updateFlow(): void {
    const blocked = this.blocked();
    if (blocked !== this.paused) {
      this.paused = blocked;
      if (blocked) this.sink.pause();
      else this.sink.resume();
    }
  }

  private serve(r: NbdRequest): void {
    switch (r.type) {
      case Cmd.READ:
        return this.read(r);
      case Cmd.WRITE:
        return this.write(r);
      case Cmd.DISC:
        // proto.md NBD_CMD_DISC: handle all outstanding requests, then close; no reply.
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
        return this.replies.error(r.cookieHi, r.cookieLo, Errno.EINVAL, `unknown command ${r.type}`);
    }
  }

  /** Flags each command may carry (proto.md "Command flags"); FUA is accepted on all. */
  private flagError(r: NbdRequest): number {
    let allowed: number = CmdFlag.FUA;
    if (r.type === Cmd.READ && this.tx.structured) allowed |= CmdFlag.DF;
    if (r.type === Cmd.WRITE_ZEROES) allowed |= CmdFlag.NO_HOLE | (this.target.canFastZero ? CmdFlag.FAST_ZERO : 0);
    if (r.type === Cmd.BLOCK_STATUS) allowed |= CmdFlag.REQ_ONE;
    return (r.flags & ~allowed) === 0 ? 0 : Errno.EINVAL;
  }

  private refuse(r: NbdRequest, errno: number): void {
    const why = `${commandName(r.type)} flags 0x${r.flags.toString(16)} offset ${r.offset} length ${r.length} refused`;
    this.replies.error(r.cookieHi, r.cookieLo, errno, why);
  }

  private read(r: NbdRequest): void {
    const invalid = this.flagError(r) || validateRequest("read", r.offset, r.length, this.limits);
    if (invalid !== 0) return this.refuse(r, invalid);
    if (r.length === 0) return this.replies.emptyRead(r.cookieHi, r.cookieLo);
    const header = this.replies.readHeaderSize;
    const op = this.takeOp(r);
    if (r.length <= INLINE_READ_MAX && completesInline(this.target, r.length)) {
      const replies = this.replies;
      replies.reserve(header + r.length);
      op.buffer = replies.buffer;
      op.at = replies.length;
      const start = op.at + header;
      this.target.read(r.offset, replies.buffer.subarray(start, start + r.length), op.readDone);
      if (op.active) throw new AssertionError("a synchronous NBD target returned before completing a read");
      return;
    }
    const frame = takeBuffer(header + r.length);
    op.buffer = frame;
    op.at = -1;
    this.account(op, r.length);
    this.target.read(r.offset, frame.subarray(header, header + r.length), op.readDone);
  }

  /** Called by the target (through Op.readDone) when a READ finished. */
  completeRead(op: Op, errno: number): void {
    if (!this.finishOp(op)) return;
    const buffer = op.buffer!;
    op.buffer = null;
    if (errno !== 0) {
      if (op.at < 0) giveBuffer(buffer);
      this.replies.error(op.cookieHi, op.cookieLo, errno, `READ at offset ${op.offset} length ${op.length} failed`);
    } else if (op.at >= 0) {
      // Inline: the data already sits in the batch right behind the reserved header.
      this.replies.writeReadHeader(buffer, op.at, op.cookieHi, op.cookieLo, op.offset, op.length);
      this.replies.length = op.at + this.replies.readHeaderSize + op.length;
    } else {
      this.replies.writeReadHeader(buffer, 0, op.cookieHi, op.cookieLo, op.offset, op.length);
      this.replies.sendFrame(buffer);
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
      return this.refuse(r, invalid);
    }
    const op = this.takeOp(r);
    this.account(op, r.length);
    const fua = (r.flags & CmdFlag.FUA) !== 0;
    if (payload !== null && this.target.writeHandedOver !== undefined) {
      // Hand the filled pool buffer over instead of letting the target copy it (issue 10
      // item 3): the remote engine takes its end-to-end digest over it and keeps it for
      // resends and replay; it goes back to the pool when the last hold on it is dropped.
      op.hold = new PayloadHold(payload);
      return this.target.writeHandedOver(r.offset, payload, fua, op.hold, op.statusDone);
    }
    op.buffer = payload;
    this.target.write(r.offset, r.payload ?? EMPTY, fua, op.statusDone);
    // A target that copied the data (the remote engine) lets the buffer go back to the pool
    // now; its bytes stay counted in flight until the completion (the target's copy).
    if (this.target.writeDataCopied === true && op.active && op.buffer !== null) {
      giveBuffer(op.buffer);
      op.buffer = null;
    }
  }

  /**
   * One piece of a WRITE split over several socket reads (synchronous targets only). Each piece
   * is written as it arrives; FUA rides on the last one (a backend's FUA is an fdatasync, which
   * covers the earlier pieces). The first failure is answered once the payload is consumed.
   */
  private writePiece(r: NbdRequest): void {
    if (r.pieceOffset === 0) this.pieceErrno = this.writeError(r);
    if (this.pieceErrno === 0 && r.payload !== null) {
      const fua = r.final && (r.flags & CmdFlag.FUA) !== 0;
      this.target.write(r.offset + r.pieceOffset, r.payload, fua, this.pieceDone);
    }
    if (!r.final) return;
    if (this.pieceErrno === 0) this.replies.ok(r.cookieHi, r.cookieLo);
    else this.replies.error(r.cookieHi, r.cookieLo, this.pieceErrno, `WRITE at offset ${r.offset} length ${r.length} failed`);
  }

  /** FLUSH, TRIM, CACHE, WRITE_ZEROES: no payload either way, a status reply. */
  private simple(r: NbdRequest, kind: RequestKind & ("flush" | "trim" | "cache" | "zero")): void {
    const target = this.target;
    let invalid = this.flagError(r);
    if (invalid === 0) {
      // FLUSH: "length and offset are reserved, and MUST be set to all-zero" (proto.md).
      if (kind === "flush") invalid = target.canFlush && r.offset === 0 && r.length === 0 ? 0 : Errno.EINVAL;
      else if (kind === "trim" && this.limits.writable && !target.canTrim) invalid = Errno.EINVAL;
      else if (kind === "zero" && this.limits.writable && !target.canZero) invalid = Errno.EINVAL;
      else if (kind === "cache" && r.length > this.limits.maxPayload) invalid = Errno.EINVAL;
    }
    if (invalid === 0) invalid = validateRequest(kind, r.offset, r.length, this.limits);
    if (invalid !== 0) return this.refuse(r, invalid);
    // CACHE is a hint (proto.md NBD_CMD_CACHE): replying at once is allowed and honest.
    if (kind === "cache") return this.replies.ok(r.cookieHi, r.cookieLo);
    const op = this.takeOp(r);
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
    const hold = op.active ? op.hold : null;
    op.hold = null;
    // Our hold on a handed-over payload ends with the completion, even on a closed
    // connection: the target holds the buffer itself for as long as it needs it.
    hold?.drop();
    if (!this.finishOp(op)) return;
    if (op.buffer !== null) giveBuffer(op.buffer);
    op.buffer = null;
    if (errno === 0) this.replies.ok(op.cookieHi, op.cookieLo);
    else this.replies.error(op.cookieHi, op.cookieLo, errno, `${commandName(op.type)} at offset ${op.offset} length ${op.length} failed`);
    this.releaseOp(op);
  }

  private blockStatus(r: NbdRequest): void {
    let invalid = this.flagError(r);
    // Without a selected context the spec says servers "SHOULD reply with NBD_EINVAL".
    if (invalid === 0 && !this.tx.blockStatus) invalid = Errno.EINVAL;
    if (invalid === 0 && r.length === 0) invalid = Errno.EINVAL;
    if (invalid === 0) invalid = validateRequest("block-status", r.offset, r.length, this.limits);
    if (invalid !== 0) return this.refuse(r, invalid);
    const op = this.takeOp(r);
    const one = (r.flags & CmdFlag.REQ_ONE) !== 0;
    this.target.extents(r.offset, r.length, one ? 1 : MAX_DESCRIPTORS, op.extentsDone);
  }

  /** Called by the target with the allocation map for a BLOCK_STATUS request. */
  completeExtents(op: Op, errno: number, extents: Extent[] | null): void {
    if (!this.finishOp(op)) return;
    if (errno !== 0 || extents === null) {
      this.replies.error(op.cookieHi, op.cookieLo, errno || Errno.EIO, `BLOCK_STATUS at offset ${op.offset} failed`);
    } else {
      const one = (op.flags & CmdFlag.REQ_ONE) !== 0;
      const count = describeExtents(extents, op.length, one, this.lengths, this.statuses);
      this.replies.blockStatus(op.cookieHi, op.cookieLo, BASE_ALLOCATION_ID, this.lengths, this.statuses, count);
    }
    this.releaseOp(op);
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

  /** False when the op is not active (a target completing twice) or the connection is gone. */
  private finishOp(op: Op): boolean {
    if (!op.active) {
      this.host.warn(`target completed ${commandName(op.type)} twice; ignored`);
      return false;
    }
    op.active = false;
    this.inFlight--;
    this.inFlightBytes -= op.accounted;
    return !this.closed;
  }

  private releaseOp(op: Op): void {
    this.ops.push(op);
    // Completions outside pump() (an asynchronous target) leave together in one microtask.
    if (!this.pumping && !this.flushScheduled) {
      this.flushScheduled = true;
      if (this.host.defer !== undefined) this.host.defer(this.flushTask);
      else queueMicrotask(this.flushTask);
    }
  }

  /** After asynchronous completions: send their replies, and read on if we had stopped. */
  private resume(): void {
    if (this.closed) return;
    this.replies.flush();
    this.replies.reclaim();
    this.pump();
  }
}

const EMPTY = new Uint8Array(0);
