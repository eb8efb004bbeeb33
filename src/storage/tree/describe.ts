/**
 * @module storage/tree/describe — the status snapshot of a storage tree: every node (linear,
 * stripe, mirror, remote leg, local leg) says what it is, and a mirror says each leg's state,
 * generation and resync progress. `dstd status --json` shows it under the export
 * (control/schema.ts ExportEntry.tree; docs/tree.md "Status").
 */
import type { StoragePort } from "../port.ts";

export interface ResyncSnapshot {
  /** Bytes of regions still to copy. */
  remainingBytes: number;
  /** Bytes of regions copied since this resync began. */
  doneBytes: number;
  /** Payload bytes written to the leg by this resync (all-zero chunks are sent as WRITE_ZEROES and counted in zeroedBytes). */
  copiedBytes: number;
  zeroedBytes: number;
  /** Whole-leg resync (a new or replaced leg) rather than the recorded dirty regions. */
  full: boolean;
}

export interface LegSnapshot {
  /** Position in its parent (0-based). */
  index: number;
  /** The leg as configured: a URL, a path, "memory", or the child's kind. */
  label: string;
  /** Mirror legs: in-sync, syncing, degraded, absent, suspended, foreign, diverged, damaged, too-small. Others: "ok". */
  state: string;
  /** Mirror legs: the generation found on (or last written to) the leg's metadata; null when unknown. */
  generation?: number | null;
  writeMostly?: boolean;
  /** Mirror legs: bytes this leg may be missing (its dirty regions). */
  dirtyBytes?: number;
  resync?: ResyncSnapshot | null;
  /** Mirror legs: the last error that degraded it, and how often it was degraded. */
  lastError?: string | null;
  degradations?: number;
  /** Mirror legs: times it failed again while resyncing since it was last in sync (its probes back off). */
  flaps?: number;
  /** Linear legs: where the leg starts in the node's address space. */
  offsetBytes?: number;
  sizeBytes?: number;
  /** The leg itself (nested trees); null when it could not be opened. */
  node: NodeSnapshot | null;
}

export interface NodeSnapshot {
  kind: string;
  description: string;
  sizeBytes: number;
  /** Stripe chunk. */
  chunkBytes?: number;
  /** Mirror: its current generation, bitmap granularity and read policy. */
  generation?: number;
  regionBytes?: number;
  readPolicy?: string;
  /** Remote leg: the DST link state (ready, connecting, …) and the engine's counters. */
  link?: string;
  counters?: Record<string, number>;
  legs?: LegSnapshot[];
}

/** A port that can describe itself (every tree node and the remote leg). */
export interface Describable {
  describe(): NodeSnapshot;
}

export function isDescribable(port: StoragePort): port is StoragePort & Describable {
  return typeof (port as Partial<Describable>).describe === "function";
}

/** The snapshot of any port: its own when it has one, else its kind, origin and size. */
export function snapshotOf(port: StoragePort): NodeSnapshot {
  if (isDescribable(port)) return port.describe();
  return { kind: port.kind, description: port.description, sizeBytes: port.size };
}
