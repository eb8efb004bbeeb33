/**
 * @module test/kernel/netlink — the pure netlink codec against golden bytes laid out from
 * include/uapi/linux/netlink.h / genetlink.h and against replies captured from a real kernel.
 */
import { describe, expect, test } from "bun:test";
import {
  NLA_F_NESTED,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NetlinkBuilder,
  align4,
  attributeString,
  attributeU16,
  attributeU32,
  attributeU64,
  attributeU8,
  hexDump,
  parseAck,
  parseAttributes,
  parseGenl,
  parseMessages,
  type NetlinkMessage,
} from "../../src/kernel/netlink.ts";

/** "0c000100 08000100" → bytes (spaces ignored). */
function unhex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function only(datagram: Uint8Array): NetlinkMessage {
  const parsed = parseMessages(datagram);
  expect(parsed.error).toBeNull();
  expect(parsed.messages).toHaveLength(1);
  return parsed.messages[0]!;
}

// Captured on this host (Linux 6.18): the kernel's answer to GETFAMILY "nbd" (no driver) —
// NLMSG_ERROR -ENOENT, not capped, so the whole 28-byte request follows the error code.
const REAL_ENOENT = unhex(
  "30000000 02000000 02000000 36200000 feffffff 1c000000 10000500 02000000 00000000 03010000 08000200 6e626400",
);
// Captured: the plain ack after a successful GETFAMILY (NLM_F_CAPPED = 0x100, header only).
const REAL_ACK = unhex("24000000 02000001 01000000 36200000 00000000 20000000 10000500 01000000 00000000");

describe("NetlinkBuilder", () => {
  test("GETFAMILY \"nbd\" matches the request bytes captured from a real GETFAMILY", () => {
    const bytes = new NetlinkBuilder(0x10, NLM_F_REQUEST, 1).genlHeader(3, 1).string(2, "nbd").finish();
    expect(hexDump(bytes)).toBe("1c000000 10000100 01000000 00000000 03010000 08000200 6e626400");
  });

  test("integer attributes are little-endian with 4-byte padding", () => {
    const bytes = new NetlinkBuilder(0x1234, NLM_F_REQUEST | NLM_F_ACK, 0xa0b0c0d0, 77)
      .genlHeader(9, 2)
      .u8(1, 0xfe)
      .u16(2, 0xbeef)
      .u32(3, 0xdeadbeef)
      .u64(4, 0x0102030405060708n)
      .finish();
    expect(hexDump(bytes)).toBe(
      "38000000 34120500 d0c0b0a0 4d000000 09020000 " + // nlmsghdr (len 56, pid 77) + genl
        "05000100 fe000000 " + // u8: nla_len 5, padded to 8
        "06000200 efbe0000 " + // u16: nla_len 6, padded to 8
        "08000300 efbeadde " +
        "0c000400 08070605 04030201",
    );
  });

  test("strings are NUL-terminated and padded; nests patch their length", () => {
    const bytes = new NetlinkBuilder(0x20, NLM_F_REQUEST, 0)
      .beginNested(7)
      .beginNested(1, true)
      .u32(1, 5)
      .endNested()
      .string(2, "abcd")
      .endNested()
      .finish();
    expect(hexDump(bytes)).toBe(
      "2c000000 20000100 00000000 00000000 " +
        "1c000700 " + // outer nest: 4 + 12 + 12
        "0c000180 08000100 05000000 " + // inner nest with NLA_F_NESTED
        "09000200 61626364 00000000", // "abcd\0": nla_len 9, padded to 12
    );
  });

  test("grows past its initial capacity without corrupting earlier bytes", () => {
    const b = new NetlinkBuilder(0x20, NLM_F_REQUEST, 1, 0, 16);
    for (let i = 0; i < 200; i++) b.u32(1, i);
    const bytes = b.finish();
    expect(bytes.length).toBe(16 + 200 * 8);
    const attrs = parseAttributes(bytes.subarray(16));
    expect(attrs.error).toBeNull();
    expect(attrs.attributes.map((a) => attributeU32(a))).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });

  test("values that do not fit are programmer errors", () => {
    const b = new NetlinkBuilder(0x20, NLM_F_REQUEST, 1);
    expect(() => b.u8(1, 256)).toThrow(/out of range/);
    expect(() => b.u32(1, -1)).toThrow(/out of range/);
    expect(() => b.u64(1, 2 ** 53)).toThrow(/does not fit/);
    expect(() => b.string(1, "a\0b")).toThrow(/NUL/);
    expect(() => new NetlinkBuilder(0x20, 1, 1).beginNested(1).finish()).toThrow(/open nested/);
  });

  test("align4", () => {
    expect([0, 1, 2, 3, 4, 5, 2 ** 32 - 1].map(align4)).toEqual([0, 4, 4, 4, 4, 8, 2 ** 32]);
  });
});

