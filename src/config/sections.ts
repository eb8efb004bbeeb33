/**
 * @module config/sections — validators for the [[key]] and [[export]] tables: identities
 * and their key material, export names, backends (exactly one of file/device/memory/tree/rbd) and
 * listen lists. Allow rules and suites are in config/access.ts, client-side tables in
 * config/reliability.ts. Pure: paths are checked as text, never opened.
 */
import { SECRET_SIZE } from "../crypto/keys.ts";
import {
  DST_DEFAULT_EXPORT,
  DST_DEFAULT_PORT,
  EXPORT_NAME_MAX,
  type ListenAddress,
  formatListenAddress,
  NBD_DEFAULT_PORT,
  parseListenAddress,
} from "../lib/address.ts";
import { quoteInput } from "../lib/size.ts";
import { readAllow, readChecksums, readSuites } from "./access.ts";
import { DEFAULT_LISTEN, DEFAULT_NBD_LISTEN, DEFAULT_RELIABILITY } from "./defaults.ts";
import {
  checkKeys,
  get,
  type Issues,
  join,
  readBoolean,
  readIdentity,
  readPath,
  readSize,
  readString,
  readStringList,
  readTableArray,
  type Table,
} from "./fields.ts";
import type { BackendConfig, ClientConfig, ExportConfig, KeyConfig } from "./types.ts";
import { readTree } from "./tree.ts";
import { checkCephKeysWithoutRbd, RBD_KEYS, readCephDefaults, readRbd } from "./rbd.ts";
import { readReplication } from "./replication.ts";

export const KEY_KEYS = ["identity", "file", "secret"] as const;
export const EXPORT_KEYS = [
  "name",
  "file",
  "size",
  "device",
  "memory",
  "tree",
  ...RBD_KEYS,
  "description",
  "listen",
  "nbd_listen",
  "read_only",
  "allow",
  "suites",
  "checksums",
  "replication",
] as const;

const HEX_KEY = /^[0-9a-fA-F]{64}$/;
const BASE64_KEY = /^[A-Za-z0-9+/_-]{43}=?$/;

/** 32 key bytes from 64 hex digits or base64 (standard or URL-safe, padding optional). */
export function decodeSecret(text: string): Uint8Array | string {
  const trimmed = text.trim();
  const wrong =
    `secret must be ${SECRET_SIZE} bytes written as 64 hex digits or 44 base64 characters`;
  let decoded: Buffer | null = null;
  if (HEX_KEY.test(trimmed)) decoded = Buffer.from(trimmed, "hex");
  else if (BASE64_KEY.test(trimmed)) decoded = Buffer.from(trimmed, "base64");
  if (decoded === null || decoded.length !== SECRET_SIZE) return wrong;
  // Copy out of Buffer's shared pool, then wipe the pooled bytes (as crypto/keys.ts does).
  const bytes = new Uint8Array(decoded);
  decoded.fill(0);
  if (bytes.every((b) => b === 0)) return "secret is all zero bytes; generate one with dstd keygen";
  return bytes;
}

/**
 * The [[key]] tables. One identity may have several keys (rotation overlap, docs/security.md
 * "Key rotation"); the same key file or secret listed twice is reported. `identities` holds
 * every well-formed identity declared, even of a key with other problems, so allow rules
 * naming it are not reported a second time.
 */
export function readKeys(
  value: unknown,
  issues: Issues,
): { keys: KeyConfig[]; identities: Set<string> } {
  const keys: KeyConfig[] = [];
  const identities = new Set<string>();
  const sources = new Map<string, string>();
  for (const { table, path } of readTableArray(value, "key", issues)) {
    checkKeys(table, KEY_KEYS, path, issues);
    const identityPath = join(path, "identity");
    const identity = readIdentity(get(table, "identity"), identityPath, issues);
    const file = readPath(get(table, "file"), join(path, "file"), issues);
    const secretText = readString(get(table, "secret"), join(path, "secret"), issues);
    const secret = secretText === undefined ? undefined : decodeSecret(secretText);
    if (typeof secret === "string") issues.add(join(path, "secret"), secret);
    const given = [get(table, "file"), get(table, "secret")].filter((v) => v !== undefined);
    if (given.length === 0) issues.add(path, 'needs file = PATH or secret = "..."');
    if (given.length === 2) issues.add(path, "give file or secret, not both");
    if (get(table, "identity") === undefined) issues.add(identityPath, "missing identity");
    if (identity === undefined) continue;
    identities.add(identity);
    const key: KeyConfig | null =
      file !== undefined
        ? { identity, kind: "file", path: file }
        : secret instanceof Uint8Array
          ? { identity, kind: "secret", secret }
          : null;
    if (key === null || given.length !== 1) continue;
    // Never put the secret itself in a message: name the earlier table instead.
    const fingerprint = key.kind === "file" ? `file:${key.path}` : `secret:${secretText}`;
    const earlier = sources.get(fingerprint);
    if (earlier !== undefined) issues.add(path, `the same key is already listed at ${earlier}`);
    sources.set(fingerprint, path);
    keys.push(key);
  }
  return { keys, identities };
}

