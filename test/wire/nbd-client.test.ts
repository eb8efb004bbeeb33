/**
 * Client-side NBD codecs (src/wire/nbd/client.ts): golden bytes of what the client sends,
 * incremental parsing of everything the server sends split at every byte boundary, and
 * garbage that must give a reason, never an exception.
 */
import { describe, expect, test } from "bun:test";
import {
  encodeClientFlags,
  encodeExportNameOption,
  encodeGoOption,
  parseInfoReply,
  ServerHandshakeReader,
  SimpleReplyDecoder,
  writeRequestHeader,
  type ServerHandshakeEvent,
  type ServerHandshakeExpect,
  type SimpleReply,
} from "../../src/wire/nbd/client.ts";
import { Cmd, Info, Opt, Rep } from "../../src/wire/nbd/constants.ts";
import {
  encodeExportNameReply,
  encodeOptionError,
  encodeOptionReply,
  encodeServerGreeting,
  infoBlockSize,
  infoExport,
  parseInfoRequest,
} from "../../src/wire/nbd/handshake.ts";
import { writeSimpleReply } from "../../src/wire/nbd/transmission.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), (at += p.length));
  return out;
}

function simpleReply(error: number, cookie: number, data?: Uint8Array): Uint8Array {
  const header = new Uint8Array(16);
  writeSimpleReply(header, 0, error, Math.floor(cookie / 2 ** 32), cookie % 2 ** 32);
  return data ? concat(header, data) : header;
}

describe("client encoders (golden bytes)", () => {
  test("client flags", () => {
    expect(hex(encodeClientFlags(3))).toBe("00000003");
  });

  test("OPT_GO with no info requests", () => {
    expect(hex(encodeGoOption("disk"))).toBe(
      "49484156454f5054" + "00000007" + "0000000a" + "00000004" + "6469736b" + "0000",
    );
    // The server-side parser agrees on the layout.
    const data = encodeGoOption("d", [Info.BLOCK_SIZE]).subarray(16);
    expect(parseInfoRequest(data)).toEqual({ name: "d", requests: [Info.BLOCK_SIZE] });
  });

  test("OPT_EXPORT_NAME carries the bare name", () => {
    expect(hex(encodeExportNameOption("ab"))).toBe("49484156454f5054" + "00000001" + "00000002" + "6162");
  });

  test("request header with a 64-bit cookie and offset", () => {
    const out = new Uint8Array(28);
    expect(writeRequestHeader(out, 0, 0, Cmd.READ, 2 ** 32 + 5, 2 ** 40 + 512, 4096)).toBe(28);
    expect(hex(out)).toBe("25609513" + "0000" + "0000" + "0000000100000005" + "0000010000000200" + "00001000");
  });
});

/** Feed `bytes` split at `cut` and collect every event of the expected sequence. */
function readAll(bytes: Uint8Array, cut: number, expects: ServerHandshakeExpect[], noZeroes = true) {
  const reader = new ServerHandshakeReader();
  const events: ServerHandshakeEvent[] = [];
  let i = 0;
  const drain = () => {
    while (i < expects.length) {
      const event = reader.next(expects[i]!, noZeroes);
      if (event === null) return;
      events.push(event);
      i++;
    }
  };
  reader.push(bytes.subarray(0, cut));
  drain();
  reader.push(bytes.subarray(cut));
  drain();
  return { events, rest: reader.remainder() };
}

