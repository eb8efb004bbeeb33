/**
 * @module test/crypto/checksum — end-to-end digests: published values, placement at an
 * offset, detection of any changed bit, wrong-size digests, list parsing and negotiation.
 */
import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import {
  CHECKSUM_NAMES,
  chooseChecksum,
  computeDigest,
  digestSize,
  parseChecksumList,
  verifyDigest,
} from "../../src/crypto/checksum.ts";

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const hexDigest = (alg: Parameters<typeof computeDigest>[0], data: Uint8Array): string => {
  const out = new Uint8Array(digestSize(alg));
  computeDigest(alg, data, out, 0);
  return Buffer.from(out).toString("hex");
};

describe("known values", () => {
  test("xxh3: XXH3-64 seed 0, big-endian (xxHash reference: empty = 2d06800538d394c2)", () => {
    expect(hexDigest("xxh3", new Uint8Array(0))).toBe("2d06800538d394c2");
    expect(hexDigest("xxh3", text("abc"))).toBe("78af5f94892f3950");
  });
  test('sha256: FIPS 180-2 appendix B.1 ("abc")', () => {
    expect(hexDigest("sha256", text("abc"))).toBe(
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
  });
  test('blake2b256: BLAKE2b with 32-byte output ("abc")', () => {
    expect(hexDigest("blake2b256", text("abc"))).toBe(
      "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319",
    );
  });
  test("sizes", () => {
    expect(CHECKSUM_NAMES.map(digestSize)).toEqual([8, 32, 32, 0]);
  });
});

describe.each(["xxh3", "sha256", "blake2b256"] as const)("%s", (alg) => {
  const data = new Uint8Array(randomBytes(4096));

  test("writes exactly its digest at the offset, touching nothing else", () => {
    const target = new Uint8Array(100).fill(0xee);
    expect(computeDigest(alg, data, target, 40)).toBe(digestSize(alg));
    expect(target.subarray(0, 40).every((b) => b === 0xee)).toBe(true);
    expect(target.subarray(40 + digestSize(alg)).every((b) => b === 0xee)).toBe(true);
    expect(Buffer.from(target.subarray(40, 40 + digestSize(alg))).toString("hex")).toBe(
      hexDigest(alg, data),
    );
  });

  test("verifies its digest; rejects a changed bit of the data (sampled) or digest (all)", () => {
    const digest = new Uint8Array(digestSize(alg));
    computeDigest(alg, data, digest, 0);
    expect(verifyDigest(alg, data, digest)).toBe(true);
    for (let bit = 0; bit < data.length * 8; bit += 13) {
      const changed = data.slice();
      changed[bit >> 3] = (changed[bit >> 3] ?? 0) ^ (1 << (bit & 7));
      expect(verifyDigest(alg, changed, digest)).toBe(false);
    }
    for (let bit = 0; bit < digest.length * 8; bit++) {
      const changed = digest.slice();
      changed[bit >> 3] = (changed[bit >> 3] ?? 0) ^ (1 << (bit & 7));
      expect(verifyDigest(alg, data, changed)).toBe(false);
    }
  });

  test("a digest of the wrong size is a mismatch, not a throw", () => {
    expect(verifyDigest(alg, data, new Uint8Array(0))).toBe(false);
    expect(verifyDigest(alg, data, new Uint8Array(digestSize(alg) + 1))).toBe(false);
  });

  test("works on a view at an odd offset", () => {
    const big = new Uint8Array(randomBytes(1000));
    const view = big.subarray(7, 907);
    expect(hexDigest(alg, view)).toBe(hexDigest(alg, view.slice()));
  });
});

test("none: no digest, always verifies an empty digest, refuses a non-empty one", () => {
  const target = new Uint8Array(4);
  expect(computeDigest("none", text("x"), target, 4)).toBe(0);
  expect(verifyDigest("none", text("x"), new Uint8Array(0))).toBe(true);
  expect(verifyDigest("none", text("x"), new Uint8Array(8))).toBe(false);
});

describe("lists and negotiation", () => {
  test("parseChecksumList", () => {
    expect(parseChecksumList("xxh3, sha256")).toEqual(["xxh3", "sha256"]);
    expect(parseChecksumList("")).toBe("the checksum list is empty");
    expect(parseChecksumList("md5")).toStartWith(
      'unknown checksum "md5" (known: xxh3, sha256, blake2b256, none)',
    );
    expect(parseChecksumList("sha256,sha256")).toBe("checksum sha256 is listed twice");
  });
  test("chooseChecksum takes the client's first preference the server allows", () => {
    expect(chooseChecksum(["sha256", "xxh3"], ["xxh3", "sha256"])).toBe("sha256");
    expect(chooseChecksum(["crc64", "xxh3"], ["xxh3"])).toBe("xxh3");
    expect(chooseChecksum(["sha256"], ["xxh3"])).toBeNull();
  });
});
