/**
 * The `[limits]` table (config/limits.ts): the defaults are pinned here, and must read the same
 * in docs/config.md and in docs/security.md "Resource limits"; bad values are reported with
 * their path; the export node passes them to its guards unchanged.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_CONNECTION_LIMITS } from "../../src/config/defaults.ts";
import { validateConfig } from "../../src/config/validate.ts";

const docs = (name: string) => readFileSync(join(import.meta.dir, "../../docs", name), "utf8");

describe("[limits]", () => {
  test("defaults are pinned", () => {
    expect(DEFAULT_CONNECTION_LIMITS).toEqual({
      handshakeTimeoutMs: 10_000,
      frameTimeoutMs: 30_000,
      maxConnections: 4096,
      maxUnauthenticated: 128,
      maxUnauthenticatedPerSource: 16,
    });
    const result = validateConfig({});
    expect("config" in result && result.config.limits).toEqual({ ...DEFAULT_CONNECTION_LIMITS });
  });

  test("docs/config.md and docs/security.md state the same defaults", () => {
    const expected: Record<string, string> = {
      handshake_timeout: '`"10s"`',
      frame_timeout: '`"30s"`',
      max_connections: "`4096`",
      max_unauthenticated: "`128`",
      max_unauthenticated_per_source: "`16`",
    };
    const config = docs("config.md").split("\n");
    const security = docs("security.md");
    const section = security.slice(security.indexOf("## Resource limits"));
    expect(section.length).toBeGreaterThan(100);
    for (const [key, value] of Object.entries(expected)) {
      expect(config.find((l) => l.startsWith(`| \`${key}\``)) ?? "").toContain(value);
      expect(section.split("\n").find((l) => l.startsWith(`| \`${key}\``)) ?? "").toContain(value);
    }
  });

  test("values are read and bounded, each problem with its path", () => {
    const ok = validateConfig({ limits: { handshake_timeout: "2s", frame_timeout: "500ms", max_connections: 10, max_unauthenticated: 5, max_unauthenticated_per_source: 2 } });
    expect("config" in ok && ok.config.limits).toEqual({
      handshakeTimeoutMs: 2000,
      frameTimeoutMs: 500,
      maxConnections: 10,
      maxUnauthenticated: 5,
      maxUnauthenticatedPerSource: 2,
    });
    const bad = validateConfig({ limits: { handshake_timeout: "1ms", max_connections: 0, max_unauthenticated: "many", handshake: "5s" } });
    expect("issues" in bad).toBe(true);
    const paths = "issues" in bad ? bad.issues.map((i) => i.path) : [];
    expect(paths).toEqual(expect.arrayContaining(["limits.handshake_timeout", "limits.max_connections", "limits.max_unauthenticated", "limits.handshake"]));
    const notTable = validateConfig({ limits: 5 });
    expect("issues" in notTable && notTable.issues[0]!.path).toBe("limits");
  });
});
