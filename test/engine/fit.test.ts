/**
 * engine/fit.ts: a READ or WRITE larger than the export's live MAX_PAYLOAD becomes pieces of
 * it — each with its own txid and digest over its own bytes, the whole's deadline, one hold
 * per piece on a handed-over buffer's lease — and the caller's request completes once, after
 * the last piece, with the first error (a READ assembled in one buffer). The engine's use of
 * it, against a real export that restarts with a smaller limit, is in
 * test/storage/tree/remote-restart.test.ts.
 */
import { expect, test } from "bun:test";
import { computeDigest } from "../../src/crypto/checksum.ts";
import { fitTxn, piecesOf, type MakePiece } from "../../src/engine/fit.ts";
import { Lease } from "../../src/engine/lease.ts";
import { makeTxn, type Completion, type Txn } from "../../src/engine/txn.ts";

const timing = { now: 1_000, deadlineMs: 5_000, resendIntervalMs: 100 };

function maker(): { make: MakePiece; next: () => number } {
  let txid = 100;
  return {
    make: (request, data, done) => makeTxn(txid++, request, data, "xxh3", done, null, { ...timing, now: 3_000 }),
    next: () => txid,
  };
}

test("piecesOf: only READ and WRITE larger than the limit are cut", () => {
  expect(piecesOf("write", 4096, 4096)).toBe(1);
  expect(piecesOf("write", 4097, 4096)).toBe(2);
  expect(piecesOf("read", 1 << 20, 64 * 1024)).toBe(16);
  expect(piecesOf("zero", 1 << 20, 4096)).toBe(1);
  expect(piecesOf("flush", 0, 4096)).toBe(1);
});

test("a WRITE under a lease: pieces of the limit with their own digests and the whole's deadline; the lease held once per piece; one completion with the first error", () => {
  const data = new Uint8Array(10_000).map((_, i) => i & 0xff);
  let recycled = 0;
  const lease = new Lease(data, () => void recycled++);
  const calls: number[] = [];
  const done: Completion = (errno) => void calls.push(errno);
  const whole = makeTxn(1, { kind: "write", offset: 8192, length: data.length, fua: true }, data, "xxh3", done, null, timing);
  whole.lease = lease;
  const { make } = maker();
  const pieces = fitTxn(whole, 4096, timing.deadlineMs, make);
  expect(pieces.map((p) => [p.txid, p.offset, p.length, p.fua])).toEqual([
    [100, 8192, 4096, true],
    [101, 12288, 4096, true],
    [102, 16384, 1808, true],
  ]);
  for (const piece of pieces) {
    const digest = new Uint8Array(8);
    computeDigest("xxh3", piece.data!, digest, 0);
    expect(piece.digest).toEqual(digest);
    expect(piece.deadlineAt).toBe(whole.deadlineAt); // made later, same deadline
    expect(piece.lease).toBe(lease);
  }
  // The whole is spent: it never completes, and its hold went to the pieces.
  expect(whole.done).toBeNull();
  expect(whole.lease).toBeNull();
  expect(lease.held).toBe(3);
  pieces[1]!.done!(0, null);
  pieces[2]!.done!(5, null);
  expect(calls).toEqual([]);
  pieces[0]!.done!(0, null);
  expect(calls).toEqual([5]);
  for (const piece of pieces) piece.lease!.drop();
  expect(recycled).toBe(1);
});

test("a READ without a buffer of its own is assembled in one; a READ that fits, an internal txn and a TRIM are left whole", () => {
  let got: Uint8Array | null = null;
  const done: Completion = (errno, data) => void (got = errno === 0 ? data : null);
  const read = makeTxn(1, { kind: "read", offset: 0, length: 3 * 4096 }, null, "xxh3", done, null, timing);
  const { make } = maker();
  const pieces = fitTxn(read, 4096, timing.deadlineMs, make);
  expect(pieces.length).toBe(3);
  pieces.forEach((piece, i) => {
    piece.into!.fill(i + 1);
    piece.done!(0, piece.into);
  });
  expect(got!.length).toBe(3 * 4096);
  expect([got![0], got![4096], got![8192]]).toEqual([1, 2, 3]);
  const fits = makeTxn(2, { kind: "read", offset: 0, length: 4096 }, null, "xxh3", done, null, timing);
  expect(fitTxn(fits, 4096, timing.deadlineMs, make)).toEqual([fits]);
  const replay: Txn = makeTxn(3, { kind: "write", offset: 0, length: 8192 }, new Uint8Array(8192), "xxh3", null, "replay", timing);
  expect(fitTxn(replay, 4096, timing.deadlineMs, make)).toEqual([replay]);
  const trim = makeTxn(4, { kind: "trim", offset: 0, length: 1 << 20 }, null, "xxh3", done, null, timing);
  expect(fitTxn(trim, 4096, timing.deadlineMs, make)).toEqual([trim]);
});
