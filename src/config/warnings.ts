/**
 * @module config/warnings — settings that are valid but cannot do what they say, found from
 * the resolved config alone (pure: no I/O). `dstd export` logs them at start and
 * `dstd check-config` prints them.
 *
 * An allow rule is checked against the peers that can reach the export at all: a listener on
 * loopback (127.0.0.0/8, ::1) only ever sees loopback peers, a Unix socket only Unix peers.
 * A rule for 10.0.0.0/8 on an export that listens only on 127.0.0.1 can never match; the
 * operator almost surely meant to listen on an address those clients can reach.
 */
import { isLoopbackAddress } from "../crypto/suites.ts";
import { cidrContains, parseCidr, type Cidr } from "../lib/acl.ts";
import type { ListenAddress } from "../lib/address.ts";
import type { ExportConfig } from "./types.ts";

const LOOPBACK_NETWORKS = [parseCidr("127.0.0.0/8"), parseCidr("::1/128")] as Cidr[];

/** Two networks overlap when the wider one contains the narrower one's network address. */
function overlaps(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  return a.prefix <= b.prefix ? cidrContains(a, b.bytes) : cidrContains(b, a.bytes);
}

function isLoopbackListener(address: ListenAddress): boolean {
  return address.transport === "tcp" && (isLoopbackAddress(address.host) || address.host === "localhost");
}

function describe(address: ListenAddress): string {
  if (address.transport === "unix") return `unix:${address.path}`;
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** Everything about one export that is valid but cannot do what it says, as warnings. */
export function exportWarnings(config: ExportConfig): string[] {
  return [...allowWarnings(config), ...replicationWarnings(config)];
}

/**
 * A replication primary without a `peer` cannot fence itself at start (docs/replication.md
 * §11): after a `promote --force` of its secondary it would come back as a second primary.
 */
function replicationWarnings(config: ExportConfig): string[] {
  const r = config.replication;
  if (r == null || r.role !== "primary" || r.peer !== null) return [];
  return [
    `export '${config.name}': a replication primary without a peer: after a failover to its secondary (promote --force) this node, restarted, cannot tell it was replaced and serves writes as a second primary; name its secondary as peer (--peer URL, or peer in [export.replication]) so it asks first`,
  ];
}

/** Allow rules of `config` that no peer able to connect could ever match, as warnings. */
export function allowWarnings(config: ExportConfig): string[] {
  const listeners = [...config.listen, ...config.nbdListen];
  const unix = listeners.some((a) => a.transport === "unix");
  const tcp = listeners.filter((a) => a.transport === "tcp");
  const loopbackOnly = tcp.length > 0 && tcp.every(isLoopbackListener);
  const where = listeners.map(describe).join(", ");
  const warnings: string[] = [];
  for (const rule of config.allow) {
    let why: string | null = null;
    if (rule.network === "unix") {
      if (!unix) why = `the export has no Unix socket listener (only ${where}); add e.g. --listen unix:/run/dstd.sock`;
    } else if (tcp.length === 0) {
      why = `the export listens only on Unix sockets (${where}); add a TCP --listen address`;
    } else if (loopbackOnly && !LOOPBACK_NETWORKS.some((n) => overlaps(n, rule.network as Cidr))) {
      const port = (tcp[0] as { port: number }).port;
      why = `the export listens only on loopback (${where}), where every client is local; to admit that network listen on an address it can reach, e.g. --listen 0.0.0.0:${port}`;
    }
    if (why !== null) warnings.push(`export '${config.name}': allow rule '${rule.source}' can never match: ${why}`);
  }
  return warnings;
}
