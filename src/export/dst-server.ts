/**
 * @module export/dst-server — the export side of the DST protocol: handshake, access
 * control, per-session exactly-once bookkeeping, and request execution against a backend.
 *
 * No sockets and no timers here: a DstConnection is a ConnectionHandler fed bytes by the
 * transport (or by the simulator), writing replies to a Sink. The backend is called
 * synchronously (storage/local/backend.ts explains why), so a request's effect is complete before
 * the next frame is looked at; that ordering is what makes fencing simple (see resume()).
 *
 * Sessions (docs/protocol.md "Sessions"): each client session has a 16-byte id chosen here
 * and lives across reconnects within this process. The session remembers the status of
 * every mutating request by txid until the client's txid floor passes it, so a resent
 * WRITE that was already applied is acknowledged again instead of applied again. The whole
 * process has one random epoch; a client that sees a new epoch knows the export restarted.
 */
import { randomBytes } from "node:crypto";
import { matchAllow } from "../lib/acl.ts";
import { Errno, errnoFromError, errnoMessage } from "../lib/errno.ts";
import { errorMessage } from "../lib/errors.ts";
import type { Backend } from "../storage/local/backend.ts";
import {
  Feature,
  Flag,
  HANDSHAKE_PAYLOAD_MAX,
  HEADER_SIZE,
  Op,
  PAYLOAD_MAX_DEFAULT,
  Perm,
  REPLY_BIT,
  opcodeName,
} from "../wire/dst/constants.ts";
import { FrameDecoder } from "../wire/dst/decoder.ts";
import { decodeHello, encodeRefusal, encodeWelcome, negotiateVersion, type Hello } from "../wire/dst/handshake.ts";
import { decodeAttrs } from "../wire/dst/attrs.ts";
import { Attr } from "../wire/dst/constants.ts";
import { serverChallenge, type Channel, type KeyTable, type PendingAuth } from "../crypto/dst-auth.ts";
import { RECORD_HEADER_SIZE } from "../crypto/record.ts";
import { DEFAULT_SUITES, isLoopbackAddress } from "../crypto/suites.ts";
import { chooseChecksum, computeDigest, DEFAULT_CHECKSUMS, digestSize, verifyDigest, type ChecksumName } from "../crypto/checksum.ts";
import { encodeHeader, type Header } from "../wire/dst/header.ts";
import { describePeer, type ConnectionHandler, type Peer, type Sink } from "../transport/types.ts";
import type { Export } from "./exports.ts";
import { validateRequest, type RequestKind } from "../storage/validate.ts";

export interface ServerLog {
  info(message: string): void;
  warn(message: string): void;
}

export interface DstServerOptions {
  exports: Export[];
  log: ServerLog;
  /** Most requests one connection may have outstanding (advertised in WELCOME). */
  maxInflight?: number;
  /** Epoch override (simulation restarts pick their own); random otherwise. */
  epoch?: number;
  /**
   * Planted bugs for the simulator's checker tests (test/sim/planted-bugs.test.ts) ONLY: never
   * set outside tests. noFencing: a resumed session leaves its old connection running;
   * noDedupe: a resent mutation is applied again instead of answered from the session.
   */
  unsafe?: { noFencing?: boolean; noDedupe?: boolean };
  /** Pre-shared keys by identity (several during a rotation overlap). */
  keys?: KeyTable;
}

interface Session {
  id: Uint8Array;
  key: string;
  exportName: string;
  connection: DstConnection | null;
  /** txid → status of every mutating request at or above the client's txid floor. */
  applied: Map<number, number>;
}

/** Stop reading from a client whose replies pile up beyond this (it is not reading). */
const QUEUED_REPLY_BYTES_MAX = 64 * 1024 * 1024;
/** Hard cap on remembered results per session; reached only if a client never advances its floor. */
const APPLIED_MAX = 1 << 20;
const SESSIONS_MAX = 4096;
/** Small replies produced while handling one chunk are sent in one write (perf-anchors: batching). */
const BATCH_BYTES = 256 * 1024;

