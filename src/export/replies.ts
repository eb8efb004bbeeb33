/**
 * @module export/replies — how one DST connection's replies leave: small replies batched into
 * one pooled buffer per turn (one socket write, one sealed record: for small requests,
 * batching replies matters more than anything else), large READ replies built in
 * their own pooled frame with room for the record header in front so they are sealed where
 * they lie (or copied into a slot of the crypto pool and sealed on a worker thread, reaching
 * the sink later but in order: `crypto_threads`), and the memory accounting of both.
 *
 * Accounting (export/limits.ts): a request reserves the bytes of its reply before it is
 * handled; the reservation is given back once the reply is handed to the sink, and the bytes
 * the sink still queues (a slow reader) are charged instead, until a drain frees them. So the
 * reply half of the export's budget bounds replies being produced plus replies queued, and a
 * connection over its own share stops handling requests until its reader catches up.
 *
 * Must not: change a buffer after handing it to the sink (it owns it until `release`), or
 * reuse a pooled buffer the sink may still hold.
 */
import { assert } from "../lib/assert.ts";
import { giveBuffer, takeBuffer } from "../lib/buffer-pool.ts";
import { RECORD_HEADER_SIZE, type RecordSealer } from "../crypto/record.ts";
import { HEADER_SIZE } from "../wire/dst/constants.ts";
import { encodeHeader } from "../wire/dst/header.ts";
import type { Sink } from "../transport/types.ts";
import type { Budget } from "./budget.ts";

/** Small replies produced in one turn leave in one write of at most this many bytes. */
export const BATCH_BYTES = 256 * 1024;
/** READ replies up to this size are built inside the batch; larger ones get their own frame. */
export const INLINE_READ_MAX = BATCH_BYTES / 4;
/** A batch up to this size is copied out of its pooled buffer when it must queue (flush). */
const SMALL_BATCH = BATCH_BYTES / 4;
const noop = () => {};

export class ReplyWriter {
  /** Sealer of the protected channel (null: plain frames). Set after the handshake. */
  sealer: RecordSealer | null = null;
  private batch: Uint8Array | null = null;
  /** Bytes of frames in the batch (after the RECORD_HEADER_SIZE room at its start). */
  private fill = 0;
  /** Reply bytes reserved for requests being handled (including replies sitting in the batch). */
  private reserved = 0;
  /** Part of `reserved` whose replies sit in the batch: given back when the batch is sent. */
  private batchReserved = 0;
  /** Bytes of the sink's queue charged to the budget. */
  private queued = 0;
  private closed = false;

  constructor(
    private readonly sink: Sink,
    private readonly budget: Budget,
    private readonly connectionLimit: number,
  ) {}

  /** The batch being filled (inline READ replies are completed in it). */
  get batchBuffer(): Uint8Array | null {
    return this.batch;
  }

  /** Reply bytes this connection holds (reserved + queued in the sink). */
  get held(): number {
    return this.reserved + this.queued;
  }

  /** Reserve room for a reply of `bytes`; false when this connection or the export is full. */
  reserve(bytes: number): boolean {
    if (this.closed) return true; // nothing will be produced; let the request drain
    if (this.held + bytes > this.connectionLimit && this.held > 0) return false;
    if (!this.budget.take(bytes, this.held)) return false;
    this.reserved += bytes;
    return true;
  }

  /** Give back a reservation whose reply will never be produced. */
  unreserve(bytes: number): void {
    if (this.closed) return; // close() gave everything back
    assert(bytes <= this.reserved, `unreserve ${bytes} of ${this.reserved}`);
    this.reserved -= bytes;
    this.budget.give(bytes);
  }

  /** A header-only reply (status, PONG) into the batch, with the reservation it used (0: none). */
  header(opcode: number, txid: number, status: number, offset: number, length: number, reservation = 0): void {
    if (this.closed) return;
    const at = this.room(HEADER_SIZE);
    encodeHeader(this.batch!, at, { version: 1, opcode, flags: 0, txid, offset, length, payloadLength: 0, status });
    this.fill += HEADER_SIZE;
    this.batchReserved += reservation;
  }

  /**
   * Room for a READ reply of `total` bytes (header + data + digest) inside the batch: returns
   * the batch and the offset of its header, or null when it is too large to inline. The
   * caller fills data behind the header, then calls commitInline(total).
   */
  inlineSlot(total: number): { buffer: Uint8Array; at: number } | null {
    if (total > INLINE_READ_MAX || this.closed) return null;
    const at = this.room(total);
    return { buffer: this.batch!, at };
  }

