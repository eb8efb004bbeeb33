import { describe, expect, test } from "bun:test";
import { Cmd, CmdFlag, ReplyType } from "../../src/wire/nbd/constants.ts";
import {
  RequestDecoder,
  encodeRequest,
  writeBlockStatusChunk,
  writeErrorChunk,
  writeNoneChunk,
  writeOffsetDataHeader,
  writeOffsetHole,
  writeSimpleReply,
  type NbdRequest,
} from "../../src/wire/nbd/transmission.ts";
import { concat, randomBytes } from "../nbd/harness.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

type Decoded = Omit<NbdRequest, "payload" | "payloadOwned" | "pieceOffset" | "final"> & { payload: number[] | null };

function snapshot(r: NbdRequest): Decoded {
  return {
    flags: r.flags,
    type: r.type,
    cookieHi: r.cookieHi,
    cookieLo: r.cookieLo,
    offset: r.offset,
    length: r.length,
    payload: r.payload ? [...r.payload] : null,
    payloadDiscarded: r.payloadDiscarded,
  };
}

function drain(decoder: RequestDecoder): Array<Decoded | string> {
  const out: Array<Decoded | string> = [];
  for (let r = decoder.next(); r !== null; r = decoder.next()) out.push(typeof r === "string" ? r : snapshot(r));
  return out;
}

const options = { maxPayload: 64, discardLimit: 256 };

describe("request golden bytes (proto.md 'Request message')", () => {
  test("encodeRequest lays out magic, flags, type, cookie, offset, length, data", () => {
    const bytes = encodeRequest({ flags: CmdFlag.FUA, type: Cmd.WRITE, cookie: 0x0102030405060708n, offset: 0x1_0000_0000, data: new Uint8Array([9, 9]) });
    expect(hex(bytes)).toBe("25609513" + "0001" + "0001" + "0102030405060708" + "0000000100000000" + "00000002" + "0909");
  });

  test("decoder reads the spec layout", () => {
    const d = new RequestDecoder(options);
    d.push(Buffer.from("25609513" + "0008" + "0007" + "ffffffff00000001" + "0000000000001000" + "00010000", "hex"));
    expect(drain(d)).toEqual([
      { flags: 8, type: 7, cookieHi: 0xffffffff, cookieLo: 1, offset: 4096, length: 65536, payload: null, payloadDiscarded: false },
    ]);
  });
});

