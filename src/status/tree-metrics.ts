/**
 * @module status/tree-metrics — what the dstd_mirror_* metric families read: every mirror leg
 * anywhere in the node's export trees (storage/tree/describe.ts snapshots, as `dstd status`
 * shows them), so an alert can fire on a leg that is not in sync (docs/status.md "Metrics").
 *
 * A mirror is named by its place in the export's tree: `root`, or the leg positions leading to
 * it (`root/1/0`: leg 0 of the node that is leg 1 of the root). Labels come from the config
 * (export names, leg labels) and our own vocabularies, never from a peer.
 */
import type { ServiceStatus } from "../control/schema.ts";
import type { NodeSnapshot } from "../storage/tree/describe.ts";

export interface MirrorLegView {
  readonly export: string;
  readonly mirror: string;
  readonly leg: string;
  readonly state: string;
  readonly missingBytes: number;
  /** Bytes the running resync still has to copy; null: no resync running. */
  readonly resyncRemainingBytes: number | null;
  readonly degradations: number;
}

export interface MirrorView {
  readonly export: string;
  readonly mirror: string;
  readonly generation: number;
}

/** Every mirror and mirror leg of the exports in `services`. */
export function mirrorViews(services: readonly ServiceStatus[]): { mirrors: MirrorView[]; legs: MirrorLegView[] } {
  const mirrors: MirrorView[] = [];
  const legs: MirrorLegView[] = [];
  const walk = (exportName: string, node: NodeSnapshot, path: string): void => {
    if (node.kind === "mirror") mirrors.push({ export: exportName, mirror: path, generation: node.generation ?? 0 });
    for (const leg of node.legs ?? []) {
      if (node.kind === "mirror") {
        legs.push({
          export: exportName,
          mirror: path,
          leg: leg.label,
          state: leg.state,
          missingBytes: leg.dirtyBytes ?? 0,
          resyncRemainingBytes: leg.resync?.remainingBytes ?? null,
          degradations: leg.degradations ?? 0,
        });
      }
      if (leg.node !== null) walk(exportName, leg.node, `${path}/${leg.index}`);
    }
  };
  for (const service of services) for (const e of service.export?.exports ?? []) if (e.tree !== undefined) walk(e.name, e.tree, "root");
  return { mirrors, legs };
}