export function readExports(
  value: unknown,
  identities: ReadonlySet<string>,
  issues: Issues,
  client?: ClientConfig,
): ExportConfig[] {
  const exports: ExportConfig[] = [];
  const seen = new Map<string, string>();
  for (const { table, path } of readTableArray(value, "export", issues)) {
    const name = readExportName(get(table, "name"), join(path, "name"), issues);
    if (name !== undefined) {
      const earlier = seen.get(name);
      const where = get(table, "name") === undefined ? path : join(path, "name");
      if (earlier !== undefined) {
        const what = `duplicate export name ${quoteInput(name)} (also ${earlier})`;
        issues.add(where, `${what}; names must be unique`);
      }
      seen.set(name, path);
    }
    const config = readExport(table, path, identities, issues, client);
    if (config !== undefined && name !== undefined) exports.push({ name, ...config });
  }
  return exports;
}

const CONTROL = /[\u0000-\u001f\u007f]/;

function readExportName(value: unknown, path: string, issues: Issues): string | undefined {
  if (value === undefined) return DST_DEFAULT_EXPORT;
  const name = readString(value, path, issues);
  if (name === undefined) return undefined;
  let problem: string | null = null;
  if (name === "") problem = "empty export name";
  else if (CONTROL.test(name)) problem = "export name contains a control character";
  else if (new TextEncoder().encode(name).length > EXPORT_NAME_MAX) {
    problem = `export name is longer than ${EXPORT_NAME_MAX} bytes`;
  }
  if (problem !== null) issues.add(path, problem);
  return problem === null ? name : undefined;
}

function readExport(
  table: Table,
  path: string,
  identities: ReadonlySet<string>,
  issues: Issues,
  client?: ClientConfig,
): Omit<ExportConfig, "name"> | undefined {
  checkKeys(table, EXPORT_KEYS, path, issues);
  const at = (key: string) => join(path, key);
  const backend = readBackend(table, path, issues, client);
  const description = readString(get(table, "description"), at("description"), issues);
  const listen = readListen(table, at, "listen", DEFAULT_LISTEN, DST_DEFAULT_PORT, issues);
  const nbdDefaults = [DEFAULT_NBD_LISTEN, NBD_DEFAULT_PORT] as const;
  const nbdListen = readListen(table, at, "nbd_listen", ...nbdDefaults, issues);
  if (listen?.length === 0 && nbdListen?.length === 0) {
    issues.add(path, "export is unreachable: listen and nbd_listen are both empty");
  }
  const readOnly = readBoolean(get(table, "read_only"), at("read_only"), issues);
  // A snapshot export is read-only; an explicit read_only = false asks for writes it cannot
  // take, and overriding it in silence would hide that from whoever wrote it (docs/rbd.md).
  const snapshot = backend?.kind === "rbd" && backend.rbd.snapshot !== null;
  if (snapshot && readOnly === false) {
    issues.add(at("read_only"), `read_only = false, but the RBD snapshot ${String(get(table, "rbd"))} cannot be written: leave read_only out or set it to true (a snapshot export is read-only; docs/rbd.md)`);
  }
  const allow = readAllow(get(table, "allow"), at("allow"), identities, issues);
  const suites = readSuites(get(table, "suites"), at("suites"), issues);
  const checksums = readChecksums(get(table, "checksums"), at("checksums"), issues);
  const replication = readReplication(get(table, "replication"), at("replication"), client, issues);
  if (replication === undefined) return undefined;
  if (backend === undefined || listen === undefined || nbdListen === undefined) return undefined;
  if (allow === undefined || suites === undefined || checksums === undefined) return undefined;
  return {
    description: description ?? "",
    backend,
    listen,
    nbdListen,
    readOnly: (readOnly ?? false) || snapshot,
    allow,
    suites,
    checksums,
    replication,
  };
}

