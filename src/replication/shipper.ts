/**
 * @module replication/shipper — the secondary's side of log shipping (docs/replication.md §10):
 * fetches its primary's log from the exact position its copy ends at, stores what arrives in
 * the copy (`Secondary.receive`), and reports the applied seq with every FETCH.
 *
 * Two FETCHes in flight (each at most `maxBytes` of records): the first names the position the
 * copy ends at, the second FOLLOWS it (docs/protocol.md §11.2: "the records after the answer to
 * that FETCH", answered by the primary from where the first answer ended), so the link is not
 * idle for a round trip after every answer. Answers are used in the order the FETCHes were
 * sent, whatever order they arrive in; a FOLLOWS answer that does not start where the answer
 * before it ended (the primary answered that FETCH twice, or restarted and does not know it) is
 * dropped and the position fetched again. A primary that does not grant FOLLOWS (an older
 * one) gets one FETCH at a time, and so does one under a bandwidth cap (below). New FETCHes
 * go out only while the answers in flight and those being made durable in the copy number at
 * most three: memory is bounded by three answers. The FETCH itself travels through an
 * injected `FetchTransport` — the DST client engine in dstd (resend, reconnect, keepalive,
 * sealed records), a simulated link in tests.
 *
 * After a cut the next FETCH asks for the seq after the copy's last durable record, with the
 * segment and byte offset the previous answer named: the primary resumes at that exact byte.
 * "released" (the primary no longer has the records: a full sync is needed) and "diverged at
 * seq N" (the copy does not continue the primary's log) stop fetching, with the reason in
 * `status()`; other failures (link down, timeouts, a refused record) are retried.
 *
 * Compression (docs/protocol.md §11.1): with `zstd` the FETCH says a compressed answer is
 * welcome (the transport sends that only to a primary that granted it); a compressed answer
 * is decompressed into at most the bytes asked for, and a corrupt one is fetched again — the
 * records' chained checksums are over the uncompressed bytes and are checked by the copy as
 * always. Bandwidth cap (`bandwidth`, bytes/s): a token bucket (shipping-pace.ts) debited by the bytes each
 * answer took on the wire; the next FETCH waits until the bucket is no longer in debt, and a
 * FETCH asks for at most half a second's worth.
 */
import { Errno, errnoMessage } from "../lib/errno.ts";
import type { Log } from "../lib/log.ts";
import { decodeFetchReason, decodeFetchReply, type FetchRequest } from "../wire/dst/fetch.ts";
import { zstdDecompress } from "../lib/zstd.ts";
import type { Secondary } from "./secondary.ts";
import { decodeHeader, MAX_RECORD_SIZE, RECORD_HEADER_SIZE } from "./record.ts";
import { TokenBucket } from "./shipping-pace.ts";

/**
 * Sends one FETCH; `done` once with the reply's status, payload (records, or a reason) and
 * header flags (Flag.ZSTD: compressed). A request with `zstd` may go out without the flag
 * (the primary did not grant compression); the reply's flags say what came back. A request
 * with `follows` to a primary that does not grant it fails with ENOTSUP and no payload.
 */
export type FetchTransport = (request: FetchRequest, done: (status: number, payload: Uint8Array | null, flags?: number) => void) => void;

export interface ShipperClock {
  /** Milliseconds. */
  now(): number;
  after(ms: number, run: () => void): () => void;
}

export interface ShipperOptions {
  /** Most record bytes per FETCH (default 8 MiB; at least one whole record). */
  maxBytes?: number;
  /** Wait before retrying after a failure (default 1 s). */
  retryMs?: number;
  /** Ask for compressed answers (docs/protocol.md §11.1). */
  zstd?: boolean;
  /** Most bytes per second on the wire (answers as received, compressed or not); 0/absent: no cap. */
  bandwidth?: number;
  log?: Log;
  /** Fetching stopped: the primary answered released or diverged (the node may start a sync). */
  onStopped?: (state: "released" | "diverged", reason: string) => void;
}

