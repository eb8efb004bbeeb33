/**
 * @module transport/guard — admission control in front of any protocol's AcceptHandler
 * (issue 9 item 3; docs/security.md "Resource limits"). One ConnectionGuard per listener;
 * one ConnectionBudget (transport/fd-budget.ts) per process. The guard enforces:
 *
 *   - a handshake deadline: a connection whose protocol has not called `admitted()` within
 *     `handshakeTimeoutMs` of the accept is closed;
 *   - at most `maxUnauthenticated` connections in their handshake on this listener: past it,
 *     the oldest unauthenticated connection of the source holding the most is closed, so a
 *     flood delays an honest handshake by at most the flood's own turnover;
 *   - at most `maxUnauthenticatedPerSource` in their handshake per source (an IPv4 address,
 *     an IPv6 /64, or "unix"): past it the new connection is closed at once;
 *   - the process-wide connection budget: past it, the oldest handshake of the busiest source
 *     on this listener is closed to make room; when this listener has none, the new connection
 *     is accepted and closed at once (so accept never fails with EMFILE, which makes Bun spin),
 *     logged once a minute. Only admitted connections can therefore lock newcomers out;
 *   - a frame deadline: a connection holding part of a frame or record (`partialBytes() > 0`)
 *     that receives nothing for `frameTimeoutMs` while reading is not paused is closed; one
 *     that holds unfinished frames through a whole `frameTimeoutMs` window must have received
 *     MIN_READ_RATE's worth in it, and while the receive memory is contended
 *     (`receiveStarved`) all it held: a header that claims 32 MiB holds 32 MiB of the
 *     shared budget, and a trickle of a byte a minute would otherwise keep it for ever;
 *   - a reply deadline: an admitted connection whose sink queues replies that the peer has not
 *     read any of for `frameTimeoutMs` is closed. The memory its replies hold counts against
 *     the process's shared budget, so a peer that stops reading would otherwise stall every
 *     other client once a few such peers held it all.
 *
 * Everything the guard logs about a peer before admission goes through a per-source
 * LogLimiter (lib/log-limiter.ts); protocols log their own pre-admission refusals through
 * `hooks.refused()` so they share it.
 *
 * Contract for a protocol (the hooks are the third argument of its accept handler):
 *   - call `hooks.admitted()` once the peer has completed the handshake and may use the
 *     connection (NBD: entering transmission, nbd/connection.ts; DST: when WELCOME is sent
 *     to an admitted client, export/dst-server.ts). Idempotent. Until then the connection
 *     counts as unauthenticated and the handshake deadline runs;
 *   - log refusals and handshake failures with `hooks.refused(line)` (peer text escaped with
 *     lib/peer-text.ts), not with the plain log;
 *   - implement `partialBytes()` on the handler: the memory an unfinished frame or record
 *     holds (its whole size once it is gathered into one buffer; 0 between frames). Without
 *     it the frame deadline never fires;
 *   - write, pause and close through the Sink it was given (the guard's, which tracks pauses:
 *     time spent paused by the protocol's own backpressure never counts against the peer).
 * A connection the guard closes hears `onClose(reason)` once, with the guard's reason.
 *
 * Timers: one sweep per guard on an injected clock (GuardClock), so tests drive time.
 * Must not: parse protocol bytes, or let one peer's connections close another peer's,
 * except by the documented eviction of the oldest handshake of the busiest source.
 */
import { formatDuration } from "../lib/duration.ts";
import { LogLimiter } from "../lib/log-limiter.ts";
import { parseIpv6 } from "../lib/acl.ts";
import { ConnectionBudget } from "./fd-budget.ts";
import { describePeer, type AcceptHandler, type ConnectionHandler, type Peer, type Sink } from "./types.ts";

/** What a protocol tells the guard about its connection. */
export interface GuardHooks {
  /** The handshake completed and the peer may use the connection. Idempotent. */
  admitted(): void;
  /** Log a refusal or handshake failure of this peer, rate-limited per source. */
  refused(line: string): void;
}

export interface GuardedHandler extends ConnectionHandler {
  /** Memory an unfinished frame or record holds: its whole size once gathered into one buffer (0 between frames). */
  partialBytes?(): number;
}

/** An accept handler that may use the guard's hooks (plain AcceptHandlers fit too). */
export type GuardedAcceptHandler = (sink: Sink, peer: Peer, hooks: GuardHooks) => GuardedHandler;