export class DstServer {
  readonly epoch: number;
  readonly counters = { connections: 0, refused: 0, requests: 0, duplicates: 0, protocolErrors: 0, checksumFailures: 0 };
  private readonly exportsByName = new Map<string, Export>();
  private readonly sessions = new Map<string, Session>();
  readonly log: ServerLog;
  readonly maxInflight: number;
  readonly unsafe: { noFencing: boolean; noDedupe: boolean };
  readonly keys: KeyTable;

  constructor(options: DstServerOptions) {
    for (const e of options.exports) this.exportsByName.set(e.name, e);
    this.log = options.log;
    this.maxInflight = options.maxInflight ?? 256;
    this.unsafe = { noFencing: options.unsafe?.noFencing === true, noDedupe: options.unsafe?.noDedupe === true };
    this.keys = options.keys ?? new Map();
    this.epoch = options.epoch ?? randomBytes(6).readUIntBE(0, 6);
  }

  /** AcceptHandler for transport/tcp.ts listen(). */
  readonly accept = (sink: Sink, peer: Peer): ConnectionHandler => {
    this.counters.connections++;
    this.log.info(`${describePeer(peer)}: connected (DST)`);
    const connection = new DstConnection(this, sink, peer);
    this.connections.add(connection);
    return connection;
  };

  /** Live connections, for tick(). */
  readonly connections = new Set<DstConnection>();

  /**
   * Called about once a second by the export node (and by the simulator). A client sending
   * one large frame over a slow link hears nothing from us until the frame is complete, and
   * its keepalive PING waits behind that frame: so while bytes of an unfinished frame keep
   * arriving, we tell the client the link is alive with an unsolicited PONG.
   */
  tick(): void {
    for (const connection of this.connections) connection.progressTick();
  }

  findExport(name: string): Export | undefined {
    return this.exportsByName.get(name);
  }

  /** Resume the session named in HELLO (fencing its old connection) or start a new one. */
  bindSession(hello: Hello, exportName: string, connection: DstConnection): { session: Session; resumed: boolean } {
    if (hello.sessionId !== null) {
      const key = Buffer.from(hello.sessionId).toString("hex");
      const session = this.sessions.get(key);
      if (session !== undefined && session.exportName === exportName) {
        // Fence: the old connection must never apply another frame once the new one is served.
        // Its requests already ran to completion (synchronous backend), so closing it and
        // discarding its unread bytes is all that is left to do.
        const stale = session.connection !== null && session.connection !== connection;
        if (stale && !this.unsafe.noFencing) session.connection!.fence();
        session.connection = connection;
        pruneApplied(session, hello.txidFloor);
        this.sessions.delete(key); // re-insert: the map's order is least recently used first
        this.sessions.set(key, session);
        return { session, resumed: true };
      }
    }
    const id = new Uint8Array(randomBytes(16));
    const session: Session = { id, key: Buffer.from(id).toString("hex"), exportName, connection, applied: new Map() };
    this.sessions.set(session.key, session);
    this.evictSessions();
    return { session, resumed: false };
  }

  private evictSessions(): void {
    if (this.sessions.size <= SESSIONS_MAX) return;
    for (const [key, session] of this.sessions) {
      if (session.connection === null) this.sessions.delete(key);
      if (this.sessions.size <= SESSIONS_MAX) return;
    }
  }
}

function pruneApplied(session: Session, floor: number): void {
  for (const txid of session.applied.keys()) {
    if (txid >= floor) break; // insertion order is txid order for a well-behaved client
    session.applied.delete(txid);
  }
}

const kindOf: Record<number, RequestKind> = {
  [Op.READ]: "read",
  [Op.WRITE]: "write",
  [Op.FLUSH]: "flush",
  [Op.TRIM]: "trim",
  [Op.WRITE_ZEROES]: "zero",
};

