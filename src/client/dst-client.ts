/**
 * @module client/dst-client — the client engine wired to sockets and time: the driver of
 * `dstd copy`, `dstd attach` and remote legs. Sockets come from an injected dialer and time
 * from an injected clock (real sockets and setInterval in production); the simulator passes
 * its simulated network and clock (docs/simulation.md). The dialer answers with a
 * PromiseLike so that a simulated one can answer synchronously, in simulated time: a real
 * Promise settles on the microtask queue, which a synchronous simulation loop never runs.
 *
 * Several connections ("links", `links = N`): when the export grants MULTI_CONN, the
 * client runs N engines — N sessions, each with its own exactly-once table, fencing and
 * replay log — and routes every byte of the disk to one link by its region (REGION_BYTES):
 * a request that crosses regions is split and its parts joined. All writes to a byte
 * therefore go through one link in order, so each link's replay after an export restart
 * cannot bury another link's newer write; a FLUSH goes to every link (each releases its own
 * replay log) and completes when all did.
 *
 * First contact: with `firstContact: "fail"` (what `dstd copy` asks for unless `--wait`), a
 * connection lost before the first handshake succeeded (refused, no such host, no such
 * socket, not a DST export) ends `open` at once with that reason, instead of the engine
 * retrying for its whole deadline in silence. "retry" (the default: a daemon such as
 * `dstd attach` resuming a device must wait for its export) runs the engine's reconnect loop
 * until the deadline. Once a session was established, losing the connection is what the
 * engine's resend/reconnect budget is for, either way.
 */
import { randomInt } from "node:crypto";
import type { ListenAddress } from "../lib/address.ts";
import { Errno, errnoMessage } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import { Feature, Perm } from "../wire/dst/constants.ts";
import type { Welcome } from "../wire/dst/handshake.ts";
import { connect, describeListenAddress } from "../transport/tcp.ts";
import type { ConnectionHandler, Sink } from "../transport/types.ts";
import { BUSY, ClientEngine, type Completion, type EngineLog, type EngineState, type Request } from "../engine/client-engine.ts";
import type { EngineCounters } from "../engine/counters.ts";
import { newCounters } from "../engine/counters.ts";
import { ENGINE_DEFAULTS, type EngineOptions } from "../engine/options.ts";
import { WritePool } from "./write-pool.ts";

/**
 * Opens a connection; resolves with its Sink once connected, rejects with the reason. Only
 * `then(onConnected, onFailed)` is used, so a simulated dialer may call back synchronously.
 */
export type Dialer = (address: ListenAddress, makeHandler: (sink: Sink) => ConnectionHandler) => PromiseLike<Sink>;

/** Time for the driver: production uses performance.now, setInterval and setImmediate. */
export interface DriverClock {
  now(): number;
  /** Call `tick` every `ms` until the returned function is called. */
  every(ms: number, tick: () => void): () => void;
  /** Run `work` after the current burst of events. */
  defer(work: () => void): void;
}

export const REAL_CLOCK: DriverClock = {
  now: () => performance.now(),
  every(ms, tick) {
    const timer = setInterval(tick, ms);
    return () => clearInterval(timer);
  },
  defer: (work) => void setImmediate(work),
};

/** Bytes of the disk that always go through the same link (see the module header). */
export const REGION_BYTES = 4 * 1024 * 1024;

export interface DstClientOptions extends Partial<Omit<EngineOptions, "exportName">> {
  address: ListenAddress;
  exportName: string;
  log: EngineLog;
  /** Tick period; resend/keepalive precision is about this. */
  tickMs?: number;
  onStateChange?: (state: EngineState, detail: string) => void;
  /** DST connections (links) to run when the export grants MULTI_CONN (default 1). */
  links?: number;
  dial?: Dialer;
  clock?: DriverClock;
  /** Before the first handshake: "fail" at the first lost connection, or "retry" until the deadline (default). */
  firstContact?: "fail" | "retry";
  /**
   * Asked on every WELCOME (each link, the first handshake and every reconnect) before anything
   * is sent in that session, replays included: a reason to stop for good (every link shut
   * down, requests failed, the reason logged), or null.
   */
  refuse?: (welcome: Welcome) => string | null;
}

