import { describe, expect, test } from "bun:test";
import { Info, Opt, Rep } from "../../src/wire/nbd/constants.ts";
import {
  HandshakeReader,
  decodeString,
  encodeExportNameReply,
  encodeOptionError,
  encodeOptionReply,
  encodeServerGreeting,
  infoBlockSize,
  infoExport,
  infoName,
  parseInfoRequest,
  parseMetaContextRequest,
  repMetaContext,
  repServer,
} from "../../src/wire/nbd/handshake.ts";
import { concat, infoData, metaData, option, randomBytes, u32 } from "../nbd/harness.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("golden bytes (proto.md)", () => {
  test("server greeting: NBDMAGIC IHAVEOPT, FIXED_NEWSTYLE|NO_ZEROES", () => {
    expect(hex(encodeServerGreeting())).toBe("4e42444d41474943" + "49484156454f5054" + "0003");
    expect(Buffer.from(encodeServerGreeting().subarray(0, 16)).toString("latin1")).toBe("NBDMAGICIHAVEOPT");
  });

  test("option reply: magic 0x3e889045565a9, option, type, length", () => {
    expect(hex(encodeOptionReply(Opt.GO, Rep.ACK))).toBe("0003e889045565a9" + "00000007" + "00000001" + "00000000");
    expect(hex(encodeOptionError(Opt.LIST, Rep.ERR_INVALID, "no"))).toBe(
      "0003e889045565a9" + "00000003" + "80000003" + "00000002" + "6e6f",
    );
  });

  test("NBD_INFO_EXPORT is 12 bytes: u16 0, u64 size, u16 flags", () => {
    expect(hex(infoExport(0x1_0000_0200, 0x0d6d))).toBe("0000" + "0000000100000200" + "0d6d");
  });

  test("NBD_INFO_BLOCK_SIZE is 14 bytes: u16 3, min, preferred, max", () => {
    expect(hex(infoBlockSize(1, 4096, 32 << 20))).toBe("0003" + "00000001" + "00001000" + "02000000");
  });

  test("NBD_INFO_NAME, NBD_REP_SERVER and NBD_REP_META_CONTEXT payloads", () => {
    expect(hex(infoName("d"))).toBe("0001" + "64");
    expect(hex(repServer("disk", "x"))).toBe("00000004" + "6469736b" + "78");
    expect(hex(repMetaContext(1, "base:allocation"))).toBe("00000001" + Buffer.from("base:allocation").toString("hex"));
  });

  test("EXPORT_NAME reply: size, flags, 124 zeroes unless NO_ZEROES", () => {
    const full = encodeExportNameReply(1 << 20, 0x0003, false);
    expect(full.length).toBe(134);
    expect(hex(full.subarray(0, 10))).toBe("0000000000100000" + "0003");
    expect(full.subarray(10).every((b) => b === 0)).toBe(true);
    expect(encodeExportNameReply(1 << 20, 0x0003, true).length).toBe(10);
  });
});