export class DstConnection implements ConnectionHandler {
  private state: "hello" | "auth" | "ready" | "closed" = "hello";
  /** Set once the authenticated handshake completes: every later frame is sealed/opened. */
  private channel: Channel | null = null;
  private pending: { auth: PendingAuth; hello: Hello; exp: Export } | null = null;
  /** Checksums the client offered in HELLO, and the one in force (none: no digests). */
  private offeredChecksums: string[] = [];
  private checksum: ChecksumName = "none";
  private digestBytes = 0;
  // Requests are executed before the handler returns, so spanning frames can share a buffer.
  private readonly decoder = new FrameDecoder(HANDSHAKE_PAYLOAD_MAX, { reuseBuffers: true });
  private exp: Export | null = null;
  private backend: Backend | null = null;
  private writable = false;
  private maxPayload = PAYLOAD_MAX_DEFAULT;
  private session: Session | null = null;
  private batch = new Uint8Array(BATCH_BYTES);
  private batchFill = 0;
  private paused = false;
  private receivedSinceTick = 0;
  private readonly name: string;

  constructor(
    private readonly server: DstServer,
    private readonly sink: Sink,
    private readonly peer: Peer,
  ) {
    this.name = describePeer(peer);
  }

  onData(chunk: Uint8Array): void {
    if (this.state === "closed") return;
    this.receivedSinceTick += chunk.length;
    const problem = this.decode(chunk);
    this.flushBatch();
    // The frame handler may have closed the connection: re-read the state.
    const closed = (this.state as string) === "closed";
    if (problem !== null && !closed) this.protocolError(problem);
    if (!this.paused && !closed && this.sink.queuedBytes > QUEUED_REPLY_BYTES_MAX) {
      this.paused = true;
      this.sink.pause();
    }
  }

  /** Plain frames, or (after the authenticated handshake) records holding frames. */
  private decode(chunk: Uint8Array): string | null {
    const records = this.channel?.records;
    if (records == null) return this.decoder.push(chunk, this.onFrame);
    const plaintexts = records.opener.push(chunk);
    if (typeof plaintexts === "string") return plaintexts;
    for (const plain of plaintexts) {
      if (this.state === "closed") return null;
      const problem = this.decoder.push(plain, this.onFrame);
      if (problem !== null) return problem;
    }
    return null;
  }

  onDrain(): void {
    if (this.paused && this.state !== "closed") {
      this.paused = false;
      this.sink.resume();
    }
  }

  onClose(reason: string | null): void {
    this.server.connections.delete(this);
    if (this.state === "closed") return;
    if (this.state === "auth" && this.pending !== null) {
      // The client checks our proof first and leaves when it fails: that is how a wrong key
      // or an unknown identity ends. Say which, here only (never to the client).
      const why = this.pending.auth.known ? "client rejected the export's proof: keys differ" : "unknown identity or key id";
      this.server.log.warn(`${this.name}: identity '${this.pending.auth.identity}': authentication failed (${why})`);
    }
    this.state = "closed";
    if (this.session?.connection === this) this.session.connection = null;
    this.server.log.info(`${this.name}: closed${reason ? ` (${reason})` : ""}`);
  }

  progressTick(): void {
    const partial = this.decoder.bufferedBytes > 0 || (this.channel?.records?.opener.bufferedBytes ?? 0) > 0;
    const receiving = this.receivedSinceTick > 0 && partial;
    this.receivedSinceTick = 0;
    if (this.state !== "ready" || !receiving) return;
    this.reply(Op.PONG, 0, 0, 0, 0);
    this.flushBatch();
  }

  /** A newer connection of the same session took over: stop at once, read nothing more. */
  fence(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.server.log.info(`${this.name}: superseded by a reconnect of its session; closing`);
    this.sink.destroy();
  }

