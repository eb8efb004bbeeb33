/**
 * @module export/sync — serving SYNC (docs/protocol.md §12): a new or repaired secondary
 * copying this export's disk before it ships the log. The export checks the right
 * (Perm.REPLICA: SYNC only reads), bounds the answer, frames the reply; the answer itself
 * comes from the export's `LogSource` (src/replication/sync-server.ts).
 */
import { Errno } from "../lib/errno.ts";
import { RECORD_HEADER_SIZE } from "../crypto/record.ts";
import { HEADER_SIZE, MESSAGE_MAX, Op, REPLY_BIT } from "../wire/dst/constants.ts";
import { encodeHeader, type Header } from "../wire/dst/header.ts";
import { encodeFetchReason } from "../wire/dst/fetch.ts";
import { decodeSyncRequest } from "../wire/dst/sync.ts";
import type { FetchHost } from "./fetch.ts";
import type { HandleResult } from "./requests.ts";

/** Most payload bytes one SYNC reply carries (8 MiB of data plus its run table), below any max payload cap. */
export const SYNC_REPLY_MAX = (8 << 20) + (64 << 10) + 24;

/** Handle one SYNC frame (the caller routed it here by opcode). */
export function handleSync(host: FetchHost, header: Header, payload: Uint8Array): HandleResult {
  const source = host.logSource;
  const budget = Math.min(host.maxPayload, SYNC_REPLY_MAX);
  const reservation = RECORD_HEADER_SIZE + HEADER_SIZE + Math.max(budget, MESSAGE_MAX);
  if (!host.replies.reserve(reservation)) return "wait";
  host.counters.requests++;
  const txid = header.txid;
  const fail = (status: number, reason: string) => {
    host.warn(`SYNC at ${header.offset}: ${reason}`);
    send(host, txid, header.offset, status, encodeFetchReason(reason), reservation);
  };
  if (source === null) {
    fail(Errno.ENOTSUP, `export ${host.exportName} is not a replication primary`);
    return "done";
  }
  if (!host.replica) {
    fail(Errno.EPERM, `no "replica" allow rule grants this client the initial sync of export ${host.exportName}`);
    return "done";
  }
  const request = decodeSyncRequest(payload);
  if (typeof request === "string") {
    fail(Errno.EINVAL, request);
    return "done";
  }
  let sync = true;
  source.sync(request, header.offset, header.length, budget, host.identity ?? "anonymous", (answer) => {
    if (!host.live) host.replies.unreserve(reservation);
    else if ("payload" in answer) send(host, txid, header.offset, 0, answer.payload, reservation);
    else send(host, txid, header.offset, answer.status, encodeFetchReason(answer.reason), reservation);
    if (!sync) host.completed();
  });
  sync = false;
  return "done";
}

function send(host: FetchHost, txid: number, offset: number, status: number, payload: Uint8Array, reservation: number): void {
  const total = HEADER_SIZE + payload.length;
  const frame = host.replies.frame(total);
  encodeHeader(frame, RECORD_HEADER_SIZE, { version: 1, opcode: Op.SYNC | REPLY_BIT, flags: 0, txid, offset, length: 0, payloadLength: payload.length, status });
  frame.set(payload, RECORD_HEADER_SIZE + HEADER_SIZE);
  host.replies.sendFrame(frame.subarray(0, RECORD_HEADER_SIZE + total), reservation);
}