describe("RequestDecoder", () => {
  const stream = concat(
    encodeRequest({ type: Cmd.READ, cookie: 1n, offset: 512, length: 4096 }),
    encodeRequest({ type: Cmd.WRITE, cookie: 2n, offset: 0, data: randomBytes(40, 2) }),
    encodeRequest({ type: Cmd.FLUSH, cookie: 3n }),
    encodeRequest({ type: Cmd.WRITE, cookie: 4n, offset: 8, length: 0 }),
    encodeRequest({ type: Cmd.WRITE, flags: CmdFlag.FUA, cookie: 5n, offset: 64, data: randomBytes(64, 5) }),
    encodeRequest({ type: Cmd.WRITE, cookie: 6n, offset: 64, data: randomBytes(100, 6) }), // > maxPayload: discarded
    encodeRequest({ type: Cmd.DISC, cookie: 7n }),
  );
  const whole = new RequestDecoder(options);
  whole.push(stream);
  const expected = drain(whole);

  test("decodes a stream of mixed requests", () => {
    expect(expected.map((r) => typeof r !== "string" && r.type)).toEqual([Cmd.READ, Cmd.WRITE, Cmd.FLUSH, Cmd.WRITE, Cmd.WRITE, Cmd.WRITE, Cmd.DISC]);
    const writes = expected.filter((r): r is Decoded => typeof r !== "string" && r.type === Cmd.WRITE);
    expect(writes[0]!.payload).toEqual([...randomBytes(40, 2)]);
    expect(writes[1]!.payload).toBeNull(); // zero-length write
    expect(writes[2]!.flags).toBe(CmdFlag.FUA);
    expect(writes[3]!.payloadDiscarded).toBe(true);
    expect(writes[3]!.payload).toBeNull();
  });

  test("same result when split at every byte boundary", () => {
    for (let split = 0; split <= stream.length; split++) {
      const d = new RequestDecoder(options);
      d.push(stream.subarray(0, split));
      const got = drain(d);
      d.push(stream.subarray(split));
      got.push(...drain(d));
      expect(got).toEqual(expected);
    }
  });

  test("same result fed one byte at a time, and payloads are assembled from the allocator", () => {
    let allocations = 0;
    const d = new RequestDecoder({ ...options, allocate: (n) => (allocations++, new Uint8Array(n)) });
    const got: Array<Decoded | string> = [];
    for (const byte of stream) {
      d.push(new Uint8Array([byte]));
      got.push(...drain(d));
    }
    expect(got).toEqual(expected);
    expect(allocations).toBe(2); // the two accepted non-empty WRITE payloads
  });

  test("streamWrites hands out split payloads as views, in order, at every split point", () => {
    for (let split = 0; split <= stream.length; split += 3) {
      const d = new RequestDecoder({ ...options, streamWrites: true, allocate: () => { throw new Error("no assembly when streaming"); } });
      const got: Array<Decoded | string> = [];
      let pending: number[] = [];
      const collect = () => {
        for (let r = d.next(); r !== null; r = d.next()) {
          if (typeof r === "string") throw new Error(r);
          expect(r.pieceOffset).toBe(r.payload === null ? 0 : pending.length);
          if (r.payload) pending.push(...r.payload);
          if (!r.final) continue;
          got.push({ ...snapshot(r), payload: r.type === Cmd.WRITE && pending.length > 0 ? pending : r.payload === null ? null : pending });
          pending = [];
        }
      };
      d.push(stream.subarray(0, split));
      collect();
      d.push(stream.subarray(split));
      collect();
      expect(got).toEqual(expected);
    }
  });

  test("a payload that arrives whole is a view of the chunk (no copy)", () => {
    const d = new RequestDecoder(options);
    const chunk = encodeRequest({ type: Cmd.WRITE, cookie: 1n, data: randomBytes(32) });
    d.push(chunk);
    const r = d.next();
    if (r === null || typeof r === "string") throw new Error("expected a request");
    expect(r.payloadOwned).toBe(false);
    expect(r.payload!.buffer).toBe(chunk.buffer);
  });

  test("bad magic gives a reason and the decoder stays broken", () => {
    const d = new RequestDecoder(options);
    d.push(concat(encodeRequest({ type: Cmd.FLUSH }), new Uint8Array(28).fill(0x11)));
    const out = drain(d);
    expect(out.length).toBe(2);
    expect(out[1]).toBe("request magic is 0x11111111, expected 0x25609513");
    d.push(encodeRequest({ type: Cmd.FLUSH }));
    expect(d.next()).toBeNull();
  });

  test("a WRITE above the discard limit breaks the stream instead of being read", () => {
    const d = new RequestDecoder(options);
    d.push(encodeRequest({ type: Cmd.WRITE, length: 257 }));
    expect(d.next()).toBe("WRITE of 257 bytes exceeds the 256-byte limit");
  });

  test("offsets above 2^53 decode as unsafe integers (validation rejects them)", () => {
    const d = new RequestDecoder(options);
    d.push(encodeRequest({ type: Cmd.READ, offset: 0xffffffffffffffffn, length: 1 }));
    const r = d.next();
    if (r === null || typeof r === "string") throw new Error("expected a request");
    expect(Number.isSafeInteger(r.offset)).toBe(false);
  });

  test("random garbage never throws and always terminates", () => {
    for (let seed = 1; seed < 300; seed++) {
      const d = new RequestDecoder(options);
      const bytes = randomBytes(8 + seed * 5, seed);
      // Make some of it start like requests so the payload paths run too.
      bytes.set([0x25, 0x60, 0x95, 0x13, 0, 0, 0, seed % 9], 0);
      for (let at = 0; at < bytes.length; at += 13) {
        d.push(bytes.subarray(at, at + 13));
        drain(d);
      }
    }
  });
});

describe("reply writers (proto.md 'Simple reply', 'Structured reply chunk')", () => {
  const out = () => new Uint8Array(128);

  test("simple reply", () => {
    const b = out();
    expect(writeSimpleReply(b, 0, 22, 0x01020304, 0x05060708)).toBe(16);
    expect(hex(b.subarray(0, 16))).toBe("67446698" + "00000016" + "0102030405060708");
  });

  test("OFFSET_DATA header: length covers the offset and the data", () => {
    const b = out();
    expect(writeOffsetDataHeader(b, 4, 1, 0, 9, 4096, 512)).toBe(32);
    expect(hex(b.subarray(4, 32))).toBe("668e33ef" + "0001" + "0001" + "0000000000000009" + "00000208" + "0000000000001000");
  });

  test("OFFSET_HOLE, NONE and ERROR chunks", () => {
    const b = out();
    writeOffsetHole(b, 0, 0, 0, 1, 512, 1024);
    expect(hex(b.subarray(0, 32))).toBe("668e33ef" + "0000" + "0002" + "0000000000000001" + "0000000c" + "0000000000000200" + "00000400");
    writeNoneChunk(b, 0, 0, 2);
    expect(hex(b.subarray(0, 20))).toBe("668e33ef" + "0001" + "0000" + "0000000000000002" + "00000000");
    const end = writeErrorChunk(b, 0, 1, 0, 3, 5, new TextEncoder().encode("bad"));
    expect(hex(b.subarray(0, end))).toBe("668e33ef" + "0001" + "8001" + "0000000000000003" + "00000009" + "00000005" + "0003" + "626164");
    expect(ReplyType.ERROR).toBe(0x8001);
  });

  test("BLOCK_STATUS is chunk type 5 (not nbd.h's stale 3)", () => {
    const b = out();
    const end = writeBlockStatusChunk(b, 0, 1, 0, 4, 1, [4096, 8192], [3, 0], 2);
    expect(end).toBe(20 + 4 + 16);
    expect(hex(b.subarray(0, end))).toBe(
      "668e33ef" + "0001" + "0005" + "0000000000000004" + "00000014" + "00000001" + "00001000" + "00000003" + "00002000" + "00000000",
    );
  });
});
