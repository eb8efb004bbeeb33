/**
 * @module test/wire/dst-handshake — TLV attributes, HELLO / WELCOME golden bytes and round
 * trips, every decode reason, refusals and version negotiation (docs/protocol.md §6).
 */
import { describe, expect, test } from "bun:test";
import { AssertionError } from "../../src/lib/assert.ts";
import { Errno } from "../../src/lib/errno.ts";
import { Attr, HANDSHAKE_PAYLOAD_MAX, HEADER_SIZE, Op } from "../../src/wire/dst/constants.ts";
import { FrameDecoder } from "../../src/wire/dst/decoder.ts";
import {
  decodeAttrs,
  decodeHello,
  decodeWelcome,
  encodeAttrs,
  encodeHello,
  encodeRefusal,
  encodeWelcome,
  negotiateVersion,
  type Hello,
  type Welcome,
} from "../../src/wire/dst/handshake.ts";
import { decodeHeader, encodeFrame, type Header } from "../../src/wire/dst/header.ts";
import { sampleHello, sampleWelcome } from "./dst-samples.ts";

const utf8 = new TextEncoder();

// prettier-ignore
const goldenHello = Uint8Array.from([
  0x44, 0x53, 0x54, 0x31, 0x01, 0x01, 0x00, 0x00, // magic "DST1", version 1, opcode HELLO, flags 0
  0, 0, 0, 0, 0, 0, 0, 0,                         // txid 0
  0, 0, 0, 0, 0, 0, 0, 0,                         // offset 0
  0, 0, 0, 0,                                     // length 0
  0x00, 0x00, 0x00, 0x19,                         // payloadLength 25
  0, 0, 0, 0,  0, 0, 0, 0,                        // status 0, reserved 0
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // authTag
  0x00, 0x01, 0x00, 0x05, 0x64, 0x69, 0x73, 0x6b, 0x30, // EXPORT_NAME (1), 5 bytes, "disk0"
  0x00, 0x06, 0x00, 0x04, 0x00, 0x10, 0x00, 0x00,       // MAX_PAYLOAD (6), 4 bytes, 1 MiB
  0x00, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x03,       // FEATURES (8), 4 bytes, FLUSH|FUA
]);
const goldenHelloValue: Hello = {
  version: 1, exportName: "disk0", clientName: "", maxPayload: 1 << 20, features: 3, sessionId: null, txidFloor: 0,
};

// prettier-ignore
const goldenWelcome = Uint8Array.from([
  0x44, 0x53, 0x54, 0x31, 0x01, 0x81, 0x00, 0x00, // magic, version 1, opcode WELCOME (0x81), flags 0
  0, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 0, 0, 0, 0, 0, // txid 0, offset 0
  0, 0, 0, 0,                                     // length 0
  0x00, 0x00, 0x00, 0x59,                         // payloadLength 89
  0, 0, 0, 0,  0, 0, 0, 0,                        // status 0 (accepted), reserved 0
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // authTag
  0x00, 0x03, 0x00, 0x08, 0, 0, 0, 0, 0x40, 0, 0, 0, // SIZE (3), 8 bytes, 1 GiB
  0x00, 0x04, 0x00, 0x04, 0, 0, 0x02, 0x00,          // BLOCK_MIN (4), 512
  0x00, 0x05, 0x00, 0x04, 0, 0, 0x10, 0x00,          // BLOCK_PREFERRED (5), 4096
  0x00, 0x06, 0x00, 0x04, 0, 0x10, 0, 0,             // MAX_PAYLOAD (6), 1 MiB
  0x00, 0x07, 0x00, 0x01, 0x03,                      // PERMISSIONS (7), 1 byte, READ|WRITE
  0x00, 0x08, 0x00, 0x04, 0, 0, 0, 0x03,             // FEATURES (8), FLUSH|FUA
  0x00, 0x09, 0x00, 0x10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, // SESSION_ID (9), 16 bytes
  0x00, 0x0a, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x07, // EPOCH (10), 7
  0x00, 0x0c, 0x00, 0x04, 0, 0, 0, 0x40,             // MAX_INFLIGHT (12), 64
]);
const goldenWelcomeValue: Welcome = {
  size: 2 ** 30, blockMin: 512, blockPreferred: 4096, maxPayload: 1 << 20, permissions: 3, features: 3,
  sessionId: Uint8Array.from({ length: 16 }, (_, i) => i), epoch: 7, maxInflight: 64, checksum: "none",
};

