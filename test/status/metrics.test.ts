/**
 * The metrics registry and its Prometheus text rendering: exact output for each metric
 * type, escaping, the series bound (overflow series + dropped counter), label value sets,
 * programmer-error assertions on bad names, and `promtool check metrics` (Debian package
 * prometheus) on a registry with every type — with a canary proving promtool rejects what
 * our assertions keep out.
 */
import { describe, expect, test } from "bun:test";
import { Registry, LATENCY_BUCKETS, formatValue, escapeLabelValue, labelValue } from "../../src/status/metrics.ts";
import { haveTools } from "../helpers/tools.ts";

function promtool(text: string): { exitCode: number; output: string } {
  const result = Bun.spawnSync(["promtool", "check", "metrics"], { stdin: new TextEncoder().encode(text) });
  return { exitCode: result.exitCode, output: result.stdout.toString() + result.stderr.toString() };
}

describe("rendering", () => {
  test("counter, gauge and histogram in text format 0.0.4", () => {
    const r = new Registry();
    const c = r.counter({ name: "t_requests_total", help: "Requests.", labels: ["op"] });
    c.labels({ op: "read" }).inc(3);
    c.labels({ op: "write" }).inc();
    const g = r.gauge({ name: "t_inflight", help: "In flight." });
    g.labels().set(7);
    const h = r.histogram({ name: "t_latency_seconds", help: "Latency.", buckets: [0.1, 1] });
    h.labels().observe(0.05);
    h.labels().observe(0.5);
    h.labels().observe(3);
    const text = r.render();
    expect(text).toContain(
      [
        "# HELP t_requests_total Requests.",
        "# TYPE t_requests_total counter",
        't_requests_total{op="read"} 3',
        't_requests_total{op="write"} 1',
        "# HELP t_inflight In flight.",
        "# TYPE t_inflight gauge",
        "t_inflight 7",
        "# HELP t_latency_seconds Latency.",
        "# TYPE t_latency_seconds histogram",
        't_latency_seconds_bucket{le="0.1"} 1',
        't_latency_seconds_bucket{le="1"} 2',
        't_latency_seconds_bucket{le="+Inf"} 3',
        "t_latency_seconds_sum 3.55",
        "t_latency_seconds_count 3",
      ].join("\n"),
    );
    expect(text.endsWith("\n")).toBe(true);
    expect(text).not.toContain("\n\n");
  });

  test("collected families read their owner at every render", () => {
    const r = new Registry();
    let value = 1;
    r.collected("gauge", { name: "t_live", help: "Live value.", labels: ["who"] }, (emit) => emit({ who: "a" }, value));
    expect(r.render()).toContain('t_live{who="a"} 1');
    value = 42;
    expect(r.render()).toContain('t_live{who="a"} 42');
  });

  test("escaping: HELP backslash/newline; label values backslash/quote/newline", () => {
    const r = new Registry();
    r.gauge({ name: "t_esc", help: "a\\b\nc", labels: ["v"] }).labels({ v: 'x"y\\z\nw' }).set(1);
    const text = r.render();
    expect(text).toContain("# HELP t_esc a\\\\b\\nc");
    expect(text).toContain('t_esc{v="x\\"y\\\\z\\nw"} 1');
    expect(escapeLabelValue("plain")).toBe("plain");
  });

  test("special float values", () => {
    expect(formatValue(NaN)).toBe("NaN");
    expect(formatValue(Infinity)).toBe("+Inf");
    expect(formatValue(-Infinity)).toBe("-Inf");
    expect(formatValue(0.25)).toBe("0.25");
  });
});

