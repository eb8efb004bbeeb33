/**
 * @module control/server — the node's control socket: `<state_dir>/control.sock`, a Unix
 * stream socket speaking control/protocol.ts. Only the owner may use it: the state
 * directory is made 0700 and the socket 0600 (the directory is private before the socket
 * exists, so there is no window in which someone else can connect).
 *
 * Hostile-client bounds (each one tested in test/control/server.test.ts):
 * - at most `maxClients` connections; one more is told E_BUSY and closed;
 * - a request line is at most MAX_REQUEST_BYTES; a longer one gets E_TOO_LARGE and a close;
 * - at most `maxPending` requests waiting per connection; more is E_BUSY and a close;
 * - replies wait in the socket's queue; past `maxQueuedBytes` reading pauses until it drains;
 *   an event follower that lets `maxQueuedBytes` pile up is sent one "overflow" line and
 *   closed (it may reconnect and resume with `since`);
 * - a connection that is not following events and sends nothing for `idleMs` is closed.
 * Requests of one connection run in order; reloads of all connections run one at a time.
 */
import { chmodSync, lstatSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { DstdError, errorMessage } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { effectiveUserId } from "../sys/libc.ts";
import { listen, type Listener } from "../transport/tcp.ts";
import type { ConnectionHandler, Sink } from "../transport/types.ts";
import type { EventBus, NodeEvent } from "../status/events.ts";
import {
  CONTROL_VERSION,
  encodeLine,
  errorResponse,
  LineReader,
  MAX_REQUEST_BYTES,
  okResponse,
  parseRequest,
  type ControlRequest,
  type Method,
  type RequestId,
} from "./protocol.ts";

export const CONTROL_SOCKET_NAME = "control.sock";

export interface ControlLimits {
  maxClients: number;
  maxPending: number;
  maxQueuedBytes: number;
  idleMs: number;
  /** How long a closed connection may still take to read its last lines before it is cut. */
  closeGraceMs: number;
}

export const DEFAULT_CONTROL_LIMITS: ControlLimits = {
  maxClients: 16,
  maxPending: 16,
  maxQueuedBytes: 4 * 1024 * 1024,
  idleMs: 60_000,
  closeGraceMs: 5_000,
};

export type RejectReason = "too_many_clients" | "too_large" | "too_many_pending" | "overflow" | "idle" | "bad_request";
export const REJECT_REASONS: readonly RejectReason[] = ["too_many_clients", "too_large", "too_many_pending", "overflow", "idle", "bad_request"];

export interface ControlHandlers {
  hello(): unknown;
  status(): unknown;
  /** Resolves with the outcome; throws DstdError for "nothing changed, because". */
  reload(): Promise<unknown>;
  /** Resize an export online: params { name, size, allowShrink?, force? }; throws DstdError why not. */
  resize(params: Record<string, unknown>): Promise<unknown>;
  /** Suspend or resume a mirror leg: params { name, leg, action: suspend|resume }; throws DstdError why not. */
  leg(params: Record<string, unknown>): Promise<unknown>;
  /** Replication: params { op: status|pause|resume|promote|demote|resync, name?, … } (docs/replication.md §12). */
  replica(params: Record<string, unknown>): Promise<unknown>;
  events: EventBus;
}

export interface ControlObserver {
  request?(method: Method | "invalid"): void;
  reject?(reason: RejectReason): void;
}

export interface ControlServer {
  path: string;
  readonly clients: number;
  /** Connections following the event stream. */
  readonly followers: number;
  /** Closed connections whose unread lines are still queued (each cut after closeGraceMs). */
  readonly lingering: number;
  close(): Promise<void>;
}

export function controlSocketPath(stateDir: string): string {
  return join(stateDir, CONTROL_SOCKET_NAME);
}

/**
 * Create `dir` (and parents) owner-only, or tighten an existing one we own to 0700. A
 * directory owned by someone else is refused: they could replace our socket.
 */
export function prepareOwnerOnlyDir(dir: string, log: Log): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new DstdError("E_STATE", `cannot create state directory ${dir}: ${errorMessage(error)}`);
  }
  const info = lstatSync(dir);
  if (!info.isDirectory()) throw new DstdError("E_STATE", `state directory ${dir} is not a directory`);
  const uid = effectiveUserId();
  if (info.uid !== uid) {
    throw new DstdError("E_STATE", `state directory ${dir} belongs to uid ${info.uid}, not to this process (uid ${uid}): choose another --state-dir or fix its owner`);
  }
  if ((info.mode & 0o077) !== 0) {
    chmodSync(dir, 0o700);
    log.info(`state directory ${dir} was mode ${(info.mode & 0o777).toString(8)}; made it 0700 (owner only)`);
  }
}

