/**
 * @module config/replication — the `[export.replication]` table (docs/config.md,
 * docs/replication.md §11): an export's replication log and its role. Pure.
 *
 *   [export.replication]
 *   log_dir = "/var/lib/dstd/disk.log"   the log (primary) or the log copy + applied position (secondary)
 *   log_size = "1GiB"                    most bytes the primary's log holds before it writes around it
 *   role = "primary"                     or "secondary"
 *   peer = "dst://10.0.0.1:10810/disk"   secondary: the primary's export; primary: the other node (fencing, demote)
 *   key_file = "site-b.key"              the identity it fetches with (default [client] key_file)
 *   replay_delay = "0s"                  secondary: hold each record this long before applying it
 *   compress = false                     secondary: ask for zstd-compressed FETCH answers
 *   bandwidth = "20MiB/s"                secondary: most bytes per second shipping takes on the wire
 */
import { formatExportUrl, parseExportUrl } from "../lib/address.ts";
import { parseSize, quoteInput } from "../lib/size.ts";
import { checkKeys, get, type Issues, isTable, join, readBoolean, readDuration, readEnum, readPath, readSize, readString, describe } from "./fields.ts";
import type { ClientConfig, ReplicationConfig } from "./types.ts";

export const REPLICATION_KEYS = ["log_dir", "log_size", "role", "peer", "key_file", "replay_delay", "compress", "bandwidth"] as const;

/** Default log size of a primary. */
export const DEFAULT_LOG_SIZE = 1024 * 1024 * 1024;
/** Smallest log: a few segments of the largest record. */
export const MIN_LOG_SIZE = 16 * 1024 * 1024;
/** Longest replay delay (an undo window of a week). */
export const MAX_REPLAY_DELAY_MS = 7 * 24 * 3600 * 1000;
/** Smallest bandwidth cap: one whole record (1 MiB + 88) per 16 s would be slower than useful. */
export const MIN_BANDWIDTH = 64 * 1024;

/** A rate: a size per second ("20MiB/s"), in bytes per second; or the reason it is not one. */
export function parseRate(text: string): number | string {
  const match = /^(.*)\/s$/.exec(text.trim());
  if (match === null) return `${quoteInput(text)} is not a rate; use e.g. "20MiB/s"`;
  const bytes = parseSize(match[1]!);
  if (typeof bytes === "string") return `${quoteInput(text)} is not a rate: ${bytes}`;
  if (bytes < MIN_BANDWIDTH) return `${quoteInput(text)} is below the smallest cap, 64KiB/s`;
  return bytes;
}

export function readReplication(value: unknown, path: string, client: ClientConfig | undefined, issues: Issues): ReplicationConfig | null | undefined {
  if (value === undefined) return null;
  if (!isTable(value)) {
    issues.add(path, `expected a table [export.replication], got ${describe(value)}`);
    return undefined;
  }
  checkKeys(value, REPLICATION_KEYS, path, issues);
  const at = (key: string) => join(path, key);
  const logDir = readPath(get(value, "log_dir"), at("log_dir"), issues);
  if (get(value, "log_dir") === undefined) issues.add(at("log_dir"), "missing log_dir: the directory of the replication log");
  const role = readEnum(get(value, "role") ?? "primary", ["primary", "secondary"] as const, at("role"), issues);
  const logSize = readSize(get(value, "log_size"), MIN_LOG_SIZE, at("log_size"), issues);
  const replayDelayMs = readDuration(get(value, "replay_delay"), { min: 0, max: MAX_REPLAY_DELAY_MS }, at("replay_delay"), issues);
  const compress = readBoolean(get(value, "compress"), at("compress"), issues);
  let bandwidth = 0;
  const bandwidthValue = get(value, "bandwidth");
  if (bandwidthValue !== undefined) {
    const rate = typeof bandwidthValue === "string" ? parseRate(bandwidthValue) : `expected a rate such as "20MiB/s", got ${describe(bandwidthValue)}`;
    if (typeof rate === "string") issues.add(at("bandwidth"), rate);
    else bandwidth = rate;
  }
  const keyFile = readPath(get(value, "key_file"), at("key_file"), issues);
  let peer: ReplicationConfig["peer"] = null;
  const peerText = readString(get(value, "peer"), at("peer"), issues);
  if (peerText !== undefined) {
    const url = parseExportUrl(peerText);
    if (typeof url === "string") issues.add(at("peer"), url);
    else if (url.protocol !== "dst") issues.add(at("peer"), `${quoteInput(peerText)}: the primary is a DST export (dst:// or dst+unix://)`);
    else peer = url;
  }
  if (role === "secondary" && get(value, "peer") === undefined) issues.add(at("peer"), 'a secondary needs peer = "dst://HOST:PORT/NAME" (its primary)');
  if (role === "primary") {
    for (const key of ["replay_delay", "compress", "bandwidth"]) {
      if (get(value, key) !== undefined) issues.add(at(key), `${key} is for role = "secondary"`);
    }
  } else if (get(value, "log_size") !== undefined) issues.add(at("log_size"), 'log_size is for role = "primary" (a secondary keeps only what it has not applied)');
  if (logDir === undefined || role === undefined || (get(value, "log_size") !== undefined && logSize === undefined)) return undefined;
  if (get(value, "replay_delay") !== undefined && replayDelayMs === undefined) return undefined;
  if (role === "secondary" && peer === null) return undefined;
  return {
    logDir,
    logSize: logSize ?? DEFAULT_LOG_SIZE,
    role,
    peer,
    keyFile: keyFile ?? client?.keyFile ?? null,
    replayDelayMs: replayDelayMs ?? 0,
    compress: compress ?? false,
    bandwidth,
  };
}

/** The peer as written back (for status and messages). */
export function describePeer(config: ReplicationConfig): string {
  return config.peer === null ? "" : formatExportUrl(config.peer);
}
