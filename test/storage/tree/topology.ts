/**
 * @module test/storage/tree/topology — random storage trees for the simulation: linear,
 * stripe and mirror nodes nested up to three levels over SimStore leaves, and building one
 * life of such a tree (fresh ports on the same stores) into a StoragePort.
 */
import type { Prng } from "../../../src/lib/prng.ts";
import type { StoragePort } from "../../../src/storage/port.ts";
import type { TreeClock } from "../../../src/storage/tree/clock.ts";
import { LinearPort } from "../../../src/storage/tree/linear.ts";
import { legAt, placeLegs, type LayoutEntry } from "../../../src/storage/tree/tree-layout.ts";
import { MirrorPort, openMirror, type ReadPolicy } from "../../../src/storage/tree/mirror/mirror.ts";
import { StripePort } from "../../../src/storage/tree/stripe.ts";
import type { LayoutOptions } from "../../../src/storage/tree/mirror/layout.ts";

/** The smallest metadata area the layout allows: 2 superblocks + 9 one-page bitmaps. */
export const SIM_META_BYTES = 8192 + 9 * 4096;

export interface MirrorTuning {
  layout: LayoutOptions;
  readPolicy: ReadPolicy;
  probeIntervalMs: number;
  resyncWindow: number;
  resyncChunkBytes: number;
  checkpointBytes: number;
  assumeClean: boolean;
  /** Regions per bitmap before a grow doubles them (MirrorOptions.growRegions); undefined: all. */
  growRegions: number | undefined;
}

export type NodeSpec =
  | { kind: "leaf"; leaf: number }
  | { kind: "linear"; children: NodeSpec[] }
  | { kind: "stripe"; chunk: number; children: NodeSpec[] }
  | { kind: "mirror"; children: NodeSpec[]; writeMostly: boolean[]; tuning: MirrorTuning };

export interface TreeShape {
  root: NodeSpec;
  leafSizes: number[];
  name: string;
}

/**
 * Size of `spec` as the layers compute it (sim legs have 512-byte blocks), or -1 when a
 * mirror in it would have less than 8 KiB of data.
 */
export function sizeOf(spec: NodeSpec, leafSizes: readonly number[]): number {
  if (spec.kind === "leaf") return leafSizes[spec.leaf]!;
  const sizes = spec.children.map((c) => sizeOf(c, leafSizes));
  if (sizes.some((s) => s < 0)) return -1;
  if (spec.kind === "linear") return sizes.reduce((a, b) => a + Math.floor(b / 512) * 512, 0);
  if (spec.kind === "stripe") return spec.children.length * Math.floor(Math.min(...sizes) / spec.chunk) * spec.chunk;
  const data = Math.floor((Math.min(...sizes) - SIM_META_BYTES) / 512) * 512;
  return data < 8192 ? -1 : data;
}

/**
 * Online growth of a tree (`dstd resize`): the largest size above the tree's own that it can
 * grow to when leaf i can grow up to `capacities[i]`, or 0. A mirror grows its legs to its
 * metadata + the size (any multiple of 512), a stripe its legs to size/N (whole rows of N
 * chunks), a linear node its last leg by what it grows (its other legs keep their places),
 * a leaf up to its capacity.
 */
export function growTargetOf(spec: NodeSpec, leafSizes: readonly number[], capacities: readonly number[]): number {
  const fits = (node: NodeSpec, size: number): boolean => {
    if (size <= sizeOf(node, leafSizes)) return true; // a leg with room already is not grown
    if (node.kind === "leaf") return size <= capacities[node.leaf]!;
    if (node.kind === "linear") {
      const last = node.children[node.children.length - 1]!;
      return size % 512 === 0 && fits(last, sizeOf(last, leafSizes) + size - sizeOf(node, leafSizes));
    }
    if (node.kind === "stripe") return size % (node.children.length * node.chunk) === 0 && node.children.every((c) => fits(c, size / node.children.length));
    return size % 512 === 0 && node.children.every((c) => fits(c, SIM_META_BYTES + size));
  };
  const bound = (node: NodeSpec): number => {
    if (node.kind === "leaf") return capacities[node.leaf]!;
    if (node.kind === "linear") {
      const last = node.children[node.children.length - 1]!;
      return sizeOf(node, leafSizes) - sizeOf(last, leafSizes) + bound(last);
    }
    const least = Math.min(...node.children.map(bound));
    return node.kind === "stripe" ? least * node.children.length : least - SIM_META_BYTES;
  };
  const now = sizeOf(spec, leafSizes);
  for (let size = Math.floor(bound(spec) / 512) * 512; size > now; size -= 512) if (fits(spec, size)) return size;
  return 0;
}

