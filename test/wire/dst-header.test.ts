/**
 * @module test/wire/dst-header — golden bytes, round trips and every invalidHeader() reason of
 * the DST frame header (src/wire/dst/header.ts, docs/protocol.md §3–§5).
 */
import { describe, expect, test } from "bun:test";
import { AssertionError } from "../../src/lib/assert.ts";
import { Errno } from "../../src/lib/errno.ts";
import {
  DST_VERSION,
  Flag,
  HANDSHAKE_PAYLOAD_MAX,
  HEADER,
  HEADER_SIZE,
  Op,
  REPLY_BIT,
  opcodeName,
} from "../../src/wire/dst/constants.ts";
import {
  decodeHeader,
  encodeFrame,
  encodeHeader,
  frameBuffer,
  invalidHeader,
  type FrameFields,
  type Header,
} from "../../src/wire/dst/header.ts";

const MAX = 1024 * 1024;

// prettier-ignore
const goldenWrite = Uint8Array.from([
  0x44, 0x53, 0x54, 0x31,                         // magic "DST1"
  0x01,                                           // version 1
  0x11,                                           // opcode WRITE
  0x00, 0x01,                                     // flags FUA
  0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x05, // txid 2^40 + 5 (hi u32 0x100, lo u32 5)
  0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x20, 0x00, // offset 4 GiB + 8 KiB
  0x00, 0x00, 0x10, 0x00,                         // length 4096
  0x00, 0x00, 0x10, 0x00,                         // payloadLength 4096
  0x00, 0x00, 0x00, 0x00,                         // status 0 (request)
  0x00, 0x00, 0x00, 0x00,                         // reserved
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // authTag (16 bytes, zero: no security suite)
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
]);
const goldenWriteHeader: Header = {
  version: 1, opcode: Op.WRITE, flags: Flag.FUA, txid: 2 ** 40 + 5, offset: 2 ** 32 + 8192,
  length: 4096, payloadLength: 4096, status: 0,
};

// prettier-ignore
const goldenReadError = Uint8Array.from([
  0x44, 0x53, 0x54, 0x31,                         // magic "DST1"
  0x01,                                           // version 1
  0x90,                                           // opcode READ | REPLY_BIT
  0x00, 0x00,                                     // flags none
  0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // txid 2^53 - 1 (largest accepted)
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, // offset 512 (echoed)
  0x00, 0x10, 0x00, 0x00,                         // length 1 MiB (echoed)
  0x00, 0x00, 0x00, 0x00,                         // payloadLength 0: failed READ carries no data
  0x00, 0x00, 0x00, 0x05,                         // status EIO
  0x00, 0x00, 0x00, 0x00,                         // reserved
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // authTag
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
]);

/** A valid frame's header with some fields overridden, as raw bytes. */
function rawHeader(fields: FrameFields, payloadLength = 0, patch?: (b: Uint8Array) => void): Uint8Array {
  const bytes = new Uint8Array(HEADER_SIZE);
  encodeHeader(bytes, 0, { version: DST_VERSION, flags: 0, offset: 0, length: 0, status: 0, ...fields, payloadLength });
  patch?.(bytes);
  return bytes;
}

function reason(bytes: Uint8Array, max = MAX): string | null {
  return invalidHeader(decodeHeader(bytes, 0), max);
}

describe("golden bytes", () => {
  test("WRITE request header", () => {
    const out = new Uint8Array(HEADER_SIZE);
    encodeHeader(out, 0, goldenWriteHeader);
    expect(out).toEqual(goldenWrite);
    expect(goldenWrite.length).toBe(HEADER_SIZE);
  });

  test("failed READ reply via encodeFrame", () => {
    const frame = encodeFrame({ opcode: Op.READ | REPLY_BIT, txid: 2 ** 53 - 1, offset: 512, length: MAX, status: Errno.EIO });
    expect(frame).toEqual(goldenReadError);
    expect(reason(frame)).toBeNull();
  });

  test("decode of the golden bytes", () => {
    expect(decodeHeader(goldenWrite, 0)).toEqual({ ...goldenWriteHeader, magic: 0x44535431, reserved: 0 });
    expect(invalidHeader(decodeHeader(goldenWrite, 0), MAX)).toBeNull();
  });
});

