/**
 * @module test/fault/proxy — a fault-injecting TCP proxy for the real-process fault tests
 * (issue 3 item 7): forwards 127.0.0.1:A → HOST:B and, on command from the test, resets
 * connections, blackholes the link, delays, throttles or refuses. Test tooling only: it must
 * never be imported by src/.
 *
 * Semantics, chosen to look like a real network fault to both ends:
 * - cut(): every current connection is reset on both sides at once (terminate → RST); queued
 *   bytes are discarded. New connections work as before.
 * - blackhole(ms): nothing moves in either direction for `ms`, and connections stay OPEN, so
 *   only an application keepalive can notice. Bytes are HELD, not dropped: a blackhole in
 *   a real network drops packets and TCP retransmits them once the path heals, so the
 *   application sees a stalled but intact byte stream. Dropping bytes while the connection
 *   stays open would punch a hole in a TCP stream, which no real network can do. New
 *   connections are accepted (the kernel completes the TCP handshake) but are not connected
 *   upstream and their bytes are held until the blackhole ends. A side that closes during
 *   the blackhole has its close held too (the peer would not hear the RST through the dead
 *   path): when the blackhole ends such a connection is reset on both sides and its held
 *   bytes are discarded (the closed side's kernel would have thrown its unacknowledged
 *   bytes away).
 * - delay(ms): every chunk read from now on is forwarded `ms` later, order preserved.
 * - throttle(bytesPerSecond): each direction of each connection is a link of that rate: a
 *   chunk leaves the link once the chunks before it and itself have been serialized at that
 *   rate (a per-direction link clock), then takes the delay; a read is put on the link in
 *   pieces of 1/50 s worth (at least 16 KiB), so bytes arrive steadily; 0 turns pacing off.
 *   After a throttle change or a blackhole the queued chunks are paced again from then on.
 * - loss(probability, retransmitMs): each TCP segment (1,448 bytes, an Ethernet MSS) read from
 *   now on is lost with `probability`; a chunk holding a lost segment is delivered
 *   `retransmitMs` late (what the application sees of a loss under TCP with SACK: the bytes
 *   behind the hole wait one retransmission, fast retransmit takes about one round trip), and
 *   order is kept, so later chunks wait behind it. The link keeps carrying the bytes behind
 *   the hole meanwhile (SACK: the receiver buffers them), so a loss delays delivery but does
 *   not idle the link: the chunks behind it arrive with it, not a serialization time later.
 *   The sender's congestion window is not modelled (a loss-based TCP would also slow down; a
 *   BBR sender, and this proxy, do not).
 *   Seeded: the same seed makes the same sequence of per-chunk draws (which bytes they hit
 *   depends on how the kernel splits the stream into reads).
 * - refuse(on): while on, new connections are accepted and reset at once (the client sees
 *   its connection die before any byte arrives, like a listener that refuses).
 * Backpressure: a direction with more than `highWaterBytes` queued pauses reading from its
 * source socket until it drains below half of that, so a held or throttled link never
 * buffers without bound.
 */
import type { Socket, TCPSocketListener } from "bun";
import { Prng } from "../../src/lib/prng.ts";

/** The TCP payload of one Ethernet frame: the unit loss() loses. */
const SEGMENT_BYTES = 1448;

export interface ProxyStats {
  /** Connections accepted and forwarded (refused ones not counted). */
  accepted: number;
  /** Connections reset at once because refuse(true) was on. */
  refused: number;
  /** Connections reset by cut(). */
  cut: number;
  /** Connections reset when a blackhole ended because a side closed during it. */
  brokenByBlackhole: number;
  /** Connections open right now. */
  active: number;
  /** Bytes delivered client → server and server → client. */
  bytesUp: number;
  bytesDown: number;
  /** Chunks (pieces of 1/50 s on a throttled link) delivered late because loss() lost a segment in them. */
  lost: number;
}

