/**
 * @module test/crypto/handshake-auth — transcript hashing, proofs, decoy key, key ids and
 * session keys: both sides agree given the same inputs, and any changed input (a transcript
 * bit, the key, a nonce, the suite) gives a different, rejected result.
 */
import { describe, expect, test } from "bun:test";
import { createPrivateKey, randomBytes } from "node:crypto";
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { RecordOpener, RecordSealer } from "../../src/crypto/record.ts";
import { EPHEMERAL_PUBLIC_SIZE, newEphemeral, sharedSecret } from "../../src/crypto/ephemeral.ts";
import {
  KEY_ID_SIZE,
  NONCE_SIZE,
  PROOF_SIZE,
  clientProof,
  decoyKey,
  deriveProofKey,
  deriveSessionKeys,
  keyId,
  newNonce,
  selectKey,
  serverProof,
  transcriptHash,
  verifyProof,
} from "../../src/crypto/handshake-auth.ts";

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const psk = (): Uint8Array => new Uint8Array(randomBytes(32));

/** What the lead passes: the raw HELLO frame, then the CHALLENGE fields. */
function sampleTranscript(
  nonceS: Uint8Array,
  hello = bytes("HELLO frame: alice, export disk0, v1, features 0x1f"),
): Uint8Array {
  return transcriptHash([hello, nonceS, bytes("aes-256-gcm"), bytes("xxh3")]);
}

describe("transcriptHash", () => {
  test("is a deterministic 32-byte SHA-256", () => {
    const a = transcriptHash([bytes("x"), bytes("y")]);
    expect(a.length).toBe(32);
    expect(transcriptHash([bytes("x"), bytes("y")])).toEqual(a);
  });

  test("length prefixes make it injective: moving a byte between parts changes it", () => {
    expect(transcriptHash([bytes("ab"), bytes("c")])).not.toEqual(
      transcriptHash([bytes("a"), bytes("bc")]),
    );
    expect(transcriptHash([bytes("abc")])).not.toEqual(
      transcriptHash([bytes("abc"), new Uint8Array(0)]),
    );
  });

  test("matches an independent computation (label, then u32 BE length || bytes per part)", () => {
    const parts = [bytes("dstd v1 transcript"), bytes("hello"), new Uint8Array([1, 2, 3])];
    const stream: number[] = [];
    for (const p of parts) stream.push(0, 0, 0, p.length, ...p);
    expect(transcriptHash(parts.slice(1))).toEqual(sha256(new Uint8Array(stream)));
  });
});

describe("proofs", () => {
  const key = psk();
  const nonceC = newNonce();
  const nonceS = newNonce();
  const transcript = sampleTranscript(nonceS);

  test("nonces are 32 fresh random bytes", () => {
    expect(nonceC.length).toBe(NONCE_SIZE);
    expect(nonceC).not.toEqual(nonceS);
  });

  test("client and server compute equal proofs and both verify", () => {
    const serverSide = deriveProofKey(key, nonceC, nonceS);
    const clientSide = deriveProofKey(key.slice(), nonceC.slice(), nonceS.slice());
    expect(clientSide).toEqual(serverSide);
    const proofS = serverProof(serverSide, transcript);
    const proofC = clientProof(clientSide, transcript);
    expect(proofS.length).toBe(PROOF_SIZE);
    expect(verifyProof(serverProof(clientSide, transcript), proofS)).toBe(true);
    expect(verifyProof(clientProof(serverSide, transcript), proofC)).toBe(true);
  });

  test("server and client proofs differ (a proof cannot be reflected)", () => {
    const pk = deriveProofKey(key, nonceC, nonceS);
    expect(verifyProof(serverProof(pk, transcript), clientProof(pk, transcript))).toBe(false);
  });

  test("every single-bit flip of the transcript gives a rejected proof", () => {
    const pk = deriveProofKey(key, nonceC, nonceS);
    const good = serverProof(pk, transcript);
    for (let bit = 0; bit < transcript.length * 8; bit++) {
      const flipped = transcript.slice();
      flipped[bit >> 3] = (flipped[bit >> 3] ?? 0) ^ (1 << (bit & 7));
      expect(verifyProof(good, serverProof(pk, flipped))).toBe(false);
    }
  });

  test("a bit flip anywhere in HELLO (version, features, algorithms, export) changes T", () => {
    const hello = bytes("HELLO v1 features=0x1f suites=aes-256-gcm export=disk0");
    const base = sampleTranscript(nonceS, hello);
    for (let i = 0; i < hello.length; i++) {
      const changed = hello.slice();
      changed[i] = (changed[i] ?? 0) ^ 0x20;
      expect(sampleTranscript(nonceS, changed)).not.toEqual(base);
    }
  });

  test("a wrong key, or either nonce changed, gives a rejected proof", () => {
    const good = serverProof(deriveProofKey(key, nonceC, nonceS), transcript);
    expect(verifyProof(good, serverProof(deriveProofKey(psk(), nonceC, nonceS), transcript))).toBe(
      false,
    );
    expect(
      verifyProof(good, serverProof(deriveProofKey(key, newNonce(), nonceS), transcript)),
    ).toBe(false);
    expect(
      verifyProof(good, serverProof(deriveProofKey(key, nonceC, newNonce()), transcript)),
    ).toBe(false);
  });

  test("verifyProof returns false (never throws) for a proof of the wrong length", () => {
    const good = serverProof(deriveProofKey(key, nonceC, nonceS), transcript);
    expect(verifyProof(good, good.subarray(0, 31))).toBe(false);
    expect(verifyProof(good, new Uint8Array(0))).toBe(false);
    expect(verifyProof(good, new Uint8Array(33))).toBe(false);
  });

  test("proof key and proofs match an independent HKDF / HMAC (@noble/hashes)", () => {
    const salt = new Uint8Array([...nonceC, ...nonceS]);
    const pk = hkdf(sha256, key, salt, bytes("dstd v1 auth"), 32);
    expect(deriveProofKey(key, nonceC, nonceS)).toEqual(pk);
    expect(serverProof(pk, transcript)).toEqual(
      hmac(sha256, pk, new Uint8Array([...bytes("server"), ...transcript])),
    );
    expect(clientProof(pk, transcript)).toEqual(
      hmac(sha256, pk, new Uint8Array([...bytes("client"), ...transcript])),
    );
  });
});

