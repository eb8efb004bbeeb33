/**
 * @module config/reliability — the requester's timing and memory keys (resend_interval,
 * deadline, keepalive_*, replay_buffer, inflight, ...) for [client] and [[attach]], the
 * [client] section itself (with key_file, suites, checksums), and the [[attach]] tables.
 * Values layer: defaults.ts ← [client] ← [[attach]]. Reliability keys may be flat or inside
 * a `reliability` sub-table, not both. Pure.
 */
import { NBD_DEFAULT_PORT, parseExportUrl, parseListenAddress } from "../lib/address.ts";
import { formatDuration } from "../lib/duration.ts";
import { readChecksums, readSuites } from "./access.ts";
import { DEFAULT_ATTACH_CONNECTIONS, DEFAULT_RELIABILITY, LIMITS } from "./defaults.ts";
import {
  checkKeys,
  describe,
  get,
  type Issues,
  isTable,
  join,
  readDuration,
  readInteger,
  readPath,
  readSize,
  readString,
  readTableArray,
  type Table,
} from "./fields.ts";
import type { AttachConfig, ClientConfig, Reliability } from "./types.ts";

type Reader = (value: unknown, path: string, issues: Issues) => number | undefined;

const duration: Reader = (value, path, issues) =>
  readDuration(value, LIMITS.durationMs, path, issues);

/** TOML key → resolved field and reader. */
const FIELDS: Record<string, { field: keyof Reliability; read: Reader }> = {
  resend_interval: { field: "resendIntervalMs", read: duration },
  max_resends: {
    field: "maxResends",
    read: (value, path, issues) => readInteger(value, LIMITS.maxResends, path, issues),
  },
  deadline: { field: "deadlineMs", read: duration },
  reconnect_min: { field: "reconnectMinMs", read: duration },
  reconnect_max: { field: "reconnectMaxMs", read: duration },
  keepalive_interval: { field: "keepaliveIntervalMs", read: duration },
  keepalive_timeout: { field: "keepaliveTimeoutMs", read: duration },
  replay_buffer: {
    field: "replayBufferBytes",
    read: (value, path, issues) => readSize(value, LIMITS.replayBufferBytes.min, path, issues),
  },
  inflight: {
    field: "inflightMax",
    read: (value, path, issues) => readInteger(value, LIMITS.inflightMax, path, issues),
  },
  queue_depth: {
    field: "queueDepth",
    read: (value, path, issues) => readInteger(value, LIMITS.queueDepth, path, issues),
  },
  links: {
    field: "links",
    read: (value, path, issues) => readInteger(value, LIMITS.links, path, issues),
  },
};

export const RELIABILITY_KEYS = Object.keys(FIELDS);
export const CLIENT_KEYS = ["key_file", "suites", "checksums", "reliability", ...RELIABILITY_KEYS];
export const ATTACH_KEYS = ["url", "device", "nbd_listen", "connections", ...CLIENT_KEYS];

/**
 * Ordering rules between two duration keys: [key, other key, relation]. A keepalive timeout
 * no longer than its interval would declare every idle peer dead; a deadline shorter than
 * one resend interval could never resend.
 */
const ORDERING: [string, string, ">" | ">="][] = [
  ["keepalive_timeout", "keepalive_interval", ">"],
  ["reconnect_max", "reconnect_min", ">="],
  ["deadline", "resend_interval", ">="],
];

function checkOrdering(values: Reliability, setAt: Map<string, string>, issues: Issues): void {
  for (const [key, other, relation] of ORDERING) {
    const at = setAt.get(key) ?? setAt.get(other);
    const a = values[FIELDS[key]?.field ?? "deadlineMs"];
    const b = values[FIELDS[other]?.field ?? "deadlineMs"];
    if (at === undefined || (relation === ">" ? a > b : a >= b)) continue;
    const wanted = relation === ">" ? "longer than" : "at least";
    issues.add(
      at,
      `${key} (${formatDuration(a)}) must be ${wanted} ${other} (${formatDuration(b)})`,
    );
  }
}

