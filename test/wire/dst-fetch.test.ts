/**
 * FETCH (docs/protocol.md §11, src/wire/dst/fetch.ts): golden bytes of the request payload and
 * the reply prefix, round trips, and the header rules (payload sizes, the reply's bounded
 * payload). Decoders return reasons, never throw.
 */
import { describe, expect, test } from "bun:test";
import { FETCH_REPLY_PREFIX, FETCH_REQUEST_SIZE, Op, REPLY_BIT } from "../../src/wire/dst/constants.ts";
import { decodeHeader, encodeFrame, invalidHeader } from "../../src/wire/dst/header.ts";
import { decodeFetchReason, decodeFetchReply, decodeFetchRequest, encodeFetchReason, encodeFetchReply, encodeFetchRequest } from "../../src/wire/dst/fetch.ts";

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

describe("FETCH frames", () => {
  const check = (frame: Uint8Array) => invalidHeader(decodeHeader(frame, 0), 1 << 20);

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
