/**
 * @module lib/canonical-json — one JSON text per value, whatever the key order: what a
 * reload compares running and wanted configurations by (daemon/reload-plan.ts).
 */

/** JSON with sorted keys; byte arrays as hex; allow rules as written. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      const record = v as Record<string, unknown>;
      if (typeof record.source === "string" && "access" in record && "network" in record) return record.source; // an AllowRule
      return Object.fromEntries(Object.keys(record).sort().map((k) => [k, record[k]]));
    }
    return v;
  });
}
