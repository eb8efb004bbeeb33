/**
 * @module config/tree — the `[export.tree]` table: a storage tree under an export
 * (docs/tree.md "Configuration", docs/config.md). The table is one node; a node is exactly
 * one of
 *
 *   url = "dst://host/disk"       a remote DST export (key_file, suites, checksums and the
 *                                 reliability keys of [client] may be set per leg)
 *   file = PATH [size = SIZE]     a sparse file (created with size when missing)
 *   device = /dev/PATH            a block device
 *   memory = SIZE                 a memory disk (tests)
 *   rbd = "POOL/IMAGE[@SNAP]"     a Ceph RBD image (ceph_conf, ceph_id, ceph_keyring may be
 *                                 set per leg; by default the export's own; docs/rbd.md)
 *   mirror = [LEG, …]             RAID-1 (read_policy, assume_clean; legs may be write_mostly)
 *   linear = [LEG, …]             concatenation
 *   stripe = [LEG, …]             RAID-0 (chunk = SIZE, default 512KiB)
 *
 * and a LEG is a node table or a string: a dst:// or dst+unix:// URL, `rbd:POOL/IMAGE[@SNAP]`,
 * or a path (a file, or a device under /dev/). Every problem is reported with its path, e.g.
 * `export[0].tree.mirror[1].stripe[0].url`. Remote legs inherit [client]'s key_file,
 * suites, checksums and reliability. Pure.
 */
import { formatExportUrl, isUrl, parseExportUrl } from "../lib/address.ts";
import { formatSize, quoteInput } from "../lib/size.ts";
import { DEFAULT_STRIPE_CHUNK, MAX_MIRROR_LEGS, MAX_TREE_DEPTH, MAX_TREE_LEGS, READ_POLICIES } from "./tree-spec.ts";
import { readChecksums, readSuites } from "./access.ts";
import { checkKeys, describe, get, type Issues, isTable, join, readBoolean, readEnum, readPath, readSize, readString, type Table } from "./fields.ts";
import { RELIABILITY_KEYS, readReliability } from "./reliability.ts";
import { parseRbdImageSpec, RBD_KEYS, readRbd } from "./rbd.ts";
import type { ClientConfig, RbdSpec, TreeLegSpec, TreeNodeSpec } from "./types.ts";

const KINDS = ["url", "file", "device", "memory", "rbd", "mirror", "linear", "stripe"] as const;
type Kind = (typeof KINDS)[number];
const REMOTE_KEYS = ["key_file", "suites", "checksums", "reliability", ...RELIABILITY_KEYS];
/** ceph_conf, ceph_id, ceph_keyring: per rbd leg. */
const CEPH_KEYS = RBD_KEYS.slice(1);
/** A leg written `rbd:POOL/IMAGE[@SNAP]` (no `//`: an image spec, as the rbd command writes it). */
export const RBD_LEG_PREFIX = "rbd:";

export const TREE_KEYS = [...KINDS, "size", "name", "chunk", "read_policy", "assume_clean", "write_mostly", ...REMOTE_KEYS, ...CEPH_KEYS] as const;

/** How rbd legs reach their cluster unless the leg says otherwise: the export's ceph_* keys. */
export type CephDefaults = Pick<RbdSpec, "conf" | "id" | "keyring">;
const NO_CEPH_DEFAULTS: CephDefaults = { conf: null, id: null, keyring: null };

/** Which keys only make sense for which kind of node (the message names the kind they need). */
const ONLY_FOR: Record<string, Kind[]> = {
  size: ["file"],
  chunk: ["stripe"],
  read_policy: ["mirror"],
  assume_clean: ["mirror"],
  ...Object.fromEntries(REMOTE_KEYS.map((key) => [key, ["url"] as Kind[]])),
  ...Object.fromEntries(CEPH_KEYS.map((key) => [key, ["rbd"] as Kind[]])),
};

/** The `tree` table of an export, or undefined with issues recorded. */
export function readTree(value: unknown, path: string, client: ClientConfig, issues: Issues, ceph: CephDefaults = NO_CEPH_DEFAULTS): TreeNodeSpec | undefined {
  if (!isTable(value)) {
    issues.add(path, `expected a table ([export.tree] with one of mirror, linear, stripe), got ${describe(value)}`);
    return undefined;
  }
  const kinds = KINDS.filter((k) => get(value, k) !== undefined);
  if (kinds.length === 1 && !["mirror", "linear", "stripe"].includes(kinds[0]!)) {
    issues.add(path, `a tree's root is a mirror, linear or stripe (a single ${kinds[0]} is an ordinary export: set it in [[export]])`);
    return undefined;
  }
  return readNode(value, path, { ...client, ceph }, 1, false, issues)?.node;
}