describe("encode / decode", () => {
  test("round trip at a non-zero offset in a reused (dirty) buffer", () => {
    const target = new Uint8Array(HEADER_SIZE + 10).fill(0xff);
    encodeHeader(target, 7, goldenWriteHeader);
    expect(target.subarray(7, 7 + HEADER_SIZE)).toEqual(goldenWrite);
    expect(target[6]).toBe(0xff); // nothing written outside the header
    expect(target[7 + HEADER_SIZE]).toBe(0xff);
    const back = decodeHeader(target, 7);
    expect(back).toEqual({ ...goldenWriteHeader, magic: 0x44535431, reserved: 0 });
  });

  test("u64 fields travel as two u32 halves", () => {
    for (const txid of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 5, 2 ** 53 - 1]) {
      const frame = encodeFrame({ opcode: Op.PING, txid, offset: 0 });
      const h = decodeHeader(frame, 0);
      expect(h.txid).toBe(txid);
      const hi = (frame[8]! << 24 | frame[9]! << 16 | frame[10]! << 8 | frame[11]!) >>> 0;
      const lo = (frame[12]! << 24 | frame[13]! << 16 | frame[14]! << 8 | frame[15]!) >>> 0;
      expect(hi * 2 ** 32 + lo).toBe(txid);
      expect(hi).toBe(Math.floor(txid / 2 ** 32));
    }
  });

  test("encodeFrame copies the payload after the header; frameBuffer leaves room", () => {
    const payload = Uint8Array.from([1, 2, 3, 4, 5]);
    const frame = encodeFrame({ opcode: Op.WRITE, txid: 9, offset: 4096, length: 5 }, payload);
    expect(frame.length).toBe(HEADER_SIZE + 5);
    expect(frame.subarray(HEADER_SIZE)).toEqual(payload);
    const h = decodeHeader(frame, 0);
    expect(h).toMatchObject({ version: DST_VERSION, opcode: Op.WRITE, txid: 9, offset: 4096, length: 5, payloadLength: 5, flags: 0, status: 0 });

    const buffer = frameBuffer({ opcode: Op.READ | REPLY_BIT, txid: 9, length: 3 }, 3);
    expect(buffer.length).toBe(HEADER_SIZE + 3);
    expect(decodeHeader(buffer, 0).payloadLength).toBe(3);
    expect(buffer.subarray(HEADER_SIZE)).toEqual(new Uint8Array(3));
  });

  test("values that do not fit the wire are programmer errors", () => {
    const bad: FrameFields[] = [
      { opcode: Op.PING, txid: -1 },
      { opcode: Op.PING, txid: 2 ** 53 },
      { opcode: Op.PING, txid: 1.5 },
      { opcode: Op.READ, txid: 1, offset: 2 ** 53 },
      { opcode: Op.READ, txid: 1, length: 2 ** 32 },
      { opcode: 0x100, txid: 1 },
      { opcode: Op.WRITE, txid: 1, flags: 0x10000 },
      { opcode: Op.READ | REPLY_BIT, txid: 1, status: -5 },
    ];
    for (const fields of bad) expect(() => encodeFrame(fields)).toThrow(AssertionError);
    expect(() => encodeHeader(new Uint8Array(HEADER_SIZE - 1), 0, goldenWriteHeader)).toThrow(AssertionError);
  });

  test("decodeHeader does not throw on short input", () => {
    const h = decodeHeader(new Uint8Array(3), 0);
    expect(typeof invalidHeader(h, MAX)).toBe("string");
  });

  test("opcodeName names replies", () => {
    expect(opcodeName(Op.READ | REPLY_BIT)).toBe("READ reply");
    expect(opcodeName(Op.PONG)).toBe("PONG");
    expect(opcodeName(0x33)).toBe("opcode 0x33");
  });
});