describe("unknown identity: the decoy key path", () => {
  test("the server answers with a well-formed proof the client rejects, as for a wrong key", () => {
    const clientKey = psk();
    const nonceC = newNonce();
    const nonceS = newNonce();
    const transcript = sampleTranscript(nonceS);
    const decoy = decoyKey();
    expect(decoy.length).toBe(32);
    expect(decoy).not.toEqual(decoyKey());
    const decoyProof = serverProof(deriveProofKey(decoy, nonceC, nonceS), transcript);
    const wrongKeyProof = serverProof(deriveProofKey(psk(), nonceC, nonceS), transcript);
    const expected = serverProof(deriveProofKey(clientKey, nonceC, nonceS), transcript);
    expect(decoyProof.length).toBe(wrongKeyProof.length);
    expect(verifyProof(expected, decoyProof)).toBe(false);
    expect(verifyProof(expected, wrongKeyProof)).toBe(false);
    // And the server side: whatever the client sends cannot match a decoy-derived proof.
    const clientSent = clientProof(deriveProofKey(clientKey, nonceC, nonceS), transcript);
    expect(
      verifyProof(clientProof(deriveProofKey(decoy, nonceC, nonceS), transcript), clientSent),
    ).toBe(false);
  });
});

describe("key ids for rotation", () => {
  test("selectKey picks the key the client holds among old and new, and null for neither", () => {
    const oldKey = psk();
    const newKey = psk();
    expect(keyId(oldKey).length).toBe(KEY_ID_SIZE);
    expect(keyId(oldKey)).toEqual(keyId(oldKey.slice()));
    expect(selectKey([oldKey, newKey], keyId(newKey))).toBe(newKey);
    expect(selectKey([oldKey, newKey], keyId(oldKey))).toBe(oldKey);
    expect(selectKey([oldKey, newKey], keyId(psk()))).toBeNull();
    expect(selectKey([oldKey], new Uint8Array(3))).toBeNull();
    expect(selectKey([], keyId(oldKey))).toBeNull();
  });
});

