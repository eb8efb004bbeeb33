/**
 * SYNC (docs/protocol.md §12, src/wire/dst/sync.ts): golden bytes of the request and the BEGIN
 * reply, COPY reply round trips and the reasons a bad one is refused (runs out of order,
 * outside the range, bytes missing or left over), the header rules. Also the pure helpers the
 * sync uses on either side: dropping zero pieces (sync-server.ts) and coalescing a fork
 * repair's ranges (initial-sync.ts).
 */
import { describe, expect, test } from "bun:test";
import { Op, REPLY_BIT, SYNC_REQUEST_SIZE, SyncKind } from "../../src/wire/dst/constants.ts";
import { decodeHeader, encodeFrame, invalidHeader } from "../../src/wire/dst/header.ts";
import { decodeSyncBegin, decodeSyncCopy, decodeSyncRequest, encodeSyncBegin, encodeSyncCopy, encodeSyncRequest } from "../../src/wire/dst/sync.ts";
import { dropZeroPieces } from "../../src/replication/sync-server.ts";
import { coalesceRanges } from "../../src/replication/initial-sync.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const u64 = (n: number) => n.toString(16).padStart(16, "0");

describe("SYNC payloads", () => {
  test("request: golden bytes and round trip", () => {
    const payload = encodeSyncRequest({ kind: SyncKind.BEGIN, keepFrom: 7, chain: 0xfedcba9876543210n, lamport: 5, generation: 2 });
    expect(payload.length).toBe(SYNC_REQUEST_SIZE);
    expect(hex(payload)).toBe(u64(1) + u64(7) + "fedcba9876543210" + u64(5) + u64(2));
    expect(decodeSyncRequest(payload)).toEqual({ kind: SyncKind.BEGIN, keepFrom: 7, chain: 0xfedcba9876543210n, lamport: 5, generation: 2 });
  });

  test("request: reasons", () => {
    const bad = encodeSyncRequest({ kind: SyncKind.COPY, keepFrom: 0, chain: 0n, lamport: 0, generation: 0 });
    bad[7] = 3;
    expect(decodeSyncRequest(bad)).toBe("SYNC kind 3 is not 1 (BEGIN) or 2 (COPY)");
    expect(decodeSyncRequest(bad.subarray(0, 16))).toBe("SYNC payload length 16 is not 40");
    const huge = encodeSyncRequest({ kind: SyncKind.BEGIN, keepFrom: 0, chain: 0n, lamport: 0, generation: 0 });
    huge.fill(0xff, 8, 16);
    expect(decodeSyncRequest(huge)).toBe("SYNC request field exceeds 2^53");
  });

  test("BEGIN reply: golden bytes, round trip, a sync point past the durable seq refused", () => {
    const begin = { point: { seq: 9, chain: 0x0123456789abcdefn, lamport: 77, generation: 3 }, size: 1 << 30, durable: 12 };
    const payload = encodeSyncBegin(begin);
    expect(hex(payload)).toBe(u64(9) + "0123456789abcdef" + u64(77) + u64(3) + u64(1 << 30) + u64(12));
    expect(decodeSyncBegin(payload)).toEqual(begin);
    expect(decodeSyncBegin(encodeSyncBegin({ ...begin, durable: 8 }))).toBe("SYNC BEGIN reply: sync point seq 9 is beyond the durable seq 8");
    expect(decodeSyncBegin(payload.subarray(1))).toBe("SYNC BEGIN reply of 47 bytes is not 48");
  });

  test("COPY reply: runs and their data round trip; gaps are implied zeroes", () => {
    const a = new Uint8Array([1, 2, 3, 4]);
    const b = new Uint8Array([5, 6]);
    const payload = encodeSyncCopy({ end: 4096, durable: 44, runs: [{ offset: 100, length: 4, data: a }, { offset: 2000, length: 2, data: b }] });
    expect(payload.length).toBe(24 + 2 * 16 + 6);
    const decoded = decodeSyncCopy(payload, 0, 8192);
    if (typeof decoded === "string") throw new Error(decoded);
    expect(decoded.end).toBe(4096);
    expect(decoded.durable).toBe(44);
    expect(decoded.runs.map((r) => [r.offset, r.length, [...r.data]])).toEqual([[100, 4, [1, 2, 3, 4]], [2000, 2, [5, 6]]]);
  });

  test("COPY reply: reasons for a reply that does not fit its request", () => {
    const run = (offset: number, length: number) => ({ offset, length, data: new Uint8Array(length) });
    expect(decodeSyncCopy(encodeSyncCopy({ end: 0, durable: 0, runs: [] }), 0, 10)).toBe("SYNC COPY reply end 0 is outside (0, 10]");
    expect(decodeSyncCopy(encodeSyncCopy({ end: 11, durable: 0, runs: [] }), 0, 10)).toBe("SYNC COPY reply end 11 is outside (0, 10]");
    expect(decodeSyncCopy(encodeSyncCopy({ end: 10, durable: 0, runs: [run(5, 2), run(4, 1)] }), 0, 10)).toBe("SYNC COPY run 1 [4, +1) is out of order or outside [0, 10)");
    expect(decodeSyncCopy(encodeSyncCopy({ end: 10, durable: 0, runs: [run(8, 4)] }), 0, 10)).toBe("SYNC COPY run 0 [8, +4) is out of order or outside [0, 10)");
    const short = encodeSyncCopy({ end: 10, durable: 0, runs: [run(0, 4)] });
    expect(decodeSyncCopy(short.subarray(0, short.length - 1), 0, 10)).toBe("SYNC COPY run 0 needs 4 bytes, the payload has 3 left");
    const long = new Uint8Array(short.length + 1);
    long.set(short);
    expect(decodeSyncCopy(long, 0, 10)).toBe("SYNC COPY reply has 1 bytes after its runs");
    expect(decodeSyncCopy(new Uint8Array(10), 0, 10)).toBe("SYNC COPY reply of 10 bytes is shorter than its 24-byte prefix");
  });
});

