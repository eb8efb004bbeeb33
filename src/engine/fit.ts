/**
 * @module engine/fit — READs and WRITEs cut to the export's live MAX_PAYLOAD.
 *
 * An export that restarts may come back granting a smaller MAX_PAYLOAD (docs/protocol.md
 * §6.2, §6.5 "Epoch"). A READ or WRITE taken before that WELCOME (outstanding across the
 * reconnect, or waiting in a caller's queue and submitted after it) would be refused whole as
 * a protocol error: the connection dropped, the request resent on the next one and refused
 * again, every other request stalled with it, until its deadline failed it. Such a request is
 * sent as pieces of the live limit instead, each a txn of its own (its own txid and digest),
 * completing the caller's request once, when every piece did, with the first error. Pieces
 * keep the request's deadline, and a handed-over buffer's lease is held once per piece
 * (engine/lease.ts). The replay's own pieces are fitted where they are made
 * (engine/replay-log.ts fitPieces). Pure: no I/O, no time.
 */
import type { Completion, Request, Txn } from "./txn.ts";

/** Makes the txn of one piece: its request, its data (a view of the whole's), its completion. */
export type MakePiece = (request: Request, data: Uint8Array | null, done: Completion) => Txn;

/** How many txns `length` bytes of a READ or WRITE take under `maxPayload`. */
export function piecesOf(kind: Request["kind"], length: number, maxPayload: number): number {
  return (kind === "read" || kind === "write") && length > maxPayload ? Math.ceil(length / Math.max(1, maxPayload)) : 1;
}

/**
 * `txn` as it may be sent: itself when it fits, else its pieces (then `txn` is spent: it never
 * completes, and its hold on a leased buffer is handed to the pieces). `deadlineMs` is the
 * engine's: a piece's deadline is the whole's.
 */
export function fitTxn(txn: Txn, maxPayload: number, deadlineMs: number, make: MakePiece): Txn[] {
  const count = piecesOf(txn.kind, txn.length, maxPayload);
  if (count === 1 || txn.internal !== null || txn.done === null) return [txn];
  const step = Math.max(1, maxPayload);
  const whole = txn.done;
  const into = txn.kind === "read" ? (txn.into ?? new Uint8Array(txn.length)) : null;
  let left = count;
  let failure = 0;
  const joined: Completion = (errno) => {
    if (errno !== 0 && failure === 0) failure = errno;
    if (--left === 0) whole(failure, failure === 0 ? into : null);
  };
  const since = txn.deadlineAt - deadlineMs;
  const pieces: Txn[] = [];
  for (let at = 0; at < txn.length; at += step) {
    const length = Math.min(step, txn.length - at);
    const request: Request = { kind: txn.kind, offset: txn.offset + at, length, fua: txn.fua, since };
    if (into !== null) request.into = into.subarray(at, at + length);
    const piece = make(request, txn.data?.subarray(at, at + length) ?? null, joined);
    if (txn.lease !== null) {
      txn.lease.hold();
      piece.lease = txn.lease;
    }
    pieces.push(piece);
  }
  const lease = txn.lease;
  txn.lease = null;
  txn.done = null;
  lease?.drop();
  return pieces;
}
