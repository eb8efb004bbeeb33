/**
 * status/http: the metrics listener answers GET and HEAD on /metrics with the Prometheus
 * content type, and nothing else: 404 elsewhere, 405 for other methods, request bodies
 * refused past 1 KiB, malformed requests 400; a port in use is a clear error; it holds at
 * most METRICS_MAX_CONNECTIONS connections, however many are opened, and still answers a
 * scrape meanwhile. (test/status/metrics-flood.test.ts floods a real `dstd up`.)
 */
import { afterAll, describe, expect, test } from "bun:test";
import { startMetricsListener } from "../../src/status/http.ts";
import { METRICS_MAX_CONNECTIONS } from "../../src/transport/fd-budget.ts";
import { recordingLog } from "../helpers/log.ts";
import { until } from "../helpers/wait.ts";

let renders = 0;
const listener = await startMetricsListener(
  { transport: "tcp", host: "127.0.0.1", port: 0 },
  () => {
    renders++;
    return "# HELP t_x X.\n# TYPE t_x gauge\nt_x 1\n";
  },
  recordingLog(),
);
const base = `http://127.0.0.1:${listener.bound.transport === "tcp" ? listener.bound.port : 0}`;
afterAll(() => listener.close());

describe("metrics listener", () => {
  test("GET /metrics", async () => {
    const response = await fetch(`${base}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(await response.text()).toBe("# HELP t_x X.\n# TYPE t_x gauge\nt_x 1\n");
    expect(listener.scrapes).toBe(1);
  });

  test("HEAD /metrics has no body", async () => {
    const response = await fetch(`${base}/metrics`, { method: "HEAD" });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe("");
  });

  test("other paths: 404; other methods: 405 with Allow", async () => {
    const before = renders;
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/metrics/../admin`)).status).toBe(404);
    const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    expect(renders).toBe(before);
  });

  test("a large request body is refused", async () => {
    const response = await fetch(`${base}/metrics`, { method: "POST", body: "x".repeat(64 * 1024) });
    expect(response.status).toBe(413);
  });

  test("HEAD says the length of the body GET would send; a query string is the same path", async () => {
    const head = await fetch(`${base}/metrics`, { method: "HEAD" });
    expect(head.headers.get("content-length")).toBe("37");
    expect((await fetch(`${base}/metrics?x=1`)).status).toBe(200);
  });

  test("a malformed request line: 400; a request head past 8 KiB: 431", async () => {
    expect(await raw("GARBAGE\r\n\r\n")).toStartWith("HTTP/1.1 400 ");
    expect(await raw(`GET /metrics HTTP/1.1\r\nx: ${"y".repeat(9000)}\r\n\r\n`)).toStartWith("HTTP/1.1 431 ");
    expect(await raw("GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")).toEndWith("\r\nconnection: close\r\n\r\n# HELP t_x X.\n# TYPE t_x gauge\nt_x 1\n");
  });

  test("a port in use: E_LISTEN naming the address", async () => {
    const port = listener.bound.transport === "tcp" ? listener.bound.port : 0;
    await expect(startMetricsListener({ transport: "tcp", host: "127.0.0.1", port }, () => "", recordingLog())).rejects.toThrow(`cannot serve metrics on 127.0.0.1:${port}: address already in use`);
  });

  test(`at most ${METRICS_MAX_CONNECTIONS} connections, however many are opened; a scrape still gets in`, async () => {
    const flood = await openIdle(20 * METRICS_MAX_CONNECTIONS);
    try {
      await until(() => listener.connections <= METRICS_MAX_CONNECTIONS && flood.closed() >= 19 * METRICS_MAX_CONNECTIONS, "the listener to close what is past its cap");
      expect(listener.connections).toBe(METRICS_MAX_CONNECTIONS);
      const scrape = await fetch(`${base}/metrics`);
      expect(scrape.status).toBe(200);
      expect(await scrape.text()).toContain("t_x 1");
    } finally {
      flood.end();
    }
    await until(() => listener.connections === 0, "the flood's connections to close");
  });
});

/** Send `request` on a new connection; everything the listener answers until it closes. */
async function raw(request: string): Promise<string> {
  let text = "";
  const { promise, resolve } = Promise.withResolvers<string>();
  await Bun.connect({
    hostname: "127.0.0.1",
    port: listener.bound.transport === "tcp" ? listener.bound.port : 0,
    socket: {
      open: (socket) => void socket.write(request),
      data: (_socket, chunk) => void (text += chunk.toString()),
      close: () => resolve(text),
      error: () => resolve(text),
    },
  });
  return promise;
}

/** Open `count` connections that send nothing; `closed()`: how many the listener has closed. */
async function openIdle(count: number): Promise<{ closed(): number; end(): void }> {
  let closed = 0;
  const sockets = await Promise.all(
    Array.from({ length: count }, () =>
      Bun.connect({ hostname: "127.0.0.1", port: listener.bound.transport === "tcp" ? listener.bound.port : 0, socket: { data() {}, close: () => void closed++ } }),
    ),
  );
  return { closed: () => closed, end: () => sockets.forEach((s) => s.end()) };
}
