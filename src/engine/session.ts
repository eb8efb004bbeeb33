/**
 * @module engine/session — the client side of the DST handshake and of the session it makes
 * (docs/protocol.md §6): the HELLO of each connection (naming the session to resume, with its
 * resumption token or, in AUTH, proof of its resumption key), the CHALLENGE → AUTH step of
 * an authenticated handshake, and what a WELCOME or a refusal means for the session.
 *
 * A session's resumption secret is fixed when the session is made (export/sessions.ts says
 * why). A new session knows none of the client's txids (engine/client-engine.ts renumbers
 * what it will send in it).
 * Pure: no I/O, no time.
 */
import { ClientAuth, type Channel } from "../crypto/dst-auth.ts";
import { DEFAULT_CHECKSUMS, isChecksumName, type ChecksumName } from "../crypto/checksum.ts";
import { Errno, errnoMessage } from "../lib/errno.ts";
import { escapePeer, quotePeer } from "../lib/peer-text.ts";
import { decodeAttrs } from "../wire/dst/attrs.ts";
import { Attr, Feature } from "../wire/dst/constants.ts";
import { decodeWelcome, encodeHello, type Welcome } from "../wire/dst/handshake.ts";
import type { Header } from "../wire/dst/header.ts";
import type { EngineOptions } from "./options.ts";

/** Refusals on first contact that retrying cannot fix: report them at once. */
const permanentRefusals = new Set<number>([
  Errno.ENOENT,
  Errno.EACCES,
  Errno.EPERM,
  Errno.EPROTONOSUPPORT,
  Errno.EINVAL,
  Errno.EBADMSG,
]);

export type WelcomeOutcome =
  /** Admitted; `newSession`: the export made a new session (ours was unknown or refused). */
  | { kind: "ready"; welcome: Welcome; checksum: ChecksumName; newSession: boolean; restarted: boolean }
  /** Give up for good (first contact refused in a way retrying cannot fix; a downgrade). */
  | { kind: "fail"; message: string; errno: number }
  /** Drop this connection and reconnect. */
  | { kind: "drop"; message: string };

export class ClientSession {
  id: Uint8Array | null = null;
  epoch: number | null = null;
  /** Most txids beyond the floor the export remembers (WELCOME MAX_TXID_SPAN; 0: unlimited). */
  txidSpan = 0;
  private resumeToken: Uint8Array | null = null;
  private resumeKey: Uint8Array | null = null;
  private auth: ClientAuth | null = null;
  private hello: Uint8Array | null = null;
  /** The protected channel of the current connection, once CHALLENGE was answered. */
  channel: Channel | null = null;

  constructor(private readonly options: EngineOptions) {}

  /**
   * The HELLO frame of a new connection; `txidFloor` is the floor to announce, `connectionSeq`
   * the connection's number (higher for every connection: a late HELLO of an abandoned one is
   * refused by the export, docs/protocol.md §6.5).
   */
  helloFrame(txidFloor: number, connectionSeq: number): Uint8Array {
    this.channel = null;
    this.auth = this.options.auth ? new ClientAuth(this.options.auth.key, this.options.auth.suites) : null;
    this.hello = encodeHello(
      {
        version: 1,
        exportName: this.options.exportName,
        clientName: this.options.clientName,
        maxPayload: this.options.maxPayload,
        features: Feature.FLUSH | Feature.FUA | Feature.TRIM | Feature.WRITE_ZEROES | Feature.SESSIONS | Feature.RESIZE_NOTICE | Feature.FETCH_ZSTD | Feature.FETCH_FOLLOWS,
        sessionId: this.id,
        txidFloor,
        connectionSeq,
        resumeToken: this.id !== null && this.auth === null ? this.resumeToken : null,
      },
      [
        ...(this.auth?.helloAttrs() ?? []),
        [Attr.CHECKSUMS, new TextEncoder().encode((this.options.checksums ?? DEFAULT_CHECKSUMS).join(","))],
      ],
    );
    return this.hello;
  }