/**
 * "refused": the primary answered, but cannot ship from here (its log is unreadable at that
 * record); asked again periodically. "retrying": the primary could not be reached.
 */
export type ShipperState = "fetching" | "paused" | "released" | "diverged" | "refused" | "retrying" | "stopped";

export interface ShipperStatus {
  state: ShipperState;
  /** Why fetching stopped or is retrying; null when healthy. */
  reason: string | null;
  /** The primary's durable seq at the last answer (0 before any). */
  primaryDurable: number;
  primaryGeneration: number;
  /** Primary's durable log bytes not fetched yet, at the last answer. */
  behindBytes: number;
  /** ms on the shipper's clock of the last answer from the primary (null: none yet). */
  lastContact: number | null;
  /** Bytes of records received since start. */
  receivedBytes: number;
  /** Bytes of answers on the wire since start (smaller than receivedBytes when compressed). */
  wireBytes: number;
  fetches: number;
  /** Of those, FOLLOWS (a second FETCH in flight). */
  follows: number;
  /** FOLLOWS answers dropped (did not continue the answer before, or the primary did not know it). */
  followsDropped: number;
  /** Failed or refused FETCHes asked again (a count to wait on). */
  retries: number;
}

/** A FETCH sent and not used yet; `answer` once it came back (answers are used in send order). */
interface Slot {
  request: FetchRequest;
  answer: { status: number; payload: Uint8Array | null; flags: number } | null;
}

/** Most FETCHes in flight. */
const IN_FLIGHT = 2;
/** Most answers in flight and being stored together (memory: this many answers). */
const HELD_ANSWERS = 3;
/** After a primary refused FOLLOWS (not granted), one FETCH at a time for this long. */
const FOLLOWS_OFF_MS = 60_000;

export class Shipper {
  private state: ShipperState = "stopped";
  private reason: string | null = null;
  /** FETCHes sent, in order, whose answers are still to be used (older ones dropped by a restart of the pipeline). */
  private slots: Slot[] = [];
  /** Transport calls not answered yet, dropped ones included (what bounds the link's share). */
  private outstanding = 0;
  /** Answers handed to the copy and not durable yet. */
  private storing = 0;
  private followsOffUntil = -Infinity;
  /** drain() is using answers: next() waits for it (a slot answered but not used yet is not followed). */
  private draining = false;
  private follows = 0;
  private followsDropped = 0;
  private cancelTimer: (() => void) | null = null;
  private hint: { seq: number; segment: number; offset: number } | null = null;
  private primaryDurable = 0;
  private primaryGeneration = 0;
  private behindBytes = 0;
  private lastContact: number | null = null;
  private receivedBytes = 0;
  private wireBytes = 0;
  private fetches = 0;
  private retries = 0;
  private readonly maxBytes: number;
  private readonly pace: TokenBucket | null;

  constructor(
    private readonly secondary: Secondary,
    private readonly transport: FetchTransport,
    private readonly clock: ShipperClock,
    private readonly options: ShipperOptions = {},
  ) {
    const rate = options.bandwidth ?? 0;
    this.pace = rate > 0 ? new TokenBucket(rate, clock.now()) : null;
    // Capped: at most half a second's worth per FETCH (never below one whole record).
    this.maxBytes = Math.min(options.maxBytes ?? 8 << 20, rate > 0 ? Math.max(MAX_RECORD_SIZE, Math.floor(rate / 2)) : Infinity);
  }

  status(): ShipperStatus {
    return {
      state: this.state,
      reason: this.reason,
      primaryDurable: this.primaryDurable,
      primaryGeneration: this.primaryGeneration,
      behindBytes: this.behindBytes,
      lastContact: this.lastContact,
      receivedBytes: this.receivedBytes,
      wireBytes: this.wireBytes,
      fetches: this.fetches,
      follows: this.follows,
      followsDropped: this.followsDropped,
      retries: this.retries,
    };
  }

