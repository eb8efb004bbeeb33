/**
 * @module export/requests — one DST connection's requests against the storage port: checked
 * (storage/validate.ts), deduplicated through the session's exactly-once table, handed to the
 * port, answered when the port completes — in any order, possibly long after the frame was
 * read, possibly after the connection was fenced (then only the table learns the result).
 *
 * Every request first reserves its reply (export/replies.ts) and, for a WRITE the port will
 * hold after returning, the memory of its payload; without room, `handle` answers "wait" and
 * the connection stops reading until room frees up. A WRITE's payload goes to a port that
 * takes buffers (`writeHandedOver`) where it was received, under that memory's hold: the
 * budget gets it back at the completion, the pool once the port lets go of it (the remote
 * engine's replay bound limits how much it keeps). A READ from a port that reports the data's
 * XXH3-64 (`readHashed`: a tree node over remote legs) sends that as its xxh3 digest instead
 * of hashing the data again. Ops are pooled and their completion
 * callbacks bound once, so a request allocates nothing on the synchronous fast path.
 *
 * Must not: answer a request twice; acknowledge a mutation that was not applied for this
 * client's data (a resend is answered from the table only when its signature — opcode, flags,
 * range, payload hash — matches what was applied); apply a mutation twice; report a failure as
 * success.
 */
import { Errno, errnoMessage } from "../lib/errno.ts";
import { giveBuffer } from "../lib/buffer-pool.ts";
import { computeDigest, verifyDigestHash, type ChecksumName } from "../crypto/checksum.ts";
import { RECORD_HEADER_SIZE } from "../crypto/record.ts";
import { Flag, HEADER_SIZE, Op, REPLY_BIT } from "../wire/dst/constants.ts";
import { encodeHeader, type Header } from "../wire/dst/header.ts";
import { completesInline, type BufferHold, type StoragePort } from "../storage/port.ts";
import { validateRequest, type RequestKind } from "../storage/validate.ts";
import type { ReplyWriter } from "./replies.ts";
import type { RequestObserver } from "./server.ts";
import type { Entry, Session, SessionTable } from "./sessions.ts";
import { handleFetch, type FetchHost } from "./fetch.ts";
import { handleSync } from "./sync.ts";

/** Copies of one in-progress txid answered when it completes; older ones beyond are let go. */
export const MAX_WAITERS = 4;

const kindOf: Record<number, RequestKind> = {
  [Op.READ]: "read",
  [Op.WRITE]: "write",
  [Op.FLUSH]: "flush",
  [Op.TRIM]: "trim",
  [Op.WRITE_ZEROES]: "zero",
};

/**
 * A receive buffer frames were gathered into: counted against the budget until released
 * (refs), and in memory until every BufferHold on it is dropped too — a port that takes
 * handed-over WRITE buffers (storage/port.ts, a tree node's remote leg) keeps the payload
 * where it was received, past the completion, instead of copying it.
 */
export interface Held extends BufferHold {
  refs: number;
  /** The memory: frames lie in it (a payload copied for an asynchronous port starts at 0). */
  readonly bytes: Uint8Array;
  release(): void;
}

/** What the request handler needs from its connection. */
export interface RequestHost {
  readonly name: string;
  /** The connection still serves (not fenced, not closed): replies may be sent. */
  readonly live: boolean;
  readonly port: StoragePort;
  readonly session: Session;
  readonly sessions: SessionTable;
  readonly replies: ReplyWriter;
  /** false for a client whose only right is "replica" (it may FETCH and nothing else). */
  readonly readable: boolean;
  readonly writable: boolean;
  readonly maxPayload: number;
  readonly checksum: ChecksumName;
  readonly digestBytes: number;
  readonly noDedupe: boolean;
  readonly counters: { requests: number; duplicates: number; checksumFailures: number; mismatchedResends: number; overflows: number };
  /** Take receive memory for a payload copy; null when there is no room now. */
  takeReceive(bytes: number): Held | null;
  /** A request finished after handle() returned: the connection may continue reading. */
  completed(): void;
  /** Metrics of served requests (null: none). */
  readonly observer: RequestObserver | null;
  readonly exportName: string;
  now(): number;
  warn(message: string): void;
}

export type HandleResult = "done" | "wait";

