/**
 * Config fuzzing. Methodology: three generators, all driven by a seeded Prng so any failure
 * replays from the printed seed (FUZZ_SEED=<n>), FUZZ_ITERATIONS per generator (default
 * 5000):
 *
 * 1. Mutated TOML: the fixture files cut, duplicated, spliced and sprinkled with TOML
 *    punctuation, then Bun.TOML.parse → validateConfig, and (for a tenth of the cases)
 *    parseConfigText, which must fail only with ConfigError.
 * 2. Random JS values shaped like the schema (real key names, sometimes misspelt) holding
 *    values of every JS type, including NaN, ±Infinity, bigint, symbols, functions, typed
 *    arrays, Dates, null-prototype objects and huge strings.
 * 3. The lib parsers the config is built on, fed random and near-miss strings.
 *
 * Invariants: nothing throws; validateConfig returns either a frozen config or a non-empty
 * issue list whose paths and messages are non-empty strings of bounded length (user input
 * is quoted and cut, so a megabyte value cannot make a megabyte log line).
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, parseConfigText } from "../../src/config/load.ts";
import { knownKeys, validateConfig } from "../../src/config/validate.ts";
import { matchAllow, parseAllowRule, parseCidr } from "../../src/lib/acl.ts";
import { parseExportUrl, parseListenAddress } from "../../src/lib/address.ts";
import { parseDuration } from "../../src/lib/duration.ts";
import { Prng } from "../../src/lib/prng.ts";
import { parseSize } from "../../src/lib/size.ts";

const ITERATIONS = Number(process.env.FUZZ_ITERATIONS ?? 5000);
const SEED = Number(process.env.FUZZ_SEED ?? 20240601);
const MESSAGE_MAX = 600;
/** bun:test's 5 s default is for 5000 iterations; scale it for long FUZZ_ITERATIONS runs. */
const TIMEOUT_MS = Math.max(20_000, ITERATIONS * 2);
const FIXTURES = join(import.meta.dir, "../fixtures/config");
const SAMPLES = readdirSync(FIXTURES)
  .filter((name) => name.endsWith(".toml"))
  .map((name) => readFileSync(join(FIXTURES, name), "utf8"));

const ALL_KEYS = [...new Set(Object.values(knownKeys()).flat())];
/** Strings that are valid (or nearly valid) somewhere in the schema. */
const MEANINGFUL = [
  ...["10GiB", "10 GB", "1.5GiB", "0", "-1", "2s", "500ms", "1h30m", "5", "dst://h/d"],
  ...["nbd+unix:///?socket=/s", "127.0.0.1:10810", "[::1]:1", "::1:80", "unix:/run/x"],
  ...["10.0.0.0/8:ro", "alice@unix", "::/0", "aes-256-gcm", "none", "info", "/srv/disk.img"],
  ...["relative/path", "", " ", "\0", "é", "x".repeat(5000), "%00", "[", "]", "@", ":"],
];
const PUNCTUATION = [
  ...["=", "[", "]", "[[", "]]", "{", "}", ",", '"', "'", '"""', "\n", "#", ".", "-"],
  ...["inf", "nan"],
];

/** Run `body` with a fresh Prng per iteration seed; report the seed on failure. */
function forEachSeed(label: string, body: (prng: Prng) => void): void {
  for (let i = 0; i < ITERATIONS; i++) {
    const seed = SEED + i;
    try {
      body(new Prng(seed));
    } catch (error) {
      const replay = `FUZZ_SEED=${seed} FUZZ_ITERATIONS=1`;
      throw new Error(`${label}: seed ${seed} (replay: ${replay}): ${String(error)}`);
    }
  }
}

function checkResult(raw: unknown): void {
  const result = validateConfig(raw, { baseDir: "/etc/dstd" });
  if ("config" in result) {
    if (!Object.isFrozen(result.config)) throw new Error("config not frozen");
    return;
  }
  if (result.issues.length === 0) throw new Error("no config and no issues");
  for (const issue of result.issues) {
    const wellFormed = typeof issue.path === "string" && typeof issue.message === "string";
    if (!wellFormed || issue.message === "") {
      throw new Error(`malformed issue ${JSON.stringify(issue)}`);
    }
    if (issue.message.length > MESSAGE_MAX || issue.path.length > MESSAGE_MAX) {
      throw new Error(`unbounded issue text: ${issue.path}: ${issue.message.slice(0, 200)}`);
    }
  }
}

function randomText(prng: Prng, max: number): string {
  const length = prng.int(max + 1);
  let out = "";
  for (let i = 0; i < length; i++) {
    const code = prng.chance(0.8) ? 32 + prng.int(95) : prng.int(0x3000);
    out += String.fromCharCode(code);
  }
  return out;
}

function mutate(prng: Prng, text: string): string {
  let out = text;
  const steps = 1 + prng.int(4);
  for (let step = 0; step < steps; step++) {
    const at = prng.int(out.length + 1);
    const span = prng.int(Math.min(40, out.length - at) + 1);
    switch (prng.int(5)) {
      case 0:
        out = out.slice(0, at) + out.slice(at + span);
        break;
      case 1:
        out = out.slice(0, at) + out.slice(at, at + span) + out.slice(at);
        break;
      case 2:
        out = out.slice(0, at) + prng.pick(PUNCTUATION) + out.slice(at);
        break;
      case 3:
        const line = `${prng.pick(ALL_KEYS)} = ${JSON.stringify(prng.pick(MEANINGFUL))}\n`;
        out = out.slice(0, at) + line + out.slice(at);
        break;
      default:
        out = out.slice(0, at) + randomText(prng, 8) + out.slice(at + span);
    }
  }
  return out;
}

