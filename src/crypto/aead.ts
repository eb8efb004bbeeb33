/**
 * @module crypto/aead — detached, in-place AEAD for each suite, as crypto/record.ts seals
 * records with it: the data is encrypted (or only authenticated) where it lies and the 16-byte
 * tag is returned apart (the record layer puts it in the record header).
 *
 * Contract of every Aead: `header` is the additional data (a record's 4 length bytes);
 * `payload` is the data to protect (the record's frames); `nonce` is unique per key. seal() transforms payload in place and returns the tag; open() returns false
 * unless the tag verifies, and then the payload holds no plaintext: left as it was, or zeroed
 * where the cipher decrypts in place before it can verify (no unauthenticated plaintext ever escapes).
 * Must not: pick nonces (crypto/record.ts does) or know anything about sessions.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from "node:crypto";
import { chacha20, xchacha20 } from "@noble/ciphers/chacha.js";
import { poly1305 } from "@noble/ciphers/_poly1305.js";
import { equalBytes } from "@noble/ciphers/utils.js";
import { assertNever } from "../lib/assert.ts";
import type { SuiteName } from "./suites.ts";

export const TAG_SIZE = 16;

export interface Aead {
  seal(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array): Uint8Array;
  open(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array, tag: Uint8Array): boolean;
  /**
   * Optional: like open(), but returns the plaintext in a buffer of the cipher's own (leaving
   * `payload` as it was), or null on a bad tag — saves the copy back for ciphers that cannot
   * decrypt in place (node:crypto).
   */
  openDetached?(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array, tag: Uint8Array): Uint8Array | null;
  /**
   * Optional: seal `parts` (in order, as one plaintext) without assembling them: returns the
   * ciphertext pieces (new buffers, or the parts themselves for an integrity-only suite) and
   * the tag. Lets a record go out as its header plus these pieces, with no concatenation copy.
   */
  sealParts?(aad: Uint8Array, parts: readonly Uint8Array[], nonce: Uint8Array): { pieces: Uint8Array[]; tag: Uint8Array };
  /**
   * Optional: seal `parts` (in order, as one plaintext) straight into `out` (their summed
   * length), in one pass, without assembling them and without allocating; returns the tag.
   * The parts are not changed. Only ciphers that can write where they are told have it.
   */
  sealInto?(aad: Uint8Array, parts: readonly Uint8Array[], nonce: Uint8Array, out: Uint8Array): Uint8Array;
  /** Wipes the key copy this object holds (where the runtime allows). */
  destroy(): void;
}

/** One direction of AES-256-GCM writing into the caller's buffers (sys/libcrypto.ts implements it). */
export interface NativeGcm {
  begin(nonce: Uint8Array, aad: Uint8Array): void;
  update(input: Uint8Array, output: Uint8Array): void;
  finishSeal(tag: Uint8Array): void;
  finishOpen(tag: Uint8Array): boolean;
  destroy(): void;
}

export type NativeGcmFactory = (key: Uint8Array, direction: "seal" | "open") => NativeGcm | null;

/**
 * Where AES-256-GCM that writes into caller buffers comes from: installed by the composition
 * root (cli/run.ts installs sys/libcrypto.ts) so that crypto/ and everything that seals
 * (engine/, export/) stay free of bun:ffi. Null (tests, or no libcrypto): node:crypto.
 */
let nativeGcm: NativeGcmFactory | null = null;

export function useNativeGcm(factory: NativeGcmFactory | null): void {
  nativeGcm = factory;
}

/** Builds the Aead of `suite` ("none" has none). Copies `key`; the caller may zero its own. */
export function createAead(suite: Exclude<SuiteName, "none">, key: Uint8Array): Aead {
  switch (suite) {
    case "aes-256-gcm":
      return nativeGcm === null ? new GcmAead(key) : NativeGcmAead.create(nativeGcm, key) ?? new GcmAead(key);
    case "integrity":
      return new GmacAead(key);
    case "chacha20-poly1305":
      return new ChachaAead(chacha20, key);
    case "xchacha20-poly1305":
      return new ChachaAead(xchacha20, key);
    default:
      return assertNever(suite);
  }
}

/**
 * AES-256-GCM (NIST SP 800-38D) in node:crypto. A KeyObject keeps the expanded key native and
 * is ~30 % faster per call than a raw key; its copy of the key cannot be wiped from JS.
 * cipher.update() cannot write into a caller buffer, so each direction costs one payload copy.
 */
