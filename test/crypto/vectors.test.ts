/**
 * @module test/crypto/vectors — published known-answer vectors for every primitive the
 * channel and handshake use, run through our own wrappers where we have one (crypto/aead.ts),
 * plus cross-checks of our detached ChaCha and GMAC constructions against @noble's AEADs.
 */
import { describe, expect, test } from "bun:test";
import { hkdfSync, randomBytes } from "node:crypto";
import { chacha20poly1305, xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { gcm } from "@noble/ciphers/aes.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { createAead } from "../../src/crypto/aead.ts";

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/[\s:]/g, ""), "hex"));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

describe("HKDF-SHA256 (RFC 5869 appendix A.1, test case 1)", () => {
  const ikm = hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
  const salt = hex("000102030405060708090a0b0c");
  const info = hex("f0f1f2f3f4f5f6f7f8f9");
  const okm =
    "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865";

  test("node:crypto hkdfSync gives the published OKM", () => {
    expect(toHex(new Uint8Array(hkdfSync("sha256", ikm, salt, info, 42)))).toBe(okm);
  });
  test("@noble/hashes hkdf agrees (the cross-check used for our derivations)", () => {
    expect(toHex(hkdf(sha256, ikm, salt, info, 42))).toBe(okm);
  });
});

describe("AES-256-GCM (McGrew & Viega, GCM spec test cases 13, 14, 16) through aead.ts", () => {
  const cases = [
    {
      name: "13: empty plaintext, no AAD",
      key: "00".repeat(32),
      iv: "00".repeat(12),
      aad: "",
      plain: "",
      cipher: "",
      tag: "530f8afbc74536b9a963b4f1c4cb738b",
    },
    {
      name: "14: one zero block",
      key: "00".repeat(32),
      iv: "00".repeat(12),
      aad: "",
      plain: "00".repeat(16),
      cipher: "cea7403d4d606b6e074ec5d3baf39d18",
      tag: "d0d1c8a799996bf0265b98b5d48ab919",
    },
    {
      name: "16: 60 bytes with 20 bytes of AAD",
      key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
      iv: "cafebabefacedbaddecaf888",
      aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
      plain:
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
      cipher:
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
      tag: "76fc6ece0f4e1768cddf8853bb2d551b",
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const aead = createAead("aes-256-gcm", hex(c.key));
      const data = hex(c.plain);
      const tag = aead.seal(hex(c.aad), data, hex(c.iv));
      expect(toHex(data)).toBe(c.cipher);
      expect(toHex(tag)).toBe(c.tag);
      expect(aead.open(hex(c.aad), data, hex(c.iv), tag)).toBe(true);
      expect(toHex(data)).toBe(c.plain);
    });
  }
});

const ladies = new TextEncoder().encode(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip " +
    "for the future, sunscreen would be it.",
);
const chachaKey = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
const chachaAad = hex("50515253c0c1c2c3c4c5c6c7");

test("ChaCha20-Poly1305 (RFC 8439 §2.8.2) through our detached construction", () => {
  const aead = createAead("chacha20-poly1305", chachaKey);
  const data = ladies.slice();
  const nonce = hex("070000004041424344454647");
  const tag = aead.seal(chachaAad, data, nonce);
  expect(toHex(data)).toBe(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6" +
      "3dbea45e8ca9671282fafb69da92728b" +
      "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58" +
      "fab324e4fad675945585808b4831d7bc" +
      "3ff4def08e4b7a9de576d26586cec64b6116",
  );
  expect(toHex(tag)).toBe("1ae10b594f09e26a7e902ecbd0600691");
  expect(aead.open(chachaAad, data, nonce, tag)).toBe(true);
  expect(data).toEqual(ladies);
});

test("XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03 §A.3.1), detached construction", () => {
  const aead = createAead("xchacha20-poly1305", chachaKey);
  const data = ladies.slice();
  const nonce = hex("404142434445464748494a4b4c4d4e4f5051525354555657");
  const tag = aead.seal(chachaAad, data, nonce);
  expect(toHex(data)).toBe(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb" +
      "731c7f1b0b4aa6440bf3a82f4eda7e39" +
      "ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e" +
      "3f3fac2bc369488f76b2383565d3fff9" +
      "21f9664c97637da9768812f615c68b13b52e",
  );
  expect(toHex(tag)).toBe("c0875924c1c7987947deafd8780acf49");
});

describe("cross-checks against @noble's AEADs for awkward sizes", () => {
  const sizes = [0, 1, 15, 16, 17, 63, 64, 65, 4096, 65537];
  const header = new Uint8Array(randomBytes(56));
  const key = new Uint8Array(randomBytes(32));

  test.each(sizes)(
    "chacha20-poly1305 and xchacha20-poly1305, %i bytes: ciphertext || tag equal noble's",
    (size) => {
      for (const [suite, ref, nonceLength] of [
        ["chacha20-poly1305", chacha20poly1305, 12],
        ["xchacha20-poly1305", xchacha20poly1305, 24],
      ] as const) {
        const plain = new Uint8Array(randomBytes(size));
        const nonce = new Uint8Array(randomBytes(nonceLength));
        const data = plain.slice();
        const tag = createAead(suite, key).seal(header, data, nonce);
        const expected = ref(key, nonce, header).encrypt(plain);
        expect(toHex(data) + toHex(tag)).toBe(toHex(expected));
      }
    },
  );

  test.each(sizes)(
    "integrity (GMAC), %i bytes: tag equals noble AES-GCM over header || payload as AAD",
    (size) => {
      const payload = new Uint8Array(randomBytes(size));
      const nonce = new Uint8Array(randomBytes(12));
      const tag = createAead("integrity", key).seal(header, payload.slice(), nonce);
      const aad = new Uint8Array(56 + size);
      aad.set(header);
      aad.set(payload, 56);
      expect(toHex(tag)).toBe(toHex(gcm(key, nonce, aad).encrypt(new Uint8Array(0))));
    },
  );
});