  private readonly onFrame = (header: Header, payload: Uint8Array, frame: Uint8Array): void => {
    if (this.state === "closed") return;
    if (this.state === "hello") return this.onHello(header, payload, frame);
    if (this.state === "auth") return this.onAuth(header, payload);
    const kind = kindOf[header.opcode];
    if (kind !== undefined) return this.onRequest(kind, header, payload);
    if (header.opcode === Op.PING) {
      if (this.session) pruneApplied(this.session, header.offset);
      return this.reply(Op.PONG, header.txid, 0, header.offset, 0);
    }
    this.protocolError(`unexpected ${opcodeName(header.opcode)} after the handshake`);
  };

  private onHello(header: Header, payload: Uint8Array, frame: Uint8Array): void {
    if (header.opcode !== Op.HELLO) return this.protocolError(`expected HELLO, got ${opcodeName(header.opcode)}`);
    const version = negotiateVersion(header.version);
    if (typeof version === "string") return this.refuse(Errno.EPROTONOSUPPORT, version);
    const hello = decodeHello(header, payload);
    if (typeof hello === "string") return this.refuse(Errno.EINVAL, `malformed HELLO: ${hello}`);
    const exp = this.server.findExport(hello.exportName);
    if (exp === undefined) return this.refuse(Errno.ENOENT, `no export named '${hello.exportName}'`);
    const attrs = decodeAttrs(payload);
    const offer = typeof attrs === "string" ? undefined : attrs.get(Attr.CHECKSUMS);
    if (offer !== undefined) this.offeredChecksums = new TextDecoder().decode(offer).split(",");
    if (typeof attrs !== "string" && attrs.has(Attr.IDENTITY)) {
      const auth = serverChallenge(frame.slice(), attrs, this.server.keys, exp.suites ?? DEFAULT_SUITES, this.peer);
      if ("refuse" in auth) return this.refuse(Errno.EPROTONOSUPPORT, auth.refuse);
      this.pending = { auth, hello, exp };
      this.state = "auth";
      this.sink.write(auth.challenge);
      return;
    }
    // Anonymous clients (no key): only address rules without an identity can admit them, and
    // only where the channel may go unprotected (suite none): Unix sockets and loopback.
    if (this.peer.transport === "tcp" && !isLoopbackAddress(this.peer.address)) {
      return this.refuse(
        Errno.EACCES,
        `anonymous clients are accepted only on loopback and Unix sockets; ${this.peer.address} must authenticate with a key (dstd keygen)`,
      );
    }
    this.admit(hello, exp, null);
  }

  private onAuth(header: Header, payload: Uint8Array): void {
    const pending = this.pending!;
    this.pending = null;
    if (header.opcode !== Op.AUTH) return this.protocolError(`expected AUTH, got ${opcodeName(header.opcode)}`);
    const attrs = decodeAttrs(payload);
    const result = typeof attrs === "string" ? attrs : pending.auth.complete(attrs);
    const identity = pending.auth.identity;
    if (typeof result === "string") {
      const why = pending.auth.known ? result : "unknown identity or key id";
      this.server.log.warn(`${this.name}: identity '${identity}': authentication failed (${why})`);
      return this.refuse(Errno.EACCES, "authentication failed (wrong key or unknown identity)", false);
    }
    this.channel = result;
    // Requests are executed before the handler returns, so spanning records can share a buffer.
    if (result.records) result.records.opener.reuseBuffers = true;
    this.admit(pending.hello, pending.exp, identity);
  }

