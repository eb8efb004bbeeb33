/**
 * @module engine/client-engine — the DST requester as a sans-I/O state machine.
 *
 * It owns transaction ids, the in-flight table, resend on timeout, reconnect with backoff,
 * keepalive and durable resume (replay of acknowledged-but-unflushed writes after the export
 * restarted). It has no sockets and no timers: the driver (client/dst-client.ts in
 * production, test/sim in simulation) feeds it events — connected, receive, disconnected,
 * tick(now) — and performs the effects it asks for through EngineIO. Every event carries
 * the connection id it belongs to; events from an older connection are ignored, which
 * fences stale bytes on the client side.
 *
 * Lifecycle (one transition function, `setState`):
 *   idle ──connect──▶ connecting ──connected──▶ handshaking ──WELCOME──▶ ready
 *     ▲                    │                         │                     │
 *     └──── backoff ◀──────┴───── failure ◀──────────┴──── dead/closed ◀───┘
 *   any ──refused on first contact / shutdown──▶ failed | closed (terminal)
 */
import { assert } from "../lib/assert.ts";
import { Errno, errnoMessage } from "../lib/errno.ts";
import { Prng } from "../lib/prng.ts";
import { escapePeer, quotePeer } from "../lib/peer-text.ts";
import { Feature, Flag, HANDSHAKE_PAYLOAD_MAX, HEADER_SIZE, Op, Perm, REPLY_BIT } from "../wire/dst/constants.ts";
import { FrameDecoder } from "../wire/dst/decoder.ts";
import { encodeHello, decodeWelcome, type Welcome } from "../wire/dst/handshake.ts";
import { decodeAttrs } from "../wire/dst/attrs.ts";
import { ClientAuth, type Channel } from "../crypto/dst-auth.ts";
import { computeDigest, DEFAULT_CHECKSUMS, digestSize, isChecksumName, verifyDigest, type ChecksumName } from "../crypto/checksum.ts";
import { Attr } from "../wire/dst/constants.ts";
import { encodeFrame, frameBuffer, type Header } from "../wire/dst/header.ts";
import { newCounters, type EngineCounters } from "./counters.ts";
import type { EngineOptions } from "./options.ts";
import { ReplayLog } from "./replay-log.ts";

export type OpKind = "read" | "write" | "flush" | "trim" | "zero";

export interface Request {
  kind: OpKind;
  offset: number;
  length: number;
  /** WRITE payload (length bytes). The engine copies it into the frame at submit. */
  data?: Uint8Array;
  fua?: boolean;
  noHole?: boolean;
}

/** errno 0 = success; `data` is the READ payload. */
export type Completion = (errno: number, data: Uint8Array | null) => void;

/** Effects the engine asks its driver to perform. Must not call back into the engine synchronously. */
export interface EngineIO {
  connect(connection: number): void;
  send(connection: number, frame: Uint8Array): void;
  close(connection: number): void;
  /**
   * Optional: run `flush` once the current burst of work is over (production: setImmediate,
   * after every promise continuation the burst triggered). Lets one sealed record carry the
   * requests that callers submit from their completion callbacks. Absent: flush at once.
   */
  defer?(flush: () => void): void;
}

export interface EngineLog {
  info(message: string): void;
  warn(message: string): void;
  debug?(message: string): void;
}

export type EngineState = "idle" | "connecting" | "handshaking" | "ready" | "failed" | "closed";

interface Txn {
  txid: number;
  kind: OpKind;
  frame: Uint8Array;
  offset: number;
  length: number;
  fua: boolean;
  noHole: boolean;
  done: Completion | null;
  /** Internal transactions: replays after an export restart, and flushes the engine issues itself. */
  internal: "replay" | "flush" | null;
  deadlineAt: number;
  /** Connection this was last sent on (0: not sent on the current connection). */
  sentOn: number;
  nextResendAt: number;
  resendIntervalMs: number;
  resends: number;
  /** Times this frame went on the wire (any connection). */
  sends: number;
  /** FLUSH: replay-log mark taken at first send. */
  flushMark: number;
  /** Session (ClientEngine.sessionSeq) this was last sent in; 0: never. */
  session: number;
}

/** Seal what is collected once it reaches this size, even mid-event (bounded records). */
const OUTBOX_RECORD_MAX = 256 * 1024;

