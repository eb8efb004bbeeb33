/**
 * @module control/protocol — the control socket's wire format, pure (no I/O): JSON lines.
 * One request per line, one response line per request, in order; after an `events` request
 * with `follow`, event lines follow on the same connection. Every line carries `"v": 1`
 * (CONTROL_VERSION); a request with another version is answered with E_VERSION and nothing
 * else happens. Full schema with examples: docs/status.md "Control socket".
 *
 *   → {"v":1,"id":1,"method":"status"}
 *   ← {"v":1,"id":1,"ok":true,"result":{...}}
 *   ← {"v":1,"id":2,"ok":false,"error":{"code":"E_METHOD","message":"..."}}
 *   ← {"v":1,"event":{"seq":12,"time":"...","type":"service.state",...}}
 *
 * Bounds: a request line is at most MAX_REQUEST_BYTES; a longer one is an error and the
 * connection is closed (its remainder cannot be framed). The reader never holds more.
 */

export const CONTROL_VERSION = 1;
/** Longest request line (bytes, without the newline). */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Longest response or event line a client accepts (a status of a large node). */
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

export const METHODS = ["hello", "status", "events", "reload", "resize", "leg", "replica"] as const;
export type Method = (typeof METHODS)[number];

export type RequestId = number | string | null;

export interface ControlRequest {
  v: typeof CONTROL_VERSION;
  id: RequestId;
  method: Method;
  params: Record<string, unknown>;
}

export interface ControlErrorBody {
  code: string;
  message: string;
}

export type ControlResponse =
  | { v: typeof CONTROL_VERSION; id: RequestId; ok: true; result: unknown }
  | { v: typeof CONTROL_VERSION; id: RequestId; ok: false; error: ControlErrorBody };

/**
 * Splits a byte stream into lines of at most `max` bytes. `push` returns the complete lines
 * (decoded as UTF-8, a trailing '\r' dropped), or `overflow` once a line grows past `max`.
 */
export class LineReader {
  private parts: Uint8Array[] = [];
  private held = 0;
  private readonly decoder = new TextDecoder();

  constructor(private readonly max: number) {}

  push(chunk: Uint8Array): { lines: string[]; overflow: boolean } {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      if (newline < 0) break;
      const piece = chunk.subarray(start, newline);
      if (this.held + piece.length > this.max) return { lines, overflow: true };
      lines.push(this.take(piece));
      start = newline + 1;
    }
    const rest = chunk.subarray(start);
    if (this.held + rest.length > this.max) return { lines, overflow: true };
    if (rest.length > 0) {
      this.parts.push(rest.slice());
      this.held += rest.length;
    }
    return { lines, overflow: false };
  }

  /** Bytes of an unfinished line held now. */
  get pending(): number {
    return this.held;
  }

  private take(last: Uint8Array): string {
    let bytes = last;
    if (this.parts.length > 0) {
      bytes = new Uint8Array(this.held + last.length);
      let at = 0;
      for (const part of this.parts) {
        bytes.set(part, at);
        at += part.length;
      }
      bytes.set(last, at);
      this.parts = [];
      this.held = 0;
    }
    const text = this.decoder.decode(bytes);
    return text.endsWith("\r") ? text.slice(0, -1) : text;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function validId(value: unknown): value is RequestId {
  return value === null || (typeof value === "number" && Number.isSafeInteger(value)) || (typeof value === "string" && value.length <= 64);
}

/** A request line → the request, or the error to answer (with whatever id could be read). */
export function parseRequest(line: string): ControlRequest | { id: RequestId; error: ControlErrorBody } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { id: null, error: { code: "E_REQUEST", message: "a request is one JSON object per line" } };
  }
  if (!isRecord(value)) return { id: null, error: { code: "E_REQUEST", message: "a request is a JSON object" } };
  const id = value.id === undefined ? null : value.id;
  if (!validId(id)) return { id: null, error: { code: "E_REQUEST", message: "id must be an integer, a string of at most 64 characters, or null" } };
  if (value.v !== CONTROL_VERSION) {
    return { id, error: { code: "E_VERSION", message: `this node speaks control protocol version ${CONTROL_VERSION}; the request has v=${JSON.stringify(value.v ?? null)}` } };
  }
  const method = value.method;
  if (typeof method !== "string" || !(METHODS as readonly string[]).includes(method)) {
    const shown = typeof method === "string" ? JSON.stringify(method.slice(0, 64)) : "none";
    return { id, error: { code: "E_METHOD", message: `unknown method ${shown}; methods: ${METHODS.join(", ")}` } };
  }
  const params = value.params === undefined ? {} : value.params;
  if (!isRecord(params)) return { id, error: { code: "E_REQUEST", message: "params must be an object" } };
  return { v: CONTROL_VERSION, id, method: method as Method, params };
}

export function encodeLine(message: unknown): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(message)}\n`);
}

export function okResponse(id: RequestId, result: unknown): ControlResponse {
  return { v: CONTROL_VERSION, id, ok: true, result };
}

export function errorResponse(id: RequestId, code: string, message: string): ControlResponse {
  return { v: CONTROL_VERSION, id, ok: false, error: { code, message } };
}