/** One request being served; pooled. */
class RequestOp {
  kind: RequestKind = "read";
  opcode = 0;
  flags = 0;
  txid = 0;
  offset = 0;
  length = 0;
  reservation = 0;
  entry: Entry | null = null;
  /** READ: the frame the reply is built in (null: inline in the batch at `inlineAt`). */
  frame: Uint8Array | null = null;
  inlineAt = 0;
  /** The receive memory the WRITE payload lives in (null: none held). */
  held: Held | null = null;
  /** WRITE: the payload's XXH3-64 when computed (handed to the port: one hash pass per write). */
  hash: bigint | undefined = undefined;
  startedAt = 0;
  /** READ: the XXH3-64 of the data the port reported with it (readHashed), or null. */
  xxh3: bigint | null = null;
  /** Set while the port call runs: a completion then is synchronous, not "later". */
  dispatching = false;
  readonly done: (errno: number) => void;
  readonly hashedDone: (errno: number, xxh3: bigint | null) => void;

  constructor(owner: RequestPipeline) {
    this.done = (errno) => owner.finish(this, errno);
    this.hashedDone = (errno, xxh3) => {
      this.xxh3 = xxh3;
      owner.finish(this, errno);
    };
  }
}

export class RequestPipeline {
  /** Requests handed to the port and not completed yet. */
  inflight = 0;
  private readonly pool: RequestOp[] = [];

  constructor(private readonly host: FetchHost) {}

  /**
   * Handle one request frame. "wait": nothing was done (no room for its reply or payload);
   * call again with the same frame later. `held` owns the payload's memory when it was gathered.
   */
  handle(header: Header, payload: Uint8Array, held: Held | null): HandleResult {
    const host = this.host;
    if (header.opcode === Op.FETCH) return handleFetch(host, header, payload);
    if (header.opcode === Op.SYNC) return handleSync(host, header, payload);
    const kind = kindOf[header.opcode]!;
    const digest = kind === "read" ? host.digestBytes : 0;
    // A READ longer than the payload limit gets EINVAL without data: reserving its length
    // (up to 4 GiB) would wait for room that never comes, and the connection with it.
    const readBytes = kind === "read" && header.length <= host.maxPayload ? header.length + digest : 0;
    const reservation = kind === "read" ? RECORD_HEADER_SIZE + HEADER_SIZE + readBytes : HEADER_SIZE;
    if (!host.replies.reserve(reservation)) return "wait";
    const port = host.port;
    const mutating = kind === "write" || kind === "trim" || kind === "zero";
    const opcode = header.opcode | REPLY_BIT;
    host.counters.requests++;
    let status = validateRequest(kind, header.offset, header.length, {
      size: port.size,
      writable: host.writable,
      maxPayload: host.maxPayload,
    });
    if (status === 0 && !host.readable) status = Errno.EPERM;
    if (status === 0) status = featureRefusal(kind, port);
    let data = payload;
    /** The payload's XXH3-64 (the exactly-once signature), once known. */
    let hash: bigint | null = null;
    // With a checksum in force every WRITE carries its digest (docs/protocol.md §4.1 DIGEST): one
    // without it is answered as a corrupt one, so the data is never applied unchecked (a meddler
    // on a plain loopback session could strip it) and an honest client resends it whole.
    if (status === 0 && kind === "write" && host.checksum !== "none" && header.length > 0 && (header.flags & Flag.DIGEST) === 0) {
      host.counters.checksumFailures++;
      host.warn(`write ${header.length} B at ${header.offset}: no data checksum, though ${host.checksum} is in force; not applied`);
      host.replies.header(opcode, header.txid, Errno.EBADMSG, header.offset, 0, reservation);
      return "done";
    }
    if (status === 0 && kind === "write" && (header.flags & Flag.DIGEST) !== 0) {
      // End-to-end check of the client's copy before anything reaches the disk. A mismatch is
      // not recorded in the table, so the client's resend gets a fresh chance. An xxh3 digest
      // is the signature's hash too (crypto/checksum.ts: XXH3-64, seed 0, big-endian): one
      // pass over the payload serves both.
      data = payload.subarray(0, header.length);
      const digest = payload.subarray(header.length);
      const verified = verifyDigestHash(host.checksum, data, digest);
      if (typeof verified === "bigint") hash = verified;
      if (verified === false) {
        host.counters.checksumFailures++;
        host.warn(`write ${header.length} B at ${header.offset}: data checksum mismatch; not applied`);
        host.replies.header(opcode, header.txid, Errno.EBADMSG, header.offset, 0, reservation);
        return "done";
      }
    }
    if (status !== 0) {
      host.warn(`${kind} ${header.length} B at ${header.offset}: ${errnoMessage(status)}`);
      host.replies.header(opcode, header.txid, status, header.offset, 0, reservation);
      return "done";
    }
    // A port that keeps the payload after returning needs it in memory we own and count.
    let copyHeld: Held | null = null;
    if (kind === "write" && !completesInline(port, data.length) && held === null && data.length > 0) {
      copyHeld = host.takeReceive(data.length);
      if (copyHeld === null) {
        host.replies.unreserve(reservation);
        host.counters.requests--;
        return "wait";
      }
      const copy = copyHeld.bytes.subarray(0, data.length);
      copy.set(data);
      data = copy;
    }
    let entry: Entry | null = null;
    if (mutating && !host.noDedupe) {
      hash ??= kind === "write" ? Bun.hash.xxHash3(data) : 0n;
      const flags = header.flags & ~Flag.DIGEST;
      const begun = host.sessions.begin(host.session, header.txid, header.opcode, flags, header.offset, header.length, hash);
      if (begun.kind !== "new") {
        copyHeld?.release();
        if (begun.kind === "full") {
          host.counters.overflows++;
          host.warn(`${kind} txid ${header.txid} refused: ${begun.reason}`);
          host.replies.header(opcode, header.txid, Errno.EOVERFLOW, header.offset, 0, reservation);
          return "done";
        }
        this.answerKnown(begun.entry, header, opcode, flags, hash, reservation);
        return "done";
      }
      entry = begun.entry;
    }
    const op = this.pool.pop() ?? new RequestOp(this);
    op.kind = kind;
    op.opcode = opcode;
    op.flags = header.flags;
    op.txid = header.txid;
    op.offset = header.offset;
    op.length = header.length;
    op.reservation = reservation;
    op.entry = entry;
    op.held = copyHeld ?? held;
    op.hash = kind === "write" && hash !== null ? hash : undefined;
    if (op.held !== null && op.held === held) held.refs++;
    op.dispatching = true;
    if (host.observer !== null) op.startedAt = host.now();
    this.inflight++;
    this.dispatch(op, data);
    // A synchronous port has called finish() already (and the op went back to the pool).
    op.dispatching = false;
    return "done";
  }

