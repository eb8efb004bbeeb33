/**
 * @module daemon/reload-plan — what `dstd up` must do to go from the running configuration
 * to a new one, decided without touching anything (pure; test/daemon/reload-plan.test.ts).
 *
 * Units are export groups (daemon/services.ts groupExports) and attachments, each with a
 * signature: the canonical JSON of its config plus a digest of the key material it uses.
 * A unit whose signature is unchanged keeps running untouched (its clients stay connected);
 * a changed unit is stopped and started anew; a removed one is stopped; a new one started.
 *
 * Refused (nothing changes, and the reason says why):
 * - the config or a key file is invalid, or two units want the same address or device;
 * - restarting a group would empty a memory export the new config keeps (same name and
 *   size): its contents live only in this process.
 * A change of allow lists, suites, checksums or keys only ("policy") is applied to the
 * running export group in place (daemon/export-node.ts updatePolicy): every other client
 * stays connected; sessions that lost their grant are closed or downgraded to read-only.
 * So are legs appended at the end of a storage tree whose root is `linear` (the export grows
 * online, docs/tree.md "Growing a linear export") and mirror legs replaced or added at any
 * mirror of the tree (docs/tree.md "Replacing and adding mirror legs"), with or without a policy
 * change in the same reload (tree-changes.ts).
 */
import type { AttachConfig, Config, ExportConfig } from "../config/types.ts";
import { forEachStorage } from "../config/storage-uses.ts";
import { canonicalJson } from "../lib/canonical-json.ts";
import { structural, treeChanges } from "./tree-changes.ts";
import { attachName, exportGroupName, groupExports } from "./services.ts";

export { canonicalJson };

export interface UnitPlan<T> {
  name: string;
  signature: string;
  /**
   * The signature without what a running unit can change in place (an export group's allow
   * lists, suites, checksums and keys): equal structures with different signatures are
   * updated live, not restarted.
   */
  structure: string;
  config: T;
  /**
   * Digest of the key files the unit reads at start (an export group's replication key_file and
   * remote legs' key files): new contents restart the group, since nothing running reads them again.
   */
  keyFiles?: string;
}

export interface NodePlan {
  exportGroups: UnitPlan<ExportConfig[]>[];
  attachments: UnitPlan<AttachConfig>[];
}

/**
 * The units a config asks for. `keyDigest` is a digest of every [[key]]'s material (export
 * groups depend on all of them); `fileDigest` of one key file (an attachment's key_file).
 */
export function planNode(config: Config, keyDigest: string, fileDigest: (path: string) => string): NodePlan {
  return {
    exportGroups: groupExports(config.exports).map((group) => {
      const keyFiles = exportKeyFiles(group).map(fileDigest).join(",");
      return {
        name: exportGroupName(group),
        signature: `${canonicalJson(group)}#${keyDigest}#${keyFiles}`,
        structure: `${canonicalJson(group.map((e) => structural(e)))}#${keyFiles}`,
        config: group,
        keyFiles,
      };
    }),
    attachments: config.attaches.map((entry) => ({
      name: attachName(entry),
      signature: `${canonicalJson(entry)}#${entry.keyFile === null ? "" : fileDigest(entry.keyFile)}`,
      structure: `${canonicalJson(entry)}#${entry.keyFile === null ? "" : fileDigest(entry.keyFile)}`,
      config: entry,
    })),
  };
}

/**
 * Attachments that are the same one (the same device, NBD socket or, with neither, URL): each
 * is a problem to report. Listen addresses that collide are refused when the config is read
 * (config/listen-uses.ts).
 */
export function conflicts(config: Config): string[] {
  const names = new Map<string, number>();
  for (const entry of config.attaches) names.set(attachName(entry), (names.get(attachName(entry)) ?? 0) + 1);
  const problems: string[] = [];
  for (const [name, count] of names) if (count > 1) problems.push(`${count} [[attach]] entries are the same attachment (${name}): give each its own device or nbd_listen`);
  return problems;
}

