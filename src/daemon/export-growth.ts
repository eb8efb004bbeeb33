/**
 * @module daemon/export-growth — a reload that appends legs to an export whose storage tree
 * has a `linear` root (daemon/reload-plan.ts linearGrowth decides which) grows that export
 * while its clients stay connected (docs/tree.md "Growing a linear export"): DST's "appending
 * a leg grows the export online".
 *
 * Two steps, so that a reload is all or nothing: `prepareGrowth` opens every new leg and
 * checks it can be placed (anything that can fail: a remote leg that does not answer, a file
 * held by another export, a leg smaller than one block); `commit` appends them and announces
 * the new size to DST clients in band (SIZE_NOTICE; NBD clients see it when they reconnect).
 * `abort` closes what was opened. The legs already serving are never touched.
 */
import { DstdError, errorMessage } from "../lib/errors.ts";
import { formatSize } from "../lib/size.ts";
import type { TreeLegSpec, TreeNodeSpec } from "../config/types.ts";
import type { StoragePort } from "../storage/port.ts";
import { LinearPort } from "../storage/tree/linear.ts";

export interface PreparedGrowth {
  /** Append the opened legs and announce the new sizes; one line per export grown. Cannot fail. */
  commit(): string[];
  /** Close the opened legs (the reload was refused elsewhere). */
  abort(): Promise<void>;
}

export interface GrowthTarget {
  /** Export name. */
  name: string;
  /** The export's port as it serves now: the linear root of its tree. */
  port: StoragePort;
  /** Legs to append, in order. */
  legs: readonly TreeLegSpec[];
}

export async function prepareGrowth(
  targets: readonly GrowthTarget[],
  open: (node: TreeNodeSpec) => Promise<StoragePort>,
  announce: (name: string) => void,
): Promise<PreparedGrowth> {
  const opened: Array<{ target: GrowthTarget & { port: LinearPort }; legs: Array<{ label: string; port: StoragePort }> }> = [];
  const closeAll = () => Promise.allSettled(opened.flatMap((o) => o.legs.map((leg) => leg.port.close()))).then(() => {});
  try {
    for (const target of targets) {
      if (target.legs.length === 0) continue;
      const port = target.port;
      if (!(port instanceof LinearPort)) {
        throw new DstdError("E_CONFIG", `export '${target.name}' is served by a ${port.kind} node, not the linear node its tree names; restart it to change its tree`);
      }
      const entry = { target: { ...target, port }, legs: [] as Array<{ label: string; port: StoragePort }> };
      opened.push(entry);
      for (const leg of target.legs) {
        let legPort: StoragePort;
        try {
          legPort = await open(leg.node);
        } catch (error) {
          throw new DstdError("E_CONFIG", `export '${target.name}': new leg ${leg.label} cannot be opened: ${errorMessage(error)}`);
        }
        entry.legs.push({ label: leg.label, port: legPort });
        const problem = port.appendProblem({ label: leg.label, port: legPort });
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
      for (const { target, legs } of opened) {
        const before = target.port.size;
        try {
          for (const leg of legs) target.port.append(leg);
        } catch (error) {
          // Only a node closed since prepare (its group stopping) gets here: nothing to grow.
          lines.push(`export '${target.name}' not grown: ${errorMessage(error)}`);
          void Promise.allSettled(legs.map((leg) => leg.port.close()));
          continue;
        }
        announce(target.name);
        lines.push(
          `export '${target.name}' grown from ${formatSize(before)} to ${formatSize(target.port.size)}: appended ${legs.map((leg) => `leg ${leg.label}`).join(", ")}`,
        );
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