const opcodeOf: Record<OpKind, number> = {
  read: Op.READ,
  write: Op.WRITE,
  flush: Op.FLUSH,
  trim: Op.TRIM,
  zero: Op.WRITE_ZEROES,
};

/** Refusals on first contact that retrying cannot fix: report them at once. */
const permanentRefusals = new Set<number>([
  Errno.ENOENT,
  Errno.EACCES,
  Errno.EPERM,
  Errno.EPROTONOSUPPORT,
  Errno.EINVAL,
  Errno.EBADMSG,
]);

export class ClientEngine {
  readonly counters: EngineCounters = newCounters();
  state: EngineState = "idle";
  /** The export's answer to the last successful handshake. */
  welcome: Welcome | null = null;
  /** Why the engine failed (state "failed"). */
  fatal: string | null = null;
  /** Called on every state change and on a fatal refusal. */
  onStateChange: ((state: EngineState, detail: string) => void) | null = null;
  /** Called when the engine becomes ready (first time and after each reconnect). */
  onReady: (() => void) | null = null;

  private readonly options: EngineOptions;
  private readonly io: EngineIO;
  private readonly log: EngineLog;
  private readonly prng: Prng;
  private readonly pending = new Map<number, Txn>();
  /** Txns to send on the current connection, in order. */
  private waiting: Txn[] = [];
  private onWire = 0;
  private nextTxid = 1;
  private connection = 0;
  private decoder = new FrameDecoder(HANDSHAKE_PAYLOAD_MAX);
  private now = 0;
  private stateSince = 0;
  private lastReceiveAt = 0;
  private lastPingAt = 0;
  private reconnectAt = 0;
  private reconnectAttempt = 0;
  private everReady = false;
  private startedAt = 0;
  private sessionId: Uint8Array | null = null;
  /**
   * The session's resumption secret: the token of the last WELCOME (anonymous sessions) or the
   * resumption key of the last completed authenticated handshake (docs/protocol.md §6.5).
   */
  private resumeToken: Uint8Array | null = null;
  private resumeKey: Uint8Array | null = null;
  /** Most txids beyond the floor the export remembers (WELCOME MAX_TXID_SPAN; 0: unlimited). */
  private txidSpan = 0;
  /** Counts sessions: a WELCOME naming another session than we had starts a new one. */
  private sessionSeq = 0;
  private epoch: number | null = null;
  private window = 1;
  private maxPayload: number;
  private readonly replay = new ReplayLog();
  private internalFlushPending = false;
  /** Replay transactions not yet acknowledged: until they are, nothing else is sent. */
  private replaysPending = 0;
  /** A replay failed: the next handshake replays the whole log again, whatever the epoch. */
  private replayAgain = false;
  /** Replay rounds failed in a row: backs the reconnect off, so a failing disk is not hammered. */
  private replayStreak = 0;
  private lastError = "";
  /** Authentication state of the current connection (null: anonymous). */
  private auth: ClientAuth | null = null;
  private helloFrame: Uint8Array | null = null;
  private channel: Channel | null = null;
  /** Frames waiting to leave as one sealed record (protected channels only). */
  private outbox: Uint8Array[] = [];
  private outboxBytes = 0;
  /** Nesting of event handlers; the outermost one flushes the outbox. */
  private depth = 0;
  private flushScheduled = false;
  /** Data checksum in force (chosen by the export in WELCOME). */
  private checksum: ChecksumName = "none";

  constructor(options: EngineOptions, io: EngineIO, log: EngineLog) {
    assert(options.inflight >= 1, "inflight must be at least 1");
    assert(options.keepaliveTimeoutMs > options.keepaliveIntervalMs, "keepalive timeout must exceed interval");
    this.options = options;
    this.io = io;
    this.log = log;
    this.prng = new Prng(options.seed);
    this.maxPayload = options.maxPayload;
  }

  /** Most bytes one READ or WRITE may carry on this connection. */
  get payloadLimit(): number {
    return this.maxPayload;
  }

  /** Acknowledged writes still held for replay, in bytes. */
  get replayBytes(): number {
    return this.replay.bytes;
  }

  /** Acknowledged mutations still held for replay (entries, not bytes). */
  get replayEntries(): number {
    return this.replay.size;
  }

  /** Requests submitted and not yet completed. */
  get outstanding(): number {
    return this.pending.size;
  }

  // ---- driver events ------------------------------------------------------------------