describe("bounded cardinality", () => {
  test("past maxSeries, new combinations share one overflow series and are counted", () => {
    const r = new Registry();
    const c = r.counter({ name: "t_peer_total", help: "Per peer.", labels: ["peer"], maxSeries: 3 });
    for (let i = 0; i < 1000; i++) c.labels({ peer: `10.0.0.${i}` }).inc();
    const text = r.render();
    const series = text.split("\n").filter((l) => l.startsWith("t_peer_total{"));
    expect(series).toHaveLength(4); // 3 real + 1 overflow
    expect(text).toContain('t_peer_total{peer="overflow"} 997');
    expect(text).toContain('dstd_metrics_series_dropped_total{family="t_peer_total"} 997');
  });

  test("a label with a value set records anything else as 'other'", () => {
    const r = new Registry();
    const c = r.counter({ name: "t_op_total", help: "Ops.", labels: ["op"], values: { op: ["read", "write"] } });
    c.labels({ op: "read" }).inc();
    c.labels({ op: "<script>" }).inc();
    c.labels({ op: "delete" }).inc();
    const text = r.render();
    expect(text).toContain('t_op_total{op="other"} 2');
    expect(text).not.toContain("script");
  });

  test("long label values are cut to 128 characters, ending in a hash of the whole value", () => {
    const r = new Registry();
    r.gauge({ name: "t_long", help: "Long.", labels: ["v"] }).labels({ v: "x".repeat(10_000) }).set(1);
    const line = r.render().split("\n").find((l) => l.startsWith("t_long{"))!;
    expect(line).toMatch(new RegExp(`^t_long\\{v="${"x".repeat(115)}~[0-9a-f]{12}"\\} 1$`));
    expect(labelValue("x".repeat(10_000))).toHaveLength(128);
    expect(labelValue("x".repeat(128))).toBe("x".repeat(128));
  });

  test("two long names sharing their first 128 characters stay two series (owned and collected)", () => {
    // Export names may be 4096 bytes (docs/config.md); cut to 128 characters these two were
    // one series: a service vanished from the collected families, counters added up.
    const a = `${"n".repeat(200)}-a`;
    const b = `${"n".repeat(200)}-b`;
    const r = new Registry();
    const ops = r.counter({ name: "t_ops_total", help: "Ops.", labels: ["service"] });
    ops.labels({ service: a }).inc(2);
    ops.labels({ service: b }).inc(5);
    r.collected("gauge", { name: "t_up", help: "Up.", labels: ["service"] }, (emit) => {
      emit({ service: a }, 1);
      emit({ service: b }, 0);
    });
    const text = r.render();
    const lines = (prefix: string) => text.split("\n").filter((l) => l.startsWith(prefix));
    expect(lines("t_ops_total{").map((l) => l.split(" ")[1])).toEqual(["2", "5"]);
    expect(lines("t_up{").map((l) => l.split(" ")[1])).toEqual(["1", "0"]);
    expect(new Set(lines("t_up{").map((l) => l.split(" ")[0])).size).toBe(2);
    expect(lines("t_up{")[0]).toBe(`t_up{service="${labelValue(a)}"} 1`);
    expect(labelValue(a)).not.toBe(labelValue(b));
    expect(text).not.toContain("dstd_metrics_series_dropped_total{");
  });

  test("a sample repeating a series already rendered is dropped and counted", () => {
    const r = new Registry();
    r.collected("gauge", { name: "t_dup", help: "Dup.", labels: ["service"] }, (emit) => {
      emit({ service: "x" }, 1);
      emit({ service: "x" }, 2);
    });
    const text = r.render();
    expect(text.split("\n").filter((l) => l.startsWith("t_dup{"))).toEqual(['t_dup{service="x"} 1']);
    expect(text).toContain('dstd_metrics_series_dropped_total{family="t_dup"} 1');
  });

  test("collected families are bounded too", () => {
    const r = new Registry();
    r.collected("gauge", { name: "t_many", help: "Many.", labels: ["i"], maxSeries: 5 }, (emit) => {
      for (let i = 0; i < 100; i++) emit({ i: String(i) }, i);
    });
    const text = r.render();
    expect(text.split("\n").filter((l) => l.startsWith("t_many{"))).toHaveLength(5);
    expect(text).toContain('dstd_metrics_series_dropped_total{family="t_many"} 95');
  });
});

describe("names are checked when registered (our code's mistakes)", () => {
  const r = new Registry();
  test.each([
    ["counter without _total", () => r.counter({ name: "t_bad", help: "x" })],
    ["gauge ending in _total", () => r.gauge({ name: "t_bad_total", help: "x" })],
    ["histogram ending in _count", () => r.histogram({ name: "t_bad_count", help: "x", buckets: [1] })],
    ["invalid characters", () => r.gauge({ name: "t-bad", help: "x" })],
    ["empty help", () => r.gauge({ name: "t_nohelp", help: " " })],
    ["histogram label le", () => r.histogram({ name: "t_h", help: "x", labels: ["le"], buckets: [1] })],
    ["buckets not increasing", () => r.histogram({ name: "t_h2", help: "x", buckets: [1, 1] })],
    ["infinite bucket", () => r.histogram({ name: "t_h3", help: "x", buckets: [1, Infinity] })],
    ["reserved label name", () => r.gauge({ name: "t_g", help: "x", labels: ["__x"] })],
  ] as const)("%s", (_what, make) => {
    expect(make).toThrow(/assertion failed/);
  });

  test("the same name twice", () => {
    const s = new Registry();
    s.gauge({ name: "t_twice", help: "x" });
    expect(() => s.gauge({ name: "t_twice", help: "x" })).toThrow(/registered twice/);
  });

  test("a missing label value", () => {
    const s = new Registry();
    const c = s.counter({ name: "t_l_total", help: "x", labels: ["a", "b"] });
    expect(() => c.labels({ a: "1" })).toThrow(/label 'b' missing/);
  });

  test("negative counter increments", () => {
    const s = new Registry();
    expect(() => s.counter({ name: "t_n_total", help: "x" }).labels().inc(-1)).toThrow(/non-negative/);
  });
});

describe.skipIf(!haveTools({ promtool: "prometheus" }))("promtool check metrics", () => {
  test("a registry with every type passes", () => {
    const r = new Registry();
    r.counter({ name: "dstd_t_requests_total", help: "Requests by operation.", labels: ["op"] }).labels({ op: "read" }).inc(5);
    r.gauge({ name: "dstd_t_inflight_requests", help: "Requests in flight." }).labels().set(2);
    const h = r.histogram({ name: "dstd_t_request_duration_seconds", help: "Request latency.", labels: ["op"], buckets: LATENCY_BUCKETS });
    for (const v of [0.00005, 0.002, 0.3, 20]) h.labels({ op: "write" }).observe(v);
    r.collected("counter", { name: "dstd_t_bytes_total", help: "Bytes." }, (emit) => emit({}, 123456789));
    const text = r.render();
    const result = promtool(text);
    expect(result.output).toBe("");
    expect(result.exitCode).toBe(0);
    expect(text).toContain("dstd_t_request_duration_seconds_bucket");
  });

  test("canary: promtool does fail on what our assertions keep out", () => {
    const bad = "# HELP t_count x\n# TYPE t_count counter\nt_count 1\n";
    const result = promtool(bad);
    expect(result.exitCode).not.toBe(0);
    expect(result.output).toContain("_total");
  });
});
