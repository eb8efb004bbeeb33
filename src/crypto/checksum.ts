/**
 * @module crypto/checksum — end-to-end data digests, independent of the channel: the writer
 * digests its own copy of the data, the receiver verifies the digest just before the data is
 * applied (export: before the backend write; client: before handing read data up), so
 * corruption anywhere between the two memories is caught. docs/security.md §Checksums.
 *
 * These digests are not MACs (no key): tampering on the wire is the channel's job. Must not
 * copy the data it digests, or throw on a peer-supplied digest (a wrong size is a mismatch).
 */
import { timingSafeEqual } from "node:crypto";
import { assert } from "../lib/assert.ts";

export const CHECKSUM_NAMES = ["xxh3", "sha256", "blake2b256", "none"] as const;
export type ChecksumName = (typeof CHECKSUM_NAMES)[number];

/** Digest bytes per algorithm. "none" carries no digest. */
const SIZES: Readonly<Record<ChecksumName, number>> = {
  xxh3: 8,
  sha256: 32,
  blake2b256: 32,
  none: 0,
};

/** Fast non-cryptographic first, then the faster cryptographic one (SHA-NI beats BLAKE2 here). */
export const DEFAULT_CHECKSUMS: readonly ChecksumName[] = ["xxh3", "sha256", "blake2b256", "none"];

export function isChecksumName(name: string): name is ChecksumName {
  return (CHECKSUM_NAMES as readonly string[]).includes(name);
}

export function digestSize(alg: ChecksumName): number {
  return SIZES[alg];
}

/**
 * Writes the digest of `data` into `target` at offset `at` and returns its size.
 * xxh3: XXH3-64 with seed 0 as u64 big-endian; sha256: FIPS 180-4; blake2b256: RFC 7693 with a
 * 32-byte output. All native (Bun.hash, Bun.SHA256, Bun.CryptoHasher).
 */
export function computeDigest(
  alg: ChecksumName,
  data: Uint8Array,
  target: Uint8Array,
  at: number,
): number {
  const size = SIZES[alg];
  assert(
    at >= 0 && at + size <= target.length,
    `no room for a ${size}-byte ${alg} digest at offset ${at}`,
  );
  switch (alg) {
    case "xxh3":
      new DataView(target.buffer, target.byteOffset + at, 8).setBigUint64(
        0,
        Bun.hash.xxHash3(data),
      );
      break;
    case "sha256":
      Bun.SHA256.hash(data, target.subarray(at, at + size));
      break;
    case "blake2b256":
      target.set(Bun.CryptoHasher.hash("blake2b256", data), at);
      break;
    case "none":
      break;
  }
  return size;
}

const scratch = new Uint8Array(32);

/** True when `digest` is the `alg` digest of `data`; a digest of the wrong size is false. */
export function verifyDigest(alg: ChecksumName, data: Uint8Array, digest: Uint8Array): boolean {
  const size = SIZES[alg];
  if (digest.length !== size) return false;
  if (size === 0) return true;
  computeDigest(alg, data, scratch, 0);
  return timingSafeEqual(scratch.subarray(0, size), digest);
}

/**
 * verifyDigest that also hands back the verified XXH3-64 of `data` when `alg` is xxh3 (the
 * exactly-once signature and a tree node's pass-through digest are that same hash, so one pass
 * serves all): the hash when intact, `true` when intact under another algorithm, `false` when not.
 */
export function verifyDigestHash(alg: ChecksumName, data: Uint8Array, digest: Uint8Array): bigint | boolean {
  if (alg !== "xxh3" || digest.length !== 8) return verifyDigest(alg, data, digest);
  const hash = Bun.hash.xxHash3(data);
  return hash === new DataView(digest.buffer, digest.byteOffset, 8).getBigUint64(0) ? hash : false;
}

/** Parses "xxh3,sha256": the names in preference order, or a reason naming the bad entry. */
export function parseChecksumList(text: string): ChecksumName[] | string {
  const names = text.split(",").map((s) => s.trim());
  if (names.length === 1 && names[0] === "") return "the checksum list is empty";
  const out: ChecksumName[] = [];
  for (const name of names) {
    if (!isChecksumName(name)) {
      const known = CHECKSUM_NAMES.join(", ");
      return `unknown checksum ${JSON.stringify(name.slice(0, 40))} (known: ${known})`;
    }
    if (out.includes(name)) return `checksum ${name} is listed twice`;
    out.push(name);
  }
  return out;
}

/** First algorithm of the client's preference list the server allows, or null. */
export function chooseChecksum(
  clientOffer: readonly string[],
  serverAllowed: readonly string[],
): ChecksumName | null {
  for (const name of clientOffer) {
    if (isChecksumName(name) && serverAllowed.includes(name)) return name;
  }
  return null;
}
