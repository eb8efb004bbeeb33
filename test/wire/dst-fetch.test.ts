/**
 * FETCH (docs/protocol.md §11, src/wire/dst/fetch.ts): golden bytes of the request payload and
 * the reply prefix, round trips, and the header rules (payload sizes, the reply's bounded
 * payload), compressed replies (§11.1: layout, bounds, corrupt frames). Decoders return
 * reasons, never throw.
 */
import { describe, expect, test } from "bun:test";
import { Feature, FETCH_REPLY_PREFIX, FETCH_REQUEST_SIZE, Flag, Op, REPLY_BIT } from "../../src/wire/dst/constants.ts";
import { decodeHeader, encodeFrame, invalidHeader } from "../../src/wire/dst/header.ts";
import { compressFetchReply, decodeFetchReason, decodeFetchReply, decodeFetchRequest, encodeFetchReason, encodeFetchReply, encodeFetchRequest } from "../../src/wire/dst/fetch.ts";

import { zstdCompress, zstdDecompress } from "../../src/lib/zstd.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("FETCH payloads", () => {
  test("request: golden bytes and round trip", () => {
    const payload = encodeFetchRequest({ segment: 1, offset: 0x100, applied: 2, prevChain: 0xfedcba9876543210n, prevLamport: 5, prevGeneration: 1 });
    expect(payload.length).toBe(FETCH_REQUEST_SIZE);
    expect(hex(payload)).toBe(
      "0000000000000001" + "0000000000000100" + "0000000000000002" + "fedcba9876543210" + "0000000000000005" + "0000000000000001",
    );
    expect(decodeFetchRequest(3, 4 << 20, payload)).toEqual({ seq: 3, maxBytes: 4 << 20, segment: 1, offset: 0x100, applied: 2, prevChain: 0xfedcba9876543210n, prevLamport: 5, prevGeneration: 1 });
  });

  test("request: reasons for what cannot be a position", () => {
    const ok = encodeFetchRequest({ segment: 0, offset: 0, applied: 0, prevChain: 0n, prevLamport: 0, prevGeneration: 0 });
    expect(decodeFetchRequest(0, 1, ok)).toBe("FETCH seq must be at least 1");
    expect(decodeFetchRequest(1, 1, ok.subarray(0, 40))).toBe("FETCH payload length 40 is not 48");
    const ahead = encodeFetchRequest({ segment: 0, offset: 0, applied: 7, prevChain: 0n, prevLamport: 0, prevGeneration: 0 });
    expect(decodeFetchRequest(7, 1, ahead)).toBe("FETCH applied seq 7 is not below the wanted seq 7");
    const huge = ok.slice();
    huge.fill(0xff, 0, 8);
    expect(decodeFetchRequest(1, 1, huge)).toBe("FETCH position field exceeds 2^53");
  });

  test("reply: prefix, records behind it, round trip; short payloads are refused", () => {
    const records = new Uint8Array([1, 2, 3]);
    const payload = encodeFetchReply({ nextSeq: 9, nextSegment: 1, nextOffset: 4096, durable: 12, generation: 2, behind: 777 }, records);
    expect(payload.length).toBe(FETCH_REPLY_PREFIX + 3);
    expect(hex(payload.subarray(0, 16))).toBe("0000000000000009" + "0000000000000001");
    const reply = decodeFetchReply(payload);
    expect(reply).toMatchObject({ nextSeq: 9, nextSegment: 1, nextOffset: 4096, durable: 12, generation: 2, behind: 777 });
    expect(typeof reply !== "string" && [...reply.records]).toEqual([1, 2, 3]);
    expect(decodeFetchReply(payload.subarray(0, 47))).toBe("FETCH reply of 47 bytes is shorter than its 48-byte prefix");
  });

  test("reasons are utf-8 and bounded", () => {
    expect(decodeFetchReason(encodeFetchReason("diverged at seq 5"))).toBe("diverged at seq 5");
    expect(encodeFetchReason("x".repeat(5000)).length).toBe(1024);
  });
});

const check = (frame: Uint8Array) => invalidHeader(decodeHeader(frame, 0), 1 << 20);