/** The limits a guard enforces (config `[limits]`, config/limits.ts). */
export interface ConnectionLimits {
  handshakeTimeoutMs: number;
  frameTimeoutMs: number;
  /** Whole process; transport/fd-budget.ts may lower it to fit the descriptor limit. */
  maxConnections: number;
  /** Per listener. */
  maxUnauthenticated: number;
  maxUnauthenticatedPerSource: number;
}

/**
 * Bytes per second an admitted peer with replies queued must take, over each frame_timeout
 * window (or all it is behind by, if less): 480 KiB per 30 s. Far below any storage link, far
 * above a trickle that would keep a reply share for ever (docs/security.md "Resource limits").
 */
export const MIN_READ_RATE = 16 * 1024;

export interface GuardClock {
  /** Milliseconds, monotonic. */
  now(): number;
  /** Call `tick` every `ms` until the returned function is called. */
  every(ms: number, tick: () => void): () => void;
}

export const realClock: GuardClock = {
  now: () => performance.now(),
  every(ms, tick) {
    const timer = setInterval(tick, ms);
    timer.unref?.(); // the listener keeps the process alive, never the guard's sweep
    return () => clearInterval(timer);
  },
};

export interface GuardLog {
  info(message: string): void;
  warn(message: string): void;
}

export interface GuardOptions {
  /** Names the listener in log lines: "NBD", "DST". */
  protocol: string;
  limits: ConnectionLimits;
  /** Shared by every listener of the process; default: one of limits.maxConnections. */
  budget?: ConnectionBudget;
  log: GuardLog;
  clock?: GuardClock;
  /** Rate-limit window for pre-admission log lines (default 60 s). */
  logWindowMs?: number;
  /**
   * True while the reply memory these connections share turns someone away for lack of room
   * (export/budget.ts `starved`). While it does, an admitted peer must take all it is behind by
   * in each reply window, not only MIN_READ_RATE's worth (CONTENDED_SWEEPS).
   */
  replyStarved?: () => boolean;
  /** The same for the memory unfinished frames are received into: then a peer must deliver all it holds in each window. */
  receiveStarved?: () => boolean;
}

/**
 * Sweeps in a row the reply memory must be found starved before the reply deadline asks peers
 * for their whole backlog: a shortage that lasts (a second or more at the usual sweep), not a
 * burst the next drain ends. MIN_READ_RATE alone bounds what a slow reader may keep, not for
 * how long: three peers reading 16 KiB/s held the 128 MiB reply half for about 50 minutes,
 * and every other client's READ waited that long (docs/security.md "Resource limits").
 */
export const CONTENDED_SWEEPS = 2;

/** What a guard has done so far (tests, diagnostics). */
export interface GuardStats {
  open: number;
  unauthenticated: number;
  refusedAtBudget: number;
  refusedPerSource: number;
  evicted: number;
  handshakeTimeouts: number;
  frameTimeouts: number;
  replyTimeouts: number;
}

