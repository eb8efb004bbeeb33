/**
 * @module config/rbd — the Ceph RBD keys of an [[export]] (`rbd`, `ceph_conf`, `ceph_id`,
 * `ceph_keyring`; docs/config.md, docs/rbd.md). Pure: names are checked as text, never looked
 * up in a cluster.
 */
import { quoteInput } from "../lib/size.ts";
import { get, type Issues, join, readPath, readString, type Table } from "./fields.ts";
import type { RbdSpec } from "./types.ts";

export const RBD_KEYS = ["rbd", "ceph_conf", "ceph_id", "ceph_keyring"] as const;

/** librbd's longest image and snapshot names (RBD_MAX_IMAGE_NAME_SIZE is 96 in old clients). */
const NAME_MAX = 255;
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * `POOL/IMAGE`, `POOL/NAMESPACE/IMAGE`, either with `@SNAP` (the rbd command's image spec);
 * a string is the problem.
 */
export function parseRbdImageSpec(text: string): Pick<RbdSpec, "pool" | "namespace" | "image" | "snapshot"> | string {
  const usage = `${quoteInput(text)} is not an RBD image: write POOL/IMAGE, POOL/NAMESPACE/IMAGE or either with @SNAPSHOT`;
  const at = text.indexOf("@");
  const path = at < 0 ? text : text.slice(0, at);
  const snapshot = at < 0 ? null : text.slice(at + 1);
  const parts = path.split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === "")) return usage;
  if (snapshot !== null && (snapshot === "" || snapshot.includes("@"))) return usage;
  for (const name of [...parts, ...(snapshot === null ? [] : [snapshot])]) {
    if (CONTROL.test(name)) return `${quoteInput(text)}: names may not contain control characters`;
    if (new TextEncoder().encode(name).length > NAME_MAX) return `${quoteInput(text)}: a name is longer than ${NAME_MAX} bytes`;
  }
  const [pool, namespace, image] = parts.length === 3 ? parts : [parts[0], null, parts[1]];
  return { pool: pool!, namespace: namespace ?? null, image: image!, snapshot };
}

/** The RBD backend of an export table whose `rbd` key is set; undefined after an issue. */
export function readRbd(table: Table, path: string, issues: Issues): RbdSpec | undefined {
  const text = readString(get(table, "rbd"), join(path, "rbd"), issues);
  const conf = readPath(get(table, "ceph_conf"), join(path, "ceph_conf"), issues);
  const keyring = readPath(get(table, "ceph_keyring"), join(path, "ceph_keyring"), issues);
  const id = readString(get(table, "ceph_id"), join(path, "ceph_id"), issues);
  let ok = true;
  if (id !== undefined && !validId(id)) {
    issues.add(join(path, "ceph_id"), idProblem(id));
    ok = false;
  }
  if (text === undefined) return undefined;
  const spec = parseRbdImageSpec(text);
  if (typeof spec === "string") {
    issues.add(join(path, "rbd"), spec);
    return undefined;
  }
  const failed = (key: string) => get(table, key) !== undefined;
  if (!ok || (failed("ceph_conf") && conf === undefined) || (failed("ceph_keyring") && keyring === undefined)) return undefined;
  return { ...spec, conf: conf ?? null, id: id ?? null, keyring: keyring ?? null };
}

/** ceph_conf, ceph_id and ceph_keyring of a tree export: the defaults of its rbd legs. */
export function readCephDefaults(table: Table, path: string, issues: Issues): Pick<RbdSpec, "conf" | "id" | "keyring"> {
  const conf = readPath(get(table, "ceph_conf"), join(path, "ceph_conf"), issues);
  const keyring = readPath(get(table, "ceph_keyring"), join(path, "ceph_keyring"), issues);
  const id = readString(get(table, "ceph_id"), join(path, "ceph_id"), issues);
  if (id !== undefined && !validId(id)) issues.add(join(path, "ceph_id"), idProblem(id));
  return { conf: conf ?? null, id: id !== undefined && validId(id) ? id : null, keyring: keyring ?? null };
}

function validId(id: string): boolean {
  return !(id === "" || id.startsWith("client.") || CONTROL.test(id));
}

function idProblem(id: string): string {
  return `${quoteInput(id)}: give the client id without "client.", e.g. "admin"`;
}

/** Issues for Ceph keys given to an export that does not serve an RBD image. */
export function checkCephKeysWithoutRbd(table: Table, path: string, issues: Issues): void {
  for (const key of RBD_KEYS.slice(1)) {
    if (get(table, key) !== undefined) issues.add(join(path, key), `${key} is only for rbd exports (or trees with rbd legs)`);
  }
}
