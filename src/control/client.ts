/**
 * @module control/client — the CLI's side of the control socket (`dstd status`, `events`,
 * `reload`): connect, send JSON-line requests, match responses in order, hand event lines
 * to a callback. Lines longer than MAX_RESPONSE_BYTES end the connection with an error.
 */
import { lstatSync } from "node:fs";
import { DstdError } from "../lib/errors.ts";
import { connect } from "../transport/tcp.ts";
import type { Sink } from "../transport/types.ts";
import type { NodeEvent } from "../status/events.ts";
import { CONTROL_VERSION, encodeLine, LineReader, MAX_RESPONSE_BYTES, type ControlResponse, type Method } from "./protocol.ts";

function permissionDenied(path: string): DstdError {
  return new DstdError("E_PERMISSION", `cannot use the control socket ${path}: permission denied (it is owner-only: run as the user running dstd up)`);
}

interface Waiter {
  resolve(result: unknown): void;
  reject(error: Error): void;
}

export class ControlClient {
  private readonly waiters: Waiter[] = [];
  private nextId = 1;
  private sink: Sink | null = null;
  private failure: Error | null = null;
  private readonly reader = new LineReader(MAX_RESPONSE_BYTES);
  /** Called for each event line (after an `events` request with follow). */
  onEvent: ((event: NodeEvent) => void) | null = null;
  /** Called once when the connection ends (reason null: the node closed it cleanly). */
  onClose: ((reason: string | null) => void) | null = null;

  private constructor(readonly path: string) {}

  /**
   * Connect to a node's control socket; null when no node runs there (no socket file, or a
   * stale one nobody answers). Permission problems are errors (they need fixing, not hiding).
   */
  static async connect(path: string): Promise<ControlClient | null> {
    try {
      lstatSync(path);
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === "ENOENT" || code === "ENOTDIR") return null;
      if (code === "EACCES" || code === "EPERM") throw permissionDenied(path);
      throw error;
    }
    const client = new ControlClient(path);
    try {
      client.sink = await connect({ transport: "unix", path }, () => ({
        onData: (chunk) => client.receive(chunk),
        onDrain: () => {},
        onClose: (reason) => client.closed(reason),
      }));
    } catch (error) {
      const code = ((error as { cause?: { code?: unknown } }).cause?.code ?? "") as string;
      if (code === "ECONNREFUSED" || code === "ENOENT") return null; // a stale socket of a killed node, or gone meanwhile
      if (code === "EACCES" || code === "EPERM") throw permissionDenied(path);
      throw error;
    }
    return client;
  }

  request(method: Method, params: Record<string, unknown> = {}): Promise<unknown> {
    if (this.failure !== null) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.sink!.write(encodeLine({ v: CONTROL_VERSION, id: this.nextId++, method, params }));
    });
  }

  close(): void {
    this.sink?.end();
  }

  private receive(chunk: Uint8Array): void {
    const { lines, overflow } = this.reader.push(chunk);
    for (const line of lines) this.line(line);
    if (overflow) this.fail(new DstdError("E_PROTOCOL", `the node sent a line longer than ${MAX_RESPONSE_BYTES} bytes`));
  }

  private line(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return this.fail(new DstdError("E_PROTOCOL", "the node sent a line that is not JSON"));
    }
    if (message.v !== CONTROL_VERSION) {
      return this.fail(new DstdError("E_VERSION", `the node speaks control protocol version ${JSON.stringify(message.v)}, this dstd speaks ${CONTROL_VERSION}: use the same dstd version`));
    }
    if (message.event !== undefined) {
      this.onEvent?.(message.event as NodeEvent);
      return;
    }
    if (message.overflow !== undefined) {
      const info = message.overflow as { message?: string };
      return this.fail(new DstdError("E_OVERFLOW", `the node dropped this follower: ${info.message ?? "overflow"}`));
    }
    const response = message as unknown as ControlResponse;
    const waiter = this.waiters.shift();
    if (waiter === undefined) {
      // An unsolicited error: the node refused the connection (busy) or closed it (idle).
      if (!response.ok) this.fail(new DstdError(response.error.code, response.error.message));
      return;
    }
    if (response.ok) waiter.resolve(response.result);
    else waiter.reject(new DstdError(response.error.code, response.error.message));
  }

  private fail(error: Error): void {
    if (this.failure === null) this.failure = error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    this.sink?.destroy();
  }

  private closed(reason: string | null): void {
    const error = this.failure ?? new DstdError("E_CONNECT", `the node closed the control connection${reason ? ` (${reason})` : ""}`);
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    this.onClose?.(this.failure?.message ?? reason);
  }
}