  start(): void {
    if (this.state !== "stopped" && this.state !== "paused") return;
    this.state = "fetching";
    this.reason = null;
    this.next();
  }

  pause(): void {
    if (this.state === "stopped") return;
    this.state = "paused";
    this.cancel();
  }

  resume(): void {
    if (this.state === "paused" || this.state === "released" || this.state === "diverged") {
      this.state = "stopped";
      this.start();
    }
  }

  stop(): void {
    this.state = "stopped";
    this.cancel();
  }

  private cancel(): void {
    this.cancelTimer?.();
    this.cancelTimer = null;
    this.slots = []; // answers still coming are dropped
  }

  private active(): boolean {
    return this.state === "fetching" || this.state === "retrying" || this.state === "refused";
  }

  private next(): void {
    if (this.draining) return; // drain() calls it once done
    while (this.active() && this.cancelTimer === null) {
      // Under a bandwidth cap one FETCH at a time: the bucket is debited by an answer only when it
      // arrives, so a second in flight could overshoot the cap by another answer.
      const inFlight = this.pace === null ? IN_FLIGHT : 1;
      if (this.outstanding >= inFlight || this.outstanding + this.storing >= HELD_ANSWERS) return;
      // A FOLLOWS needs its predecessor to start where the copy ends: the one slot in flight.
      const follows = this.slots.length === 1;
      if (this.slots.length > 1 || (follows && this.clock.now() < this.followsOffUntil)) return;
      const wait = this.pace?.wait(this.clock.now()) ?? 0;
      if (wait > 0) {
        this.cancelTimer = this.clock.after(wait, () => {
          this.cancelTimer = null;
          this.next();
        });
        return;
      }
      this.send(follows);
    }
  }

  /** A FETCH from where the copy ends; with `follows`, for the records after the answer to that FETCH (in flight). */
  private send(follows: boolean): void {
    const want = this.secondary.wanted();
    const hint = this.hint !== null && this.hint.seq === want.seq + 1 ? this.hint : null;
    const applied = this.secondary.applier.status().applied.seq;
    const request: FetchRequest = {
      seq: want.seq + 1,
      maxBytes: this.maxBytes,
      segment: hint?.segment ?? 0,
      offset: hint?.offset ?? 0,
      applied: Math.min(applied, want.seq),
      prevChain: want.chain,
      prevLamport: want.lamport,
      prevGeneration: want.generation,
    };
    if (this.options.zstd === true) request.zstd = true;
    if (follows) {
      request.follows = true;
      this.follows++;
    }
    this.fetches++;
    const slot: Slot = { request, answer: null };
    this.slots.push(slot);
    this.outstanding++;
    this.transport(request, (status, payload, flags) => {
      this.outstanding--;
      if (payload !== null) {
        this.wireBytes += payload.length;
        this.pace?.take(payload.length, this.clock.now());
      }
      if (!this.slots.includes(slot)) return this.next(); // dropped: a restart, a pause, a stop
      slot.answer = { status, payload, flags: flags ?? 0 };
      this.drain();
    });
  }

