/**
 * @module engine/txn — one transaction of the client engine: the request as the caller gave
 * it, its wire form (a header, the payload, the end-to-end digest — kept apart so that no
 * send has to concatenate them), and its resend bookkeeping.
 *
 * A WRITE's payload is either copied once into an engine buffer at submit, or — when the
 * caller filled a buffer from `reserveWrite()` — taken as is (reserve-and-fill: `dstd copy`
 * reads its source straight into the buffer that goes on the wire). Either way the engine
 * owns the payload from submit on and never changes it, so a resend (or a replay after an
 * export restart) sends the same bytes, and the digest taken over this private copy makes
 * corruption anywhere after it detectable (docs/security.md §6).
 */
import { computeDigest, digestSize, type ChecksumName } from "../crypto/checksum.ts";
import { Flag, HEADER_SIZE, Op } from "../wire/dst/constants.ts";
import { encodeHeader } from "../wire/dst/header.ts";
import type { Lease } from "./lease.ts";

/**
 * "fetch": a replication log FETCH (docs/protocol.md §11); "sync": a replica's initial-sync
 * request (§12). For both, `data` is the request payload and the reply payload is handed back.
 */
export type OpKind = "read" | "write" | "flush" | "trim" | "zero" | "fetch" | "sync";

export interface Request {
  kind: OpKind;
  offset: number;
  length: number;
  /**
   * WRITE payload (length bytes). Copied into an engine buffer at submit, unless `handOver`
   * says the caller gives the buffer away (then taken over without a copy: the caller must
   * not touch it again — reserve-and-fill).
   */
  data?: Uint8Array;
  handOver?: boolean;
  /**
   * With `handOver`: the engine gives the buffer back through this once nothing refers to it
   * any more (the txn completed, the socket took its bytes, a FLUSH released it from the
   * replay log — engine/lease.ts), so the caller can fill it again (a fixed-capacity pool).
   * Absent: a handed-over buffer is left to the garbage collector.
   */
  recycle?: (buffer: Uint8Array) => void;
  /** READ: put the data here (length bytes) and complete with it, instead of a fresh buffer. */
  into?: Uint8Array;
  /**
   * WRITE: the XXH3-64 of `data`, known already (a tree node passing on the digest its client
   * sent and the export verified: docs/tree.md "Performance"); with xxh3 checksums it is the
   * request's digest instead of a second pass over the data. It must be the hash of exactly
   * `data`, or the export refuses the write as corrupt.
   */
  xxh3?: bigint;
  fua?: boolean;
  noHole?: boolean;
  /** FETCH: Flag.ZSTD when the export granted Feature.FETCH_ZSTD and compressed replies are wanted. */
  zstd?: boolean;
  /** FETCH: Flag.FOLLOWS (the export granted Feature.FETCH_FOLLOWS; docs/protocol.md §11.2). */
  follows?: boolean;
  /**
   * When the caller took the request (the engine's clock), if before submit: the deadline counts
   * from then. A request that waited for room outside the engine has that much less of it, so
   * no request outlives a deadline a caller relies on (the kernel's io_timeout: docs/kernel.md).
   */
  since?: number;
}

/**
 * errno 0 = success; `data` is the READ payload (the request's `into` when it had one);
 * `flags` the reply header's flags (FETCH: Flag.ZSTD says the records are compressed);
 * `xxh3` a READ's XXH3-64 of `data` when its reply carried an xxh3 digest the engine verified
 * (undefined otherwise), so a tree node can pass it on instead of hashing the data again
 * (storage/port.ts readHashed, docs/tree.md "Performance").
 */
export type Completion = (errno: number, data: Uint8Array | null, flags?: number, xxh3?: bigint) => void;

export interface Txn {
  txid: number;
  kind: OpKind;
  /** The 56-byte frame header (its txid is fixed for the txn's life). */
  header: Uint8Array;
  /** WRITE payload owned by the engine, or null. */
  data: Uint8Array | null;
  /** Set when `data` was handed over with a way back (Request.recycle): who still holds it. */
  lease: Lease | null;
  /** End-to-end digest of `data` (DIGEST flag set), or null. */
  digest: Uint8Array | null;
  offset: number;
  length: number;
  fua: boolean;
  noHole: boolean;
  into: Uint8Array | null;
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
}

export const opcodeOf: Readonly<Record<OpKind, number>> = {
  read: Op.READ,
  write: Op.WRITE,
  flush: Op.FLUSH,
  trim: Op.TRIM,
  zero: Op.WRITE_ZEROES,
  fetch: Op.FETCH,
  sync: Op.SYNC,
};

/** Requests the export's exactly-once table records, the only ones MAX_TXID_SPAN bounds (docs/protocol.md §6.5). */
export const MUTATING: Readonly<Record<OpKind, boolean>> = { read: false, write: true, flush: false, trim: true, zero: true, fetch: false, sync: false };

/** Bytes the txn puts on the wire. */
export function wireBytes(txn: Txn): number {
  return HEADER_SIZE + (txn.data?.length ?? 0) + (txn.digest?.length ?? 0);
}

export interface TxnTiming {
  now: number;
  deadlineMs: number;
  resendIntervalMs: number;
}

/**
 * Build a txn. `data` must already be the engine's own buffer (see Request.data). The digest
 * (when a checksum is in force) is taken over that buffer.
 */
export function makeTxn(
  txid: number,
  request: Request,
  data: Uint8Array | null,
  checksum: ChecksumName,
  done: Completion | null,
  internal: Txn["internal"],
  timing: TxnTiming,
): Txn {
  let flags = request.fua ? Flag.FUA : 0;
  if (request.kind === "zero" && request.noHole) flags |= Flag.NO_HOLE;
  if (request.kind === "fetch" && request.zstd === true) flags |= Flag.ZSTD;
  if (request.kind === "fetch" && request.follows === true) flags |= Flag.FOLLOWS;
  let digest: Uint8Array | null = null;
  const size = request.kind === "write" ? digestSize(checksum) : 0;
  if (size > 0 && data !== null) {
    digest = new Uint8Array(size);
    if (checksum === "xxh3" && request.xxh3 !== undefined) new DataView(digest.buffer).setBigUint64(0, request.xxh3);
    else computeDigest(checksum, data, digest, 0);
    flags |= Flag.DIGEST;
  }
  const payloadLength = (data?.length ?? 0) + (digest?.length ?? 0);
  const header = new Uint8Array(HEADER_SIZE);
  const flush = request.kind === "flush";
  encodeHeader(header, 0, {
    version: 1,
    opcode: opcodeOf[request.kind],
    flags,
    txid,
    offset: flush ? 0 : request.offset,
    length: flush ? 0 : request.length,
    payloadLength,
    status: 0,
  });
  return {
    txid,
    kind: request.kind,
    header,
    data,
    lease: null,
    digest,
    offset: request.offset,
    length: request.length,
    fua: request.fua === true,
    noHole: request.noHole === true,
    into: request.into ?? null,
    done,
    internal,
    deadlineAt: Math.min(timing.now, request.since ?? timing.now) + timing.deadlineMs,
    sentOn: 0,
    nextResendAt: 0,
    resendIntervalMs: timing.resendIntervalMs,
    resends: 0,
    sends: 0,
    flushMark: -1,
  };
}
