/**
 * @module export/handshake — the export side of the DST handshake for one connection
 * (docs/protocol.md §6, docs/security.md §3): HELLO → (CHALLENGE → AUTH) → access check →
 * session bound or resumed → WELCOME, or a refusal with a reason.
 *
 * What a stranger can learn is kept to what it must: an anonymous client off loopback is told
 * to authenticate before anything about exports; an authenticating client is challenged
 * whether or not the export exists (an unknown name fails after the proofs, exactly like an
 * unknown identity or a wrong key, so export names cannot be probed); the access check comes
 * after authentication.
 *
 * Resumption (§6.5): a HELLO naming a session resumes it only when the session belongs to the
 * same identity (anonymous: the same peer class) and export, and the client proves the
 * session's secret — RESUME_PROOF in AUTH over this handshake's transcript, or the
 * RESUME_TOKEN of the session's last WELCOME. Otherwise the client is refused with ESTALE and
 * nothing of the session is touched: not its connection, not its exactly-once table.
 */
import { randomBytes } from "node:crypto";
import { matchAllow, matchReplica, type Access } from "../lib/acl.ts";
import { Errno } from "../lib/errno.ts";
import { serverChallenge, type AuthResult, type PendingAuth } from "../crypto/dst-auth.ts";
import { chooseChecksum, DEFAULT_CHECKSUMS, type ChecksumName } from "../crypto/checksum.ts";
import { DEFAULT_SUITES, isLoopbackAddress } from "../crypto/suites.ts";
import { decodeAttrs } from "../wire/dst/attrs.ts";
import {
  Attr,
  Feature,
  Op,
  PAYLOAD_MAX_DEFAULT,
  Perm,
  RESUME_SECRET_SIZE,
  opcodeName,
} from "../wire/dst/constants.ts";
import { decodeHello, encodeWelcome, negotiateVersion, type Hello } from "../wire/dst/handshake.ts";
import type { Header } from "../wire/dst/header.ts";
import type { Peer } from "../transport/types.ts";
import type { Export } from "./exports.ts";
import { quotePeer } from "../lib/peer-text.ts";
import type { DstServer } from "./server.ts";
import type { PeerClass, Session, SessionConnection, SessionOwner } from "./sessions.ts";

/** What the connection learns when the handshake admits the client. */
export interface Admitted {
  exp: Export;
  identity: string | null;
  /** CLIENT_NAME from HELLO (free-form, for logs). */
  clientName: string;
  /** The client asked for SIZE_NOTICE frames (Feature.RESIZE_NOTICE). */
  resizeNotices: boolean;
  /** The client may READ (an ro or rw rule matched); false for a replica-only client. */
  readable: boolean;
  writable: boolean;
  /** The client may FETCH the replication log (a "replica" rule matched). */
  replica: boolean;
  maxPayload: number;
  checksum: ChecksumName;
  session: Session;
  resumed: boolean;
  /** The WELCOME frame (plain; the connection seals it on a protected channel). */
  welcome: Uint8Array;
  /** The protected channel, when the client authenticated. */
  auth: AuthResult | null;
}

export type HandshakeStep =
  | { kind: "send"; frame: Uint8Array }
  | { kind: "refuse"; status: number; message: string; log: string | null }
  | { kind: "admitted"; admitted: Admitted };

const utf8 = new TextDecoder("utf-8", { fatal: false });

export function peerClass(peer: Peer): PeerClass {
  if (peer.transport === "unix") return "unix";
  return isLoopbackAddress(peer.address) ? "loopback" : "network";
}

export class ExportHandshake {
  private pending: { auth: PendingAuth; hello: Hello; exp: Export | undefined } | null = null;
  private offeredChecksums: string[] = [];
  /**
   * The protected channel once AUTH proved the key: every later frame, a refusal included,
   * is sealed with it.
   */
  authenticated: AuthResult | null = null;

  constructor(
    private readonly server: DstServer,
    private readonly peer: Peer,
    private readonly connection: SessionConnection,
    private readonly name: string,
  ) {}

  /** Waiting for AUTH: what to log if the client leaves now (it rejected our proof). */
  get abandonedAuth(): string | null {
    if (this.pending === null) return null;
    const why = this.pending.auth.known ? "client rejected the export's proof: keys differ" : "unknown identity or key id";
    return `identity ${quotePeer(this.pending.auth.identity)}: authentication failed (${why})`;
  }

