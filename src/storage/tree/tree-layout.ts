/**
 * @module storage/tree/tree-layout — what the layout record (storage/tree/layout-book.ts,
 * docs/tree.md "The layout record") allows when a linear or stripe node opens again.
 *
 * Linear: the mapping depends on the legs' sizes (leg i starts where leg i − 1 ends). A leg
 * that grew while the node was stopped (a device extended, a remote export resized, a file
 * truncated larger) would move every byte of the legs after it on the next open — silently,
 * as dm-linear would if its table were computed from the devices' sizes. So each leg keeps
 * the place it was given first: a recorded leg other than the last contributes exactly its
 * recorded length (a larger leg leaves the rest unused), the last may grow (nothing follows
 * it), and a leg smaller than its record, or a record naming more legs than the configuration,
 * is refused: the data placed there would be lost or moved.
 *
 * Stripe: the mapping depends on the chunk size and the number and order of the legs, so a
 * change of any of them would scramble every chunk: refused.
 *
 * Both: a recorded leg named at another position (legs reordered) is refused; a leg with a
 * new name at a recorded position is a replacement (its data copied there), noted and listed
 * in `replaced` (under a mirror leg the opener refuses it: storage/tree/open.ts).
 *
 * Pure: no I/O.
 */
import type { TreeNodeSpec } from "../../config/types.ts";
import { formatSize } from "../../lib/size.ts";

/** One leg's place as recorded: its label when recorded (for messages) and the bytes it holds. */
export interface LayoutEntry {
  label: string;
  bytes: number;
}

/** Where leg `index` of the node at `at` sits: the record's key ("" the root, "1.0" leg 0 of the root's leg 1). */
export function legAt(at: string, index: number): string {
  return at === "" ? `${index}` : `${at}.${index}`;
}

/** Why a disk replaced inside a mirror leg while the export was stopped is refused, and what to do instead. */
export const REPLACED_UNDER_MIRROR =
  "a disk replaced while the export was stopped, which the mirror would take as holding the leg's data; " +
  'replace it while the export runs (dstd leg suspend, then a reload: the leg is resynced whole), or, if it is a copy of the disk it replaces, give it that disk\'s name (name = "…")';

export type Placement = { lengths: number[]; notes: string[]; replaced: string[] } | { problem: string };

/** What the record holds of a stripe node. */
export interface StripeRecord {
  chunkBytes: number;
  legs: string[];
  /** The size it served (its rows × legs × chunk): a leg that shrank below it would cut rows off. */
  bytes?: number;
}

/** Why a stripe that opened at `size` over legs of `sizes` cannot serve what it recorded, or null. */
export function stripeShrunk(labels: readonly string[], sizes: readonly number[], size: number, recorded: StripeRecord | null): string | null {
  if (recorded?.bytes === undefined || size >= recorded.bytes) return null;
  const per = recorded.bytes / labels.length;
  const short = labels.map((label, i) => [label, sizes[i]!] as const).filter(([, bytes]) => bytes < per);
  return (
    `it served ${formatSize(recorded.bytes)} and can serve ${formatSize(size)} now: ${short.map(([label, bytes]) => `leg ${label} is ${formatSize(bytes)}`).join(", ")}, ` +
    `and each leg holds ${formatSize(per)} of its data (it shrank or is not the same storage)`
  );
}

/** One node's entry in the record. */
export type NodeLayout = { kind: "linear"; legs: LayoutEntry[] } | ({ kind: "stripe" } & StripeRecord);

/**
 * Which record binds a `kind` node over legs `labels`, given what is recorded where it sits:
 * `record` (null: none binds — nothing recorded, or none of the recorded legs is named any
 * more: another node sits there now, e.g. a mirror leg replaced by new disks, with a `note`),
 * or a `problem` when the same legs were laid out by another kind of node.
 */
export function bindingRecord(kind: "linear" | "stripe", labels: readonly string[], recorded: NodeLayout | null): { record: NodeLayout | null; note?: string } | { problem: string } {
  if (recorded === null) return { record: null };
  const was = recorded.kind === "linear" ? recorded.legs.map((e) => e.label) : recorded.legs;
  if (!was.some((label) => labels.includes(label))) {
    return { record: null, note: `none of the legs recorded here (${was.join(", ")}) is in the configuration: a new node, laid out anew` };
  }
  if (recorded.kind !== kind) return { problem: `its legs' data was laid out by a ${recorded.kind} node, and a ${kind} would place it elsewhere` };
  return { record: recorded };
}

/**
 * What the record refuses in a configured tree before anything is opened (a reload that
 * restarts an export group checks it first): every linear and stripe node checked by what its
 * configuration alone says — kind, chunk, leg count, order, dropped legs. The sizes of a
 * linear node's legs are checked when they are opened (placeLegs). One line per problem,
 * naming the node.
 */