describe("ephemeral X25519", () => {
  test("RFC 7748 §6.1 test vector (Alice and Bob)", () => {
    const hex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));
    const alicePriv = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    const bobPub = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    const alice = {
      publicKey: hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
      privateKey: createPrivateKey({
        key: {
          kty: "OKP",
          crv: "X25519",
          d: Buffer.from(alicePriv).toString("base64url"),
          x: "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo",
        },
        format: "jwk",
      }),
    };
    expect(sharedSecret(alice, bobPub)).toEqual(
      hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"),
    );
  });

  test("fresh 32-byte public keys; a short or low-order peer key is refused with a reason", () => {
    const e = newEphemeral();
    expect(e.publicKey.length).toBe(EPHEMERAL_PUBLIC_SIZE);
    expect(e.publicKey).not.toEqual(newEphemeral().publicKey);
    expect(sharedSecret(e, new Uint8Array(31))).toBe("ephemeral public key is 31 bytes, not 32");
    expect(sharedSecret(e, new Uint8Array(32))).toContain("low-order");
    const one = new Uint8Array(32);
    one[0] = 1;
    expect(sharedSecret(e, one)).toContain("low-order");
  });
});

describe("deriveSessionKeys", () => {
  const key = psk();
  const nonceC = newNonce();
  const nonceS = newNonce();
  const transcript = sampleTranscript(nonceS);

  test("both sides derive equal keys; the two directions differ", () => {
    const a = deriveSessionKeys(key, nonceC, nonceS, transcript, "aes-256-gcm");
    const b = deriveSessionKeys(
      key.slice(),
      nonceC.slice(),
      nonceS.slice(),
      transcript.slice(),
      "aes-256-gcm",
    );
    expect(a).toEqual(b);
    expect(a.clientToServer.length).toBe(32);
    expect(a.clientToServer).not.toEqual(a.serverToClient);
  });

  test("suite, nonces, transcript and key each change both keys", () => {
    const base = deriveSessionKeys(key, nonceC, nonceS, transcript, "aes-256-gcm");
    const variants = [
      deriveSessionKeys(key, nonceC, nonceS, transcript, "chacha20-poly1305"),
      deriveSessionKeys(key, newNonce(), nonceS, transcript, "aes-256-gcm"),
      deriveSessionKeys(key, nonceC, newNonce(), transcript, "aes-256-gcm"),
      deriveSessionKeys(key, nonceC, nonceS, sampleTranscript(newNonce()), "aes-256-gcm"),
      deriveSessionKeys(psk(), nonceC, nonceS, transcript, "aes-256-gcm"),
    ];
    for (const v of variants) {
      expect(v.clientToServer).not.toEqual(base.clientToServer);
      expect(v.serverToClient).not.toEqual(base.serverToClient);
    }
  });

  test("session keys differ from the proof key", () => {
    const keys = deriveSessionKeys(key, nonceC, nonceS, transcript, "aes-256-gcm");
    const pk = deriveProofKey(key, nonceC, nonceS);
    expect(keys.clientToServer).not.toEqual(pk);
    expect(keys.serverToClient).not.toEqual(pk);
  });

  test("an X25519 secret changes both keys; both sides agree when they share it", () => {
    const a = newEphemeral();
    const b = newEphemeral();
    const secretA = sharedSecret(a, b.publicKey);
    const secretB = sharedSecret(b, a.publicKey);
    if (typeof secretA === "string" || typeof secretB === "string")
      throw new Error("X25519 failed");
    expect(secretA).toEqual(secretB);
    const plain = deriveSessionKeys(key, nonceC, nonceS, transcript, "aes-256-gcm");
    const withDh = deriveSessionKeys(key, nonceC, nonceS, transcript, "aes-256-gcm", secretA);
    expect(deriveSessionKeys(key, nonceC, nonceS, transcript, "aes-256-gcm", secretB)).toEqual(
      withDh,
    );
    expect(withDh.clientToServer).not.toEqual(plain.clientToServer);
    expect(withDh.serverToClient).not.toEqual(plain.serverToClient);
    expect(key.some((b) => b !== 0)).toBe(true); // the caller's psk is not wiped
  });

  test("the derived keys drive a working channel in both directions", () => {
    const client = deriveSessionKeys(key, nonceC, nonceS, transcript, "xchacha20-poly1305");
    const server = deriveSessionKeys(key, nonceC, nonceS, transcript, "xchacha20-poly1305");
    const plain = Uint8Array.of(1, 2, 3, 4, 5);
    const up = new RecordSealer("xchacha20-poly1305", client.clientToServer, 0).seal([plain], 5);
    expect(new RecordOpener("xchacha20-poly1305", server.clientToServer, 0).push(up)).toEqual([plain]);
    const down = new RecordSealer("xchacha20-poly1305", server.serverToClient, 1).seal([plain], 5);
    expect(new RecordOpener("xchacha20-poly1305", client.serverToClient, 1).push(down)).toEqual([plain]);
  });
});