  /** Begin: connect at once. */
  start(now: number): void {
    assert(this.state === "idle" && this.connection === 0, "start called twice");
    this.now = now;
    this.startedAt = now;
    this.beginConnect();
  }

  connected(connection: number): void {
    if (connection !== this.connection || this.state !== "connecting") return;
    this.setState("handshaking", "connected; sending HELLO");
    this.decoder = new FrameDecoder(HANDSHAKE_PAYLOAD_MAX);
    this.lastReceiveAt = this.now;
    const floor = this.txidFloor();
    this.channel = null;
    this.auth = this.options.auth ? new ClientAuth(this.options.auth.key, this.options.auth.suites) : null;
    this.helloFrame = encodeHello(
      {
        version: 1,
        exportName: this.options.exportName,
        clientName: this.options.clientName,
        maxPayload: this.options.maxPayload,
        features: Feature.FLUSH | Feature.FUA | Feature.TRIM | Feature.WRITE_ZEROES | Feature.SESSIONS,
        sessionId: this.sessionId,
        txidFloor: floor,
        resumeToken: this.sessionId !== null && this.auth === null ? this.resumeToken : null,
      },
      [
        ...(this.auth?.helloAttrs() ?? []),
        [Attr.CHECKSUMS, new TextEncoder().encode((this.options.checksums ?? DEFAULT_CHECKSUMS).join(","))],
      ],
    );
    this.io.send(connection, this.helloFrame);
  }

  /**
   * Put one frame on the current connection. On a protected channel frames are collected and
   * leave as one sealed record when the outermost event handler returns (crypto/record.ts:
   * one cipher setup per batch, not per frame); the transaction keeps its plaintext frame.
   */
  private transmit(frame: Uint8Array): void {
    if (this.channel?.records == null) return this.io.send(this.connection, frame);
    this.outbox.push(frame);
    this.outboxBytes += frame.length;
    if (this.outboxBytes >= OUTBOX_RECORD_MAX) this.flushOutbox();
  }

  private flushOutbox(): void {
    if (this.outbox.length === 0) return;
    const records = this.channel?.records;
    if (records != null) this.io.send(this.connection, records.sealer.seal(this.outbox, this.outboxBytes));
    this.outbox = [];
    this.outboxBytes = 0;
  }

  /** Run an event handler; the outermost one sends what the event produced as one record. */
  private event<T>(handler: () => T): T {
    this.depth++;
    try {
      return handler();
    } finally {
      if (--this.depth === 0 && this.outbox.length > 0) this.scheduleFlush();
    }
  }

  private scheduleFlush(): void {
    if (this.io.defer === undefined) return this.flushOutbox();
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // The outbox is emptied when a connection is lost, so whatever it holds then belongs to
    // the current connection.
    this.io.defer(() => {
      this.flushScheduled = false;
      this.flushOutbox();
    });
  }

  connectFailed(connection: number, reason: string): void {
    if (connection !== this.connection || this.state !== "connecting") return;
    this.connectionLost(reason);
  }

  disconnected(connection: number, reason: string | null): void {
    if (connection !== this.connection) return;
    if (this.state === "failed" || this.state === "closed" || this.state === "idle") return;
    this.connectionLost(reason ?? "connection closed by the export");
  }

  receive(connection: number, chunk: Uint8Array): void {
    if (connection !== this.connection) return;
    if (this.state !== "handshaking" && this.state !== "ready") return;
    this.lastReceiveAt = this.now;
    this.event(() => {
      const records = this.channel?.records;
      if (records == null) return this.decode(connection, chunk);
      const plaintexts = records.opener.push(chunk);
      if (typeof plaintexts === "string") return this.dropConnection(`from export: ${plaintexts}`);
      for (const plain of plaintexts) if (connection === this.connection) this.decode(connection, plain);
    });
  }

  private decode(connection: number, bytes: Uint8Array): void {
    const problem = this.decoder.push(bytes, this.onFrame);
    if (problem !== null && connection === this.connection && (this.state === "ready" || this.state === "handshaking")) {
      this.dropConnection(`protocol error from export: ${problem}`);
    }
  }

  /** Advance time: resends, deadlines, keepalive, reconnect. Call every few tens of ms. */
  tick(now: number): void {
    assert(now >= this.now, "time went backwards");
    this.now = now;
    this.event(() => this.tickState(now));
  }