/** One engine and its sockets. */
class Link {
  readonly engine: ClientEngine;
  private readonly sinks = new Map<number, Sink>();
  /** Dials not yet answered that the engine still wants (it gives up on a slow one: close()). */
  private readonly dialing = new Set<number>();
  private stopTicking: () => void = () => {};
  closed = false;

  constructor(
    options: EngineOptions,
    private readonly address: ListenAddress,
    private readonly dial: Dialer,
    private readonly clock: DriverClock,
    log: EngineLog,
  ) {
    this.engine = new ClientEngine(options, this.io, log);
  }

  /** Connect and handshake; rejects with the export's refusal or the connect error. */
  async open(
    tickMs: number,
    onStateChange: ((state: EngineState, detail: string) => void) | undefined,
    firstContact: "fail" | "retry",
  ): Promise<void> {
    const engine = this.engine;
    this.stopTicking = this.clock.every(tickMs, () => engine.tick(this.clock.now()));
    await new Promise<void>((resolve, reject) => {
      engine.onStateChange = (state, detail) => {
        onStateChange?.(state, detail);
        if (state === "ready") resolve();
        if (state === "failed") reject(new DstdError("E_CONNECT", engine.fatal ?? detail, { errno: Errno.EIO }));
        if (state === "idle" && firstContact === "fail") {
          const reason = lossReason(detail);
          engine.shutdown(reason);
          const where = describeListenAddress(this.address);
          // Not connected at all: the connect error says why. Connected, then lost before
          // WELCOME (whether or not HELLO went out): most often not a DST export.
          const connected = !/cannot connect|connect timed out/.test(reason);
          const hint = connected ? handshakeHint(where) : connectHint(reason);
          reject(new DstdError("E_CONNECT", `${reason}${hint}`, { errno: Errno.ECONNREFUSED }));
        }
      };
      engine.start(this.clock.now());
    }).catch((error) => {
      this.stop();
      throw error;
    });
    engine.onStateChange = onStateChange ?? null;
  }

  stop(): void {
    this.stopTicking();
    for (const sink of this.sinks.values()) sink.destroy();
    this.sinks.clear();
  }

  private readonly io = {
    connect: (id: number) => {
      this.dialing.add(id);
      this.dial(this.address, () => ({
        onData: (chunk) => this.engine.receive(id, chunk),
        receiveTarget: () => this.engine.receiveTarget(id),
        onDirect: (count) => this.engine.receive(id, count),
        onDrain: () => {},
        onClose: (reason) => {
          this.sinks.delete(id);
          this.engine.disconnected(id, reason);
        },
      })).then(
        (sink) => {
          // A connect the engine gave up on (connect timeout) that completes late: close it, or
          // it would hold a socket and an export slot for nothing (simulation seed 14).
          if (!this.dialing.delete(id) || this.closed) return sink.destroy();
          this.sinks.set(id, sink);
          this.engine.connected(id);
        },
        (error: Error) => {
          this.dialing.delete(id);
          this.engine.connectFailed(id, connectFailure(error));
        },
      );
    },
    send: (id: number, bytes: Uint8Array, release?: () => void) => {
      const sink = this.sinks.get(id);
      if (sink) sink.write(bytes, release);
      else release?.();
    },
    defer: (flush: () => void) => this.clock.defer(flush),
    close: (id: number) => {
      const sink = this.sinks.get(id);
      this.sinks.delete(id);
      this.dialing.delete(id);
      // A deliberate close after the work is done ends gracefully; anything else is a reset.
      if (this.closed) sink?.end();
      else sink?.destroy();
    },
  };
}

export class DstClient {
  private readonly links: Link[] = [];
  private closed = false;
  private readonly roomWaiters: Array<() => void> = [];
  /** Buffers from reserveWrite(), handed over to the engine (no copy) when written. */
  private readonly reserved = new WeakSet<Uint8Array>();
  /** Where reserveWrite() buffers come from and go back to once the engine is done with them. */
  readonly writePool = new WritePool();

  private constructor(private readonly options: DstClientOptions) {}

