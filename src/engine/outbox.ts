/**
 * @module engine/outbox — how the client engine's frames leave for the current connection.
 *
 * Frames produced by one event (a burst of submits, a tick's resends) leave together:
 * - on a protected channel, as ONE sealed record per burst (crypto/record.ts: one cipher setup
 *   per batch, not per frame), built from the frames' parts without assembling them: sealed
 *   straight into one pooled record buffer (RecordSealer.sealPooled, native AES-GCM), else as
 *   the cipher's own pieces (RecordSealer.sealParts), or copied into a slot of the crypto
 *   pool and sealed on a worker thread, reaching `send` later but in order (RecordSealer.sealTo,
 *   `crypto_threads`); bounded to RECORD_TARGET bytes;
 * - on a plain channel, small frames are copied into one pooled batch buffer (one socket
 *   write for many requests: for small requests, batching matters more than anything else);
 *   a large payload goes as its own writes — header, payload, digest — so a
 *   1 MiB WRITE is never concatenated.
 * Buffers handed to `send` belong to the sink until it releases them; payload buffers are the
 * txn's own and are never changed, so resending them is safe. A payload under a lease
 * (engine/lease.ts) is held while its parts wait to be sealed and while the sink queues it.
 */
import { giveBuffer, takeBuffer } from "../lib/buffer-pool.ts";
import type { RecordSealer } from "../crypto/record.ts";
import type { Lease } from "./lease.ts";

/** Seal what is collected once it reaches this size, even mid-event (bounded records). */
export const RECORD_TARGET = 256 * 1024;
/** Plain frames up to this size are batched; larger payloads are written where they lie. */
const INLINE_MAX = 64 * 1024;
const BATCH_BYTES = 256 * 1024;

export type Send = (bytes: Uint8Array, release?: () => void) => void;

export class Outbox {
  /** Set once the channel is protected; null while plain. */
  sealer: RecordSealer | null = null;
  private parts: Uint8Array[] = [];
  private partBytes = 0;
  /** Leases of payloads among `parts` (dropped once sealed or discarded). */
  private leases: Lease[] = [];
  private batch: Uint8Array | null = null;
  private fill = 0;

  constructor(private send: Send) {}

  /** Anything waiting to leave? */
  get pending(): boolean {
    return this.partBytes > 0 || this.fill > 0;
  }

  /** Route to another connection's sink (after a reconnect); drops what was collected. */
  reset(send: Send, sealer: RecordSealer | null): void {
    this.discard();
    this.send = send;
    this.sealer = sealer;
  }

  /** Queue one frame given as its pieces (header, then optional payload and digest). */
  add(header: Uint8Array, payload: Uint8Array | null = null, digest: Uint8Array | null = null, lease: Lease | null = null): void {
    const size = header.length + (payload?.length ?? 0) + (digest?.length ?? 0);
    if (this.sealer !== null) {
      this.parts.push(header);
      if (payload !== null && payload.length > 0) {
        this.parts.push(payload);
        if (lease !== null) {
          lease.hold();
          this.leases.push(lease);
        }
      }
      if (digest !== null) this.parts.push(digest);
      this.partBytes += size;
      if (this.partBytes >= RECORD_TARGET) this.flush();
      return;
    }
    if (size <= INLINE_MAX) {
      if (this.batch !== null && this.fill + size > this.batch.length) this.flush();
      if (this.batch === null) this.batch = takeBuffer(BATCH_BYTES);
      const batch = this.batch;
      batch.set(header, this.fill);
      this.fill += header.length;
      if (payload !== null) {
        batch.set(payload, this.fill);
        this.fill += payload.length;
      }
      if (digest !== null) {
        batch.set(digest, this.fill);
        this.fill += digest.length;
      }
      return;
    }
    this.flush();
    this.send(header);
    if (payload !== null) this.send(payload, lease?.holdFor());
    if (digest !== null) this.send(digest);
  }

  /** Send everything collected (the end of an event). */
  flush(): void {
    if (this.sealer !== null) {
      if (this.partBytes === 0) return;
      try {
        // In order, now or later: a crypto worker may seal it (crypto/record.ts sealTo); the
        // parts are copied or sealed before sealTo returns, so the payloads are free after it.
        this.sealer.sealTo(this.parts, this.partBytes, this.send);
      } finally {
        this.parts = [];
        this.partBytes = 0;
        this.dropLeases();
      }
      return;
    }
    const batch = this.batch;
    if (batch === null || this.fill === 0) return;
    const bytes = batch.subarray(0, this.fill);
    this.batch = null;
    this.fill = 0;
    this.send(bytes, () => giveBuffer(batch));
  }

  /** Forget what was collected (the connection is gone; txns keep their frames for resends). */
  discard(): void {
    this.parts = [];
    this.partBytes = 0;
    this.dropLeases();
    if (this.batch !== null) giveBuffer(this.batch);
    this.batch = null;
    this.fill = 0;
  }

  private dropLeases(): void {
    if (this.leases.length === 0) return;
    const leases = this.leases;
    this.leases = [];
    for (const lease of leases) lease.drop();
  }
}
