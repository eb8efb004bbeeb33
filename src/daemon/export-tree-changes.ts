/**
 * @module daemon/export-tree-changes — a reload's in-place tree changes (daemon/tree-changes.ts
 * decides which) applied while the export's clients stay connected:
 *
 * - legs appended to a `linear` root grow the export (docs/tree.md "Growing a linear export"):
 *   DST's "appending a leg grows the export online"; the new size is announced to DST clients
 *   in band (SIZE_NOTICE; NBD clients see it when they reconnect);
 * - mirror legs replaced or added at any mirror of the tree (docs/tree.md "Replacing and
 *   adding mirror legs"): the new leg is resynced whole while I/O goes on. A changed mirror leg
 *   that is a subtree and is open takes the changes inside it (only the disk replaced inside is
 *   resynced); one that is out (suspended, absent, degraded) is replaced whole.
 *
 * Two steps, so that a reload is all or nothing: `prepareTreeChanges` walks the running tree
 * along the change, opens every new leg and checks it fits (anything that can fail: a remote
 * leg that does not answer, a file held by another export or by the leg it would replace, a leg
 * too small, an in-sync leg that would be replaced); `commit` applies them. `abort` closes what
 * was opened. The legs already serving are never touched, except a replaced mirror leg, which is
 * out of sync by then (suspended, degraded, absent).
 */
import { errnoMessage } from "../lib/errno.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import { formatSize } from "../lib/size.ts";
import type { TreeNodeSpec } from "../config/types.ts";
import { PassThrough } from "../storage/layers/pass-through.ts";
import type { StoragePort } from "../storage/port.ts";
import { LinearPort } from "../storage/tree/linear.ts";
import { legAt } from "../storage/tree/tree-layout.ts";
import { MirrorPort } from "../storage/tree/mirror/mirror.ts";
import { StripePort } from "../storage/tree/stripe.ts";
import type { TreeChange } from "./tree-changes.ts";

