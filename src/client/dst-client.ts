/**
 * @module client/dst-client — the client engine wired to real sockets and real time.
 * This is the composition root for the requester side: it owns the only timer (the tick)
 * and turns the engine's callback API into promises for `dstd copy` and tests. The NBD
 * bridge of `dstd attach` uses `submit` directly (no promise per request).
 */
import { randomInt } from "node:crypto";
import type { ListenAddress } from "../lib/address.ts";
import { Errno, errnoMessage } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import { Perm } from "../wire/dst/constants.ts";
import { connect } from "../transport/tcp.ts";
import type { Sink } from "../transport/types.ts";
import { BUSY, ClientEngine, type Completion, type EngineLog, type EngineState, type Request } from "../engine/client-engine.ts";
import { ENGINE_DEFAULTS, type EngineOptions } from "../engine/options.ts";

export interface DstClientOptions extends Partial<Omit<EngineOptions, "exportName">> {
  address: ListenAddress;
  exportName: string;
  log: EngineLog;
  /** Tick period; resend/keepalive precision is about this. */
  tickMs?: number;
  onStateChange?: (state: EngineState, detail: string) => void;
}

export class DstClient {
  readonly engine: ClientEngine;
  private readonly sinks = new Map<number, Sink>();
  private readonly timer: ReturnType<typeof setInterval>;
  private closed = false;

  private constructor(private readonly options: DstClientOptions) {
    const engineOptions: EngineOptions = {
      ...ENGINE_DEFAULTS,
      clientName: "dstd",
      seed: randomInt(2 ** 31),
      ...stripUndefined(options),
      exportName: options.exportName,
    };
    this.engine = new ClientEngine(engineOptions, this.io, options.log);
    this.engine.onRoom = () => {
      for (const wake of this.roomWaiters.splice(0)) wake();
    };
    this.timer = setInterval(() => this.engine.tick(performance.now()), options.tickMs ?? 20);
  }

  /** Connect and handshake; rejects with the export's refusal or the connect error. */
  static async open(options: DstClientOptions): Promise<DstClient> {
    const client = new DstClient(options);
    const engine = client.engine;
    await new Promise<void>((resolve, reject) => {
      engine.onStateChange = (state, detail) => {
        options.onStateChange?.(state, detail);
        if (state === "ready") resolve();
        if (state === "failed") reject(new DstdError("E_CONNECT", engine.fatal ?? detail, { errno: Errno.EIO }));
      };
      engine.start(performance.now());
    }).catch((error) => {
      client.stopTimer();
      throw error;
    });
    engine.onStateChange = options.onStateChange ?? null;
    return client;
  }

  get size(): number {
    return this.engine.welcome!.size;
  }

  get blockSize(): number {
    return this.engine.welcome!.blockPreferred;
  }

  get writable(): boolean {
    return (this.engine.welcome!.permissions & Perm.WRITE) !== 0;
  }

  /** Largest READ/WRITE one request may carry. */
  get maxPayload(): number {
    return this.engine.payloadLimit;
  }

  /** Submit without waiting for room: BUSY when the engine's queues are full (see engine). */
  submit(request: Request, done: Completion): number {
    return this.engine.submit(request, done);
  }

  /** A buffer to fill with a WRITE's data and pass as `data` — taken over without a copy. */
  reserveWrite(length: number): Uint8Array {
    return this.engine.reserveWrite(length);
  }

  /** READ into `into` (no fresh buffer). */
  readInto(offset: number, into: Uint8Array): Promise<void> {
    return this.call({ kind: "read", offset, length: into.length, into }).then(() => {});
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.call({ kind: "read", offset, length }) as Promise<Uint8Array>;
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
    while (this.engine.outstanding > 0) await Bun.sleep(5);
    this.closed = true;
    this.engine.shutdown("closed by the client");
    this.stopTimer();
  }

  /** Close at once, failing anything outstanding with ESHUTDOWN. */
  abort(): void {
    this.closed = true;
    this.engine.shutdown("aborted");
    this.stopTimer();
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    for (const sink of this.sinks.values()) sink.destroy();
    this.sinks.clear();
  }

  private async call(request: Request): Promise<Uint8Array | null> {
    for (;;) {
      const result = new Promise<Uint8Array | null>((resolve, reject) => {
        const txid = this.engine.submit(request, (errno, data) => {
          if (errno === 0) resolve(data);
          else {
            const what = `${request.kind} ${request.length} B at offset ${request.offset}`;
            reject(new DstdError("E_IO", `${what} failed: ${errnoMessage(errno)}`, { errno }));
          }
        });
        if (txid === BUSY) resolve(BUSY_MARK);
      });
      const value = await result;
      if (value !== BUSY_MARK) return value;
      await this.room();
    }
  }

  /** Resolves when the engine accepts requests again after a BUSY. */
  private room(): Promise<void> {
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  private readonly roomWaiters: Array<() => void> = [];

  private readonly io = {
    connect: (id: number) => {
      connect(this.options.address, (sink) => ({
        onData: (chunk) => this.engine.receive(id, chunk),
        onDrain: () => {},
        onClose: (reason) => {
          this.sinks.delete(id);
          this.engine.disconnected(id, reason);
        },
      })).then(
        (sink) => {
          if (this.closed) return sink.destroy();
          this.sinks.set(id, sink);
          this.engine.connected(id);
        },
        (error: Error) => this.engine.connectFailed(id, error.message),
      );
    },
    send: (id: number, bytes: Uint8Array, release?: () => void) => {
      const sink = this.sinks.get(id);
      if (sink) sink.write(bytes, release);
      else release?.();
    },
    defer: (flush: () => void) => {
      setImmediate(flush);
    },
    close: (id: number) => {
      const sink = this.sinks.get(id);
      this.sinks.delete(id);
      // A deliberate close after the work is done ends gracefully; anything else is a reset.
      if (this.closed) sink?.end();
      else sink?.destroy();
    },
  };
}

/** Marks a submit that found the engine busy (never a real READ result). */
const BUSY_MARK = new Uint8Array(0);

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
