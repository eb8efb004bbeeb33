/**
 * @module sys/ceph-conf — which options a ceph.conf sets for a client, so that dstd's own
 * defaults (docs/rbd.md "What blocks", "Cache and copies") give way to the operator's file.
 *
 * Why not simply set dstd's values before reading the file: librados ranks a value set through
 * `rados_conf_set` above one read from a file, whatever the order (measured: with
 * `client_mount_timeout` set to 30 first, a file saying 2 still left 30). So dstd sets a value
 * only where the file does not mention the option. Values are not interpreted here, only
 * which option names appear in the sections a client reads: `[global]`, `[client]` and
 * `[client.ID]`. Names compare as librados compares them: spaces, dashes and underscores alike.
 */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";

/** `client mount timeout`, `client-mount-timeout` → `client_mount_timeout`. */
export function cephOptionName(name: string): string {
  return name.trim().replace(/[\s_-]+/g, "_");
}

/** The option names `text` (a ceph.conf) sets for client `id` (without "client."; null: admin). */
export function cephConfOptions(text: string, id: string | null): Set<string> {
  const mine = new Set(["global", "client", `client.${id ?? "admin"}`]);
  const found = new Set<string>();
  let applies = false;
  let continued = false;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    // A value continued on the next line (trailing backslash) names no option there.
    if (continued) {
      continued = line.endsWith("\\");
      continue;
    }
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#") || trimmed.startsWith(";")) continue;
    const section = /^\[\s*([^\]]*?)\s*\]/.exec(trimmed);
    if (section !== null) {
      applies = mine.has(section[1]!);
      continue;
    }
    continued = line.endsWith("\\");
    const eq = trimmed.indexOf("=");
    if (applies && eq > 0) found.add(cephOptionName(trimmed.slice(0, eq)));
  }
  return found;
}

/**
 * The file librados reads: `conf`, or the first of its default search ($CEPH_CONF, then
 * /etc/ceph/ceph.conf, ~/.ceph/ceph.conf, ./ceph.conf) that exists; null when none does.
 */
export function cephConfPath(conf: string | null): string | null {
  if (conf !== null) return conf;
  const env = process.env.CEPH_CONF;
  const candidates = env !== undefined && env !== "" ? env.split(",").map((p) => p.trim()) : ["/etc/ceph/ceph.conf", `${homedir()}/.ceph/ceph.conf`, "ceph.conf"];
  return candidates.find((p) => existsSync(p)) ?? null;
}

/** The option names the client's ceph.conf sets (empty when there is none or it is unreadable). */
export function cephConfSets(conf: string | null, id: string | null): Set<string> {
  const path = cephConfPath(conf);
  if (path === null) return new Set();
  try {
    return cephConfOptions(readFileSync(path, "utf8"), id);
  } catch {
    return new Set();
  }
}
