/**
 * @module config/storage-uses — one file, device, RBD image or remote export named twice in a
 * configuration, at least once where it is written: two exports of it, two legs of one tree,
 * or an export and a leg of another. At start the second open would be refused (storage/local/lock.ts: two
 * exports of one file, one writing, would corrupt it or change data under the other's
 * clients), a mirror given one file as two legs would run with one of them unreachable for
 * good, and two legs on one remote export would write one disk as two; so the configuration is refused here, naming both places, before anything starts.
 * Read-only uses alone may share (as the export lock's shared mode allows), and so may an RBD
 * snapshot with its image.
 *
 * Paths are compared as written after resolution against the config's directory: a symlink or
 * a second name of one device is left to the export lock at start.
 */
import { type ExportUrl, formatExportUrl } from "../lib/address.ts";
import { type Issues, join } from "./fields.ts";
import type { ExportConfig, RbdSpec, TreeNodeSpec } from "./types.ts";

interface Use {
  /** Where the configuration names it ("export[1].tree.mirror[0].file"). */
  at: string;
  exportName: string;
  writes: boolean;
}

/** Add an issue for every storage named where an earlier use conflicts with it. */
export function checkStorageUses(exports: readonly ExportConfig[], issues: Issues): void {
  const uses = new Map<string, Use[]>();
  const note = (key: string, use: Use, what: string) => {
    const earlier = uses.get(key) ?? [];
    const conflict = earlier.find((e) => e.writes || use.writes);
    if (conflict !== undefined) {
      const where = conflict.exportName === use.exportName ? `at ${conflict.at}` : `by export '${conflict.exportName}' at ${conflict.at}`;
      issues.add(use.at, `${what} is also used ${where}: one storage used twice, at least once for writing, would be corrupted (or the second use refused at start); give each use its own`);
    }
    uses.set(key, [...earlier, use]);
  };
  exports.forEach((exp, i) => {
    const writes = !exp.readOnly;
    const visit = (node: TreeNodeSpec, at: string) => {
      switch (node.kind) {
        case "file":
          return note(`path:${node.path}`, { at, exportName: exp.name, writes }, node.path);
        case "device":
          return note(`path:${node.path}`, { at, exportName: exp.name, writes }, node.path);
        case "rbd":
          return note(rbdKey(node.rbd), { at, exportName: exp.name, writes: writes && node.rbd.snapshot === null }, `rbd image ${rbdName(node.rbd)}`);
        case "remote":
          return note(remoteKey(node.url), { at, exportName: exp.name, writes }, `remote export ${formatExportUrl(node.url)}`);
        case "linear":
        case "stripe":
        case "mirror":
          return node.legs.forEach((leg, j) => visit(leg.node, legPath(`${at}.${node.kind}[${j}]`, leg.node)));
        default:
          return;
      }
    };
    const b = exp.backend;
    const base = `export[${i}]`;
    if (b.kind === "tree") visit(b.root, join(base, "tree"));
    else if (b.kind === "file") visit(b, join(base, "file"));
    else if (b.kind === "device") visit(b, join(base, "device"));
    else if (b.kind === "rbd") visit(b, join(base, "rbd"));
  });
}

/** A leaf leg's path names its key ("…mirror[0].file"); an inner node's stays the leg's. */
function legPath(at: string, node: TreeNodeSpec): string {
  return node.kind === "file" || node.kind === "device" || node.kind === "rbd" ? join(at, node.kind) : at;
}

function rbdKey(rbd: RbdSpec): string {
  // One image per cluster: the same name under another ceph.conf may be another cluster. A
  // snapshot is its own (read-only) storage, never in conflict with its image.
  return `rbd:${rbd.conf ?? ""}\n${rbdName(rbd)}`;
}

function rbdName(rbd: RbdSpec): string {
  return `${rbd.pool}/${rbd.namespace === null ? "" : `${rbd.namespace}/`}${rbd.image}${rbd.snapshot === null ? "" : `@${rbd.snapshot}`}`;
}

function remoteKey(url: ExportUrl): string {
  const where = url.transport === "tcp" ? `${url.host.toLowerCase()}:${url.port}` : `unix:${url.path}`;
  return `remote:${where}/${url.exportName}`;
}
