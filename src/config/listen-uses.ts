/**
 * @module config/listen-uses — listen addresses a configuration names that cannot all be bound:
 * refused when the config is read, naming both places, instead of a node whose second listener
 * fails to bind at every restart with "address already in use".
 *
 * Exports that list the same DST address share one listener, and so do exports that list the
 * same NBD address; anything else that lands on one port needs a listener of its own and
 * collides: a DST and an NBD listener on one address, two different addresses on one port where
 * one of them is every address (0.0.0.0 for IPv4, :: for both), the metrics listener, or an attachment's NBD
 * socket (each has its own). Unix sockets collide by path. Port 0 (any free port) never does.
 *
 * Addresses are compared as written: "localhost" and 127.0.0.1 on one port get past this check
 * and are refused at start.
 */
import { formatListenAddress, type ListenAddress } from "../lib/address.ts";
import type { Issues } from "./fields.ts";
import { bare } from "./storage-uses.ts";
import type { AttachConfig, ExportConfig } from "./types.ts";

/** What listens: a shared kind (DST, NBD of exports) or a listener of its own. */
type Role = "DST" | "NBD" | "metrics" | "attach";

interface Listening {
  at: string;
  role: Role;
  address: ListenAddress;
}

export function checkListenUses(exports: readonly ExportConfig[], attaches: readonly AttachConfig[], metricsListen: ListenAddress | null, issues: Issues): void {
  const all: Listening[] = [];
  if (metricsListen !== null) all.push({ at: "metrics_listen", role: "metrics", address: metricsListen });
  exports.forEach((e, i) => {
    for (const address of e.listen) all.push({ at: `export[${i}].listen`, role: "DST", address });
    for (const address of e.nbdListen) all.push({ at: `export[${i}].nbd_listen`, role: "NBD", address });
  });
  attaches.forEach((a, i) => {
    if (a.nbdListen !== null) all.push({ at: `attach[${i}].nbd_listen`, role: "attach", address: a.nbdListen });
  });
  const reported = new Set<string>();
  all.forEach((later, j) => {
    const earlier = all.slice(0, j).find((e) => collide(e, later));
    if (earlier === undefined || reported.has(later.at)) return;
    reported.add(later.at);
    const same = key(earlier.address) === key(later.address);
    const what = same ? `is also the ${describeRole(earlier.role)} address at ${earlier.at}` : `overlaps ${formatListenAddress(earlier.address)}, the ${describeRole(earlier.role)} address at ${earlier.at}`;
    const fix = earlier.role === later.role && (later.role === "DST" || later.role === "NBD") ? "name the same address to share its listener, or use another port" : "use another port";
    issues.add(later.at, `${formatListenAddress(later.address)} ${what}: one port takes one listener, so the second would fail to bind at every start; ${fix}`);
  });
}

function describeRole(role: Role): string {
  return role === "DST" ? "DST listen" : role === "NBD" ? "NBD listen" : role === "metrics" ? "metrics" : "attachment's NBD";
}

function collide(a: Listening, b: Listening): boolean {
  // One listener for both: what `dstd up` groups (daemon/services.ts groupExports: exports
  // with a DST or an NBD address in common, as written).
  const shared = a.role === b.role && (a.role === "DST" || a.role === "NBD") && formatListenAddress(a.address) === formatListenAddress(b.address);
  if (shared) return false;
  const x = a.address;
  const y = b.address;
  if (x.transport === "unix" || y.transport === "unix") return x.transport === "unix" && y.transport === "unix" && x.path === y.path;
  if (x.port === 0 || y.port === 0 || x.port !== y.port) return false;
  const hx = bare(x.host);
  const hy = bare(y.host);
  return hx === hy || covers(hx, hy) || covers(hy, hx);
}

/** Does a listener on every address `wide` take the port from `other`? "::" (dual stack, Linux's default) every family's; 0.0.0.0 IPv4's. */
function covers(wide: string, other: string): boolean {
  return wide === "::" || (wide === "0.0.0.0" && !other.includes(":"));
}

function key(address: ListenAddress): string {
  return address.transport === "unix" ? `unix:${address.path}` : `${bare(address.host)}:${address.port}`;
}


