/**
 * @module config/fields — typed readers for one value of a parsed TOML table. Each reader
 * takes `unknown` (any TOML value, or any JS value a caller built), returns the typed value
 * or undefined, and records every problem as a ConfigIssue with its path. Readers never
 * throw: a config with twenty mistakes gets twenty issues in one run. No I/O.
 */
import { isAbsolute, resolve } from "node:path";
import { IDENTITY_RULE, isValidIdentity } from "../lib/acl.ts";
import { formatDuration, parseDuration } from "../lib/duration.ts";
import { formatSize, parseSize, quoteInput } from "../lib/size.ts";
import type { ConfigIssue } from "./types.ts";

export type Table = Record<string, unknown>;

/** Collects issues and carries per-run options (the directory relative paths start from). */
export class Issues {
  readonly list: ConfigIssue[] = [];
  constructor(readonly baseDir: string | null) {}
  add(path: string, message: string): void {
    this.list.push({ path, message });
  }
}

export function isTable(value: unknown): value is Table {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function join(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

/** What a value is, for "expected X, got Y" messages. */
export function describe(value: unknown): string {
  if (value === null || value === undefined) return "nothing";
  if (typeof value === "string") return `string ${quoteInput(value)}`;
  if (typeof value === "number") {
    if (Number.isInteger(value)) return `integer ${value}`;
    if (Number.isNaN(value)) return "float nan";
    return Number.isFinite(value) ? `float ${value}` : `float ${value > 0 ? "" : "-"}inf`;
  }
  if (typeof value === "boolean") return `boolean ${value}`;
  if (Array.isArray(value)) return "an array";
  if (isTable(value)) return "a table";
  return typeof value;
}

/** Edit distance (Levenshtein), small inputs only: config keys. */
export function editDistance(a: string, b: string): number {
  if (a.length > 64 || b.length > 64) return Math.abs(a.length - b.length) + 64;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      const deletion = (previous[j] ?? 0) + 1;
      const insertion = (current[j - 1] ?? 0) + 1;
      current.push(Math.min(deletion, insertion, (previous[j - 1] ?? 0) + cost));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** The known key closest to `key`, if it is close enough to be a likely typo. */
export function suggest(key: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of known) {
    const distance = editDistance(key.toLowerCase(), candidate);
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  // Short keys tolerate one edit, longer ones two: "sise" → "size", but "ab" suggests nothing.
  return bestDistance <= (key.length <= 3 ? 1 : 2) ? best : null;
}

/** Report every key of `table` that is not in `known`, with a did-you-mean when one fits. */
export function checkKeys(
  table: Table,
  known: readonly string[],
  path: string,
  issues: Issues,
): void {
  for (const key of Object.keys(table)) {
    if (known.includes(key)) continue;
    const guess = suggest(key, known);
    const hint = guess === null ? "" : ` (did you mean '${guess}'?)`;
    issues.add(join(path, key), `unknown key '${key.slice(0, 64)}'${hint}`);
  }
}

/** Own, present value of `key` (TOML has no null, so undefined means absent). */
export function get(table: Table, key: string): unknown {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

export function readString(value: unknown, path: string, issues: Issues): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string") return value;
  issues.add(path, `expected a string, got ${describe(value)}`);
  return undefined;
}

/** An identity name ([[key]] identity, allow-rule identity): see lib/acl.ts. */
export function readIdentity(value: unknown, path: string, issues: Issues): string | undefined {
  const text = readString(value, path, issues);
  if (text === undefined || isValidIdentity(text)) return text;
  issues.add(path, `identity ${quoteInput(text)} must be ${IDENTITY_RULE}`);
  return undefined;
}

export function readBoolean(value: unknown, path: string, issues: Issues): boolean | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "boolean") return value;
  issues.add(path, `expected true or false, got ${describe(value)}`);
  return undefined;
}

export function readInteger(
  value: unknown,
  bounds: { min: number; max: number },
  path: string,
  issues: Issues,
): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    issues.add(path, `expected an integer, got ${describe(value)}`);
    return undefined;
  }
  if (value < bounds.min || value > bounds.max) {
    issues.add(path, `${value} is out of range; use ${bounds.min}..${bounds.max}`);
    return undefined;
  }
  return value;
}