  /** Access check (after authentication, so refusals reveal nothing to strangers), then WELCOME. */
  private admit(hello: Hello, exp: Export, identity: string | null): void {
    const access = matchAllow(exp.allow, this.peer, identity);
    if (access === null) {
      const where = this.peer.transport === "unix" ? "a Unix socket" : this.peer.address;
      const who = identity === null ? `anonymous clients from ${where} are` : `identity '${identity}' from ${where} is`;
      return this.refuse(Errno.EACCES, `access denied: ${who} not allowed to use export '${exp.name}'`);
    }
    this.exp = exp;
    this.checksum = chooseChecksum(this.offeredChecksums, exp.checksums ?? DEFAULT_CHECKSUMS) ?? "none";
    this.digestBytes = digestSize(this.checksum);
    this.backend = exp.backend;
    this.writable = access === "rw" && !exp.readOnly && !exp.backend.readOnly;
    this.maxPayload = Math.max(4096, Math.min(hello.maxPayload, PAYLOAD_MAX_DEFAULT));
    this.decoder.maxPayload = this.maxPayload;
    const { session, resumed } = this.server.bindSession(hello, exp.name, this);
    this.session = session;
    this.state = "ready";
    this.send(
      encodeWelcome({
        size: exp.backend.size,
        blockMin: 1,
        blockPreferred: exp.backend.blockSize,
        maxPayload: this.maxPayload,
        permissions: Perm.READ | (this.writable ? Perm.WRITE : 0),
        features: Feature.FLUSH | Feature.FUA | Feature.TRIM | Feature.WRITE_ZEROES | Feature.SESSIONS,
        sessionId: session.id,
        epoch: this.server.epoch,
        maxInflight: this.server.maxInflight,
        checksum: this.checksum,
      }),
    );
    const sessionText = `session ${session.key.slice(0, 8)}${resumed ? " (resumed)" : ""}`;
    const who = identity === null ? "anonymous" : `identity '${identity}', suite ${this.channel?.suite}`;
    this.server.log.info(
      `${this.name}: handshake ok: export '${exp.name}' ${this.writable ? "rw" : "ro"}, ${who}, ${sessionText}, client '${hello.clientName}'`,
    );
  }

  private onRequest(kind: RequestKind, header: Header, payload: Uint8Array): void {
    this.server.counters.requests++;
    const backend = this.backend!;
    const session = this.session!;
    const mutating = kind !== "read" && kind !== "flush";
    let status = validateRequest(kind, header.offset, header.length, {
      size: backend.size,
      writable: this.writable,
      maxPayload: this.maxPayload,
    });
    if (status === 0 && mutating && !this.server.unsafe.noDedupe) {
      const previous = session.applied.get(header.txid);
      if (previous !== undefined) {
        this.server.counters.duplicates++;
        return this.reply(header.opcode | REPLY_BIT, header.txid, previous, header.offset, 0);
      }
    }
    if (status === 0 && kind === "read") return this.read(header);
    if (status === 0 && kind === "write" && (header.flags & Flag.DIGEST) !== 0) {
      // End-to-end check of the client's copy before anything reaches the disk. A mismatch
      // is not recorded as applied, so the client's resend gets a fresh chance.
      const data = payload.subarray(0, header.length);
      if (!verifyDigest(this.checksum, data, payload.subarray(header.length))) {
        this.server.counters.checksumFailures++;
        this.server.log.warn(`${this.name}: write ${header.length} B at ${header.offset}: data checksum mismatch; not applied`);
        return this.reply(header.opcode | REPLY_BIT, header.txid, Errno.EBADMSG, header.offset, 0);
      }
      payload = data;
    }
    if (status === 0) status = this.execute(kind, header, payload, backend);
    if (mutating && status !== Errno.EPERM) {
      session.applied.set(header.txid, status);
      if (session.applied.size > APPLIED_MAX) pruneApplied(session, session.applied.keys().next().value! + 1);
    }
    if (status !== 0) this.server.log.warn(`${this.name}: ${kind} ${header.length} B at ${header.offset}: ${errnoMessage(status)}`);
    this.reply(header.opcode | REPLY_BIT, header.txid, status, header.offset, 0);
  }

