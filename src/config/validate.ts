/**
 * @module config/validate — the root of config/: validateConfig turns parsed TOML (or any
 * value) into a frozen Config, or returns EVERY issue with its path, in file order. It reads
 * the top-level keys itself and hands each section to its reader (sections.ts, reliability.ts,
 * limits.ts). Pure: no I/O (config/load.ts reads files), never throws. The shape and the key
 * table are in config/types.ts.
 */
import { REPLICATION_KEYS } from "./replication.ts";
import { type ListenAddress, parseListenAddress } from "../lib/address.ts";
import { LOG_FORMATS, LOG_LEVELS } from "../lib/log.ts";
import { ALLOW_TABLE_KEYS } from "./access.ts";
import {
  DEFAULT_CRYPTO_THREADS,
  DEFAULT_LOG_FORMAT,
  DEFAULT_LOG_LEVEL,
  DEFAULT_METRICS_PORT,
  DEFAULT_STATE_DIR,
  LIMITS,
} from "./defaults.ts";
import {
  checkKeys,
  deepFreeze,
  describe,
  get,
  Issues,
  isTable,
  readEnum,
  readInteger,
  readPath,
  readString,
} from "./fields.ts";
import { LIMITS_KEYS, readLimits } from "./limits.ts";
import {
  ATTACH_KEYS,
  CLIENT_KEYS,
  readAttaches,
  readClient,
  RELIABILITY_KEYS,
} from "./reliability.ts";
import { EXPORT_KEYS, KEY_KEYS, readExports, readKeys } from "./sections.ts";
import { checkOwnExportLegs, checkStorageUses } from "./storage-uses.ts";
import { checkListenUses } from "./listen-uses.ts";
import { TREE_KEYS } from "./tree.ts";
import type { Config, ConfigIssue, ValidateOptions } from "./types.ts";

export const TOP_KEYS = ["log_level", "state_dir", "log_format", "metrics_listen", "crypto_threads", "key", "export", "attach", "client", "limits"] as const;

/** Validate parsed TOML (or any value) into a frozen Config, or list every issue found. */
export function validateConfig(
  raw: unknown,
  options: ValidateOptions = {},
): { config: Config } | { issues: ConfigIssue[] } {
  const issues = new Issues(options.baseDir ?? null);
  if (!isTable(raw)) {
    issues.add("", `expected a table of settings, got ${describe(raw)}`);
    return { issues: issues.list };
  }
  checkKeys(raw, TOP_KEYS, "", issues);
  const logLevel = readEnum(get(raw, "log_level"), LOG_LEVELS, "log_level", issues);
  const stateDir = readPath(get(raw, "state_dir"), "state_dir", issues);
  const logFormat = readEnum(get(raw, "log_format"), LOG_FORMATS, "log_format", issues);
  const metricsListen = readMetricsListen(get(raw, "metrics_listen"), issues);
  const cryptoThreads = readInteger(get(raw, "crypto_threads"), LIMITS.cryptoThreads, "crypto_threads", issues);
  const { keys, identities } = readKeys(get(raw, "key"), issues);
  const client = readClient(get(raw, "client"), issues);
  const exports = readExports(get(raw, "export"), identities, issues, client);
  const attaches = readAttaches(get(raw, "attach"), client, issues);
  const limits = readLimits(get(raw, "limits"), issues);
  if (issues.list.length === 0) {
    checkStorageUses(exports, issues);
    checkOwnExportLegs(exports, issues);
    checkListenUses(exports, attaches, metricsListen ?? null, issues);
  }
  if (issues.list.length > 0) return { issues: sortIssues(issues.list) };
  const config: Config = {
    logLevel: logLevel ?? DEFAULT_LOG_LEVEL,
    stateDir: stateDir ?? DEFAULT_STATE_DIR,
    logFormat: logFormat ?? DEFAULT_LOG_FORMAT,
    metricsListen: metricsListen ?? null,
    cryptoThreads: cryptoThreads ?? DEFAULT_CRYPTO_THREADS,
    keys,
    exports,
    attaches,
    client,
    limits,
  };
  return { config: deepFreeze(config) };
}

/**
 * Issues in file order of sections (top-level keys, [[key]], [[export]], [[attach]],
 * [client]) and of tables within a section, rather than validation order ([client] is read
 * first because attaches inherit from it). Stable: one table's issues keep their order.
 */
function sortIssues(list: ConfigIssue[]): ConfigIssue[] {
  const order = ["", "log_level", "state_dir", "log_format", "metrics_listen", "crypto_threads", "key", "export", "attach", "client", "limits"];
  const rank = (issue: ConfigIssue): [number, number] => {
    const match = /^([a-z_]*)(?:\[(\d+)\])?/.exec(issue.path);
    const index = order.indexOf(match?.[1] ?? "");
    return [index < 0 ? 1 : index, Number(match?.[2] ?? -1)];
  };
  const ranked = list.map((issue, position) => ({ issue, position, rank: rank(issue) }));
  ranked.sort((x, y) => x.rank[0] - y.rank[0] || x.rank[1] - y.rank[1] || x.position - y.position);
  return ranked.map((entry) => entry.issue);
}

/** `metrics_listen`: one listen address (default port DEFAULT_METRICS_PORT). */
function readMetricsListen(value: unknown, issues: Issues): ListenAddress | undefined {
  const text = readString(value, "metrics_listen", issues);
  if (text === undefined) return undefined;
  const address = parseListenAddress(text, DEFAULT_METRICS_PORT);
  if (typeof address === "string") {
    issues.add("metrics_listen", address);
    return undefined;
  }
  if (address.transport === "unix") {
    issues.add("metrics_listen", "metrics are served over TCP only (Prometheus scrapes HOST:PORT); use e.g. \"127.0.0.1:9810\"");
    return undefined;
  }
  return address;
}

/** Every key the schema knows, per section (docs test: each must appear in docs/config.md). */
export function knownKeys(): Record<string, readonly string[]> {
  return {
    top: TOP_KEYS,
    key: KEY_KEYS,
    export: EXPORT_KEYS,
    "export.allow": ALLOW_TABLE_KEYS,
    "export.tree": TREE_KEYS,
    "export.replication": REPLICATION_KEYS,
    attach: ATTACH_KEYS,
    client: CLIENT_KEYS,
    reliability: RELIABILITY_KEYS,
    limits: LIMITS_KEYS,
  };
}