export interface FaultProxyOptions {
  /** Where to forward to. */
  upstream: { host: string; port: number };
  /** Port to listen on (127.0.0.1); 0 (default) picks a free one. */
  port?: number;
  /** Queue bound per direction before the source is paused (default 8 MiB). */
  highWaterBytes?: number;
}

type Role = "client" | "server";
type Direction = "up" | "down";

interface Tag {
  pair: Pair;
  role: Role;
}

/** A direction's link clock: when it has serialized what is queued, and the last chunk's delivery time. */
export interface LinkClock {
  linkFree: number;
  lastReadyAt: number;
}

/**
 * When a chunk of `bytes` queued at `now` (ms) may be delivered: it leaves the link once what
 * is queued before it and itself are serialized at `bytesPerSecond` (0: at once), then takes
 * `delayMs`, plus `late` if a segment of it was lost; never before the chunk queued before it.
 * A lost chunk holds the ones behind it, but they keep crossing the link meanwhile.
 */
export function scheduleOnLink(link: LinkClock, bytes: number, late: number, now: number, bytesPerSecond: number, delayMs: number): number {
  let leaves = now;
  if (bytesPerSecond > 0) {
    leaves = Math.max(link.linkFree, now) + (bytes * 1000) / bytesPerSecond;
    link.linkFree = leaves;
  }
  link.lastReadyAt = Math.max(leaves + delayMs + late, link.lastReadyAt);
  return link.lastReadyAt;
}

interface Chunk {
  bytes: Uint8Array;
  /** Extra delay from a lost segment (0: none). */
  late: number;
  /** When it may be delivered: serialized on the link, delayed, lost or not, in order. */
  readyAt: number;
}

/** One direction of one connection: bytes read from the source, waiting for the destination. */
class Flow implements LinkClock {
  readonly chunks: Chunk[] = [];
  queued = 0;
  /** The source closed: once the queue is flushed, close the destination this way. */
  ended: "end" | "reset" | null = null;
  waitingDrain = false;
  paused = false;
  timer: ReturnType<typeof setTimeout> | null = null;
  /** When the link has serialized everything queued so far (throttle). */
  linkFree = 0;
  /** readyAt of the last chunk queued (order is kept). */
  lastReadyAt = 0;
  constructor(readonly direction: Direction) {}
}

class Pair {
  server: Socket<Tag> | null = null;
  connecting = false;
  closed = false;
  /** A side went away during a blackhole: reset everything when it ends. */
  brokenInBlackhole = false;
  readonly up = new Flow("up");
  readonly down = new Flow("down");
  constructor(readonly client: Socket<Tag>) {}
}

export class FaultProxy {
  readonly stats: ProxyStats = { accepted: 0, refused: 0, cut: 0, brokenByBlackhole: 0, active: 0, bytesUp: 0, bytesDown: 0, lost: 0 };
  private readonly pairs = new Set<Pair>();
  private readonly waiters: Array<{ direction: Direction; bytes: number; resolve: () => void }> = [];
  private delayMs = 0;
  private bytesPerSecond = 0;
  private lossProbability = 0;
  private retransmitMs = 0;
  private lossPrng = new Prng(1);
  private refusing = false;
  private blackholeUntil = 0;
  private blackholeTimer: ReturnType<typeof setTimeout> | null = null;
  private blackholeDone: Array<() => void> = [];
  private listener: TCPSocketListener<Tag> | null = null;
  private readonly highWater: number;

  private constructor(private readonly options: FaultProxyOptions) {
    this.highWater = options.highWaterBytes ?? 8 * 1024 * 1024;
  }

  static start(options: FaultProxyOptions): FaultProxy {
    const proxy = new FaultProxy(options);
    proxy.listener = Bun.listen<Tag>({
      hostname: "127.0.0.1",
      port: options.port ?? 0,
      socket: proxy.handlers(),
    });
    return proxy;
  }

