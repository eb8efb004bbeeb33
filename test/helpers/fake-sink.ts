/**
 * @module test/server/fake-sink — an in-memory Sink that behaves like transport/tcp.ts's
 * SocketSink: bytes the "kernel" has room for are taken (copied) at once, the rest is queued
 * BY REFERENCE (as SocketSink queues views), and copied out only when the test drains it. A
 * protocol handler that reuses a buffer the sink still holds therefore corrupts the output,
 * and the tests see it.
 */
import type { ConnectionHandler, Sink } from "../../src/transport/types.ts";

export class FakeSink implements Sink {
  /** Bytes the peer has "received" (copied when taken). */
  private received: Uint8Array[] = [];
  private readonly queue: Uint8Array[] = [];
  private queued = 0;
  /** How many more bytes the kernel takes before queueing (Infinity: never queue). */
  room: number;
  writes = 0;
  paused = false;
  pauseCount = 0;
  ended = false;
  destroyed = false;
  handler: ConnectionHandler | null = null;

  constructor(room = Number.POSITIVE_INFINITY) {
    this.room = room;
  }

  get queuedBytes(): number {
    return this.queued;
  }

  /** Bytes of the buffers behind the queued views (each distinct ArrayBuffer once): what the queue pins. */
  get queuedCapacity(): number {
    return [...new Set(this.queue.map((view) => view.buffer))].reduce((n, buffer) => n + buffer.byteLength, 0);
  }

  get closed(): boolean {
    return this.ended || this.destroyed;
  }

  write(bytes: Uint8Array): void {
    if (this.closed || bytes.length === 0) return;
    this.writes++;
    if (this.queued === 0) {
      const n = Math.min(this.room, bytes.length);
      this.take(bytes.subarray(0, n));
      if (n === bytes.length) return;
      bytes = bytes.subarray(n);
    }
    this.queue.push(bytes);
    this.queued += bytes.length;
  }

  end(): void {
    this.ended = true;
  }

  destroy(): void {
    this.destroyed = true;
    this.queue.length = 0;
    this.queued = 0;
  }

  pause(): void {
    this.paused = true;
    this.pauseCount++;
  }

  resume(): void {
    this.paused = false;
  }

  /**
   * The peer reads everything: room becomes `room` again, the queue is copied out (now — so
   * later mutation of a queued view shows), and the handler hears onDrain if anything was queued.
   */
  drain(room = Number.POSITIVE_INFINITY): void {
    this.room = room;
    const hadQueue = this.queued > 0;
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const n = Math.min(this.room, head.length);
      this.take(head.subarray(0, n));
      this.queued -= n;
      if (n < head.length) {
        this.queue[0] = head.subarray(n);
        return;
      }
      this.queue.shift();
    }
    if (hadQueue) this.handler?.onDrain();
  }

  /** All bytes received so far, consumed. */
  read(): Uint8Array {
    const total = this.received.reduce((n, c) => n + c.length, 0);
    const out = new Uint8Array(total);
    let at = 0;
    for (const chunk of this.received) {
      out.set(chunk, at);
      at += chunk.length;
    }
    this.received = [];
    return out;
  }

  private take(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.received.push(bytes.slice());
    this.room -= bytes.length;
  }
}