  /** CHALLENGE: verify the export's proof; the AUTH frame to send, or why not. */
  onChallenge(payload: Uint8Array, everReady: boolean): { auth: Uint8Array } | { fail: string } | { drop: string } {
    if (this.auth === null || this.channel !== null) return { drop: "unexpected CHALLENGE from export" };
    const attrs = decodeAttrs(payload);
    const resumeKey = this.id !== null ? this.resumeKey : null;
    const result = typeof attrs === "string" ? `malformed CHALLENGE: ${attrs}` : this.auth.onChallenge(this.hello!, attrs, resumeKey);
    if (typeof result === "string") {
      const message = `export refused or failed authentication: ${result}`;
      return everReady ? { drop: message } : { fail: message };
    }
    this.channel = result.channel;
    return { auth: result.auth };
  }

  /** WELCOME (or a refusal): what it means for the session. */
  onWelcome(header: Header, payload: Uint8Array, everReady: boolean): WelcomeOutcome {
    const result = decodeWelcome(header, payload);
    if (typeof result === "string") return { kind: "drop", message: `malformed WELCOME: ${result}` };
    if (result.ok && this.auth !== null && this.channel === null) {
      // We hold a key: an unauthenticated WELCOME would be a downgrade. Fail closed.
      return { kind: "fail", message: "export did not authenticate (it answered without a CHALLENGE); refusing an unprotected channel", errno: Errno.EACCES };
    }
    if (!result.ok && result.status === Errno.ESTALE) {
      // The export will not let us resume our session: start a new one. It did not restart,
      // so nothing acknowledged is lost; in-flight requests are sent again in the new session.
      this.id = null;
      this.resumeKey = null;
      this.resumeToken = null;
      return { kind: "drop", message: `export refused to resume our session (${escapePeer(result.message, 200)}); starting a new session` };
    }
    if (!result.ok) {
      const message = `export refused: ${escapePeer(result.message, 200)} (${errnoMessage(result.status)})`;
      if (!everReady && permanentRefusals.has(result.status)) return { kind: "fail", message, errno: result.status };
      return { kind: "drop", message };
    }
    const welcome = result.welcome;
    const checksum = welcome.checksum ?? "none";
    if (!isChecksumName(checksum)) return { kind: "drop", message: `export chose unknown data checksum ${quotePeer(checksum)}` };
    // Only one this client offered: an export may not turn the end-to-end digest off (or change it) on its own.
    const offered = this.options.checksums ?? DEFAULT_CHECKSUMS;
    if (!offered.includes(checksum)) {
      return { kind: "fail", message: `export chose data checksum ${checksum}, which this client did not offer (it offers ${offered.join(", ")})`, errno: Errno.EPROTONOSUPPORT };
    }
    const newSession = this.id === null || !sameBytes(this.id, welcome.sessionId);
    if (newSession) {
      // A new session: its resumption secret is this handshake's, for the session's life.
      this.resumeToken = welcome.resumeToken ?? null;
      this.resumeKey = this.channel?.resumeKey ?? null;
    }
    const restarted = this.epoch !== null && this.epoch !== welcome.epoch;
    this.id = welcome.sessionId;
    this.epoch = welcome.epoch;
    this.txidSpan = welcome.maxTxidSpan ?? 0;
    return { kind: "ready", welcome, checksum, newSession, restarted };
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Why a WELCOME after the handshake drops the connection: at most a refusal the export sends before it closes (docs/protocol.md §1). */
export function lateWelcome(header: Header, payload: Uint8Array): string {
  const late = decodeWelcome(header, payload);
  return typeof late !== "string" && !late.ok ? `unexpected WELCOME: export refused: ${escapePeer(late.message, 200)} (${errnoMessage(late.status)})` : "unexpected WELCOME";
}
