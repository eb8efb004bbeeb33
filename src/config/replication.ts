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
 *   compress = false                     reserved: compression on the wire is not built yet
 */
import { formatExportUrl, parseExportUrl } from "../lib/address.ts";
import { quoteInput } from "../lib/size.ts";
import { checkKeys, get, type Issues, isTable, join, readBoolean, readDuration, readEnum, readPath, readSize, readString, describe } from "./fields.ts";
import type { ClientConfig, ReplicationConfig } from "./types.ts";

export const REPLICATION_KEYS = ["log_dir", "log_size", "role", "peer", "key_file", "replay_delay", "compress"] as const;

/** Default log size of a primary. */
export const DEFAULT_LOG_SIZE = 1024 * 1024 * 1024;
/** Smallest log: a few segments of the largest record. */
export const MIN_LOG_SIZE = 16 * 1024 * 1024;
/** Longest replay delay (an undo window of a week). */
export const MAX_REPLAY_DELAY_MS = 7 * 24 * 3600 * 1000;

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
  if (compress === true) issues.add(at("compress"), "compression on the wire is not built yet; remove compress or set it to false");
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
    if (get(value, "replay_delay") !== undefined) issues.add(at("replay_delay"), 'replay_delay is for role = "secondary"');
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
  };
}

/** The peer as written back (for status and messages). */
export function describePeer(config: ReplicationConfig): string {
  return config.peer === null ? "" : formatExportUrl(config.peer);
}
