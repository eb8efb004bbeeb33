/**
 * @module lib/address — listen addresses ("127.0.0.1:10810", "[::1]:10810", "unix:/run/x.sock")
 * and export URLs ("dst://host/disk", "nbd+unix:///disk?socket=/run/x.sock"). Pure string
 * work: never throws on input, never resolves names, never touches sockets; a bad address
 * gives back a reason string that says how to write it.
 *
 * URLs follow the NBD URI convention (NetworkBlockDevice/nbd doc/uri.md): the export name is
 * the percent-decoded path without its leading "/", an absent port means the protocol's
 * default port, "+unix" schemes take no authority and require ?socket=PATH, and query
 * parameters we do not understand are diagnosed, not ignored (uri.md "Other NBD URI query
 * parameters"). TLS schemes (nbds) are refused: dst:// carries its own encryption.
 */
import { parseIp, parseIpv6 } from "./acl.ts";
import { quoteInput } from "./size.ts";

/** Default TCP port of the DST protocol (NBD's IANA port is 10809; DST takes the next one). */
export const DST_DEFAULT_PORT = 10810;
/** IANA port of NBD (proto.md "Newstyle negotiation"). */
export const NBD_DEFAULT_PORT = 10809;
/** Export name a dst:// URL without a path refers to (config default export name too). */
export const DST_DEFAULT_EXPORT = "disk";
/** Linux sun_path is 108 bytes including the terminating NUL (unix(7)). */
export const UNIX_PATH_MAX = 107;
/** NBD export names are at most 4096 bytes (proto.md, "Export name"). */
export const EXPORT_NAME_MAX = 4096;

export type ListenAddress =
  | { transport: "tcp"; host: string; port: number }
  | { transport: "unix"; path: string };

export type ExportUrl =
  | { protocol: "dst" | "nbd"; transport: "tcp"; host: string; port: number; exportName: string }
  | { protocol: "dst" | "nbd"; transport: "unix"; path: string; exportName: string };

const ADDRESS_TEXT_MAX = 4096;
const PORT_SYNTAX = /^[0-9]{1,5}$/;
const HOSTNAME_LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const encoder = new TextEncoder();

/** Port 0..65535 (0 = ephemeral, for tests). */
export function parsePort(text: string): number | string {
  if (!PORT_SYNTAX.test(text) || Number(text) > 65535) {
    return `port ${quoteInput(text)} must be a number 0..65535`;
  }
  return Number(text);
}

/**
 * A host as written in an address: IPv4 literal, IPv6 literal (no brackets), or a DNS name
 * (RFC 1123 labels). Text made only of digits and dots must be a valid IPv4 address, so
 * "10.0.0.256" is an error rather than a host name lookup.
 */
export function checkHost(host: string): string | null {
  if (host === "") return "empty host";
  if (host.includes(":")) {
    const ip = parseIp(host);
    return typeof ip === "string" ? ip : null;
  }
  if (/^[0-9.]+$/.test(host)) {
    const ip = parseIp(host);
    return typeof ip === "string" ? ip : null;
  }
  const labels = host.endsWith(".") ? host.slice(0, -1).split(".") : host.split(".");
  if (host.length > 253 || !labels.every((label) => HOSTNAME_LABEL.test(label))) {
    return `${quoteInput(host)} is not a host name or IP address`;
  }
  return null;
}

function unixPathReason(path: string, what: string): string | null {
  if (path === "") return `empty ${what}`;
  if (path.slice(1).includes("\0")) return `${what} contains a NUL byte`;
  if (encoder.encode(path).length > UNIX_PATH_MAX) {
    return `${what} is longer than ${UNIX_PATH_MAX} bytes (the unix socket limit)`;
  }
  return null;
}

/**
 * Parse a listen address: "HOST:PORT", "HOST" (defaultPort), ":PORT" (host 0.0.0.0, every
 * IPv4 interface, as in Go's net.Listen), "[V6]:PORT", "[V6]", bare "V6" (defaultPort; only
 * when it cannot be read as address+port: "::1:8080" is refused as ambiguous), "unix:PATH".
 */
