/**
 * @module transport/queued-sink — the one Sink implementation over a Bun socket, shared by
 * TCP/Unix connections (transport/tcp.ts) and adopted fds (transport/fd.ts).
 *
 * Bun's socket.write() buffers nothing: it returns how many bytes the kernel took.
 * QueuedSink keeps the remainder, by reference, and
 * flushes it on `drain`, so protocol code writes whole frames and watches `queuedBytes` for
 * backpressure. Writers hand over their buffers: they must not change them afterwards.
 */
import type { Sink } from "./types.ts";

/** The part of a Bun socket the sink drives. */
export interface RawSocket {
  write(bytes: Uint8Array): number;
  end(): void;
  terminate(): void;
  pause(): void;
  resume(): void;
}

export class QueuedSink implements Sink {
  /** Null until the socket exists (an adopted fd is wired up after the sink is made). */
  socket: RawSocket | null;
  private readonly queue: Uint8Array[] = [];
  /** Release callbacks parallel to `queue` (undefined where the writer gave none). */
  private readonly releases: Array<(() => void) | undefined> = [];
  private queued = 0;
  /** end() or destroy() was called: accept no more writes. */
  ending = false;
  /** end() was called (a graceful close we asked for). */
  endCalled = false;

  constructor(socket: RawSocket | null = null) {
    this.socket = socket;
  }

  get queuedBytes(): number {
    return this.queued;
  }

  write(bytes: Uint8Array, release?: () => void): void {
    if (this.ending || bytes.length === 0 || this.socket === null) {
      release?.();
      return;
    }
    if (this.queued === 0) {
      const written = this.socket.write(bytes);
      if (written === bytes.length) {
        release?.();
        return;
      }
      bytes = bytes.subarray(Math.max(written, 0));
    }
    this.queue.push(bytes);
    this.releases.push(release);
    this.queued += bytes.length;
  }

  /** On `drain`: push queued bytes until the kernel stops taking them. True when empty. */
  flush(): boolean {
    while (this.queue.length > 0 && this.socket !== null) {
      const head = this.queue[0]!;
      const written = this.socket.write(head);
      if (written < head.length) {
        this.queue[0] = head.subarray(Math.max(written, 0));
        this.queued -= Math.max(written, 0);
        return false;
      }
      this.queue.shift();
      this.releases.shift()?.();
      this.queued -= head.length;
    }
    if (this.ending) this.socket?.end();
    return true;
  }

  end(): void {
    if (this.ending) return;
    this.ending = true;
    this.endCalled = true;
    if (this.queued === 0) this.socket?.end();
  }

  destroy(): void {
    this.discard();
    this.socket?.terminate();
  }

  /**
   * The socket is gone (the transport saw it close): what is queued will never be sent, so it
   * is given back now — a writer's buffer may be a crypto pool slot, which nothing else would
   * ever return — and later writes are released at once.
   */
  discard(): void {
    this.ending = true;
    this.queue.length = 0;
    for (const release of this.releases.splice(0)) release?.();
    this.queued = 0;
  }

  pause(): void {
    this.socket?.pause();
  }

  resume(): void {
    if (!this.frozen) this.socket?.resume();
  }

  /** Stop reading for good: later resume() calls (a protocol's own flow control) do nothing. */
  freeze(): void {
    this.frozen = true;
    this.socket?.pause();
  }

  /** Undo freeze(): reading goes on (a handover given up). */
  thaw(): void {
    this.frozen = false;
    this.socket?.resume();
  }

  private frozen = false;
}
