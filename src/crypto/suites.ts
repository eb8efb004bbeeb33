/**
 * @module crypto/suites — the registry of channel protection suites, suite-list parsing,
 * negotiation (first client preference the server allows) and the transport rule for "none".
 * docs/security.md §Suites explains each choice and the measured rates.
 *
 * Must not: do any cryptography (crypto/record.ts does), or let "none" through on a transport
 * that leaves the host.
 */
import { BlockList, isIPv4, isIPv6 } from "node:net";

export const SUITE_NAMES = [
  "aes-256-gcm",
  "chacha20-poly1305",
  "xchacha20-poly1305",
  "integrity",
  "none",
] as const;
export type SuiteName = (typeof SUITE_NAMES)[number];

export interface SuiteInfo {
  name: SuiteName;
  /** Payload is confidential (encrypted). */
  encrypts: boolean;
  /** Records are authenticated: a 16-byte tag in each record header (crypto/record.ts). */
  authenticates: boolean;
  /** Bytes of the AEAD nonce, one per record (0 for "none"). */
  nonceLength: number;
  /** Runs in native code (node:crypto); false means pure JS (@noble/ciphers, ~100 MB/s). */
  native: boolean;
}

export const SUITES: Readonly<Record<SuiteName, SuiteInfo>> = {
  // NIST SP 800-38D AES-GCM, native BoringSSL: several GB/s with AES-NI + PCLMUL.
  "aes-256-gcm": {
    name: "aes-256-gcm",
    encrypts: true,
    authenticates: true,
    nonceLength: 12,
    native: true,
  },
  // RFC 8439 §2.8, for CPUs without AES instructions; pure JS.
  "chacha20-poly1305": {
    name: "chacha20-poly1305",
    encrypts: true,
    authenticates: true,
    nonceLength: 12,
    native: false,
  },
  // draft-irtf-cfrg-xchacha-03 §2: 24-byte nonce; same speed as chacha20-poly1305.
  "xchacha20-poly1305": {
    name: "xchacha20-poly1305",
    encrypts: true,
    authenticates: true,
    nonceLength: 24,
    native: false,
  },
  // GMAC (SP 800-38D §3: GCM with empty plaintext): the whole frame is additional data.
  integrity: {
    name: "integrity",
    encrypts: false,
    authenticates: true,
    nonceLength: 12,
    native: true,
  },
  none: { name: "none", encrypts: false, authenticates: false, nonceLength: 0, native: true },
};

/** What an export and a client allow when the configuration says nothing: never "none". */
export const DEFAULT_SUITES: readonly SuiteName[] = [
  "aes-256-gcm",
  "chacha20-poly1305",
  "xchacha20-poly1305",
];

export function isSuiteName(name: string): name is SuiteName {
  return (SUITE_NAMES as readonly string[]).includes(name);
}

/**
 * Parses a comma-separated suite list in preference order ("aes-256-gcm,integrity").
 * Returns the names or a reason naming the bad entry. Duplicates and empty lists are refused.
 */
export function parseSuiteList(text: string): SuiteName[] | string {
  const names = text.split(",").map((s) => s.trim());
  if (names.length === 1 && names[0] === "") return "the suite list is empty";
  const out: SuiteName[] = [];
  for (const name of names) {
    if (name === "") return "empty entry in the suite list";
    if (!isSuiteName(name)) {
      const known = SUITE_NAMES.join(", ");
      return `unknown suite ${JSON.stringify(name.slice(0, 40))} (known: ${known})`;
    }
    if (out.includes(name)) return `suite ${name} is listed twice`;
    out.push(name);
  }
  return out;
}

/**
 * The suite for a session: the first entry of the client's preference list that the server
 * allows, or null when they share none (the handshake then fails with "no common suite").
 * Unknown names in either list are skipped, so a newer peer's suites do not break us.
 */
export function chooseSuite(
  clientOffer: readonly string[],
  serverAllowed: readonly string[],
): SuiteName | null {
  for (const name of clientOffer) {
    if (isSuiteName(name) && serverAllowed.includes(name)) return name;
  }
  return null;
}

export interface TransportInfo {
  transport: "tcp" | "unix";
  /** The peer's IP address for tcp (as reported by the socket); ignored for unix. */
  address: string;
}

const loopback = new BlockList();
loopback.addSubnet("127.0.0.0", 8, "ipv4");
loopback.addAddress("::1", "ipv6");

/** True when `address` is an IPv4 127.0.0.0/8 or IPv6 ::1 address (also ::ffff:127.x.y.z). */
export function isLoopbackAddress(address: string): boolean {
  const bare = address.startsWith("[") && address.endsWith("]") ? address.slice(1, -1) : address;
  if (isIPv4(bare)) return loopback.check(bare, "ipv4");
  if (isIPv6(bare)) return loopback.check(bare, "ipv6");
  return false; // A host name is not an address: fail closed.
}

/**
 * Why `suite` may not run on this transport, or null when it may. Only "none" is restricted:
 * it is allowed on Unix sockets and loopback TCP, where the bytes never leave the host.
 */
export function suiteTransportRefusal(suite: string, info: TransportInfo): string | null {
  if (suite !== "none") return null;
  if (info.transport === "unix") return null;
  if (isLoopbackAddress(info.address)) return null;
  return `suite none is only allowed on Unix sockets and loopback; ${info.address} is not loopback`;
}

export function suiteAllowedOnTransport(suite: string, info: TransportInfo): boolean {
  return suiteTransportRefusal(suite, info) === null;
}
