/**
 * @module config/storage-uses — storage a configuration names where it would be written twice,
 * refused when the config is read, naming the places, before anything starts:
 * - one file, device, RBD image or remote export named twice, at least once for writing (two
 *   exports of it, two legs of one tree, an export and a leg of another), or one replication
 *   `log_dir` for two exports. At start the second open would be refused (storage/local/lock.ts:
 *   two exports of one file, one writing, would corrupt it or change data under the other's
 *   clients; lockLogDirectory: two logs in one directory), a mirror given one file as two legs
 *   would run with one unreachable for good, and two legs on one remote export would write one
 *   disk as two. Read-only exports may share (as the export lock's shared mode allows; a tree's
 *   legs are always opened writable), and an RBD snapshot may sit beside its image;
 * - a remote leg that is an export of this same configuration: a tree reaching its own node
 *   writes into itself (a mirror resyncing into itself overwrites its data, shifted by its
 *   metadata area) or one disk twice. The start refuses it too, by the export's epoch
 *   (storage/remote/remote-port.ts `localEpochs`), whatever name reaches it.
 *
 * Names are compared as written (relative paths resolved against the config's directory).
 * `checkStorageAliases` compares what the names are on this machine (`dstd check-config`
 * passes a stat: a symlink, a hard link, /dev/disk/by-id/… beside /dev/sdb); another address
 * of this host gets past both and is refused at start.
 */
import { type ExportUrl, formatExportUrl, formatListenAddress, type ListenAddress } from "../lib/address.ts";
import { isLoopbackAddress } from "../crypto/suites.ts";
import { type Issues, join } from "./fields.ts";
import type { ExportConfig, RbdSpec, TreeNodeSpec } from "./types.ts";

interface Use {
  /** Where the configuration names it ("export[1].tree.mirror[0].file"). */
  at: string;
  exportName: string;
  writes: boolean;
  /** The name as written (a path, an image, a URL). */
  name: string;
  /** How a message names it ("log_dir /srv/log", "rbd image rbd/disk"). */
  what: string;
}

/** Add an issue for every storage named where an earlier use conflicts with it. */
export function checkStorageUses(exports: readonly ExportConfig[], issues: Issues): void {
  scanUses(exports, (path) => `path:${path}`, issues, false);
}

/**
 * The same storage under two names, used as checkStorageUses refuses: `identify` says what a
 * path is on this machine (its device and inode; null when nothing is there yet). Pairs
 * written alike are checkStorageUses's and not repeated; RBD images and remote exports have
 * no second name to find here.
 */
export function checkStorageAliases(exports: readonly ExportConfig[], identify: (path: string) => string | null, issues: Issues): void {
  scanUses(exports, identify, issues, true);
}

function scanUses(exports: readonly ExportConfig[], pathKey: (path: string) => string | null, issues: Issues, aliasesOnly: boolean): void {
  const uses = new Map<string, Use[]>();
  const note = (key: string | null, use: Use) => {
    if (key === null) return;
    const earlier = uses.get(key) ?? [];
    const conflict = earlier.find((e) => (e.writes || use.writes) && (!aliasesOnly || e.name !== use.name));
    if (conflict !== undefined) {
      const where = conflict.exportName === use.exportName ? `at ${conflict.at}` : `by export '${conflict.exportName}' at ${conflict.at}`;
      const what = aliasesOnly ? `${use.what} (the same as ${conflict.name} on this machine)` : use.what;
      issues.add(use.at, `${what} is also used ${where}: one storage used twice, at least once for writing, would be corrupted (or the second use refused at start); give each use its own`);
    }
    uses.set(key, [...earlier, use]);
  };
  // A replication log is always written (a secondary writes its copy of the log there).
  exports.forEach((exp, i) => {
    const dir = exp.replication?.logDir;
    if (dir !== undefined) note(pathKey(dir), { at: `export[${i}].replication.log_dir`, exportName: exp.name, writes: true, name: dir, what: `log_dir ${dir}` });
  });
  forEachStorage(exports, (node, at, exp, inTree) => {
    // A tree opens its legs writable whatever the export (a mirror writes its metadata).
    const use = { at, exportName: exp.name, writes: inTree || !exp.readOnly };
    if (node.kind === "file" || node.kind === "device") note(pathKey(node.path), { ...use, name: node.path, what: node.path });
    else if (aliasesOnly) return;
    else if (node.kind === "rbd") note(rbdKey(node.rbd), { ...use, writes: use.writes && node.rbd.snapshot === null, name: rbdName(node.rbd), what: `rbd image ${rbdName(node.rbd)}` });
    else if (node.kind === "remote") note(remoteKey(node.url), { ...use, name: formatExportUrl(node.url), what: `remote export ${formatExportUrl(node.url)}` });
  });
}

