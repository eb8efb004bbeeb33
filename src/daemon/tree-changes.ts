/**
 * @module daemon/tree-changes — which changes a reload makes to exports' storage trees that a
 * running export group applies in place instead of restarting (daemon/reload-plan.ts
 * diffPlans, daemon/export-tree-changes.ts applies them). Pure. A change is a tree shaped as
 * the export's tree, naming what changes where:
 *
 * - at the ROOT only, legs appended at the end of a `linear` node grow the export (docs/tree.md
 *   "Growing a linear export"): a node elsewhere fixes its size into its parent;
 * - at ANY mirror (the root, or nested under linear, stripe and mirror nodes), legs appended at
 *   the end (new slots) and legs whose node changed at the same position (a replaced disk,
 *   remote export or subtree), each resynced whole — docs/tree.md "Replacing and adding mirror
 *   legs". The size does not change;
 * - inside a leg of a linear or stripe node, the changes of that leg's subtree.
 *
 * A changed mirror leg that is itself a tree carries both readings: the changes inside it
 * (`nested`, when its subtree differs only by changes of the kinds above) and the whole
 * replacement. The running export chooses by the leg's state (export-tree-changes.ts): a leg
 * that is open takes the nested changes, one that is out (suspended, absent) is replaced.
 *
 * Anything else that differs (a leg removed, reordered or made write-mostly; the same disk
 * under another label; a mirror's own settings; a stripe's chunk or leg count; legs appended
 * to a nested linear) restarts the group.
 */
import type { ExportConfig, TreeLegSpec, TreeNodeSpec } from "../config/types.ts";
import { canonicalJson } from "../lib/canonical-json.ts";

/** What changes in one node of a running tree (and below it). */
export type TreeChange =
  | {
      kind: "linear";
      /** Changes inside kept legs (index: the leg's position). */
      inside: LegChange[];
      /** Legs appended at the end: only at the root. */
      append: TreeLegSpec[];
    }
  | { kind: "stripe"; inside: LegChange[] }
  | { kind: "mirror"; legs: MirrorLegChange[] };

/** A linear or stripe leg whose subtree changes; `leg` is its new spec (its label may change). */
export interface LegChange {
  index: number;
  leg: TreeLegSpec;
  change: TreeChange;
}

/**
 * A mirror leg replaced (`index` < the legs it runs) or added (a new slot, in order) with
 * `leg`; `nested`: the same change read as changes inside the running leg's subtree, when
 * it can be (null for leaves, new slots and subtrees that differ otherwise).
 */
export interface MirrorLegChange {
  index: number;
  leg: TreeLegSpec;
  nested: TreeChange | null;
}

/** An export config without its policy (allow lists, suites, checksums), which updates in place. */
export function structural(e: ExportConfig): unknown {
  return { ...e, allow: null, suites: null, checksums: null };
}

/**
 * The tree change of each export of a running group when `wanted` equals `running` except
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
    const withoutTree = (e: ExportConfig) => structural(e.backend.kind === "tree" ? { ...e, backend: { kind: "tree", root: { kind: "memory", sizeBytes: 0 } } } : e);
    if (canonicalJson(withoutTree(before)) !== canonicalJson(withoutTree(after))) return null;
    if (before.backend.kind !== "tree" || after.backend.kind !== "tree") continue;
    const change = nodeChange(before.backend.root, after.backend.root, { root: true, replicated: (before.replication ?? null) !== null });
    if (change === null) return null;
    if (change !== "same") changes.set(after.name, change);
  }
  return changes;
}

interface Where {
  /** The export's root: the only place a linear node may grow. */
  root: boolean;
  replicated: boolean;
}

/** "same", the change from `before` to `after`, or null when it is not one made in place. */
function nodeChange(before: TreeNodeSpec, after: TreeNodeSpec, where: Where): TreeChange | "same" | null {
  if (same(before, after)) return "same";
  const below: Where = { root: false, replicated: where.replicated };
  if (before.kind === "linear" && after.kind === "linear") {
    if (after.legs.length < before.legs.length) return null;
    // Growing changes the export's size: the root only, and not under replication.
    if (after.legs.length > before.legs.length && (!where.root || where.replicated)) return null;
    const inside = legChanges(before.legs, after.legs.slice(0, before.legs.length), below);
    if (inside === null) return null;
    return { kind: "linear", inside, append: after.legs.slice(before.legs.length) };
  }
  if (before.kind === "stripe" && after.kind === "stripe") {
    // A stripe's layout depends on its chunk and leg count.
    if (before.chunkBytes !== after.chunkBytes || before.legs.length !== after.legs.length) return null;
    const inside = legChanges(before.legs, after.legs, below);
    return inside === null ? null : { kind: "stripe", inside };
  }
  if (before.kind === "mirror" && after.kind === "mirror") {
    if (before.readPolicy !== after.readPolicy || before.assumeClean !== after.assumeClean) return null;
    if (after.legs.length < before.legs.length) return null;
    const legs: MirrorLegChange[] = [];
    for (let index = 0; index < after.legs.length; index++) {
      const leg = after.legs[index]!;
      const old = before.legs[index];
      if (old === undefined) {
        legs.push({ index, leg, nested: null });
        continue;
      }
      if (same(old, leg)) continue;
      // The same node with another label or write-mostly setting is not a new disk: restart.
      if (same(old.node, leg.node)) return null;
      // A running leg keeps its write-mostly setting: only a new one (a replacement) may differ.
      const nested = old.writeMostly === leg.writeMostly ? nodeChange(old.node, leg.node, below) : null;
      legs.push({ index, leg, nested: nested === "same" ? null : nested });
    }
    return { kind: "mirror", legs };
  }
  return null;
}

/**
 * Changes inside the legs of a linear or stripe node, position by position: a leg keeps its
 * write-mostly setting (meaningless here, but a change is not made in place) and its subtree
 * may change only in place. Its label may follow its subtree (a default label is its shape).
 */
function legChanges(before: readonly TreeLegSpec[], after: readonly TreeLegSpec[], where: Where): LegChange[] | null {
  const out: LegChange[] = [];
  for (let index = 0; index < before.length; index++) {
    const old = before[index]!;
    const leg = after[index]!;
    if (same(old, leg)) continue;
    if (old.writeMostly !== leg.writeMostly) return null;
    const change = nodeChange(old.node, leg.node, where);
    // A linear or stripe leg holds data nothing else has: it cannot be swapped.
    if (change === null || change === "same") return null;
    out.push({ index, leg, change });
  }
  return out;
}

function same(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