export interface PreparedTreeChanges {
  /**
   * Apply the opened legs (and announce new sizes); one line per change. Does not throw: a step
   * that cannot be applied any more (its node closed or changed since prepare) goes to
   * `failures` when given (the reload reports it as not applied), else among the lines.
   */
  commit(failures?: string[]): string[];
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

/**
 * Opens a tree node of export `exportName`; `grown`: as a mirror's or a stripe's leg, or a linear's last (a file dstd
 * grew opens at its size); `at`: where it sits in the export's tree (storage/tree/open.ts `at`,
 * the key of its layout record). With `held`, the layout record's writes are held back and a
 * function that writes them is pushed there (storage/tree/layout-book.ts HeldRecords).
 */
export type OpenNode = (exportName: string, node: TreeNodeSpec, grown: boolean, at: string, held?: Array<() => void>) => Promise<StoragePort>;

/** One change to make at commit: `apply` returns its line (or null), `opened` are closed if it cannot run. */
interface Step {
  place: string;
  apply(): string | null;
  opened: StoragePort[];
}

/** The tree node under a port's layers. */
function nodeOf(port: StoragePort): StoragePort {
  let node = port;
  while (node instanceof PassThrough) node = node.below;
  return node;
}

/** Where a node sits, for the lines a reload prints: "export 'm'" or "export 'm', in leg a › b". */
function placeOf(name: string, path: readonly string[]): string {
  return path.length === 0 ? `export '${name}'` : `export '${name}', in leg ${path.join(" › ")}`;
}

export async function prepareTreeChanges(
  targets: readonly TreeChangeTarget[],
  open: OpenNode,
  announce: (name: string) => void,
  warn: (message: string) => void = () => {},
): Promise<PreparedTreeChanges> {
  const steps: Step[] = [];
  const closeAll = () => Promise.allSettled(steps.flatMap((s) => s.opened.map((port) => port.close()))).then(() => {});
  /** Opens a new leg for a step; `what` names it in the refusal. */
  const openLeg = async (name: string, node: TreeNodeSpec, grown: boolean, at: string, what: string, step: Step, held?: Array<() => void>): Promise<StoragePort> => {
    let port: StoragePort;
    try {
      port = await open(name, node, grown, at, held);
    } catch (error) {
      throw new DstdError("E_CONFIG", `export '${name}': new leg ${what} cannot be opened: ${errorMessage(error)}`);
    }
    step.opened.push(port);
    return port;
  };

  const prepare = async (name: string, path: string[], at: string, port: StoragePort, change: TreeChange): Promise<void> => {
    const node = nodeOf(port);
    const place = placeOf(name, path);
    if (change.kind === "linear" || change.kind === "stripe") {
      if (!(change.kind === "linear" ? node instanceof LinearPort : node instanceof StripePort)) throw mismatch(place, node, change.kind);
      const legged = node as LinearPort | StripePort;
      for (const inside of change.inside) {
        const running = legged.legs[inside.index];
        if (running === undefined) throw mismatch(place, node, change.kind);
        await prepare(name, [...path, running.label], legAt(at, inside.index), running.port, inside.change);
        steps.push({ place, apply: () => (legged.relabel(inside.index, inside.leg.label), null), opened: [] });
      }
      if (change.kind === "linear" && change.append.length > 0) {
        const linear = node as LinearPort;
        const step: Step = { place, opened: [], apply: () => null };
        steps.push(step);
        const appended: Array<{ label: string; port: StoragePort }> = [];
        for (const [i, leg] of change.append.entries()) {
          // Only the last leg of a linear node may be larger than its `size` (nothing follows it).
          const index = linear.legs.length + i;
          const opened = await openLeg(name, leg.node, i === change.append.length - 1, legAt(at, index), leg.label, step);
          const problem = linear.appendProblem({ label: leg.label, port: opened });
          if (problem !== null) throw new DstdError("E_CONFIG", `${place}: ${problem}`);
          appended.push({ label: leg.label, port: opened });
        }
        step.apply = () => {
          const before = linear.size;
          for (const leg of appended) linear.append(leg);
          if (path.length === 0) announce(name);
          return `${place} grown from ${formatSize(before)} to ${formatSize(linear.size)}: appended ${appended.map((leg) => `leg ${leg.label}`).join(", ")}`;
        };
      }
      return;
    }
    if (!(node instanceof MirrorPort)) throw mismatch(place, node, "mirror");
    for (const { index, leg, nested } of change.legs) {
      const running = node.legs[index];
      if (running !== undefined && nested !== null && running.port !== null) {
        // An open subtree: change inside it, keep the copy of the data it holds.
        await prepare(name, [...path, running.label], legAt(at, index), running.port, nested);
        steps.push({ place, apply: () => (node.relabelLeg(index, leg.label, () => open(name, leg.node, true, legAt(at, index))), null), opened: [] });
        continue;
      }
      const step: Step = { place, opened: [], apply: () => null };
      steps.push(step);
      // The new leg's layout record is written only once the mirror's record of it (out of
      // sync, resynced whole) is durable: written first, a crash between the two would reopen
      // a subtree that reuses the old leg's first disk as that leg, trusted where not resynced.
      // A probe or a resume that reopens the leg before then holds its record back too; if
      // the mirror's record fails, no later reopen writes one (dropped, not kept: bounded).
      const held: Array<() => void> = [];
      let record: "held" | "written" | "never" = "held";
      const opened = await openLeg(name, leg.node, true, legAt(at, index), leg.label, step, held);
      const problem = node.legChangeProblem(index, opened);
      if (problem !== null) throw new DstdError("E_CONFIG", `${place}: ${problem}`);
      step.apply = () => {
        const reopen = () => open(name, leg.node, true, legAt(at, index), record === "written" ? undefined : record === "held" ? held : []);
        const replaced = node.setLeg(index, { label: leg.label, writeMostly: leg.writeMostly, port: opened, open: reopen });
        node.whenRecorded((errno) => {
          if (errno !== 0) {
            record = "never";
            held.length = 0;
            return warn(`${place}: mirror leg ${index}'s record was not written (${errnoMessage(errno)}): its layout record keeps the old leg, so its next start refuses the new one until it is replaced again`);
          }
          record = "written";
          for (const release of held.splice(0)) {
            try {
              release();
            } catch (error) {
              warn(`${place}: ${errorMessage(error)}`);
            }
          }
        });
        return `${place}: mirror leg ${index} ${replaced === null ? `added: ${leg.label}` : `${replaced} replaced by ${leg.label}`}; resynced whole while I/O goes on`;
      };
    }
  };

  try {
    for (const target of targets) await prepare(target.name, [], "", target.port, target.change);
  } catch (error) {
    await closeAll();
    throw error;
  }
  let settled = false;
  return {
    commit(failures?: string[]): string[] {
      if (settled) return [];
      settled = true;
      const lines: string[] = [];
      for (const step of steps) {
        try {
          const line = step.apply();
          if (line !== null) lines.push(line);
        } catch (error) {
          // Only a node closed since prepare (its group stopping, a mirror leg reopened) gets
          // here: nothing to change.
          (failures ?? lines).push(`${step.place} not changed: ${errorMessage(error)}`);
          void Promise.allSettled(step.opened.map((port) => port.close()));
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

function mismatch(place: string, node: StoragePort, wanted: string): DstdError {
  const running = node instanceof LinearPort ? "linear" : node instanceof StripePort ? "stripe" : node instanceof MirrorPort ? "mirror" : node.kind;
  return new DstdError("E_CONFIG", `${place} is served by a ${running} node, not the ${wanted} node its tree names; restart it to change its tree`);
}