  private tickState(now: number): void {
    switch (this.state) {
      case "idle":
        if (now >= this.reconnectAt) this.beginConnect();
        break;
      case "connecting":
      case "handshaking":
        if (now - this.stateSince >= this.options.keepaliveTimeoutMs) {
          this.dropConnection(`${this.state === "connecting" ? "connect" : "handshake"} timed out`);
        }
        break;
      case "ready":
        this.tickReady(now);
        break;
      case "failed":
      case "closed":
        return;
    }
    this.expireDeadlines(now);
    this.checkFirstContact(now);
  }

  /** Stop for good: fail everything outstanding with ESHUTDOWN and close the connection. */
  shutdown(reason = "client shut down"): void {
    if (this.state === "closed" || this.state === "failed") return;
    const open = this.connection !== 0 && this.state !== "idle";
    const id = this.connection++;
    if (open) this.io.close(id);
    this.setState("closed", reason);
    this.failAll(Errno.ESHUTDOWN);
  }

  // ---- API ------------------------------------------------------------------------------

  /** Queue a request; returns its txid (0 when refused at once because the engine has stopped). */
  submit(request: Request, done: Completion): number {
    if (this.state === "failed" || this.state === "closed") {
      done(this.state === "failed" ? Errno.EIO : Errno.ESHUTDOWN, null);
      return 0;
    }
    return this.event(() => {
      const txn = this.makeTxn(request, done, null);
      this.pending.set(txn.txid, txn);
      this.waiting.push(txn);
      this.pump();
      return txn.txid;
    });
  }

  // ---- internals ------------------------------------------------------------------------

  private makeTxn(request: Request, done: Completion | null, internal: Txn["internal"]): Txn {
    const isWrite = request.kind === "write";
    if (isWrite) assert(request.data !== undefined && request.data.length === request.length, "write data length");
    let flags = request.fua ? Flag.FUA : 0;
    if (request.kind === "zero" && request.noHole) flags |= Flag.NO_HOLE;
    const txid = this.nextTxid++;
    const digest = isWrite ? digestSize(this.checksum) : 0;
    if (digest > 0) flags |= Flag.DIGEST;
    const fields = {
      opcode: opcodeOf[request.kind],
      flags,
      txid,
      offset: request.kind === "flush" ? 0 : request.offset,
      length: request.kind === "flush" ? 0 : request.length,
    };
    let frame: Uint8Array;
    if (digest > 0) {
      // The digest is taken over our own copy, so corruption anywhere after this point —
      // network, export memory — is caught by the export before the write is applied.
      frame = frameBuffer(fields, request.length + digest);
      frame.set(request.data!, HEADER_SIZE);
      const end = HEADER_SIZE + request.length;
      computeDigest(this.checksum, frame.subarray(HEADER_SIZE, end), frame, end);
    } else {
      frame = encodeFrame(fields, isWrite ? request.data : undefined);
    }
    return {
      txid,
      kind: request.kind,
      frame,
      offset: request.offset,
      length: request.length,
      fua: request.fua === true,
      noHole: request.noHole === true,
      done,
      internal,
      deadlineAt: this.now + this.options.deadlineMs,
      sentOn: 0,
      nextResendAt: 0,
      resendIntervalMs: this.options.resendIntervalMs,
      resends: 0,
      sends: 0,
      flushMark: -1,
      session: 0,
    };
  }

  private setState(state: EngineState, detail: string): void {
    if (this.state === state) return;
    this.state = state;
    this.stateSince = this.now;
    this.onStateChange?.(state, detail);
  }

  private beginConnect(): void {
    this.connection++;
    this.counters.connects++;
    this.setState("connecting", `connecting (attempt ${this.reconnectAttempt + 1})`);
    this.io.connect(this.connection);
  }

  /** Close the current connection on our side, then treat it as lost. */
  private dropConnection(reason: string): void {
    // connectionLost moves to a new connection id first, so the driver's close callback for
    // the old one (possibly synchronous) is ignored.
    const id = this.connection;
    this.connectionLost(reason);
    this.io.close(id);
  }

  private connectionLost(reason: string): void {
    this.lastError = reason;
    // Frames collected for the old connection die with it (they are resent from the txns).
    this.outbox = [];
    this.outboxBytes = 0;
    const wasReady = this.state === "ready";
    this.connection++; // fence: anything still arriving from the old connection is ignored
    this.onWire = 0;
    for (const txn of this.pending.values()) txn.sentOn = 0;
    const delay = this.backoff();
    this.reconnectAt = this.now + delay;
    this.setState("idle", `${reason}; reconnecting in ${delay} ms`);
    if (wasReady) this.log.warn(`connection lost: ${reason}`);
  }

