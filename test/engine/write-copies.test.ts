/**
 * The engine's private copies of large write payloads (src/engine/write-copies.ts): a copy is
 * equal to the caller's data and independent of it; a buffer given back is reused, once; a
 * disowned, resent or failed copy never is; the pool keeps at most its bound; and the replay
 * log and Durability give a copy back exactly when nothing can read it any more.
 */
import { describe, expect, test } from "bun:test";
import { Durability } from "../../src/engine/durability.ts";
import { Lease } from "../../src/engine/lease.ts";
import { makeTxn, type Request, type Txn } from "../../src/engine/txn.ts";
import { POOLED_MIN_BYTES, WriteCopies } from "../../src/engine/write-copies.ts";

const MiB = 1024 * 1024;
const filled = (length: number, byte: number) => new Uint8Array(length).fill(byte);
const timing = { now: 0, deadlineMs: 1000, resendIntervalMs: 100 };

describe("WriteCopies", () => {
  test("a copy equals the data and does not alias it; small writes are not pooled", () => {
    const copies = new WriteCopies(8 * MiB);
    const data = filled(MiB, 7);
    const copy = copies.copy(data);
    expect(copy).toEqual(data);
    data[0] = 9;
    expect(copy[0]).toBe(7);
    expect(copies.owns(copy)).toBe(true);
    const small = copies.copy(filled(POOLED_MIN_BYTES - 1, 1));
    expect(copies.owns(small)).toBe(false);
  });

  test("a buffer given back is reused, and only once however often it is given", () => {
    const copies = new WriteCopies(8 * MiB);
    const first = copies.copy(filled(MiB, 1));
    copies.give(first);
    copies.give(first);
    expect(copies.pooledBytes).toBe(MiB);
    const second = copies.copy(filled(MiB, 2));
    const third = copies.copy(filled(MiB, 3));
    expect(second.buffer).toBe(first.buffer);
    expect(third.buffer).not.toBe(first.buffer);
    expect(second[0]).toBe(2);
    expect(third[0]).toBe(3);
  });

  test("a disowned copy is never reused; the pool keeps at most its bound", () => {
    const copies = new WriteCopies(MiB);
    const a = copies.copy(filled(MiB, 1));
    copies.disown(a);
    copies.give(a);
    expect(copies.pooledBytes).toBe(0);
    const b = copies.copy(filled(MiB, 1));
    const c = copies.copy(filled(MiB, 1));
    copies.give(b);
    copies.give(c);
    expect(copies.pooledBytes).toBe(MiB);
  });
});

describe("copies under a lease come back through the replay log and Durability", () => {
  /** A txn as the engine makes it: a pooled copy under a lease that gives it back (engine/lease.ts). */
  const write = (d: Durability, fua: boolean, offset = 0) => {
    const request: Request = { kind: "write", offset, length: MiB, data: filled(MiB, 5), fua };
    const copy = d.copies.copy(request.data!);
    const txn = makeTxn(1, request, copy, "none", null, null, timing);
    txn.lease = new Lease(copy, (b) => d.copies.give(b));
    return txn;
  };
  const end = (txn: Txn) => txn.lease!.drop(); // the engine's letGo
  const flush = (d: Durability) => {
    const txn = makeTxn(2, { kind: "flush", offset: 0, length: 0 }, null, "none", null, null, timing);
    txn.flushMark = d.log.mark();
    d.settle(txn, 0);
  };

  test("a FUA write is given back when its txn ends", () => {
    const d = new Durability(64 * MiB);
    const txn = write(d, true);
    d.settle(txn, 0);
    end(txn);
    expect(d.copies.pooledBytes).toBe(MiB);
  });

  test("a plain write stays in the log until a FLUSH releases it", () => {
    const d = new Durability(64 * MiB);
    const txn = write(d, false);
    d.settle(txn, 0);
    end(txn);
    expect(d.copies.pooledBytes).toBe(0);
    expect(d.log.bytes).toBe(MiB);
    flush(d);
    expect(d.log.bytes).toBe(0);
    expect(d.copies.pooledBytes).toBe(MiB);
  });

  test("a write cut in pieces by a FUA comes back only when every piece is released", () => {
    const d = new Durability(64 * MiB);
    const txn = write(d, false);
    d.settle(txn, 0);
    end(txn);
    d.log.supersede(4096, 4096); // two pieces left, each holding the lease
    expect(d.copies.pooledBytes).toBe(0);
    flush(d);
    expect(d.copies.pooledBytes).toBe(MiB);
  });

  test("a copy still queued on a socket never comes back while queued", () => {
    const d = new Durability(64 * MiB);
    const txn = write(d, true);
    const release = txn.lease!.holdFor(); // the sink's queue
    d.settle(txn, 5);
    end(txn);
    expect(d.copies.pooledBytes).toBe(0);
    release();
    expect(d.copies.pooledBytes).toBe(MiB);
  });
});