/** What legs inherit: [client]'s settings for remote legs, the export's ceph_* for rbd legs. */
type Inherited = ClientConfig & { ceph: CephDefaults };

/** A node table (or a leg string) at `path`; `inMirror`: it is a leg of a mirror. */
function readNode(value: unknown, path: string, client: Inherited, depth: number, inMirror: boolean, issues: Issues): TreeLegSpec | undefined {
  if (typeof value === "string") return readLegString(value, path, client, issues);
  if (!isTable(value)) {
    issues.add(path, `expected a leg: a URL, a path or a table, got ${describe(value)}`);
    return undefined;
  }
  const table: Table = value;
  checkKeys(table, TREE_KEYS, path, issues);
  const kinds = KINDS.filter((k) => get(table, k) !== undefined);
  if (kinds.length !== 1) {
    const which = kinds.length === 0 ? "none is set" : `got ${kinds.join(" and ")}`;
    issues.add(path, `set exactly one of ${KINDS.join(", ")} (${which})`);
    return undefined;
  }
  const kind = kinds[0]!;
  let ok = true;
  for (const [key, allowed] of Object.entries(ONLY_FOR)) {
    if (get(table, key) !== undefined && !allowed.includes(kind)) {
      issues.add(join(path, key), `${key} is only for ${allowed.join("/")} nodes, not ${kind}`);
      ok = false;
    }
  }
  const writeMostly = readBoolean(get(table, "write_mostly"), join(path, "write_mostly"), issues) ?? false;
  if (writeMostly && !inMirror) {
    issues.add(join(path, "write_mostly"), "write_mostly is only for legs of a mirror");
    ok = false;
  }
  const name = readString(get(table, "name"), join(path, "name"), issues);
  if (name !== undefined && (name === "" || name.length > 128 || /[\u0000-\u001f\u007f]/.test(name))) {
    issues.add(join(path, "name"), "a name is 1 to 128 printable characters");
    ok = false;
  }
  const at = join(path, kind);
  let node: TreeNodeSpec | undefined;
  switch (kind) {
    case "url":
      node = readRemote(get(table, "url"), at, table, path, client, issues);
      break;
    case "file": {
      const file = readPath(get(table, "file"), at, issues);
      const sizeValue = get(table, "size");
      const size = readSize(sizeValue, 1, join(path, "size"), issues);
      if (file !== undefined && (sizeValue === undefined || size !== undefined)) node = { kind: "file", path: file, sizeBytes: size ?? null };
      break;
    }
    case "device": {
      const device = readPath(get(table, "device"), at, issues, { absolute: true });
      if (device !== undefined) node = { kind: "device", path: device };
      break;
    }
    case "memory": {
      const size = readSize(get(table, "memory"), 1, at, issues);
      if (size !== undefined) node = { kind: "memory", sizeBytes: size };
      break;
    }
    case "rbd": {
      const rbd = readRbd(table, path, issues);
      if (rbd !== undefined) {
        const given = (key: string) => get(table, key) !== undefined;
        const d = client.ceph;
        node = { kind: "rbd", rbd: { ...rbd, conf: given("ceph_conf") ? rbd.conf : d.conf, id: given("ceph_id") ? rbd.id : d.id, keyring: given("ceph_keyring") ? rbd.keyring : d.keyring } };
      }
      break;
    }
    default:
      node = readInner(kind, table, path, client, depth, issues);
  }
  if (node === undefined || !ok) return undefined;
  return { node, writeMostly, label: name ?? labelOf(node) };
}