function readBackend(table: Table, path: string, issues: Issues, client?: ClientConfig): BackendConfig | undefined {
  const kinds = (["file", "device", "memory", "tree", "rbd"] as const).filter((k) => get(table, k) !== undefined);
  if (kinds.length !== 1) {
    const which = kinds.length === 0 ? "none is set" : `got ${kinds.join(" and ")}`;
    const choices = kinds.includes("tree") ? "file, device, memory or tree" : kinds.includes("rbd") ? "file, device, memory or rbd" : "file, device or memory";
    issues.add(path, `set exactly one of ${choices} (${which})`);
  }
  if (kinds.length === 1 && kinds[0] === "rbd") {
    if (get(table, "size") !== undefined) issues.add(join(path, "size"), "size is only for file exports; an RBD image has its own size (rbd create --size, dstd resize)");
    const rbd = readRbd(table, path, issues);
    return rbd === undefined || get(table, "size") !== undefined ? undefined : { kind: "rbd", rbd };
  }
  if (kinds.length === 1 && kinds[0] === "tree") {
    if (get(table, "size") !== undefined) issues.add(join(path, "size"), "size is only for file exports; a tree leg takes its own size");
    const client0 = client ?? { keyFile: null, suites: [], checksums: [], reliability: DEFAULT_RELIABILITY };
    // The export's ceph_* keys are how its rbd legs reach their cluster (docs/rbd.md "As a tree leg").
    const ceph = readCephDefaults(table, path, issues);
    const root = readTree(get(table, "tree"), join(path, "tree"), client0, issues, ceph);
    return root === undefined || get(table, "size") !== undefined ? undefined : { kind: "tree", root };
  }
  checkCephKeysWithoutRbd(table, path, issues);
  const sizeValue = get(table, "size");
  const sizeBytes = readSize(sizeValue, 1, join(path, "size"), issues);
  const kind = kinds.length === 1 && kinds[0] !== "tree" && kinds[0] !== "rbd" ? kinds[0] : undefined;
  if (sizeValue !== undefined && kind !== undefined && kind !== "file") {
    const hint = kind === "memory" ? '; memory takes the size itself: memory = "512MiB"' : "";
    issues.add(join(path, "size"), `size is only for file exports${hint}`);
    return undefined;
  }
  if (kind === undefined) return undefined;
  if (kind === "memory") {
    const bytes = readSize(get(table, "memory"), 1, join(path, kind), issues);
    return bytes === undefined ? undefined : { kind, sizeBytes: bytes };
  }
  const options = { absolute: kind === "device" };
  const file = readPath(get(table, kind), join(path, kind), issues, options);
  if (file === undefined || (sizeValue !== undefined && sizeBytes === undefined)) return undefined;
  if (kind === "device") return { kind, path: file };
  return { kind, path: file, sizeBytes: sizeBytes ?? null };
}

/** A listen list (string or list of strings); duplicates are reported. */
function readListen(
  table: Table,
  at: (key: string) => string,
  key: string,
  fallback: readonly string[],
  defaultPort: number,
  issues: Issues,
): ListenAddress[] | undefined {
  const value = get(table, key);
  const items =
    value === undefined
      ? fallback.map((text) => ({ text, path: at(key) }))
      : readStringList(value, at(key), issues);
  if (items === undefined) return undefined;
  const out: ListenAddress[] = [];
  const seen = new Set<string>();
  let ok = true;
  for (const item of items) {
    const address = parseListenAddress(item.text, defaultPort);
    if (typeof address === "string") {
      issues.add(item.path, address);
      ok = false;
      continue;
    }
    const canonical = formatListenAddress(address);
    if (seen.has(canonical)) {
      issues.add(item.path, `${canonical} is listed twice`);
      ok = false;
    }
    seen.add(canonical);
    out.push(address);
  }
  return ok ? out : undefined;
}
