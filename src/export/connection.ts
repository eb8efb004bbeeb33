/**
 * @module export/connection — one DST connection of the export as a ConnectionHandler: socket
 * bytes in (plain frames, or sealed records after the authenticated handshake), the
 * handshake (export/handshake.ts), then requests (export/requests.ts), replies out
 * (export/replies.ts). No sockets and no timers: the transport (or the simulator) feeds
 * bytes and drains, the server's injected `defer` schedules continuations.
 *
 * Backpressure instead of growth: bytes are consumed only as far as there is room to handle
 * them. A frame that cannot be handled now (no reply room, no receive memory, MAX_INFLIGHT
 * requests at the port, or this connection's turn used up) is held, the socket is paused and
 * the unread rest stays where it is until completions, drains or the budget free room. Each
 * turn handles at most `turnRequests` requests, so one client's 100,000 pipelined requests
 * cannot stall the others.
 *
 * Must not: throw out of a ConnectionHandler method on peer input, apply a frame of a fenced
 * connection, or hold memory that is not counted in the export's budget (beyond one socket
 * chunk and one decoded frame per connection).
 */
import { matchAllow, matchReplica } from "../lib/acl.ts";
import { Errno } from "../lib/errno.ts";
import { giveBuffer, takeBuffer } from "../lib/buffer-pool.ts";
import { quotePeer } from "../lib/peer-text.ts";
import { digestSize, type ChecksumName } from "../crypto/checksum.ts";
import { RECORD_AUTH_FAILED, RECORD_HEADER_SIZE, type LateRecords, type RecordOpener } from "../crypto/record.ts";
import { HANDSHAKE_PAYLOAD_MAX, HEADER_SIZE, Op, REPLY_BIT, opcodeName } from "../wire/dst/constants.ts";
import { FrameDecoder } from "../wire/dst/decoder.ts";
import { encodeRefusal } from "../wire/dst/handshake.ts";
import type { Header } from "../wire/dst/header.ts";
import type { StoragePort } from "../storage/port.ts";
import type { GuardHooks, GuardedHandler } from "../transport/guard.ts";
import { describePeer, type Peer, type Sink } from "../transport/types.ts";
import { ExportHandshake, type Admitted } from "./handshake.ts";
import { ReplyWriter } from "./replies.ts";
import { RequestPipeline, type Held } from "./requests.ts";
import type { FetchHost, LogSource } from "./fetch.ts";
import type { DstServer } from "./server.ts";
import type { Session, SessionConnection, SessionTable } from "./sessions.ts";

/**
 * Receive memory frames or records were gathered into: counted in the budgets until its last
 * user lets go (refs), back to the pool once every port holding it (BufferHold, a handed-over
 * WRITE payload: export/requests.ts) dropped it too.
 */
class ReceiveBuffer implements Held {
  refs = 1;
  private holds = 0;

  constructor(
    private readonly connection: DstConnection,
    readonly bytes: Uint8Array,
    readonly size: number,
    /** Where the bytes go back: the process pool, or (an opened record) its crypto pool slot. */
    private readonly free: (bytes: Uint8Array) => void = giveBuffer,
  ) {}

  release(): void {
    if (--this.refs > 0) return;
    this.connection.receiveFreed(this.size);
    if (this.holds === 0) this.free(this.bytes);
  }

  hold(): void {
    this.holds++;
  }

  drop(): void {
    if (--this.holds === 0 && this.refs === 0) this.free(this.bytes);
  }
}

interface HeldFrame {
  header: Header;
  payload: Uint8Array;
  frame: Uint8Array;
  owner: ReceiveBuffer | null;
}

interface Plaintext {
  bytes: Uint8Array;
  owner: ReceiveBuffer | null;
}

/** Request warnings logged per connection per tick (about a second); the rest are summarised. */
const WARNINGS_PER_TICK = 10;

const requestOpcodes = new Set<number>([Op.READ, Op.WRITE, Op.FLUSH, Op.TRIM, Op.WRITE_ZEROES, Op.FETCH, Op.SYNC]);

