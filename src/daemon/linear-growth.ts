/**
 * @module daemon/linear-growth — which legs a reload appends to exports whose storage tree
 * has a `linear` root, so that the running export group grows in place instead of
 * restarting (daemon/reload-plan.ts diffPlans, daemon/export-growth.ts). Pure.
 */
import type { ExportConfig, TreeLegSpec } from "../config/types.ts";
import { canonicalJson } from "../lib/canonical-json.ts";

/** An export config without what a running export group changes in place (policy, appended linear legs). */
export function structural(e: ExportConfig, keepLegs: number | null): unknown {
  const backend = e.backend.kind === "tree" && e.backend.root.kind === "linear" && keepLegs !== null ? { ...e.backend, root: { ...e.backend.root, legs: e.backend.root.legs.slice(0, keepLegs) } } : e.backend;
  return { ...e, backend, allow: null, suites: null, checksums: null };
}

/**
 * The legs each export of a running group gains when `wanted` equals `running` except for
 * policy and legs appended at the END of a tree whose root is `linear` (none for an export
 * that gains none); null when anything else differs — then the group is restarted. Only the
 * root: a linear node elsewhere in the tree fixes its size into its parent (a stripe's or a
 * mirror's size is set when it is built, and a linear parent places the legs after it by
 * their size at the start). Replicated exports are not grown (the log has no record for it).
 */
export function linearGrowth(running: readonly ExportConfig[], wanted: readonly ExportConfig[]): Map<string, TreeLegSpec[]> | null {
  if (running.length !== wanted.length) return null;
  const growth = new Map<string, TreeLegSpec[]>();
  for (let i = 0; i < running.length; i++) {
    const before = running[i]!;
    const after = wanted[i]!;
    const legsBefore = before.backend.kind === "tree" && before.backend.root.kind === "linear" ? before.backend.root.legs.length : null;
    const legsAfter = after.backend.kind === "tree" && after.backend.root.kind === "linear" ? after.backend.root.legs : null;
    if (canonicalJson(structural(before, legsBefore)) !== canonicalJson(structural(after, legsBefore))) return null;
    if (legsBefore === null || legsAfter === null || legsAfter.length === legsBefore) continue;
    if (legsAfter.length < legsBefore || before.replication) return null;
    growth.set(after.name, legsAfter.slice(legsBefore));
  }
  return growth;
}