  /** The time the engines run on (their injected clock): a Request's `since` is read from it. */
  now(): number {
    return (this.options.clock ?? REAL_CLOCK).now();
  }

  /** Where the engines log (a port over this client logs there too). */
  get log(): EngineLog {
    return this.options.log;
  }

  /** The first link's engine (its WELCOME, state and counters describe the connection). */
  get engine(): ClientEngine {
    return this.links[0]!.engine;
  }

  /** Links running (1 unless connections > 1 and the export granted MULTI_CONN). */
  get connections(): number {
    return this.links.length;
  }

  /** Connect (all links) and handshake; rejects with the export's refusal or the connect error. */
  static async open(options: DstClientOptions): Promise<DstClient> {
    const client = new DstClient(options);
    await client.addLink(options.onStateChange);
    const wanted = Math.max(1, Math.min(options.links ?? 1, 16));
    const granted = ((client.engine.welcome?.features ?? 0) & Feature.MULTI_CONN) !== 0;
    if (wanted > 1 && !granted) options.log.info(`export does not grant multi-connection consistency: using 1 connection, not ${wanted}`);
    if (wanted > 1 && granted) {
      try {
        await Promise.all(Array.from({ length: wanted - 1 }, () => client.addLink(undefined)));
      } catch (error) {
        client.abort();
        throw error;
      }
    }
    return client;
  }

  private async addLink(onStateChange: DstClientOptions["onStateChange"]): Promise<void> {
    const options = this.options;
    const engineOptions: EngineOptions = {
      ...ENGINE_DEFAULTS,
      clientName: "dstd",
      seed: randomInt(2 ** 31),
      ...stripUndefined(options),
      exportName: options.exportName,
    };
    const link = new Link(engineOptions, options.address, options.dial ?? connect, options.clock ?? REAL_CLOCK, options.log);
    link.engine.onRoom = () => {
      for (const wake of this.roomWaiters.splice(0)) wake();
      this.roomHook?.();
    };
    // The engine calls onReady after a WELCOME, before its pump sends the session's first request.
    link.engine.onReady = () => {
      const reason = options.refuse?.(link.engine.welcome!) ?? null;
      if (reason === null) return;
      options.log.warn(reason);
      for (const each of this.links) each.engine.shutdown(reason);
    };
    // Every link hears of a resize; the client reports each new size once.
    link.engine.onResize = (size) => {
      if (size === this.reportedSize) return;
      this.reportedSize = size;
      this.resizeHook?.(size);
    };
    this.links.push(link);
    try {
      await link.open(options.tickMs ?? 20, onStateChange, options.firstContact ?? "retry");
    } catch (error) {
      this.links.splice(this.links.indexOf(link), 1);
      throw error;
    }
  }

  /** The export's size as last announced on any link (an online resize reaches links one by one). */
  get size(): number {
    return this.reportedSize >= 0 ? this.reportedSize : this.engine.welcome!.size;
  }

  get blockSize(): number {
    return this.engine.welcome!.blockPreferred;
  }

  get writable(): boolean {
    return (this.engine.welcome!.permissions & Perm.WRITE) !== 0;
  }

  /** Largest READ/WRITE one request may carry. */
  get maxPayload(): number {
    let limit = Number.MAX_SAFE_INTEGER;
    for (const link of this.links) limit = Math.min(limit, link.engine.payloadLimit);
    return limit;
  }

  /** Requests submitted and not yet completed, over every link. */
  get outstanding(): number {
    let n = 0;
    for (const link of this.links) n += link.engine.outstanding;
    return n;
  }

  /** Counters summed over the links (inflight too). */
  get counters(): EngineCounters {
    if (this.links.length === 1) return this.engine.counters;
    const sum = newCounters();
    for (const link of this.links) {
      for (const key of Object.keys(sum) as Array<keyof EngineCounters>) sum[key] += link.engine.counters[key];
    }
    return sum;
  }

