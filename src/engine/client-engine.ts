/**
 * @module engine/client-engine — the DST requester as a sans-I/O state machine.
 *
 * It owns transaction ids, the request queues, resend on timeout, reconnect with backoff,
 * keepalive and durable resume (replay of acknowledged-but-unflushed writes after the export
 * restarted). It has no sockets and no timers: the driver (client/dst-client.ts in
 * production, test/sim in simulation) feeds it events — connected, receive, disconnected,
 * tick(now) — and performs the effects it asks for through EngineIO. Every event carries the
 * connection id it belongs to; events from an older connection are ignored, which fences
 * stale bytes on the client side.
 *
 * Its parts: engine/txn.ts (a transaction and its wire form), engine/session.ts (handshake, session, resumption),
 * engine/outbox.ts (how frames leave), engine/durability.ts (replay log and replay rounds), engine/read-into.ts
 * (READ replies into the caller's buffer), engine/io.ts (the driver's side). This file: lifecycle, queues, timers.
 *
 * Queues (libnbd's to-issue → on the wire → done): `submit` refuses with "busy" once
 * `queueDepth` requests are outstanding or `queueBytes` of write data wait to be sent, and
 * `onRoom` tells the caller when to try again — memory never grows with what a caller submits.
 *
 * Lifecycle (transitions in engine/lifecycle.ts `TRANSITIONS`, checked by setState):
 *   idle ──connect──▶ connecting ──connected──▶ handshaking ──WELCOME──▶ ready
 *     ▲                    │                         │                     │
 *     └──── backoff ◀──────┴───── failure ◀──────────┴──── dead/closed ◀───┘
 *   any ──refused on first contact / shutdown──▶ failed | closed (terminal)
 */
import { assert } from "../lib/assert.ts";
import { giveBuffer, takeBuffer } from "../lib/buffer-pool.ts";
import { Errno, errnoMessage } from "../lib/errno.ts";
import { Prng } from "../lib/prng.ts";
import { verifyDigestHash, type ChecksumName } from "../crypto/checksum.ts";
import { Flag, HANDSHAKE_PAYLOAD_MAX, Op, Perm, REPLY_BIT } from "../wire/dst/constants.ts";
import { FrameDecoder } from "../wire/dst/decoder.ts";
import type { Welcome } from "../wire/dst/handshake.ts";
import { encodeFrame, type Header } from "../wire/dst/header.ts";
import { newCounters, type EngineCounters } from "./counters.ts";
import { Durability } from "./durability.ts";
import { fitTxn, piecesOf } from "./fit.ts";
import { TRANSITIONS, type EngineState } from "./lifecycle.ts";
import { leaseFor } from "./lease.ts";
import type { EngineOptions } from "./options.ts";
import { Outbox } from "./outbox.ts";
import type { EngineIO, EngineLog } from "./io.ts";
import { Scattered, scatterTarget } from "./read-into.ts";
import { replayData, replayPieces } from "./replay-log.ts";
import { ClientSession, lateWelcome } from "./session.ts";
import { makeTxn, MUTATING, opcodeOf, wireBytes, type Completion, type OpKind, type Request, type Txn } from "./txn.ts";

export type { Completion, OpKind, Request } from "./txn.ts";
export type { EngineIO, EngineLog } from "./io.ts";
export type { EngineState } from "./lifecycle.ts";