/**
 * A remote leg that is an export of this same configuration (a leg URL naming one of its
 * exports where it listens: the same address, or loopback where it listens on loopback or on
 * every address): refused as the start would refuse it (storage/remote/remote-port.ts
 * `localEpochs`) — a tree reaching its own node writes into itself, or one disk twice.
 */
export function checkOwnExportLegs(exports: readonly ExportConfig[], issues: Issues): void {
  const served = exports.flatMap((e) => e.listen.map((address) => ({ address, name: e.name })));
  exports.forEach((e, i) => {
    // A secondary whose peer is itself would fetch from itself forever ("not a replication primary").
    const peer = e.replication?.peer ?? null;
    if (peer === null || peer.exportName !== e.name || !e.listen.some((address) => reaches(peer, address))) return;
    issues.add(`export[${i}].replication.peer`, `${formatExportUrl(peer)} is this export itself: a secondary's peer is its primary, on another node`);
  });
  forEachStorage(exports, (node, at) => {
    if (node.kind !== "remote") return;
    const own = served.find((s) => s.name === node.url.exportName && reaches(node.url, s.address));
    if (own === undefined) return;
    issues.add(
      at,
      `${formatExportUrl(node.url)} is export '${own.name}' of this configuration (it listens on ${formatListenAddress(own.address)}): a leg must be storage of its own (a tree reaching its own node would write into itself, or write one disk twice); name the file or device as the leg, or another node's export`,
    );
  });
}

/** Every leaf of every export (plain backends and tree leaves), with where the config names it. */
export function forEachStorage(exports: readonly ExportConfig[], visit: (node: TreeNodeSpec, at: string, exp: ExportConfig, inTree: boolean) => void): void {
  exports.forEach((exp, i) => {
    const walk = (node: TreeNodeSpec, at: string): void => {
      if (node.kind === "linear" || node.kind === "stripe" || node.kind === "mirror") node.legs.forEach((leg, j) => walk(leg.node, legPath(`${at}.${node.kind}[${j}]`, leg.node)));
      else visit(node, at, exp, true);
    };
    const b = exp.backend;
    const base = `export[${i}]`;
    if (b.kind === "tree") walk(b.root, join(base, "tree"));
    else if (b.kind === "file" || b.kind === "device" || b.kind === "rbd") visit(b, join(base, b.kind), exp, false);
  });
}

function reaches(url: ExportUrl, address: ListenAddress): boolean {
  if (url.transport === "unix") return address.transport === "unix" && address.path === url.path;
  if (address.transport !== "tcp" || address.port !== url.port) return false;
  const host = bare(url.host);
  const listen = bare(address.host);
  const local = (h: string) => h === "localhost" || isLoopbackAddress(h);
  return host === listen || (local(host) && (local(listen) || listen === "0.0.0.0" || listen === "::"));
}

/** A host as compared: without IPv6 brackets, lower case (config/listen-uses.ts compares the same way). */
export function bare(host: string): string {
  const inner = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return inner.toLowerCase();
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
  const where = url.transport === "tcp" ? `${bare(url.host)}:${url.port}` : `unix:${url.path}`;
  return `remote:${where}/${url.exportName}`;
}
