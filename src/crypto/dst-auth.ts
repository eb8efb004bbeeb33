/**
 * @module crypto/dst-auth — the DST mutual-authentication handshake (docs/security.md §3)
 * as pure steps for each side: HELLO attributes → CHALLENGE → AUTH → protected channel.
 * No I/O: the engine and the export server call these and send the frames themselves.
 *
 *   C→S HELLO      identity, key id, nonce_c, eph_c, offered suites (+ the usual HELLO attrs)
 *   S→C CHALLENGE  nonce_s, suite, eph_s, proof_s = HMAC(pk, "server" ‖ T)
 *   C→S AUTH       proof_c = HMAC(pk, "client" ‖ T)
 *   S→C WELCOME    in the first record sealed with the s2c key
 * T = transcriptHash([HELLO frame bytes, nonce_s, suite, eph_s]); pk from HKDF(psk, nonces).
 */
import { Attr, Op } from "../wire/dst/constants.ts";
import type { AttrRecord } from "../wire/dst/attrs.ts";
import { encodeHandshakeFrame } from "../wire/dst/handshake.ts";
import { newEphemeral, sharedSecret, type Ephemeral } from "./ephemeral.ts";
import {
  clientProof,
  decoyKey,
  deriveProofKey,
  deriveSessionKeys,
  keyId,
  NONCE_SIZE,
  newNonce,
  selectKey,
  serverProof,
  transcriptHash,
  resumeProof,
  verifyProof,
} from "./handshake-auth.ts";
import { RecordOpener, RecordSealer } from "./record.ts";
import { zero, type KeyMaterial } from "./keys.ts";
import { escapePeer, quotePeer } from "../lib/peer-text.ts";
import { chooseSuite, suiteAllowedOnTransport, type SuiteName, type TransportInfo } from "./suites.ts";

const utf8 = new TextEncoder();
const utf8Decode = new TextDecoder("utf-8", { fatal: false });

/** The session's protection: records sealed per direction, or null for suite "none". */
export interface Channel {
  suite: SuiteName;
  records: { sealer: RecordSealer; opener: RecordOpener } | null;
  /** This handshake's resumption key (handshake-auth.ts SessionKeys.resume). */
  resumeKey: Uint8Array;
}

function makeChannel(suite: SuiteName, sendKey: Uint8Array, receiveKey: Uint8Array, sendDirection: 0 | 1, resumeKey: Uint8Array): Channel {
  if (suite === "none") return { suite, records: null, resumeKey };
  const receiveDirection = sendDirection === 0 ? 1 : 0;
  return {
    suite,
    records: { sealer: new RecordSealer(suite, sendKey, sendDirection), opener: new RecordOpener(suite, receiveKey, receiveDirection) },
    resumeKey,
  };
}

/** The export's view of a completed authentication. */
export interface AuthResult {
  channel: Channel;
  /**
   * Whether the client's AUTH proved one of `keys` (the resumption keys of the session its
   * HELLO names) over this handshake's transcript. Constant time per key; false without a proof.
   */
  provesResume(keys: readonly Uint8Array[]): boolean;
}

export const AUTH_FAILED_MESSAGE = "authentication failed (wrong key or unknown identity)";

// ---- client ----------------------------------------------------------------------------

export class ClientAuth {
  private readonly nonce = newNonce();
  private readonly ephemeral: Ephemeral = newEphemeral();

  constructor(
    private readonly key: KeyMaterial,
    private readonly offered: readonly SuiteName[],
  ) {}

  /** Attributes appended to HELLO. */
  helloAttrs(): AttrRecord[] {
    return [
      [Attr.IDENTITY, utf8.encode(this.key.identity)],
      [Attr.KEY_ID, keyId(this.key.secret)],
      [Attr.NONCE, this.nonce],
      [Attr.EPHEMERAL, this.ephemeral.publicKey],
      [Attr.SUITES, utf8.encode(this.offered.join(","))],
    ];
  }

  /**
   * Verify the export's CHALLENGE; returns the AUTH frame and the channel, or why not. With
   * `resumeKey` (the session named in HELLO), AUTH also proves possession of it.
   */
  onChallenge(hello: Uint8Array, attrs: Map<number, Uint8Array>, resumeKey: Uint8Array | null = null): { auth: Uint8Array; channel: Channel } | string {
    const nonceS = attrs.get(Attr.NONCE);
    const ephS = attrs.get(Attr.EPHEMERAL);
    const suiteBytes = attrs.get(Attr.SUITE);
    const proofS = attrs.get(Attr.PROOF);
    if (!nonceS || nonceS.length !== NONCE_SIZE || !ephS || !suiteBytes || !proofS) {
      return "malformed CHALLENGE from the export";
    }
    const suite = utf8Decode.decode(suiteBytes);
    const chosen = chooseSuite([suite], this.offered);
    if (chosen === null) return `export chose suite ${quotePeer(suite)}, which this client did not offer`;
    const transcript = transcriptHash([hello, nonceS, suiteBytes, ephS]);
    const proofKey = deriveProofKey(this.key.secret, this.nonce, nonceS);
    try {
      if (!verifyProof(serverProof(proofKey, transcript), proofS)) return AUTH_FAILED_MESSAGE;
      const dh = sharedSecret(this.ephemeral, ephS);
      if (typeof dh === "string") return `CHALLENGE: ${dh}`;
      const keys = deriveSessionKeys(this.key.secret, this.nonce, nonceS, transcript, chosen, dh);
      zero(dh);
      const channel = makeChannel(chosen, keys.clientToServer, keys.serverToClient, 0, keys.resume);
      zero(keys.clientToServer);
      zero(keys.serverToClient);
      const records: AttrRecord[] = [[Attr.PROOF, clientProof(proofKey, transcript)]];
      if (resumeKey !== null) records.push([Attr.RESUME_PROOF, resumeProof(resumeKey, transcript)]);
      const auth = encodeHandshakeFrame(Op.AUTH, records);
      return { auth, channel };
    } finally {
      zero(proofKey);
    }
  }
}

