/**
 * @module status/http — the only HTTP listener in dstd: `--metrics-listen ADDR`
 * (`metrics_listen` in the config) serves the metrics registry on GET /metrics in the
 * Prometheus text format. Nothing else: other paths are 404, other methods 405, request
 * bodies over 1 KiB 413, every answer closes its connection. It serves numbers only (no names
 * of keys, no data), but still bind it to loopback or a management network (docs/status.md).
 *
 * Why not Bun.serve: it has no bound on the connections it holds and tells JavaScript of
 * none before a request arrives, so a peer opening idle connections took every file
 * descriptor of the node and its exports' clients then failed. Here the connections come
 * from transport/tcp.ts through a ConnectionGuard (transport/guard.ts) of their own, with
 * METRICS_MAX_CONNECTIONS slots that the exports' descriptor budget leaves free
 * (transport/fd-budget.ts): past the cap the oldest connection of the busiest source is
 * closed for the new one, so a flood costs at most that many descriptors and a scrape still
 * gets in; a connection is closed IDLE_TIMEOUT_MS after its accept whatever it does.
 *
 * HTTP/1.0 and 1.1 requests only as far as a scrape needs (RFC 9112): a request line and
 * headers of at most MAX_HEAD bytes; a body is never read (Content-Length over MAX_BODY or
 * any Transfer-Encoding: 413); one request per connection (`connection: close`), after which
 * what the peer still sends is discarded until it closes, so that its unread bytes do not
 * turn our close into a reset that would destroy the answer.
 */
import type { ListenAddress } from "../lib/address.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import { formatListenAddress } from "../lib/address.ts";
import { METRICS_MAX_CONNECTIONS } from "../transport/fd-budget.ts";
import { ConnectionGuard, type GuardLog, type GuardedHandler } from "../transport/guard.ts";
import { describeListenAddress, listen } from "../transport/tcp.ts";
import type { Sink } from "../transport/types.ts";
import { TEXT_FORMAT_CONTENT_TYPE } from "./metrics.ts";

export interface MetricsListener {
  /** The address actually bound (port 0 resolved). */
  bound: ListenAddress;
  /** Scrapes answered. */
  readonly scrapes: number;
  /** Connections open now (at most METRICS_MAX_CONNECTIONS). */
  readonly connections: number;
  close(): Promise<void>;
}

/** Bytes of request body we accept (none is expected). */
const MAX_BODY = 1024;
/** Bytes of request line and headers. */
const MAX_HEAD = 8192;
/** Milliseconds a connection may stay open from its accept. */
const IDLE_TIMEOUT_MS = 10_000;

const TEXT = "text/plain; charset=utf-8";
const REASONS: Readonly<Record<number, string>> = { 200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error" };

interface Answer {
  status: number;
  body: string;
  headers?: Record<string, string>;
  /** HEAD: the headers of the body, without it. */
  head?: boolean;
}

function encodeAnswer(answer: Answer): Uint8Array {
  const body = new TextEncoder().encode(answer.body);
  const headers = { "content-type": TEXT, ...answer.headers, "content-length": String(body.length), connection: "close" };
  const lines = [`HTTP/1.1 ${answer.status} ${REASONS[answer.status]}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  const head = new TextEncoder().encode(`${lines.join("\r\n")}\r\n\r\n`);
  if (answer.head === true) return head;
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/** The answer to a complete request head (request line and headers, without the blank line). */
function answerFor(head: string, render: () => string, scraped: () => void): Answer {
  const [requestLine = "", ...fields] = head.split("\r\n");
  const request = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.[01]$/.exec(requestLine);
  if (request === null) return { status: 400, body: "bad request line\n" };
  const headers = new Map<string, string>();
  for (const field of fields) {
    const colon = field.indexOf(":");
    if (colon <= 0) return { status: 400, body: "bad header line\n" };
    headers.set(field.slice(0, colon).trim().toLowerCase(), field.slice(colon + 1).trim());
  }
  const length = headers.get("content-length");
  if (headers.has("transfer-encoding") || (length !== undefined && !(/^\d+$/.test(length) && Number(length) <= MAX_BODY))) {
    return { status: 413, body: "request bodies are not accepted\n" };
  }
  const method = request[1]!;
  const target = request[2]!;
  let path = target.split("?", 1)[0]!;
  if (!target.startsWith("/")) path = URL.canParse(target) ? new URL(target).pathname : ""; // absolute-form
  if (path !== "/metrics") return { status: 404, body: "dstd serves Prometheus metrics on /metrics only\n" };
  if (method !== "GET" && method !== "HEAD") return { status: 405, body: "only GET and HEAD\n", headers: { allow: "GET, HEAD" } };
  scraped();
  return { status: 200, body: render(), headers: { "content-type": TEXT_FORMAT_CONTENT_TYPE, "cache-control": "no-store" }, head: method === "HEAD" };
}

/** One connection: gather the head, answer once, then discard input until the peer closes. */
function metricsConnection(sink: Sink, render: () => string, scraped: () => void): GuardedHandler {
  let buffered = "";
  let answered = false;
  const decoder = new TextDecoder("latin1");
  const answer = (a: Answer) => {
    answered = true;
    buffered = "";
    sink.write(encodeAnswer(a));
    sink.end();
  };
  return {
    onData(chunk) {
      if (answered) return;
      buffered += decoder.decode(chunk, { stream: true });
      const end = buffered.indexOf("\r\n\r\n");
      if (end < 0) {
        if (buffered.length > MAX_HEAD) answer({ status: 431, body: "request head too large\n" });
        return;
      }
      if (end > MAX_HEAD) return answer({ status: 431, body: "request head too large\n" });
      try {
        answer(answerFor(buffered.slice(0, end), render, scraped));
      } catch (error) {
        answer({ status: 500, body: `internal error: ${errorMessage(error)}\n` });
      }
    },
    onDrain() {},
    onClose() {},
  };
}

export async function startMetricsListener(address: ListenAddress, render: () => string, log: GuardLog): Promise<MetricsListener> {
  if (address.transport !== "tcp") throw new DstdError("E_USAGE", "metrics are served over TCP only (Prometheus scrapes HOST:PORT)");
  let scrapes = 0;
  const guard = new ConnectionGuard((sink) => metricsConnection(sink, render, () => scrapes++), {
    protocol: "metrics",
    limits: {
      handshakeTimeoutMs: IDLE_TIMEOUT_MS,
      frameTimeoutMs: IDLE_TIMEOUT_MS,
      maxConnections: METRICS_MAX_CONNECTIONS,
      maxUnauthenticated: METRICS_MAX_CONNECTIONS,
      // Never refuse by source: past the cap the oldest connection of the busiest source
      // makes room, so one flooding source cannot lock out a scraper from the same host.
      maxUnauthenticatedPerSource: METRICS_MAX_CONNECTIONS + 1,
    },
    log, // and the guard's own budget of limits.maxConnections
  });
  let listener;
  try {
    listener = await listen([address], guard.accept);
  } catch (error) {
    guard.close();
    const message = errorMessage(error);
    const prefix = `cannot listen on ${describeListenAddress(address)}: `;
    const reason = message.startsWith(prefix) ? message.slice(prefix.length) : message;
    throw new DstdError("E_LISTEN", `cannot serve metrics on ${formatListenAddress(address)}: ${reason}`, { cause: error });
  }
  return {
    bound: listener.bound[0]!,
    get scrapes() {
      return scrapes;
    },
    get connections() {
      return guard.stats.open;
    },
    async close() {
      guard.close();
      await listener.close();
    },
  };
}