export async function startControlServer(options: {
  stateDir: string;
  handlers: ControlHandlers;
  log: Log;
  limits?: Partial<ControlLimits>;
  observer?: ControlObserver;
}): Promise<ControlServer> {
  const { handlers, log } = options;
  const limits: ControlLimits = { ...DEFAULT_CONTROL_LIMITS, ...options.limits };
  const observer = options.observer ?? {};
  prepareOwnerOnlyDir(options.stateDir, log);
  const path = controlSocketPath(options.stateDir);
  const connections = new Set<ControlConnection>();
  let reloads: Promise<unknown> = Promise.resolve();
  const shared = {
    handlers,
    limits,
    observer,
    log,
    connections,
    lingering: new Set<ControlConnection>(),
    /** Reloads (and resizes) run one at a time, whoever asks. */
    serialReload(): Promise<unknown> {
      return shared.serial(() => handlers.reload());
    },
    serial(work: () => Promise<unknown>): Promise<unknown> {
      const next = reloads.then(work);
      reloads = next.catch(() => {});
      return next;
    },
  };
  let listener: Listener;
  try {
    listener = await listen([{ transport: "unix", path }], (sink) => {
      if (connections.size >= limits.maxClients) {
        observer.reject?.("too_many_clients");
        sink.write(encodeLine(errorResponse(null, "E_BUSY", `this node serves at most ${limits.maxClients} control clients at once; try again`)));
        sink.end();
        return { onData() {}, onDrain() {}, onClose() {} };
      }
      const connection = new ControlConnection(sink, shared);
      connections.add(connection);
      return connection;
    });
  } catch (error) {
    if (error instanceof DstdError && /another process is serving it/.test(error.message)) {
      throw new DstdError("E_BUSY", `another dstd node is running with state directory ${options.stateDir} (its control socket ${path} answers): stop it first, or give this one another --state-dir`);
    }
    throw error;
  }
  chmodSync(path, 0o600);
  return {
    path,
    get clients() {
      return connections.size;
    },
    /** Closed connections still holding unread lines (each is cut after closeGraceMs). */
    get lingering() {
      return shared.lingering.size;
    },
    get followers() {
      let n = 0;
      for (const connection of connections) if (connection.following) n++;
      return n;
    },
    async close() {
      for (const connection of [...connections]) connection.close();
      await listener.close();
    },
  };
}

interface Shared {
  handlers: ControlHandlers;
  limits: ControlLimits;
  observer: ControlObserver;
  log: Log;
  connections: Set<ControlConnection>;
  /** Closed connections whose socket still holds unread lines (cut after closeGraceMs). */
  lingering: Set<ControlConnection>;
  serialReload(): Promise<unknown>;
  serial(work: () => Promise<unknown>): Promise<unknown>;
}

