/**
 * @module test/replication/record.fuzz — fuzzes the log record decoder
 * (src/replication/record.ts) with mutated record streams: bit flips, truncation, splices,
 * repeated and dropped records, and header fields set to interesting values with the header
 * checksum recomputed (so field validation is reached, not only the checksum). Properties:
 * it never throws; every record it delivers is valid and follows the one before; the records
 * before the first mutated byte come out unchanged; it never holds more than one record.
 *   FUZZ_ITERATIONS=1000000 bun test test/replication/record.fuzz.test.ts
 *   FUZZ_SEED=1234 bun test test/replication/record.fuzz.test.ts     # replay a failure
 */
import { expect, test } from "bun:test";
import { Prng } from "../../src/lib/prng.ts";
import { writeU32 } from "../../src/wire/dst/bytes.ts";
import {
  CHAIN_ORIGIN,
  chainPointOf,
  decodeHeader,
  encodeRecord,
  FIELD,
  invalidHeader,
  invalidPayload,
  invalidSuccessor,
  MAX_RECORD_SIZE,
  RecordDecoder,
  RecordFlag,
  RecordOp,
  type ChainPoint,
  type RecordFields,
} from "../../src/replication/record.ts";

const iterations = Number(process.env.FUZZ_ITERATIONS ?? 20_000);
const seed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));

const INTERESTING = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 1 << 20, (1 << 20) + 1];

function makeStream(prng: Prng): { stream: Uint8Array; starts: number[] } {
  const count = 1 + prng.int(6);
  const parts: Uint8Array[] = [];
  let prev = 0n;
  for (let i = 0; i < count; i++) {
    const seq = 1 + i;
    const op = prng.pick([RecordOp.WRITE, RecordOp.WRITE, RecordOp.TRIM, RecordOp.ZERO, RecordOp.RESIZE, RecordOp.MARK]);
    const length = op === RecordOp.MARK ? 0 : 1 + prng.int(op === RecordOp.WRITE ? 2048 : 1 << 30);
    const fields: RecordFields = {
      op,
      flags: op === RecordOp.ZERO && prng.chance(0.5) ? RecordFlag.NO_HOLE : op === RecordOp.MARK ? RecordFlag.RESYNC_BEGIN : 0,
      seq,
      generation: 1,
      lamport: 100 + seq,
      offset: op === RecordOp.RESIZE || op === RecordOp.MARK ? 0 : prng.int(1 << 30),
      length,
      committed: seq - 1,
    };
    const bytes = encodeRecord(fields, op === RecordOp.WRITE ? prng.bytes(length) : new Uint8Array(0), prev);
    prev = decodeHeader(bytes).chain;
    parts.push(bytes);
  }
  const starts: number[] = [];
  let total = 0;
  for (const p of parts) {
    starts.push(total);
    total += p.length;
  }
  const stream = new Uint8Array(total);
  parts.forEach((p, i) => stream.set(p, starts[i]!));
  return { stream, starts };
}