  /** The first frame of the connection. */
  onHello(header: Header, payload: Uint8Array, frame: Uint8Array): HandshakeStep {
    if (header.opcode !== Op.HELLO) return protocolError(`expected HELLO, got ${opcodeName(header.opcode)}`);
    const version = negotiateVersion(header.version);
    if (typeof version === "string") return refuse(Errno.EPROTONOSUPPORT, version);
    const hello = decodeHello(header, payload);
    if (typeof hello === "string") return refuse(Errno.EINVAL, `malformed HELLO: ${hello}`);
    const attrs = decodeAttrs(payload);
    const offer = typeof attrs === "string" ? undefined : attrs.get(Attr.CHECKSUMS);
    if (offer !== undefined) this.offeredChecksums = utf8.decode(offer).split(",");
    const exp = this.server.findExport(hello.exportName);
    if (typeof attrs !== "string" && attrs.has(Attr.IDENTITY)) {
      // Challenge whether or not the export exists: an unknown name is reported only to a
      // client that proved a key (onAuth), so names cannot be probed.
      const suites = exp?.suites ?? DEFAULT_SUITES;
      const auth = serverChallenge(frame.slice(), attrs, this.server.keys, suites, this.peer);
      if ("refuse" in auth) return refuse(Errno.EPROTONOSUPPORT, auth.refuse);
      this.pending = { auth, hello, exp };
      return { kind: "send", frame: auth.challenge };
    }
    // Anonymous clients (no key): only address rules without an identity can admit them, and
    // only where the channel may go unprotected (suite none): Unix sockets and loopback.
    if (peerClass(this.peer) === "network") {
      return refuse(
        Errno.EACCES,
        `anonymous clients are accepted only on loopback and Unix sockets; ${this.peer.address} must authenticate with a key (dstd keygen)`,
      );
    }
    if (exp === undefined) return refuse(Errno.ENOENT, `no export named ${quotePeer(hello.exportName)}`);
    return this.admit(hello, exp, null, null);
  }

  /** The AUTH frame of an authenticating client. */
  onAuth(header: Header, payload: Uint8Array): HandshakeStep {
    const pending = this.pending!;
    this.pending = null;
    if (header.opcode !== Op.AUTH) return protocolError(`expected AUTH, got ${opcodeName(header.opcode)}`);
    const attrs = decodeAttrs(payload);
    const result = typeof attrs === "string" ? attrs : pending.auth.complete(attrs);
    const identity = pending.auth.identity;
    if (typeof result === "string") {
      const why = pending.auth.known ? result : "unknown identity or key id";
      return {
        kind: "refuse",
        status: Errno.EACCES,
        message: "authentication failed (wrong key or unknown identity)",
        log: `identity ${quotePeer(identity)}: authentication failed (${why})`,
      };
    }
    this.authenticated = result;
    if (pending.exp === undefined) return refuse(Errno.ENOENT, `no export named ${quotePeer(pending.hello.exportName)}`);
    return this.admit(pending.hello, pending.exp, identity, result);
  }