  /** A resend of a txid the table knows: answer it from there, or fail it loudly. */
  private answerKnown(entry: Entry, header: Header, opcode: number, flags: number, hash: bigint, reservation: number): void {
    const host = this.host;
    const same = entry.opcode === header.opcode && entry.flags === flags && entry.offset === header.offset && entry.length === header.length && entry.hash === hash;
    if (!same) {
      host.counters.mismatchedResends++;
      host.warn(
        `txid ${header.txid} reused for a different request (${kindOf[header.opcode]} ${header.length} B at ${header.offset}); refused, nothing applied`,
      );
      host.replies.header(opcode, header.txid, Errno.EPROTO, header.offset, 0, reservation);
      return;
    }
    host.counters.duplicates++;
    if (entry.status >= 0) {
      host.replies.header(opcode, header.txid, entry.status, header.offset, 0, reservation);
      return;
    }
    // Still in progress (its first copy may have come on a fenced connection): answer when it
    // ends. A client waits for one answer per txid, so past MAX_WAITERS copies the oldest is
    // let go unanswered: a peer resending one stuck txid cannot pile up closures.
    const txid = header.txid;
    const offset = header.offset;
    const waiters = (entry.waiters ??= []);
    if (waiters.length >= MAX_WAITERS) waiters.shift()!(null);
    waiters.push((status) => {
      if (status !== null && host.live) host.replies.header(opcode, txid, status, offset, 0, reservation);
      else host.replies.unreserve(reservation);
      if (status !== null) host.completed();
    });
  }

  private dispatch(op: RequestOp, data: Uint8Array): void {
    const port = this.host.port;
    const fua = (op.flags & Flag.FUA) !== 0;
    switch (op.kind) {
      case "read":
        return this.read(op);
      case "write":
        // Handed over where it lies (no copy) when the port keeps buffers and we own the memory.
        if (port.writeHandedOver !== undefined && op.held !== null) return port.writeHandedOver(op.offset, data, fua, op.held, op.done, op.hash);
        return port.write(op.offset, data, fua, op.done);
      case "flush":
        return port.flush(op.done);
      case "trim":
        return port.trim(op.offset, op.length, fua, op.done);
      case "zero":
        return port.zero(op.offset, op.length, { fua, noHole: (op.flags & Flag.NO_HOLE) !== 0, fast: false }, op.done);
      default:
        return op.done(Errno.EINVAL);
    }
  }

