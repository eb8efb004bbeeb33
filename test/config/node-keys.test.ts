/**
 * The top-level keys `dstd up` adds: `log_format` (text|json) and `metrics_listen` (one TCP
 * listen address, default port 9810; Unix sockets refused with the reason).
 */
import { describe, expect, test } from "bun:test";
import { validateConfig } from "../../src/config/validate.ts";

const issues = (raw: unknown) => {
  const result = validateConfig(raw);
  return "issues" in result ? result.issues.map((i) => `${i.path}: ${i.message}`) : [];
};
const config = (raw: unknown) => {
  const result = validateConfig(raw);
  if (!("config" in result)) throw new Error(JSON.stringify(result.issues));
  return result.config;
};

describe("log_format and metrics_listen", () => {
  test("defaults: text, no metrics", () => {
    expect(config({}).logFormat).toBe("text");
    expect(config({}).metricsListen).toBeNull();
  });

  test("values", () => {
    expect(config({ log_format: "json" }).logFormat).toBe("json");
    expect(config({ metrics_listen: "127.0.0.1" }).metricsListen).toEqual({ transport: "tcp", host: "127.0.0.1", port: 9810 });
    expect(config({ metrics_listen: "[::1]:9100" }).metricsListen).toEqual({ transport: "tcp", host: "::1", port: 9100 });
  });

  test("mistakes are named", () => {
    expect(issues({ log_format: "xml" })).toEqual(['log_format: "xml" is not one of text, json']);
    expect(issues({ metrics_listen: "unix:/run/m.sock" })[0]).toContain("metrics_listen: metrics are served over TCP only");
    expect(issues({ metrics_listen: "127.0.0.1:99999" })[0]).toMatch(/^metrics_listen: /);
    expect(issues({ metrics_listen: 9810 })).toEqual(["metrics_listen: expected a string, got integer 9810"]);
  });
});