export interface ReloadDiff {
  keep: string[];
  /** Running units whose policy (allow lists, keys) changed: updated in place, clients stay. */
  update: string[];
  stop: string[];
  start: string[];
  /** Non-empty: refuse the reload with these reasons. */
  refusals: string[];
}

/** Units to keep, stop and start; refusals when applying it would lose data. */
export function diffPlans(running: NodePlan, wanted: NodePlan): ReloadDiff {
  const diff: ReloadDiff = { keep: [], update: [], stop: [], start: [], refusals: [] };
  const runningUnits = [...running.exportGroups, ...running.attachments];
  const wantedUnits = [...wanted.exportGroups, ...wanted.attachments];
  const wantedSignatures = new Map(wantedUnits.map((u) => [u.name, u.signature]));
  const runningSignatures = new Map(runningUnits.map((u) => [u.name, u.signature]));
  const wantedStructures = new Map(wantedUnits.map((u) => [u.name, u.structure]));
  const wantedGroups = new Map(wanted.exportGroups.map((u) => [u.name, u.config]));
  const wantedKeyFiles = new Map(wanted.exportGroups.map((u) => [u.name, u.keyFiles]));
  const runningGroups = new Set(running.exportGroups.map((u) => u.name));
  for (const unit of runningUnits) {
    const wantedGroup = wantedGroups.get(unit.name);
    if (wantedSignatures.get(unit.name) === unit.signature) diff.keep.push(unit.name);
    else if (wantedStructures.get(unit.name) === unit.structure) diff.update.push(unit.name);
    else if (runningGroups.has(unit.name) && wantedGroup !== undefined && wantedKeyFiles.get(unit.name) === unit.keyFiles && treeChanges(unit.config as readonly ExportConfig[], wantedGroup) !== null) diff.update.push(unit.name);
    else diff.stop.push(unit.name);
  }
  for (const unit of wantedUnits) {
    if (runningSignatures.get(unit.name) !== unit.signature && !diff.update.includes(unit.name)) diff.start.push(unit.name);
  }
  // Memory exports in groups that stop: refuse while the new config keeps the same memory
  // disk (same name and size): an ACL or listener change is no reason to empty it.
  const wantedBackends = new Map(wanted.exportGroups.flatMap((g) => g.config.map((e) => [e.name, canonicalJson(e.backend)] as const)));
  for (const group of running.exportGroups) {
    if (!diff.stop.includes(group.name)) continue;
    for (const e of group.config) {
      if (e.backend.kind !== "memory") continue;
      if (wantedBackends.get(e.name) === canonicalJson(e.backend)) {
        diff.refusals.push(
          `memory export '${e.name}' would be restarted (its group ${group.name} changes) and lose its contents: give it its own listen address, or restart dstd up on purpose`,
        );
      }
    }
  }
  // A kernel attachment that changes (its entry, the [client] keys it inherits, its key file)
  // would be detached and attached again: its /dev/nbdN would go away under whatever uses it
  // (a mounted filesystem), and come back under another name without `device`. Refuse; a
  // restart that hands the device over (SIGUSR2, then start) applies it without unmapping.
  const wantedAttachments = new Set(wanted.attachments.map((u) => u.name));
  for (const unit of running.attachments) {
    if (!diff.stop.includes(unit.name) || !wantedAttachments.has(unit.name) || unit.config.nbdListen !== null) continue;
    diff.refusals.push(
      `kernel attachment ${unit.name} would be detached and attached again (its [[attach]] entry, the [client] keys it inherits or its key file changed), ` +
        "taking its device away from whatever uses it: to apply the change keep the device attached — stop dstd up with SIGUSR2 and start it again — or remove the entry and reload to detach it on purpose",
    );
  }
  return diff;
}

/** Key files an export group reads when it starts: replication's key_file, remote legs' key files (sorted, deduplicated). */
export function exportKeyFiles(group: readonly ExportConfig[]): string[] {
  const files = new Set<string>();
  for (const e of group) if (e.replication?.keyFile != null) files.add(e.replication.keyFile);
  forEachStorage(group, (node) => node.kind === "remote" && node.keyFile !== null && files.add(node.keyFile));
  return [...files].sort();
}
