/**
 * @module crypto/ephemeral — X25519 (RFC 7748) ephemeral key agreement for forward secrecy:
 * each side makes a fresh key pair per handshake, sends the 32-byte public key (HELLO and
 * CHALLENGE, so both are in the authenticated transcript), and mixes the shared secret into
 * the session keys (deriveSessionKeys' dhSecret). A leaked pre-shared key then does not
 * decrypt recorded sessions. docs/security.md §Forward secrecy.
 *
 * Must not: accept a peer key that is not 32 bytes or yields an all-zero secret (RFC 7748 §6.1,
 * a low-order point); those return a reason string. Native node:crypto, ~0.2 ms per handshake.
 */
import { createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from "node:crypto";

export const EPHEMERAL_PUBLIC_SIZE = 32;

export interface Ephemeral {
  /** Raw 32-byte X25519 public key, to put on the wire. */
  publicKey: Uint8Array;
  /** Private half; never leaves this object. Drop the Ephemeral after sharedSecret(). */
  privateKey: KeyObject;
}

export function newEphemeral(): Ephemeral {
  const pair = generateKeyPairSync("x25519");
  const jwk = pair.publicKey.export({ format: "jwk" });
  return {
    publicKey: new Uint8Array(Buffer.from(jwk.x ?? "", "base64url")),
    privateKey: pair.privateKey,
  };
}

/** The 32-byte X25519 shared secret with the peer's raw public key, or why it was refused. */
export function sharedSecret(own: Ephemeral, peerPublic: Uint8Array): Uint8Array | string {
  if (peerPublic.length !== EPHEMERAL_PUBLIC_SIZE)
    return `ephemeral public key is ${peerPublic.length} bytes, not 32`;
  let secret: Uint8Array;
  try {
    const publicKey = createPublicKey({
      key: { kty: "OKP", crv: "X25519", x: Buffer.from(peerPublic).toString("base64url") },
      format: "jwk",
    });
    secret = new Uint8Array(diffieHellman({ privateKey: own.privateKey, publicKey }));
  } catch {
    return "ephemeral public key refused (low-order or invalid X25519 point)";
  }
  // RFC 7748 §6.1: an all-zero output means the peer sent a low-order point.
  if (secret.every((b) => b === 0))
    return "ephemeral public key refused (low-order or invalid X25519 point)";
  return secret;
}
