/**
 * @module test/sim/sim-connection — one simulated TCP connection: two directions, each a FIFO
 * of units with latency, segmentation, throughput, holds and loss, and the Sink the export
 * writes to. The fault model and its reasons are in sim-network.ts; this file only carries
 * bytes in order, and tells each side about a close exactly once, always from a scheduled
 * event (never inside the call that caused it).
 */
import type { ConnectionHandler, Sink } from "../../src/transport/types.ts";
import type { SimNetwork } from "./sim-network.ts";

interface Unit {
  bytes: Uint8Array;
  readyAt: number;
}

/** Largest piece a slow link delivers at once (a TCP receive window's worth). */
const SEGMENT_BYTES = 16 * 1024;

export class Direction {
  private queue: Unit[] = [];
  private head = 0;
  private lastReadyAt = 0;
  private busyUntil = 0;
  /** Nothing is delivered before this time; Infinity = held until release(). */
  heldUntil = 0;
  vanished = false;
  paused = false;
  /** Deliver the close (with this reason) once the queue has drained. */
  private closing: string | null = null;
  private closed = false;
  private wakeAt = -1;

  constructor(
    private readonly net: SimNetwork,
    private readonly deliver: (chunk: Uint8Array) => void,
    private readonly onClose: (reason: string) => void,
  ) {}

  get queued(): number {
    return this.queue.length - this.head;
  }

  send(bytes: Uint8Array): void {
    if (this.closed || this.closing !== null || this.vanished) return;
    const now = this.net.clock.now;
    const latency = this.net.latency();
    const bandwidth = this.net.bandwidth();
    if (bandwidth === Number.POSITIVE_INFINITY) {
      const readyAt = Math.max(this.lastReadyAt, now + latency);
      this.lastReadyAt = readyAt;
      for (const piece of this.net.split(bytes)) this.queue.push({ bytes: piece, readyAt });
    } else {
      // Serialise on the link, then deliver segment by segment as they get through.
      let start = Math.max(now, this.busyUntil);
      for (let at = 0; at < bytes.length; at += SEGMENT_BYTES) {
        const piece = bytes.subarray(at, Math.min(bytes.length, at + SEGMENT_BYTES));
        start += piece.length / bandwidth;
        const readyAt = Math.max(this.lastReadyAt, Math.ceil(start) + latency);
        this.lastReadyAt = readyAt;
        this.queue.push({ bytes: piece, readyAt });
      }
      this.busyUntil = start;
    }
    this.wake();
  }

  /** Stop after what is queued (a FIN), then tell the receiver. */
  closeAfterDrain(reason: string): void {
    if (this.closed || this.closing !== null) return;
    this.closing = reason;
    this.wake();
  }

  /** Lose everything in flight; no close is delivered from here (the caller tells the side). */
  discard(): void {
    this.queue = [];
    this.head = 0;
    this.closed = true;
  }

  /** Nothing sent later may arrive before `ms` (the SYN that opened the connection). */
  notBefore(ms: number): void {
    this.lastReadyAt = Math.max(this.lastReadyAt, ms);
  }

  hold(untilMs: number): void {
    this.heldUntil = Math.max(this.heldUntil, untilMs);
    this.wake();
  }

  vanish(): void {
    this.vanished = true;
    this.queue = [];
    this.head = 0;
  }

  /**
   * The link is fast again (convergence): what a slow link had queued arrives within one
   * healthy trip instead of at its throttled times, as a real link drains its queue once the
   * bandwidth is back. Order is kept (times are clamped, so they stay non-decreasing).
   */
  unthrottle(): void {
    const cap = this.net.clock.now + this.net.latencyMaxMs;
    for (let i = this.head; i < this.queue.length; i++) {
      const unit = this.queue[i]!;
      unit.readyAt = Math.min(unit.readyAt, cap);
    }
    this.lastReadyAt = Math.min(this.lastReadyAt, cap);
    this.busyUntil = Math.min(this.busyUntil, this.net.clock.now);
    this.wake();
  }

  release(): void {
    if (this.heldUntil > this.net.clock.now) this.heldUntil = this.net.clock.now;
    this.wake();
  }