/** Read the reliability keys of `table` (flat or in `reliability`) over `base`. */
export function readReliability(
  table: Table,
  path: string,
  base: Readonly<Reliability>,
  issues: Issues,
): Reliability {
  const out: Reliability = { ...base };
  const setAt = new Map<string, string>();
  const sub = get(table, "reliability");
  const subPath = join(path, "reliability");
  if (sub !== undefined && !isTable(sub)) {
    issues.add(subPath, `expected a table, got ${describe(sub)}`);
  }
  if (isTable(sub)) checkKeys(sub, RELIABILITY_KEYS, subPath, issues);
  for (const [key, { field, read }] of Object.entries(FIELDS)) {
    const flat = get(table, key);
    const nested = isTable(sub) ? get(sub, key) : undefined;
    if (flat !== undefined && nested !== undefined) {
      issues.add(join(subPath, key), `${key} is also set in ${path}; keep one`);
      continue;
    }
    const keyPath = nested === undefined ? join(path, key) : join(subPath, key);
    const value = read(nested ?? flat, keyPath, issues);
    if (flat !== undefined || nested !== undefined) setAt.set(key, keyPath);
    if (value !== undefined) out[field] = value;
  }
  checkOrdering(out, setAt, issues);
  return out;
}

export function readClient(value: unknown, issues: Issues): ClientConfig {
  const path = "client";
  if (value !== undefined && !isTable(value)) {
    issues.add(path, `expected a table ([client]), got ${describe(value)}`);
  }
  const table = isTable(value) ? value : {};
  checkKeys(table, CLIENT_KEYS, path, issues);
  return {
    keyFile: readPath(get(table, "key_file"), join(path, "key_file"), issues) ?? null,
    suites: readSuites(get(table, "suites"), join(path, "suites"), issues) ?? [],
    checksums: readChecksums(get(table, "checksums"), join(path, "checksums"), issues) ?? [],
    reliability: readReliability(table, path, DEFAULT_RELIABILITY, issues),
  };
}

export function readAttaches(value: unknown, client: ClientConfig, issues: Issues): AttachConfig[] {
  const attaches: AttachConfig[] = [];
  for (const { table, path } of readTableArray(value, "attach", issues)) {
    checkKeys(table, ATTACH_KEYS, path, issues);
    const urlText = readString(get(table, "url"), join(path, "url"), issues);
    const url = urlText === undefined ? undefined : parseExportUrl(urlText);
    if (typeof url === "string") issues.add(join(path, "url"), url);
    // dstd attach serves the disk through the DST engine (resend, reconnect, replay); it refuses nbd://.
    else if (url !== undefined && url.protocol !== "dst") {
      issues.add(join(path, "url"), "attach connects to dst:// or dst+unix:// exports; an nbd:// server is attached with nbd-client or qemu directly, and copied with dstd copy");
    }
    if (get(table, "url") === undefined) {
      issues.add(join(path, "url"), "missing url (dst://HOST/EXPORT)");
    }
    const devicePath = join(path, "device");
    const device = readPath(get(table, "device"), devicePath, issues, { absolute: true });
    const listenPath = join(path, "nbd_listen");
    const listenText = readString(get(table, "nbd_listen"), listenPath, issues);
    const nbdListen =
      listenText === undefined ? null : parseListenAddress(listenText, NBD_DEFAULT_PORT);
    if (typeof nbdListen === "string") issues.add(listenPath, nbdListen);
    const connections = readInteger(get(table, "connections"), LIMITS.attachConnections, join(path, "connections"), issues);
    // Two modes, as on the command line (cli/attach.ts): a kernel device, or an NBD endpoint.
    if (nbdListen !== null && nbdListen !== undefined && typeof nbdListen !== "string") {
      if (device !== undefined) issues.add(listenPath, "device and nbd_listen are two different modes (a kernel device, or an NBD endpoint for local clients): give one");
      if (get(table, "connections") !== undefined) issues.add(join(path, "connections"), "connections counts the sockets of a kernel device; with nbd_listen each NBD client has its own connection: remove it");
    }
    const keyFile = readPath(get(table, "key_file"), join(path, "key_file"), issues);
    const suites = readSuites(get(table, "suites"), join(path, "suites"), issues);
    const checksums = readChecksums(get(table, "checksums"), join(path, "checksums"), issues);
    const reliability = readReliability(table, path, client.reliability, issues);
    if (url === undefined || typeof url === "string" || url.protocol !== "dst" || typeof nbdListen === "string") continue;
    attaches.push({
      url,
      device: device ?? null,
      nbdListen,
      connections: connections ?? DEFAULT_ATTACH_CONNECTIONS,
      keyFile: keyFile ?? client.keyFile,
      suites: get(table, "suites") === undefined ? client.suites : (suites ?? []),
      checksums: get(table, "checksums") === undefined ? client.checksums : (checksums ?? []),
      reliability,
    });
  }
  return attaches;
}
