/**
 * @module client/dst-client — the client engine wired to real sockets and real time.
 * This is the composition root for the requester side: it owns the only timer (the tick)
 * and turns the engine's callback API into promises for `dstd copy` and tests. The NBD
 * bridge of `dstd attach` uses `submit` directly (no promise per request).
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
import { Perm } from "../wire/dst/constants.ts";
import { connect, describeListenAddress } from "../transport/tcp.ts";
import type { Sink } from "../transport/types.ts";
import { ClientEngine, type Completion, type EngineLog, type EngineState, type Request } from "../engine/client-engine.ts";
import { ENGINE_DEFAULTS, type EngineOptions } from "../engine/options.ts";

export interface DstClientOptions extends Partial<Omit<EngineOptions, "exportName">> {
  address: ListenAddress;
  exportName: string;
  log: EngineLog;
  /** Tick period; resend/keepalive precision is about this. */
  tickMs?: number;
  onStateChange?: (state: EngineState, detail: string) => void;
  /** Before the first handshake: "fail" at the first lost connection, or "retry" until the deadline (default). */
  firstContact?: "fail" | "retry";
}

/** The engine's "lost; reconnecting in N ms" detail without the retry part (it will not retry). */
function lossReason(detail: string): string {
  return detail.replace(/; reconnecting in \d+ ms$/, "");
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
        if (state === "idle" && options.firstContact === "fail") {
          const reason = lossReason(detail);
          engine.shutdown(reason);
          const where = describeListenAddress(options.address);
          // Not connected at all: the connect error says why. Connected, then lost before
          // WELCOME (whether or not HELLO went out): most often not a DST export.
          const connected = !/cannot connect|connect timed out/.test(reason);
          const hint = connected ? handshakeHint(where) : connectHint(reason);
          reject(new DstdError("E_CONNECT", `${reason}${hint}`, { errno: Errno.ECONNREFUSED }));
        }
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

  submit(request: Request, done: Completion): void {
    this.engine.submit(request, done);
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

  private call(request: Request): Promise<Uint8Array | null> {
    return new Promise((resolve, reject) => {
      this.engine.submit(request, (errno, data) => {
        if (errno === 0) resolve(data);
        else {
          const what = `${request.kind} ${request.length} B at offset ${request.offset}`;
          reject(new DstdError("E_IO", `${what} failed: ${errnoMessage(errno)}`, { errno }));
        }
      });
    });
  }

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
        (error: Error) => this.engine.connectFailed(id, connectFailure(error)),
      );
    },
    send: (id: number, frame: Uint8Array) => {
      this.sinks.get(id)?.write(frame);
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


function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
