/**
 * @module test/wire/dst-decoder — the incremental FrameDecoder: one chunk, byte by byte, split
 * at every boundary (ioredis style), early rejection, dead-after-error, garbage never throws.
 */
import { describe, expect, test } from "bun:test";
import { Prng } from "../../src/lib/prng.ts";
import { Flag, HANDSHAKE_PAYLOAD_MAX, HEADER_SIZE, Op, PAYLOAD_MAX_DEFAULT } from "../../src/wire/dst/constants.ts";
import { FrameDecoder } from "../../src/wire/dst/decoder.ts";
import { decodeHeader, encodeFrame, invalidHeader, type Header } from "../../src/wire/dst/header.ts";
import { KiB, MiB, concat, pattern, readReply, smallFrames } from "./dst-samples.ts";

interface Seen {
  header: Header;
  payload: Uint8Array;
  frame: Uint8Array;
}

/** Pushes the chunks in order; returns the frames and the last push result. */
function decode(chunks: Uint8Array[], maxPayload = PAYLOAD_MAX_DEFAULT): { frames: Seen[]; result: string | null; decoder: FrameDecoder } {
  const decoder = new FrameDecoder(maxPayload);
  const frames: Seen[] = [];
  let result: string | null = null;
  for (const chunk of chunks) {
    result = decoder.push(chunk, (header, payload, frame) => frames.push({ header, payload, frame }));
  }
  return { frames, result, decoder };
}

/** Every frame came out whole, in order, with a header matching its bytes. */
function expectFrames(frames: Seen[], expected: Uint8Array[]): void {
  expect(frames.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const { header, payload, frame } = frames[i]!;
    const want = expected[i]!;
    expect(frame.length).toBe(want.length);
    expect(Buffer.from(frame).equals(want)).toBe(true);
    expect(header).toEqual(decodeHeader(want, 0));
    expect(payload.length).toBe(header.payloadLength);
    expect(payload.byteOffset).toBe(frame.byteOffset + HEADER_SIZE);
    expect(payload.buffer).toBe(frame.buffer);
  }
}

function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    chunks.push(bytes.subarray(from, cut));
    from = cut;
  }
  return chunks;
}

const small = smallFrames();
const bigRead = readReply(77, 2 ** 33, 1 * MiB);
const write4k = encodeFrame({ opcode: Op.WRITE, flags: Flag.FUA, txid: 78, offset: 0, length: 4 * KiB }, pattern(4 * KiB, 78));
const ping = encodeFrame({ opcode: Op.PING, txid: 79 });
const everything = [...small, write4k, bigRead, ping];
const smallStream = concat(small);
const fullStream = concat(everything);

