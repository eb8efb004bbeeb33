/**
 * @module daemon/export-tree-changes — a reload's in-place tree changes (daemon/tree-changes.ts
 * decides which) applied while the export's clients stay connected:
 *
 * - legs appended to a `linear` root grow the export (docs/tree.md "Growing a linear export"):
 *   DST's "appending a leg grows the export online"; the new size is announced to DST clients
 *   in band (SIZE_NOTICE; NBD clients see it when they reconnect);
 * - mirror legs replaced or added at a `mirror` root (docs/tree.md "Replacing and adding
 *   mirror legs"): the new leg is resynced whole while I/O goes on.
 *
 * Two steps, so that a reload is all or nothing: `prepareTreeChanges` opens every new leg and
 * checks it fits (anything that can fail: a remote leg that does not answer, a file held by
 * another export, a leg too small, an in-sync leg that would be replaced); `commit` applies
 * them. `abort` closes what was opened. The legs already serving are never touched, except a
 * replaced mirror leg, which is out of sync by then (suspended, degraded, absent).
 */
import { DstdError, errorMessage } from "../lib/errors.ts";
import { formatSize } from "../lib/size.ts";
import type { TreeNodeSpec } from "../config/types.ts";
import { PassThrough } from "../storage/layers/pass-through.ts";
import type { StoragePort } from "../storage/port.ts";
import { LinearPort } from "../storage/tree/linear.ts";
import { MirrorPort } from "../storage/tree/mirror/mirror.ts";
import type { TreeChange } from "./tree-changes.ts";

export interface PreparedTreeChanges {
  /** Apply the opened legs (and announce new sizes); one line per change. Cannot fail. */
  commit(): string[];
  /** Close the opened legs (the reload was refused elsewhere). */
  abort(): Promise<void>;
}

export interface TreeChangeTarget {
  /** Export name. */
  name: string;
  /** The export's port as it serves now: its tree's root, perhaps under layers. */
  port: StoragePort;
  change: TreeChange;
}

/** Opens a tree node; `mirrorLeg`: as a mirror's leg (a file dstd grew opens at its size). */
export type OpenNode = (node: TreeNodeSpec, mirrorLeg: boolean) => Promise<StoragePort>;

interface Opened {
  label: string;
  port: StoragePort;
  /** Mirror legs: the slot, and how the mirror reopens the leg later. */
  index: number;
  writeMostly: boolean;
  node: TreeNodeSpec;
}

type Root = { kind: "linear"; port: LinearPort } | { kind: "mirror"; port: MirrorPort };

/** The tree root under an export's layers. */
function rootOf(port: StoragePort): StoragePort {
  let node = port;
  while (node instanceof PassThrough) node = node.below;
  return node;
}

export async function prepareTreeChanges(targets: readonly TreeChangeTarget[], open: OpenNode, announce: (name: string) => void): Promise<PreparedTreeChanges> {
  const prepared: Array<{ name: string; root: Root; legs: Opened[] }> = [];
  const closeAll = () => Promise.allSettled(prepared.flatMap((p) => p.legs.map((leg) => leg.port.close()))).then(() => {});
  try {
    for (const target of targets) {
      const root = rootOf(target.port);
      const change = target.change;
      let entry: { name: string; root: Root; legs: Opened[] };
      if (change.kind === "linear" && root instanceof LinearPort) entry = { name: target.name, root: { kind: "linear", port: root }, legs: [] };
      else if (change.kind === "mirror" && root instanceof MirrorPort) entry = { name: target.name, root: { kind: "mirror", port: root }, legs: [] };
      else throw new DstdError("E_CONFIG", `export '${target.name}' is served by a ${root.kind} node, not the ${change.kind} node its tree names; restart it to change its tree`);
      prepared.push(entry);
      const wanted = change.kind === "linear" ? change.append.map((leg, i) => ({ index: i, leg })) : change.legs;
      for (const { index, leg } of wanted) {
        let port: StoragePort;
        try {
          port = await open(leg.node, change.kind === "mirror");
        } catch (error) {
          throw new DstdError("E_CONFIG", `export '${target.name}': new leg ${leg.label} cannot be opened: ${errorMessage(error)}`);
        }
        entry.legs.push({ label: leg.label, port, index, writeMostly: leg.writeMostly, node: leg.node });
        const problem = entry.root.kind === "linear" ? entry.root.port.appendProblem({ label: leg.label, port }) : entry.root.port.legChangeProblem(index, port);
        if (problem !== null) throw new DstdError("E_CONFIG", `export '${target.name}': ${problem}`);
      }
    }
  } catch (error) {
    await closeAll();
    throw error;
  }
  let settled = false;
  return {
    commit(): string[] {
      if (settled) return [];
      settled = true;
      const lines: string[] = [];
      for (const { name, root, legs } of prepared) {
        try {
          if (root.kind === "linear") {
            const before = root.port.size;
            for (const leg of legs) root.port.append(leg);
            announce(name);
            lines.push(`export '${name}' grown from ${formatSize(before)} to ${formatSize(root.port.size)}: appended ${legs.map((leg) => `leg ${leg.label}`).join(", ")}`);
          } else {
            for (const leg of legs) {
              const replaced = root.port.setLeg(leg.index, { label: leg.label, writeMostly: leg.writeMostly, port: leg.port, open: () => open(leg.node, true) });
              lines.push(`export '${name}': mirror leg ${leg.index} ${replaced === null ? `added: ${leg.label}` : `${replaced} replaced by ${leg.label}`}; resynced whole while I/O goes on`);
            }
          }
        } catch (error) {
          // Only a node closed since prepare (its group stopping) gets here: nothing to change.
          lines.push(`export '${name}' not changed: ${errorMessage(error)}`);
          void Promise.allSettled(legs.map((leg) => leg.port.close()));
        }
      }
      return lines;
    },
    async abort(): Promise<void> {
      if (settled) return;
      settled = true;
      await closeAll();
    },
  };
}
