/**
 * @module engine/read-into — READ replies decoded straight into the caller's buffer.
 *
 * A reply that spans socket chunks (every large READ) used to be gathered into a pooled
 * buffer and then copied into the caller's `into`: two copies of every byte read. When the
 * reply's header names an outstanding READ with a buffer of the reply's length, the decoder
 * scatters the payload there instead (wire/dst/decoder.ts FrameAllocator): the data is copied
 * once, from the socket chunk, and only the digest (if any) lands elsewhere. The engine tells
 * the decoder to let go of a buffer whose request ended some other way (a deadline) while its
 * reply was half read (FrameDecoder.release), so a caller never sees bytes land after `done`.
 * Data of a reply that fails its digest was written into `into` before the check: the request
 * is not complete then (it is resent), and `into` is the caller's only once `done` says so.
 * Pure: no I/O.
 */
import { Op, REPLY_BIT } from "../wire/dst/constants.ts";
import type { ScatterBuffer } from "../wire/dst/decoder.ts";
import type { Header } from "../wire/dst/header.ts";
import type { Txn } from "./txn.ts";

/** Longest digest a READ reply carries after its data (crypto/checksum.ts: 32 bytes at most). */
const DIGEST_MAX = 64;

/** The owner of a scattered reply: where its digest went. */
export class Scattered {
  constructor(readonly digest: Uint8Array) {}
}

/** Where a reply spanning chunks should go: the READ's own buffer, or null (gather it as usual). */
export function scatterTarget(header: Header, txn: Txn | undefined, connection: number): ScatterBuffer | null {
  if (txn === undefined || txn.kind !== "read" || txn.into === null || txn.sentOn !== connection) return null;
  if (header.opcode !== (Op.READ | REPLY_BIT) || header.status !== 0 || header.length !== txn.into.length) return null;
  const digestLength = header.payloadLength - header.length;
  if (digestLength < 0 || digestLength > DIGEST_MAX) return null;
  const digest = new Uint8Array(digestLength);
  return { into: txn.into, rest: digest, owner: new Scattered(digest) };
}