export function readEnum<T extends string>(
  value: unknown,
  allowed: readonly T[],
  path: string,
  issues: Issues,
): T | undefined {
  const text = readString(value, path, issues);
  if (text === undefined) return undefined;
  const found = allowed.find((candidate) => candidate === text);
  if (found === undefined) {
    issues.add(path, `${quoteInput(text)} is not one of ${allowed.join(", ")}`);
  }
  return found;
}

/** Size: a string with a binary unit ("10GiB") or an integer byte count. */
export function readSize(
  value: unknown,
  min: number,
  path: string,
  issues: Issues,
): number | undefined {
  if (value === undefined) return undefined;
  let bytes: number | string;
  if (typeof value === "string") bytes = parseSize(value);
  else if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) bytes = value;
  else bytes = `expected a size such as "10GiB" or a byte count, got ${describe(value)}`;
  if (typeof bytes === "string") {
    issues.add(path, bytes);
    return undefined;
  }
  if (bytes < min) {
    const minimum = formatSize(min);
    issues.add(path, `${quoteInput(String(value))} is too small; the minimum is ${minimum}`);
    return undefined;
  }
  return bytes;
}

/** Duration: a string with a unit ("2s", "500ms"); integers are refused (which unit?). */
export function readDuration(
  value: unknown,
  bounds: { min: number; max: number },
  path: string,
  issues: Issues,
): number | undefined {
  if (value === undefined) return undefined;
  const ms =
    typeof value === "string"
      ? parseDuration(value)
      : `expected a duration such as "2s" or "500ms", got ${describe(value)}`;
  if (typeof ms === "string") {
    issues.add(path, ms);
    return undefined;
  }
  if (ms < bounds.min || ms > bounds.max) {
    const range = `${formatDuration(bounds.min)}..${formatDuration(bounds.max)}`;
    issues.add(path, `${quoteInput(String(value))} is out of range; use ${range}`);
    return undefined;
  }
  return ms;
}

/**
 * A filesystem path: non-empty, no NUL. Relative paths are resolved against the config
 * file's directory (Issues.baseDir) when there is one, so a config can be moved as a unit.
 */
export function readPath(
  value: unknown,
  path: string,
  issues: Issues,
  options: { absolute?: boolean } = {},
): string | undefined {
  const text = readString(value, path, issues);
  if (text === undefined) return undefined;
  if (text === "" || text.includes("\0")) {
    issues.add(path, text === "" ? "empty path" : "path contains a NUL character");
    return undefined;
  }
  if (isAbsolute(text)) return text;
  if (options.absolute === true) {
    issues.add(path, `${quoteInput(text)} must be an absolute path`);
    return undefined;
  }
  return issues.baseDir === null ? text : resolve(issues.baseDir, text);
}

/** A list of strings; a single string is accepted as a list of one. */
export function readStringList(
  value: unknown,
  path: string,
  issues: Issues,
): { text: string; path: string }[] | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string") return [{ text: value, path }];
  if (!Array.isArray(value)) {
    issues.add(path, `expected a list of strings, got ${describe(value)}`);
    return undefined;
  }
  const out: { text: string; path: string }[] = [];
  value.forEach((item: unknown, index) => {
    const itemPath = `${path}[${index}]`;
    const text = readString(item, itemPath, issues);
    if (text !== undefined) out.push({ text, path: itemPath });
  });
  return out;
}

/**
 * An array of tables ([[export]], [[key]], [[attach]]). A single table (the common slip
 * `[export]` for `[[export]]`) gets a specific message; each element must be a table.
 */
export function readTableArray(
  value: unknown,
  name: string,
  issues: Issues,
): { table: Table; path: string }[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    const hint = isTable(value) ? `; write [[${name}]], not [${name}]` : "";
    issues.add(name, `expected an array of tables, got ${describe(value)}${hint}`);
    return [];
  }
  const out: { table: Table; path: string }[] = [];
  value.forEach((item: unknown, index) => {
    const path = `${name}[${index}]`;
    if (isTable(item)) out.push({ table: item, path });
    else issues.add(path, `expected a table, got ${describe(item)}`);
  });
  return out;
}

/** Freeze plain objects and arrays recursively (typed arrays cannot be frozen; skip them). */
export function deepFreeze<T>(value: T): T {
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value)) return value;
  for (const child of Object.values(value)) deepFreeze(child);
  return Object.freeze(value);
}