/** Returns the mutated stream and the first byte that differs from the original. */
function mutate(prng: Prng, stream: Uint8Array, starts: number[]): { input: Uint8Array; firstChanged: number } {
  const input = stream.slice();
  switch (prng.int(6)) {
    case 0: {
      const at = prng.int(input.length);
      input[at]! ^= 1 << prng.int(8);
      return { input, firstChanged: at };
    }
    case 1: {
      const at = prng.int(input.length);
      return { input: input.subarray(0, at), firstChanged: at };
    }
    case 2: {
      // A field set to an interesting value, header checksum recomputed.
      const record = prng.int(starts.length);
      const base = starts[record]!;
      const field = prng.pick([FIELD.op, FIELD.flags, FIELD.payloadLength, FIELD.reserved, FIELD.seq, FIELD.generation, FIELD.lamport, FIELD.offset, FIELD.length, FIELD.committed]);
      const value = prng.pick(INTERESTING);
      if (field === FIELD.op) input[base + field] = value & 0xff;
      else if (field === FIELD.flags) input[base + field + 1] = value & 0xff;
      else writeU32(input, base + field + (field >= FIELD.seq ? 4 : 0), value >>> 0);
      const sum = Bun.hash.xxHash3(input.subarray(base, base + FIELD.chain));
      writeU32(input, base + FIELD.chain, Number(sum >> 32n));
      writeU32(input, base + FIELD.chain + 4, Number(sum & 0xffffffffn));
      return { input, firstChanged: base };
    }
    case 3: {
      // Drop or repeat a whole record.
      const i = prng.int(starts.length);
      const start = starts[i]!;
      const end = starts[i + 1] ?? stream.length;
      if (prng.chance(0.5)) {
        const out = new Uint8Array(stream.length - (end - start));
        out.set(stream.subarray(0, start));
        out.set(stream.subarray(end), start);
        return { input: out, firstChanged: start };
      }
      const out = new Uint8Array(stream.length + (end - start));
      out.set(stream.subarray(0, end));
      out.set(stream.subarray(start), end);
      return { input: out, firstChanged: end };
    }
    case 4:
      return { input: prng.bytes(prng.int(400)), firstChanged: 0 };
    default: {
      // Splice random bytes in.
      const at = prng.int(input.length);
      const junk = prng.bytes(1 + prng.int(64));
      const out = new Uint8Array(input.length + junk.length);
      out.set(input.subarray(0, at));
      out.set(junk, at);
      out.set(input.subarray(at), at + junk.length);
      return { input: out, firstChanged: at };
    }
  }
}

test(`record decoder survives ${iterations} fuzz inputs (seed ${seed})`, () => {
  const prng = new Prng(seed);
  let delivered = 0;
  let rejected = 0;
  try {
    for (let i = 0; i < iterations; i++) {
      const { stream, starts } = makeStream(prng);
      const { input, firstChanged } = mutate(prng, stream, starts);
      const decoder = new RecordDecoder();
      let point: ChainPoint = CHAIN_ORIGIN;
      let offset = 0;
      let error: string | null = null;
      let at = 0;
      while (at < input.length && error === null) {
        const n = 1 + prng.int(prng.chance(0.5) ? 64 : 4096);
        error = decoder.push(input.subarray(at, at + n), (record, bytes) => {
          // Every delivered record is valid and follows the one before.
          if (invalidHeader(bytes) !== null || invalidPayload(record, record.payload) !== null) throw new Error("invalid record delivered");
          if (invalidSuccessor(point, record) !== null) throw new Error("record out of chain delivered");
          point = chainPointOf(record);
          // Records wholly before the first changed byte are the originals.
          if (offset + bytes.length <= firstChanged) {
            if (Buffer.compare(bytes, stream.subarray(offset, offset + bytes.length)) !== 0) throw new Error("prefix record changed");
          }
          offset += bytes.length;
          delivered++;
        });
        if (decoder.bufferedBytes > MAX_RECORD_SIZE) throw new Error(`decoder holds ${decoder.bufferedBytes} bytes`);
        at += n;
      }
      if (error !== null) {
        rejected++;
        if (typeof error !== "string" || error.length === 0) throw new Error("empty reason");
      }
      // No record that starts before the first changed byte and ends before it may be lost.
      const intact = starts.filter((s, k) => (starts[k + 1] ?? stream.length) <= firstChanged && s < firstChanged).length;
      if (decoder.position.seq < intact) throw new Error(`only ${decoder.position.seq} of ${intact} intact records delivered`);
    }
  } catch (error) {
    console.error(`record fuzz seed: ${seed}`);
    throw error;
  }
  if (iterations >= 10_000) {
    expect(delivered).toBeGreaterThan(iterations / 2);
    expect(rejected).toBeGreaterThan(iterations / 4);
  }
}, Math.max(60_000, iterations * 2));
