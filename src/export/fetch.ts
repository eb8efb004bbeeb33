/**
 * @module export/fetch — serving FETCH (docs/protocol.md §11): a secondary copying this
 * export's replication log. The export only checks the right (Perm.REPLICA, from an allow rule
 * of access "replica"), bounds the answer, frames the reply; what the answer holds comes from
 * the export's `LogSource` (the replication primary's log, src/replication/ship-server.ts).
 * A request with Flag.ZSTD gets its records compressed when that makes the reply smaller
 * (§11.1); the reply's `length` stays the byte count of the records uncompressed.
 */
import { Errno } from "../lib/errno.ts";
import { RECORD_HEADER_SIZE } from "../crypto/record.ts";
import { FETCH_REPLY_PREFIX, Flag, HEADER_SIZE, MESSAGE_MAX, Op, REPLY_BIT } from "../wire/dst/constants.ts";
import { encodeHeader, type Header } from "../wire/dst/header.ts";
import { compressFetchReply, decodeFetchRequest, encodeFetchReason, type FetchRequest } from "../wire/dst/fetch.ts";
import type { SyncRequest } from "../wire/dst/sync.ts";
import { zstdCompress } from "../lib/zstd.ts";
import type { HandleResult, RequestHost } from "./requests.ts";

/** The answer to one FETCH: a reply payload (prefix + records), or a failure with its reason. */
export type FetchAnswer = { status: 0; payload: Uint8Array } | { status: number; reason: string };

/** A replicated export's log, as FETCH sees it. */
export interface LogSource {
  /** Smallest `length` a FETCH may ask for: one whole record of the largest size. */
  readonly minFetchBytes: number;
  /**
   * Answer one FETCH of `secondary` (its identity, or "anonymous"); `done` exactly once. The
   * payload is at most FETCH_REPLY_PREFIX + request.maxBytes bytes.
   */
  fetch(request: FetchRequest, secondary: string, done: (answer: FetchAnswer) => void): void;
  /**
   * Answer one SYNC (docs/protocol.md §12): BEGIN registers `secondary` at the sync point,
   * COPY reads [offset, offset + length); the payload is at most `budget` bytes.
   */
  sync(request: SyncRequest, offset: number, length: number, budget: number, secondary: string, done: (answer: FetchAnswer) => void): void;
}

export interface FetchHost extends RequestHost {
  readonly replica: boolean;
  readonly logSource: LogSource | null;
  readonly identity: string | null;
}

/** Handle one FETCH frame (the caller routed it here by opcode). */
export function handleFetch(host: FetchHost, header: Header, payload: Uint8Array): HandleResult {
  const source = host.logSource;
  const limit = host.maxPayload - FETCH_REPLY_PREFIX;
  const wanted = Math.min(header.length, limit);
  const reservation = RECORD_HEADER_SIZE + HEADER_SIZE + Math.max(FETCH_REPLY_PREFIX + wanted, MESSAGE_MAX);
  if (!host.replies.reserve(reservation)) return "wait";
  host.counters.requests++;
  const txid = header.txid;
  const fail = (status: number, reason: string) => {
    host.warn(`FETCH from seq ${header.offset}: ${reason}`);
    send(host, txid, header.offset, status, encodeFetchReason(reason), reservation);
  };
  if (source === null) {
    fail(Errno.ENOTSUP, `export ${host.exportName} is not a replication primary`);
    return "done";
  }
  if (!host.replica) {
    fail(Errno.EPERM, `no "replica" allow rule grants this client the log of export ${host.exportName}`);
    return "done";
  }
  if (wanted < source.minFetchBytes) {
    fail(Errno.EINVAL, `FETCH length ${header.length} is below one whole record (${source.minFetchBytes} bytes) or above the max payload`);
    return "done";
  }
  const request = decodeFetchRequest(header.offset, wanted, payload, header.flags);
  if (typeof request === "string") {
    fail(Errno.EINVAL, request);
    return "done";
  }
  let sync = true;
  source.fetch(request, host.identity ?? "anonymous", (answer) => {
    if (!host.live) host.replies.unreserve(reservation);
    else if ("payload" in answer) {
      // Never larger than the plain payload, so the reservation holds.
      const compressed = request.zstd === true ? compressFetchReply(answer.payload, zstdCompress) : null;
      const records = answer.payload.length - FETCH_REPLY_PREFIX;
      if (compressed !== null) send(host, txid, header.offset, 0, compressed, reservation, Flag.ZSTD, records);
      else send(host, txid, header.offset, 0, answer.payload, reservation, 0, records);
    }
    else send(host, txid, header.offset, answer.status, encodeFetchReason(answer.reason), reservation);
    if (!sync) host.completed();
  });
  sync = false;
  return "done";
}

function send(host: FetchHost, txid: number, offset: number, status: number, payload: Uint8Array, reservation: number, flags = 0, records = 0): void {
  const total = HEADER_SIZE + payload.length;
  const frame = host.replies.frame(total);
  encodeHeader(frame, RECORD_HEADER_SIZE, {
    version: 1,
    opcode: Op.FETCH | REPLY_BIT,
    flags,
    txid,
    offset,
    length: status === 0 ? records : 0,
    payloadLength: payload.length,
    status,
  });
  frame.set(payload, RECORD_HEADER_SIZE + HEADER_SIZE);
  host.replies.sendFrame(frame.subarray(0, RECORD_HEADER_SIZE + total), reservation);
}
