/**
 * @module storage/tree/linear-layout — where a linear node places its legs when it opens,
 * given what it recorded before (docs/tree.md "The linear layout record").
 *
 * A linear node's mapping depends on its legs' sizes: leg i starts where leg i − 1 ends. A leg
 * that grew while the node was stopped (a device extended, a remote export resized, a file
 * truncated larger) would move every byte of the legs after it on the next open — silently,
 * as dm-linear would if its table were computed from the devices' sizes. So each leg keeps
 * the place it was given first: a recorded leg other than the last contributes exactly its
 * recorded length (a larger leg leaves the rest unused), the last may grow (nothing follows
 * it), and a leg smaller than its record, or a record naming more legs than the configuration,
 * is refused: the data placed there would be lost or moved.
 *
 * Pure: no I/O (the record itself is storage/tree/layout-book.ts).
 */
import { formatSize } from "../../lib/size.ts";

/** One leg's place as recorded: its label when recorded (for messages) and the bytes it holds. */
export interface LayoutEntry {
  label: string;
  bytes: number;
}

export type Placement = { lengths: number[]; notes: string[] } | { problem: string };

/**
 * The length each leg contributes. `sizes[i]` is leg i's size now; `unit` the node's block
 * size; `recorded` the lengths recorded by an earlier open (null: none, a new node).
 */
export function placeLegs(legs: readonly { label: string; size: number }[], unit: number, recorded: readonly LayoutEntry[] | null): Placement {
  const lengths: number[] = [];
  const notes: string[] = [];
  if (recorded !== null && recorded.length > legs.length) {
    const dropped = recorded.slice(legs.length);
    return {
      problem:
        `the layout record places ${recorded.length} legs and the configuration names ${legs.length}: ` +
        `${dropped.map((e) => `${e.label} (${formatSize(e.bytes)})`).join(", ")} would be dropped with the data placed there`,
    };
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
  return { lengths, notes };
}