function readInner(kind: "mirror" | "linear" | "stripe", table: Table, path: string, client: Inherited, depth: number, issues: Issues): TreeNodeSpec | undefined {
  const at = join(path, kind);
  if (depth > MAX_TREE_DEPTH) {
    issues.add(at, `the tree is nested more than ${MAX_TREE_DEPTH} levels deep`);
    return undefined;
  }
  const value = get(table, kind);
  if (!Array.isArray(value) || value.length === 0) {
    issues.add(at, `expected a non-empty list of legs (URLs, paths or tables), got ${Array.isArray(value) ? "an empty list" : describe(value)}`);
    return undefined;
  }
  const most = kind === "mirror" ? MAX_MIRROR_LEGS : MAX_TREE_LEGS;
  if (value.length > most) {
    issues.add(at, `a ${kind} has at most ${most} legs (got ${value.length})`);
    return undefined;
  }
  const legs: TreeLegSpec[] = [];
  let ok = true;
  value.forEach((item: unknown, i) => {
    const leg = readNode(item, `${at}[${i}]`, client, depth + 1, kind === "mirror", issues);
    if (leg === undefined) ok = false;
    else legs.push(leg);
  });
  if (kind === "mirror") {
    const policy = readEnum(get(table, "read_policy"), READ_POLICIES, join(path, "read_policy"), issues);
    const assumeClean = readBoolean(get(table, "assume_clean"), join(path, "assume_clean"), issues);
    if (get(table, "read_policy") !== undefined && policy === undefined) ok = false;
    if (legs.length > 0 && legs.every((leg) => leg.writeMostly)) {
      issues.add(at, "every leg is write_mostly: at least one must serve reads");
      ok = false;
    }
    return ok ? { kind, legs, readPolicy: policy ?? "round-robin", assumeClean: assumeClean ?? false } : undefined;
  }
  if (kind === "stripe") {
    const chunkValue = get(table, "chunk");
    const chunk = readSize(chunkValue, 4096, join(path, "chunk"), issues);
    if (chunk !== undefined && chunk % 4096 !== 0) {
      issues.add(join(path, "chunk"), `${formatSize(chunk)} is not a multiple of 4KiB`);
      return undefined;
    }
    if (chunkValue !== undefined && chunk === undefined) return undefined;
    return ok ? { kind, legs, chunkBytes: chunk ?? DEFAULT_STRIPE_CHUNK } : undefined;
  }
  return ok ? { kind, legs } : undefined;
}

function readRemote(value: unknown, at: string, table: Table, path: string, client: ClientConfig, issues: Issues): TreeNodeSpec | undefined {
  const text = readString(value, at, issues);
  if (text === undefined) return undefined;
  const url = parseExportUrl(text);
  if (typeof url === "string") {
    issues.add(at, url);
    return undefined;
  }
  if (url.protocol !== "dst") {
    issues.add(at, `${quoteInput(text)}: a leg is a DST export (dst:// or dst+unix://); NBD servers are not supported as legs`);
    return undefined;
  }
  const keyFile = readPath(get(table, "key_file"), join(path, "key_file"), issues);
  const suites = readSuites(get(table, "suites"), join(path, "suites"), issues);
  const checksums = readChecksums(get(table, "checksums"), join(path, "checksums"), issues);
  const reliability = readReliability(table, path, client.reliability, issues);
  return {
    kind: "remote",
    url,
    keyFile: keyFile ?? client.keyFile,
    suites: get(table, "suites") === undefined ? client.suites : (suites ?? []),
    checksums: get(table, "checksums") === undefined ? client.checksums : (checksums ?? []),
    reliability,
  };
}

/** A leg written as a string: a dst URL, a device under /dev/, or a file path. */
function readLegString(text: string, path: string, client: Inherited, issues: Issues): TreeLegSpec | undefined {
  if (text.startsWith(RBD_LEG_PREFIX)) {
    const spec = parseRbdImageSpec(text.slice(RBD_LEG_PREFIX.length));
    if (typeof spec === "string") {
      issues.add(path, spec);
      return undefined;
    }
    const node: TreeNodeSpec = { kind: "rbd", rbd: { ...spec, ...client.ceph } };
    return { node, writeMostly: false, label: labelOf(node) };
  }
  if (isUrl(text)) {
    const node = readRemote(text, path, {}, path, client, issues);
    return node === undefined ? undefined : { node, writeMostly: false, label: labelOf(node) };
  }
  const file = readPath(text, path, issues);
  if (file === undefined) return undefined;
  const node: TreeNodeSpec = file.startsWith("/dev/") ? { kind: "device", path: file } : { kind: "file", path: file, sizeBytes: null };
  return { node, writeMostly: false, label: file };
}

function labelOf(node: TreeNodeSpec): string {
  switch (node.kind) {
    case "remote":
      return formatExportUrl(node.url);
    case "file":
    case "device":
      return node.path;
    case "memory":
      return `memory:${formatSize(node.sizeBytes)}`;
    case "rbd":
      return rbdLabel(node.rbd);
    default:
      return `${node.kind}(${node.legs.map((leg) => leg.label).join(", ")})`;
  }
}

/** `rbd:POOL/[NAMESPACE/]IMAGE[@SNAP]`, as the leg is written (storage/rbd/open.ts describeRbd). */
export function rbdLabel(spec: RbdSpec): string {
  const ns = spec.namespace === null ? "" : `${spec.namespace}/`;
  return `${RBD_LEG_PREFIX}${spec.pool}/${ns}${spec.image}${spec.snapshot === null ? "" : `@${spec.snapshot}`}`;
}