describe("well-formed streams", () => {
  test("one chunk: every frame handed out as views of the chunk (zero copy)", () => {
    const { frames, result, decoder } = decode([fullStream]);
    expect(result).toBeNull();
    expectFrames(frames, everything);
    for (const f of frames) expect(f.frame.buffer).toBe(fullStream.buffer);
    expect(decoder.bufferedBytes).toBe(0);
  });

  test("byte by byte", () => {
    const chunks = Array.from({ length: fullStream.length }, (_, i) => fullStream.subarray(i, i + 1));
    const { frames, result } = decode(chunks);
    expect(result).toBeNull();
    expectFrames(frames, everything);
  });

  test("split in two at every boundary of the small-frame stream", () => {
    for (let cut = 0; cut <= smallStream.length; cut++) {
      const { frames, result, decoder } = decode(splitAt(smallStream, [cut]));
      expect(result).toBeNull();
      expectFrames(frames, small);
      expect(decoder.bufferedBytes).toBe(0);
    }
  });

  test("split in three at sampled boundary pairs of the small-frame stream", () => {
    const prng = new Prng(3);
    for (let i = 0; i < 2000; i++) {
      const a = prng.int(smallStream.length + 1);
      const b = a + prng.int(smallStream.length + 1 - a);
      const { frames, result } = decode(splitAt(smallStream, [a, b]));
      expect(result).toBeNull();
      expectFrames(frames, small);
    }
  });

  test("the 1 MiB READ reply split at sampled boundaries; spanning frames get one exact-size buffer", () => {
    const start = fullStream.length - bigRead.length - ping.length; // bigRead's offset in the stream
    const cuts = new Set<number>();
    for (let i = 0; i <= HEADER_SIZE + 2; i++) cuts.add(start + i);
    for (let i = 0; i <= 2; i++) cuts.add(start + bigRead.length - i);
    const prng = new Prng(4);
    for (let i = 0; i < 200; i++) cuts.add(start + prng.int(bigRead.length));
    for (const cut of cuts) {
      const { frames, result } = decode(splitAt(fullStream, [cut]));
      expect(result).toBeNull();
      expect(frames.length).toBe(everything.length);
      const big = frames[everything.length - 2]!;
      expect(Buffer.from(big.frame).equals(bigRead)).toBe(true);
      if (cut > start && cut < start + bigRead.length) {
        expect(big.frame.buffer.byteLength).toBe(bigRead.length); // gathered once, exact size
      }
    }
  });

  test("many random splits of the full stream", () => {
    const prng = new Prng(5);
    for (let i = 0; i < 50; i++) {
      const cuts: number[] = [];
      let at = 0;
      while (true) {
        at += 1 + prng.int(prng.chance(0.5) ? 64 : 256 * KiB);
        if (at >= fullStream.length) break;
        cuts.push(at);
      }
      const { frames, result } = decode(splitAt(fullStream, cuts));
      expect(result).toBeNull();
      expectFrames(frames, everything);
    }
  });

  test("frames gathered across chunks stay intact after later pushes", () => {
    const decoder = new FrameDecoder(PAYLOAD_MAX_DEFAULT);
    const kept: Uint8Array[] = [];
    const chunks = splitAt(concat([write4k, write4k]), [100, write4k.length + 100]);
    for (const c of chunks) decoder.push(c, (_h, _p, frame) => kept.push(frame));
    expect(kept.length).toBe(2);
    for (const f of kept) expect(Buffer.from(f).equals(write4k)).toBe(true);
  });

  test("a truncated stream yields the complete frames, no error, and holds the rest", () => {
    for (const missing of [1, HEADER_SIZE, bigRead.length - 1, bigRead.length + ping.length - 1]) {
      const cut = fullStream.length - missing;
      const { frames, result, decoder } = decode([fullStream.subarray(0, cut)]);
      expect(result).toBeNull();
      let complete = 0;
      let end = 0;
      while (complete < everything.length && end + everything[complete]!.length <= cut) end += everything[complete++]!.length;
      expect(complete).toBeLessThan(everything.length);
      expect(frames.length).toBe(complete);
      expect(decoder.bufferedBytes).toBe(cut - end);
    }
  });

  test("empty chunks are harmless", () => {
    const { frames, result } = decode([new Uint8Array(0), ping, new Uint8Array(0)]);
    expect(result).toBeNull();
    expectFrames(frames, [ping]);
  });
});

describe("corrupt streams", () => {
  const oversized = encodeFrame({ opcode: Op.WRITE, txid: 1, length: 2 * MiB }).subarray(0, HEADER_SIZE);
  oversized[31] = 0; // payloadLength := 2 MiB (0x00200000), matching length; no payload sent
  oversized.set([0x00, 0x20, 0x00, 0x00], 28);

  test("an oversized length is refused as soon as the header is complete", () => {
    const expected = `payload length ${2 * MiB} exceeds max payload ${1 * MiB}`;
    const whole = decode([oversized], 1 * MiB);
    expect(whole.result).toBe(expected);
    expect(whole.decoder.bufferedBytes).toBe(0);
    const pieces = decode([oversized.subarray(0, 30), oversized.subarray(30)], 1 * MiB);
    expect(pieces.result).toBe(expected);
    expect(decode([oversized.subarray(0, HEADER_SIZE - 1)], 1 * MiB).result).toBeNull();
  });

  test("after an error push keeps returning it and delivers nothing", () => {
    const bad = ping.slice();
    bad[0] = 0x4e;
    const decoder = new FrameDecoder(PAYLOAD_MAX_DEFAULT);
    let count = 0;
    const first = decoder.push(concat([ping, bad, ping]), () => count++);
    expect(first).toStartWith("bad magic 0x4e535431");
    expect(count).toBe(1); // the frame before the bad one was delivered
    expect(decoder.push(ping, () => count++)).toBe(first);
    expect(decoder.push(new Uint8Array(0), () => count++)).toBe(first);
    expect(count).toBe(1);
  });

  test("a mid-stream error after a spanning frame", () => {
    const bad = write4k.slice();
    bad[HEADER_SIZE - 20] = 1; // reserved
    const { frames, result } = decode(splitAt(concat([write4k, bad]), [10, 4000, 4200]));
    expect(frames.length).toBe(1);
    expect(result).toBe("reserved field is not zero");
  });

  test("a maxPayload change takes effect for the next header", () => {
    const big = encodeFrame({ opcode: Op.WRITE, txid: 1, length: 128 * KiB }, pattern(128 * KiB, 9));
    expect(decode([big], HANDSHAKE_PAYLOAD_MAX).result).toBe(`payload length ${128 * KiB} exceeds max payload ${HANDSHAKE_PAYLOAD_MAX}`);
    const decoder = new FrameDecoder(HANDSHAKE_PAYLOAD_MAX);
    let count = 0;
    expect(decoder.push(small[0]!, () => count++)).toBeNull(); // the HELLO fits the handshake limit
    decoder.maxPayload = 1 * MiB;
    expect(decoder.push(big, () => count++)).toBeNull();
    expect(count).toBe(2);
    decoder.maxPayload = 64 * KiB;
    expect(decoder.push(big, () => count++)).toBe(`payload length ${128 * KiB} exceeds max payload ${64 * KiB}`);
  });

  test("a throwing handler kills the decoder and propagates", () => {
    const decoder = new FrameDecoder(PAYLOAD_MAX_DEFAULT);
    expect(() => decoder.push(concat([ping, ping]), () => {
      throw new Error("boom");
    })).toThrow("boom");
    expect(decoder.push(ping, () => {})).toBe("frame handler threw: boom");
  });
});