class ControlConnection implements ConnectionHandler {
  private readonly reader = new LineReader(MAX_REQUEST_BYTES);
  private readonly queue: string[] = [];
  private running = false;
  private closed = false;
  private paused = false;
  private unsubscribe: (() => void) | null = null;
  private idle: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly sink: Sink,
    private readonly shared: Shared,
  ) {
    this.armIdle();
  }

  get following(): boolean {
    return this.unsubscribe !== null;
  }

  onData(chunk: Uint8Array): void {
    if (this.closed) return;
    this.armIdle();
    const { lines, overflow } = this.reader.push(chunk);
    for (const line of lines) if (line.trim() !== "") this.queue.push(line);
    if (overflow) {
      this.refuse("too_large", "E_TOO_LARGE", `a request line is at most ${MAX_REQUEST_BYTES} bytes`);
      return;
    }
    if (this.queue.length > this.shared.limits.maxPending) {
      this.refuse("too_many_pending", "E_BUSY", `at most ${this.shared.limits.maxPending} requests may wait on one connection`);
      return;
    }
    void this.pump();
  }

  onDrain(): void {
    if (this.paused && this.sink.queuedBytes <= this.shared.limits.maxQueuedBytes / 2) {
      this.paused = false;
      this.sink.resume();
    }
  }

  onClose(): void {
    this.closed = true;
    this.shared.lingering.delete(this);
    this.cleanup();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.cleanup();
    this.sink.end();
    // end() waits for the queue to drain: a client that never reads again would keep its
    // socket, and up to maxQueuedBytes, after its slot was given back. Give it a grace to read
    // the last lines (an overflow or E_IDLE notice), then let it go.
    if (this.sink.queuedBytes === 0) return;
    this.shared.lingering.add(this);
    setTimeout(() => {
      if (this.shared.lingering.delete(this)) this.sink.destroy();
    }, this.shared.limits.closeGraceMs).unref?.();
  }

  private cleanup(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.idle !== null) clearTimeout(this.idle);
    this.idle = null;
    this.shared.connections.delete(this);
  }

  private armIdle(): void {
    if (this.idle !== null) clearTimeout(this.idle);
    this.idle = null;
    if (this.unsubscribe !== null) return; // followers are meant to sit quietly
    this.idle = setTimeout(() => {
      // Idle means no request of this client is waiting or running (a demote can take longer
      // than idleMs, and so can waiting behind another client's reload).
      if (this.running || this.queue.length > 0) return this.armIdle();
      this.refuse("idle", "E_IDLE", `no request for ${this.shared.limits.idleMs} ms; closing`);
    }, this.shared.limits.idleMs);
  }

  private refuse(reason: RejectReason, code: string, message: string): void {
    if (this.closed) return;
    this.shared.observer.reject?.(reason);
    this.send(errorResponse(null, code, message));
    this.close();
  }

  private send(message: unknown): void {
    if (this.closed) return;
    this.sink.write(encodeLine(message));
    if (!this.paused && this.sink.queuedBytes > this.shared.limits.maxQueuedBytes) {
      this.paused = true;
      this.sink.pause();
    }
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (!this.closed && this.queue.length > 0) await this.handle(this.queue.shift()!);
    } finally {
      this.running = false;
    }
  }

  private async handle(line: string): Promise<void> {
    const request = parseRequest(line);
    if ("error" in request) {
      this.shared.observer.request?.("invalid");
      this.shared.observer.reject?.("bad_request");
      this.send({ v: CONTROL_VERSION, id: request.id, ok: false, error: request.error });
      return;
    }
    this.shared.observer.request?.(request.method);
    try {
      await this.dispatch(request);
    } catch (error) {
      const code = error instanceof DstdError ? error.code : "E_INTERNAL";
      if (!(error instanceof DstdError)) this.shared.log.error(`control request ${request.method} failed: ${(error as Error)?.stack ?? String(error)}`);
      this.send(errorResponse(request.id, code, errorMessage(error)));
    }
  }

  private async dispatch(request: ControlRequest): Promise<void> {
    const { handlers } = this.shared;
    switch (request.method) {
      case "hello":
        return this.send(okResponse(request.id, handlers.hello()));
      case "status":
        return this.send(okResponse(request.id, handlers.status()));
      case "reload":
        return this.send(okResponse(request.id, await this.shared.serialReload()));
      case "resize":
        return this.send(okResponse(request.id, await this.shared.serial(() => handlers.resize(request.params))));
      case "leg":
        return this.send(okResponse(request.id, await this.shared.serial(() => handlers.leg(request.params))));
      case "replica":
        // Status answers at once; operations that change roles run one at a time.
        if (request.params.op === "status") return this.send(okResponse(request.id, await handlers.replica(request.params)));
        return this.send(okResponse(request.id, await this.shared.serial(() => handlers.replica(request.params))));
      case "events":
        return this.events(request.id, request.params);
    }
  }

  private events(id: RequestId, params: Record<string, unknown>): void {
    const since = params.since === undefined ? null : params.since;
    if (since !== null && !(typeof since === "number" && Number.isSafeInteger(since) && since >= 0)) {
      this.send(errorResponse(id, "E_REQUEST", "since must be a non-negative integer (a sequence number)"));
      return;
    }
    const follow = params.follow === true;
    const bus = this.shared.handlers.events;
    const history = since === null ? [] : bus.since(since);
    this.send(okResponse(id, { lastSeq: bus.lastSeq, events: history, following: follow }));
    if (!follow || this.unsubscribe !== null) return;
    if (this.idle !== null) clearTimeout(this.idle);
    this.idle = null;
    this.unsubscribe = bus.subscribe((event: NodeEvent) => {
      if (this.sink.queuedBytes > this.shared.limits.maxQueuedBytes) {
        this.shared.observer.reject?.("overflow");
        this.sink.write(encodeLine({ v: CONTROL_VERSION, overflow: { lastSeq: event.seq - 1, message: "events came faster than this client read them; reconnect with since" } }));
        this.close();
        return;
      }
      this.sink.write(encodeLine({ v: CONTROL_VERSION, event }));
    });
  }
}