describe("ServerHandshakeReader", () => {
  const stream = concat(
    encodeServerGreeting(),
    encodeOptionReply(Opt.GO, Rep.INFO, infoExport(1 << 30, 0x4d)),
    encodeOptionError(Opt.GO, Rep.ERR_UNKNOWN, "no export"),
    encodeOptionReply(Opt.GO, Rep.ACK),
    new Uint8Array([0x67, 0x44]), // first transmission bytes
  );
  const expects: ServerHandshakeExpect[] = ["greeting", "option-reply", "option-reply", "option-reply"];

  test("greeting and option replies, split at every byte", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const { events, rest } = readAll(stream, cut, expects);
      expect(events.length).toBe(4);
      expect(events[0]).toEqual({ kind: "greeting", flags: 3 });
      const info = events[1]!;
      expect(info.kind === "option-reply" && info.type === Rep.INFO && parseInfoReply(info.data)).toEqual({
        info: Info.EXPORT,
        size: 1 << 30,
        flags: 0x4d,
      });
      const error = events[2]!;
      expect(error.kind === "option-reply" && [error.type, new TextDecoder().decode(error.data)]).toEqual([Rep.ERR_UNKNOWN, "no export"]);
      expect(events[3]).toEqual({ kind: "option-reply", option: Opt.GO, type: Rep.ACK, data: new Uint8Array(0) });
      expect(hex(rest)).toBe("6744");
    }
  });

  test("EXPORT_NAME reply with and without the 124 zero bytes", () => {
    for (const noZeroes of [true, false]) {
      const bytes = concat(encodeServerGreeting(1), encodeExportNameReply(12345, 3, noZeroes));
      for (let cut = 0; cut <= bytes.length; cut++) {
        const { events, rest } = readAll(bytes, cut, ["greeting", "export-name-reply"], noZeroes);
        expect(events).toEqual([
          { kind: "greeting", flags: 1 },
          { kind: "export", size: 12345, flags: 3 },
        ]);
        expect(rest.length).toBe(0);
      }
    }
  });

  test("INFO payloads: block size, unknown types, bad lengths", () => {
    expect(parseInfoReply(infoBlockSize(512, 4096, 1 << 25))).toEqual({ info: Info.BLOCK_SIZE, minimum: 512, preferred: 4096, maximum: 1 << 25 });
    expect(parseInfoReply(new Uint8Array([0, 9, 1]))).toEqual({ info: 9 });
    expect(parseInfoReply(new Uint8Array([0]))).toContain("at least 2");
    expect(parseInfoReply(new Uint8Array([0, 0, 1]))).toContain("expected 12");
  });

  test("wrong magics give reasons and the reader stays failed", () => {
    const notNbd = new TextEncoder().encode("SSH-2.0-OpenSSH_9.2p1 Debian\r\n");
    const a = new ServerHandshakeReader();
    a.push(notNbd);
    expect(a.next("greeting")).toEqual({ kind: "error", reason: expect.stringContaining("NBDMAGIC") });
    expect(a.next("greeting")).toBeNull();
    const oldstyle = concat(encodeServerGreeting().subarray(0, 8), new Uint8Array([0, 0, 0x42, 0x02, 0x81, 0x86, 0x12, 0x53, 0, 0]));
    const b = new ServerHandshakeReader();
    b.push(oldstyle);
    expect(b.next("greeting")).toEqual({ kind: "error", reason: expect.stringContaining("oldstyle") });
    const c = new ServerHandshakeReader(100);
    c.push(encodeOptionReply(Opt.GO, Rep.INFO, new Uint8Array(101)));
    expect(c.next("option-reply")).toEqual({ kind: "error", reason: expect.stringContaining("101 bytes") });
  });

  test("random garbage never throws", () => {
    for (let round = 0; round < 2000; round++) {
      const bytes = crypto.getRandomValues(new Uint8Array(1 + (round % 200)));
      if (round % 3 === 0) bytes.set(encodeServerGreeting().subarray(0, Math.min(16, bytes.length)));
      const reader = new ServerHandshakeReader();
      reader.push(bytes);
      for (const expect_ of ["greeting", "option-reply", "export-name-reply", "option-reply"] as const) {
        const event = reader.next(expect_, round % 2 === 0);
        if (event === null || event.kind === "error") break;
      }
      expect(parseInfoReply(bytes)).toBeDefined();
    }
  });
});

describe("SimpleReplyDecoder", () => {
  function decode(bytes: Uint8Array, cuts: number[], outstanding: Map<number, Uint8Array | null>) {
    const decoder = new SimpleReplyDecoder((cookie) => outstanding.get(cookie));
    const out: Array<SimpleReply | string> = [];
    let from = 0;
    for (const to of [...cuts, bytes.length]) {
      decoder.push(bytes.subarray(from, to));
      from = to;
      for (let r = decoder.next(); r !== null; r = decoder.next()) {
        out.push(typeof r === "string" ? r : { ...r, data: r.data && r.data.slice() });
        if (typeof r !== "string") outstanding.delete(r.cookie);
      }
    }
    return out;
  }

  const data = crypto.getRandomValues(new Uint8Array(40));
  const stream = concat(simpleReply(0, 7, data), simpleReply(5, 2 ** 40 + 1), simpleReply(0, 9), simpleReply(22, 8));

  test("READ data, errors without data, split at every byte (and two cuts)", () => {
    for (let a = 0; a <= stream.length; a++) {
      for (const b of [a, Math.min(stream.length, a + 1), Math.min(stream.length, a + 17)]) {
        const outstanding = new Map<number, Uint8Array | null>([
          [7, new Uint8Array(40)],
          [2 ** 40 + 1, null],
          [9, null],
          [8, new Uint8Array(4096)], // a failed READ: no data follows (proto.md "Simple reply message")
        ]);
        expect(decode(stream, [a, b], outstanding)).toEqual([
          { cookie: 7, error: 0, data },
          { cookie: 2 ** 40 + 1, error: 5, data: null },
          { cookie: 9, error: 0, data: null },
          { cookie: 8, error: 22, data: null },
        ]);
      }
    }
  });

  test("unknown cookie, structured and bad magics break the stream with a reason", () => {
    expect(decode(simpleReply(0, 99), [], new Map())).toEqual([expect.stringContaining("cookie 99")]);
    const structured = simpleReply(0, 1);
    structured.set([0x66, 0x8e, 0x33, 0xef]);
    expect(decode(structured, [3], new Map([[1, null]]))).toEqual([expect.stringContaining("structured reply")]);
    const bad = concat(simpleReply(0, 1), new Uint8Array(16).fill(0xab));
    expect(decode(bad, [], new Map([[1, null]]))).toEqual([{ cookie: 1, error: 0, data: null }, expect.stringContaining("0xabababab")]);
  });

  test("random garbage never throws", () => {
    for (let round = 0; round < 2000; round++) {
      const bytes = crypto.getRandomValues(new Uint8Array(1 + (round % 300)));
      if (round % 2 === 0) bytes.set([0x67, 0x44, 0x66, 0x98].slice(0, bytes.length));
      const outstanding = new Map<number, Uint8Array | null>();
      const decoder = new SimpleReplyDecoder((cookie) => (round % 4 === 0 ? new Uint8Array(cookie % 64) : outstanding.get(cookie)));
      decoder.push(bytes);
      for (let i = 0; i < 50 && decoder.next() !== null; i++);
    }
  });
});
