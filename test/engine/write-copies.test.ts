/**
 * The engine's private copies of large write payloads (src/engine/write-copies.ts): a copy is
 * equal to the caller's data and independent of it; a buffer given back is reused, once; a
 * disowned, resent or failed copy never is; the pool keeps at most its bound; and the replay
 * log and Durability give a copy back exactly when nothing can read it any more.
 */
import { describe, expect, test } from "bun:test";
import { Durability } from "../../src/engine/durability.ts";
import { ReplayLog } from "../../src/engine/replay-log.ts";
import { makeTxn, type Request } from "../../src/engine/txn.ts";
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

describe("the replay log and Durability give copies back", () => {
  test("released entries are handed back whole; cut ones are reported as cut", () => {
    const released: Uint8Array[] = [];
    const cut: Uint8Array[] = [];
    const log = new ReplayLog({ released: (d) => released.push(d), cut: (d) => cut.push(d) });
    const big = filled(MiB, 1);
    const other = filled(MiB, 2);
    expect(log.append("write", 0, MiB, big, false)).toBe(true);
    expect(log.append("write", 4 * MiB, MiB, other, false)).toBe(true);
    expect(log.append("write", 8 * MiB, 4096, filled(4096, 3), false)).toBe(false); // copied into a slab
    log.supersede(4 * MiB + 4096, 4096); // cuts `other` in two
    expect(cut).toEqual([other]);
    log.release(log.mark());
    expect(released[0]!.buffer).toBe(big.buffer); // a view of it (supersede rebuilt the columns)
    expect(released[0]!.length).toBe(MiB);
    expect(released.length).toBe(3); // big, and the two pieces of other
    expect(log.bytes).toBe(0);
  });

  const write = (d: Durability, fua: boolean, sends: number) => {
    const request: Request = { kind: "write", offset: 0, length: MiB, data: filled(MiB, 5), fua };
    const txn = makeTxn(1, request, d.copies.copy(request.data!), "none", null, null, timing);
    txn.sends = sends;
    return txn;
  };

  test("a FUA write sent once is given back at completion", () => {
    const d = new Durability(64 * MiB);
    d.settle(write(d, true, 1), 0);
    expect(d.copies.pooledBytes).toBe(MiB);
  });

  test("a plain write stays in the log until a FLUSH releases it", () => {
    const d = new Durability(64 * MiB);
    const txn = write(d, false, 1);
    d.settle(txn, 0);
    expect(d.copies.pooledBytes).toBe(0);
    expect(d.log.bytes).toBe(MiB);
    const flush = makeTxn(2, { kind: "flush", offset: 0, length: 0 }, null, "none", null, null, timing);
    flush.flushMark = d.log.mark();
    d.settle(flush, 0);
    expect(d.log.bytes).toBe(0);
    expect(d.copies.pooledBytes).toBe(MiB);
  });

  test("a resent or failed write is never given back (a socket queue may still hold it)", () => {
    const d = new Durability(64 * MiB);
    d.settle(write(d, true, 2), 0);
    d.settle(write(d, false, 1), 5);
    expect(d.copies.pooledBytes).toBe(0);
  });
});