  /**
   * Submit without waiting: returns a positive number when accepted, 0 when refused at once
   * (stopped; `done` was called), BUSY when the queues are full (`done` not called: wait for
   * onRoom, see room()). A request crossing regions of several links is split and joined.
   */
  submit(request: Request, done: Completion): number {
    const data = request.data;
    if (data !== undefined && this.reserved.has(data)) {
      request.handOver = true;
      request.recycle = this.writePool.give;
    }
    const accepted = this.submitParts(request, done);
    // Accepted (or refused with `done` called): the buffer is the engine's now. BUSY: still ours.
    if (accepted !== BUSY && data !== undefined && request.recycle === this.writePool.give) this.reserved.delete(data);
    return accepted;
  }

  private submitParts(request: Request, done: Completion): number {
    if (this.links.length === 1) return this.engine.submit(request, done);
    if (request.kind === "flush") return this.fanOut(request, done);
    const parts = this.split(request);
    if (parts.length === 1) return parts[0]!.link.engine.submit(request, done);
    for (const part of parts) if (!part.link.engine.canAccept(part.request, 1)) return BUSY;
    const recycle = request.recycle;
    if (recycle !== undefined) {
      // Each part's lease ends on its own; the buffer goes back when all of them ended.
      let holding = parts.length;
      const whole = request.data!;
      for (const part of parts) part.request.recycle = () => void (--holding === 0 && recycle(whole));
    }
    let left = parts.length;
    let failure = 0;
    const joined = (errno: number) => {
      if (errno !== 0 && failure === 0) failure = errno;
      if (--left === 0) done(failure, failure === 0 && request.kind === "read" ? (request.into ?? null) : null);
    };
    for (const part of parts) part.link.engine.submit(part.request, joined);
    return 1;
  }

  /**
   * A buffer to fill with a WRITE's data and pass as `data`: written without a copy, and
   * given back to the pool once the engine is done with it. Pass it to write() once, and do
   * not touch it afterwards; a buffer not written after all goes back with unreserveWrite().
   */
  reserveWrite(length: number): Uint8Array {
    const buffer = this.writePool.take(length);
    this.reserved.add(buffer);
    return buffer;
  }

  /** A reserveWrite() buffer that will not be written (its chunk was all zeroes): back to the pool. */
  unreserveWrite(buffer: Uint8Array): void {
    if (!this.reserved.delete(buffer)) return;
    this.writePool.give(buffer);
  }