// prettier-ignore
const goldenRefusal = Uint8Array.from([
  0x44, 0x53, 0x54, 0x31, 0x01, 0x81, 0x00, 0x00, // magic, version 1, WELCOME, flags 0
  0, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 0, 0, 0, 0, 0, // txid 0, offset 0
  0, 0, 0, 0,                                     // length 0
  0x00, 0x00, 0x00, 0x13,                         // payloadLength 19
  0x00, 0x00, 0x00, 0x02,                         // status ENOENT: refused
  0, 0, 0, 0,                                     // reserved
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // authTag
  0x00, 0x0b, 0x00, 0x0f, ...utf8.encode("no export disk9"), // MESSAGE (11), 15 bytes
]);

function split(frame: Uint8Array): [Header, Uint8Array] {
  return [decodeHeader(frame, 0), frame.subarray(HEADER_SIZE)];
}

/** A HELLO frame with a hand-made attribute payload. */
function helloWith(records: Array<[number, Uint8Array]>, version = 1): [Header, Uint8Array] {
  const [header, payload] = split(encodeFrame({ opcode: Op.HELLO, txid: 0 }, encodeAttrs(records)));
  return [{ ...header, version }, payload];
}

function welcomeWithout(type: number, replace?: Uint8Array): [Header, Uint8Array] {
  const attrs = decodeAttrs(split(encodeWelcome(goldenWelcomeValue))[1]) as Map<number, Uint8Array>;
  const records: Array<[number, Uint8Array]> = [];
  for (const [t, v] of attrs) if (t !== type) records.push([t, v]);
  if (replace !== undefined) records.push([type, replace]);
  return split(encodeFrame({ opcode: Op.WELCOME, txid: 0 }, encodeAttrs(records)));
}

const name = (s: string): [number, Uint8Array] => [Attr.EXPORT_NAME, utf8.encode(s)];

describe("golden bytes", () => {
  test("HELLO", () => {
    expect(encodeHello(goldenHelloValue)).toEqual(goldenHello);
    expect(decodeHello(...split(goldenHello))).toEqual(goldenHelloValue);
  });
  test("WELCOME", () => {
    expect(encodeWelcome(goldenWelcomeValue)).toEqual(goldenWelcome);
    expect(decodeWelcome(...split(goldenWelcome))).toEqual({ ok: true, welcome: goldenWelcomeValue });
  });
  test("refusal", () => {
    expect(encodeRefusal(Errno.ENOENT, "no export disk9")).toEqual(goldenRefusal);
    expect(decodeWelcome(...split(goldenRefusal))).toEqual({ ok: false, status: Errno.ENOENT, message: "no export disk9" });
  });
});

describe("round trips", () => {
  test("HELLO with every attribute; decoded values own their bytes", () => {
    const frame = encodeHello(sampleHello);
    const decoded = decodeHello(...split(frame));
    expect(decoded).toEqual(sampleHello);
    frame.fill(0, HEADER_SIZE); // the decoder's session id must not alias the frame
    expect((decoded as Hello).sessionId).toEqual(sampleHello.sessionId);
  });

  test("HELLO with a connection number (CONNECTION_SEQ)", () => {
    const hello: Hello = { ...sampleHello, connectionSeq: 7 };
    expect(decodeHello(...split(encodeHello(hello)))).toEqual(hello);
    expect("connectionSeq" in (decodeHello(...split(encodeHello({ ...sampleHello, connectionSeq: 0 }))) as Hello)).toBe(false);
  });

  test("HELLO header carries the client's highest version", () => {
    const frame = encodeHello({ ...sampleHello, version: 3 });
    expect(frame[4]).toBe(3);
    expect((decodeHello(...split(frame)) as Hello).version).toBe(3);
  });

  test("HELLO with only an export name gets the documented defaults", () => {
    expect(decodeHello(...helloWith([name("ü")]))).toEqual({
      version: 1, exportName: "ü", clientName: "", maxPayload: 32 * 1024 * 1024, features: 0, sessionId: null, txidFloor: 0,
    });
  });

  test("WELCOME", () => {
    expect(decodeWelcome(...split(encodeWelcome(sampleWelcome)))).toEqual({ ok: true, welcome: sampleWelcome });
  });

  test("refusal messages are cut to 1 KiB at a utf-8 boundary", () => {
    const long = "a" + "é".repeat(600); // 1201 bytes; byte 1024 is inside an "é"
    const result = decodeWelcome(...split(encodeRefusal(Errno.EACCES, long)));
    expect(result).toEqual({ ok: false, status: Errno.EACCES, message: long.slice(0, 1 + 511) });
    expect(utf8.encode((result as { message: string }).message).length).toBe(1023);
  });

  test("a refusal without MESSAGE has an empty message", () => {
    const [header, payload] = split(encodeFrame({ opcode: Op.WELCOME, txid: 0, status: Errno.ESHUTDOWN }));
    expect(decodeWelcome(header, payload)).toEqual({ ok: false, status: Errno.ESHUTDOWN, message: "" });
  });

  test("encoders refuse what they cannot represent", () => {
    expect(() => encodeRefusal(0, "fine")).toThrow(AssertionError);
    expect(() => encodeHello({ ...sampleHello, exportName: "" })).toThrow(AssertionError);
    expect(() => encodeHello({ ...sampleHello, exportName: "x".repeat(256) })).toThrow(AssertionError);
    expect(() => encodeHello({ ...sampleHello, sessionId: new Uint8Array(8) })).toThrow(AssertionError);
    expect(() => encodeWelcome({ ...sampleWelcome, size: 2 ** 53 })).toThrow(AssertionError);
    expect(() => encodeAttrs([[0x10000, new Uint8Array(0)]])).toThrow(AssertionError);
  });
});