  /** Access check (after authentication, so refusals reveal nothing to strangers), session, WELCOME. */
  private admit(hello: Hello, exp: Export, identity: string | null, auth: AuthResult | null): HandshakeStep {
    const access: Access | null = matchAllow(exp.allow, this.peer, identity);
    // Granted whether or not the export has a log now: its role may change while connected.
    const replica = matchReplica(exp.allow, this.peer, identity);
    if (access === null && !replica) {
      const where = this.peer.transport === "unix" ? "a Unix socket" : this.peer.address;
      const who = identity === null ? `anonymous clients from ${where} are` : `identity ${quotePeer(identity)} from ${where} is`;
      return refuse(Errno.EACCES, `access denied: ${who} not allowed to use export ${quotePeer(exp.name)}`);
    }
    // Fails closed (docs/security.md §3): an export whose checksums leave out `none` serves only
    // clients that offer one it allows; a client that offers none at all offers `none`.
    const allowed = exp.checksums ?? DEFAULT_CHECKSUMS;
    const offered = this.offeredChecksums.length > 0 ? this.offeredChecksums : ["none"];
    const checksum = chooseChecksum(offered, allowed);
    if (checksum === null) {
      return refuse(Errno.EPROTONOSUPPORT, `no common data checksum (client offers ${offered.map((c) => quotePeer(c)).join(", ")}; export allows ${allowed.join(", ")})`);
    }
    const owner: SessionOwner = { exportName: exp.name, identity, peerClass: peerClass(this.peer) };
    const bound = this.bindSession(hello, owner, auth);
    if ("refuse" in bound) return bound.refuse;
    const { session, resumed } = bound;
    const port = exp.port;
    const writable = access === "rw" && !exp.readOnly && !port.readOnly;
    const maxPayload = Math.max(4096, Math.min(hello.maxPayload, PAYLOAD_MAX_DEFAULT, port.maxPayload));
    // The resumption secret is set once, when the session is made (sessions.ts says why).
    let token: Uint8Array | null = null;
    if (!resumed && auth !== null) session.setSecret(auth.channel.resumeKey);
    if (!resumed && auth === null) {
      token = new Uint8Array(randomBytes(RESUME_SECRET_SIZE));
      session.setSecret(token);
    }
    const limits = this.server.limits;
    const welcome = encodeWelcome({
      size: port.size,
      blockMin: 1,
      blockPreferred: port.blockSize,
      maxPayload,
      permissions: (access !== null ? Perm.READ : 0) | (writable ? Perm.WRITE : 0) | (replica ? Perm.REPLICA : 0),
      features:
        Feature.SESSIONS |
        (hello.features & Feature.RESIZE_NOTICE) |
        (hello.features & Feature.FETCH_ZSTD) |
        (hello.features & Feature.FETCH_FOLLOWS) |
        (port.canMultiConn ? Feature.MULTI_CONN : 0) |
        (port.canFlush ? Feature.FLUSH : 0) |
        Feature.FUA |
        (port.canTrim ? Feature.TRIM : 0) |
        (port.canZero ? Feature.WRITE_ZEROES : 0),
      sessionId: session.id,
      epoch: this.server.epoch,
      maxInflight: limits.maxInflight,
      checksum,
      maxTxidSpan: limits.sessionEntries,
      resumeToken: token,
    });
    return { kind: "admitted", admitted: { exp, identity, clientName: hello.clientName, resizeNotices: (hello.features & Feature.RESIZE_NOTICE) !== 0, readable: access !== null, writable, replica, maxPayload, checksum, session, resumed, welcome, auth } };
  }

  /**
   * Resume the session HELLO names when the client may, fencing its old connection; otherwise
   * start a new one. An unknown id (the export restarted, or forgot the session) gets a new
   * session: the client sees a new id and epoch and replays what it must.
   */
  private bindSession(
    hello: Hello,
    owner: SessionOwner,
    auth: AuthResult | null,
  ): { session: Session; resumed: boolean } | { refuse: HandshakeStep } {
    const sessions = this.server.sessions;
    const known = hello.sessionId === null ? undefined : sessions.find(hello.sessionId);
    if (known === undefined) {
      const session = sessions.create(owner);
      session.connection = this.connection;
      session.connectionSeq = hello.connectionSeq ?? 0;
      return { session, resumed: false };
    }
    const mismatch = sessions.ownerMismatch(known, owner);
    const proven =
      this.server.unsafe.resumeWithoutProof || (auth !== null ? auth.provesResume(known.secrets) : hello.resumeToken != null && known.tokenMatches(hello.resumeToken));
    if (mismatch !== null || !proven) {
      this.server.counters.resumesRefused++;
      const why = mismatch ?? (auth !== null ? "the client did not prove the session's resumption key" : "the resumption token does not match");
      return { refuse: refuse(Errno.ESTALE, `cannot resume session ${known.label}: ${why}`) };
    }
    // A late handshake: this connection is not newer than the one last admitted for the
    // session (the client gave up on it and reconnected since; its HELLO was held on the way).
    // Taking over would fence the client's live connection. Refuse it and touch nothing.
    const seq = hello.connectionSeq ?? 0;
    if (seq !== 0 && seq <= known.connectionSeq && !this.server.unsafe.staleResumes) {
      this.server.counters.staleResumes++;
      return { refuse: refuse(Errno.EALREADY, `stale handshake for session ${known.label}: connection ${seq} is not newer than connection ${known.connectionSeq}, which took over already`) };
    }
    // Fence: the old connection must never apply another frame once the new one is served.
    // Its requests still at the storage port finish there; their results land in the
    // exactly-once table, where this connection's resends find them.
    const stale = known.connection !== null && known.connection !== this.connection;
    if (stale && !this.server.unsafe.noFencing) known.connection!.fence();
    known.connection = this.connection;
    if (seq !== 0) known.connectionSeq = seq;
    sessions.prune(known, hello.txidFloor);
    sessions.touch(known);
    return { session: known, resumed: true };
  }
}

function refuse(status: number, message: string): HandshakeStep {
  return { kind: "refuse", status, message, log: message };
}

function protocolError(reason: string): HandshakeStep {
  return { kind: "refuse", status: Errno.EPROTO, message: `protocol error: ${reason}`, log: `protocol error: ${reason}` };
}