class GcmAead implements Aead {
  private key: KeyObject;
  constructor(key: Uint8Array) {
    this.key = createSecretKey(key);
  }
  seal(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array): Uint8Array {
    const cipher = createCipheriv("aes-256-gcm", this.key, nonce, { authTagLength: TAG_SIZE });
    cipher.setAAD(header);
    if (payload.length > 0) payload.set(cipher.update(payload));
    cipher.final();
    return cipher.getAuthTag();
  }
  sealParts(aad: Uint8Array, parts: readonly Uint8Array[], nonce: Uint8Array): { pieces: Uint8Array[]; tag: Uint8Array } {
    const cipher = createCipheriv("aes-256-gcm", this.key, nonce, { authTagLength: TAG_SIZE });
    cipher.setAAD(aad);
    const pieces: Uint8Array[] = [];
    for (const part of parts) if (part.length > 0) pieces.push(cipher.update(part));
    cipher.final();
    return { pieces, tag: cipher.getAuthTag() };
  }
  open(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array, tag: Uint8Array): boolean {
    const decipher = createDecipheriv("aes-256-gcm", this.key, nonce, { authTagLength: TAG_SIZE });
    decipher.setAAD(header);
    decipher.setAuthTag(tag);
    // GCM decrypts before it can verify; keep the plaintext aside until final() accepts the tag.
    const plain = payload.length > 0 ? decipher.update(payload) : null;
    try {
      decipher.final();
    } catch {
      plain?.fill(0);
      return false;
    }
    if (plain !== null) payload.set(plain);
    return true;
  }
  openDetached(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array, tag: Uint8Array): Uint8Array | null {
    const decipher = createDecipheriv("aes-256-gcm", this.key, nonce, { authTagLength: TAG_SIZE });
    decipher.setAAD(header);
    decipher.setAuthTag(tag);
    const plain = payload.length > 0 ? decipher.update(payload) : new Uint8Array(0);
    try {
      decipher.final();
    } catch {
      plain.fill(0);
      return null;
    }
    return plain;
  }
  destroy(): void {
    // KeyObject has no wipe; dropping the reference is all JS allows.
  }
}

/**
 * AES-256-GCM through NativeGcm (OpenSSL's EVP via sys/libcrypto.ts): sealing and opening in
 * place, or sealing straight into a record buffer, with no buffer allocated per call — the
 * node:crypto form returns every output in a fresh buffer (see sys/libcrypto.ts for what that
 * cost). open() decrypts in place and verifies at the end (GCM cannot verify first); on a bad
 * tag it zeroes the payload, so no unauthenticated plaintext escapes either way.
 */
class NativeGcmAead implements Aead {
  private sealer: NativeGcm | null = null;
  private opener: NativeGcm | null = null;
  private readonly tagOut = new Uint8Array(TAG_SIZE);

  private constructor(
    private readonly factory: NativeGcmFactory,
    private key: Uint8Array,
  ) {}

  static create(factory: NativeGcmFactory, key: Uint8Array): NativeGcmAead | null {
    const aead = new NativeGcmAead(factory, new Uint8Array(key));
    // Probe now: a missing libcrypto falls back to node:crypto at creation, never mid-stream.
    aead.sealer = factory(aead.key, "seal");
    return aead.sealer === null ? null : aead;
  }

  seal(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array): Uint8Array {
    const gcm = this.sealer!;
    gcm.begin(nonce, header);
    gcm.update(payload, payload);
    const tag = new Uint8Array(TAG_SIZE);
    gcm.finishSeal(tag);
    return tag;
  }

  sealInto(aad: Uint8Array, parts: readonly Uint8Array[], nonce: Uint8Array, out: Uint8Array): Uint8Array {
    const gcm = this.sealer!;
    gcm.begin(nonce, aad);
    let at = 0;
    for (const part of parts) {
      gcm.update(part, out.subarray(at, at + part.length));
      at += part.length;
    }
    gcm.finishSeal(this.tagOut);
    return this.tagOut;
  }

  open(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array, tag: Uint8Array): boolean {
    this.opener ??= this.factory(this.key, "open");
    const gcm = this.opener!;
    gcm.begin(nonce, header);
    gcm.update(payload, payload);
    if (gcm.finishOpen(tag)) return true;
    payload.fill(0);
    return false;
  }

  destroy(): void {
    this.sealer?.destroy();
    this.opener?.destroy();
    this.sealer = null;
    this.opener = null;
    this.key.fill(0);
  }
}

