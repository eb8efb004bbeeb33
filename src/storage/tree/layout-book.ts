/**
 * @module storage/tree/layout-book — the linear layout record of one export
 * (docs/tree.md "The linear layout record"): `<state_dir>/layout/<export>.json`, one entry
 * per linear node of the export's tree, keyed by where the node sits (storage/tree/open.ts
 * `at`: "" for the root, "1.0" for leg 0 of the root's leg 1), holding the length each of its
 * legs was given (storage/tree/linear-layout.ts decides how a record binds).
 *
 * Written before a new layout is served — at open, before a reload's appended legs and before
 * a resize's new size — by write, fsync, rename and an fsync of the directory, so a crash
 * leaves the old record or the new one. A record that cannot be read or parsed refuses the
 * open: guessing would risk moving data.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import { DstdError, errorMessage } from "../../lib/errors.ts";
import type { LayoutEntry } from "./linear-layout.ts";

const FORMAT = "dstd linear layout";
const VERSION = 1;

export class LayoutBook {
  private readonly nodes = new Map<string, LayoutEntry[]>();

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

  /** The lengths recorded for the linear node at `at`, or null. */
  get(at: string): LayoutEntry[] | null {
    const entries = this.nodes.get(at);
    return entries === undefined ? null : entries.map((e) => ({ ...e }));
  }

  /** Record the node at `at` durably (nothing written when it is unchanged). Throws DstdError (E_IO) when it cannot be written. */
  set(at: string, entries: readonly LayoutEntry[]): void {
    const before = this.nodes.get(at);
    if (before !== undefined && before.length === entries.length && before.every((e, i) => e.bytes === entries[i]!.bytes && e.label === entries[i]!.label)) return;
    const next = new Map(this.nodes);
    next.set(at, entries.map((e) => ({ label: e.label, bytes: e.bytes })));
    this.write(next);
    this.nodes.set(at, next.get(at)!);
  }

  private load(): void {
    const bad = (why: string) =>
      new DstdError("E_CONFIG", `linear layout record ${this.path} ${why}; it says where the data of each linear leg lies: restore it, or remove it only if the export's data may be laid out anew`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(this.path, "utf8"));
    } catch (error) {
      throw bad(`cannot be read (${errorMessage(error)})`);
    }
    const record = parsed as { format?: unknown; version?: unknown; linear?: unknown };
    if (typeof record !== "object" || record === null || record.format !== FORMAT) throw bad("is not a dstd linear layout record");
    if (record.version !== VERSION) throw bad(`has version ${String(record.version)}; this dstd reads version ${VERSION}`);
    if (typeof record.linear !== "object" || record.linear === null) throw bad("has no \"linear\" table");
    for (const [at, value] of Object.entries(record.linear)) {
      if (!Array.isArray(value)) throw bad(`has a node ${JSON.stringify(at)} that is not a list of legs`);
      const entries: LayoutEntry[] = [];
      for (const item of value as unknown[]) {
        const e = item as { label?: unknown; bytes?: unknown };
        if (typeof e !== "object" || e === null || typeof e.label !== "string" || !Number.isSafeInteger(e.bytes) || (e.bytes as number) < 0) {
          throw bad(`has a leg of node ${JSON.stringify(at)} without a label and a size in bytes`);
        }
        entries.push({ label: e.label, bytes: e.bytes as number });
      }
      this.nodes.set(at, entries);
    }
  }

  private write(nodes: Map<string, LayoutEntry[]>): void {
    const dir = join(this.path, "..");
    const temporary = `${this.path}.${process.pid}.tmp`;
    const body = { format: FORMAT, version: VERSION, export: this.exportName, linear: Object.fromEntries([...nodes].sort(([a], [b]) => a.localeCompare(b))) };
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
      throw new DstdError("E_IO", `the linear layout record ${this.path} cannot be written: ${errorMessage(error)}`);
    }
  }
}

/** A file name for an export name: "disk" → "disk"; each UTF-16 unit outside [A-Za-z0-9_-] (and so "." and "%") → "%XXXX", one way back. */
function fileName(name: string): string {
  return name.replace(/[^A-Za-z0-9_-]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