describe("FETCH frames", () => {

  test("a request carries exactly the 48-byte position", () => {
    expect(check(encodeFrame({ opcode: Op.FETCH, txid: 1, offset: 3, length: 4 << 20 }, new Uint8Array(FETCH_REQUEST_SIZE)))).toBeNull();
    expect(check(encodeFrame({ opcode: Op.FETCH, txid: 1, offset: 3, length: 4 << 20 }, new Uint8Array(47)))).toBe("FETCH payload length 47 is not 48");
    expect(check(encodeFrame({ opcode: Op.FETCH, txid: 1, flags: 1, offset: 3, length: 1 }, new Uint8Array(48)))).toBe("flags 0x0001 not allowed on FETCH");
  });

  test("a reply carries any payload up to the max payload, failed or not", () => {
    expect(check(encodeFrame({ opcode: Op.FETCH | REPLY_BIT, txid: 1, status: 0 }, new Uint8Array(FETCH_REPLY_PREFIX + 100)))).toBeNull();
    expect(check(encodeFrame({ opcode: Op.FETCH | REPLY_BIT, txid: 1, status: 116 }, encodeFetchReason("diverged")))).toBeNull();
    expect(check(encodeFrame({ opcode: Op.FETCH | REPLY_BIT, txid: 1 }, new Uint8Array((1 << 20) + 1)))).toBe(`payload length ${(1 << 20) + 1} exceeds max payload ${1 << 20}`);
  });
});

describe("FETCH FOLLOWS (docs/protocol.md §11.2)", () => {
  test("request: Flag.FOLLOWS (0x0010) is allowed on FETCH only, alone or with ZSTD, and read into the request", () => {
    const frame = encodeFrame({ opcode: Op.FETCH, txid: 1, flags: Flag.FOLLOWS, offset: 3, length: 4 << 20 }, new Uint8Array(FETCH_REQUEST_SIZE));
    expect(hex(frame.subarray(6, 8))).toBe("0010");
    expect(check(frame)).toBeNull();
    expect(check(encodeFrame({ opcode: Op.FETCH, txid: 1, flags: Flag.FOLLOWS | Flag.ZSTD, offset: 3, length: 4 << 20 }, new Uint8Array(FETCH_REQUEST_SIZE)))).toBeNull();
    expect(check(encodeFrame({ opcode: Op.FETCH | REPLY_BIT, txid: 1, flags: Flag.FOLLOWS }, new Uint8Array(FETCH_REPLY_PREFIX)))).toBe("flags 0x0010 not allowed on FETCH reply");
    expect(check(encodeFrame({ opcode: Op.READ, txid: 1, flags: Flag.FOLLOWS, length: 1 }))).toBe("flags 0x0010 not allowed on READ");
    const payload = encodeFetchRequest({ segment: 0, offset: 0, applied: 0, prevChain: 0n, prevLamport: 0, prevGeneration: 0 });
    expect(decodeFetchRequest(1, 1 << 21, payload, Flag.FOLLOWS | Flag.ZSTD)).toMatchObject({ seq: 1, zstd: true, follows: true });
    expect(decodeFetchRequest(1, 1 << 21, payload)).not.toHaveProperty("follows");
    expect(Feature.FETCH_FOLLOWS).toBe(0x0100);
  });
});