describe("TLV attributes", () => {
  test("encode / decode", () => {
    const bytes = encodeAttrs([[Attr.EXPORT_NAME, Uint8Array.of(0x61)], [Attr.FEATURES, Uint8Array.of(0, 0, 0, 1)]]);
    expect(bytes).toEqual(Uint8Array.of(0, 1, 0, 1, 0x61, 0, 8, 0, 4, 0, 0, 0, 1));
    const attrs = decodeAttrs(bytes) as Map<number, Uint8Array>;
    expect([...attrs.keys()]).toEqual([Attr.EXPORT_NAME, Attr.FEATURES]);
    expect(decodeAttrs(new Uint8Array(0))).toEqual(new Map());
  });

  test("unknown non-critical attributes are ignored", () => {
    const hello = helloWith([[0x0100, Uint8Array.of(1, 2, 3)], name("disk0"), [0x7fff, new Uint8Array(0)]]);
    expect((decodeHello(...hello) as Hello).exportName).toBe("disk0");
    const [header, payload] = welcomeWithout(0x4242, Uint8Array.of(9));
    expect(decodeWelcome(header, payload)).toEqual({ ok: true, welcome: goldenWelcomeValue });
  });

  test("unknown critical attributes are refused", () => {
    expect(decodeHello(...helloWith([name("disk0"), [0x8001, new Uint8Array(0)]]))).toBe("unsupported critical attribute 0x8001");
    expect(decodeWelcome(...welcomeWithout(0xc000, Uint8Array.of(1)))).toBe("unsupported critical attribute 0xc000");
  });

  const good = encodeAttrs([name("disk0")]);
  const reasons: Array<[string, Uint8Array, string]> = [
    ["truncated record header", Uint8Array.of(...good, 0, 6, 0), "truncated attribute header at byte 9"],
    ["one stray byte", Uint8Array.of(0), "truncated attribute header at byte 0"],
    ["value overruns", Uint8Array.of(...good, 0, 6, 0, 4, 0, 0), "MAX_PAYLOAD length 4 overruns the payload (2 bytes left)"],
    ["unknown type overruns", Uint8Array.of(0x12, 0x34, 0xff, 0xff), "attribute 4660 length 65535 overruns the payload (0 bytes left)"],
    ["duplicate", Uint8Array.of(...good, ...good), "duplicate EXPORT_NAME"],
  ];
  for (const [label, bytes, reason] of reasons) {
    test(label, () => {
      expect(decodeAttrs(bytes)).toBe(reason);
      const [header] = split(encodeFrame({ opcode: Op.HELLO, txid: 0 }, bytes));
      expect(decodeHello(header, bytes)).toBe(reason);
    });
  }
});