/** Leaves whose parent is a stripe, or that are a linear node's last leg (files to them: a grown one reads as zeroes, as after ftruncate). */
export function stripeLeaves(spec: NodeSpec): Set<number> {
  const out = new Set<number>();
  const walk = (node: NodeSpec): void => {
    if (node.kind === "leaf") return;
    for (const child of node.children) {
      if (child.kind === "leaf" && (node.kind === "stripe" || (node.kind === "linear" && child === node.children[node.children.length - 1]))) out.add(child.leaf);
      walk(child);
    }
  };
  walk(spec);
  return out;
}

/** A random tree whose mirrors all have room for data (drawn again until one fits). */
export function randomShape(prng: Prng): TreeShape {
  for (;;) {
    const shape = drawShape(prng);
    // Leaves outside any mirror need no room for metadata: keep them small (cheaper seeds).
    const shrink = (spec: NodeSpec, underMirror: boolean): void => {
      if (spec.kind === "leaf") {
        if (!underMirror) shape.leafSizes[spec.leaf] = (1 + prng.int(5)) * 8192;
        return;
      }
      for (const child of spec.children) shrink(child, underMirror || spec.kind === "mirror");
    };
    shrink(shape.root, false);
    if (sizeOf(shape.root, shape.leafSizes) >= 8192) return shape;
  }
}

/** A random tree: one-level linear / stripe / mirror, or a nested tree up to three levels. */
function drawShape(prng: Prng): TreeShape {
  const leafSizes: number[] = [];
  const leaf = (): NodeSpec => {
    leafSizes.push((14 + prng.int(11)) * 4096); // 56–96 KiB
    return { kind: "leaf", leaf: leafSizes.length - 1 };
  };
  const node = (kind: "linear" | "stripe" | "mirror", children: NodeSpec[]): NodeSpec => {
    if (kind === "linear") return { kind, children };
    if (kind === "stripe") return { kind, chunk: prng.pick([512, 1024, 4096, 8192]), children };
    return { kind, children, writeMostly: children.map(() => prng.chance(0.15)), tuning: tuning(prng) };
  };
  const nested = (depth: number): NodeSpec => {
    if (depth === 0 || prng.chance(0.3)) return leaf();
    const kind = prng.pick(["linear", "stripe", "mirror"] as const);
    const count = 2 + prng.int(2);
    return node(kind, Array.from({ length: count }, () => nested(depth - 1)));
  };
  const roll = prng.int(100);
  let root: NodeSpec;
  let name: string;
  if (roll < 15) [root, name] = [node("linear", Array.from({ length: 2 + prng.int(3) }, leaf)), "linear"];
  else if (roll < 30) [root, name] = [node("stripe", Array.from({ length: 2 + prng.int(3) }, leaf)), "stripe"];
  else if (roll < 55) [root, name] = [node("mirror", Array.from({ length: 2 + prng.int(2) }, leaf)), "mirror"];
  else {
    // A three-level tree whose root is a mapping node with at least one nested child.
    const kind = prng.pick(["linear", "stripe", "mirror"] as const);
    const children = Array.from({ length: 2 + prng.int(2) }, (_, i) => (i === 0 ? node(prng.pick(["linear", "stripe", "mirror"] as const), [nested(1), nested(1)]) : nested(2)));
    [root, name] = [node(kind, children), "tree"];
  }
  return { root, leafSizes, name };
}

function tuning(prng: Prng): MirrorTuning {
  const regionBytes = prng.pick([512, 1024, 2048, 4096]);
  const t = {
    layout: { metaBytes: SIM_META_BYTES, regionBytes, activeBytes: regionBytes * prng.pick([1, 4, 16]) },
    readPolicy: prng.pick(["round-robin", "least-latency"] as const),
    probeIntervalMs: 20 + prng.int(300),
    resyncWindow: 1 + prng.int(4),
    resyncChunkBytes: prng.pick([4096, 8192, 65536]),
    checkpointBytes: regionBytes * (1 + prng.int(16)),
    assumeClean: prng.chance(0.3),
  };
  // Few regions per bitmap, so that grows double the regions at simulator sizes (mirror/grow.ts);
  // never so few that a grow could need regions past the write-intent regions (no simulated
  // mirror outgrows SIM_MIRROR_BOUND), since a grow with every leg in sync must succeed.
  // Derived from a draw already made, so every seed keeps the choices it had before this.
  const few = [undefined, 4, 8, 16, 32][t.probeIntervalMs % 5];
  const activeBytes = t.layout.activeBytes!;
  return { ...t, growRegions: few === undefined || activeBytes === regionBytes ? undefined : Math.max(few, Math.ceil(SIM_MIRROR_BOUND / activeBytes)) };
}

