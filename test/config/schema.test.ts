/**
 * Config validation against fixtures. Valid fixtures are checked field by field against the
 * resolved Config (units normalized, defaults filled, relative paths resolved). Each invalid
 * fixture lists its expected issues in `# expect: PATH: MESSAGE` comments, and the test
 * asserts the exact list, in order — so adding a mistake to a fixture without its message
 * (or changing a message) fails.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type AllowRule, formatCidr } from "../../src/lib/acl.ts";
import { DEFAULT_ALLOW, DEFAULT_RELIABILITY } from "../../src/config/defaults.ts";
import { formatIssues } from "../../src/config/load.ts";
import type { Config } from "../../src/config/types.ts";
import { validateConfig } from "../../src/config/validate.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/config");
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function load(name: string, baseDir: string | null = "/etc/dstd") {
  return validateConfig(Bun.TOML.parse(readFileSync(join(FIXTURES, name), "utf8")), { baseDir });
}

function valid(name: string): Config {
  const result = load(name);
  if ("issues" in result) throw new Error(formatIssues(result.issues, name));
  return result.config;
}

describe("valid fixtures", () => {
  test("valid-full.toml resolves every key", () => {
    const config = valid("valid-full.toml");
    expect(config.logLevel).toBe("debug");
    expect(config.stateDir).toBe("/etc/dstd/state");
    expect(config.keys.map((k) => [k.identity, k.kind])).toEqual([
      ["alice", "file"],
      ["bob", "secret"],
      ["bob", "file"],
      ["carol", "secret"],
    ]);
    const [alice, bob, , carol] = config.keys;
    expect(alice?.kind === "file" && alice.path).toBe("/etc/dstd/alice.key");
    const counting = Uint8Array.from({ length: 32 }, (_, i) => i);
    expect(bob?.kind === "secret" && bob.secret).toEqual(counting);
    expect(carol?.kind === "secret" && carol.secret).toEqual(counting);

    const [disk, scratch, raw] = config.exports;
    expect(config.exports.length).toBe(3);
    expect(disk?.name).toBe("disk");
    expect(disk?.description).toBe("main disk");
    expect(disk?.backend).toEqual({ kind: "file", path: "/srv/disk.img", sizeBytes: 10 * GiB });
    expect(disk?.listen).toEqual([
      { transport: "tcp", host: "127.0.0.1", port: 10810 },
      { transport: "tcp", host: "::1", port: 10810 },
      { transport: "unix", path: "/run/dstd.sock" },
    ]);
    expect(disk?.nbdListen).toEqual([{ transport: "tcp", host: "127.0.0.1", port: 10809 }]);
    expect(disk?.readOnly).toBe(false);
    const network = (r: AllowRule) => (r.network === "unix" ? "unix" : formatCidr(r.network));
    expect(disk?.allow.map((r) => [r.identity, network(r), r.access])).toEqual([
      [null, "127.0.0.0/8", "rw"],
      ["alice", "10.0.0.0/8", "ro"],
      ["bob", "fd00::/8", "rw"],
      [null, "unix", "rw"],
    ]);
    expect(disk?.allow[2]?.source).toBe("bob@fd00::/8:rw");
    expect(disk?.suites).toEqual(["chacha20-poly1305", "aes-256-gcm"]);
    expect(disk?.checksums).toEqual(["sha256"]);

    expect(scratch?.backend).toEqual({ kind: "memory", sizeBytes: 512 * MiB });
    expect(scratch?.listen).toEqual([{ transport: "tcp", host: "0.0.0.0", port: 10820 }]);
    expect(scratch?.readOnly).toBe(true);
    expect(scratch?.suites).toEqual(["none"]);
    expect(raw?.backend).toEqual({ kind: "device", path: "/dev/sdb" });
    expect(raw?.allow).toEqual([]);
    expect(raw?.checksums).toEqual(["xxh3", "sha256", "blake2b256", "none"]);

    expect(config.client.keyFile).toBe("/etc/dstd/keys/client.key");
    expect(config.client.suites).toEqual(["aes-256-gcm"]);
    expect(config.client.checksums).toEqual(["xxh3", "none"]);
    const client = {
      ...DEFAULT_RELIABILITY,
      maxResends: 8,
      reconnectMaxMs: 30_000,
      keepaliveIntervalMs: 3000,
      replayBufferBytes: 64 * MiB,
    };
    expect(config.client.reliability).toEqual(client);

    const [first, second] = config.attaches;
    expect(first?.url).toEqual({
      protocol: "dst", transport: "tcp", host: "storage-1", port: 10810, exportName: "disk",
    });
    expect(first?.device).toBe("/dev/nbd0");
    expect(first?.nbdListen).toBeNull();
    expect(first?.keyFile).toBe("/etc/dstd/alice.key");
    expect(first?.suites).toEqual(["aes-256-gcm"]);
    expect(first?.checksums).toEqual(["xxh3", "none"]);
    expect(first?.reliability).toEqual({ ...client, resendIntervalMs: 500, inflightMax: 128 });
    expect(second?.url).toEqual({
      protocol: "dst", transport: "unix", path: "/run/dstd.sock", exportName: "scratch",
    });
    expect(second?.device).toBeNull();
    expect(second?.nbdListen).toEqual({ transport: "unix", path: "/run/dstd-nbd.sock" });
    expect(second?.keyFile).toBe("/etc/dstd/keys/client.key");
    expect(second?.suites).toEqual(["none"]);
    expect(second?.reliability).toEqual({
      ...client,
      deadlineMs: 300_000,
      keepaliveTimeoutMs: 30_000,
    });
  });

  test("valid-minimal.toml fills every default", () => {
    expect(DEFAULT_ALLOW).toEqual([]);
    const config = valid("valid-minimal.toml");
    expect(config.logLevel).toBe("info");
    expect(config.stateDir).toBe("/var/lib/dstd");
    expect(config.keys).toEqual([]);
    expect(config.attaches).toEqual([]);
    expect(config.client).toEqual({
      keyFile: null,
      suites: ["aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305"],
      checksums: ["xxh3", "sha256", "blake2b256", "none"],
      reliability: DEFAULT_RELIABILITY,
    });
    const [only] = config.exports;
    expect(only?.name).toBe("disk");
    expect(only?.description).toBe("");
    expect(only?.backend).toEqual({ kind: "file", path: "/srv/disk.img", sizeBytes: null });
    expect(only?.listen).toEqual([{ transport: "tcp", host: "127.0.0.1", port: 10810 }]);
    expect(only?.nbdListen).toEqual([]);
    expect(only?.readOnly).toBe(false);
    expect(only?.allow.map((r) => r.source)).toEqual(["127.0.0.1"]);
    expect(only?.suites).toEqual(["aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305"]);
  });

  test("valid-empty.toml is a valid config with no exports", () => {
    const config = valid("valid-empty.toml");
    expect(config.exports).toEqual([]);
    expect(config.client.reliability).toEqual(DEFAULT_RELIABILITY);
  });

  test("the resolved config is deeply frozen", () => {
    const config = valid("valid-full.toml");
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.exports)).toBe(true);
    expect(Object.isFrozen(config.exports[0]?.allow[0])).toBe(true);
    expect(Object.isFrozen(config.attaches[0]?.reliability)).toBe(true);
    expect(() => (config.exports as unknown[]).push(1)).toThrow();
  });

  test("relative paths stay relative without a base directory", () => {
    const result = load("valid-full.toml", null);
    if ("issues" in result) throw new Error("unexpected issues");
    expect(result.config.stateDir).toBe("state");
    expect(result.config.client.keyFile).toBe("keys/client.key");
  });
});

describe("invalid fixtures report every issue with its path", () => {
  const names = readdirSync(FIXTURES).filter((name) => name.startsWith("invalid-"));
  test("there are invalid fixtures", () => expect(names.length).toBeGreaterThanOrEqual(3));
  for (const name of names) {
    test(name, () => {
      const text = readFileSync(join(FIXTURES, name), "utf8");
      const expected = text
        .split("\n")
        .filter((line) => line.startsWith("# expect: "))
        .map((line) => line.slice("# expect: ".length));
      expect(expected.length).toBeGreaterThan(0);
      const result = validateConfig(Bun.TOML.parse(text), { baseDir: "/etc/dstd" });
      expect("issues" in result).toBe(true);
      const issues = "issues" in result ? result.issues : [];
      const lines = issues.map((i) => (i.path === "" ? i.message : `${i.path}: ${i.message}`));
      expect(lines).toEqual(expected);
    });
  }
});

describe("validateConfig on values built in code", () => {
  test("non-table roots", () => {
    for (const [raw, got] of [
      [null, "nothing"],
      [[], "an array"],
      ["x", 'string "x"'],
      [5, "integer 5"],
    ] as const) {
      expect(validateConfig(raw)).toEqual({
        issues: [{ path: "", message: `expected a table of settings, got ${got}` }],
      });
    }
  });

  test("a CLI-built object validates like TOML", () => {
    const result = validateConfig({
      export: [{ memory: 64 * MiB, listen: "127.0.0.1:0", allow: ["unix"] }],
    });
    if ("issues" in result) throw new Error(formatIssues(result.issues, "cli"));
    expect(result.config.exports[0]?.backend).toEqual({ kind: "memory", sizeBytes: 64 * MiB });
    const listen = result.config.exports[0]?.listen;
    expect(listen).toEqual([{ transport: "tcp", host: "127.0.0.1", port: 0 }]);
  });

  test("__proto__ and other odd keys are reported, not obeyed", () => {
    const raw = Bun.TOML.parse('__proto__ = "x"\n[[export]]\nmemory = "1MiB"\nconstructor = 1\n');
    const result = validateConfig(raw);
    expect(result).toEqual({
      issues: [
        { path: "__proto__", message: "unknown key '__proto__'" },
        { path: "export[0].constructor", message: "unknown key 'constructor'" },
      ],
    });
  });

  test("an export without allow rules admits nobody, and that is not an error", () => {
    const result = validateConfig({ export: [{ memory: "1MiB" }] });
    if ("issues" in result) throw new Error(formatIssues(result.issues, "x"));
    expect(result.config.exports[0]?.allow).toEqual([]);
  });

  test("an allow rule may reference an identity only when a [[key]] defines it", () => {
    const raw = {
      key: [{ identity: "alice", file: "/k" }],
      export: [{ memory: "1MiB", allow: ["alice@unix", "bob@unix:ro"] }],
    };
    const message = 'identity "bob" has no [[key]]; the rule could never match';
    expect(validateConfig(raw)).toEqual({ issues: [{ path: "export[0].allow[1]", message }] });
  });

  test("[client] reliability is inherited by attaches and overridden per attach", () => {
    const result = validateConfig({
      client: { reliability: { inflight: 8 }, key_file: "/c.key" },
      attach: [{ url: "dst://h/d", inflight: 16 }, { url: "dst://h/e", key_file: "/a.key" }],
    });
    if ("issues" in result) throw new Error(formatIssues(result.issues, "x"));
    expect(result.config.attaches.map((a) => [a.reliability.inflightMax, a.keyFile])).toEqual([
      [16, "/c.key"],
      [8, "/a.key"],
    ]);
  });
});