// ---- server ----------------------------------------------------------------------------

/** Pre-shared keys the export knows: identity → every key in force (rotation overlap). */
export type KeyTable = ReadonlyMap<string, readonly Uint8Array[]>;

export interface PendingAuth {
  identity: string;
  /** False when the identity or key id is unknown (a decoy key is in use). */
  known: boolean;
  suite: SuiteName;
  challenge: Uint8Array;
  complete(attrs: Map<number, Uint8Array>): AuthResult | string;
}

/**
 * Answer an authenticating HELLO. Returns a refusal reason only for what may be said before
 * authentication (malformed fields, no common suite); an unknown identity proceeds with a decoy
 * key so it fails exactly like a wrong key.
 */
export function serverChallenge(
  hello: Uint8Array,
  attrs: Map<number, Uint8Array>,
  keys: KeyTable,
  allowedSuites: readonly SuiteName[],
  transport: TransportInfo,
): PendingAuth | { refuse: string } {
  const identityBytes = attrs.get(Attr.IDENTITY);
  const wantedKey = attrs.get(Attr.KEY_ID);
  const nonceC = attrs.get(Attr.NONCE);
  const ephC = attrs.get(Attr.EPHEMERAL);
  const offeredBytes = attrs.get(Attr.SUITES);
  if (!identityBytes || !wantedKey || !nonceC || nonceC.length !== NONCE_SIZE || !ephC || !offeredBytes) {
    return { refuse: "malformed authenticating HELLO" };
  }
  const identity = utf8Decode.decode(identityBytes);
  const offered = utf8Decode.decode(offeredBytes).split(",").filter((s) => s.length > 0);
  const usable = allowedSuites.filter((s) => suiteAllowedOnTransport(s, transport));
  const suite = chooseSuite(offered, usable);
  if (suite === null) {
    // The offer is the peer's text: escaped and cut (lib/peer-text.ts), it is logged and echoed.
    const offer = offered.length === 0 ? "none" : escapePeer(offered.join(", "), 200);
    return { refuse: `no common suite (client offers ${offer}; export allows ${usable.join(", ") || "none"} here)` };
  }
  const selected = selectKey(keys.get(identity) ?? [], wantedKey);
  const psk = selected ?? decoyKey();
  const nonceS = newNonce();
  const ephemeral = newEphemeral();
  const suiteBytes = utf8.encode(suite);
  const transcript = transcriptHash([hello, nonceS, suiteBytes, ephemeral.publicKey]);
  const proofKey = deriveProofKey(psk, nonceC, nonceS);
  const challenge = encodeHandshakeFrame(Op.CHALLENGE, [
    [Attr.NONCE, nonceS],
    [Attr.EPHEMERAL, ephemeral.publicKey],
    [Attr.SUITE, suiteBytes],
    [Attr.PROOF, serverProof(proofKey, transcript)],
  ]);
  return {
    identity,
    known: selected !== null,
    suite,
    challenge,
    complete(authAttrs) {
      try {
        const proofC = authAttrs.get(Attr.PROOF);
        if (!proofC || !verifyProof(clientProof(proofKey, transcript), proofC)) return AUTH_FAILED_MESSAGE;
        const dh = sharedSecret(ephemeral, ephC);
        if (typeof dh === "string") return `HELLO: ${dh}`;
        const sessionKeys = deriveSessionKeys(psk, nonceC, nonceS, transcript, suite, dh);
        zero(dh);
        const channel = makeChannel(suite, sessionKeys.serverToClient, sessionKeys.clientToServer, 1, sessionKeys.resume);
        zero(sessionKeys.clientToServer);
        zero(sessionKeys.serverToClient);
        const claimed = authAttrs.get(Attr.RESUME_PROOF);
        return {
          channel,
          provesResume(keys) {
            if (claimed === undefined) return false;
            let proven = false;
            for (const key of keys) if (verifyProof(resumeProof(key, transcript), claimed)) proven = true;
            return proven;
          },
        };
      } finally {
        zero(proofKey);
        if (selected === null) zero(psk);
      }
    },
  };
}