  resume(): void {
    this.paused = false;
    this.wake();
  }

  wake(): void {
    if (this.closed || this.paused) return;
    let at: number;
    if (this.queued > 0) at = Math.max(this.queue[this.head]!.readyAt, this.heldUntil);
    else if (this.closing !== null) at = Math.max(this.lastReadyAt, this.heldUntil);
    else return;
    if (at === Number.POSITIVE_INFINITY || this.vanished) return;
    if (this.wakeAt !== -1 && this.wakeAt <= at) return;
    this.wakeAt = at;
    this.net.clock.after(Math.max(0, at - this.net.clock.now), () => this.pump(at));
  }

  private pump(scheduledFor: number): void {
    if (this.wakeAt !== scheduledFor) return; // superseded by an earlier wake
    this.wakeAt = -1;
    const now = this.net.clock.now;
    while (!this.closed && !this.paused && !this.vanished && now >= this.heldUntil && this.queued > 0) {
      const unit = this.queue[this.head]!;
      if (unit.readyAt > now) break;
      this.queue[this.head++] = undefined as unknown as Unit;
      if (this.head > 256 && this.head * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      this.deliver(unit.bytes);
    }
    if (!this.closed && this.queued === 0 && this.closing !== null && now >= this.heldUntil && !this.vanished) {
      this.closed = true;
      this.onClose(this.closing);
      return;
    }
    this.wake();
  }
}

export class SimConnection {
  phase: "connecting" | "open" | "closed" = "connecting";
  clientOpen = true;
  serverOpen = false;
  handler: ConnectionHandler | null = null;
  /** Some fault touched this connection (keepalive failures must be explained by one). */
  faulted = false;
  /** Export instance (restart generation) this connection reached. */
  generation = -1;
  readonly toServer: Direction;
  readonly toClient: Direction;

  constructor(
    readonly id: number,
    private readonly net: SimNetwork,
  ) {
    this.toServer = new Direction(
      net,
      (chunk) => {
        if (!this.serverOpen) return;
        if (!this.clientOpen) net.counters.lateDeliveries++;
        net.delivering = this.id;
        try {
          this.handler!.onData(chunk);
        } finally {
          net.delivering = null;
        }
      },
      (reason) => this.serverClosed(reason),
    );
    this.toClient = new Direction(
      net,
      (chunk) => {
        if (this.clientOpen) net.client.receive(id, chunk);
      },
      (reason) => this.clientClosed(reason),
    );
  }

  /** The export side learns the connection is gone (once). */
  serverClosed(reason: string | null): void {
    if (!this.serverOpen) return;
    this.serverOpen = false;
    this.toServer.discard();
    this.handler!.onClose(reason);
    this.settle();
  }

  /** The client side learns the connection is gone (once). */
  clientClosed(reason: string | null): void {
    if (!this.clientOpen) return;
    this.clientOpen = false;
    this.toClient.discard();
    this.net.client.disconnected(this.id, reason);
    this.settle();
  }

  settle(): void {
    if (!this.clientOpen && !this.serverOpen) this.phase = "closed";
  }

  /** The Sink the export writes replies to. */
  readonly sink: Sink = {
    write: (bytes) => {
      if (this.serverOpen) this.toClient.send(bytes);
    },
    queuedBytes: 0,
    end: () => this.serverShutdown("closed by the export"),
    destroy: () => {
      // Destroyed while the export reads another connection's bytes: a session takeover fenced it.
      const taker = this.net.delivering;
      if (taker !== null && taker !== this.id && this.serverOpen) this.net.onFence?.(taker, this.id);
      this.serverShutdown("connection reset by the export");
    },
    pause: () => {
      this.toServer.paused = true;
    },
    resume: () => this.toServer.resume(),
  };

  private serverShutdown(reason: string): void {
    if (!this.serverOpen) return;
    this.toServer.discard();
    this.toClient.closeAfterDrain(reason);
    // The transport reports onClose after the close completes, never inside the call.
    this.net.clock.after(0, () => this.serverClosed(null));
  }
}