describe("HandshakeReader", () => {
  const stream = concat(u32(3), option(Opt.STRUCTURED_REPLY), option(Opt.GO, infoData("disk", [Info.NAME])), new Uint8Array([1, 2, 3]));

  function readAll(reader: HandshakeReader) {
    const events = [];
    for (let e = reader.next(); e !== null; e = reader.next()) events.push(e);
    return events;
  }

  test("client flags then options, split at every byte boundary", () => {
    for (let split = 0; split <= stream.length; split++) {
      const reader = new HandshakeReader();
      reader.push(stream.subarray(0, split));
      const events = readAll(reader);
      reader.push(stream.subarray(split));
      events.push(...readAll(reader));
      expect(events.map((e) => e.kind)).toEqual(["client-flags", "option", "option"]);
      expect(events[0]).toEqual({ kind: "client-flags", flags: 3 });
      expect(events[2]).toEqual({ kind: "option", option: Opt.GO, data: infoData("disk", [Info.NAME]) });
      expect([...reader.remainder()]).toEqual([1, 2, 3]);
    }
  });

  test("one byte at a time", () => {
    const reader = new HandshakeReader();
    const events = [];
    for (const byte of stream) {
      reader.push(new Uint8Array([byte]));
      events.push(...readAll(reader));
    }
    expect(events.map((e) => e.kind)).toEqual(["client-flags", "option", "option"]);
  });

  test("bad option magic is an error with a reason, then silence", () => {
    const reader = new HandshakeReader();
    reader.push(concat(u32(1), new Uint8Array(16).fill(0x41)));
    expect(reader.next()).toEqual({ kind: "client-flags", flags: 1 });
    const event = reader.next();
    expect(event?.kind).toBe("error");
    expect(event?.kind === "error" && event.reason).toContain("IHAVEOPT");
    reader.push(option(Opt.LIST));
    expect(reader.next()).toBeNull();
  });

  test("oversized option data is skipped without buffering, the next option still parses", () => {
    const reader = new HandshakeReader(100);
    reader.push(u32(1));
    reader.next();
    reader.push(option(99, new Uint8Array(0), 5000));
    expect(reader.next()).toEqual({ kind: "oversized", option: 99, length: 5000 });
    for (let i = 0; i < 5; i++) {
      reader.push(new Uint8Array(1000));
      expect(reader.next()).toBeNull();
    }
    reader.push(option(Opt.LIST));
    expect(reader.next()).toEqual({ kind: "option", option: Opt.LIST, data: new Uint8Array(0) });
  });

  test("random garbage never throws", () => {
    for (let seed = 1; seed < 300; seed++) {
      const reader = new HandshakeReader(64);
      const bytes = randomBytes(seed * 3, seed);
      for (let at = 0; at < bytes.length; at += 7) {
        reader.push(bytes.subarray(at, at + 7));
        readAll(reader);
      }
    }
  });
});

describe("option payload parsers", () => {
  test("INFO/GO data round-trips", () => {
    expect(parseInfoRequest(infoData("disk", [0, 3]))).toEqual({ name: "disk", requests: [0, 3] });
    expect(parseInfoRequest(infoData(""))).toEqual({ name: "", requests: [] });
  });

  test("INFO/GO data: lengths that do not add up are reasons, not exceptions", () => {
    expect(parseInfoRequest(new Uint8Array(5))).toContain("at least 6");
    expect(parseInfoRequest(concat(u32(100), new Uint8Array(2)))).toContain("exceeds");
    expect(parseInfoRequest(concat(infoData("a", [1]), new Uint8Array(1)))).toContain("information requests need");
    expect(parseInfoRequest(concat(u32(0xffffffff), new Uint8Array(6)))).toContain("exceeds");
    expect(parseInfoRequest(concat(u32(1), new Uint8Array([0]), new Uint8Array(2)))).toContain("NUL");
    expect(parseInfoRequest(concat(u32(1), new Uint8Array([0xff]), new Uint8Array(2)))).toContain("UTF-8");
  });

  test("META_CONTEXT data round-trips and rejects overruns", () => {
    expect(parseMetaContextRequest(metaData("disk", ["base:allocation", "qemu:x"]))).toEqual({
      name: "disk",
      queries: ["base:allocation", "qemu:x"],
    });
    expect(parseMetaContextRequest(metaData("", []))).toEqual({ name: "", queries: [] });
    expect(parseMetaContextRequest(concat(u32(0), u32(0xffffffff)))).toContain("cannot fit");
    expect(parseMetaContextRequest(concat(u32(0), u32(1), u32(50), new Uint8Array(3)))).toContain("exceeds");
    expect(parseMetaContextRequest(concat(metaData("", ["a:b"]), new Uint8Array(1)))).toContain("unexpected");
  });

  test("garbage payloads never throw", () => {
    for (let seed = 1; seed < 500; seed++) {
      const bytes = randomBytes(seed % 40, seed);
      expect(() => parseInfoRequest(bytes)).not.toThrow();
      expect(() => parseMetaContextRequest(bytes)).not.toThrow();
    }
  });

  test("strings longer than 4096 bytes are refused", () => {
    expect(decodeString(new Uint8Array(4097).fill(0x61), "name")).toEqual({ ok: false, reason: "name is 4097 bytes, more than 4096" });
    expect(decodeString(new Uint8Array(4096).fill(0x61), "name").ok).toBe(true);
  });
});
