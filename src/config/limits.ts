/**
 * @module config/limits — the `[limits]` table: deadlines and connection caps an export
 * process enforces on its peers (transport/guard.ts; docs/security.md "Resource limits").
 * Every key is optional; defaults and bounds are in defaults.ts. Pure.
 *
 *   key                              type       default
 *   handshake_timeout                duration   "10s"
 *   frame_timeout                    duration   "30s"
 *   max_connections                  integer    4096 (whole process)
 *   max_unauthenticated              integer    128 (per listener)
 *   max_unauthenticated_per_source   integer    16 (per IPv4 address / IPv6 /64)
 */
import { CONNECTION_LIMIT_BOUNDS, DEFAULT_CONNECTION_LIMITS } from "./defaults.ts";
import { checkKeys, get, type Issues, isTable, join, readDuration, readInteger, describe } from "./fields.ts";
import type { LimitsConfig } from "./types.ts";

const FIELDS: Record<string, { field: keyof LimitsConfig; kind: "duration" | "count" }> = {
  handshake_timeout: { field: "handshakeTimeoutMs", kind: "duration" },
  frame_timeout: { field: "frameTimeoutMs", kind: "duration" },
  max_connections: { field: "maxConnections", kind: "count" },
  max_unauthenticated: { field: "maxUnauthenticated", kind: "count" },
  max_unauthenticated_per_source: { field: "maxUnauthenticatedPerSource", kind: "count" },
};

export const LIMITS_KEYS = Object.keys(FIELDS);

export function readLimits(value: unknown, issues: Issues): LimitsConfig {
  const out: Record<keyof LimitsConfig, number> = { ...DEFAULT_CONNECTION_LIMITS };
  if (value === undefined) return out;
  if (!isTable(value)) {
    issues.add("limits", `expected a table, got ${describe(value)}`);
    return out;
  }
  checkKeys(value, LIMITS_KEYS, "limits", issues);
  for (const [key, { field, kind }] of Object.entries(FIELDS)) {
    const path = join("limits", key);
    const read =
      kind === "duration"
        ? readDuration(get(value, key), CONNECTION_LIMIT_BOUNDS.timeoutMs, path, issues)
        : readInteger(get(value, key), CONNECTION_LIMIT_BOUNDS.count, path, issues);
    if (read !== undefined) out[field] = read;
  }
  return out;
}