/** Returned by submit() when the queues are full: nothing was queued, `done` was not called. */
export const BUSY = -1;

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
  /** Called when submit() would accept again after it answered BUSY. */
  onRoom: (() => void) | null = null;
  /** Called when a new session gave an outstanding request a new txid (simulator bookkeeping). */
  onRenumber: ((oldTxid: number, newTxid: number) => void) | null = null;
  /** Called when the export announced a new size (an online resize); `welcome.size` is updated. */
  onResize: ((size: number) => void) | null = null;

  private readonly options: EngineOptions;
  private readonly io: EngineIO;
  private readonly log: EngineLog;
  private readonly prng: Prng;
  private readonly session: ClientSession;
  private readonly durability: Durability;
  private readonly outbox: Outbox;
  /** Every outstanding txn, by txid (insertion order = txid order). */
  private readonly pending = new Map<number, Txn>();
  /** Txns to send on the current connection, in order. */
  private waiting: Txn[] = [];
  /** Write bytes in txns not yet on the wire (bounded by queueBytes). */
  private waitingBytes = 0;
  private onWire = 0;
  private nextTxid = 1;
  private connection = 0;
  private decoder: FrameDecoder;
  private now = 0;
  private stateSince = 0;
  private lastReceiveAt = 0;
  private lastPingAt = 0;
  private reconnectAt = 0;
  private reconnectAttempt = 0;
  private everReady = false;
  private startedAt = 0;
  private window = 1;
  private maxPayload: number;
  private lastError = "";
  /** Nesting of event handlers; the outermost one flushes the outbox. */
  private depth = 0;
  private flushScheduled = false;
  private wasBusy = false;
  /** The txid floor the export last heard from us (HELLO, PING): it forgets results below it. */
  private announcedFloor = 0;
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
    this.session = new ClientSession(options);
    this.durability = new Durability(options.replayBufferBytes);
    this.outbox = new Outbox(this.sendOn(this.connection));
    this.decoder = this.newDecoder();
  }

  /** Most bytes one READ or WRITE may carry on this connection. */
  get payloadLimit(): number {
    return this.maxPayload;
  }

  /** Acknowledged writes still held for replay, in bytes. */
  get replayBytes(): number {
    return this.durability.log.bytes;
  }

  /** Acknowledged mutations still held for replay (entries, not bytes). */
  get replayEntries(): number {
    return this.durability.log.size;
  }

  /** Requests submitted and not yet completed. */
  get outstanding(): number {
    return this.pending.size;
  }

  /** Requests one submit-burst may still add before submit() says BUSY. */
  get room(): number {
    return Math.max(0, this.options.queueDepth - this.pending.size);
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
    this.decoder = this.newDecoder();
    this.lastReceiveAt = this.now;
    // Bound to this connection: a record sealed by a crypto worker after a reconnect must go
    // to the socket it was sealed for (where it is dropped), never to the next one.
    this.outbox.reset(this.sendOn(connection), null);
    this.announcedFloor = this.txidFloor();
    this.io.send(connection, this.session.helloFrame(this.announcedFloor, connection));
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

  /** Bytes from the export: a chunk, or how many landed in receiveTarget()'s buffer (read just now). */
  receive(connection: number, chunk: Uint8Array | number): void {
    if (connection !== this.connection) return;
    if (this.state !== "handshaking" && this.state !== "ready") return;
    this.lastReceiveAt = this.now;
    this.event(() => {
      if (typeof chunk === "number") return this.decode(connection, this.decoder.receivedDirect(chunk, this.onFrame));
      const records = this.session.channel?.records;
      if (records == null) return this.decode(connection, this.decoder.push(chunk, this.onFrame));
      const plaintexts = records.opener.push(chunk);
      if (typeof plaintexts === "string") return this.dropConnection(`from export: ${plaintexts}`);
      for (const plain of plaintexts) if (connection === this.connection) this.decode(connection, this.decoder.push(plain, this.onFrame));
    });
  }

  /** Where the rest of a READ reply's data may be received, straight into the caller's buffer (engine/read-into.ts); null: chunks. */
  receiveTarget(connection: number): Uint8Array | null {
    const plain = connection === this.connection && this.state === "ready" && this.session.channel?.records == null;
    return plain ? this.decoder.directTarget : null; // a sealed record is opened before it is decoded
  }

  /** Advance time: resends, deadlines, keepalive, reconnect. Call every few tens of ms. */
  tick(now: number): void {
    assert(now >= this.now, "time went backwards");
    this.now = now;
    this.event(() => this.tickState(now));
  }

  /** Stop for good: fail everything outstanding with ESHUTDOWN and close the connection. */
  shutdown(reason = "client shut down"): void {
    if (this.state === "closed" || this.state === "failed") return;
    const open = this.connection !== 0 && this.state !== "idle";
    const id = this.connection++;
    this.outbox.discard();
    if (open) this.io.close(id);
    this.setState("closed", reason);
    this.failAll(Errno.ESHUTDOWN);
  }

  // ---- API ------------------------------------------------------------------------------

  /**
   * Queue a request. Returns its txid; 0 when refused at once because the engine has stopped
   * (`done` was called); BUSY when the queues are full (`done` was not called: try again on
   * `onRoom`). A WRITE's data is copied at submit unless the caller hands it over
   * (`handOver`, e.g. a buffer from DstClient.reserveWrite()); with `recycle` too, the buffer
   * is given back once nothing refers to it any more (engine/lease.ts).
   */
  submit(request: Request, done: Completion): number {
    if (this.state === "failed" || this.state === "closed") {
      done(this.state === "failed" ? Errno.EIO : Errno.ESHUTDOWN, null);
      return 0;
    }
    if (!this.canAccept(request, piecesOf(request.kind, request.length, this.maxPayload))) {
      this.wasBusy = true;
      return BUSY;
    }
    return this.event(() => {
      const txn = this.newTxn(request, this.ownData(request), done, null);
      txn.lease = leaseFor(request, txn.data, this.durability.copies);
      for (const fitted of this.fit(txn)) this.enqueue(fitted);
      this.pump();
      return txn.txid;
    });
  }

  /** Whether `count` more requests like `request` fit now (a split request checks every part first). */
  canAccept(request: Request, count: number): boolean {
    if (this.pending.size === 0) return true;
    const bytes = request.kind === "write" ? request.length : 0;
    return this.pending.size + count <= this.options.queueDepth && this.waitingBytes + bytes <= this.options.queueBytes;
  }

  // ---- internals ------------------------------------------------------------------------

  private newDecoder(): FrameDecoder {
    return new FrameDecoder(HANDSHAKE_PAYLOAD_MAX, { allocate: this.allocateReply });
  }

  /** READ replies spanning chunks go straight into the caller's buffer (engine/read-into.ts), others into pooled buffers. */
  private readonly allocateReply = (size: number, header: Header) => {
    const scatter = scatterTarget(header, this.pending.get(header.txid), this.connection);
    if (scatter !== null) return scatter;
    const bytes = takeBuffer(size);
    return { bytes, owner: bytes };
  };

  private ownData(request: Request): Uint8Array | null {
    if (request.kind === "fetch" || request.kind === "sync") return request.data!.slice();
    if (request.kind !== "write") return null;
    const data = request.data;
    assert(data !== undefined && data.length === request.length, "write data length");
    return request.handOver === true ? data : this.durability.copies.copy(data);
  }

  private newTxn(request: Request, data: Uint8Array | null, done: Completion | null, internal: Txn["internal"]): Txn {
    return makeTxn(this.nextTxid++, request, data, this.checksum, done, internal, {
      now: this.now,
      deadlineMs: this.options.deadlineMs,
      resendIntervalMs: this.options.resendIntervalMs,
    });
  }

  /** `txn` as pending, or its pieces when the live MAX_PAYLOAD is smaller (engine/fit.ts). */
  private fit(txn: Txn): Txn[] {
    const fitted = fitTxn(txn, this.maxPayload, this.options.deadlineMs, (request, data, done) => this.newTxn(request, data, done, null));
    if (fitted[0] !== txn) this.pending.delete(txn.txid);
    for (const t of fitted) this.pending.set(t.txid, t);
    return fitted;
  }

  private enqueue(txn: Txn): void {
    this.waiting.push(txn);
    if (txn.kind === "write") this.waitingBytes += txn.length;
  }

  private dequeued(txn: Txn): void {
    if (txn.kind === "write") this.waitingBytes -= txn.length;
  }

  private sendOn(connection: number): (bytes: Uint8Array, release?: () => void) => void {
    return (bytes, release) => this.io.send(connection, bytes, release);
  }

  /** Put one txn's frame on the current connection (through the outbox). */
  private transmit(txn: Txn): void {
    this.outbox.add(txn.header, txn.data, txn.digest, txn.lease);
  }

  /** Run an event handler; the outermost one sends what the event produced. */
  private event<T>(handler: () => T): T {
    this.depth++;
    try {
      return handler();
    } finally {
      if (--this.depth === 0) this.afterEvent();
    }
  }

  private afterEvent(): void {
    if (this.outbox.sealer?.rekeyDue && this.state === "ready") this.dropConnection("the session key has protected half of what it may (crypto/record.ts rekeyDue); reconnecting for new keys");
    if (this.outbox.pending) this.scheduleFlush();
    if (this.wasBusy && this.pending.size < this.options.queueDepth && this.waitingBytes < this.options.queueBytes) {
      this.wasBusy = false;
      this.onRoom?.();
    }
  }

  private scheduleFlush(): void {
    if (this.io.defer === undefined) return this.outbox.flush();
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.io.defer(() => { // the outbox is emptied when a connection is lost: it holds the current one's
      this.flushScheduled = false;
      this.outbox.flush();
    });
  }

  private decode(connection: number, problem: string | null): void {
    // Another DST version (docs/protocol.md §6.4 step 4) is final before the first session.
    if (problem?.startsWith("unsupported version") && this.state === "handshaking" && !this.everReady) return this.fail(`the export answered in another protocol version: ${problem}`, Errno.EPROTONOSUPPORT);
    if (problem !== null && connection === this.connection && (this.state === "ready" || this.state === "handshaking")) {
      this.dropConnection(`protocol error from export: ${problem}`);
    }
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

  private setState(state: EngineState, detail: string): void {
    if (this.state === state) return;
    assert(TRANSITIONS[this.state].includes(state), `engine state ${this.state} → ${state} is not a transition`);
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
    // connectionLost moves to a new id first: the old one's (maybe synchronous) close is ignored.
    const id = this.connection;
    this.connectionLost(reason);
    this.io.close(id);
  }

  private connectionLost(reason: string): void {
    this.lastError = reason;
    // Frames collected for the old connection die with it (they are resent from the txns).
    this.outbox.discard();
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

  private readonly onFrame = (header: Header, payload: Uint8Array, _frame: Uint8Array, gathered: unknown): void => {
    try {
      this.handleFrame(header, payload, gathered);
    } finally {
      // A pooled gather buffer is free once the frame was handled (READ data was copied out,
      // or handed to a caller without `into`, which then owns the buffer: see complete()).
      if (gathered !== null && !this.handedOut && !(gathered instanceof Scattered)) giveBuffer(gathered as Uint8Array);
      this.handedOut = false;
    }
  };

  /** The current frame's payload went to a caller (not copied): its pooled buffer is theirs. */
  private handedOut = false;

  private handleFrame(header: Header, payload: Uint8Array, gathered: unknown): void {
    if (this.state !== "ready" && this.state !== "handshaking") return; // dropped mid-chunk
    if (header.opcode === Op.CHALLENGE) return this.onChallenge(payload);
    if (header.opcode === Op.WELCOME) return this.onWelcome(header, payload);
    if (this.state !== "ready") return this.dropConnection("export sent a request before the handshake finished");
    if (header.opcode === Op.PONG) return;
    if (header.opcode === Op.SIZE_NOTICE) {
      if (this.welcome !== null && header.offset !== this.welcome.size) {
        this.log.info(`export size changed: ${this.welcome.size} → ${header.offset} bytes`);
        this.welcome = { ...this.welcome, size: header.offset };
        this.onResize?.(header.offset);
      }
      return;
    }
    if ((header.opcode & REPLY_BIT) === 0) return this.dropConnection("export sent a request frame");
    const txn = this.pending.get(header.txid);
    if (txn === undefined || txn.sentOn !== this.connection) {
      this.counters.staleReplies++;
      return;
    }
    if (header.opcode !== (opcodeOf[txn.kind] | REPLY_BIT)) {
      return this.dropConnection(`reply opcode 0x${header.opcode.toString(16)} does not match txid ${txn.txid}`);
    }
    if (header.status === Errno.ESHUTDOWN) return this.dropConnection("export is shutting down");
    if (header.status === Errno.EBADMSG) return this.retryCorrupt(txn, "the export found the write's data checksum wrong");
    let data: Uint8Array | null = null;
    let hash: bigint | null = null;
    if (txn.kind === "fetch" || txn.kind === "sync") data = payload.slice(); // the records (copied data), or the reason of a failure
    if (txn.kind === "read" && header.status === 0) {
      // The range asked for, or none: a short one would leave the caller's buffer half stale.
      if (header.offset !== txn.offset || header.length !== txn.length) return this.dropConnection(`READ reply for txid ${txn.txid} is ${header.offset}/${header.length}, not ${txn.offset}/${txn.length}`);
      data = payload.subarray(0, header.length);
      const scattered = gathered instanceof Scattered; // the data is in txn.into already
      const digest = scattered ? gathered.digest : payload.subarray(header.length);
      if ((header.flags & Flag.DIGEST) !== 0) {
        // An xxh3 hash that verified the data goes to the caller with it, who may send it on.
        const verified = verifyDigestHash(this.checksum, data, digest);
        if (verified === false) return this.retryCorrupt(txn, "READ reply failed its data checksum");
        if (typeof verified === "bigint") hash = verified;
      } else if (this.checksum !== "none" && header.length > 0) {
        // Never used unchecked: with a checksum in force every READ reply carries its digest.
        return this.retryCorrupt(txn, "READ reply came without its data checksum");
      }
      if (txn.into !== null) {
        if (!scattered) txn.into.set(data);
        data = txn.into;
      } else this.handedOut = true;
    }
    this.complete(txn, header.status, data, header.flags, hash ?? undefined);
  }

  private onChallenge(payload: Uint8Array): void {
    if (this.state !== "handshaking") return this.dropConnection("unexpected CHALLENGE from export");
    const step = this.session.onChallenge(payload, this.everReady);
    if ("fail" in step) return this.fail(step.fail, Errno.EACCES);
    if ("drop" in step) return this.dropConnection(step.drop);
    this.io.send(this.connection, step.auth);
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
    this.transmit(txn);
  }

  private onWelcome(header: Header, payload: Uint8Array): void {
    // Only the handshake's WELCOME may touch the session (id, epoch, token).
    if (this.state !== "handshaking") return this.dropConnection(lateWelcome(header, payload));
    const outcome = this.session.onWelcome(header, payload, this.everReady);
    if (outcome.kind === "fail") return this.fail(outcome.message, outcome.errno);
    if (outcome.kind === "drop") {
      if (outcome.message.includes("starting a new session")) this.log.warn(outcome.message);
      return this.dropConnection(outcome.message);
    }
    const welcome = outcome.welcome;
    const previousSize = this.welcome?.size ?? null;
    this.welcome = welcome;
    // A reconnect may find the export resized while we were away (no SIZE_NOTICE then).
    if (previousSize !== null && previousSize !== welcome.size) {
      this.log.info(`export size changed: ${previousSize} → ${welcome.size} bytes`);
      this.onResize?.(welcome.size);
    }
    this.maxPayload = Math.min(this.options.maxPayload, welcome.maxPayload);
    this.checksum = outcome.checksum;
    this.decoder.maxPayload = this.maxPayload;
    this.window = Math.max(1, Math.min(this.options.inflight, welcome.maxInflight));
    this.reconnectAttempt = 0;
    if (this.everReady) this.counters.reconnects++;
    this.everReady = true;
    this.lastReceiveAt = this.now;
    this.lastPingAt = this.now;
    const sealer = (this.outbox.sealer = this.session.channel?.records?.sealer ?? null);
    const connection = this.connection; // records lost in the crypto pool leave a gap: drop it
    if (sealer !== null) sealer.onLaneFailure = (why) => this.event(() => connection === this.connection && this.dropConnection(`crypto worker failed: ${why}`));
    const restarted = outcome.restarted;
    this.requeue(restarted);
    // A new session knows none of our txids: give everything we will send in it fresh ones,
    // in send order (replays first). The export's exactly-once table then only ever holds
    // txids at or above the floor we announce, and the floor can pass old requests.
    if (outcome.newSession) this.renumber();
    const held = this.durability.log.size;
    if (restarted) this.log.warn(`export restarted (new epoch): replaying ${held} acknowledged writes not yet flushed`);
    this.setState("ready", restarted ? `export restarted (new epoch); replaying ${held} unflushed writes` : "ready");
    this.onReady?.();
    this.pump();
  }

  /**
   * After a (re)connect: replays first (if the export restarted, or an earlier replay failed),
   * then everything pending in id order. Replaying the whole log again is safe only because of
   * the barrier in pump(): while replays are pending nothing else reaches the export, and the
   * replays are the newest state of every range the log touches, cut so that none overlap
   * (newestPieces: replays in flight together may land in any order).
   */
  private requeue(restarted: boolean): void {
    const durability = this.durability;
    for (const txn of [...this.pending.values()]) this.fit(txn); // the export may grant a smaller MAX_PAYLOAD now
    const pendingTxns = [...this.pending.values()].filter((t) => t.internal !== "replay");
    // An automatic flush goes first: writes held by the replay bound wait for it, so behind
    // them it would never be sent (found by the simulator: a reconnect re-sorted it by txid
    // and every write stalled until the flush's deadline).
    const rank = (t: Txn) => (t.internal === "flush" ? 0 : 1);
    pendingTxns.sort((a, b) => rank(a) - rank(b) || a.txid - b.txid);
    const replays: Txn[] = [];
    if (restarted || durability.replayAgain) {
      durability.replayAgain = false;
      for (const txn of this.pending.values()) if (txn.internal === "replay") this.pending.delete(txn.txid);
      for (const entry of replayPieces(durability.entries(), this.welcome!, this.maxPayload, this.log)) {
        // A copy (replayData): the log's slabs may be recycled while the replay is on the wire.
        const txn = this.newTxn({ kind: entry.kind, offset: entry.offset, length: entry.length, noHole: entry.noHole }, replayData(entry), null, "replay");
        this.pending.set(txn.txid, txn);
        replays.push(txn);
      }
      this.counters.replays += replays.length;
    } else {
      for (const txn of this.pending.values()) if (txn.internal === "replay") replays.push(txn);
      replays.sort((a, b) => a.txid - b.txid);
    }
    durability.replaysPending = replays.length;
    this.waiting = [...replays, ...pendingTxns];
    this.waitingBytes = 0;
    for (const txn of this.waiting) if (txn.kind === "write") this.waitingBytes += txn.length;
  }

  private pump(): void {
    if (this.state !== "ready") return;
    this.maybeFlushForReplayBound();
    let floor: number | undefined;
    while (this.onWire < this.window && this.waiting.length > 0) {
      const txn = this.waiting[0]!;
      if (!this.pending.has(txn.txid)) {
        this.waiting.shift(); // failed by deadline while waiting
        this.dequeued(txn);
        continue;
      }
      // Barrier: after an export restart, nothing but replays until every replay is acknowledged
      // (a FLUSH sent earlier would release log entries whose replay has not landed yet).
      if (this.durability.replaysPending > 0 && txn.internal !== "replay") break;
      // The export remembers results of mutations (only they count, §6.5) txidSpan txids beyond
      // the floor it last heard: tell it a newer floor when ours moved (a PING), else wait.
      if (this.session.txidSpan > 0 && MUTATING[txn.kind] && txn.txid - this.announcedFloor >= this.session.txidSpan) {
        floor ??= this.txidFloor();
        if (floor > this.announcedFloor) this.announceFloor(floor);
        if (txn.txid - this.announcedFloor >= this.session.txidSpan) break;
      }
      if (txn.kind === "write" && txn.internal === null && this.durability.full) break;
      floor = Math.min(floor ?? txn.txid, txn.txid);
      this.waiting.shift();
      this.dequeued(txn);
      this.send(txn);
    }
    this.counters.inflight = this.onWire;
  }

  private announceFloor(floor: number): void {
    this.announcedFloor = floor;
    this.counters.pings++;
    this.outbox.add(encodeFrame({ opcode: Op.PING, txid: 0, offset: floor }));
  }

  /** Replay bound: FLUSH from half of it, writes held at it (engine/durability.ts flushDue). */
  private maybeFlushForReplayBound(): void {
    const durability = this.durability;
    if (durability.autoFlushPending || !durability.flushDue) return;
    durability.autoFlushPending = true;
    this.counters.autoFlushes++;
    const txn = this.newTxn({ kind: "flush", offset: 0, length: 0 }, null, null, "flush");
    this.pending.set(txn.txid, txn);
    let at = 0;
    while (at < this.waiting.length && this.waiting[at]!.internal === "replay") at++;
    this.waiting.splice(at, 0, txn); // first after the replays, before anything else
  }

  private send(txn: Txn): void {
    if (txn.kind === "flush" && txn.flushMark < 0) txn.flushMark = this.durability.log.mark();
    txn.sentOn = this.connection;
    txn.nextResendAt = this.now + this.jitter(txn.resendIntervalMs);
    this.onWire++;
    if (txn.sends > 0) this.counters.resends++;
    txn.sends++;
    this.transmit(txn);
  }

  private jitter(ms: number): number {
    return Math.round(ms * (0.8 + 0.4 * this.prng.float()));
  }

  private complete(txn: Txn, status: number, data: Uint8Array | null, flags = 0, xxh3?: bigint): void {
    const durability = this.durability;
    this.pending.delete(txn.txid);
    if (txn.into !== null) this.decoder.release(txn.into); // a reply half read must not land later
    if (txn.sentOn === this.connection && this.state === "ready") this.onWire--;
    durability.settle(txn, status);
    if (txn.internal === "replay") {
      durability.replaysPending--;
      if (status !== 0) this.replayFailed(txn, status);
      else if (durability.replaysPending === 0 && !durability.replayAgain) durability.replayStreak = 0;
    }
    if (txn.internal === "flush") {
      durability.autoFlushPending = false;
      if (status !== 0) this.log.warn(`automatic flush failed: ${errnoMessage(status)}`);
    }
    txn.done?.(status, data, flags, xxh3);
    this.letGo(txn);
    this.pump();
  }

  /** The txn is finished: its hold on a handed-over buffer ends (the replay log may keep one). */
  private letGo(txn: Txn): void {
    const lease = txn.lease;
    txn.lease = null;
    lease?.drop();
  }

  /**
   * A replay did not land (disk error, or its budget ran out): the export may now lack an
   * acknowledged write. Never carry on past it (a later FLUSH would release its log entry and
   * lose the data for good): drop the connection and replay the whole log again on the next
   * one (found by the simulator: an EIO on a replayed write, then a FLUSH, lost the write).
   */
  private replayFailed(txn: Txn, status: number): void {
    const durability = this.durability;
    this.counters.replayFailures++;
    durability.replayAgain = true;
    this.reconnectAttempt = Math.max(this.reconnectAttempt, Math.min(++durability.replayStreak, 30));
    const why = `replay of ${txn.kind} ${txn.length} B at ${txn.offset} failed: ${errnoMessage(status)}; replaying again`;
    if (this.state === "ready") this.dropConnection(why);
    else this.log.warn(why);
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
      this.announceFloor(this.txidFloor());
    }
    // TCP delivers in order and the export answers every frame it reads, so on a connection
    // that is still delivering replies an unanswered request is queued behind others, not
    // lost: resending it on the same stream only lengthens that queue (on a slow link goodput
    // collapses). Resend only once the connection has been quiet for a resend interval.
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
      this.transmit(txn);
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
    if (txn.internal === "flush") this.durability.autoFlushPending = false;
    this.complete(txn, errno, null);
  }

  private fail(message: string, errno: number): void {
    this.fatal = message;
    const open = this.connection !== 0 && (this.state === "handshaking" || this.state === "ready");
    const id = this.connection++;
    this.outbox.discard();
    if (open) this.io.close(id);
    this.setState("failed", message);
    this.failAll(errno);
  }

  private failAll(errno: number): void {
    const txns = [...this.pending.values()];
    this.pending.clear();
    this.waiting = [];
    this.waitingBytes = 0;
    this.onWire = 0;
    this.durability.replaysPending = 0;
    for (const txn of txns) {
      txn.done?.(errno, null);
      this.letGo(txn);
    }
  }

  /**
   * Lowest txid the export may still be asked about: the lowest outstanding txid (the export
   * may forget results below it). Every outstanding txn counts, sent or not: one not sent yet
   * will be, under its txid, and must not land below a floor already announced.
   */
  private txidFloor(): number {
    // Map iteration is insertion order, and txids are inserted in increasing order.
    for (const txn of this.pending.values()) return txn.txid;
    return this.nextTxid;
  }

  /** Fresh txids for every waiting txn, in send order (see onWelcome); observers are told. */
  private renumber(): void {
    const order = [...this.waiting, ...[...this.pending.values()].filter((t) => !this.waiting.includes(t))];
    this.pending.clear();
    for (const txn of order) {
      const old = txn.txid;
      txn.txid = this.nextTxid++;
      // A fresh header buffer: the old one may still sit in a closed connection's queue.
      const header = txn.header.slice();
      new DataView(header.buffer).setBigUint64(8, BigInt(txn.txid));
      txn.header = header;
      this.pending.set(txn.txid, txn);
      this.onRenumber?.(old, txn.txid);
    }
  }
}

/** Whether a WELCOME grants writing. */
export function canWrite(welcome: Welcome): boolean {
  return (welcome.permissions & Perm.WRITE) !== 0;
}

export { wireBytes };
