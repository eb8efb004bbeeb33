/**
 * status/http: the metrics listener answers GET and HEAD on /metrics with the Prometheus
 * content type, and nothing else: 404 elsewhere, 405 for other methods, request bodies
 * refused past 1 KiB; a port in use is a clear error.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { startMetricsListener } from "../../src/status/http.ts";

let renders = 0;
const listener = startMetricsListener({ transport: "tcp", host: "127.0.0.1", port: 0 }, () => {
  renders++;
  return "# HELP t_x X.\n# TYPE t_x gauge\nt_x 1\n";
});
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

  test("a port in use: E_LISTEN naming the address", () => {
    const port = listener.bound.transport === "tcp" ? listener.bound.port : 0;
    expect(() => startMetricsListener({ transport: "tcp", host: "127.0.0.1", port }, () => "")).toThrow(`cannot serve metrics on 127.0.0.1:${port}`);
  });
});
