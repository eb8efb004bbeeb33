/**
 * @module storage/tree/spec — a storage tree as configured (docs/tree.md "Configuration"):
 * leaves are local backends or remote DST exports, inner nodes are linear, stripe or mirror
 * over an ordered list of legs. config/tree.ts builds it from TOML and flags; storage/tree/open.ts
 * opens it. Types only.
 */
import type { ExportUrl } from "../../lib/address.ts";
import type { ChecksumName, Reliability, SuiteName } from "../../config/schema.ts";
import type { ReadPolicy } from "./mirror/mirror.ts";

export type TreeNodeSpec =
  | { readonly kind: "file"; readonly path: string; readonly sizeBytes: number | null }
  | { readonly kind: "device"; readonly path: string }
  | { readonly kind: "memory"; readonly sizeBytes: number }
  | {
      readonly kind: "remote";
      readonly url: ExportUrl;
      /** Identity key to authenticate with; null: anonymous (loopback and Unix sockets only). */
      readonly keyFile: string | null;
      readonly suites: readonly SuiteName[];
      readonly checksums: readonly ChecksumName[];
      readonly reliability: Readonly<Reliability>;
    }
  | { readonly kind: "linear"; readonly legs: readonly TreeLegSpec[] }
  | { readonly kind: "stripe"; readonly legs: readonly TreeLegSpec[]; readonly chunkBytes: number }
  | { readonly kind: "mirror"; readonly legs: readonly TreeLegSpec[]; readonly readPolicy: ReadPolicy; readonly assumeClean: boolean };

export interface TreeLegSpec {
  readonly node: TreeNodeSpec;
  /** Mirror legs: never read while another leg is in sync (a WAN leg). */
  readonly writeMostly: boolean;
  /** Shown in status and logs: the URL, the path, or the node's name. */
  readonly label: string;
}

/** Deepest nesting accepted (a mirror of stripes of linears is 3). */
export const MAX_TREE_DEPTH = 8;
/** Most legs one node may have. */
export const MAX_TREE_LEGS = 64;