export class DstConnection implements GuardedHandler, SessionConnection, FetchHost {
  private state: "hello" | "auth" | "ready" | "closed" = "hello";
  readonly name: string;
  readonly replies: ReplyWriter;
  private readonly handshake: ExportHandshake;
  private readonly decoder: FrameDecoder;
  private opener: RecordOpener | null = null;
  private requests: RequestPipeline | null = null;
  private admitted: Admitted | null = null;
  // Set at admission (RequestHost):
  port!: StoragePort;
  session!: Session;
  readable = false;
  writable = false;
  replica = false;
  /** The export's log now (a replica's role may change while clients stay connected). */
  get logSource(): LogSource | null {
    return this.admitted?.exp.log ?? null;
  }
  identity: string | null = null;
  maxPayload = 0;
  checksum: ChecksumName = "none";
  digestBytes = 0;

  /** Socket chunks not consumed yet (the first one possibly in part). */
  private readonly raw: Uint8Array[] = [];
  /** Opened record plaintexts not decoded yet. */
  private readonly plain: Plaintext[] = [];
  /** Owner of the plaintext being decoded (frames inside it are views of it). */
  private current: ReceiveBuffer | null = null;
  /** A decoded frame waiting for room. */
  private held: HeldFrame | null = null;
  /** Why reading stopped: null while it may go on. */
  private blocked: "room" | "turn" | null = null;
  private turnCount = 0;
  /** The allocator refused during the current decode pass (no receive memory now). */
  private refused = false;
  private paused = false;
  private pumping = false;
  private continueScheduled = false;
  private receivedSinceTick = 0;
  /** Receive memory this connection holds (gathered frames and records, payload copies). */
  private receiveHeld = 0;
  /** Request warnings in the current tick window, and the last one not logged. */
  private warnings = 0;
  private lastSuppressed = "";
  constructor(
    private readonly server: DstServer,
    private readonly sink: Sink,
    private readonly peer: Peer,
    /** The connection guard's hooks: admission (ends its handshake deadline), rate-limited refusal logs. */
    private readonly hooks: GuardHooks | null,
  ) {
    this.name = describePeer(peer);
    this.replies = new ReplyWriter(sink, server.replyBudget, server.limits.connectionReplyBytes);
    this.handshake = new ExportHandshake(server, peer, this, this.name);
    this.decoder = new FrameDecoder(HANDSHAKE_PAYLOAD_MAX, { allocate: this.allocate });
  }

  // ---- RequestHost ----------------------------------------------------------------------

  get live(): boolean {
    return this.state === "ready";
  }
  get sessions(): SessionTable {
    return this.server.sessions;
  }
  get noDedupe(): boolean {
    return this.server.unsafe.noDedupe;
  }
  get counters() {
    return this.server.counters;
  }
  get observer() {
    return this.server.observer;
  }
  get exportName(): string {
    return this.admitted?.exp.name ?? "";
  }
  now(): number {
    return this.server.now();
  }

  takeReceive(bytes: number): Held | null {
    const given = this.allocate(bytes);
    return given === null ? null : (given.owner as ReceiveBuffer);
  }

  completed(): void {
    this.scheduleContinue();
  }

  /** Warnings a peer causes (bad ranges, refused resends, disk errors): WARNINGS_PER_TICK a tick, the rest
   * counted into one line at the next tick, so 100,000 bad requests cost a few lines a second. */
  warn(message: string): void {
    if (this.warnings++ < WARNINGS_PER_TICK) this.server.log.warn(`${this.name}: ${message}`);
    else this.lastSuppressed = message;
  }

  // ---- ConnectionHandler ----------------------------------------------------------------

  onData(chunk: Uint8Array): void {
    if (this.state === "closed") return;
    this.receivedSinceTick += chunk.length;
    this.raw.push(chunk);
    this.pump();
  }

  onDrain(): void {
    if (this.state === "closed") return;
    this.replies.drained();
    if (this.blocked !== null) this.pump();
  }

  onClose(reason: string | null): void {
    this.server.connections.delete(this);
    if (this.state === "closed") return this.release();
    const abandoned = this.state === "auth" ? this.handshake.abandonedAuth : null;
    if (abandoned !== null) this.logRefusal(abandoned);
    const admitted = this.state === "ready";
    this.state = "closed";
    this.release();
    const line = `closed${reason ? ` (${reason})` : ""}`;
    if (admitted) this.server.log.info(`${this.name}: ${line}`);
    else this.logRefusal(`${line} before the handshake completed`);
  }