describe("FETCH compression (docs/protocol.md §11.1)", () => {
  const prefix = { nextSeq: 9, nextSegment: 1, nextOffset: 4096, durable: 12, generation: 2, behind: 777 };
  const compressible = new Uint8Array(64 * 1024).map((_, i) => (i >> 10) & 3);

  test("request: Flag.ZSTD (0x0008) is allowed on FETCH and its reply, and read into the request", () => {
    const frame = encodeFrame({ opcode: Op.FETCH, txid: 1, flags: Flag.ZSTD, offset: 3, length: 4 << 20 }, new Uint8Array(FETCH_REQUEST_SIZE));
    expect(hex(frame.subarray(6, 8))).toBe("0008");
    expect(check(frame)).toBeNull();
    expect(check(encodeFrame({ opcode: Op.FETCH | REPLY_BIT, txid: 1, flags: Flag.ZSTD }, new Uint8Array(FETCH_REPLY_PREFIX + 9)))).toBeNull();
    expect(check(encodeFrame({ opcode: Op.READ, txid: 1, flags: Flag.ZSTD, length: 1 }))).toBe("flags 0x0008 not allowed on READ");
    const payload = encodeFetchRequest({ segment: 0, offset: 0, applied: 0, prevChain: 0n, prevLamport: 0, prevGeneration: 0 });
    expect(decodeFetchRequest(1, 1 << 21, payload, Flag.ZSTD)).toMatchObject({ seq: 1, zstd: true });
    expect(decodeFetchRequest(1, 1 << 21, payload)).not.toHaveProperty("zstd");
    expect(Feature.FETCH_ZSTD).toBe(0x0080);
  });

  test("reply: golden layout — the same prefix, u64 record bytes, one zstd frame; round trip", () => {
    const plain = encodeFetchReply(prefix, compressible);
    const packed = compressFetchReply(plain, zstdCompress)!;
    expect(packed.length).toBeLessThan(plain.length / 10);
    expect(hex(packed.subarray(0, FETCH_REPLY_PREFIX))).toBe(hex(plain.subarray(0, FETCH_REPLY_PREFIX)));
    expect(hex(packed.subarray(FETCH_REPLY_PREFIX, FETCH_REPLY_PREFIX + 8))).toBe("0000000000010000");
    expect(hex(packed.subarray(FETCH_REPLY_PREFIX + 8, FETCH_REPLY_PREFIX + 12))).toBe("28b52ffd"); // zstd frame magic (RFC 8878 §3.1.1)
    const reply = decodeFetchReply(packed, Flag.ZSTD, compressible.length, zstdDecompress);
    if (typeof reply === "string") throw new Error(reply);
    expect(reply).toMatchObject(prefix);
    expect(Buffer.compare(reply.records, compressible)).toBe(0);
    // Without the flag the same bytes are plain records (the flag, not a guess, decides).
    expect(typeof decodeFetchReply(packed) !== "string" && decodeFetchReply(packed)).toMatchObject({ records: packed.subarray(FETCH_REPLY_PREFIX) });
  });

  test("incompressible or empty records stay plain (null)", () => {
    const random = crypto.getRandomValues(new Uint8Array(64 * 1024));
    expect(compressFetchReply(encodeFetchReply(prefix, random), zstdCompress)).toBeNull();
    expect(compressFetchReply(encodeFetchReply(prefix, new Uint8Array(0)), zstdCompress)).toBeNull();
  });

  test("bounded and checked: more than asked, a bomb, corrupt or truncated frames are reasons, never records", () => {
    const packed = compressFetchReply(encodeFetchReply(prefix, compressible), zstdCompress)!;
    // Declared more than the request asked: refused before decompressing.
    expect(decodeFetchReply(packed, Flag.ZSTD, compressible.length - 1, zstdDecompress)).toBe(`compressed FETCH reply declares 65536 bytes of records; 1 to 65535 were asked for`);
    // A bomb: 64 MiB of zeroes declared as 1 MiB — decompression stops at the declared size.
    const bomb = compressFetchReply(encodeFetchReply(prefix, new Uint8Array(64 << 20)), zstdCompress)!;
    const lie = bomb.slice();
    lie.set([0, 0, 0, 0, 0, 0x10, 0, 0], FETCH_REPLY_PREFIX);
    expect(decodeFetchReply(lie, Flag.ZSTD, 8 << 20, zstdDecompress) as string).toStartWith("compressed FETCH reply is corrupt or larger than its declared 1048576 bytes");
    // Declared 0, no length at all.
    const zero = packed.slice();
    zero.fill(0, FETCH_REPLY_PREFIX, FETCH_REPLY_PREFIX + 8);
    expect(decodeFetchReply(zero, Flag.ZSTD, 1 << 20, zstdDecompress) as string).toContain("declares 0 bytes");
    expect(decodeFetchReply(packed.subarray(0, FETCH_REPLY_PREFIX + 4), Flag.ZSTD) as string).toContain("has no record length");
    // Truncated and flipped frames, at every cut and a spread of flips: a reason or the exact records.
    for (let cut = FETCH_REPLY_PREFIX + 8; cut < packed.length; cut += 7) {
      expect(typeof decodeFetchReply(packed.subarray(0, cut), Flag.ZSTD, 1 << 20, zstdDecompress)).toBe("string");
    }
    for (let at = FETCH_REPLY_PREFIX + 8; at < packed.length; at++) {
      const bad = packed.slice();
      bad[at]! ^= 0x5a;
      const reply = decodeFetchReply(bad, Flag.ZSTD, 1 << 20, zstdDecompress);
      if (typeof reply !== "string") expect(reply.records.length).toBe(compressible.length); // records' own checksums judge them next
    }
  });
});
