/**
 * @module test/replication/record — the log record codec (src/replication/record.ts): golden
 * bytes pinning the format of docs/replication.md §2, round trips, a stream split at every
 * byte, and detection of every single-byte corruption, truncation, gap, reorder and fork at
 * the exact record.
 */
import { describe, expect, test } from "bun:test";
import {
  CHAIN_ORIGIN,
  chainPointOf,
  decodeHeader,
  decodeRecordAt,
  encodeRecord,
  FIELD,
  invalidHeader,
  invalidSuccessor,
  MAX_RECORD_PAYLOAD,
  RECORD_HEADER_SIZE,
  RecordDecoder,
  RecordFlag,
  RecordOp,
  type LogRecord,
  type RecordFields,
} from "../../src/replication/record.ts";
import { Prng } from "../../src/lib/prng.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

const GOLDEN_WRITE =
  "4453544c0101000000000008000000000000000000000007000000000000000200060a24181e4000000000000000100000000000000000" +
  "08000000000000000536435289a4a4a2ff0123456789abcdefea75b5c6154be432647374642d6c6f67";
const GOLDEN_ZERO =
  "4453544c0103000100000000000000000000000000000008000000000000000200060a24181e400100000000000000000000000000100000" +
  "00000000000000072d06800538d394c20000000000000000357d88c10a1da9dd";