function randomScalar(prng: Prng): unknown {
  switch (prng.int(16)) {
    case 0: return prng.pick(MEANINGFUL);
    case 1: return randomText(prng, 20);
    case 2: return prng.int(2 ** 32) - 2 ** 31;
    case 3: return prng.pick([Number.NaN, Infinity, -Infinity, -0, 1.5, 2 ** 53, 1e308, 1e-300]);
    case 4: return prng.chance(0.5);
    case 5: return null;
    case 6: return undefined;
    case 7: return BigInt(prng.int(1000));
    case 8: return Symbol("s");
    case 9: return () => 1;
    case 10: return new Date(0);
    case 11: return prng.bytes(prng.int(40));
    case 12: return Object.create(null);
    case 13: return { __proto__: { file: "/inherited" } };
    case 14: return "x".repeat(prng.int(100_000));
    default: return prng.int(1 << 30);
  }
}

function randomValue(prng: Prng, depth: number): unknown {
  if (depth > 3 || prng.chance(0.45)) return randomScalar(prng);
  if (prng.chance(0.5)) {
    return Array.from({ length: prng.int(4) }, () => randomValue(prng, depth + 1));
  }
  return randomTable(prng, depth + 1);
}

function randomTable(prng: Prng, depth: number): Record<string, unknown> {
  const table: Record<string, unknown> = {};
  const count = prng.int(6);
  for (let i = 0; i < count; i++) {
    let key = prng.pick(ALL_KEYS);
    if (prng.chance(0.1)) key = key.slice(1) + prng.pick(["s", "_", "e"]);
    if (prng.chance(0.03)) key = prng.pick(["__proto__", "constructor", "toString", ""]);
    // defineProperty, so "__proto__" becomes an own key as Bun.TOML.parse makes it.
    const value = randomValue(prng, depth);
    const descriptor = { value, enumerable: true, writable: true, configurable: true };
    Object.defineProperty(table, key, descriptor);
  }
  return table;
}

/** A schema-shaped config: real sections holding arrays of random tables. */
function randomConfig(prng: Prng): unknown {
  const config = randomTable(prng, 2);
  for (const section of ["key", "export", "attach"]) {
    if (prng.chance(0.4)) continue;
    config[section] = Array.from({ length: prng.int(3) }, () => randomTable(prng, 2));
  }
  if (prng.chance(0.5)) config.client = randomTable(prng, 2);
  return prng.chance(0.03) ? randomValue(prng, 0) : config;
}

describe(`config fuzz (${ITERATIONS} iterations per generator, seed ${SEED})`, () => {
  test("mutated TOML text never escapes as an exception", () => {
    let parsed = 0;
    let valid = 0;
    forEachSeed("toml", (prng) => {
      const text = mutate(prng, prng.pick(SAMPLES));
      let raw: unknown;
      try {
        raw = Bun.TOML.parse(text);
      } catch {
        raw = undefined;
      }
      if (raw !== undefined) {
        parsed++;
        checkResult(raw);
        if ("config" in validateConfig(raw)) valid++;
      }
      if (prng.chance(0.1)) {
        try {
          parseConfigText(text, "fuzz.toml");
        } catch (error) {
          if (!(error instanceof ConfigError)) throw error;
        }
      }
    });
    // The generator must reach the validator, not just the TOML parser, to be worth running.
    expect(parsed).toBeGreaterThan(ITERATIONS / 10);
    expect(valid).toBeGreaterThan(0);
  }, TIMEOUT_MS);

  test("random JS values never make validateConfig throw", () => {
    forEachSeed("values", (prng) => checkResult(randomConfig(prng)));
  }, TIMEOUT_MS);

  test("lib parsers return a value or a reason for any string", () => {
    const rules = ["0.0.0.0/0:ro", "::/0", "unix", "alice@10.0.0.0/8"]
      .map((text) => parseAllowRule(text))
      .filter((rule) => typeof rule !== "string");
    forEachSeed("parsers", (prng) => {
      const base = prng.pick(MEANINGFUL);
      const text = prng.chance(0.5) ? mutate(prng, base).slice(0, 200) : randomText(prng, 30);
      for (const result of [
        parseSize(text),
        parseDuration(text),
        parseListenAddress(text, 1),
        parseExportUrl(text),
        parseAllowRule(text),
        parseCidr(text),
      ]) {
        if (typeof result === "string" && (result === "" || result.length > MESSAGE_MAX)) {
          throw new Error(`bad reason for ${JSON.stringify(text)}: ${result.slice(0, 200)}`);
        }
        if (typeof result === "number" && !Number.isSafeInteger(result)) {
          throw new Error(`bad number ${result}`);
        }
      }
      const peer = { transport: "tcp" as const, address: text };
      const access = matchAllow(rules, peer, prng.pick([null, "alice"]));
      if (access !== null && access !== "ro" && access !== "rw") throw new Error("bad access");
    });
  }, TIMEOUT_MS);
});
