/**
 * @module daemon/tree-changes — which changes a reload makes to exports' storage trees that a
 * running export group applies in place instead of restarting (daemon/reload-plan.ts
 * diffPlans, daemon/export-tree-changes.ts applies them). Pure. Two kinds, both at the root:
 *
 * - `linear`: legs appended at the END of a linear root grow the export (docs/tree.md
 *   "Growing a linear export");
 * - `mirror`: legs appended to a mirror root (new slots, resynced whole) and leaf legs whose
 *   node changed at the same position to another leaf (a replaced disk or remote export,
 *   resynced whole) — docs/tree.md "Replacing and adding mirror legs". The size does not change.
 *
 * Only the root: a node elsewhere in the tree fixes its size into its parent. Anything else
 * that differs (a leg removed, reordered, relabelled or made write-mostly; the mirror's own
 * settings; legs of a stripe) restarts the group.
 */
import type { ExportConfig, TreeLegSpec } from "../config/types.ts";
import { canonicalJson } from "../lib/canonical-json.ts";

/** One export's in-place tree change. */
export type TreeChange =
  | { kind: "linear"; append: TreeLegSpec[] }
  /** `index` < the legs running: replaces that leg; otherwise a new slot (in order). */
  | { kind: "mirror"; legs: Array<{ index: number; leg: TreeLegSpec }> };

/**
 * An export config without what a running export group changes in place: its policy, and the
 * legs of a linear or mirror root (all of them with `keepLegs` null, else the first
 * `keepLegs` of a linear root and none of a mirror's).
 */
export function structural(e: ExportConfig, keepLegs: number | null): unknown {
  let backend: unknown = e.backend;
  if (e.backend.kind === "tree" && keepLegs !== null) {
    const root = e.backend.root;
    if (root.kind === "linear") backend = { ...e.backend, root: { ...root, legs: root.legs.slice(0, keepLegs) } };
    else if (root.kind === "mirror") backend = { ...e.backend, root: { ...root, legs: [] } };
  }
  return { ...e, backend, allow: null, suites: null, checksums: null };
}

/**
 * The tree change each export of a running group makes when `wanted` equals `running` except
 * for policy and the changes above (an export without one is absent from the map); null when
 * anything else differs — then the group is restarted. Replicated exports are not grown (the
 * log has no record for a size change); their mirror legs may be replaced or added.
 */
export function treeChanges(running: readonly ExportConfig[], wanted: readonly ExportConfig[]): Map<string, TreeChange> | null {
  if (running.length !== wanted.length) return null;
  const changes = new Map<string, TreeChange>();
  for (let i = 0; i < running.length; i++) {
    const before = running[i]!;
    const after = wanted[i]!;
    const rootBefore = before.backend.kind === "tree" ? before.backend.root : null;
    const rootAfter = after.backend.kind === "tree" ? after.backend.root : null;
    const keep = rootBefore?.kind === "linear" || rootBefore?.kind === "mirror" ? rootBefore.legs.length : null;
    if (canonicalJson(structural(before, keep)) !== canonicalJson(structural(after, keep))) return null;
    if (rootBefore?.kind === "linear" && rootAfter?.kind === "linear") {
      if (rootAfter.legs.length === rootBefore.legs.length) continue;
      if (rootAfter.legs.length < rootBefore.legs.length || before.replication) return null;
      changes.set(after.name, { kind: "linear", append: rootAfter.legs.slice(rootBefore.legs.length) });
    } else if (rootBefore?.kind === "mirror" && rootAfter?.kind === "mirror") {
      if (rootAfter.legs.length < rootBefore.legs.length) return null;
      const legs: Array<{ index: number; leg: TreeLegSpec }> = [];
      for (let index = 0; index < rootAfter.legs.length; index++) {
        const leg = rootAfter.legs[index]!;
        const old = rootBefore.legs[index];
        if (old === undefined) legs.push({ index, leg });
        else if (canonicalJson(old) === canonicalJson(leg)) continue;
        // The same node with another label or write-mostly setting is not a new disk, and a
        // changed subtree may share disks with the one it replaces: restart for those.
        else if (canonicalJson(old.node) === canonicalJson(leg.node) || !isLeaf(old) || !isLeaf(leg)) return null;
        else legs.push({ index, leg });
      }
      if (legs.length > 0) changes.set(after.name, { kind: "mirror", legs });
    }
  }
  return changes;
}

/** A disk, memory, remote export or RBD image: not a linear, stripe or mirror of others. */
function isLeaf(leg: TreeLegSpec): boolean {
  return !("legs" in leg.node);
}
