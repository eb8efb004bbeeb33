/**
 * @module config/schema — the shape of dstd.toml: the raw input types (what TOML or the CLI
 * hands us), the resolved Config (units normalized, addresses and rules parsed, defaults
 * filled, deeply frozen), and validateConfig, which turns one into the other or returns
 * EVERY issue with its path. Pure: no I/O (config/load.ts reads files), never throws.
 *
 * Keys and defaults (full reference with examples: docs/config.md; numbers: defaults.ts):
 *
 *   key                   where                 type / example            default
 *   log_level             top                   error|warn|info|debug|trace  "info"
 *   state_dir             top                   path                      "/var/lib/dstd"
 *   log_format            top                   text|json                 "text"
 *   metrics_listen        top                   "127.0.0.1:9810"          none (off)
 *   [[key]] identity      key table             "alice" (A-Za-z0-9._-)    required
 *   [[key]] file|secret   key table             path | 64 hex / base64    exactly one
 *   [[export]] name       export table          string, unique            "disk"
 *   file|device|memory|tree  export table       path | /dev path | size | table  exactly one
 *   [export.tree]         export                mirror|linear|stripe = [legs]  docs/tree.md
 *   size                  export (file only)    "10GiB" | bytes           existing size
 *   description           export                string                    ""
 *   listen                export                ["HOST:PORT", "unix:P"]   ["127.0.0.1:10810"]
 *   nbd_listen            export                same, NBD front end       [] (off)
 *   read_only             export                bool                      false
 *   allow                 export                rule strings / tables     [] (nobody)
 *   suites                export, client, att.  suite names               encrypted suites
 *   checksums             export, client, att.  xxh3|sha256|blake2b256|none  all four
 *   [[attach]] url        attach table          "dst://host/disk"         required
 *   device                attach                "/dev/nbd0"               first free
 *   nbd_listen            attach                "unix:/run/x.sock"        none
 *   key_file              attach, [client]      path                      none ([client]'s)
 *   resend_interval       attach, [client]      duration                  "1s"
 *   max_resends           attach, [client]      integer 0..1000           10
 *   deadline              attach, [client]      duration                  "2m"
 *   reconnect_min/_max    attach, [client]      duration                  "100ms" / "10s"
 *   keepalive_interval    attach, [client]      duration                  "2s"
 *   keepalive_timeout     attach, [client]      duration > interval       "6s"
 *   replay_buffer         attach, [client]      size ≥ 1MiB               "256MiB"
 *   inflight              attach, [client]      integer 1..65536          64
 *   [limits] ...          top                   deadlines, connection caps  config/limits.ts
 * The reliability keys may also sit in a `reliability` sub-table ([client.reliability],
 * [attach.reliability]). An attach inherits [client] values, which inherit the defaults.
 */
import type { AllowRule } from "../lib/acl.ts";
import type { TreeNodeSpec } from "../storage/tree/spec.ts";
import { parseListenAddress, type ExportUrl, type ListenAddress } from "../lib/address.ts";
import { DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, DEFAULT_METRICS_PORT, DEFAULT_STATE_DIR, LOG_FORMATS, LOG_LEVELS } from "./defaults.ts";
import {
  type ConfigIssue,
  checkKeys,
  deepFreeze,
  describe,
  get,
  Issues,
  isTable,
  readEnum,
  readPath,
  readString,
} from "./fields.ts";
import { readAttaches, readClient, readExports, readKeys, sectionKeys } from "./sections.ts";
import { LIMITS_KEYS, readLimits, type LimitsConfig, type LimitsInput } from "./limits.ts";

export type { ConfigIssue } from "./fields.ts";

export type LogLevel = "error" | "warn" | "info" | "debug" | "trace";
export type LogFormat = "text" | "json";
export type ChecksumName = "xxh3" | "sha256" | "blake2b256" | "none";
export type SuiteName =
  | "aes-256-gcm"
  | "chacha20-poly1305"
  | "xchacha20-poly1305"
  | "integrity"
  | "none";

// ---- raw input: what Bun.TOML.parse returns for a valid file (all optional) ------------