describe("garbage never throws and always ends", () => {
  function check(decoder: FrameDecoder, chunks: Uint8Array[]): void {
    for (const chunk of chunks) {
      const result = decoder.push(chunk, (header, payload, frame) => {
        expect(invalidHeader(header, decoder.maxPayload)).toBeNull();
        expect(frame.length).toBe(HEADER_SIZE + payload.length);
      });
      expect(result === null || (typeof result === "string" && result.length > 0)).toBe(true);
      expect(decoder.bufferedBytes).toBeLessThanOrEqual(HEADER_SIZE + decoder.maxPayload);
    }
  }

  test("20k random inputs of random length, random splits", () => {
    const prng = new Prng(20_000);
    for (let i = 0; i < 20_000; i++) {
      const input = prng.bytes(prng.int(prng.chance(0.9) ? 128 : 4096));
      // A third of them start with the real magic and version so the header checks get exercised.
      if (prng.chance(0.33) && input.length >= 5) input.set([0x44, 0x53, 0x54, 0x31, 1]);
      const decoder = new FrameDecoder(prng.pick([HANDSHAKE_PAYLOAD_MAX, 1 * MiB]));
      check(decoder, splitAt(input, input.length > 1 ? [prng.int(input.length)] : []));
    }
  });

  test("mutated valid frames", () => {
    const prng = new Prng(77);
    let frames = 0;
    let reasons = 0;
    for (let i = 0; i < 5_000; i++) {
      const bytes = concat([prng.pick(small), prng.pick(small)]);
      for (let flips = 1 + prng.int(4); flips > 0; flips--) {
        const at = prng.int(bytes.length);
        bytes[at] = prng.chance(0.5) ? bytes[at]! ^ (1 << prng.int(8)) : prng.next();
      }
      const decoder = new FrameDecoder(PAYLOAD_MAX_DEFAULT);
      const result = decoder.push(bytes, () => frames++);
      if (result !== null) reasons++;
      expect(decoder.bufferedBytes).toBeLessThanOrEqual(HEADER_SIZE + PAYLOAD_MAX_DEFAULT);
    }
    // Both outcomes must actually occur, or the mutations are not reaching the checks.
    expect(frames).toBeGreaterThan(1000);
    expect(reasons).toBeGreaterThan(1000);
  });
});

describe("reused gather buffer (export side)", () => {
  test("frames spanning chunks decode correctly one after another with a shared buffer", async () => {
    const { encodeFrame } = await import("../../src/wire/dst/header.ts");
    const { Op } = await import("../../src/wire/dst/constants.ts");
    const { FrameDecoder } = await import("../../src/wire/dst/decoder.ts");
    const decoder = new FrameDecoder(1 << 20, { reuseBuffers: true });
    const seen: number[] = [];
    for (let i = 1; i <= 3; i++) {
      const payload = new Uint8Array(100_000 * i).fill(i);
      const frame = encodeFrame({ opcode: Op.WRITE, txid: i, length: payload.length }, payload);
      for (let at = 0; at < frame.length; at += 7_000) {
        const reason = decoder.push(frame.slice(at, at + 7_000), (h, p) => {
          expect(p.length).toBe(100_000 * i);
          expect(p.every((b) => b === i)).toBe(true);
          seen.push(h.txid);
        });
        expect(reason).toBeNull();
      }
    }
    expect(seen).toEqual([1, 2, 3]);
  });
});