/** Per-source key: the IPv4 address, the /64 of an IPv6 address (one host's usual share), "unix". */
export function sourceKey(peer: Peer): string {
  if (peer.transport === "unix") return "unix";
  if (!peer.address.includes(":")) return peer.address;
  const bytes = parseIpv6(peer.address);
  if (bytes === null) return peer.address;
  const groups: string[] = [];
  for (let i = 0; i < 8; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return `${groups.join(":")}::/64`;
}

/** A shared memory's shortage as the sweeps see it: starved at CONTENDED_SWEEPS sweeps in a row counts. */
class Shortage {
  private sweeps = 0;
  private at = Number.NEGATIVE_INFINITY;

  constructor(private readonly starved: (() => boolean) | undefined) {}

  sweep(now: number): void {
    this.sweeps = this.starved?.() === true ? this.sweeps + 1 : 0;
    if (this.sweeps >= CONTENDED_SWEEPS) this.at = now;
  }

  /** Whether a lasting shortage was seen at a sweep since `since`. */
  lastedSince(since: number): boolean {
    return this.at >= since;
  }
}

const NOOP: ConnectionHandler = { onData() {}, onDrain() {}, onClose() {} };

export class ConnectionGuard {
  readonly accept: AcceptHandler;
  readonly budget: ConnectionBudget;
  private readonly clock: GuardClock;
  private readonly limiter: LogLimiter;
  /** Every open connection, oldest first. */
  private readonly all = new Set<Guarded>();
  /** Connections still in their handshake, oldest first, and the same grouped by source. */
  private readonly pending = new Set<Guarded>();
  private readonly pendingBySource = new Map<string, Set<Guarded>>();
  private readonly stopSweep: () => void;
  /** The shared reply and receive memory: when each last counted as contended. */
  private readonly replyShortage: Shortage;
  private readonly receiveShortage: Shortage;
  private readonly counts: Omit<GuardStats, "open" | "unauthenticated"> = {
    refusedAtBudget: 0,
    refusedPerSource: 0,
    evicted: 0,
    handshakeTimeouts: 0,
    frameTimeouts: 0,
    replyTimeouts: 0,
  };

  constructor(
    private readonly inner: GuardedAcceptHandler,
    private readonly options: GuardOptions,
  ) {
    const { limits } = options;
    this.clock = options.clock ?? realClock;
    this.replyShortage = new Shortage(options.replyStarved);
    this.receiveShortage = new Shortage(options.receiveStarved);
    this.budget = options.budget ?? new ConnectionBudget(limits.maxConnections);
    this.limiter = new LogLimiter((line) => options.log.warn(line), { windowMs: options.logWindowMs });
    // A quarter of the shortest deadline: a connection is closed at most 25 % late.
    const sweepMs = Math.min(1000, Math.max(10, Math.floor(Math.min(limits.handshakeTimeoutMs, limits.frameTimeoutMs) / 4)));
    this.stopSweep = this.clock.every(sweepMs, () => this.sweep());
    this.accept = (sink, peer) => this.onAccept(sink, peer);
  }

  get stats(): GuardStats {
    return { open: this.all.size, unauthenticated: this.pending.size, ...this.counts };
  }

  /** Stop the sweep (the listener is closing). Open connections are left to the listener. */
  close(): void {
    this.stopSweep();
  }

  /** Log a line about a peer before admission, rate-limited per source and kind. */
  refused(source: string, line: string, kind = "refused"): void {
    this.limiter.note(source, line, this.clock.now(), kind);
  }

  private onAccept(sink: Sink, peer: Peer): ConnectionHandler {
    const { limits, protocol } = this.options;
    const source = sourceKey(peer);
    const held = this.pendingBySource.get(source)?.size ?? 0;
    if (held >= limits.maxUnauthenticatedPerSource) {
      this.counts.refusedPerSource++;
      this.refused(
        source,
        `${protocol} ${describePeer(peer)}: refused: ${held} connections from ${source} are already in their ` +
          `handshake (max_unauthenticated_per_source)`,
        "per-source",
      );
      sink.destroy();
      return NOOP;
    }
    if (!this.budget.take() && !(this.evictOne("the connection budget is spent") && this.budget.take())) {
      this.counts.refusedAtBudget++;
      this.refused(
        "all sources",
        `${protocol}: ${this.budget.max} connections open, the most this process keeps (max_connections, ` +
          `or what the file-descriptor limit allows); closing new connections such as ${describePeer(peer)} until some end`,
        "budget",
      );
      sink.destroy();
      return NOOP;
    }
    if (this.pending.size >= limits.maxUnauthenticated) {
      this.evictOne(`${this.pending.size} connections are in their handshake on this listener (max_unauthenticated)`);
    }
    const guarded = new Guarded(this, sink, peer, source, this.clock.now());
    this.all.add(guarded);
    this.pending.add(guarded);
    const group = this.pendingBySource.get(source);
    if (group !== undefined) group.add(guarded);
    else this.pendingBySource.set(source, new Set([guarded]));
    try {
      guarded.inner = this.inner(guarded, peer, guarded);
    } catch (error) {
      guarded.expire("internal error while accepting", null);
      throw error;
    }
    return guarded;
  }

  /** Close the oldest handshake of the source holding the most handshakes; false if none. */
  private evictOne(why: string): boolean {
    let busiest: Set<Guarded> | null = null;
    for (const group of this.pendingBySource.values()) if (busiest === null || group.size > busiest.size) busiest = group;
    const victim = busiest?.values().next().value;
    if (victim === undefined) return false;
    this.counts.evicted++;
    victim.expire(`${why}: making room by closing the oldest handshake of the busiest source`, "evicted");
    return true;
  }

  /** @internal Guarded → guard: the handshake completed. */
  promote(guarded: Guarded): void {
    this.pending.delete(guarded);
    this.leaveSource(guarded);
  }

  /** @internal Guarded → guard: the connection is gone. */
  release(guarded: Guarded): void {
    this.budget.give();
    this.all.delete(guarded);
    if (this.pending.delete(guarded)) this.leaveSource(guarded);
  }

  private leaveSource(guarded: Guarded): void {
    const group = this.pendingBySource.get(guarded.source);
    if (group === undefined) return;
    group.delete(guarded);
    if (group.size === 0) this.pendingBySource.delete(guarded.source);
  }

  /** @internal for tests: run one sweep now. */
  sweep(): void {
    const now = this.clock.now();
    const { handshakeTimeoutMs, frameTimeoutMs } = this.options.limits;
    this.replyShortage.sweep(now);
    this.receiveShortage.sweep(now);
    for (const guarded of this.all) {
      if (!guarded.isAdmitted) {
        if (now - guarded.acceptedAt >= handshakeTimeoutMs) {
          this.counts.handshakeTimeouts++;
          guarded.expire(`handshake not completed within ${formatDuration(handshakeTimeoutMs)}`, "handshake-timeout");
        }
        continue;
      }
      // Reply deadline: in each frame_timeout window with replies queued, the peer must take
      // all it was behind by, or MIN_READ_RATE's worth: a shrink alone is not enough, or a few
      // peers reading 4 KiB every 25 s would hold the whole reply budget for ever. While the
      // shared reply memory turns others away (CONTENDED_SWEEPS), only all of it will do: a
      // slow reader gives its share back within a window instead of keeping it for ever.
      const queued = guarded.queuedBytes;
      guarded.readInWindow += Math.max(0, guarded.lastQueued + guarded.takeWritten() - queued);
      guarded.lastQueued = queued;
      if (queued === 0) guarded.restartWindow(now, 0);
      else guarded.peakQueued = Math.max(guarded.peakQueued, queued);
      if (queued > 0 && now - guarded.outputAt >= frameTimeoutMs) {
        const contended = this.replyShortage.lastedSince(guarded.outputAt);
        const needed = contended ? guarded.peakQueued : Math.min(guarded.peakQueued, Math.ceil((MIN_READ_RATE * frameTimeoutMs) / 1000));
        if (guarded.readInWindow < needed) {
          this.counts.replyTimeouts++;
          const read = guarded.readInWindow === 0 ? "replies not read" : `replies read too slowly (${guarded.readInWindow} bytes)`;
          const why = contended ? `; other clients wait for the reply memory it holds, so it must take all ${guarded.peakQueued} bytes it was behind by` : "";
          guarded.expire(`${read} for ${formatDuration(frameTimeoutMs)} (${queued} bytes queued${why})`, null);
          continue;
        }
        guarded.restartWindow(now, queued);
      }
      const partial = guarded.isPaused ? 0 : guarded.partialBytes();
      if (partial === 0) {
        guarded.restartInput(now, 0); // between frames, or paused: the peer cannot be behind
        continue;
      }
      if (now - guarded.lastInput >= frameTimeoutMs) {
        this.counts.frameTimeouts++;
        guarded.expire(`no progress for ${formatDuration(frameTimeoutMs)} on an unfinished frame (${partial} bytes held)`, null);
        continue;
      }
      // Unfinished frames through a whole window: at least MIN_READ_RATE's worth must have
      // arrived in it (a trickle is progress to the rule above), and while the receive memory
      // turns others away, all the peer held in it: a frame that arrives whole within a window.
      guarded.peakHeld = Math.max(guarded.peakHeld, partial);
      if (now - guarded.inputAt >= frameTimeoutMs) {
        const contended = this.receiveShortage.lastedSince(guarded.inputAt);
        const needed = contended ? guarded.peakHeld : Math.ceil((MIN_READ_RATE * frameTimeoutMs) / 1000);
        if (guarded.inputInWindow < needed) {
          this.counts.frameTimeouts++;
          const why = contended ? `; other clients wait for the receive memory it holds, so all ${guarded.peakHeld} bytes must arrive` : "";
          guarded.expire(`frames arriving too slowly (${guarded.inputInWindow} bytes in ${formatDuration(frameTimeoutMs)}, ${partial} bytes held${why})`, null);
          continue;
        }
        guarded.restartInput(now, partial);
      }
    }
    this.limiter.flush(now);
  }

  /** @internal */
  get now(): number {
    return this.clock.now();
  }

  /** @internal `kind`: rate-limit the line per source under this kind; null: log it plainly. */
  logClose(guarded: Guarded, reason: string, kind: string | null): void {
    const line = `${this.options.protocol} ${describePeer(guarded.peer)}: ${reason}; closing`;
    if (kind !== null) this.refused(guarded.source, line, kind);
    else this.options.log.warn(line);
  }
}

/** One guarded connection: the protocol's Sink, its hooks, and the transport's handler. */
class Guarded implements ConnectionHandler, Sink, GuardHooks {
  inner: GuardedHandler | null = null;
  isAdmitted = false;
  isPaused = false;
  lastInput: number;
  /** Start of the reply-deadline window (the queue was last empty, or the last window passed). */
  outputAt: number;
  /** Queue at the last sweep; bytes the peer took in this window; the largest queue seen in it. */
  lastQueued = 0;
  readInWindow = 0;
  peakQueued = 0;
  /** Start of the input window (the last sweep between frames, or the last window passed); bytes received in it; the most held in it. */
  inputAt: number;
  inputInWindow = 0;
  peakHeld = 0;
  /** Bytes the protocol wrote since the last sweep (to tell what the peer took from what was added). */
  private written = 0;
  private done = false;
  private closeReason: string | null = null;

  constructor(
    private readonly guard: ConnectionGuard,
    private readonly sink: Sink,
    readonly peer: Peer,
    readonly source: string,
    readonly acceptedAt: number,
  ) {
    this.lastInput = acceptedAt;
    this.outputAt = acceptedAt;
    this.inputAt = acceptedAt;
  }

  // ---- GuardHooks ------------------------------------------------------------------------

  admitted(): void {
    if (this.isAdmitted || this.done) return;
    this.isAdmitted = true;
    this.lastInput = this.guard.now;
    this.guard.promote(this);
  }

  refused(line: string): void {
    this.guard.refused(this.source, line);
  }

  // ---- Sink (what the protocol writes to) -------------------------------------------------

  get queuedBytes(): number {
    return this.sink.queuedBytes;
  }

  write(bytes: Uint8Array, release?: () => void): void {
    this.written += bytes.length;
    this.sink.write(bytes, release);
  }

  takeWritten(): number {
    const written = this.written;
    this.written = 0;
    return written;
  }

  restartInput(now: number, held: number): void {
    this.inputAt = now;
    this.inputInWindow = 0;
    this.peakHeld = held;
  }

  restartWindow(now: number, queued: number): void {
    this.outputAt = now;
    this.readInWindow = 0;
    this.peakQueued = queued;
  }

  end(): void {
    this.sink.end();
  }

  destroy(): void {
    this.sink.destroy();
  }

  pause(): void {
    this.isPaused = true;
    this.sink.pause();
  }

  resume(): void {
    if (this.isPaused) this.lastInput = this.guard.now; // time paused is not the peer's stall
    this.isPaused = false;
    this.sink.resume();
  }

  // ---- ConnectionHandler (what the transport calls) -------------------------------------------

  onData(chunk: Uint8Array): void {
    this.lastInput = this.guard.now;
    this.inputInWindow += chunk.length;
    this.inner?.onData(chunk);
  }

  onDrain(): void {
    this.restartWindow(this.guard.now, 0); // the queue is empty: the peer took it all
    this.inner?.onDrain();
  }

  onClose(reason: string | null): void {
    if (this.done) return;
    this.done = true;
    this.guard.release(this);
    this.inner?.onClose(this.closeReason ?? reason);
  }

  // ---- guard side -----------------------------------------------------------------------------

  partialBytes(): number {
    try {
      return this.inner?.partialBytes?.() ?? 0;
    } catch {
      return 0;
    }
  }

  /** The guard closes this connection: log, drop the socket, tell the protocol once. */
  expire(reason: string, kind: string | null): void {
    if (this.done) return;
    this.guard.logClose(this, reason, kind);
    this.closeReason = reason;
    this.sink.destroy();
    this.onClose(reason); // no-op when the transport already reported the close
  }
}
