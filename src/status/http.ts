/**
 * @module status/http — the only HTTP listener in dstd: `--metrics-listen ADDR`
 * (`metrics_listen` in the config) serves the metrics registry on GET /metrics in the
 * Prometheus text format. Nothing else: other paths are 404, other methods 405, request
 * bodies are refused, idle connections are closed. It serves numbers only (no names of
 * keys, no data), but still bind it to loopback or a management network (docs/status.md).
 */
import type { Server } from "bun";
import type { ListenAddress } from "../lib/address.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import { formatListenAddress } from "../lib/address.ts";
import { TEXT_FORMAT_CONTENT_TYPE } from "./metrics.ts";

export interface MetricsListener {
  /** The address actually bound (port 0 resolved). */
  bound: ListenAddress;
  /** Scrapes answered. */
  readonly scrapes: number;
  close(): Promise<void>;
}

/** Bytes of request body we accept (none is expected). */
const MAX_BODY = 1024;
/** Seconds an idle keep-alive connection may stay open. */
const IDLE_TIMEOUT_SEC = 10;

export function startMetricsListener(address: ListenAddress, render: () => string): MetricsListener {
  let scrapes = 0;
  const handle = (request: Request): Response => {
    const url = new URL(request.url);
    if (url.pathname !== "/metrics") {
      return new Response("dstd serves Prometheus metrics on /metrics only\n", { status: 404, headers: { "content-type": "text/plain; charset=utf-8" } });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("only GET and HEAD\n", { status: 405, headers: { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" } });
    }
    scrapes++;
    const body = render();
    return new Response(request.method === "HEAD" ? null : body, {
      headers: { "content-type": TEXT_FORMAT_CONTENT_TYPE, "cache-control": "no-store" },
    });
  };
  const common = {
    maxRequestBodySize: MAX_BODY,
    // One listener per address: without this, Bun.serve (with development: false) binds a port
    // that is already in use (SO_REUSEPORT) instead of failing (test/status/http.test.ts).
    reusePort: false,
    idleTimeout: IDLE_TIMEOUT_SEC,
    development: false,
    fetch: handle,
    error: (error: Error) => new Response(`internal error: ${errorMessage(error)}\n`, { status: 500 }),
  };
  if (address.transport !== "tcp") throw new DstdError("E_USAGE", "metrics are served over TCP only (Prometheus scrapes HOST:PORT)");
  let server: Server<undefined>;
  try {
    server = Bun.serve({ ...common, hostname: address.host, port: address.port });
  } catch (error) {
    throw new DstdError("E_LISTEN", `cannot serve metrics on ${formatListenAddress(address)}: ${errorMessage(error)}`, { cause: error });
  }
  const bound: ListenAddress = { transport: "tcp", host: address.host, port: server.port ?? address.port };
  return {
    bound,
    get scrapes() {
      return scrapes;
    },
    async close() {
      await server.stop(true);
    },
  };
}