  private execute(kind: RequestKind, header: Header, payload: Uint8Array, backend: Backend): number {
    const fua = (header.flags & Flag.FUA) !== 0;
    try {
      switch (kind) {
        case "write":
          backend.write(header.offset, payload, fua);
          break;
        case "flush":
          backend.flush();
          break;
        case "trim":
          backend.trim(header.offset, header.length);
          if (fua) backend.flush();
          break;
        case "zero":
          backend.zero(header.offset, header.length, (header.flags & Flag.NO_HOLE) === 0);
          if (fua) backend.flush();
          break;
        default:
          return Errno.EINVAL;
      }
      return 0;
    } catch (error) {
      return errnoFromError(error);
    }
  }

  /** READ: the payload is read straight into the reply frame (batched when small). */
  private read(header: Header): void {
    const digest = this.digestBytes;
    const total = HEADER_SIZE + header.length + digest;
    let frame: Uint8Array;
    let at: number;
    const batched = total <= BATCH_BYTES / 4;
    if (batched) {
      if (this.batchFill + total > this.batch.length) this.flushBatch();
      frame = this.batch;
      at = this.batchFill;
    } else {
      // A large reply leaves as its own record: leave room for the record header in front
      // so it is sealed where it lies (no copy).
      at = this.channel?.records ? RECORD_HEADER_SIZE : 0;
      frame = new Uint8Array(at + total);
    }
    let status = 0;
    try {
      this.backend!.read(header.offset, frame.subarray(at + HEADER_SIZE, at + HEADER_SIZE + header.length));
    } catch (error) {
      status = errnoFromError(error);
      this.server.log.warn(`${this.name}: read ${header.length} B at ${header.offset}: ${errorMessage(error)}`);
    }
    if (status !== 0) return this.reply(Op.READ | REPLY_BIT, header.txid, status, header.offset, 0);
    if (digest > 0) {
      const dataEnd = at + HEADER_SIZE + header.length;
      computeDigest(this.checksum, frame.subarray(at + HEADER_SIZE, dataEnd), frame, dataEnd);
    }
    encodeHeader(frame, at, {
      version: 1,
      opcode: Op.READ | REPLY_BIT,
      flags: digest > 0 ? Flag.DIGEST : 0,
      txid: header.txid,
      offset: header.offset,
      length: header.length,
      payloadLength: header.length + digest,
      status: 0,
    });
    const records = this.channel?.records;
    if (batched) this.batchFill += total;
    else this.sink.write(records ? records.sealer.sealInPlace(frame) : frame);
  }

  private reply(opcode: number, txid: number, status: number, offset: number, length: number): void {
    if (this.batchFill + HEADER_SIZE > this.batch.length) this.flushBatch();
    encodeHeader(this.batch, this.batchFill, {
      version: 1,
      opcode,
      flags: 0,
      txid,
      offset,
      length,
      payloadLength: 0,
      status,
    });
    this.batchFill += HEADER_SIZE;
  }

  private flushBatch(): void {
    if (this.batchFill === 0) return;
    // The sink may keep what it cannot send yet, so hand it its own copy of the bytes; on a
    // protected channel that copy is the sealed record of the whole batch.
    if (this.state !== "closed") {
      const records = this.channel?.records;
      const bytes = this.batch.subarray(0, this.batchFill);
      this.sink.write(records ? records.sealer.seal([bytes], bytes.length) : bytes.slice());
    }
    this.batchFill = 0;
  }

  /** Write one whole frame, sealed when the channel is protected. */
  private send(frame: Uint8Array): void {
    this.flushBatch();
    const records = this.channel?.records;
    this.sink.write(records ? records.sealer.seal([frame], frame.length) : frame);
  }

  private refuse(status: number, message: string, log = true): void {
    this.server.counters.refused++;
    if (log) this.server.log.warn(`${this.name}: refused: ${message}`);
    this.send(encodeRefusal(status, message));
    this.state = "closed";
    this.sink.end();
  }

  private protocolError(reason: string): void {
    this.server.counters.protocolErrors++;
    this.refuse(Errno.EPROTO, `protocol error: ${reason}`);
  }
}