  /** Resolves when the engines accept requests again after a BUSY. */
  room(): Promise<void> {
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  /** Set a callback for room after BUSY (the remote port's queue uses it). */
  set onRoom(wake: (() => void) | null) {
    this.roomHook = wake;
  }

  private roomHook: (() => void) | null = null;

  /**
   * The export's size changed (a SIZE_NOTICE, or a WELCOME after a reconnect with another
   * size): called once per new size, whichever link heard it first. `size` already says it.
   */
  set onResize(hook: ((size: number) => void) | null) {
    this.resizeHook = hook;
    this.reportedSize = this.links.length > 0 ? this.size : -1;
  }

  private resizeHook: ((size: number) => void) | null = null;
  private reportedSize = -1;

  /** READ into `into` (no fresh buffer). */
  readInto(offset: number, into: Uint8Array): Promise<void> {
    return this.call({ kind: "read", offset, length: into.length, into }).then(() => {});
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.call({ kind: "read", offset, length, into: new Uint8Array(length) }) as Promise<Uint8Array>;
  }

  async write(offset: number, data: Uint8Array, fua = false): Promise<void> {
    await this.call({ kind: "write", offset, length: data.length, data, fua });
  }

  async flush(): Promise<void> {
    await this.call({ kind: "flush", offset: 0, length: 0 });
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.call({ kind: "trim", offset, length });
  }

  async zero(offset: number, length: number, noHole = false): Promise<void> {
    await this.call({ kind: "zero", offset, length, noHole });
  }

  /** Wait for nothing to be outstanding, then close for good. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.outstanding > 0) {
      const clock = this.options.clock ?? REAL_CLOCK;
      await new Promise<void>((resolve) => {
        const stop = clock.every(5, () => {
          if (this.outstanding > 0) return;
          stop();
          resolve();
        });
      });
    }
    this.closed = true;
    for (const link of this.links) {
      link.closed = true;
      link.engine.shutdown("closed by the client");
      link.stop();
    }
  }

  /** Close at once, failing anything outstanding with ESHUTDOWN. */
  abort(): void {
    this.closed = true;
    for (const link of this.links) {
      link.closed = true;
      link.engine.shutdown("aborted");
      link.stop();
    }
  }

  /** FLUSH on every link; done when all finished (the first failure wins). */
  private fanOut(request: Request, done: Completion): number {
    for (const link of this.links) if (!link.engine.canAccept(request, 1)) return BUSY;
    let left = this.links.length;
    let failure = 0;
    for (const link of this.links) {
      link.engine.submit({ ...request }, (errno) => {
        if (errno !== 0 && failure === 0) failure = errno;
        if (--left === 0) done(failure, null);
      });
    }
    return 1;
  }

  /** The parts of a request, one per run of regions owned by the same link. */
  private split(request: Request): Array<{ link: Link; request: Request }> {
    const count = this.links.length;
    const linkOf = (offset: number) => this.links[Math.floor(offset / REGION_BYTES) % count]!;
    const end = request.offset + request.length;
    const first = linkOf(request.offset);
    if (request.length === 0 || Math.floor((end - 1) / REGION_BYTES) === Math.floor(request.offset / REGION_BYTES)) {
      return [{ link: first, request }];
    }
    const parts: Array<{ link: Link; request: Request }> = [];
    let at = request.offset;
    while (at < end) {
      const stop = Math.min(end, (Math.floor(at / REGION_BYTES) + 1) * REGION_BYTES);
      const part: Request = { ...request, offset: at, length: stop - at };
      const from = at - request.offset;
      if (request.data !== undefined) part.data = request.data.subarray(from, from + part.length);
      if (request.into !== undefined) part.into = request.into.subarray(from, from + part.length);
      parts.push({ link: linkOf(at), request: part });
      at = stop;
    }
    return parts;
  }

  private async call(request: Request): Promise<Uint8Array | null> {
    for (;;) {
      const result = new Promise<Uint8Array | null>((resolve, reject) => {
        const accepted = this.submit(request, (errno, data) => {
          if (errno === 0) resolve(data);
          else {
            const what = `${request.kind} ${request.length} B at offset ${request.offset}`;
            reject(new DstdError("E_IO", `${what} failed: ${errnoMessage(errno)}`, { errno }));
          }
        });
        if (accepted === BUSY) resolve(BUSY_MARK);
      });
      const value = await result;
      if (value !== BUSY_MARK) return value;
      await this.room();
    }
  }
}

/** Marks a submit that found the engine busy (never a real READ result). */
const BUSY_MARK = new Uint8Array(0);

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The engine's "lost; reconnecting in N ms" detail without the retry part (it will not retry). */
function lossReason(detail: string): string {
  return detail.replace(/; reconnecting in \d+ ms$/, "");
}

/** Bun's connect errors say "Failed to connect" and keep the reason in `code`: put it in words. */
const CONNECT_CODES: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ENOENT: "no such socket",
  ENOTFOUND: "no such host",
  EAI_AGAIN: "host name lookup failed for now",
  EACCES: "permission denied",
  ECONNRESET: "connection reset",
  EHOSTUNREACH: "no route to host",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "timed out",
};

function connectFailure(error: Error): string {
  const source = (error.cause ?? error) as { code?: unknown };
  const code = typeof source.code === "string" ? source.code : null;
  if (code === null || error.message.includes(code)) return error.message;
  const words = CONNECT_CODES[code];
  return `${error.message.replace(/: Failed to connect$/, "")}: ${words === undefined ? code : `${words} (${code})`}`;
}

/** What to do about a first-contact failure (the reason itself says what happened). */
function connectHint(reason: string): string {
  if (/ECONNREFUSED/.test(reason)) return "; is the export running, and listening on this port?";
  if (/ENOENT/.test(reason)) return "; is the export running, and listening on this socket path?";
  if (/ENOTFOUND|EAI_/.test(reason)) return "; check the host name";
  return "; add --wait to keep trying until the deadline";
}

/** Connected, then lost before WELCOME: most often not a DST export at all. */
function handshakeHint(where: string): string {
  return ` (during the DST handshake: is ${where} a dstd export's DST address? an NBD server is reached with nbd://)`;
}