describe("parseMessages", () => {
  test("walks several messages in one datagram (reply + ack)", () => {
    const reply = new NetlinkBuilder(0x20, 0, 5, 99).genlHeader(1, 1).u32(1, 3).finish();
    const datagram = new Uint8Array([...reply, ...REAL_ACK]);
    const parsed = parseMessages(datagram);
    expect(parsed.error).toBeNull();
    expect(parsed.messages.map((m) => [m.type, m.seq, m.pid, m.payload.length])).toEqual([
      [0x20, 5, 99, 12],
      [NLMSG_ERROR, 1, 0x2036, 20],
    ]);
  });

  test("NLMSG_DONE with its 4-byte payload", () => {
    const m = only(unhex("14000000 03000200 07000000 00000000 00000000"));
    expect(m.type).toBe(NLMSG_DONE);
    expect(m.flags).toBe(2);
  });

  test("a last message without its trailing padding is still accepted", () => {
    const m = only(unhex("15000000 20000000 01000000 00000000 01010000 ff"));
    expect(m.payload.length).toBe(5);
  });

  test("malformed headers give a reason and keep the messages before them", () => {
    expect(parseMessages(unhex("01020304")).error).toMatch(/^truncated: 4 bytes left at offset 0/);
    expect(parseMessages(unhex("08000000 20000000 00000000 00000000")).error).toMatch(/^bad length: nlmsg_len 8/);
    const overrun = parseMessages(new Uint8Array([...REAL_ACK, ...unhex("ff000000 20000000 00000000 00000000")]));
    expect(overrun.messages).toHaveLength(1);
    expect(overrun.error).toMatch(/^overrun: nlmsg_len 255 at offset 36 .* \(16 bytes left\)/);
    expect(parseMessages(new Uint8Array(0))).toEqual({ messages: [], error: null });
  });
});

describe("parseAck", () => {
  test("a captured plain ack (capped)", () => {
    const ack = parseAck(only(REAL_ACK));
    expect(ack).toEqual({ ok: true, value: { errno: 0, requestType: 0x10, requestSeq: 1, extackMessage: null } });
  });

  test("a captured ENOENT error carrying the whole request", () => {
    const ack = parseAck(only(REAL_ENOENT));
    expect(ack).toEqual({ ok: true, value: { errno: 2, requestType: 0x10, requestSeq: 2, extackMessage: null } });
  });

  test("extended-ack text after a capped header (NLM_F_ACK_TLVS)", () => {
    const message = only(
      unhex(
        "34000000 02000003 05000000 63000000 eaffffff 1c000000 20000500 05000000 00000000 " +
          "0d000100 62616420 61747472 00000000", // NLMSGERR_ATTR_MSG "bad attr\0"
      ),
    );
    expect(parseAck(message)).toEqual({
      ok: true,
      value: { errno: 22, requestType: 0x20, requestSeq: 5, extackMessage: "bad attr" },
    });
  });

  test("extended-ack text after an uncapped request (TLVs start after the request's own length)", () => {
    const request = new NetlinkBuilder(0x20, 5, 9).genlHeader(1, 1).u32(1, 0).finish();
    const body = new Uint8Array([...unhex("feffffff"), ...request, ...unhex("08000100 6e6f0000")]);
    const message: NetlinkMessage = { type: NLMSG_ERROR, flags: 0x200, seq: 9, pid: 0, payload: body };
    const ack = parseAck(message);
    expect(ack.ok && ack.value.extackMessage).toBe("no");
  });

  test("short or positive error codes are reasons, not exceptions", () => {
    expect(parseAck({ type: 2, flags: 0, seq: 1, pid: 0, payload: new Uint8Array(8) })).toEqual({
      ok: false,
      reason: "truncated: NLMSG_ERROR payload is 8 bytes, needs 20",
    });
    const positive = new Uint8Array(20);
    positive[0] = 5;
    const result = parseAck({ type: 2, flags: 0, seq: 1, pid: 0, payload: positive });
    expect(result.ok).toBe(false);
  });
});

describe("attributes", () => {
  test("NLA_F_NESTED is masked from the type and reported separately", () => {
    const parsed = parseAttributes(unhex("0c000780 08000100 07000000"));
    expect(parsed.error).toBeNull();
    expect(parsed.attributes[0]!.type).toBe(7);
    expect(parsed.attributes[0]!.nested).toBe(true);
    const inner = parseAttributes(parsed.attributes[0]!.payload).attributes[0]!;
    expect(attributeU32(inner)).toBe(7);
  });

  test("malformed attributes give reasons", () => {
    expect(parseAttributes(unhex("0800")).error).toMatch(/^truncated/);
    expect(parseAttributes(unhex("02000100")).error).toMatch(/^bad length: nla_len 2 of attribute 1/);
    expect(parseAttributes(unhex("40000100 00000000")).error).toMatch(/^overrun: attribute 1 at offset 0 claims 64 bytes, 8 left/);
  });

  test("typed readers return undefined for payloads too short for the type", () => {
    const [short] = parseAttributes(unhex("05000100 01000000")).attributes;
    expect(attributeU8(short!)).toBe(1);
    expect(attributeU16(short!)).toBeUndefined();
    expect(attributeU32(short!)).toBeUndefined();
    expect(attributeU64(short!)).toBeUndefined();
  });

  test("u64 beyond 2^53 and invalid UTF-8 strings are undefined", () => {
    const [big, bad, ok] = parseAttributes(unhex("0c000100 ffffffff ffffffff 06000200 ff800000 08000300 61620000")).attributes;
    expect(attributeU64(big!)).toBeUndefined();
    expect(attributeString(bad!)).toBeUndefined();
    expect(attributeString(ok!)).toBe("ab");
  });

  test("parseGenl splits the genl header from the attribute area", () => {
    const g = parseGenl(only(unhex("1c000000 20000000 01000000 00000000 04010000 08000100 03000000")));
    expect(g.ok && [g.value.cmd, g.value.version, g.value.attributes.length]).toEqual([4, 1, 8]);
    expect(parseGenl({ type: 0x20, flags: 0, seq: 0, pid: 0, payload: new Uint8Array(2) }).ok).toBe(false);
  });

  test("NLA_F_NESTED constant", () => {
    expect(NLA_F_NESTED).toBe(0x8000);
  });
});
