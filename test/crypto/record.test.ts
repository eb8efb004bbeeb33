/**
 * The protected channel's wire unit (src/crypto/record.ts): records of whole frames. For every
 * protected suite: round trips of batches, incremental opening with the stream split at every
 * byte, and refusal of every tampering the channel promises to catch — any changed byte,
 * replayed, reordered or dropped records, the other direction's or another session's records —
 * after which the opener refuses everything (fail closed).
 */
import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { RECORD_AUTH_FAILED, RECORD_HEADER_SIZE, RecordOpener, RecordSealer } from "../../src/crypto/record.ts";

const SUITES = ["aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305", "integrity"] as const;
const key = () => new Uint8Array(randomBytes(32));
const pattern = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
const concat = (parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

function openAll(opener: RecordOpener, chunks: Uint8Array[]): Uint8Array[] | string {
  const out: Uint8Array[] = [];
  for (const chunk of chunks) {
    const got = opener.push(chunk);
    if (typeof got === "string") return got;
    out.push(...got.map((p) => p.slice()));
  }
  return out;
}

describe.each(SUITES.map((s) => [s]))("suite %s", (suite) => {
  test("batches of frames round-trip, whole and split at every byte", () => {
    const k = key();
    const sealer = new RecordSealer(suite, k, 0);
    const batches = [[pattern(56)], [pattern(4152, 2), pattern(56, 3)], [pattern(70_000, 4)]];
    const records = batches.map((parts) => sealer.seal(parts, parts.reduce((n, p) => n + p.length, 0)));
    const expected = batches.map((parts) => concat(parts));
    expect(openAll(new RecordOpener(suite, k, 0), records.map((r) => r.slice()))).toEqual(expected);
    const stream = concat(records);
    for (const step of [1, 7, 4096]) {
      const chunks: Uint8Array[] = [];
      for (let at = 0; at < stream.length; at += step) chunks.push(stream.slice(at, at + step));
      expect(openAll(new RecordOpener(suite, k, 0), chunks)).toEqual(expected);
    }
  });

  test("a change to any byte of a record is refused, then everything after it", () => {
    const k = key();
    const record = new RecordSealer(suite, k, 0).seal([pattern(300)], 300);
    for (let i = 0; i < record.length; i++) {
      const bad = record.slice();
      bad[i]! ^= 0x01;
      const opener = new RecordOpener(suite, k, 0);
      const got = opener.push(bad);
      if (i < 4) {
        // A changed length: refused, or the opener waits for bytes that never form this record.
        expect(typeof got === "string" || got.length === 0).toBe(true);
        continue;
      }
      expect(got).toBe(RECORD_AUTH_FAILED);
      expect(opener.push(record.slice())).toBe(RECORD_AUTH_FAILED); // fail closed
    }
  });

  test("replayed, reordered and dropped records are refused", () => {
    const k = key();
    const sealer = new RecordSealer(suite, k, 0);
    const [r1, r2, r3] = [1, 2, 3].map((n) => sealer.seal([pattern(100, n)], 100));
    const replay = new RecordOpener(suite, k, 0);
    expect(replay.push(r1!.slice())).toEqual([pattern(100, 1)]);
    expect(replay.push(r1!.slice())).toBe(RECORD_AUTH_FAILED);
    expect(new RecordOpener(suite, k, 0).push(r2!.slice())).toBe(RECORD_AUTH_FAILED); // r1 dropped
    const reorder = new RecordOpener(suite, k, 0);
    expect(reorder.push(r1!.slice())).toEqual([pattern(100, 1)]);
    expect(reorder.push(r3!.slice())).toBe(RECORD_AUTH_FAILED);
  });

  test("the other direction's and another session's records are refused", () => {
    const k = key();
    const clientRecord = new RecordSealer(suite, k, 0).seal([pattern(100)], 100);
    expect(new RecordOpener(suite, k, 1).push(clientRecord.slice())).toBe(RECORD_AUTH_FAILED);
    expect(new RecordOpener(suite, key(), 0).push(clientRecord.slice())).toBe(RECORD_AUTH_FAILED);
    expect(new RecordOpener(suite, k, 0).push(clientRecord.slice())).toEqual([pattern(100)]);
  });

  test("an absurd length is refused before anything is buffered", () => {
    const opener = new RecordOpener(suite, key(), 0);
    const header = new Uint8Array(RECORD_HEADER_SIZE);
    new DataView(header.buffer).setUint32(0, 0xffff_ffff);
    expect(opener.push(header)).toMatch(/^record length 4294967295 exceeds/);
    expect(opener.bufferedBytes).toBe(0); // refused from the header alone, no body allocated
    const split = new RecordOpener(suite, key(), 0);
    expect(split.push(header.subarray(0, 3))).toEqual([]);
    expect(split.push(header.subarray(3))).toMatch(/^record length 4294967295 exceeds/);
  });

  test("sealInPlace leaves a record equal to seal() of the same plaintext", () => {
    const k = key();
    const plain = pattern(5000);
    const inPlace = new Uint8Array(RECORD_HEADER_SIZE + plain.length);
    inPlace.set(plain, RECORD_HEADER_SIZE);
    expect(new RecordSealer(suite, k, 1).sealInPlace(inPlace)).toEqual(new RecordSealer(suite, k, 1).seal([plain], plain.length));
  });
});

describe("confidentiality", () => {
  for (const suite of ["aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305"] as const) {
    test(`${suite}: the plaintext does not appear in the record`, () => {
      const marker = new TextEncoder().encode("SECRET-PLAINTEXT-MARKER".repeat(64));
      const record = new RecordSealer(suite, key(), 0).seal([marker], marker.length);
      expect(Buffer.from(record).includes(Buffer.from("SECRET-PLAINTEXT"))).toBe(false);
    });
  }
  test("integrity: the plaintext stays readable but is authenticated", () => {
    const marker = new TextEncoder().encode("READABLE".repeat(16));
    const record = new RecordSealer("integrity", key(), 0).seal([marker], marker.length);
    expect(Buffer.from(record).includes(Buffer.from("READABLE"))).toBe(true);
  });
});

describe("sealParts", () => {
  for (const suite of ["aes-256-gcm", "integrity", "chacha20-poly1305", "xchacha20-poly1305"] as const) {
    test(`${suite}: the pieces written in order open like one sealed record, and the parts are untouched`, () => {
      const key = new Uint8Array(32).fill(3);
      const parts = [pattern(56, 1), pattern(70_000, 2), new Uint8Array(0), pattern(8, 3)];
      const copies = parts.map((p) => p.slice());
      const total = parts.reduce((n, p) => n + p.length, 0);
      const sealer = new RecordSealer(suite, key, 0);
      const pieces = sealer.sealParts(parts, total);
      const wire = Buffer.concat(pieces);
      const opened = new RecordOpener(suite, key, 0).push(new Uint8Array(wire));
      expect(typeof opened).not.toBe("string");
      expect(Buffer.from((opened as Uint8Array[])[0]!).equals(Buffer.concat(parts))).toBe(true);
      parts.forEach((p, i) => expect(Buffer.from(p).equals(Buffer.from(copies[i]!))).toBe(true));
      // The next record continues the same nonce sequence as seal().
      const next = sealer.seal([pattern(10, 4)], 10);
      const opener = new RecordOpener(suite, key, 0);
      opener.push(new Uint8Array(wire));
      expect((opener.push(next) as Uint8Array[])[0]).toEqual(pattern(10, 4));
    });
  }
});