/**
 * GMAC (SP 800-38D: GCM with an empty plaintext): header and payload both go in as additional
 * data, the payload stays readable. Measured ~18 GB/s at 1 MiB against ~1.7 GB/s for
 * HMAC-SHA256 (docs/security.md §Suites), so the integrity suite uses it.
 */
class GmacAead implements Aead {
  private key: KeyObject;
  constructor(key: Uint8Array) {
    this.key = createSecretKey(key);
  }
  seal(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array): Uint8Array {
    const cipher = createCipheriv("aes-256-gcm", this.key, nonce, { authTagLength: TAG_SIZE });
    cipher.setAAD(header);
    if (payload.length > 0) cipher.setAAD(payload);
    cipher.final();
    return cipher.getAuthTag();
  }
  sealParts(aad: Uint8Array, parts: readonly Uint8Array[], nonce: Uint8Array): { pieces: Uint8Array[]; tag: Uint8Array } {
    // Same tag as seal() over the assembled plaintext: GCM's additional data is one stream, so
    // feeding it in pieces (as seal() already does for header and payload) authenticates their
    // concatenation.
    const cipher = createCipheriv("aes-256-gcm", this.key, nonce, { authTagLength: TAG_SIZE });
    cipher.setAAD(aad);
    for (const part of parts) if (part.length > 0) cipher.setAAD(part);
    cipher.final();
    return { pieces: parts.filter((p) => p.length > 0), tag: cipher.getAuthTag() };
  }
  open(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array, tag: Uint8Array): boolean {
    const decipher = createDecipheriv("aes-256-gcm", this.key, nonce, { authTagLength: TAG_SIZE });
    decipher.setAAD(header);
    if (payload.length > 0) decipher.setAAD(payload);
    decipher.setAuthTag(tag);
    try {
      decipher.final();
      return true;
    } catch {
      return false;
    }
  }
  destroy(): void {}
}

type XorStream = (
  key: Uint8Array,
  nonce: Uint8Array,
  data: Uint8Array,
  output?: Uint8Array,
  counter?: number,
) => Uint8Array;

const ZEROS = new Uint8Array(32);

/**
 * ChaCha20-Poly1305 (RFC 8439 §2.8) and XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha §2) built
 * detached from @noble/ciphers' stream cipher and Poly1305, because noble's AEAD appends the
 * tag after the ciphertext and the frame keeps it in the header. Same bytes as noble's AEAD
 * (test/crypto/vectors.test.ts cross-checks), no copies.
 */
class ChachaAead implements Aead {
  private key: Uint8Array;
  constructor(
    private readonly xor: XorStream,
    key: Uint8Array,
  ) {
    this.key = new Uint8Array(key);
  }
  seal(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array): Uint8Array {
    // §2.8: the payload keystream starts at block counter 1; block 0 made the one-time key.
    if (payload.length > 0) this.xor(this.key, nonce, payload, payload, 1);
    return this.tag(header, payload, nonce);
  }
  open(header: Uint8Array, payload: Uint8Array, nonce: Uint8Array, tag: Uint8Array): boolean {
    // RFC 8439 §4: verify the tag over the ciphertext before decrypting anything.
    const expected = this.tag(header, payload, nonce);
    const ok = equalBytes(expected, tag);
    if (ok && payload.length > 0) this.xor(this.key, nonce, payload, payload, 1);
    return ok;
  }
  destroy(): void {
    this.key.fill(0);
  }
  /** §2.8: Poly1305(otk, aad || pad16 || ciphertext || pad16 || le64(|aad|) || le64(|ct|)). */
  private tag(aad: Uint8Array, ciphertext: Uint8Array, nonce: Uint8Array): Uint8Array {
    const otk = this.xor(this.key, nonce, ZEROS);
    const mac = poly1305.create(otk);
    mac.update(aad);
    if (aad.length % 16 !== 0) mac.update(ZEROS.subarray(0, 16 - (aad.length % 16)));
    mac.update(ciphertext);
    if (ciphertext.length % 16 !== 0) mac.update(ZEROS.subarray(0, 16 - (ciphertext.length % 16)));
    const lengths = new Uint8Array(16);
    const view = new DataView(lengths.buffer);
    view.setUint32(0, aad.length, true); // le64, high words stay 0: a frame is < 4 GiB
    view.setUint32(8, ciphertext.length, true);
    mac.update(lengths);
    const tag = mac.digest();
    otk.fill(0);
    return tag;
  }
}