describe("invalidHeader accepts", () => {
  const valid: Array<[string, Uint8Array]> = [
    ["HELLO", rawHeader({ opcode: Op.HELLO, txid: 0 }, 40)],
    ["WELCOME refusal", rawHeader({ opcode: Op.WELCOME, txid: 0, status: Errno.EACCES }, 20)],
    ["READ", rawHeader({ opcode: Op.READ, txid: 1, offset: 2 ** 53 - 1, length: 2 * MAX })],
    ["READ reply", rawHeader({ opcode: Op.READ | REPLY_BIT, txid: 1, length: MAX }, MAX)],
    ["failed READ reply", rawHeader({ opcode: Op.READ | REPLY_BIT, txid: 1, length: MAX, status: Errno.EINVAL })],
    ["WRITE FUA", rawHeader({ opcode: Op.WRITE, flags: Flag.FUA, txid: 1, length: 512 }, 512)],
    ["WRITE of 0 bytes", rawHeader({ opcode: Op.WRITE, txid: 1 })],
    ["WRITE reply ENOSPC", rawHeader({ opcode: Op.WRITE | REPLY_BIT, txid: 1, length: 512, status: Errno.ENOSPC })],
    ["FLUSH", rawHeader({ opcode: Op.FLUSH, txid: 1 })],
    ["FLUSH reply", rawHeader({ opcode: Op.FLUSH | REPLY_BIT, txid: 1 })],
    ["TRIM FUA", rawHeader({ opcode: Op.TRIM, flags: Flag.FUA, txid: 1, length: 2 ** 32 - 1 })],
    ["TRIM reply", rawHeader({ opcode: Op.TRIM | REPLY_BIT, txid: 1 })],
    ["WRITE_ZEROES NO_HOLE|FUA", rawHeader({ opcode: Op.WRITE_ZEROES, flags: Flag.NO_HOLE | Flag.FUA, txid: 1, length: 4096 })],
    ["WRITE_ZEROES reply", rawHeader({ opcode: Op.WRITE_ZEROES | REPLY_BIT, txid: 1 })],
    ["PING", rawHeader({ opcode: Op.PING, txid: 2 ** 53 - 1 })],
    ["PONG", rawHeader({ opcode: Op.PONG, txid: 2 ** 53 - 1 })],
    ["a non-zero authTag (unused, not checked)", rawHeader({ opcode: Op.PING, txid: 1 }, 0, (b) => b.fill(0xee, HEADER.authTag))],
  ];
  for (const [name, bytes] of valid) test(name, () => expect(reason(bytes)).toBeNull());

  test("HELLO from a newer or older version: only the size bound is checked", () => {
    const newer = rawHeader({ opcode: Op.HELLO, txid: 0 }, 100, (b) => {
      b[HEADER.version] = 7;
      b[HEADER.flags + 1] = 0x80; // flags and reserved belong to version 7
      b[HEADER.reserved] = 1;
    });
    expect(reason(newer)).toBeNull();
    expect(reason(rawHeader({ opcode: Op.HELLO, txid: 0 }, 0, (b) => (b[HEADER.version] = 0)))).toBeNull();
    const huge = rawHeader({ opcode: Op.HELLO, txid: 0 }, HANDSHAKE_PAYLOAD_MAX + 1, (b) => (b[HEADER.version] = 2));
    expect(reason(huge)).toBe(`HELLO payload length ${HANDSHAKE_PAYLOAD_MAX + 1} exceeds the handshake limit ${HANDSHAKE_PAYLOAD_MAX}`);
    expect(reason(huge, HANDSHAKE_PAYLOAD_MAX)).toBe(`HELLO payload length ${HANDSHAKE_PAYLOAD_MAX + 1} exceeds the handshake limit ${HANDSHAKE_PAYLOAD_MAX}`);
  });
});