function chainOf(count: number, seed = 1, start = 1, maxLength = 3000): Uint8Array[] {
  const prng = new Prng(seed);
  const out: Uint8Array[] = [];
  let prev = 0n;
  for (let i = 0; i < count; i++) {
    const seq = start + i;
    const kind = prng.int(4);
    const length = 1 + prng.int(maxLength);
    const fields: RecordFields =
      kind === 0
        ? { op: RecordOp.TRIM, flags: 0, seq, generation: 1, lamport: 1000 + seq, offset: prng.int(1 << 20), length, committed: seq - 1 }
        : kind === 1
          ? { op: RecordOp.ZERO, flags: RecordFlag.NO_HOLE, seq, generation: 1, lamport: 1000 + seq, offset: 512, length, committed: 0 }
          : { op: RecordOp.WRITE, flags: 0, seq, generation: 1, lamport: 1000 + seq, offset: prng.int(1 << 20), length, committed: Math.max(0, seq - 2) };
    const payload = fields.op === RecordOp.WRITE ? prng.bytes(length) : new Uint8Array(0);
    const bytes = encodeRecord(fields, payload, prev);
    prev = decodeHeader(bytes).chain;
    out.push(bytes);
  }
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function decodeAll(stream: Uint8Array, chunkSizes: (i: number) => number): { records: LogRecord[]; error: string | null } {
  const decoder = new RecordDecoder();
  const records: LogRecord[] = [];
  let at = 0;
  let error: string | null = null;
  for (let i = 0; at < stream.length && error === null; i++) {
    const n = Math.max(1, chunkSizes(i));
    error = decoder.push(stream.subarray(at, at + n), (r) => records.push({ ...r, payload: r.payload.slice() }));
    at += n;
  }
  return { records, error };
}

describe("golden bytes", () => {
  test("a write record", () => {
    const bytes = encodeRecord(
      { op: RecordOp.WRITE, flags: 0, seq: 7, generation: 2, lamport: 1700000000000000, offset: 4096, length: 8, committed: 5 },
      new TextEncoder().encode("dstd-log"),
      0x0123456789abcdefn,
    );
    expect(hex(bytes)).toBe(GOLDEN_WRITE);
    // The fields sit where docs/replication.md §2 says.
    expect(hex(bytes.subarray(0, 4))).toBe("4453544c"); // "DSTL"
    expect(bytes[FIELD.version]).toBe(1);
    expect(bytes[FIELD.op]).toBe(RecordOp.WRITE);
    expect(hex(bytes.subarray(FIELD.seq, FIELD.seq + 8))).toBe("0000000000000007");
    expect(hex(bytes.subarray(FIELD.prev, FIELD.prev + 8))).toBe("0123456789abcdef");
    expect(hex(bytes.subarray(FIELD.payloadDigest, FIELD.payloadDigest + 8))).toBe(Bun.hash.xxHash3("dstd-log").toString(16).padStart(16, "0"));
    expect(hex(bytes.subarray(FIELD.chain, FIELD.chain + 8))).toBe(Bun.hash.xxHash3(bytes.subarray(0, 80)).toString(16).padStart(16, "0"));
    expect(new TextDecoder().decode(bytes.subarray(RECORD_HEADER_SIZE))).toBe("dstd-log");
  });

  test("a write-zeroes record with NO_HOLE", () => {
    const bytes = encodeRecord(
      { op: RecordOp.ZERO, flags: RecordFlag.NO_HOLE, seq: 8, generation: 2, lamport: 1700000000000001, offset: 0, length: 1 << 20, committed: 7 },
      new Uint8Array(0),
      0n,
    );
    expect(hex(bytes)).toBe(GOLDEN_ZERO);
    expect(bytes.length).toBe(RECORD_HEADER_SIZE);
  });
});

describe("round trip", () => {
  test("every field survives encode → decode", () => {
    for (const bytes of chainOf(200, 7)) {
      const result = decodeRecordAt(bytes, 0);
      expect(result.kind).toBe("record");
      if (result.kind !== "record") continue;
      const again = encodeRecord(result.record, result.record.payload, result.record.prev);
      expect(hex(again)).toBe(hex(bytes));
    }
  });

  test("a 1 MiB payload is the largest a record carries", () => {
    const payload = new Uint8Array(MAX_RECORD_PAYLOAD).fill(7);
    const bytes = encodeRecord({ op: RecordOp.WRITE, flags: 0, seq: 1, generation: 1, lamport: 1, offset: 0, length: payload.length, committed: 0 }, payload, 0n);
    expect(decodeRecordAt(bytes, 0).kind).toBe("record");
    expect(() =>
      encodeRecord({ op: RecordOp.WRITE, flags: 0, seq: 1, generation: 1, lamport: 1, offset: 0, length: payload.length + 1, committed: 0 }, new Uint8Array(payload.length + 1), 0n),
    ).toThrow();
  });

  test("a stream split at every byte decodes to the same records", () => {
    const parts = chainOf(10, 3, 1, 700);
    const stream = concat(parts);
    const whole = decodeAll(stream, () => stream.length);
    expect(whole.error).toBeNull();
    expect(whole.records.map((r) => r.seq)).toEqual(parts.map((_, i) => i + 1));
    for (let split = 1; split < stream.length; split++) {
      const decoder = new RecordDecoder();
      const seqs: number[] = [];
      expect(decoder.push(stream.subarray(0, split), (r) => seqs.push(r.seq))).toBeNull();
      expect(decoder.push(stream.subarray(split), (r) => seqs.push(r.seq))).toBeNull();
      expect(seqs.length).toBe(parts.length);
      expect(decoder.bufferedBytes).toBe(0);
    }
    // One byte at a time.
    const bytewise = decodeAll(stream, () => 1);
    expect(bytewise.error).toBeNull();
    expect(bytewise.records.map((r) => hex(r.payload))).toEqual(whole.records.map((r) => hex(r.payload)));
  }, 60_000);
});

describe("corruption is found at the exact record", () => {
  const parts = chainOf(6, 11);
  const stream = concat(parts);
  const starts: number[] = [];
  parts.reduce((at, p) => (starts.push(at), at + p.length), 0);
  const recordAt = (byte: number) => starts.filter((s) => s <= byte).length; // 1-based seq

  test("every flipped byte stops the decoder at the record holding it, never after", { timeout: 60_000 }, () => {
    for (let byte = 0; byte < stream.length; byte++) {
      const bad = stream.slice();
      bad[byte]! ^= 0x20;
      const { records, error } = decodeAll(bad, (i) => 1 + ((i * 7919) % 97));
      const seq = recordAt(byte);
      expect(error).not.toBeNull();
      expect(records.length).toBe(seq - 1);
      // The reason names the record whenever its seq field is intact.
      if (byte - starts[seq - 1]! < FIELD.seq || byte - starts[seq - 1]! >= FIELD.seq + 8) {
        if (byte - starts[seq - 1]! >= 4) expect(error!).toContain(`seq ${seq}`);
      }
    }
  });

  test("a gap, a repeat and a fork are refused with the record named", () => {
    const gap = decodeAll(concat([parts[0]!, parts[1]!, parts[3]!]), () => 4096);
    expect(gap.records.length).toBe(2);
    expect(gap.error).toContain("gap: record seq 4 follows seq 2");
    const repeat = decodeAll(concat([parts[0]!, parts[1]!, parts[1]!]), () => 4096);
    expect(repeat.error).toContain("record seq 2 follows seq 2");
    // A fork: a different record 3 that also follows record 2.
    const point = chainPointOf(decodeHeader(parts[1]!));
    const other = encodeRecord({ op: RecordOp.TRIM, flags: 0, seq: 3, generation: 2, lamport: point.lamport + 5, offset: 0, length: 4096, committed: 2 }, new Uint8Array(0), point.chain);
    const forked = decodeAll(concat([parts[0]!, parts[1]!, other, parts[3]!]), () => 4096);
    expect(forked.records.map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(forked.error).toContain("record seq 4: chain broken");
  });

  test("successor rules: Lamport time and generation never go back", () => {
    const h = decodeHeader(parts[0]!);
    const after = { seq: 0 + h.seq - 1, chain: h.prev, lamport: h.lamport, generation: h.generation };
    expect(invalidSuccessor({ ...after, seq: 0 }, h)).toBeNull(); // origin accepts anything
    expect(invalidSuccessor(CHAIN_ORIGIN, h)).toBeNull();
    expect(invalidSuccessor({ ...after, seq: 5, chain: h.prev }, { ...h, seq: 6, lamport: h.lamport })).toContain("Lamport");
    expect(invalidSuccessor({ ...after, seq: 5, lamport: 0, generation: 3 }, { ...h, seq: 6 })).toContain("generation 1 after 3");
  });

  test("header rules: each refused with a reason", () => {
    const base = parts[0]!.slice();
    expect(invalidHeader(base)).toBeNull();
    expect(invalidHeader(base.subarray(0, 40))).toContain("needs 88 bytes");
    const magic = base.slice();
    magic[0] = 0;
    expect(invalidHeader(magic)).toContain("not a log record");
    const truncated = decodeRecordAt(base.subarray(0, base.length - 1), 0);
    expect(truncated.kind).toBe("short");
  });
});