  /** Uses the answers at the head of the pipeline, in send order. */
  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    while (this.slots.length > 0 && this.slots[0]!.answer !== null && this.active()) {
      const slot = this.slots.shift()!;
      const { status, payload, flags } = slot.answer!;
      if (slot.request.follows === true) {
        // ENOTSUP without a reason: the link did not send it (not granted); EAGAIN with a
        // reason: the primary does not know the FETCH it follows. Either way: ask by position.
        const notGranted = status === Errno.ENOTSUP && payload === null;
        if (notGranted) this.followsOffUntil = this.clock.now() + FOLLOWS_OFF_MS;
        if (notGranted || (status === Errno.EAGAIN && payload !== null)) {
          this.dropFollows(`the primary did not answer it: ${payload !== null ? decodeFetchReason(payload) : errnoMessage(status)}`);
          continue;
        }
      }
      this.answered(slot.request, status, payload, flags);
    }
    this.draining = false;
    this.next();
  }

  /** A FOLLOWS answer cannot be used: it and whatever follows it are dropped, the position fetched again. */
  private dropFollows(why: string): void {
    this.followsDropped++;
    this.slots = [];
    this.options.log?.debug(`replication: pipelined FETCH dropped (${why}); fetching by position`);
  }

  private answered(request: FetchRequest, status: number, payload: Uint8Array | null, flags: number): void {
    if (status === Errno.ENODATA || status === Errno.ESTALE) {
      this.lastContact = this.clock.now();
      this.cancel();
      this.state = status === Errno.ENODATA ? "released" : "diverged";
      this.reason = payload !== null ? decodeFetchReason(payload) : errnoMessage(status);
      this.options.log?.error(`replication: fetching stopped: ${this.reason}`);
      this.options.onStopped?.(this.state, this.reason);
      return;
    }
    if (status !== 0 && payload !== null && payload.length > 0) {
      // The primary answered with a reason (its log cannot be read there): not a link problem.
      this.lastContact = this.clock.now();
      return this.retry(`the primary cannot ship seq ${request.seq}: ${decodeFetchReason(payload)}`, "refused");
    }
    if (status !== 0 || payload === null) return this.retry(`FETCH from seq ${request.seq} failed: ${errnoMessage(status)}`);
    const reply = decodeFetchReply(payload, flags, request.maxBytes, zstdDecompress);
    if (typeof reply === "string") return this.retry(reply);
    if (request.follows === true) {
      // It must start where the copy ends now (the primary may have answered its predecessor twice).
      const expected = this.secondary.wanted().seq + 1;
      const starts = reply.records.length >= RECORD_HEADER_SIZE ? decodeHeader(reply.records, 0).seq : reply.nextSeq;
      if (starts !== expected) return this.dropFollows(`it starts at seq ${starts}, the copy ends at seq ${expected - 1}`);
    }
    this.lastContact = this.clock.now();
    this.primaryDurable = reply.durable;
    this.primaryGeneration = reply.generation;
    this.behindBytes = reply.behind;
    const next = { seq: reply.nextSeq, segment: reply.nextSegment, offset: reply.nextOffset };
    if (reply.records.length === 0) {
      this.hint = next;
      this.ok();
      return;
    }
    // `done` may run before receive() returns (nothing kept): act once both are known.
    let returned = false;
    let refused: string | null = null;
    let early: number | null = null;
    const stored = (errno: number) => {
      this.storing--;
      if (errno !== 0) return this.retry(`storing fetched records failed: ${errnoMessage(errno)}`);
      if (refused !== null) {
        this.hint = null;
        return this.retry(`fetched records refused: ${refused}`);
      }
      this.receivedBytes += reply.records.length;
      this.next();
    };
    this.storing++;
    refused = this.secondary.receive(reply.records, (errno) => {
      if (returned) stored(errno);
      else early = errno;
    });
    returned = true;
    if (refused !== null) this.slots = []; // answers after this one follow what was refused
    else {
      // Pipelined: more FETCHes go out while these records are being made durable.
      this.hint = next;
      this.ok();
    }
    if (early !== null) stored(early);
    // Otherwise the kept part is being stored; `stored` goes on (or retries) after it.
  }

  private ok(): void {
    if (this.state === "retrying" || this.state === "refused") this.state = "fetching";
    this.reason = null;
  }

  private retry(reason: string, state: "retrying" | "refused" = "retrying"): void {
    // A store that fails after stop() or pause() (a copy closed under it answers ESHUTDOWN)
    // must not start fetching again: a stopped shipper then fetched into a closed copy.
    if (!this.active()) return;
    this.retries++;
    if (this.state !== state || this.reason !== reason) this.options.log?.warn(`replication: ${reason}; retrying`);
    this.state = state;
    this.reason = reason;
    this.cancel();
    this.cancelTimer = this.clock.after(this.options.retryMs ?? 1000, () => {
      this.cancelTimer = null;
      this.next();
    });
  }
}