describe("HELLO reasons", () => {
  const u32 = (v: number) => Uint8Array.of(v >>> 24, v >>> 16, v >>> 8, v);
  const cases: Array<[string, Array<[number, Uint8Array]>, string]> = [
    ["missing export name", [[Attr.FEATURES, u32(0)]], "missing EXPORT_NAME"],
    ["empty export name", [name("")], "empty EXPORT_NAME"],
    ["export name too long", [name("x".repeat(256))], "EXPORT_NAME too long (256 bytes, max 255)"],
    ["export name bad utf-8", [[Attr.EXPORT_NAME, Uint8Array.of(0x64, 0xc3, 0x28)]], "EXPORT_NAME is not valid utf-8"],
    ["client name too long", [name("d"), [Attr.CLIENT_NAME, new Uint8Array(300).fill(0x61)]], "CLIENT_NAME too long (300 bytes, max 255)"],
    ["client name bad utf-8", [name("d"), [Attr.CLIENT_NAME, Uint8Array.of(0xff)]], "CLIENT_NAME is not valid utf-8"],
    ["MAX_PAYLOAD size", [name("d"), [Attr.MAX_PAYLOAD, Uint8Array.of(0, 1, 0)]], "MAX_PAYLOAD is 3 bytes, expected 4"],
    ["MAX_PAYLOAD too small", [name("d"), [Attr.MAX_PAYLOAD, u32(4095)]], "HELLO MAX_PAYLOAD 4095 is below the minimum 4096"],
    ["FEATURES size", [name("d"), [Attr.FEATURES, new Uint8Array(8)]], "FEATURES is 8 bytes, expected 4"],
    ["SESSION_ID size", [name("d"), [Attr.SESSION_ID, new Uint8Array(15)]], "SESSION_ID is 15 bytes, expected 16"],
    ["TXID_FLOOR size", [name("d"), [Attr.TXID_FLOOR, new Uint8Array(4)]], "TXID_FLOOR is 4 bytes, expected 8"],
    ["TXID_FLOOR too big", [name("d"), [Attr.TXID_FLOOR, Uint8Array.of(0, 0x20, 0, 0, 0, 0, 0, 0)]], "TXID_FLOOR exceeds 2^53"],
    ["CONNECTION_SEQ size", [name("d"), [Attr.CONNECTION_SEQ, new Uint8Array(4)]], "CONNECTION_SEQ is 4 bytes, expected 8"],
  ];
  for (const [label, records, reason] of cases) test(label, () => expect(decodeHello(...helloWith(records))).toBe(reason));

  test("a 255-byte multi-byte name is fine", () => {
    const n = "é".repeat(127) + "x"; // 255 bytes
    expect((decodeHello(...helloWith([name(n)])) as Hello).exportName).toBe(n);
  });

  test("wrong opcode", () => {
    const [header, payload] = split(goldenWelcome);
    expect(decodeHello(header, payload)).toBe("expected HELLO, got WELCOME");
    expect(decodeWelcome(...split(goldenHello))).toBe("expected WELCOME, got HELLO");
  });
});

describe("WELCOME reasons", () => {
  const u32 = (v: number) => Uint8Array.of(v >>> 24, v >>> 16, v >>> 8, v);
  for (const [label, type] of Object.entries(Attr)) {
    // Only the attributes an accepting WELCOME must carry; the rest belong to HELLO,
    // CHALLENGE / AUTH, or are optional (CHECKSUM absent means "none").
    const required: number[] = [Attr.SIZE, Attr.BLOCK_MIN, Attr.BLOCK_PREFERRED, Attr.MAX_PAYLOAD, Attr.PERMISSIONS, Attr.FEATURES, Attr.SESSION_ID, Attr.EPOCH, Attr.MAX_INFLIGHT];
    if (!required.includes(type)) continue;
    test(`missing ${label}`, () => expect(decodeWelcome(...welcomeWithout(type))).toBe(`WELCOME missing ${label}`));
  }
  const cases: Array<[string, number, Uint8Array, string]> = [
    ["SIZE width", Attr.SIZE, new Uint8Array(4), "WELCOME SIZE is 4 bytes, expected 8"],
    ["SIZE over 2^53", Attr.SIZE, Uint8Array.of(0xff, 0, 0, 0, 0, 0, 0, 0), "WELCOME SIZE exceeds 2^53"],
    ["PERMISSIONS width", Attr.PERMISSIONS, new Uint8Array(4), "WELCOME PERMISSIONS is 4 bytes, expected 1"],
    ["SESSION_ID width", Attr.SESSION_ID, new Uint8Array(4), "SESSION_ID is 4 bytes, expected 16"],
    ["BLOCK_MIN not a power of two", Attr.BLOCK_MIN, u32(513), "WELCOME BLOCK_MIN 513 is not a power of two"],
    ["BLOCK_MIN zero", Attr.BLOCK_MIN, u32(0), "WELCOME BLOCK_MIN 0 is not a power of two"],
    ["BLOCK_PREFERRED below BLOCK_MIN", Attr.BLOCK_PREFERRED, u32(256), "WELCOME BLOCK_PREFERRED 256 is not a power of two >= BLOCK_MIN 512"],
    ["MAX_PAYLOAD too small", Attr.MAX_PAYLOAD, u32(512), "WELCOME MAX_PAYLOAD 512 is below the minimum 4096"],
    ["MAX_PAYLOAD above the bound", Attr.MAX_PAYLOAD, u32(64 * 1024 * 1024), `WELCOME MAX_PAYLOAD ${64 * 1024 * 1024} exceeds the upper bound ${32 * 1024 * 1024}`],
    ["MAX_INFLIGHT zero", Attr.MAX_INFLIGHT, u32(0), "WELCOME MAX_INFLIGHT is 0"],
  ];
  for (const [label, type, value, reason] of cases) {
    test(label, () => expect(decodeWelcome(...welcomeWithout(type, value))).toBe(reason));
  }

  test("MAX_PAYLOAD below BLOCK_MIN", () => {
    const [header, payload] = split(encodeWelcome({ ...goldenWelcomeValue, blockMin: 8192, blockPreferred: 8192, maxPayload: 4096 }));
    expect(decodeWelcome(header, payload)).toBe("WELCOME MAX_PAYLOAD 4096 is below BLOCK_MIN 8192");
  });

  test("a WELCOME of another version", () => {
    const [header, payload] = split(goldenWelcome);
    expect(decodeWelcome({ ...header, version: 2 }, payload)).toBe("peer speaks DST version 2, this build speaks 1");
  });

  test("a malformed refusal is malformed, not a refusal", () => {
    const [header] = split(goldenRefusal);
    expect(decodeWelcome(header, Uint8Array.of(0, 11, 0, 50))).toBe("MESSAGE length 50 overruns the payload (0 bytes left)");
  });
});