export function parseListenAddress(text: string, defaultPort: number): ListenAddress | string {
  const usage = `use HOST:PORT, [IPV6]:PORT or unix:PATH`;
  if (text === "") return `empty listen address; ${usage}`;
  if (text.length > ADDRESS_TEXT_MAX) return `${quoteInput(text)} is too long to be an address`;
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    const reason = unixPathReason(path, "unix socket path");
    return reason === null ? { transport: "unix", path } : `${quoteInput(text)}: ${reason}`;
  }
  const hostPort = splitHostPort(text, defaultPort);
  if (typeof hostPort === "string") return `${quoteInput(text)}: ${hostPort}; ${usage}`;
  return { transport: "tcp", host: hostPort.host, port: hostPort.port };
}

/** Split "host:port" / "[v6]:port" / "host" / ":port" / bare v6; validate both halves. */
function splitHostPort(text: string, defaultPort: number): { host: string; port: number } | string {
  let host: string;
  let portText: string | null;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0) return "missing ']'";
    host = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest !== "" && !rest.startsWith(":")) return `unexpected ${quoteInput(rest)} after ']'`;
    portText = rest === "" ? null : rest.slice(1);
    if (!host.includes(":") || parseIpv6(host) === null) {
      return `${quoteInput(host)} in brackets is not an IPv6 address`;
    }
  } else {
    const colons = text.split(":").length - 1;
    if (colons >= 2) {
      const reason = bareIpv6Reason(text);
      if (reason !== null) return reason;
      host = text;
      portText = null;
    } else if (colons === 1) {
      const colon = text.indexOf(":");
      host = colon === 0 ? "0.0.0.0" : text.slice(0, colon);
      portText = text.slice(colon + 1);
    } else {
      host = text;
      portText = null;
    }
  }
  const hostReason = checkHost(host);
  if (hostReason !== null) return hostReason;
  const port = portText === null ? defaultPort : parsePort(portText);
  if (typeof port === "string") return port;
  return { host, port };
}

function bareIpv6Reason(text: string): string | null {
  if (parseIpv6(text) === null) return "an IPv6 address with a port must be in brackets";
  const colon = text.lastIndexOf(":");
  const head = text.slice(0, colon);
  const tail = text.slice(colon + 1);
  if (/^[0-9]+$/.test(tail) && parseIpv6(head) !== null) {
    return (
      `ambiguous; write "[${head}]:${tail}" for port ${tail} ` +
      `or "[${text}]" for the address alone`
    );
  }
  return null;
}

export function formatListenAddress(address: ListenAddress): string {
  if (address.transport === "unix") return `unix:${address.path}`;
  return formatHostPort(address.host, address.port);
}

function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

// ---- export URLs -------------------------------------------------------------------------

const SCHEME_SYNTAX = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;
const URL_USAGE =
  "use dst://HOST[:PORT]/EXPORT, dst+unix:///EXPORT?socket=PATH, nbd:// or nbd+unix://";

/** True when `text` starts like "scheme://", so `dstd copy` can tell URLs from file names. */
export function isUrl(text: string): boolean {
  return SCHEME_SYNTAX.test(text);
}

