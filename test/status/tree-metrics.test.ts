/**
 * status/tree-metrics: every mirror leg of every export tree, nested ones named by their place
 * in the tree, from the snapshots `dstd status` shows.
 */
import { expect, test } from "bun:test";
import type { ServiceStatus } from "../../src/control/schema.ts";
import type { LegSnapshot, NodeSnapshot } from "../../src/storage/tree/describe.ts";
import { mirrorViews } from "../../src/status/tree-metrics.ts";

const leaf = (label: string): NodeSnapshot => ({ kind: "file", description: label, sizeBytes: 1 });
const mirrorLeg = (index: number, label: string, state: string, node: NodeSnapshot | null, extra: Partial<LegSnapshot> = {}): LegSnapshot => ({ index, label, state, node, dirtyBytes: 0, degradations: 0, resync: null, ...extra });

test("mirrors at the root and nested under a stripe are found, with their legs' state, missing bytes and resync", () => {
  const inner: NodeSnapshot = {
    kind: "mirror",
    description: "inner",
    sizeBytes: 1,
    generation: 7,
    legs: [mirrorLeg(0, "x", "in-sync", leaf("x")), mirrorLeg(1, "y", "syncing", leaf("y"), { dirtyBytes: 4096, resync: { remainingBytes: 2048, doneBytes: 2048, copiedBytes: 2048, zeroedBytes: 0, full: false } })],
  };
  const stripe: NodeSnapshot = { kind: "stripe", description: "s", sizeBytes: 1, legs: [{ index: 0, label: "p", state: "ok", node: leaf("p") }, { index: 1, label: "mirror(x, y)", state: "ok", node: inner }] };
  const root: NodeSnapshot = { kind: "mirror", description: "root", sizeBytes: 1, generation: 3, legs: [mirrorLeg(0, "a", "in-sync", stripe), mirrorLeg(1, "b", "suspended", null, { dirtyBytes: 65536, degradations: 2 })] };
  const services = [{ name: "export:m", export: { exports: [{ name: "m", tree: root }, { name: "plain" }] } }] as unknown as ServiceStatus[];
  const { mirrors, legs } = mirrorViews(services);
  expect(mirrors).toEqual([
    { export: "m", mirror: "root", generation: 3 },
    { export: "m", mirror: "root/0/1", generation: 7 },
  ]);
  expect(legs).toEqual([
    { export: "m", mirror: "root", leg: "a", state: "in-sync", missingBytes: 0, resyncRemainingBytes: null, degradations: 0 },
    { export: "m", mirror: "root/0/1", leg: "x", state: "in-sync", missingBytes: 0, resyncRemainingBytes: null, degradations: 0 },
    { export: "m", mirror: "root/0/1", leg: "y", state: "syncing", missingBytes: 4096, resyncRemainingBytes: 2048, degradations: 0 },
    { export: "m", mirror: "root", leg: "b", state: "suspended", missingBytes: 65536, resyncRemainingBytes: null, degradations: 2 },
  ]);
});