  /** The export `name` changed size: tell the client in band (if it asked for notices). */
  notifySize(name: string, size: number): void {
    const admitted = this.admitted;
    if (this.state !== "ready" || admitted === null || admitted.exp.name !== name || !admitted.resizeNotices) return;
    this.replies.header(Op.SIZE_NOTICE, 0, 0, size, 0);
    this.replies.flush();
  }

  /** See DstServer.revalidate: close or downgrade this session if a reload took its grant. */
  revalidate(): string | null {
    const admitted = this.admitted;
    if (this.state !== "ready" || admitted === null) return null;
    const who = admitted.identity === null ? `anonymous client ${this.name}` : `identity ${quotePeer(admitted.identity)} at ${this.name}`;
    const exportName = quotePeer(admitted.exp.name);
    let why: string | null = null;
    if (admitted.identity !== null && !this.server.keys.has(admitted.identity)) why = `the key of ${who} was removed`;
    const access = why === null ? matchAllow(admitted.exp.allow, this.peer, admitted.identity) : null;
    const replica = why === null && matchReplica(admitted.exp.allow, this.peer, admitted.identity);
    if (why === null && access === null && !replica) why = `${who} is no longer allowed to use export ${exportName}`;
    this.replica = replica;
    if (access === null) this.readable = false;
    if (why !== null) {
      this.server.log.warn(`${this.name}: closing: ${why} (configuration reload)`);
      this.closeAfterReplies();
      return `closed the session of ${who}: ${why}`;
    }
    if (this.writable && (access !== "rw" || admitted.exp.readOnly)) {
      this.writable = false;
      this.server.log.warn(`${this.name}: ${who} now has read-only access to export ${exportName} (configuration reload); writes are refused`);
      return `${who} downgraded to read-only on export ${exportName}`;
    }
    return null;
  }

  /** See DstServer.rebind. A session writable at its handshake writes again once the export is (a demote that failed), if its grant still allows it. */
  rebind(name: string): void {
    const admitted = this.admitted;
    if (this.state !== "ready" || admitted === null || admitted.exp.name !== name) return;
    this.port = admitted.exp.port;
    const keyed = admitted.identity === null || this.server.keys.has(admitted.identity);
    const writable = admitted.writable && keyed && !admitted.exp.readOnly && !this.port.readOnly && matchAllow(admitted.exp.allow, this.peer, admitted.identity) === "rw";
    if (writable === this.writable) return;
    this.writable = writable;
    this.server.log.info(`${this.name}: export ${quotePeer(name)} is ${writable ? "writable again" : "read-only now; writes are refused"} (replica role change)`);
  }

  /** Memory an unfinished frame or record holds, its whole size once allocated (the guard's frame deadlines). */
  partialBytes(): number {
    if (this.state === "closed") return 0;
    return this.decoder.heldBytes + (this.opener?.heldBytes ?? 0);
  }

  /** About once a second: while bytes of one large frame keep arriving on a slow link (its client's PING
   * waits behind it), an unsolicited PONG tells the client the link is alive. */
  progressTick(): void {
    const suppressed = this.warnings - WARNINGS_PER_TICK;
    if (suppressed > 0) this.server.log.warn(`${this.name}: ${suppressed} more request warnings in the last second, the latest: ${this.lastSuppressed}`);
    this.warnings = 0;
    const receiving = this.receivedSinceTick > 0 && this.partialBytes() > 0;
    this.receivedSinceTick = 0;
    if (this.state !== "ready" || !receiving) return;
    this.replies.header(Op.PONG, 0, 0, 0, 0);
    this.replies.flush();
  }

  /** A newer connection of the same session took over: stop at once, read nothing more. */
  fence(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.server.log.info(`${this.name}: superseded by a reconnect of its session; closing`);
    this.release();
    this.sink.destroy();
  }

  // ---- input ------------------------------------------------------------------------------

