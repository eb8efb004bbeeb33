/**
 * @module storage/tree/mirror/status — the mirror as `dstd status` shows it (docs/tree.md
 * "Leg states"): generation, region size, read policy, and per leg its state, generation on
 * disk, what it misses, resync progress, last error and the node below it.
 */
import type { NodeSnapshot } from "../describe.ts";
import { snapshotOf } from "../describe.ts";
import type { MirrorState } from "./state.ts";

export function mirrorSnapshot(s: MirrorState, kind: string, description: string): NodeSnapshot {
  return {
    kind,
    description,
    sizeBytes: s.size,
    generation: s.generation,
    regionBytes: s.layout.regionBytes,
    readPolicy: s.readPolicy,
    legs: s.legs.map((leg) => ({
      index: leg.index,
      label: leg.label,
      state: leg.state,
      generation: leg.diskGen,
      writeMostly: leg.writeMostly,
      dirtyBytes: leg.state === "in-sync" ? 0 : Math.min(leg.needs.count * s.layout.regionBytes, s.size),
      resync: leg.resync === null ? null : { ...leg.resync },
      lastError: leg.lastError,
      degradations: leg.degradations,
      flaps: leg.flaps,
      node: leg.port === null ? null : snapshotOf(leg.port),
    })),
  };
}
