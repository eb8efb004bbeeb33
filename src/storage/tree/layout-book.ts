/**
 * @module storage/tree/layout-book — the layout record of one export's tree (docs/tree.md
 * "The layout record"): `<state_dir>/layout/<export>.json`, one entry per linear or stripe
 * node, keyed by where the node sits (storage/tree/open.ts `at`: "" for the root, "1.0" for
 * leg 0 of the root's leg 1): a linear node's legs with the length each was given, a stripe's
 * chunk and legs (storage/tree/tree-layout.ts decides how a record binds).
 *
 * Written before a new layout is served — at open, before a reload's appended legs and before
 * a resize's new size — by write, fsync, rename and an fsync of the directory, so a crash
 * leaves the old record or the new one. A record that cannot be read or parsed refuses the
 * open: guessing would risk moving data.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import { DstdError, errorMessage } from "../../lib/errors.ts";
import type { LayoutEntry, NodeLayout } from "./tree-layout.ts";

const FORMAT = "dstd tree layout";
const VERSION = 1;

export type { NodeLayout };

/** What a tree's opener reads and writes of the record (storage/tree/open.ts). */
export interface LayoutRecords {
  /** The record's file (messages name it). */
  readonly path: string;
  get(at: string): NodeLayout | null;
  set(at: string, node: NodeLayout): void;
}

/**
 * The record of a reload's new mirror leg (daemon/export-tree-changes.ts): it starts empty —
 * the leg is resynced whole, so what its slot's old leg recorded binds nothing — and its
 * writes are held back until `release`, called once the mirror's own record of the leg (out
 * of sync, resynced whole) is durable. Written earlier, a crash between the two would reopen
 * a subtree that reuses the old leg's first disk as that leg, trusted where not resynced.
 */
export class HeldRecords implements LayoutRecords {
  private readonly pending = new Map<string, NodeLayout>();
  private released = false;

  constructor(private readonly book: LayoutRecords) {}

  get path(): string {
    return this.book.path;
  }

  get(at: string): NodeLayout | null {
    if (this.released) return this.book.get(at);
    const held = this.pending.get(at);
    return held === undefined ? null : (structuredClone(held) as NodeLayout);
  }

  set(at: string, node: NodeLayout): void {
    if (this.released) return this.book.set(at, node);
    this.pending.set(at, structuredClone(node) as NodeLayout);
  }

  /** Write what was held (throws DstdError E_IO as LayoutBook.set); later writes go straight through. */
  release(): void {
    this.released = true;
    for (const [at, node] of this.pending) this.book.set(at, node);
    this.pending.clear();
  }
}

export class LayoutBook implements LayoutRecords {
  private readonly nodes = new Map<string, NodeLayout>();

  private constructor(
    /** The record's path (messages name it). */
    readonly path: string,
    private readonly exportName: string,
  ) {}

  /** The record of export `name` under `stateDir` (read now if it exists). Throws DstdError (E_CONFIG) for a record it cannot trust. */
  static open(stateDir: string, name: string): LayoutBook {
    const book = new LayoutBook(join(stateDir, "layout", `${fileName(name)}.json`), name);
    if (existsSync(book.path)) book.load();
    return book;
  }

  /** What is recorded for the node at `at`, or null. */
  get(at: string): NodeLayout | null {
    const node = this.nodes.get(at);
    return node === undefined ? null : (structuredClone(node) as NodeLayout);
  }

  /** Record the node at `at` durably (nothing written when it is unchanged). Throws DstdError (E_IO) when it cannot be written. */
  set(at: string, node: NodeLayout): void {
    const copy = structuredClone(node) as NodeLayout;
    const before = this.nodes.get(at);
    if (before !== undefined && JSON.stringify(before) === JSON.stringify(copy)) return;
    const next = new Map(this.nodes);
    next.set(at, copy);
    this.write(next);
    this.nodes.set(at, copy);
  }

  private load(): void {
    const bad = (why: string) =>
      new DstdError("E_CONFIG", `layout record ${this.path} ${why}; it says where the data of each linear and stripe leg lies: restore it, or remove it only if the export's data may be laid out anew`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(this.path, "utf8"));
    } catch (error) {
      throw bad(`cannot be read (${errorMessage(error)})`);
    }
    const record = parsed as { format?: unknown; version?: unknown; nodes?: unknown };
    if (typeof record !== "object" || record === null || record.format !== FORMAT) throw bad("is not a dstd tree layout record");
    if (record.version !== VERSION) throw bad(`has version ${String(record.version)}; this dstd reads version ${VERSION}`);
    if (typeof record.nodes !== "object" || record.nodes === null) throw bad('has no "nodes" table');
    for (const [at, value] of Object.entries(record.nodes)) {
      const node = value as { kind?: unknown; legs?: unknown; chunkBytes?: unknown };
      const where = `node ${JSON.stringify(at)}`;
      if (typeof node !== "object" || node === null || !Array.isArray(node.legs)) throw bad(`has a ${where} without a list of legs`);
      if (node.kind === "linear") {
        const legs: LayoutEntry[] = [];
        for (const item of node.legs as unknown[]) {
          const e = item as { label?: unknown; bytes?: unknown };
          if (typeof e !== "object" || e === null || typeof e.label !== "string" || !Number.isSafeInteger(e.bytes) || (e.bytes as number) < 0) {
            throw bad(`has a leg of linear ${where} without a label and a size in bytes`);
          }
          legs.push({ label: e.label, bytes: e.bytes as number });
        }
        this.nodes.set(at, { kind: "linear", legs });
      } else if (node.kind === "stripe") {
        if (!Number.isSafeInteger(node.chunkBytes) || (node.chunkBytes as number) <= 0) throw bad(`has a stripe ${where} without a chunk size in bytes`);
        if (!(node.legs as unknown[]).every((label) => typeof label === "string")) throw bad(`has a stripe ${where} whose legs are not names`);
        const bytes = (node as { bytes?: unknown }).bytes;
        if (bytes !== undefined && (!Number.isSafeInteger(bytes) || (bytes as number) < 0)) throw bad(`has a stripe ${where} whose size is not a number of bytes`);
        this.nodes.set(at, { kind: "stripe", chunkBytes: node.chunkBytes as number, legs: node.legs as string[], ...(bytes === undefined ? {} : { bytes: bytes as number }) });
      } else {
        throw bad(`has a ${where} of kind ${JSON.stringify(node.kind)}`);
      }
    }
  }

  private write(nodes: Map<string, NodeLayout>): void {
    const dir = join(this.path, "..");
    const temporary = `${this.path}.${process.pid}.tmp`;
    const body = { format: FORMAT, version: VERSION, export: this.exportName, nodes: Object.fromEntries([...nodes].sort(([a], [b]) => a.localeCompare(b))) };
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const fd = openSync(temporary, "w", 0o600);
      try {
        writeSync(fd, `${JSON.stringify(body, null, 2)}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temporary, this.path);
      const dirFd = openSync(dir, "r");
      try {
        fsyncSync(dirFd);
      } finally {
        closeSync(dirFd);
      }
    } catch (error) {
      throw new DstdError("E_IO", `the layout record ${this.path} cannot be written: ${errorMessage(error)}`);
    }
  }
}

/** A file name for an export name: "disk" → "disk"; each UTF-16 unit outside [A-Za-z0-9_-] (and so "." and "%") → "%XXXX", one way back. */
function fileName(name: string): string {
  return name.replace(/[^A-Za-z0-9_-]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
