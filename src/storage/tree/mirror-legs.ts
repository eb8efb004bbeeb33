/**
 * @module storage/tree/mirror-legs — finding the mirror leg an operator names (`dstd leg
 * suspend|resume NAME LEG`, docs/tree.md "Suspending a leg for maintenance") anywhere in an
 * export's tree: a mirror at the root or nested under linear, stripe or mirror nodes, and
 * under the layers an export puts over its tree.
 *
 * LEG is the leg's label as `dstd status` shows it (its `name` when configured, else its URL,
 * path or shape), or its position in its mirror when the tree has one mirror. A name that
 * matches no leg, or more than one, is an error that lists the mirror legs there are. Then the
 * leg is suspended or resumed (mirror/suspend.ts), and the operator told what came of it.
 */
import { Errno, errnoMessage } from "../../lib/errno.ts";
import { DstdError } from "../../lib/errors.ts";
import { PassThrough } from "../layers/pass-through.ts";
import type { StoragePort } from "../port.ts";
import { LinearPort } from "./linear.ts";
import { REFUSED_STATES, type LegState } from "./mirror/leg.ts";
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

/**
 * `dstd leg suspend|resume` of the leg `selector` names under `port`, the tree of export `name`:
 * the operator's one-line answer, or a DstdError saying why not. A leg the mirror refused and
 * still refuses when resumed after a repair is not resumed: the error says why (mirror/suspend.ts).
 */
export async function holdMirrorLeg(port: StoragePort, name: string, selector: string, action: "suspend" | "resume"): Promise<string> {
  const found = findMirrorLeg(port, selector);
  if (typeof found === "string") throw new DstdError("E_USAGE", `export '${name}': ${found}`);
  const leg = `export '${name}': leg ${found.label}`;
  const not = `${leg} not ${action === "suspend" ? "suspended" : "resumed"}`;
  const problem = found.mirror.legProblem(found.index, action);
  if (problem !== null) throw new DstdError("E_STATE", `${not}: ${problem}`);
  const was = found.mirror.legs[found.index]!.state;
  const errno = await new Promise<number>((resolve) => found.mirror.setLegHeld(found.index, action, resolve));
  if (errno !== 0) throw new DstdError("E_IO", `${not}: ${errnoMessage(errno)}${errno === Errno.EBUSY ? ` (${found.mirror.legProblem(found.index, action) ?? "its state changed meanwhile"})` : ""}`);
  const now = found.mirror.legs[found.index]!;
  if (action === "suspend") return was === "suspended" ? `${leg} was suspended already` : `${leg} suspended (was ${was}); its writes are recorded for resync until dstd leg resume`;
  if (REFUSED_STATES.has(was)) return repairedAnswer(leg, not, was, now.state, now.lastError);
  return was === "suspended" ? `${leg} resumed: reopened, being probed, and only what it missed is resynced` : `${leg} was not suspended (${now.state}${now.state === "degraded" || now.state === "absent" ? ": probed now" : ""})`;
}

/** What judging a refused leg again came to (the resume waited for the verdict). */
function repairedAnswer(leg: string, not: string, was: LegState, now: LegState, why: string | null): string {
  if (REFUSED_STATES.has(now)) throw new DstdError("E_STATE", `${not}: it is still ${now}: ${why ?? "no reason recorded"}; the mirror leaves it untouched (docs/tree.md "Operator actions")`);
  if (now === "degraded" || now === "absent") return `${leg} resumed after a repair (was ${was}), but it could not be read now (${why ?? "no reason recorded"}): it is probed, and judged when it answers`;
  return `${leg} resumed after a repair (was ${was}): it may rejoin, and is resynced whole while I/O goes on (${now})`;
}