/** More than any simulated mirror's data grows to (three leaves of at most 128 KiB under it). */
const SIM_MIRROR_BOUND = 512 * 1024;

export function describeShape(spec: NodeSpec): string {
  if (spec.kind === "leaf") return `L${spec.leaf}`;
  const inner = spec.children.map(describeShape).join(",");
  if (spec.kind === "stripe") return `stripe/${spec.chunk}(${inner})`;
  if (spec.kind === "mirror") return `mirror(${spec.children.map((c, i) => describeShape(c) + (spec.writeMostly[i] ? "*" : "")).join(",")})`;
  return `linear(${inner})`;
}

export interface Built {
  port: StoragePort;
  /** Every mirror of the tree with the leaves under each of its legs. */
  mirrors: { mirror: MirrorPort; legLeaves: number[][] }[];
}

export function leavesOf(spec: NodeSpec): number[] {
  return spec.kind === "leaf" ? [spec.leaf] : spec.children.flatMap(leavesOf);
}

/** Leaves that are a linear node's leg other than its last (their growth would move the legs after them). */
export function linearInnerLeaves(spec: NodeSpec): Set<number> {
  const out = new Set<number>();
  const walk = (node: NodeSpec): void => {
    if (node.kind === "leaf") return;
    node.children.forEach((child, i) => {
      if (child.kind === "leaf" && node.kind === "linear" && i < node.children.length - 1) out.add(child.leaf);
      walk(child);
    });
  };
  walk(spec);
  return out;
}

/**
 * Build one life of `spec` over `ports` (one per leaf). Mirrors open asynchronously. Linear
 * nodes are placed as storage/tree/open.ts places them: by `layouts` (the layout record, kept
 * by the caller across lives: durable before a layout is served) and the rules of
 * storage/tree/tree-layout.ts.
 */
export async function buildTree(
  spec: NodeSpec,
  ports: readonly StoragePort[],
  clock: TreeClock,
  prng: Prng,
  log: { info(m: string): void; warn(m: string): void },
  reopen: (leaf: number) => StoragePort,
  layouts: Map<string, LayoutEntry[]>,
): Promise<Built> {
  const mirrors: Built["mirrors"] = [];
  const build = async (node: NodeSpec, at: string): Promise<StoragePort> => {
    if (node.kind === "leaf") return ports[node.leaf]!;
    const children = [];
    for (const [i, child] of node.children.entries()) children.push(await build(child, legAt(at, i)));
    const legs = children.map((port, i) => ({ port, label: describeShape(node.children[i]!) }));
    if (node.kind === "linear") {
      const placed = placeLegs(
        legs.map((leg) => ({ label: leg.label, size: leg.port.size })),
        LinearPort.unitOf(legs),
        layouts.get(at) ?? null,
      );
      if ("problem" in placed) throw new Error(`linear node at "${at}": ${placed.problem}`);
      const linear = new LinearPort(legs, { lengths: placed.lengths, record: (layout) => layouts.set(at, layout) });
      layouts.set(at, linear.layout());
      return linear;
    }
    if (node.kind === "stripe") return new StripePort(legs, node.chunk);
    const t = node.tuning;
    const mirror = await openMirror(
      legs.map((leg, i) => {
        const child = node.children[i]!;
        // A leaf that could not be read at open is reopened by the mirror's probes.
        const open = child.kind === "leaf" ? async () => reopen(child.leaf) : undefined;
        return { ...leg, writeMostly: node.writeMostly[i], open };
      }),
      {
        clock,
        randomId: () => prng.bytes(16),
        log,
        readPolicy: t.readPolicy,
        assumeClean: t.assumeClean,
        probeIntervalMs: t.probeIntervalMs,
        resyncWindow: t.resyncWindow,
        resyncChunkBytes: t.resyncChunkBytes,
        checkpointBytes: t.checkpointBytes,
        layout: t.layout,
        growRegions: t.growRegions,
      },
    );
    mirrors.push({ mirror, legLeaves: node.children.map(leavesOf) });
    return mirror;
  };
  const port = await build(spec, "");
  return { port, mirrors };
}