  private backoff(): number {
    const base = Math.min(this.options.reconnectMaxMs, this.options.reconnectMinMs * 2 ** this.reconnectAttempt);
    this.reconnectAttempt = Math.min(this.reconnectAttempt + 1, 30);
    return Math.round(base * (0.5 + 0.5 * this.prng.float()));
  }

  private readonly onFrame = (header: Header, payload: Uint8Array, frame: Uint8Array): void => {
    if (this.state !== "ready" && this.state !== "handshaking") return; // dropped mid-chunk
    if (header.opcode === Op.CHALLENGE) return this.onChallenge(payload);
    if (header.opcode === Op.WELCOME) return this.onWelcome(header, payload);
    if (this.state !== "ready") return this.dropConnection("export sent a request before the handshake finished");
    if (header.opcode === Op.PONG) return;
    if ((header.opcode & REPLY_BIT) === 0) return this.dropConnection("export sent a request frame");
    const txn = this.pending.get(header.txid);
    if (txn === undefined || txn.sentOn !== this.connection) {
      this.counters.staleReplies++;
      return;
    }
    if (header.opcode !== (opcodeOf[txn.kind] | REPLY_BIT)) {
      return this.dropConnection(`reply opcode 0x${header.opcode.toString(16)} does not match txid ${txn.txid}`);
    }
    if (header.status === Errno.ESHUTDOWN) {
      return this.dropConnection("export is shutting down");
    }
    if (header.status === Errno.EBADMSG) return this.retryCorrupt(txn, "the export found the write's data checksum wrong");
    let data: Uint8Array | null = null;
    if (txn.kind === "read" && header.status === 0) {
      data = payload.subarray(0, header.length);
      if ((header.flags & Flag.DIGEST) !== 0 && !verifyDigest(this.checksum, data, payload.subarray(header.length))) {
        return this.retryCorrupt(txn, "READ reply failed its data checksum");
      }
    }
    this.complete(txn, header.status, data);
  };

  private onChallenge(payload: Uint8Array): void {
    if (this.state !== "handshaking" || this.auth === null || this.channel !== null) {
      return this.dropConnection("unexpected CHALLENGE from export");
    }
    const attrs = decodeAttrs(payload);
    const resumeKey = this.sessionId !== null ? this.resumeKey : null;
    const result = typeof attrs === "string" ? `malformed CHALLENGE: ${attrs}` : this.auth.onChallenge(this.helloFrame!, attrs, resumeKey);
    if (typeof result === "string") {
      const message = `export refused or failed authentication: ${result}`;
      if (!this.everReady) return this.fail(message, Errno.EACCES);
      return this.dropConnection(message);
    }
    this.io.send(this.connection, result.auth);
    this.channel = result.channel;
  }

  /** A digest mismatch: send the same request again, within the resend budget. */
  private retryCorrupt(txn: Txn, why: string): void {
    this.counters.checksumFailures++;
    if (txn.resends >= this.options.maxResends) {
      this.log.warn(`txid ${txn.txid}: ${why}; giving up after ${txn.resends} resends`);
      return this.complete(txn, Errno.EBADMSG, null);
    }
    this.log.warn(`txid ${txn.txid}: ${why}; resending`);
    txn.resends++;
    txn.sends++;
    this.counters.resends++;
    txn.nextResendAt = this.now + this.jitter(txn.resendIntervalMs);
    this.transmit(txn.frame);
  }

  private onWelcome(header: Header, payload: Uint8Array): void {
    const result = decodeWelcome(header, payload);
    if (typeof result === "string") return this.dropConnection(`malformed WELCOME: ${result}`);
    if (result.ok && this.auth !== null && this.channel === null) {
      // We hold a key: an unauthenticated WELCOME would be a downgrade. Fail closed.
      return this.fail("export did not authenticate (it answered without a CHALLENGE); refusing an unprotected channel", Errno.EACCES);
    }
    if (!result.ok && result.status === Errno.ESTALE) {
      // The export will not let us resume our session (it does not take our proof): start a
      // new one. It did not restart, so nothing acknowledged is lost; in-flight requests are
      // resent in the new session.
      this.log.warn(`export refused to resume session: ${result.message}; starting a new session`);
      this.sessionId = null;
      this.resumeKey = null;
      this.resumeToken = null;
      return this.dropConnection("session could not be resumed");
    }
    if (!result.ok) {
      const message = `export refused: ${escapePeer(result.message, 200)} (${errnoMessage(result.status)})`;
      if (!this.everReady && permanentRefusals.has(result.status)) return this.fail(message, result.status);
      return this.dropConnection(message);
    }
    if (this.state !== "handshaking") return this.dropConnection("unexpected WELCOME");
    this.acceptWelcome(result.welcome);
  }