  commitInline(total: number, reservation: number): void {
    if (this.closed) return;
    this.fill += total;
    this.batchReserved += reservation;
  }

  /** A pooled frame for a large READ reply: header at RECORD_HEADER_SIZE, data after it. */
  frame(total: number): Uint8Array {
    return takeBuffer(RECORD_HEADER_SIZE + total);
  }

  /** Hand a frame from frame() to the sink (sealed in place on a protected channel). */
  sendFrame(frame: Uint8Array, reservation: number): void {
    if (this.closed) return giveBuffer(frame);
    this.flush(); // keep reply order simple: everything batched before this frame goes first
    this.unreserve(reservation);
    const release = () => giveBuffer(frame);
    if (this.sealer !== null) this.sealer.sealRecordTo(frame, release, this.write);
    else this.sink.write(frame.subarray(RECORD_HEADER_SIZE), release);
    this.chargeQueue();
  }

  /** Send a whole frame (handshake replies), sealed when the channel is protected. */
  sendWhole(frame: Uint8Array): void {
    if (this.closed) return;
    this.flush();
    if (this.sealer !== null) this.sealer.sealTo([frame], frame.length, this.write);
    else this.sink.write(frame);
    this.chargeQueue();
  }

  /**
   * Send the batch, if any (one write; one record on a protected channel). Behind a queue (a
   * slow reader) a small batch leaves as an exact-size copy and its pooled 256 KiB buffer goes
   * back at once: the budget charges what is queued, and a peer getting one small reply per
   * turn would otherwise pin a whole batch buffer per 56 bytes charged.
   */
  flush(): void {
    const pooled = this.batch;
    if (pooled === null || this.fill === 0) return;
    this.batch = null;
    if (this.closed) return giveBuffer(pooled);
    const end = RECORD_HEADER_SIZE + this.fill;
    this.fill = 0;
    this.unreserve(this.batchReserved);
    this.batchReserved = 0;
    let batch = pooled;
    let release = () => giveBuffer(pooled);
    if (this.sink.queuedBytes > 0 && end <= SMALL_BATCH) {
      batch = pooled.slice(0, end);
      giveBuffer(pooled);
      release = noop;
    }
    if (this.sealer !== null) this.sealer.sealRecordTo(batch.subarray(0, end), release, this.write);
    else this.sink.write(batch.subarray(RECORD_HEADER_SIZE, end), release);
    this.chargeQueue();
  }

  /** Sealed records reach the sink in order, now or from a crypto worker (crypto/record.ts sealTo). */
  private readonly write = (bytes: Uint8Array, release?: () => void): void => {
    this.sink.write(bytes, release);
  };

  /** Run `end` once every reply handed over reached the sink (records may still be in the crypto pool). */
  afterReplies(end: () => void): void {
    if (this.sealer !== null) this.sealer.afterRecords(end);
    else end();
  }

  /** The sink drained (some or all of its queue went out): give back what it no longer holds. */
  drained(): void {
    this.chargeQueue();
  }

  /** The connection is gone: give back everything, recycle the batch. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.batch !== null) giveBuffer(this.batch);
    this.batch = null;
    this.fill = 0;
    this.budget.give(this.queued + this.reserved);
    this.queued = 0;
    this.reserved = 0;
    this.batchReserved = 0;
  }

  /** Offset for `bytes` more in the batch, flushing a full batch first. */
  private room(bytes: number): number {
    if (this.batch !== null && RECORD_HEADER_SIZE + this.fill + bytes > this.batch.length) this.flush();
    if (this.batch === null) this.batch = takeBuffer(RECORD_HEADER_SIZE + BATCH_BYTES);
    return RECORD_HEADER_SIZE + this.fill;
  }

  /**
   * Charge the sink's queue instead of the reservations it came from. Callers give back the
   * reservations of what they handed over before calling this, so the queue grows by at most
   * what was just released; only handshake frames and unsolicited PONGs (a few hundred bytes,
   * never reserved) can overdraw, by that much.
   */
  private chargeQueue(): void {
    const now = this.closed ? 0 : this.sink.queuedBytes;
    if (now > this.queued) this.budget.force(now - this.queued);
    else if (now < this.queued) this.budget.give(this.queued - now);
    this.queued = now;
  }
}