  /** Consume as much input as there is room for; pause the socket when stopped short. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    this.turnCount = 0;
    this.blocked = null;
    let problem: string | null = null;
    try {
      while (this.state !== "closed" && this.blocked === null && problem === null) {
        if (this.held !== null) {
          const held = this.held;
          this.held = null;
          if (!this.handleFrame(held.header, held.payload, held.frame, held.owner, true)) break;
          continue;
        }
        if (this.plain.length > 0) problem = this.decodePlaintext();
        else if (this.raw.length > 0) problem = this.consumeRaw();
        else break;
      }
    } finally {
      this.pumping = false;
    }
    if (this.state === "closed") return;
    this.replies.flush();
    if (problem !== null) return this.protocolError(problem);
    if (this.replies.sealer?.rekeyDue) return this.rekey();
    const stopped = this.blocked !== null || this.raw.length > 0 || this.plain.length > 0;
    if (stopped && !this.paused) {
      this.paused = true;
      this.sink.pause();
    } else if (!stopped && this.paused) {
      this.paused = false;
      this.sink.resume();
    }
    if (this.blocked === "turn") this.scheduleContinue();
  }

  private readonly continueLater = () => {
    this.continueScheduled = false;
    if (this.state !== "closed") this.pump();
  };

  private scheduleContinue(): void {
    if (this.continueScheduled) return;
    this.continueScheduled = true;
    this.server.defer(this.continueLater);
  }

  /** The first raw chunk: through the record opener on a protected channel, else the decoder. */
  private consumeRaw(): string | null {
    const chunk = this.raw[0]!;
    let stoppedAt: number;
    this.refused = false;
    if (this.opener !== null) {
      const problem = this.opener.feed(chunk, this.onRecord);
      if (problem !== null) return problem;
      stoppedAt = this.opener.stoppedAt;
    } else {
      this.current = null;
      const problem = this.decoder.push(chunk, this.onFrame);
      if (problem !== null) return problem;
      stoppedAt = this.decoder.stoppedAt;
    }
    if (this.state === "closed") return null;
    if (stoppedAt < 0 || stoppedAt >= chunk.length) this.raw.shift();
    else this.raw[0] = chunk.subarray(stoppedAt);
    // No receive memory for the next record or frame: handle what was opened first (it frees
    // memory), and wait only when nothing else can move.
    if (this.refused && this.plain.length === 0 && this.blocked === null) this.waitForRoom();
    return null;
  }

  private readonly onRecord = (plaintext: Uint8Array, owner: unknown): boolean => {
    this.plain.push({ bytes: plaintext, owner: owner as ReceiveBuffer | null });
    return true;
  };

  /** Records opened by the crypto pool (`crypto_threads`), in order, after feed() returned. */
  private readonly lateRecords: LateRecords = {
    deliver: (plaintext, owner) => {
      if (this.state === "closed") return (owner as ReceiveBuffer | null)?.release();
      this.onRecord(plaintext, owner);
      if (!this.pumping) this.pump();
    },
    fail: (reason) => (reason === RECORD_AUTH_FAILED ? this.protocolError(reason) : this.cryptoFailed(reason)),
    adopt: (slot, free) => new ReceiveBuffer(this, slot.subarray(RECORD_HEADER_SIZE), 0, free),
    discard: (owner) => (owner as ReceiveBuffer | null)?.release(),
  };

  /** Our key sealed half of what it may (crypto/record.ts rekeyDue): end after the replies made, so the
   * client reconnects with new keys and resends what is unanswered (the exactly-once table answers). */
  private rekey(): void {
    this.server.log.info(`${this.name}: the session key has protected half of what it may; closing so the client reconnects with new keys`);
    this.closeAfterReplies();
  }

  /** Read nothing more; end the socket once the replies made so far have gone. */
  private closeAfterReplies(): void {
    this.state = "closed";
    this.release();
    this.replies.afterReplies(() => this.sink.end());
  }

  /** A crypto worker died with records of this connection: its stream has a gap, close it. */
  private cryptoFailed(reason: string): void {
    if (this.state === "closed") return;
    this.server.log.warn(`${this.name}: ${reason}; closing the connection`);
    this.state = "closed";
    this.release();
    this.sink.destroy();
  }

