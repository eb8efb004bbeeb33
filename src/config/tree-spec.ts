/**
 * @module config/tree-spec — a storage tree as configured (docs/tree.md "Configuration"):
 * leaves are local backends or remote DST exports, inner nodes are linear, stripe or mirror
 * over an ordered list of legs. config/tree.ts builds it (config/types.ts TreeNodeSpec) from TOML and flags;
 * storage/tree/open.ts opens it. Here: the bounds and choices the configuration checks (the
 * layers import them).
 */

/** How a mirror picks the leg a read goes to (storage/tree/mirror/mirror.ts). */
export type ReadPolicy = "round-robin" | "least-latency";
export const READ_POLICIES: readonly ReadPolicy[] = ["round-robin", "least-latency"];
/** Most legs of one mirror: the on-leg metadata has a slot per leg (storage/tree/mirror/layout.ts). */
export const MAX_MIRROR_LEGS = 8;
/** A stripe's chunk when none is configured. */
export const DEFAULT_STRIPE_CHUNK = 512 * 1024;

/** Deepest nesting accepted (a mirror of stripes of linears is 3). */
export const MAX_TREE_DEPTH = 8;
/** Most legs one node may have. */
export const MAX_TREE_LEGS = 64;