describe("invalidHeader reasons", () => {
  const ping = { opcode: Op.PING, txid: 1 };
  const cases: Array<[string, Uint8Array, string]> = [
    ["bad magic", rawHeader(ping, 0, (b) => b.set([0x4e, 0x42, 0x44, 0x4d])), 'bad magic 0x4e42444d (expected 0x44535431 "DST1")'],
    ["version 2", rawHeader(ping, 0, (b) => (b[HEADER.version] = 2)), "unsupported version 2 (this build speaks 1)"],
    ["version 0", rawHeader(ping, 0, (b) => (b[HEADER.version] = 0)), "unsupported version 0 (this build speaks 1)"],
    ["WELCOME of another version", rawHeader({ opcode: Op.WELCOME, txid: 0 }, 0, (b) => (b[HEADER.version] = 2)), "unsupported version 2 (this build speaks 1)"],
    ["unknown opcode", rawHeader({ opcode: 0x33, txid: 1 }), "unknown opcode 0x33"],
    ["an opcode between the known ones", rawHeader({ opcode: 0x83, txid: 1 }), "unknown opcode 0x83"],
    ["unknown flags", rawHeader({ opcode: Op.WRITE, flags: 0x0020, txid: 1 }), "unknown flags 0x0020"],
    ["NO_HOLE on WRITE", rawHeader({ opcode: Op.WRITE, flags: Flag.NO_HOLE, txid: 1 }), "flags 0x0002 not allowed on WRITE"],
    ["FUA on READ", rawHeader({ opcode: Op.READ, flags: Flag.FUA, txid: 1 }), "flags 0x0001 not allowed on READ"],
    ["FUA echoed in a reply", rawHeader({ opcode: Op.WRITE | REPLY_BIT, flags: Flag.FUA, txid: 1 }), "flags 0x0001 not allowed on WRITE reply"],
    ["reserved", rawHeader(ping, 0, (b) => (b[HEADER.reserved + 3] = 1)), "reserved field is not zero"],
    ["status in a request", rawHeader(ping, 0, (b) => (b[HEADER.status + 3] = 5)), "status set in a request"],
    ["txid 2^53", rawHeader(ping, 0, (b) => b.set([0, 0x20, 0, 0, 0, 0, 0, 0], HEADER.txid)), "txid exceeds 2^53"],
    ["txid 2^64-1", rawHeader(ping, 0, (b) => b.fill(0xff, HEADER.txid, HEADER.txid + 8)), "txid exceeds 2^53"],
    ["offset 2^53", rawHeader({ opcode: Op.READ, txid: 1 }, 0, (b) => b.set([0, 0x20, 0, 0, 0, 0, 0, 0], HEADER.offset)), "offset exceeds 2^53"],
    ["payload over max", rawHeader({ opcode: Op.WRITE, txid: 1, length: MAX + 1 }, MAX + 1), `payload length ${MAX + 1} exceeds max payload ${MAX}`],
    ["u32 max payload", rawHeader({ opcode: Op.WRITE, txid: 1, length: 2 ** 32 - 1 }, 2 ** 32 - 1), `payload length ${2 ** 32 - 1} exceeds max payload ${MAX}`],
    ["READ with payload", rawHeader({ opcode: Op.READ, txid: 1, length: 8 }, 8), "payload on an opcode that carries none (READ, 8 bytes)"],
    ["FLUSH with payload", rawHeader({ opcode: Op.FLUSH, txid: 1 }, 1), "payload on an opcode that carries none (FLUSH, 1 bytes)"],
    ["TRIM with payload", rawHeader({ opcode: Op.TRIM, txid: 1, length: 4 }, 4), "payload on an opcode that carries none (TRIM, 4 bytes)"],
    ["WRITE_ZEROES with payload", rawHeader({ opcode: Op.WRITE_ZEROES, txid: 1, length: 4 }, 4), "payload on an opcode that carries none (WRITE_ZEROES, 4 bytes)"],
    ["PING with payload", rawHeader(ping, 2), "payload on an opcode that carries none (PING, 2 bytes)"],
    ["PONG with payload", rawHeader({ opcode: Op.PONG, txid: 1 }, 2), "payload on an opcode that carries none (PONG, 2 bytes)"],
    ["WRITE reply with payload", rawHeader({ opcode: Op.WRITE | REPLY_BIT, txid: 1 }, 2), "payload on an opcode that carries none (WRITE reply, 2 bytes)"],
    ["failed READ reply with data", rawHeader({ opcode: Op.READ | REPLY_BIT, txid: 1, length: 8, status: 5 }, 8), "payload on an opcode that carries none (failed READ reply, 8 bytes)"],
    ["WRITE payload mismatch", rawHeader({ opcode: Op.WRITE, txid: 1, length: 4096 }, 4095), "WRITE payload length 4095 does not match length 4096"],
    ["READ reply short", rawHeader({ opcode: Op.READ | REPLY_BIT, txid: 1, length: 4096 }, 512), "READ reply payload length 512 does not match length 4096"],
    ["HELLO over the handshake limit", rawHeader({ opcode: Op.HELLO, txid: 0 }, HANDSHAKE_PAYLOAD_MAX + 1), `HELLO payload length ${HANDSHAKE_PAYLOAD_MAX + 1} exceeds the handshake limit ${HANDSHAKE_PAYLOAD_MAX}`],
    ["WELCOME over the handshake limit", rawHeader({ opcode: Op.WELCOME, txid: 0 }, HANDSHAKE_PAYLOAD_MAX + 1), `WELCOME payload length ${HANDSHAKE_PAYLOAD_MAX + 1} exceeds the handshake limit ${HANDSHAKE_PAYLOAD_MAX}`],
  ];
  for (const [name, bytes, expected] of cases) test(name, () => expect(reason(bytes)).toBe(expected));

  test("identity problems are reported before field problems", () => {
    const everythingWrong = rawHeader(ping, 3, (b) => {
      b[HEADER.version] = 9;
      b[HEADER.reserved] = 1;
      b[HEADER.status] = 1;
    });
    expect(reason(everythingWrong)).toBe("unsupported version 9 (this build speaks 1)");
    everythingWrong[0] = 0;
    expect(reason(everythingWrong)).toStartWith("bad magic 0x00535431");
  });

  test("the limit in force is the one passed in", () => {
    const write = rawHeader({ opcode: Op.WRITE, txid: 1, length: 70_000 }, 70_000);
    expect(reason(write, HANDSHAKE_PAYLOAD_MAX)).toBe(`payload length 70000 exceeds max payload ${HANDSHAKE_PAYLOAD_MAX}`);
    expect(reason(write, 70_000)).toBeNull();
  });
});