  private acceptWelcome(welcome: Welcome): void {
    const previousEpoch = this.epoch;
    this.welcome = welcome;
    if (this.sessionId === null || !sameBytes(this.sessionId, welcome.sessionId)) {
      // A new session: its resumption secret is this handshake's, for the session's life.
      this.sessionSeq++;
      this.resumeToken = welcome.resumeToken ?? null;
      this.resumeKey = this.channel?.resumeKey ?? null;
    }
    this.sessionId = welcome.sessionId;
    this.txidSpan = welcome.maxTxidSpan ?? 0;
    this.epoch = welcome.epoch;
    this.maxPayload = Math.min(this.options.maxPayload, welcome.maxPayload);
    const checksum = welcome.checksum ?? "none";
    if (!isChecksumName(checksum)) return this.dropConnection(`export chose unknown data checksum ${quotePeer(checksum)}`);
    this.checksum = checksum;
    this.decoder.maxPayload = this.maxPayload;
    this.window = Math.max(1, Math.min(this.options.inflight, welcome.maxInflight));
    this.reconnectAttempt = 0;
    if (this.everReady) this.counters.reconnects++;
    this.everReady = true;
    this.lastReceiveAt = this.now;
    this.lastPingAt = this.now;
    const restarted = previousEpoch !== null && previousEpoch !== welcome.epoch;
    this.requeue(restarted);
    if (restarted) this.log.warn(`export restarted (new epoch): replaying ${this.replay.size} acknowledged writes not yet flushed`);
    this.setState(
      "ready",
      restarted ? `export restarted (new epoch); replaying ${this.replay.size} unflushed writes` : "ready",
    );
    this.onReady?.();
    this.pump();
  }

  /**
   * After a (re)connect: replays first (if the export restarted, or an earlier replay failed),
   * then everything pending in id order. Replaying the whole log again is safe only because of
   * the barrier in pump(): while replays are pending nothing else reaches the export, so the
   * log, applied in order, is the newest state of every range it touches.
   */
  private requeue(restarted: boolean): void {
    const pendingTxns = [...this.pending.values()].filter((t) => t.internal !== "replay");
    // An automatic flush goes first: writes held by the replay bound wait for it, so behind
    // them it would never be sent (found by the simulator: a reconnect re-sorted it by txid
    // and every write stalled until the flush's deadline).
    const rank = (t: Txn) => (t.internal === "flush" ? 0 : 1);
    pendingTxns.sort((a, b) => rank(a) - rank(b) || a.txid - b.txid);
    const replays: Txn[] = [];
    if (restarted || this.replayAgain) {
      this.replayAgain = false;
      for (const txn of this.pending.values()) if (txn.internal === "replay") this.pending.delete(txn.txid);
      for (const entry of this.replay.pending()) {
        const request: Request = { kind: entry.kind, offset: entry.offset, length: entry.length, noHole: entry.noHole };
        if (entry.data) request.data = entry.data;
        const txn = this.makeTxn(request, null, "replay");
        this.pending.set(txn.txid, txn);
        replays.push(txn);
      }
      this.counters.replays += replays.length;
    } else {
      for (const txn of this.pending.values()) if (txn.internal === "replay") replays.push(txn);
      replays.sort((a, b) => a.txid - b.txid);
    }
    this.replaysPending = replays.length;
    this.waiting = [...replays, ...pendingTxns];
  }

