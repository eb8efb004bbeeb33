/**
 * @module lib/acl — allow rules: who may connect to an export, and with what access.
 * Holds the IP/CIDR literal parsers too (lib/address.ts reuses parseIp). Pure; never throws
 * on input and never does I/O. Fails closed: a peer address that does not parse, an identity
 * rule facing an anonymous client, or an empty rule list all give "no access" (null).
 *
 * Rule syntax ("--allow" and the config's `allow = [...]`):
 *   [IDENTITY@]NETWORK[:ACCESS]   NETWORK = CIDR | "unix", ACCESS = "ro" | "rw" | "replica" (default "rw")
 *   "10.0.0.0/8", "192.168.1.5:ro" (= /32), "alice@10.0.0.0/8:rw", "::1", "fd00::/8:ro",
 *   "[fd00::1]:ro", "unix", "unix:ro", "alice@unix".
 * The ":ro"/":rw" suffix is split off first, so "::1:ro" is the network ::1 read-only.
 *
 * Matching (matchAllow): a rule matches when its network contains the peer AND (its identity
 * is null OR equals the authenticated identity). The most permissive matching rule wins:
 * "rw" if any matching rule grants rw, else "ro" if any matches, else null (refused).
 * "replica" is a right of its own (docs/replication.md §10): it allows fetching the export's
 * replication log and nothing else; matchAllow ignores such rules and matchReplica reads them,
 * so a client's rights are the union of every rule it matches.
 * IPv4-mapped peers (::ffff:a.b.c.d, what a dual-stack socket reports) are treated exactly
 * like IPv4 peers, so "::/0" never lets IPv4 clients in; only rules inside ::ffff:0:0/96
 * (RFC 4291 §2.5.5.2) match IPv4 peers from the IPv6 side.
 */
import { quoteInput } from "./size.ts";

export type Access = "ro" | "rw";
/** What one rule grants: read/write access, or the right to fetch the replication log. */
export type RuleAccess = Access | "replica";

export interface Cidr {
  family: 4 | 6;
  /** 4 or 16 bytes, network order, host bits zero. */
  bytes: Uint8Array;
  prefix: number;
}

export interface AllowRule {
  /** Authenticated identity the rule is for; null = any client, authenticated or not. */
  identity: string | null;
  network: Cidr | "unix";
  access: RuleAccess;
  /** The rule as written, for logs and error messages. */
  source: string;
}

export interface IpAddress {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
}

// ---- IP literals -------------------------------------------------------------------------
// IPv4: four decimal octets without leading zeros ("010.0.0.1" is octal 8 to inet_aton and
// 10 to most others, so it is refused). IPv6: RFC 4291 §2.2 text forms. Zone ids refused.

const IPV4_OCTET = "(0|[1-9][0-9]{0,2})";
const IPV4_SYNTAX = new RegExp(`^${IPV4_OCTET}\\.${IPV4_OCTET}\\.${IPV4_OCTET}\\.${IPV4_OCTET}$`);
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
const IP_TEXT_MAX = 64;

export function parseIpv4(text: string): Uint8Array | null {
  const match = IPV4_SYNTAX.exec(text);
  if (match === null) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const octet = Number(match[i + 1]);
    if (octet > 255) return null;
    bytes[i] = octet;
  }
  return bytes;
}

/** Colon-separated hex groups (one side of "::"), optionally ending in dotted IPv4. */
function parseGroups(text: string, allowV4Tail: boolean): number[] | null {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] ?? "";
    if (allowV4Tail && i === parts.length - 1 && part.includes(".")) {
      const v4 = parseIpv4(part);
      if (v4 === null) return null;
      groups.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
      continue;
    }
    if (!HEX_GROUP.test(part)) return null;
    groups.push(Number.parseInt(part, 16));
  }
  return groups;
}

export function parseIpv6(text: string): Uint8Array | null {
  if (text.length > 45 || text.length < 2) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  let groups: number[];
  if (halves.length === 2) {
    const head = parseGroups(halves[0] ?? "", false);
    const tail = parseGroups(halves[1] ?? "", true);
    if (head === null || tail === null || head.length + tail.length > 7) return null;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseGroups(text, true);
    if (all === null || all.length !== 8) return null;
    groups = all;
  }
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    bytes[i * 2] = group >> 8;
    bytes[i * 2 + 1] = group & 0xff;
  });
  return bytes;
}

