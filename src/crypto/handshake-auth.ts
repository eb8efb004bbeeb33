/**
 * @module crypto/handshake-auth — the cryptographic pieces of DST mutual authentication:
 * nonces, the transcript hash, the proof key, both proofs, their constant-time check, the
 * decoy key for unknown identities, key ids for rotation, and the session key derivation.
 * docs/security.md §Handshake specifies the message flow these pieces serve and why.
 *
 * Must not: parse or build wire messages (the engine does), compare secrets with `===`, or put
 * key bytes in a message. Every derivation is HKDF-SHA256 (RFC 5869) or HMAC-SHA256 (RFC 2104)
 * from node:crypto.
 */
import { createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";
import { assert } from "../lib/assert.ts";
import { SECRET_SIZE, zero } from "./keys.ts";

/** Bytes of each side's handshake nonce. */
export const NONCE_SIZE = 32;
/** Bytes of a proof (full HMAC-SHA256 output). */
export const PROOF_SIZE = 32;
/** Bytes of a key id (see keyId). */
export const KEY_ID_SIZE = 8;
/** Bytes of each derived session key. */
export const SESSION_KEY_SIZE = 32;

const TRANSCRIPT_LABEL = new TextEncoder().encode("dstd v1 transcript");
const AUTH_INFO = new TextEncoder().encode("dstd v1 auth");
const KEY_ID_INFO = new TextEncoder().encode("dstd v1 key id");
const SERVER_LABEL = new TextEncoder().encode("server");
const CLIENT_LABEL = new TextEncoder().encode("client");
const RESUME_LABEL = new TextEncoder().encode("resume");

/** A fresh handshake nonce from the system CSPRNG. */
export function newNonce(): Uint8Array {
  return new Uint8Array(randomBytes(NONCE_SIZE));
}

/**
 * SHA-256 over a domain label and each part as u32 big-endian length || bytes. The length
 * prefix makes the encoding injective: moving bytes between adjacent parts changes the hash.
 */
export function transcriptHash(parts: readonly Uint8Array[]): Uint8Array {
  const hash = createHash("sha256");
  const len = new Uint8Array(4);
  const view = new DataView(len.buffer);
  for (const part of [TRANSCRIPT_LABEL, ...parts]) {
    view.setUint32(0, part.length);
    hash.update(len);
    hash.update(part);
  }
  return new Uint8Array(hash.digest());
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function hkdf(psk: Uint8Array, salt: Uint8Array, info: Uint8Array, size: number): Uint8Array {
  assert(psk.length === SECRET_SIZE, "pre-shared key must be 32 bytes");
  return new Uint8Array(hkdfSync("sha256", psk, salt, info, size));
}

function checkNonces(nonceC: Uint8Array, nonceS: Uint8Array): void {
  assert(
    nonceC.length === NONCE_SIZE && nonceS.length === NONCE_SIZE,
    "handshake nonces must be 32 bytes",
  );
}

/**
 * proofKey = HKDF-SHA256(ikm = psk, salt = nonce_c || nonce_s, info = "dstd v1 auth").
 * Zero it after use.
 */
export function deriveProofKey(
  psk: Uint8Array,
  nonceC: Uint8Array,
  nonceS: Uint8Array,
): Uint8Array {
  checkNonces(nonceC, nonceS);
  return hkdf(psk, concat(nonceC, nonceS), AUTH_INFO, 32);
}

function proof(proofKey: Uint8Array, label: Uint8Array, transcript: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha256", proofKey).update(label).update(transcript).digest());
}

/** HMAC-SHA256(proofKey, "server" || transcript): sent in CHALLENGE. */
export function serverProof(proofKey: Uint8Array, transcript: Uint8Array): Uint8Array {
  return proof(proofKey, SERVER_LABEL, transcript);
}

/** HMAC-SHA256(proofKey, "client" || transcript): sent in AUTH. The labels stop reflection. */
export function clientProof(proofKey: Uint8Array, transcript: Uint8Array): Uint8Array {
  return proof(proofKey, CLIENT_LABEL, transcript);
}

/** Constant-time comparison of a computed proof with the peer's; any length mismatch is false. */
export function verifyProof(expected: Uint8Array, received: Uint8Array): boolean {
  if (expected.length !== PROOF_SIZE || received.length !== PROOF_SIZE) return false;
  return timingSafeEqual(expected, received);
}

/**
 * A random throwaway pre-shared key. The server uses it for an identity it does not know (or a
 * key id it does not hold), so it computes and sends a proof exactly as for a wrong key: the
 * client cannot tell "unknown identity" from "wrong key", and both end in "authentication failed".
 */
export function decoyKey(): Uint8Array {
  return new Uint8Array(randomBytes(SECRET_SIZE));
}

/**
 * A public 8-byte name of a pre-shared key, HKDF(psk, info = "dstd v1 key id"). The client sends
 * it in HELLO so a server holding an old and a new key for one identity (rotation overlap) knows
 * which one to prove with. It reveals nothing usable about a 256-bit random key.
 */
export function keyId(psk: Uint8Array): Uint8Array {
  return hkdf(psk, new Uint8Array(0), KEY_ID_INFO, KEY_ID_SIZE);
}

/**
 * The candidate key whose keyId matches `wanted`, or null (the caller then uses decoyKey()).
 * Every candidate is checked, so the time does not depend on which one matched.
 */
export function selectKey(
  candidates: readonly Uint8Array[],
  wanted: Uint8Array,
): Uint8Array | null {
  let found: Uint8Array | null = null;
  for (const candidate of candidates) {
    const id = keyId(candidate);
    if (wanted.length === KEY_ID_SIZE && timingSafeEqual(id, wanted) && found === null)
      found = candidate;
  }
  return found;
}

export interface SessionKeys {
  /** Key of the client→server direction (direction 0). */
  clientToServer: Uint8Array;
  /** Key of the server→client direction (direction 1). */
  serverToClient: Uint8Array;
  /**
   * The session's resumption key: a later handshake that resumes this session proves it holds
   * it (resumeProof), so a session id seen on the wire is worthless without it (docs/security.md
   * "Session resumption"). Never sent; kept by both ends for the session's life.
   */
  resume: Uint8Array;
}

/** HMAC-SHA256(resumeKey, "resume" || transcript): sent in AUTH when HELLO resumes a session. */
export function resumeProof(resumeKey: Uint8Array, transcript: Uint8Array): Uint8Array {
  return proof(resumeKey, RESUME_LABEL, transcript);
}

/**
 * Per-session, per-direction keys: HKDF-SHA256(ikm = psk [|| dhSecret], salt = nonce_c || nonce_s,
 * info = "dstd v1 c2s " || suite || 0x00 || transcript), and the same with "s2c". Fresh nonces
 * make every session's keys new; the suite name in the info separates the keys of different
 * suites; the transcript ties them to everything negotiated; the X25519 secret (crypto/
 * ephemeral.ts), when given, adds forward secrecy. Zero both keys after handing them to
 * RecordSealer / RecordOpener (which keep their own copies).
 */
export function deriveSessionKeys(
  psk: Uint8Array,
  nonceC: Uint8Array,
  nonceS: Uint8Array,
  transcript: Uint8Array,
  suite: string,
  dhSecret?: Uint8Array,
): SessionKeys {
  checkNonces(nonceC, nonceS);
  assert(transcript.length <= 512, "transcript must be a hash, not the raw messages");
  assert(psk.length === SECRET_SIZE, "pre-shared key must be 32 bytes");
  assert(dhSecret === undefined || dhSecret.length === 32, "X25519 secret must be 32 bytes");
  const ikm = dhSecret === undefined ? psk : concat(psk, dhSecret);
  const salt = concat(nonceC, nonceS);
  const info = (direction: string): Uint8Array => {
    const label = new TextEncoder().encode(`dstd v1 ${direction} ${suite}\0`);
    return concat(label, transcript);
  };
  const expand = (direction: string): Uint8Array =>
    new Uint8Array(hkdfSync("sha256", ikm, salt, info(direction), SESSION_KEY_SIZE));
  const keys = { clientToServer: expand("c2s"), serverToClient: expand("s2c"), resume: expand("resume") };
  zero(salt);
  if (ikm !== psk) zero(ikm);
  return keys;
}