  private pump(): void {
    if (this.state !== "ready") return;
    this.maybeFlushForReplayBound();
    let floor: number | undefined;
    while (this.onWire < this.window && this.waiting.length > 0) {
      const txn = this.waiting[0]!;
      if (!this.pending.has(txn.txid)) {
        this.waiting.shift(); // failed by deadline while waiting
        continue;
      }
      // Barrier: after an export restart, nothing but replays until every replay is acknowledged
      // (a FLUSH sent earlier would release log entries whose replay has not landed yet).
      if (this.replaysPending > 0 && txn.internal !== "replay") break;
      // The export remembers results only txidSpan txids beyond our floor: wait for the floor.
      if (this.txidSpan > 0 && txn.txid - (floor ??= this.txidFloor()) >= this.txidSpan) break;
      if (txn.kind === "write" && txn.internal === null && this.replayFull()) break;
      floor = Math.min(floor ?? txn.txid, txn.txid);
      this.waiting.shift();
      this.send(txn);
    }
    this.counters.inflight = this.onWire;
  }

  /** The replay log holds its bound (an empty log never blocks, whatever the bound). */
  private replayFull(): boolean {
    return this.replay.size > 0 && this.replay.bytes >= this.options.replayBufferBytes;
  }

  /** Bounded replay memory: past the bound, issue a FLUSH ourselves and hold new writes. */
  private maybeFlushForReplayBound(): void {
    if (this.internalFlushPending || !this.replayFull()) return;
    this.internalFlushPending = true;
    this.counters.autoFlushes++;
    const txn = this.makeTxn({ kind: "flush", offset: 0, length: 0 }, null, "flush");
    this.pending.set(txn.txid, txn);
    let at = 0;
    while (at < this.waiting.length && this.waiting[at]!.internal === "replay") at++;
    this.waiting.splice(at, 0, txn); // first after the replays, before anything else
  }

  private send(txn: Txn): void {
    txn.session = this.sessionSeq;
    if (txn.kind === "flush" && txn.flushMark < 0) txn.flushMark = this.replay.mark();
    txn.sentOn = this.connection;
    txn.nextResendAt = this.now + this.jitter(txn.resendIntervalMs);
    this.onWire++;
    if (txn.sends > 0) this.counters.resends++;
    txn.sends++;
    this.transmit(txn.frame);
  }

  private jitter(ms: number): number {
    return Math.round(ms * (0.8 + 0.4 * this.prng.float()));
  }

  private complete(txn: Txn, status: number, data: Uint8Array | null): void {
    this.pending.delete(txn.txid);
    if (txn.sentOn === this.connection && this.state === "ready") this.onWire--;
    if (status === 0) this.recordDurability(txn);
    if (txn.internal === "replay") {
      this.replaysPending--;
      if (status !== 0) this.replayFailed(txn, status);
      else if (this.replaysPending === 0 && !this.replayAgain) this.replayStreak = 0;
    }
    if (txn.internal === "flush") {
      this.internalFlushPending = false;
      if (status !== 0) this.log.warn(`automatic flush failed: ${errnoMessage(status)}`);
    }
    txn.done?.(status, data);
    this.pump();
  }

  /**
   * A replay did not land (disk error, or its budget ran out): the export may now lack an
   * acknowledged write. Never carry on past it (a later FLUSH would release its log entry and
   * lose the data for good): drop the connection and replay the whole log again on the next
   * one (found by the simulator: an EIO on a replayed write, then a FLUSH, lost the write).
   */
  private replayFailed(txn: Txn, status: number): void {
    this.counters.replayFailures++;
    this.replayAgain = true;
    this.reconnectAttempt = Math.max(this.reconnectAttempt, Math.min(++this.replayStreak, 30));
    const why = `replay of ${txn.kind} ${txn.length} B at ${txn.offset} failed: ${errnoMessage(status)}; replaying again`;
    if (this.state === "ready") this.dropConnection(why);
    else this.log.warn(why);
  }

  /**
   * Keep non-durable acknowledged mutations for replay; a successful FLUSH releases them.
   * A FUA mutation is durable and is not kept, but it supersedes older entries for its range:
   * replaying those after a restart would bury it under older data (found by the simulator:
   * a FUA write after an unflushed write to the same block came back as the older data).
   */
  private recordDurability(txn: Txn): void {
    if (txn.internal === "replay") return; // its entry is still in the log
    if (txn.fua && txn.kind !== "read" && txn.kind !== "flush") {
      this.replay.supersede(txn.offset, txn.length);
      return;
    }
    switch (txn.kind) {
      case "write":
        this.replay.append("write", txn.offset, txn.length, txn.frame.subarray(HEADER_SIZE, HEADER_SIZE + txn.length), false);
        break;
      case "trim":
      case "zero":
        this.replay.append(txn.kind, txn.offset, txn.length, null, txn.noHole);
        break;
      case "flush":
        this.replay.release(txn.flushMark);
        break;
      case "read":
        break;
    }
  }