  /** READ: straight into the reply batch (small, synchronous port) or into a pooled frame. */
  private read(op: RequestOp): void {
    const host = this.host;
    const total = HEADER_SIZE + op.length + host.digestBytes;
    const slot = completesInline(host.port, op.length) ? host.replies.inlineSlot(total) : null;
    if (slot !== null) {
      op.frame = null;
      op.inlineAt = slot.at;
      const data = slot.buffer.subarray(slot.at + HEADER_SIZE, slot.at + HEADER_SIZE + op.length);
      host.port.read(op.offset, data, op.done);
      return;
    }
    op.frame = host.replies.frame(total);
    const at = RECORD_HEADER_SIZE + HEADER_SIZE;
    const into = op.frame.subarray(at, at + op.length);
    // A port that knows the data's XXH3-64 (a tree node's remote leg verified it with that)
    // hands it back: with xxh3 as our checksum too, it is the reply's digest as it stands.
    if (host.checksum === "xxh3" && host.digestBytes === 8 && host.port.readHashed !== undefined) host.port.readHashed(op.offset, into, op.hashedDone);
    else host.port.read(op.offset, into, op.done);
  }

  /** The port completed `op` (exactly once, per the port contract). */
  finish(op: RequestOp, errno: number): void {
    const host = this.host;
    this.inflight--;
    host.observer?.completed(host.exportName, op.kind, op.length, errno, (host.now() - op.startedAt) / 1000);
    if (op.entry !== null) {
      // A failed request is remembered like a success (its resend is answered, not re-run),
      // except EPERM, which nothing was attempted for.
      if (errno === Errno.EPERM) host.sessions.drop(host.session, op.txid, op.entry);
      host.sessions.finish(op.entry, errno);
    }
    if (errno !== 0) host.warn(`${op.kind} ${op.length} B at ${op.offset}: ${errnoMessage(errno)}`);
    if (op.kind === "read" && errno === 0 && host.live) this.sendRead(op);
    else {
      if (op.frame !== null) giveBuffer(op.frame);
      if (host.live) host.replies.header(op.opcode, op.txid, errno, op.offset, 0, op.reservation);
      else host.replies.unreserve(op.reservation);
    }
    op.held?.release();
    const later = !op.dispatching;
    op.entry = null;
    op.frame = null;
    op.held = null;
    op.xxh3 = null;
    this.pool.push(op);
    if (later) host.completed();
  }

  private sendRead(op: RequestOp): void {
    const host = this.host;
    const digest = host.digestBytes;
    const total = HEADER_SIZE + op.length + digest;
    let buffer: Uint8Array;
    let at: number;
    if (op.frame === null) {
      // Inline: the data was read behind the header in the batch (a read the port completes
      // inline, so the batch has not moved since inlineSlot()).
      buffer = host.replies.batchBuffer!;
      at = op.inlineAt;
    } else {
      buffer = op.frame;
      at = RECORD_HEADER_SIZE;
    }
    if (digest > 0) {
      const dataEnd = at + HEADER_SIZE + op.length;
      if (op.xxh3 !== null) new DataView(buffer.buffer, buffer.byteOffset + dataEnd, 8).setBigUint64(0, op.xxh3);
      else computeDigest(host.checksum, buffer.subarray(at + HEADER_SIZE, dataEnd), buffer, dataEnd);
    }
    encodeHeader(buffer, at, {
      version: 1,
      opcode: Op.READ | REPLY_BIT,
      flags: digest > 0 ? Flag.DIGEST : 0,
      txid: op.txid,
      offset: op.offset,
      length: op.length,
      payloadLength: op.length + digest,
      status: 0,
    });
    if (op.frame === null) host.replies.commitInline(total, op.reservation);
    else host.replies.sendFrame(op.frame.subarray(0, RECORD_HEADER_SIZE + total), op.reservation);
  }
}

/** ENOTSUP for an operation whose feature the export did not grant (docs/protocol.md §4). */
function featureRefusal(kind: RequestKind, port: StoragePort): number {
  if (kind === "trim" && !port.canTrim) return Errno.ENOTSUP;
  if (kind === "zero" && !port.canZero) return Errno.ENOTSUP;
  if (kind === "flush" && !port.canFlush) return Errno.ENOTSUP;
  return 0;
}