describe("version negotiation", () => {
  test("negotiateVersion", () => {
    expect(negotiateVersion(1)).toBe(1);
    expect(negotiateVersion(2)).toBe(1);
    expect(negotiateVersion(255)).toBe(1);
    expect(negotiateVersion(0)).toBe("peer speaks DST version 0, this build speaks 1");
    expect(typeof negotiateVersion(-1)).toBe("string");
    expect(typeof negotiateVersion(1.5)).toBe("string");
  });

  /** What a v1 server does with a HELLO straight off the wire. */
  function serve(helloFrame: Uint8Array): Uint8Array {
    const decoder = new FrameDecoder(HANDSHAKE_PAYLOAD_MAX);
    let answer: Uint8Array | null = null;
    const reason = decoder.push(helloFrame, (header, payload) => {
      const hello = decodeHello(header, payload);
      if (typeof hello === "string") throw new Error(hello);
      const version = negotiateVersion(hello.version);
      answer = typeof version === "string" ? encodeRefusal(Errno.EPROTONOSUPPORT, version) : encodeWelcome(goldenWelcomeValue);
    });
    expect(reason).toBeNull();
    return answer!;
  }

  test("a newer client is answered in version 1", () => {
    const answer = serve(encodeHello({ ...goldenHelloValue, version: 4 }));
    expect(answer[4]).toBe(1);
    expect(decodeWelcome(...split(answer))).toEqual({ ok: true, welcome: goldenWelcomeValue });
  });

  test("a version 0 HELLO is refused with EPROTONOSUPPORT", () => {
    const hello = encodeHello(goldenHelloValue);
    hello[4] = 0;
    expect(decodeWelcome(...split(serve(hello)))).toEqual({
      ok: false, status: Errno.EPROTONOSUPPORT, message: "peer speaks DST version 0, this build speaks 1",
    });
  });
});

describe("decoded values own their bytes", () => {
  test("a session id and token decoded from a Buffer payload survive the payload being reused", () => {
    // Opened records may be Buffers (whose slice() is a view) in reused buffers: a session id
    // kept as a view turned into other bytes, and the client resumed a session it never had.
    for (const [frame, decode] of [
      [encodeHello({ ...sampleHello, sessionId: new Uint8Array(16).fill(3), resumeToken: new Uint8Array(32).fill(4) }), decodeHello],
      [encodeWelcome({ ...sampleWelcome, sessionId: new Uint8Array(16).fill(3), resumeToken: new Uint8Array(32).fill(4) }), decodeWelcome],
    ] as const) {
      const payload = Buffer.from(frame.subarray(HEADER_SIZE));
      const value = (decode as (h: Header, p: Uint8Array) => unknown)(decodeHeader(frame, 0), payload) as Record<string, unknown>;
      const found = ("welcome" in value ? (value.welcome as Record<string, unknown>) : value) as { sessionId: Uint8Array; resumeToken?: Uint8Array };
      payload.fill(0xee);
      expect([...found.sessionId]).toEqual(new Array(16).fill(3));
      expect([...found.resumeToken!]).toEqual(new Array(32).fill(4));
    }
  });
});