  private tickReady(now: number): void {
    const silentMs = now - this.lastReceiveAt;
    if (silentMs >= this.options.keepaliveTimeoutMs) {
      this.counters.keepaliveFailures++;
      this.dropConnection(`no data from export for ${Math.round(silentMs)} ms (keepalive timeout)`);
      return;
    }
    if (silentMs >= this.options.keepaliveIntervalMs && now - this.lastPingAt >= this.options.keepaliveIntervalMs) {
      this.lastPingAt = now;
      this.counters.pings++;
      this.transmit(encodeFrame({ opcode: Op.PING, txid: 0, offset: this.txidFloor() }));
    }
    // TCP delivers in order and the export answers every frame it reads, so on a connection
    // that is still delivering replies an unanswered request is queued behind others, not
    // lost: resending it on the same stream only lengthens that queue (on a slow link every
    // request would be sent several times and goodput collapses). Resend only once the
    // connection has gone quiet for a resend interval; until then push the timer on.
    const progressing = silentMs < this.options.resendIntervalMs;
    for (const txn of this.pending.values()) {
      if (txn.sentOn !== this.connection || now < txn.nextResendAt) continue;
      if (progressing) {
        txn.nextResendAt = now + this.jitter(txn.resendIntervalMs);
        continue;
      }
      // Replays have no caller to fail and no budget: only the keepalive ends their connection.
      if (txn.resends >= this.options.maxResends && txn.internal !== "replay") {
        this.fail1(txn, Errno.ETIMEDOUT, `no reply after ${txn.resends} resends`);
        continue;
      }
      txn.resends++;
      txn.sends++;
      this.counters.resends++;
      txn.resendIntervalMs = Math.min(txn.resendIntervalMs * 2, this.options.resendIntervalMaxMs);
      txn.nextResendAt = now + this.jitter(txn.resendIntervalMs);
      this.transmit(txn.frame);
    }
  }

  private expireDeadlines(now: number): void {
    for (const txn of this.pending.values()) {
      if (now >= txn.deadlineAt && txn.internal !== "replay") this.fail1(txn, Errno.ETIMEDOUT, `deadline of ${this.options.deadlineMs} ms passed`);
    }
  }

  /** Before the first successful handshake, give up once the deadline passes. */
  private checkFirstContact(now: number): void {
    if (this.everReady || this.state === "failed" || this.state === "closed") return;
    if (now - this.startedAt >= this.options.deadlineMs) {
      this.fail(`cannot reach the export: ${this.lastError || "no answer"}`, Errno.ETIMEDOUT);
    }
  }

  private fail1(txn: Txn, errno: number, why: string): void {
    this.counters.timeouts++;
    this.log.warn(`txid ${txn.txid} (${txn.kind} ${txn.length} B at ${txn.offset}) failed: ${why}`);
    if (txn.internal === "flush") this.internalFlushPending = false;
    this.complete(txn, errno, null);
  }

  private fail(message: string, errno: number): void {
    this.fatal = message;
    const open = this.connection !== 0 && (this.state === "handshaking" || this.state === "ready");
    const id = this.connection++;
    if (open) this.io.close(id);
    this.setState("failed", message);
    this.failAll(errno);
  }

  private failAll(errno: number): void {
    const txns = [...this.pending.values()];
    this.pending.clear();
    this.waiting = [];
    this.onWire = 0;
    this.replaysPending = 0;
    for (const txn of txns) txn.done?.(errno, null);
  }

  /**
   * Lowest txid the export may still be asked about in this session: the lowest outstanding
   * txid sent in the current session (the export may forget results below it). Requests not
   * sent in this session yet (after a new session began) are new to the export whatever their
   * txid, so they do not hold the floor back.
   */
  private txidFloor(): number {
    // Map iteration is insertion order, and txids are inserted in increasing order.
    for (const txn of this.pending.values()) if (txn.session === this.sessionSeq) return txn.txid;
    return this.nextTxid;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Reserved: permission bits exposed for callers checking a WELCOME. */
export function canWrite(welcome: Welcome): boolean {
  return (welcome.permissions & Perm.WRITE) !== 0;
}