describe("scattered payloads (READ replies straight into the caller's buffer)", () => {
  /** A READ reply of `n` data bytes followed by `digest` digest bytes. */
  const replyWithDigest = (txid: number, n: number, digest: number) =>
    encodeFrame({ opcode: Op.READ | 0x80, flags: digest > 0 ? Flag.DIGEST : 0, txid, offset: 0, length: n }, concat([pattern(n, txid), pattern(digest, 99)]));

  test("split at sampled boundaries: the data lands in `into`, the digest in `rest`, nothing else is allocated", () => {
    const n = 256 * KiB;
    for (const digest of [0, 32]) {
      const frame = replyWithDigest(7, n, digest);
      for (const cut of [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1, HEADER_SIZE + n - 1, HEADER_SIZE + n, frame.length - 1].filter((c) => c < frame.length)) {
        const into = new Uint8Array(n);
        const rest = new Uint8Array(digest);
        const owner = { marker: true };
        const asked: Header[] = [];
        const decoder = new FrameDecoder(PAYLOAD_MAX_DEFAULT, {
          allocate: (_size, header) => {
            asked.push(header);
            return { into, rest, owner };
          },
        });
        const seen: Array<{ payload: Uint8Array; owner: unknown }> = [];
        for (const chunk of [frame.slice(0, cut), frame.slice(cut)]) {
          expect(decoder.push(chunk, (_h, payload, _f, o) => seen.push({ payload, owner: o }))).toBeNull();
        }
        expect(asked.map((h) => h.txid)).toEqual([7]);
        expect(seen.length).toBe(1);
        expect(seen[0]!.payload).toBe(into);
        expect(seen[0]!.owner).toBe(owner);
        expect(new Uint8Array(into)).toEqual(new Uint8Array(pattern(n, 7)));
        expect(new Uint8Array(rest)).toEqual(new Uint8Array(pattern(digest, 99)));
        expect(decoder.bufferedBytes).toBe(0);
      }
    }
  });

  test("release(): a buffer let go mid-frame is never written again, and the stream goes on", () => {
    const n = 64 * KiB;
    const into = new Uint8Array(n);
    const decoder = new FrameDecoder(PAYLOAD_MAX_DEFAULT, { allocate: () => ({ into, rest: new Uint8Array(0), owner: null }) });
    const frame = replyWithDigest(3, n, 0);
    const next = readReply(4, 0, 16);
    const seen: number[] = [];
    const onFrame = (h: Header) => void seen.push(h.txid);
    expect(decoder.push(frame.slice(0, HEADER_SIZE + 1000), onFrame)).toBeNull();
    decoder.release(into);
    expect(decoder.push(concat([frame.slice(HEADER_SIZE + 1000), next]), onFrame)).toBeNull();
    expect(into.subarray(1000).every((b) => b === 0)).toBe(true);
    expect(into.slice(0, 1000)).toEqual(new Uint8Array(pattern(n, 3).slice(0, 1000)));
    expect(seen).toEqual([3, 4]);
  });

  test("directTarget: the rest of the data is received in place; the digest and the next frame come as chunks", () => {
    const n = 200 * KiB;
    for (const digest of [0, 32]) {
      const into = new Uint8Array(n);
      const rest = new Uint8Array(digest);
      const decoder = new FrameDecoder(PAYLOAD_MAX_DEFAULT, { allocate: () => ({ into, rest, owner: "mine" }) });
      const frame = replyWithDigest(5, n, digest);
      const seen: Array<[number, unknown]> = [];
      const onFrame = (h: Header, _p: Uint8Array, _f: Uint8Array, owner: unknown) => void seen.push([h.txid, owner]);
      expect(decoder.directTarget).toBeNull(); // no frame under way
      expect(decoder.push(frame.slice(0, HEADER_SIZE + 1000), onFrame)).toBeNull();
      // What a transport with onread does: read into the target, in pieces, then report each count.
      let at = HEADER_SIZE + 1000;
      for (const piece of [3000, 100_000, n - 1000 - 103_000]) {
        const target = decoder.directTarget!;
        expect(target.length).toBe(n - (at - HEADER_SIZE));
        target.set(frame.subarray(at, at + piece));
        at += piece;
        expect(decoder.receivedDirect(piece, onFrame)).toBeNull();
      }
      // The data is all in; the digest (if any) and the next reply arrive as a chunk.
      expect(decoder.directTarget).toBeNull();
      expect(seen).toEqual(digest === 0 ? [[5, "mine"]] : []);
      expect(decoder.push(concat([frame.slice(at), readReply(6, 0, 16)]), onFrame)).toBeNull();
      expect(seen.map(([txid]) => txid)).toEqual([5, 6]);
      expect(into).toEqual(new Uint8Array(pattern(n, 5)));
      expect(rest).toEqual(new Uint8Array(pattern(digest, 99)));
      expect(() => decoder.receivedDirect(1, onFrame)).toThrow(); // nothing may land beyond the target
    }
  });
});