export function layoutProblems(root: TreeNodeSpec, recordAt: (at: string) => NodeLayout | null): string[] {
  const problems: string[] = [];
  /** `mirrorLeg`: the label of the mirror leg this node is inside (a replaced disk there is refused: storage/tree/open.ts). */
  const walk = (node: TreeNodeSpec, at: string, mirrorLeg: string | null): void => {
    if (!("legs" in node)) return;
    node.legs.forEach((leg, i) => walk(leg.node, legAt(at, i), node.kind === "mirror" ? leg.label : mirrorLeg));
    if (node.kind === "mirror") return;
    const where = at === "" ? `the ${node.kind} root` : `the ${node.kind} node at ${at}`;
    const labels = node.legs.map((leg) => leg.label);
    const bound = bindingRecord(node.kind, labels, recordAt(at));
    if ("problem" in bound) return void problems.push(`${where}: ${bound.problem}`);
    const record = bound.record;
    if (record === null) return;
    const replaced: string[] = [];
    const problem = record.kind === "stripe" ? stripeProblem(labels, node.kind === "stripe" ? node.chunkBytes : 0, record, replaced) : linearLegsProblem(labels, record.legs, replaced);
    if (problem !== null) problems.push(`${where}: ${problem}`);
    else if (mirrorLeg !== null && replaced.length > 0) problems.push(`${where}, in mirror leg ${mirrorLeg}: ${replaced.join("; ")}: ${REPLACED_UNDER_MIRROR}`);
  };
  walk(root, "", null);
  return problems;
}

/**
 * A recorded leg the configuration names at another position, as a refusal, or null; and in
 * `replaced` a line per position whose leg has a new name (a replacement).
 */
function orderProblem(labels: readonly string[], recorded: readonly string[], replaced: string[]): string | null {
  // A name used twice (two memory disks of one size) says nothing about order.
  const once = (list: readonly string[], label: string) => list.indexOf(label) === list.lastIndexOf(label);
  for (const [i, label] of labels.entries()) {
    const was = recorded.indexOf(label);
    if (was !== -1 && was !== i && once(labels, label) && once(recorded, label)) {
      return `leg ${label} is named at position ${i} and its data was placed as leg ${was}: reordering legs moves their data`;
    }
  }
  for (const [i, label] of labels.entries()) {
    const was = recorded[i];
    if (was !== undefined && was !== label) replaced.push(`leg ${i} is ${label} (recorded as ${was})`);
  }
  return null;
}

/** Whether a stripe opened with `chunkBytes` over legs `labels` fits what was recorded (null: no record). */
export function checkStripe(labels: readonly string[], chunkBytes: number, recorded: StripeRecord | null): { replaced: string[] } | { problem: string } {
  const replaced: string[] = [];
  const problem = recorded === null ? null : stripeProblem(labels, chunkBytes, recorded, replaced);
  return problem !== null ? { problem } : { replaced };
}

function stripeProblem(labels: readonly string[], chunkBytes: number, recorded: StripeRecord, replaced: string[] = []): string | null {
  if (recorded.chunkBytes !== chunkBytes) {
    return `its chunk is ${formatSize(chunkBytes)} and its data was striped in ${formatSize(recorded.chunkBytes)} chunks: every chunk would be read from the wrong place`;
  }
  if (recorded.legs.length !== labels.length) {
    return `it names ${labels.length} legs and its data was striped over ${recorded.legs.length}: a stripe's mapping depends on its leg count (make a new stripe and copy)`;
  }
  return orderProblem(labels, recorded.legs, replaced);
}

/** A linear node's legs against its record, before their sizes are known: reordered or dropped legs. */
function linearLegsProblem(labels: readonly string[], recorded: readonly LayoutEntry[], replaced: string[]): string | null {
  const order = orderProblem(
    labels,
    recorded.map((e) => e.label),
    replaced,
  );
  if (order !== null) return order;
  if (recorded.length > labels.length) {
    const dropped = recorded.slice(labels.length);
    return (
      `the layout record places ${recorded.length} legs and the configuration names ${labels.length}: ` +
      `${dropped.map((e) => `${e.label} (${formatSize(e.bytes)})`).join(", ")} would be dropped with the data placed there`
    );
  }
  return null;
}

/**
 * The length each leg contributes. `sizes[i]` is leg i's size now; `unit` the node's block
 * size; `recorded` the lengths recorded by an earlier open (null: none, a new node).
 */
export function placeLegs(legs: readonly { label: string; size: number }[], unit: number, recorded: readonly LayoutEntry[] | null): Placement {
  const lengths: number[] = [];
  const notes: string[] = [];
  const replaced: string[] = [];
  if (recorded !== null) {
    const problem = linearLegsProblem(
      legs.map((leg) => leg.label),
      recorded,
      replaced,
    );
    if (problem !== null) return { problem };
  }
  for (const [i, leg] of legs.entries()) {
    const own = Math.floor(leg.size / unit) * unit;
    const entry = recorded?.[i];
    if (entry === undefined) {
      lengths.push(own);
      continue;
    }
    const same = entry.label === leg.label ? "" : ` (recorded as ${entry.label})`;
    if (entry.bytes % unit !== 0) return { problem: `leg ${i} ${leg.label}${same}: its recorded ${entry.bytes} bytes are not whole ${unit}-byte blocks of the node` };
    if (own < entry.bytes) {
      return {
        problem:
          `leg ${i} ${leg.label}${same} is ${formatSize(own)} and the node placed ${formatSize(entry.bytes)} of data on it: ` +
          `it shrank or is not the same storage (every byte after it would move)`,
      };
    }
    const last = i === legs.length - 1;
    if (last) {
      lengths.push(own);
      if (own > entry.bytes) notes.push(`leg ${i} ${leg.label} is the last and grew from ${formatSize(entry.bytes)} to ${formatSize(own)}: the node grows with it`);
      continue;
    }
    lengths.push(entry.bytes);
    if (own > entry.bytes) notes.push(`leg ${i} ${leg.label} is ${formatSize(own)}; it keeps its place of ${formatSize(entry.bytes)} so that the legs after it do not move`);
  }
  return { lengths, notes, replaced };
}
