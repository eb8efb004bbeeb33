/**
 * @module config/access — the `allow` list of an [[export]] (who may connect) and the
 * `suites` / `checksums` preference lists (export: allowed; client and attach: offered).
 * Rule syntax and matching live in lib/acl.ts; this file only maps TOML values (strings or
 * tables) onto it. Pure.
 */
import { type AllowRule, formatCidr, parseAllowRule, parseCidr } from "../lib/acl.ts";
import { quoteInput } from "../lib/size.ts";
import { CHECKSUM_NAMES, DEFAULT_CHECKSUMS } from "../crypto/checksum.ts";
import { DEFAULT_SUITES, SUITE_NAMES } from "../crypto/suites.ts";
import { DEFAULT_ALLOW } from "./defaults.ts";
import {
  checkKeys,
  describe,
  get,
  type Issues,
  isTable,
  join,
  readEnum,
  readIdentity,
  readString,
  readStringList,
} from "./fields.ts";
import type { ChecksumName, SuiteName } from "./types.ts";

export const ALLOW_TABLE_KEYS = ["identity", "network", "access"] as const;

/**
 * Allow rules: absent → DEFAULT_ALLOW; `[]` → nobody. Rules naming an
 * identity without a [[key]] are errors: such a rule could never match, so it is a typo.
 */
export function readAllow(
  value: unknown,
  path: string,
  identities: ReadonlySet<string>,
  issues: Issues,
): AllowRule[] | undefined {
  if (value === undefined) return DEFAULT_ALLOW.map((text) => parseAllowRule(text) as AllowRule);
  if (!Array.isArray(value) && typeof value !== "string") {
    issues.add(path, `expected a list of allow rules, got ${describe(value)}`);
    return undefined;
  }
  const items: unknown[] = Array.isArray(value) ? value : [value];
  const rules: AllowRule[] = [];
  let ok = true;
  items.forEach((item, index) => {
    const itemPath = Array.isArray(value) ? `${path}[${index}]` : path;
    const rule = readAllowItem(item, itemPath, issues);
    if (rule !== undefined && rule.identity !== null && !identities.has(rule.identity)) {
      const who = quoteInput(rule.identity);
      issues.add(itemPath, `identity ${who} has no [[key]]; the rule could never match`);
      ok = false;
    } else if (rule === undefined) ok = false;
    else rules.push(rule);
  });
  return ok ? rules : undefined;
}

function readAllowItem(item: unknown, path: string, issues: Issues): AllowRule | undefined {
  if (typeof item === "string") {
    const rule = parseAllowRule(item);
    if (typeof rule !== "string") return rule;
    issues.add(path, rule);
    return undefined;
  }
  if (!isTable(item)) {
    const got = describe(item);
    issues.add(path, `expected a rule string or a table {network, identity, access}, got ${got}`);
    return undefined;
  }
  checkKeys(item, ALLOW_TABLE_KEYS, path, issues);
  const identity = readIdentity(get(item, "identity"), join(path, "identity"), issues);
  const access = readEnum(get(item, "access"), ["ro", "rw", "replica"] as const, join(path, "access"), issues);
  const networkPath = join(path, "network");
  const networkText = readString(get(item, "network"), networkPath, issues);
  if (get(item, "network") === undefined) {
    issues.add(networkPath, 'missing network (a CIDR or "unix")');
  }
  if (networkText === undefined) return undefined;
  const cidr = networkText === "unix" ? null : parseCidr(networkText);
  if (typeof cidr === "string") {
    issues.add(networkPath, cidr);
    return undefined;
  }
  if (access === undefined && get(item, "access") !== undefined) return undefined;
  if (identity === undefined && get(item, "identity") !== undefined) return undefined;
  const network = cidr ?? "unix";
  const who = identity === undefined ? "" : `${identity}@`;
  const where = network === "unix" ? "unix" : formatCidr(network);
  const source = `${who}${where}:${access ?? "rw"}`;
  return { identity: identity ?? null, network, access: access ?? "rw", source };
}

/** Security suites (docs/security.md §5), in preference order. */
export function readSuites(value: unknown, path: string, issues: Issues): SuiteName[] | undefined {
  return readChoices(value, path, "suite", SUITE_NAMES, DEFAULT_SUITES, issues);
}

/** End-to-end checksums (docs/security.md §6), in preference order. */
export function readChecksums(
  value: unknown,
  path: string,
  issues: Issues,
): ChecksumName[] | undefined {
  return readChoices(value, path, "checksum", CHECKSUM_NAMES, DEFAULT_CHECKSUMS, issues);
}

/** A preference list of names: known names, no repeats, at least one; absent → defaults. */
function readChoices<T extends string>(
  value: unknown,
  path: string,
  what: string,
  names: readonly T[],
  defaults: readonly T[],
  issues: Issues,
): T[] | undefined {
  if (value === undefined) return [...defaults];
  const items = readStringList(value, path, issues);
  if (items === undefined) return undefined;
  if (Array.isArray(value) && value.length === 0) {
    issues.add(path, `list at least one ${what} (${names.join(", ")})`);
    return undefined;
  }
  const chosen: T[] = [];
  let ok = items.length === (Array.isArray(value) ? value.length : 1);
  for (const item of items) {
    const name = readEnum(item.text, names, item.path, issues);
    if (name === undefined) ok = false;
    else if (chosen.includes(name)) {
      issues.add(item.path, `${what} ${name} is listed twice`);
      ok = false;
    } else chosen.push(name);
  }
  return ok ? chosen : undefined;
}