  /** The port clients should connect to. */
  get port(): number {
    return this.listener!.port;
  }

  get blackholed(): boolean {
    return performance.now() < this.blackholeUntil;
  }

  // ---- faults -----------------------------------------------------------------------------

  /** Reset every current connection on both sides; returns how many were reset. */
  cut(): number {
    let count = 0;
    for (const pair of [...this.pairs]) {
      this.reset(pair);
      count++;
    }
    this.stats.cut += count;
    return count;
  }

  /** Hold all traffic (and new connections) for `ms`; resolves when the blackhole ends. */
  blackhole(ms: number): Promise<void> {
    this.blackholeUntil = Math.max(this.blackholeUntil, performance.now() + ms);
    const done = new Promise<void>((resolve) => this.blackholeDone.push(resolve));
    this.scheduleBlackholeEnd();
    return done;
  }

  /** Forward every chunk read from now on `ms` later (0: no delay). */
  delay(ms: number): void {
    this.delayMs = Math.max(0, ms);
  }

  /** Pace each direction of each connection to `bytesPerSecond` (0: unlimited). */
  throttle(bytesPerSecond: number): void {
    this.bytesPerSecond = Math.max(0, bytesPerSecond);
    for (const pair of this.pairs) {
      for (const flow of [pair.up, pair.down]) {
        this.reschedule(flow);
        this.pump(pair, flow);
      }
    }
  }

  /** Lose each segment with `probability` (0: none); a chunk with a lost segment arrives `retransmitMs` late. */
  loss(probability: number, retransmitMs: number, seed = 1): void {
    if (!(probability >= 0 && probability <= 1)) throw new Error(`loss probability ${probability} is not within 0..1`);
    this.lossProbability = probability;
    this.retransmitMs = Math.max(0, retransmitMs);
    this.lossPrng = new Prng(seed);
  }

  /** While on, new connections are reset as soon as they are accepted. */
  refuse(on: boolean): void {
    this.refusing = on;
  }

