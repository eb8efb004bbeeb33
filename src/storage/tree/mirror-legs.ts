/**
 * @module storage/tree/mirror-legs — finding the mirror leg an operator names (`dstd leg
 * suspend|resume NAME LEG`, docs/tree.md "Suspending a leg for maintenance") anywhere in an
 * export's tree: a mirror at the root or nested under linear, stripe or mirror nodes, and
 * under the layers an export puts over its tree.
 *
 * LEG is the leg's label as `dstd status` shows it (its `name` when configured, else its URL,
 * path or shape), or its position in its mirror when the tree has one mirror. A name that
 * matches no leg, or more than one, is an error that lists the mirror legs there are.
 */
import { PassThrough } from "../layers/pass-through.ts";
import type { StoragePort } from "../port.ts";
import { LinearPort } from "./linear.ts";
import { MirrorPort } from "./mirror/mirror.ts";
import { StripePort } from "./stripe.ts";

export interface FoundLeg {
  mirror: MirrorPort;
  index: number;
  label: string;
}

/** Every mirror leg under `port`, depth first in configuration order. */
export function mirrorLegsOf(port: StoragePort): FoundLeg[] {
  const out: FoundLeg[] = [];
  const walk = (node: StoragePort): void => {
    if (node instanceof MirrorPort) {
      node.legs.forEach((leg, index) => {
        out.push({ mirror: node, index, label: leg.label });
        if (leg.port !== null) walk(leg.port);
      });
    } else if (node instanceof LinearPort || node instanceof StripePort) {
      for (const leg of node.legs) walk(leg.port);
    } else if (node instanceof PassThrough) {
      walk(node.below); // a layer over the tree (replication's primary, …)
    }
  };
  walk(port);
  return out;
}

/** The leg `selector` names under `port`, or why there is none (one line for the operator). */
export function findMirrorLeg(port: StoragePort, selector: string): FoundLeg | string {
  const all = mirrorLegsOf(port);
  if (all.length === 0) return "it has no mirror: only mirror legs can be suspended (a linear or stripe leg holds data nothing else has)";
  const known = () => all.map((leg) => (new Set(all.map((l) => l.mirror)).size === 1 ? `${leg.index} (${leg.label})` : leg.label)).join(", ");
  const byLabel = all.filter((leg) => leg.label === selector);
  if (byLabel.length === 1) return byLabel[0]!;
  if (byLabel.length > 1) return `${byLabel.length} mirror legs are labelled '${selector}': give them distinct names (name = "…" on the leg)`;
  if (/^\d+$/.test(selector)) {
    const mirrors = new Set(all.map((leg) => leg.mirror));
    if (mirrors.size > 1) return `the tree has ${mirrors.size} mirrors: name the leg by its label (${known()})`;
    const byIndex = all.find((leg) => leg.index === Number(selector));
    if (byIndex !== undefined) return byIndex;
  }
  return `no mirror leg '${selector}'; the mirror legs are ${known()}`;
}