  private decodePlaintext(): string | null {
    const entry = this.plain[0]!;
    this.current = entry.owner;
    this.refused = false;
    const problem = this.decoder.push(entry.bytes, this.onFrame);
    this.current = null;
    if (problem !== null) return problem;
    if (this.state === "closed") return null;
    if (this.refused && this.blocked === null) this.waitForRoom();
    const stoppedAt = this.decoder.stoppedAt;
    if (stoppedAt >= 0 && stoppedAt < entry.bytes.length) {
      entry.bytes = entry.bytes.subarray(stoppedAt);
      return null;
    }
    this.plain.shift();
    entry.owner?.release();
    return null;
  }

  private readonly onFrame = (header: Header, payload: Uint8Array, frame: Uint8Array, gathered: unknown): boolean => {
    const owner = (gathered as ReceiveBuffer | null) ?? this.current;
    // A frame gathered by the decoder comes with its own reference; a view of a plaintext
    // takes one so the plaintext outlives the decoder's pass over it.
    if (gathered === null && owner !== null) owner.refs++;
    return this.handleFrame(header, payload, frame, owner, false);
  };

  /** Handle one decoded frame. False stops decoding: the frame is held (no room yet), the stream must
   * switch (the channel just became protected), or the connection closed. */
  private handleFrame(header: Header, payload: Uint8Array, frame: Uint8Array, owner: ReceiveBuffer | null, retry: boolean): boolean {
    if (this.state === "closed") {
      owner?.release();
      return false;
    }
    if (this.state === "hello" || this.state === "auth") {
      const wasHello = this.state === "hello";
      const step = wasHello ? this.handshake.onHello(header, payload, frame) : this.handshake.onAuth(header, payload);
      owner?.release();
      if (step.kind === "send") {
        this.state = "auth";
        this.replies.sendWhole(step.frame);
        return true;
      }
      if (step.kind === "refuse") {
        this.refuse(step.status, step.message, step.log);
        return false;
      }
      this.admit(step.admitted);
      // After AUTH the rest of the stream is sealed records: go back to consumeRaw.
      return step.admitted.auth === null;
    }
    if (header.opcode === Op.PING) {
      // PONG "as soon as it can" (docs/protocol.md §4), but as a reply like any other: in the turn and
      // reserved, so PINGs from a peer reading nothing pause it at its reply share (docs/security.md).
      if (this.turnCount >= this.server.limits.turnRequests) return this.hold(header, payload, frame, owner, "turn");
      if (!this.replies.reserve(HEADER_SIZE)) {
        if (!retry) this.server.counters.budgetWaits++;
        this.waitForRoom();
        return this.hold(header, payload, frame, owner, "room");
      }
      owner?.release();
      this.server.sessions.prune(this.session, header.offset);
      this.replies.header(Op.PONG, header.txid, 0, header.offset, 0, HEADER_SIZE);
      this.turnCount++;
      return true;
    }
    if (!requestOpcodes.has(header.opcode)) {
      owner?.release();
      this.protocolError(`unexpected ${opcodeName(header.opcode)} after the handshake`);
      return false;
    }
    const requests = this.requests!;
    if (requests.inflight >= this.server.limits.maxInflight) return this.hold(header, payload, frame, owner, "room");
    if (this.turnCount >= this.server.limits.turnRequests) return this.hold(header, payload, frame, owner, "turn");
    if (requests.handle(header, payload, owner) === "wait") {
      if (!retry) this.server.counters.budgetWaits++;
      this.waitForRoom();
      return this.hold(header, payload, frame, owner, "room");
    }
    owner?.release();
    this.turnCount++;
    return true;
  }

  private hold(header: Header, payload: Uint8Array, frame: Uint8Array, owner: ReceiveBuffer | null, why: "room" | "turn"): false {
    this.held = { header, payload, frame, owner };
    this.blocked = why;
    return false;
  }

  /** Retry when the export gives memory back (completions and drains retry on their own). */
  private waitForRoom(): void {
    this.blocked = "room";
    this.server.receiveBudget.wait(this.continueLater);
    this.server.replyBudget.wait(this.continueLater);
  }