  /** Resolves once `bytes` in total have been delivered in `direction` ("up": client → server). */
  whenDelivered(direction: Direction, bytes: number): Promise<void> {
    if (this.delivered(direction) >= bytes) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ direction, bytes, resolve }));
  }

  /** Stop listening and reset every connection. */
  close(): void {
    this.listener?.stop(true);
    this.listener = null;
    for (const pair of [...this.pairs]) this.reset(pair);
    if (this.blackholeTimer) clearTimeout(this.blackholeTimer);
    this.blackholeUntil = 0;
    for (const resolve of this.blackholeDone.splice(0)) resolve();
  }

  // ---- internals --------------------------------------------------------------------------

  private delivered(direction: Direction): number {
    return direction === "up" ? this.stats.bytesUp : this.stats.bytesDown;
  }

  private handlers() {
    const flowInto = (tag: Tag) => (tag.role === "server" ? tag.pair.up : tag.pair.down);
    const flowFrom = (tag: Tag) => (tag.role === "client" ? tag.pair.up : tag.pair.down);
    return {
      binaryType: "uint8array" as const,
      open: (socket: Socket<Tag>) => this.accept(socket),
      data: (socket: Socket<Tag>, chunk: Uint8Array) => {
        const tag = socket.data;
        if (tag && !tag.pair.closed) this.enqueue(tag.pair, flowFrom(tag), socket, chunk);
      },
      drain: (socket: Socket<Tag>) => {
        const tag = socket.data;
        if (!tag || tag.pair.closed) return;
        const flow = flowInto(tag);
        flow.waitingDrain = false;
        this.pump(tag.pair, flow);
      },
      end: (socket: Socket<Tag>) => {
        const tag = socket.data;
        if (tag) this.sideClosed(tag, "end");
      },
      close: (socket: Socket<Tag>, error?: Error) => {
        const tag = socket.data;
        if (tag) this.sideClosed(tag, error ? "reset" : "end");
      },
      error: (socket: Socket<Tag>) => {
        const tag = socket.data;
        if (tag) this.sideClosed(tag, "reset");
      },
    };
  }

  private accept(socket: Socket<Tag>): void {
    if (this.refusing) {
      this.stats.refused++;
      socket.terminate();
      return;
    }
    const pair = new Pair(socket);
    socket.data = { pair, role: "client" };
    this.pairs.add(pair);
    this.stats.accepted++;
    this.stats.active = this.pairs.size;
    if (!this.blackholed) this.connectUpstream(pair);
  }

  private connectUpstream(pair: Pair): void {
    if (pair.connecting || pair.server !== null || pair.closed) return;
    pair.connecting = true;
    const { host, port } = this.options.upstream;
    const handlers = this.handlers();
    Bun.connect<Tag>({
      hostname: host,
      port,
      data: { pair, role: "server" },
      socket: {
        ...handlers,
        open: (socket: Socket<Tag>) => {
          pair.connecting = false;
          if (pair.closed) return socket.terminate();
          pair.server = socket;
          this.pump(pair, pair.up);
        },
      },
    }).catch(() => {
      pair.connecting = false;
      this.reset(pair); // upstream refused: the client sees its connection die
    });
  }

  private enqueue(pair: Pair, flow: Flow, source: Socket<Tag>, bytes: Uint8Array): void {
    // Bun hands every data() call a fresh buffer: keep it, no copy. On a throttled link it
    // crosses in pieces of 1/50 s (at least 16 KiB), so the far side sees bytes arrive as
    // they would from a real link, not a whole read's worth at once seconds later.
    const now = performance.now();
    const piece = this.bytesPerSecond > 0 ? Math.max(16 * 1024, Math.floor(this.bytesPerSecond / 50)) : bytes.length;
    for (let at = 0; at < bytes.length; at += piece) {
      const part = bytes.subarray(at, Math.min(bytes.length, at + piece));
      let late = 0;
      if (this.lossProbability > 0) {
        // P(some segment of the piece is lost) = 1 - (1 - p)^segments.
        const segments = Math.ceil(part.length / SEGMENT_BYTES);
        if (this.lossPrng.chance(1 - (1 - this.lossProbability) ** segments)) {
          late = this.retransmitMs;
          this.stats.lost++;
        }
      }
      const chunk: Chunk = { bytes: part, late, readyAt: 0 };
      this.schedule(flow, chunk, now);
      flow.chunks.push(chunk);
    }
    flow.queued += bytes.length;
    if (!flow.paused && flow.queued > this.highWater) {
      flow.paused = true;
      source.pause();
    }
    this.pump(pair, flow);
  }

  private schedule(flow: Flow, chunk: Chunk, now: number): void {
    chunk.readyAt = scheduleOnLink(flow, chunk.bytes.length, chunk.late, now, this.bytesPerSecond, this.delayMs);
  }

  /** Paces the queued chunks again from now (the rate changed, or a blackhole held them). */
  private reschedule(flow: Flow): void {
    const now = performance.now();
    flow.linkFree = now;
    flow.lastReadyAt = 0;
    for (const chunk of flow.chunks) this.schedule(flow, chunk, now);
  }

  private destination(pair: Pair, flow: Flow): Socket<Tag> | null {
    return flow.direction === "up" ? pair.server : pair.client;
  }

  private source(pair: Pair, flow: Flow): Socket<Tag> | null {
    return flow.direction === "up" ? pair.client : pair.server;
  }

  /** Move as many queued bytes as delay, throttle, blackhole and the kernel allow. */
  private pump(pair: Pair, flow: Flow): void {
    if (pair.closed || this.blackholed || flow.waitingDrain) return;
    const destination = this.destination(pair, flow);
    if (destination === null) return; // upstream not connected yet; open() pumps
    if (flow.timer) {
      clearTimeout(flow.timer);
      flow.timer = null;
    }
    const now = performance.now();
    while (flow.chunks.length > 0) {
      const head = flow.chunks[0]!;
      if (head.readyAt > now) {
        this.wake(pair, flow, head.readyAt - now);
        break; // and resume the source below if the queue went down enough
      }
      const written = Math.max(0, destination.write(head.bytes));
      flow.queued -= written;
      this.account(flow.direction, written);
      if (written === head.bytes.length) flow.chunks.shift();
      else {
        head.bytes = head.bytes.subarray(written);
        flow.waitingDrain = true; // the kernel is full: drain() pumps again
        break;
      }
    }
    if (flow.paused && flow.queued <= this.highWater / 2) {
      flow.paused = false;
      this.source(pair, flow)?.resume();
    }
    if (flow.chunks.length === 0 && flow.ended !== null) this.finish(pair, flow.ended);
  }

  private wake(pair: Pair, flow: Flow, ms: number): void {
    flow.timer = setTimeout(() => {
      flow.timer = null;
      this.pump(pair, flow);
    }, Math.max(1, Math.ceil(ms)));
  }

  private account(direction: Direction, bytes: number): void {
    if (bytes === 0) return;
    if (direction === "up") this.stats.bytesUp += bytes;
    else this.stats.bytesDown += bytes;
    const total = this.delivered(direction);
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const waiter = this.waiters[i]!;
      if (waiter.direction === direction && total >= waiter.bytes) {
        this.waiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }

  /** One side closed: flush what it sent, then close the other side the same way. */
  private sideClosed(tag: Tag, how: "end" | "reset"): void {
    const pair = tag.pair;
    if (pair.closed) return;
    if (this.blackholed) {
      pair.brokenInBlackhole = true; // nobody hears of it until the blackhole ends
      return;
    }
    const from = tag.role === "client" ? pair.up : pair.down;
    const towards = tag.role === "client" ? pair.down : pair.up;
    towards.chunks.length = 0; // undeliverable: its destination is gone
    towards.queued = 0;
    if (from.ended === null) from.ended = how;
    if (this.destination(pair, from) === null) return this.reset(pair);
    this.pump(pair, from);
  }

  private finish(pair: Pair, how: "end" | "reset"): void {
    if (how === "reset") return this.reset(pair);
    this.retire(pair);
    pair.client.end();
    pair.server?.end();
  }

  private reset(pair: Pair): void {
    this.retire(pair);
    pair.client.terminate();
    pair.server?.terminate();
  }

  private retire(pair: Pair): void {
    pair.closed = true;
    for (const flow of [pair.up, pair.down]) {
      if (flow.timer) clearTimeout(flow.timer);
      flow.timer = null;
      flow.chunks.length = 0;
      flow.queued = 0;
    }
    this.pairs.delete(pair);
    this.stats.active = this.pairs.size;
  }

  private scheduleBlackholeEnd(): void {
    if (this.blackholeTimer) clearTimeout(this.blackholeTimer);
    const remaining = this.blackholeUntil - performance.now();
    this.blackholeTimer = setTimeout(() => {
      this.blackholeTimer = null;
      if (this.blackholed) return this.scheduleBlackholeEnd(); // extended meanwhile (or fired early)
      this.endBlackhole();
    }, Math.max(1, Math.ceil(remaining)));
  }

  private endBlackhole(): void {
    for (const pair of [...this.pairs]) {
      if (pair.brokenInBlackhole) {
        this.stats.brokenByBlackhole++;
        this.reset(pair);
        continue;
      }
      this.reschedule(pair.up); // what the blackhole held crosses the link from now on
      this.reschedule(pair.down);
      if (pair.server === null) this.connectUpstream(pair);
      else {
        this.pump(pair, pair.up);
        this.pump(pair, pair.down);
      }
    }
    for (const resolve of this.blackholeDone.splice(0)) resolve();
  }
}