describe("SYNC frames", () => {
  const check = (frame: Uint8Array) => invalidHeader(decodeHeader(frame, 0), 1 << 20);
  test("a request carries exactly 40 bytes; a reply any payload up to the max", () => {
    expect(check(encodeFrame({ opcode: Op.SYNC, txid: 1, offset: 0, length: 1 << 20 }, new Uint8Array(SYNC_REQUEST_SIZE)))).toBeNull();
    expect(check(encodeFrame({ opcode: Op.SYNC, txid: 1 }, new Uint8Array(16)))).toBe("SYNC payload length 16 is not 40");
    expect(check(encodeFrame({ opcode: Op.SYNC, txid: 1, flags: 1 }, new Uint8Array(40)))).toBe("flags 0x0001 not allowed on SYNC");
    expect(check(encodeFrame({ opcode: Op.SYNC | REPLY_BIT, txid: 1, status: 0 }, new Uint8Array(100)))).toBeNull();
  });
});

describe("sync helpers", () => {
  test("all-zero 64 KiB pieces are dropped from the runs, while the run table has room", () => {
    const data = new Uint8Array(256 << 10);
    data[10] = 1; // piece 0 has data
    data[(192 << 10) + 5] = 2; // piece 3 has data; pieces 1 and 2 are zero
    const runs = dropZeroPieces([{ offset: 0, length: data.length, data }], 16);
    expect(runs.map((r) => [r.offset, r.length])).toEqual([[0, 64 << 10], [192 << 10, 64 << 10]]);
    expect(runs[1]!.data[5]).toBe(2);
    // No room to split: kept whole.
    expect(dropZeroPieces([{ offset: 0, length: data.length, data }], 1).map((r) => [r.offset, r.length])).toEqual([[0, 256 << 10]]);
    // Unaligned runs split on the disk's 64 KiB boundaries.
    const odd = new Uint8Array(100 << 10);
    odd[0] = 1;
    expect(dropZeroPieces([{ offset: 1000, length: odd.length, data: odd }], 16).map((r) => [r.offset, r.length])).toEqual([[1000, (64 << 10) - 1000]]);
  });

  test("a fork repair's ranges are aligned, merged and coalesced to the limit", () => {
    expect(coalesceRanges([[5000, 10], [0, 100], [4096, 4096]], 1 << 30)).toEqual([[0, 8192]]);
    expect(coalesceRanges([[3 << 20, 4096], [0, 512]], 1 << 30)).toEqual([[0, 4096], [3 << 20, 4096]]);
    const many: [number, number][] = Array.from({ length: 100 }, (_, i) => [i * 1_000_000, 4096]);
    const few = coalesceRanges(many, 1 << 30, 8);
    expect(few.length).toBe(8);
    for (const [o, l] of many) expect(few.some(([fo, fl]) => fo <= o && o + l <= fo + fl)).toBe(true);
    expect(coalesceRanges([[0, 0]], 1 << 30)).toEqual([]);
    // A disk that is not a multiple of the alignment: no range past its end (cluster sim seed 2).
    expect(coalesceRanges([[13000, 512], [20000, 10]], 13824)).toEqual([[12288, 13824 - 12288]]);
  });
});