/** Size fields take "10GiB" or a byte count; durations take "2s"/"500ms". */
export interface ReliabilityInput {
  resend_interval?: string;
  max_resends?: number;
  deadline?: string;
  reconnect_min?: string;
  reconnect_max?: string;
  keepalive_interval?: string;
  keepalive_timeout?: string;
  replay_buffer?: string | number;
  queue_depth?: number;
  connections?: number;
  inflight?: number;
}
export interface KeyInput {
  identity?: string;
  file?: string;
  secret?: string;
}
export interface AllowTableInput {
  identity?: string;
  network?: string;
  access?: "ro" | "rw";
}
export interface ExportInput {
  name?: string;
  file?: string;
  size?: string | number;
  device?: string;
  memory?: string | number;
  /** A storage tree: one node table (config/tree.ts). */
  tree?: Record<string, unknown>;
  description?: string;
  listen?: string | string[];
  nbd_listen?: string | string[];
  read_only?: boolean;
  allow?: (string | AllowTableInput)[];
  suites?: string[];
  checksums?: string[];
}
export interface AttachInput extends ClientInput {
  url?: string;
  device?: string;
  nbd_listen?: string;
}
export interface ClientInput extends ReliabilityInput {
  key_file?: string;
  suites?: string[];
  checksums?: string[];
  reliability?: ReliabilityInput;
}
export interface ConfigInput {
  log_level?: string;
  state_dir?: string;
  log_format?: string;
  metrics_listen?: string;
  key?: KeyInput[];
  export?: ExportInput[];
  attach?: AttachInput[];
  client?: ClientInput;
  limits?: LimitsInput;
}

// ---- resolved ---------------------------------------------------------------------------

export interface Reliability {
  resendIntervalMs: number;
  maxResends: number;
  deadlineMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  replayBufferBytes: number;
  inflightMax: number;
  /** Requests a client keeps outstanding before it waits (engine queueDepth). */
  queueDepth: number;
  /** DST connections to the export, used when it grants multi-connection consistency. */
  connections: number;
}

export type KeyConfig =
  | { readonly identity: string; readonly kind: "file"; readonly path: string }
  | { readonly identity: string; readonly kind: "secret"; readonly secret: Uint8Array };

export type BackendConfig =
  | { readonly kind: "file"; readonly path: string; readonly sizeBytes: number | null }
  | { readonly kind: "device"; readonly path: string }
  | { readonly kind: "memory"; readonly sizeBytes: number }
  /** A storage tree (config/tree.ts, docs/tree.md). */
  | { readonly kind: "tree"; readonly root: TreeNodeSpec };

export interface ExportConfig {
  readonly name: string;
  readonly description: string;
  readonly backend: BackendConfig;
  readonly listen: readonly ListenAddress[];
  readonly nbdListen: readonly ListenAddress[];
  readonly readOnly: boolean;
  readonly allow: readonly AllowRule[];
  /** Suites this export allows; the client's preference order decides among them. */
  readonly suites: readonly SuiteName[];
  readonly checksums: readonly ChecksumName[];
}

export interface AttachConfig {
  readonly url: ExportUrl;
  /** null: pick the first free /dev/nbdN. */
  readonly device: string | null;
  readonly nbdListen: ListenAddress | null;
  readonly keyFile: string | null;
  /** Offered in this preference order. */
  readonly suites: readonly SuiteName[];
  readonly checksums: readonly ChecksumName[];
  readonly reliability: Readonly<Reliability>;
}

export interface ClientConfig {
  readonly keyFile: string | null;
  readonly suites: readonly SuiteName[];
  readonly checksums: readonly ChecksumName[];
  readonly reliability: Readonly<Reliability>;
}

export interface Config {
  readonly logLevel: LogLevel;
  readonly stateDir: string;
  readonly logFormat: LogFormat;
  /** Where `dstd up` serves Prometheus metrics; null: nowhere. */
  readonly metricsListen: ListenAddress | null;
  readonly keys: readonly KeyConfig[];
  readonly exports: readonly ExportConfig[];
  readonly attaches: readonly AttachConfig[];
  readonly client: ClientConfig;
  readonly limits: LimitsConfig;
}

export const TOP_KEYS = ["log_level", "state_dir", "log_format", "metrics_listen", "key", "export", "attach", "client", "limits"] as const;

export interface ValidateOptions {
  /** Directory relative paths are resolved against (the config file's); null keeps them. */
  baseDir?: string | null;
}

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
  const { keys, identities } = readKeys(get(raw, "key"), issues);
  const client = readClient(get(raw, "client"), issues);
  const exports = readExports(get(raw, "export"), identities, issues, client);
  const attaches = readAttaches(get(raw, "attach"), client, issues);
  const limits = readLimits(get(raw, "limits"), issues);
  if (issues.list.length > 0) return { issues: sortIssues(issues.list) };
  const config: Config = {
    logLevel: logLevel ?? DEFAULT_LOG_LEVEL,
    stateDir: stateDir ?? DEFAULT_STATE_DIR,
    logFormat: logFormat ?? DEFAULT_LOG_FORMAT,
    metricsListen: metricsListen ?? null,
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
  const order = ["", "log_level", "state_dir", "log_format", "metrics_listen", "key", "export", "attach", "client", "limits"];
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
  return { top: TOP_KEYS, ...sectionKeys(), limits: LIMITS_KEYS };
}
