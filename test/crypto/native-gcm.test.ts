/**
 * AES-256-GCM through the system's OpenSSL (src/sys/libcrypto.ts, installed by cli/run.ts):
 * the same bytes as node:crypto for every way the record layer uses it — seal in place, seal
 * parts straight into one pooled record (RecordSealer.sealPooled), open in place — and a
 * tampered record fails with its payload zeroed (no unauthenticated plaintext escapes).
 * Records sealed by one implementation open with the other, in both directions.
 * Skips when libcrypto.so.3 is missing (Debian package libssl3).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { createAead, useNativeGcm } from "../../src/crypto/aead.ts";
import { RecordOpener, RecordSealer } from "../../src/crypto/record.ts";
import { giveBuffer } from "../../src/lib/buffer-pool.ts";
import { loadNativeGcm } from "../../src/sys/libcrypto.ts";

const available = loadNativeGcm(new Uint8Array(32), "seal") !== null;
const bytes = (n: number) => new Uint8Array(randomBytes(n));
const useNative = (on: boolean) => useNativeGcm(on ? loadNativeGcm : null);
afterEach(() => useNative(false));

describe.skipIf(!available)("native AES-256-GCM (libcrypto.so.3; Debian package libssl3)", () => {
  test("seal in place, sealInto over split parts and open match node:crypto byte for byte", () => {
    const key = bytes(32);
    const aad = bytes(4);
    for (const length of [0, 1, 15, 16, 17, 4096, 70_001, 1 << 20]) {
      const nonce = bytes(12);
      const data = bytes(length);
      const reference = data.slice();
      const referenceTag = createAead("aes-256-gcm", key).seal(aad, reference, nonce);
      useNative(true);
      const aead = createAead("aes-256-gcm", key);
      expect(aead.sealInto).toBeDefined();
      const inPlace = data.slice();
      expect(aead.seal(aad, inPlace, nonce)).toEqual(referenceTag);
      expect(inPlace).toEqual(reference);
      const cut = Math.floor(length / 3);
      const out = new Uint8Array(length);
      const parts = [data.subarray(0, cut), data.subarray(cut, cut), data.subarray(cut)];
      expect(new Uint8Array(aead.sealInto!(aad, parts, nonce, out))).toEqual(new Uint8Array(referenceTag));
      expect(out).toEqual(reference);
      const opened = reference.slice();
      expect(aead.open(aad, opened, nonce, referenceTag)).toBe(true);
      expect(opened).toEqual(data);
      useNative(false);
    }
  });

  test("a tampered ciphertext or tag fails and leaves no plaintext behind", () => {
    const key = bytes(32);
    const aad = bytes(4);
    const nonce = bytes(12);
    const data = bytes(5000).map((b) => b | 1);
    useNative(true);
    const aead = createAead("aes-256-gcm", key);
    const sealed = data.slice();
    const tag = aead.seal(aad, sealed, nonce).slice();
    const flipped = sealed.slice();
    flipped[4321]! ^= 0x20;
    expect(aead.open(aad, flipped, nonce, tag)).toBe(false);
    expect(flipped.every((b) => b === 0)).toBe(true);
    const badTag = tag.slice();
    badTag[0]! ^= 1;
    const copy = sealed.slice();
    expect(aead.open(aad, copy, nonce, badTag)).toBe(false);
    expect(copy.every((b) => b === 0)).toBe(true);
    expect(aead.open(bytes(4), sealed.slice(), nonce, tag)).toBe(false);
  });

  test("records sealed into pooled buffers open with node:crypto, and the other way round", () => {
    const key = bytes(32);
    const batches = [[bytes(56)], [bytes(4152), bytes(1 << 20), bytes(56)], [bytes(70_000)]];
    useNative(true);
    const nativeSealer = new RecordSealer("aes-256-gcm", key, 0);
    const pooled = batches.map((parts) => nativeSealer.sealPooled(parts, parts.reduce((n, p) => n + p.length, 0))!);
    const nativeOpener = new RecordOpener("aes-256-gcm", key, 1);
    useNative(false);
    const nodeOpener = new RecordOpener("aes-256-gcm", key, 0);
    for (let i = 0; i < batches.length; i++) {
      const opened = nodeOpener.push(pooled[i]!.slice());
      expect(opened).toEqual([new Uint8Array(Buffer.concat(batches[i]!))]);
      giveBuffer(pooled[i]!);
    }
    const nodeSealer = new RecordSealer("aes-256-gcm", key, 1);
    for (const parts of batches) {
      const record = nodeSealer.seal(parts, parts.reduce((n, p) => n + p.length, 0));
      // Split in two chunks: the opener gathers the body, then opens it in place.
      const half = Math.floor(record.length / 2);
      const first = nativeOpener.push(record.slice(0, half));
      const second = nativeOpener.push(record.slice(half));
      expect(first).toEqual([]);
      expect(second).toEqual([new Uint8Array(Buffer.concat(parts))]);
    }
  });
});