/** Parse an IPv4 or IPv6 literal (no brackets, no port, no zone). */
export function parseIp(text: string): IpAddress | string {
  if (text === "") return "empty IP address";
  if (text.length > IP_TEXT_MAX) return `${quoteInput(text)} is too long to be an IP address`;
  if (text.includes("%")) {
    return `${quoteInput(text)}: IPv6 zone ids (%interface) are not supported`;
  }
  if (text.includes(":")) {
    const bytes = parseIpv6(text);
    return bytes === null ? `${quoteInput(text)} is not an IPv6 address` : { family: 6, bytes };
  }
  const bytes = parseIpv4(text);
  return bytes === null ? `${quoteInput(text)} is not an IPv4 address` : { family: 4, bytes };
}

/** True for an IPv4-mapped IPv6 address ::ffff:a.b.c.d (RFC 4291 §2.5.5.2). */
export function isIpv4Mapped(bytes: Uint8Array): boolean {
  if (bytes.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

/** Canonical text: dotted quad, or RFC 5952 IPv6 (lower case, longest zero run as "::"). */
export function formatIp(ip: IpAddress): string {
  const b = ip.bytes;
  if (ip.family === 4) return Array.from(b).join(".");
  if (isIpv4Mapped(b)) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(((b[i * 2] ?? 0) << 8) | (b[i * 2 + 1] ?? 0));
  // RFC 5952 §4.2.3: compress the longest run of ≥ 2 zero groups, the first one on ties.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

// ---- CIDR --------------------------------------------------------------------------------

const PREFIX_SYNTAX = /^(0|[1-9][0-9]{0,2})$/;

/**
 * Parse "10.0.0.0/8", "192.168.1.5" (= /32), "::1" (= /128), "fd00::/8", "[fd00::]/8",
 * "0.0.0.0/0", "::/0". Host bits must be zero ("10.0.0.5/8" is refused with a suggestion):
 * in an access rule a typo should be an error, not a silently wider or narrower network.
 */
export function parseCidr(text: string): Cidr | string {
  const slash = text.indexOf("/");
  let addressText = slash < 0 ? text : text.slice(0, slash);
  if (addressText.startsWith("[") && addressText.endsWith("]")) {
    addressText = addressText.slice(1, -1);
  }
  const ip = parseIp(addressText);
  if (typeof ip === "string") return ip;
  const maxPrefix = ip.family === 4 ? 32 : 128;
  let prefix = maxPrefix;
  if (slash >= 0) {
    const prefixText = text.slice(slash + 1);
    if (!PREFIX_SYNTAX.test(prefixText) || Number(prefixText) > maxPrefix) {
      return `${quoteInput(text)}: prefix length must be 0..${maxPrefix}`;
    }
    prefix = Number(prefixText);
  }
  const cidr: Cidr = { family: ip.family, bytes: maskBytes(ip.bytes, prefix), prefix };
  if (!sameBytes(cidr.bytes, ip.bytes)) {
    return `${quoteInput(text)} has host bits set; did you mean "${formatCidr(cidr)}"?`;
  }
  return cidr;
}

export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr)}/${cidr.prefix}`;
}

function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = (bytes[i] ?? 0) & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

/** True when `bytes` (same family as the network) lies inside `cidr`. */
export function cidrContains(cidr: Cidr, bytes: Uint8Array): boolean {
  return bytes.length === cidr.bytes.length && sameBytes(maskBytes(bytes, cidr.prefix), cidr.bytes);
}

// ---- rules -------------------------------------------------------------------------------

const IDENTITY_SYNTAX = /^[A-Za-z0-9._-]{1,64}$/;
/** Human description of a valid identity, for error messages elsewhere (config [[key]]). */
export const IDENTITY_RULE = "1 to 64 characters from A-Z a-z 0-9 . _ -";

export function isValidIdentity(text: string): boolean {
  return IDENTITY_SYNTAX.test(text);
}

const RULE_TEXT_MAX = 256;

/** Parse one allow rule; see the module comment for the syntax. */
export function parseAllowRule(text: string): AllowRule | string {
  const source = text.trim();
  if (source === "") return "empty allow rule; use e.g. \"10.0.0.0/8:rw\" or \"unix\"";
  if (source.length > RULE_TEXT_MAX) return `${quoteInput(source)} is too long to be an allow rule`;
  let body = source;
  let access: RuleAccess = "rw";
  if (body.endsWith(":ro") || body.endsWith(":rw")) {
    access = body.endsWith(":ro") ? "ro" : "rw";
    body = body.slice(0, -3);
  } else if (body.endsWith(":replica")) {
    access = "replica";
    body = body.slice(0, -":replica".length);
  }
  let identity: string | null = null;
  const at = body.indexOf("@");
  if (at >= 0) {
    identity = body.slice(0, at);
    body = body.slice(at + 1);
    if (!isValidIdentity(identity)) {
      return `${quoteInput(source)}: identity ${quoteInput(identity)} must be ${IDENTITY_RULE}`;
    }
  }
  if (body === "unix") return { identity, network: "unix", access, source };
  const cidr = parseCidr(body);
  if (typeof cidr !== "string") return { identity, network: cidr, access, source };
  return `${quoteInput(source)} is not an allow rule: ${explainNetwork(body, cidr)}`;
}

/** A better reason than the CIDR parser's when the text has a misspelt access suffix. */
function explainNetwork(body: string, cidrReason: string): string {
  const colon = body.lastIndexOf(":");
  if (colon > 0) {
    const head = body.slice(0, colon);
    const suffix = body.slice(colon + 1);
    if (/^[A-Za-z]+$/.test(suffix) && (head === "unix" || typeof parseCidr(head) !== "string")) {
      return `unknown access ${quoteInput(suffix)}; use ":ro", ":rw" or ":replica"`;
    }
  }
  const hint = body.includes(":") ? ` (write IPv6 as "fd00::/8:ro" or "[fd00::1]:ro")` : "";
  return `${cidrReason}${hint}; expected [IDENTITY@]CIDR|unix[:ro|:rw|:replica]`;
}

export interface AllowPeer {
  transport: "tcp" | "unix";
  /** For tcp: the remote IP as the socket reports it ("10.1.2.3", "::ffff:10.1.2.3", "::1"). */
  address: string;
}

const MAPPED_PREFIX: Cidr = { family: 6, bytes: mappedBytes(new Uint8Array(4)), prefix: 96 };

function mappedBytes(v4: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(v4, 12);
  return out;
}

/** Does `network` contain this peer? `peer` is already IPv4 for mapped addresses. */
function networkContains(network: Cidr, peer: IpAddress): boolean {
  if (network.family === peer.family) return cidrContains(network, peer.bytes);
  if (peer.family === 4 && network.prefix >= 96 && cidrContains(MAPPED_PREFIX, network.bytes)) {
    return cidrContains(network, mappedBytes(peer.bytes));
  }
  return false;
}

/** The peer's IP as rules see it: zone id and brackets dropped, IPv4-mapped made IPv4. */
function peerIp(address: string): IpAddress | null {
  let text = address.startsWith("[") && address.endsWith("]") ? address.slice(1, -1) : address;
  const zone = text.indexOf("%");
  if (zone >= 0) text = text.slice(0, zone);
  const ip = parseIp(text);
  if (typeof ip === "string") return null;
  if (ip.family === 6 && isIpv4Mapped(ip.bytes)) return { family: 4, bytes: ip.bytes.slice(12) };
  return ip;
}

/** Does `rule` match this peer (network and identity)? `ip` is peerIp() of a tcp peer. */
function ruleMatches(rule: AllowRule, peer: AllowPeer, ip: IpAddress | null, identity: string | null): boolean {
  if (rule.identity !== null && rule.identity !== identity) return false;
  return rule.network === "unix" ? peer.transport === "unix" : ip !== null && networkContains(rule.network, ip);
}

/**
 * The access `rules` grant this peer: "rw" if any matching rule grants rw, else "ro" if any
 * matches, else null. Identity rules never match an anonymous (null) identity. Unix peers
 * match only "unix" rules; a tcp address that does not parse matches nothing (fail closed).
 * "replica" rules grant no data access (see matchReplica).
 */
export function matchAllow(
  rules: readonly AllowRule[],
  peer: AllowPeer,
  identity: string | null,
): Access | null {
  const ip = peer.transport === "tcp" ? peerIp(peer.address) : null;
  let granted: Access | null = null;
  for (const rule of rules) {
    if (rule.access === "replica" || !ruleMatches(rule, peer, ip, identity)) continue;
    if (rule.access === "rw") return "rw";
    granted = "ro";
  }
  return granted;
}

/** Does a "replica" rule match this peer (may it fetch the export's replication log)? */
/** Whether some rule gives the replica right to `secondary` (an identity, or "anonymous" for clients without one), from any address. */
export function grantsReplica(rules: readonly AllowRule[], secondary: string): boolean {
  return rules.some((rule) => rule.access === "replica" && (rule.identity === null || (secondary !== "anonymous" && rule.identity === secondary)));
}

export function matchReplica(rules: readonly AllowRule[], peer: AllowPeer, identity: string | null): boolean {
  const ip = peer.transport === "tcp" ? peerIp(peer.address) : null;
  return rules.some((rule) => rule.access === "replica" && ruleMatches(rule, peer, ip, identity));
}