function percentDecode(text: string): string | null {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

/** Parse a dst://, dst+unix://, nbd:// or nbd+unix:// URL; see the module comment. */
export function parseExportUrl(text: string): ExportUrl | string {
  if (text.length > ADDRESS_TEXT_MAX * 3) return `${quoteInput(text)} is too long to be a URL`;
  const scheme = SCHEME_SYNTAX.exec(text)?.[1]?.toLowerCase();
  if (scheme === undefined) return `${quoteInput(text)} is not a URL; ${URL_USAGE}`;
  if (scheme === "nbds" || scheme === "nbds+unix") {
    return `${quoteInput(text)}: TLS (${scheme}://) is not supported; dst:// is encrypted itself`;
  }
  if (!["dst", "dst+unix", "nbd", "nbd+unix"].includes(scheme)) {
    return `unknown scheme ${quoteInput(scheme)} — ${URL_USAGE}`;
  }
  const protocol = scheme.startsWith("dst") ? "dst" : "nbd";
  const unix = scheme.endsWith("+unix");
  const fail = (reason: string) => `${quoteInput(text)}: ${reason}`;
  let rest = text.slice(scheme.length + 3);
  if (rest.includes("#")) return fail("fragments (#...) are not allowed");
  const question = rest.indexOf("?");
  const query = question < 0 ? "" : rest.slice(question + 1);
  rest = question < 0 ? rest : rest.slice(0, question);
  const slash = rest.indexOf("/");
  const authority = slash < 0 ? rest : rest.slice(0, slash);
  const exportName = decodeExportName(slash < 0 ? "" : rest.slice(slash + 1), protocol);
  if (typeof exportName !== "string") return fail(exportName.reason);
  const params = parseQuery(query);
  if (typeof params === "string") return fail(params);
  if (unix) {
    if (authority !== "") {
      return fail(`${scheme}:// takes no host; write ${scheme}:///EXPORT?socket=PATH`);
    }
    if (params.socket === undefined) {
      return fail(`missing socket= for ${scheme}; write ${scheme}:///EXPORT?socket=PATH`);
    }
    const reason = unixPathReason(params.socket, "socket path");
    if (reason !== null) return fail(reason);
    return { protocol, transport: "unix", path: params.socket, exportName };
  }
  if (params.socket !== undefined) return fail(`socket= is only for ${protocol}+unix:// URLs`);
  if (authority.includes("@")) return fail("user names (user@host) are not supported");
  if (authority === "") return fail(`missing host; write ${scheme}://HOST[:PORT]/EXPORT`);
  const defaultPort = protocol === "dst" ? DST_DEFAULT_PORT : NBD_DEFAULT_PORT;
  if (!authority.startsWith("[") && authority.split(":").length > 2) {
    return fail("an IPv6 host must be in brackets, e.g. dst://[::1]:10810/disk");
  }
  if (authority.startsWith(":")) return fail("missing host before the port");
  const hostPort = splitHostPort(authority, defaultPort);
  if (typeof hostPort === "string") return fail(hostPort);
  return { protocol, transport: "tcp", host: hostPort.host, port: hostPort.port, exportName };
}

function decodeExportName(path: string, protocol: "dst" | "nbd"): string | { reason: string } {
  const name = percentDecode(path);
  if (name === null) return { reason: "bad percent-encoding in the export name" };
  if (name.includes("\0")) return { reason: "the export name contains a NUL character" };
  if (encoder.encode(name).length > EXPORT_NAME_MAX) {
    return { reason: `the export name is longer than ${EXPORT_NAME_MAX} bytes` };
  }
  return name === "" && protocol === "dst" ? DST_DEFAULT_EXPORT : name;
}

/** The only query parameter understood is socket=; anything else is diagnosed (uri.md). */
function parseQuery(query: string): { socket?: string } | string {
  const params: { socket?: string } = {};
  for (const part of query.split("&")) {
    if (part === "") continue;
    const equals = part.indexOf("=");
    const key = percentDecode(equals < 0 ? part : part.slice(0, equals));
    const value = percentDecode(equals < 0 ? "" : part.slice(equals + 1));
    if (key === null || value === null) return "bad percent-encoding in the query";
    if (key !== "socket") return `unknown parameter ${quoteInput(key)}; only socket= is understood`;
    if (params.socket !== undefined) return "socket= given twice";
    params.socket = value;
  }
  return params;
}

/**
 * URL text for logs and other tools. parseExportUrl(formatExportUrl(u)) gives u back, except
 * a dst URL with export name "" (a dst URL without a name means "disk").
 */
export function formatExportUrl(url: ExportUrl): string {
  const encode = (text: string) => text.split("/").map(encodeURIComponent).join("/");
  const name = encode(url.exportName);
  if (url.transport === "unix") return `${url.protocol}+unix:///${name}?socket=${encode(url.path)}`;
  return `${url.protocol}://${formatHostPort(url.host, url.port)}/${name}`;
}