  /** FrameDecoder / RecordOpener allocator: receive memory counted per connection and export-wide. */
  private readonly allocate = (size: number): { bytes: Uint8Array; owner: unknown } | null => {
    if (
      (this.receiveHeld > 0 && this.receiveHeld + size > this.server.limits.connectionReceiveBytes) ||
      !this.server.receiveBudget.take(size, this.receiveHeld)
    ) {
      this.refused = true;
      return null;
    }
    this.receiveHeld += size;
    const bytes = takeBuffer(size);
    return { bytes, owner: new ReceiveBuffer(this, bytes, size) };
  };

  /** A ReceiveBuffer's last user let go. */
  receiveFreed(size: number): void {
    this.receiveHeld -= size;
    this.server.receiveBudget.give(size);
  }

  // ---- handshake outcome ------------------------------------------------------------------

  private admit(admitted: Admitted): void {
    this.admitted = admitted;
    this.port = admitted.exp.port;
    this.session = admitted.session;
    this.readable = admitted.readable;
    this.writable = admitted.writable;
    this.replica = admitted.replica;
    this.identity = admitted.identity;
    this.maxPayload = admitted.maxPayload;
    this.checksum = admitted.checksum;
    this.digestBytes = digestSize(admitted.checksum);
    this.decoder.maxPayload = admitted.maxPayload;
    this.requests = new RequestPipeline(this);
    const channel = admitted.auth?.channel ?? null;
    if (channel?.records) {
      this.opener = channel.records.opener;
      this.opener.allocate = this.allocate;
      this.opener.offload(this.lateRecords);
      this.replies.sealer = channel.records.sealer;
      this.replies.sealer.onLaneFailure = (reason) => this.cryptoFailed(`crypto worker failed: ${reason}`);
    }
    this.state = "ready";
    this.replies.sendWhole(admitted.welcome);
    this.hooks?.admitted();
    const session = admitted.session;
    const sessionText = `session ${session.label}${admitted.resumed ? " (resumed)" : ""}`;
    const who = admitted.identity === null ? "anonymous" : `identity ${quotePeer(admitted.identity)}, suite ${channel?.suite}`;
    this.server.log.info(
      `${this.name}: handshake ok: export ${quotePeer(admitted.exp.name)} ${this.writable ? "rw" : this.readable ? "ro" : "replica"}, ${who}, ${sessionText}, client ${quotePeer(admitted.clientName)}`,
    );
  }

  private refuse(status: number, message: string, log: string | null): void {
    this.server.counters.refused++;
    const records = this.handshake.authenticated?.channel.records;
    if (records && this.replies.sealer === null) this.replies.sealer = records.sealer;
    if (log !== null) {
      if (this.state === "ready") this.server.log.warn(`${this.name}: refused: ${log}`);
      else this.logRefusal(`refused: ${log}`);
    }
    this.replies.sendWhole(encodeRefusal(status, message));
    this.closeAfterReplies();
  }

  /** Before admission a peer's lines go through the guard's per-source rate limit. */
  private logRefusal(line: string): void {
    if (this.hooks !== null) this.hooks.refused(`${this.name}: ${line}`);
    else this.server.log.warn(`${this.name}: ${line}`);
  }

  private protocolError(reason: string): void {
    if (this.state === "closed") return;
    this.server.counters.protocolErrors++;
    this.refuse(Errno.EPROTO, `protocol error: ${reason}`, `protocol error: ${reason}`);
  }

  /** Drop everything this connection holds but what its requests at the port still use. */
  private release(): void {
    this.server.receiveBudget.cancel(this.continueLater);
    this.server.replyBudget.cancel(this.continueLater);
    if (this.held !== null) {
      this.held.owner?.release();
      this.held = null;
    }
    for (const entry of this.plain.splice(0)) entry.owner?.release();
    this.raw.length = 0;
    // A frame or record cut off by the close holds counted receive memory: give it back.
    for (const owner of this.decoder.abandon()) (owner as ReceiveBuffer).release();
    (this.opener?.close() as ReceiveBuffer | null | undefined)?.release();
    this.replies.flush();
    this.replies.close();
    if (this.admitted !== null && this.session.connection === this) this.session.connection = null;
  }
}

/** Opcode of a reply to `opcode` (for tests and logs). */
export function replyOpcode(opcode: number): number {
  return opcode | REPLY_BIT;
}
