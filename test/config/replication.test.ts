/**
 * `[export.replication]` (src/config/replication.ts, docs/config.md): defaults, the secondary's
 * required peer, keys that belong to the other role, `compress` and `bandwidth`, and the `replica`
 * allow access in string and table form.
 */
import { describe, expect, test } from "bun:test";
import { validateConfig } from "../../src/config/validate.ts";
import { DEFAULT_LOG_SIZE } from "../../src/config/replication.ts";

const exportWith = (replication: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  export: [{ memory: "64MiB", allow: ["127.0.0.1:rw"], replication, ...extra }],
});

function issues(raw: Record<string, unknown>): string[] {
  const result = validateConfig(raw, { baseDir: "/etc/dstd" });
  return "issues" in result ? result.issues.map((i) => `${i.path}: ${i.message}`) : [];
}

describe("[export.replication]", () => {
  test("a primary: log_dir resolved against the config's folder, default size, no peer", () => {
    const result = validateConfig(exportWith({ log_dir: "disk.log" }), { baseDir: "/etc/dstd" });
    if ("issues" in result) throw new Error(JSON.stringify(result.issues));
    expect(result.config.exports[0]!.replication).toEqual({ logDir: "/etc/dstd/disk.log", logSize: DEFAULT_LOG_SIZE, role: "primary", peer: null, keyFile: null, replayDelayMs: 0, compress: false, bandwidth: 0 });
  });

  test("a secondary: peer, key_file, replay_delay", () => {
    const result = validateConfig(exportWith({ log_dir: "/l", role: "secondary", peer: "dst://10.0.0.1:10810/disk", key_file: "b.key", replay_delay: "10m" }));
    if ("issues" in result) throw new Error(JSON.stringify(result.issues));
    const r = result.config.exports[0]!.replication!;
    expect(r.role).toBe("secondary");
    expect(r.peer).toMatchObject({ protocol: "dst", host: "10.0.0.1", port: 10810, exportName: "disk" });
    expect(r.replayDelayMs).toBe(600_000);
    expect([r.compress, r.bandwidth]).toEqual([false, 0]);
  });

  test("a secondary: compress and a bandwidth cap", () => {
    const result = validateConfig(exportWith({ log_dir: "/l", role: "secondary", peer: "dst://h/d", compress: true, bandwidth: "20MiB/s" }));
    if ("issues" in result) throw new Error(JSON.stringify(result.issues));
    const r = result.config.exports[0]!.replication!;
    expect([r.compress, r.bandwidth]).toEqual([true, 20 * 1024 * 1024]);
    const secondary = { log_dir: "/l", role: "secondary", peer: "dst://h/d" };
    expect(issues(exportWith({ ...secondary, bandwidth: "20MiB" }))).toEqual(['export[0].replication.bandwidth: "20MiB" is not a rate; use e.g. "20MiB/s"']);
    expect(issues(exportWith({ ...secondary, bandwidth: "1KiB/s" }))[0]).toContain("below the smallest cap, 64KiB/s");
    expect(issues(exportWith({ ...secondary, bandwidth: "20MB/s" }))[0]).toContain("decimal units");
    expect(issues(exportWith({ ...secondary, bandwidth: 1000 }))[0]).toContain('expected a rate such as "20MiB/s"');
  });

  test("what is refused, each with its path", () => {
    expect(issues(exportWith({ role: "secondary" }))).toEqual([
      "export[0].replication.log_dir: missing log_dir: the directory of the replication log",
      'export[0].replication.peer: a secondary needs peer = "dst://HOST:PORT/NAME" (its primary)',
    ]);
    expect(issues(exportWith({ log_dir: "/l", replay_delay: "1s" }))).toEqual(['export[0].replication.replay_delay: replay_delay is for role = "secondary"']);
    expect(issues(exportWith({ log_dir: "/l", role: "secondary", peer: "dst://h/d", log_size: "1GiB" }))).toEqual([
      'export[0].replication.log_size: log_size is for role = "primary" (a secondary keeps only what it has not applied)',
    ]);
    expect(issues(exportWith({ log_dir: "/l", log_size: "1MiB" }))[0]).toContain("too small");
    expect(issues(exportWith({ log_dir: "/l", compress: true }))).toEqual(['export[0].replication.compress: compress is for role = "secondary"']);
    expect(issues(exportWith({ log_dir: "/l", bandwidth: "1MiB/s" }))).toEqual(['export[0].replication.bandwidth: bandwidth is for role = "secondary"']);
    expect(issues(exportWith({ log_dir: "/l", role: "tertiary" }))[0]).toContain("is not one of primary, secondary");
    expect(issues(exportWith({ log_dir: "/l", role: "secondary", peer: "nbd://h/d" }))[0]).toContain("the primary is a DST export");
    expect(issues(exportWith({ log_dir: "/l", colour: "red" }))[0]).toContain("unknown key 'colour'");
  });

  test("allow access replica, as a string and as a table", () => {
    const result = validateConfig({
      key: [{ identity: "site-b", secret: "11".repeat(32) }],
      export: [{ memory: "64MiB", allow: ["site-b@10.0.0.0/8:replica", { identity: "site-b", network: "::1", access: "replica" }], replication: { log_dir: "/l" } }],
    });
    if ("issues" in result) throw new Error(JSON.stringify(result.issues));
    expect(result.config.exports[0]!.allow.map((r) => r.access)).toEqual(["replica", "replica"]);
  });
});
