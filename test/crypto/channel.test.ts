/**
 * @module test/crypto/channel — FrameSealer / FrameOpener: round trips for every suite and
 * size, tamper detection on every byte, replay / reorder / drop / cross-direction /
 * cross-session refusal, confidentiality of a known pattern, the integrity and none suites,
 * the frame limit and fail-closed behaviour after one bad frame.
 */
import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import {
  AES_GCM_MAX_BYTES,
  AUTH_FAILED,
  CHANNEL_FAILED,
  FrameOpener,
  FrameSealer,
  MAX_FRAMES,
} from "../../src/crypto/channel.ts";
import { SUITE_NAMES, type SuiteName } from "../../src/crypto/suites.ts";
import { AssertionError } from "../../src/lib/assert.ts";
import { DstdError } from "../../src/lib/errors.ts";
import { DST_MAGIC, DST_VERSION, HEADER, HEADER_SIZE, Op } from "../../src/wire/dst/constants.ts";

const PROTECTED: SuiteName[] = [
  "aes-256-gcm",
  "chacha20-poly1305",
  "xchacha20-poly1305",
  "integrity",
];
const ENCRYPTING: SuiteName[] = ["aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305"];
const MiB = 1024 * 1024;

/** A WRITE request frame with a recognisable header and `payload` after it. */
function makeFrame(payload: Uint8Array, txid = 7): Uint8Array<ArrayBuffer> {
  const frame = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint32(HEADER.magic, DST_MAGIC);
  frame[HEADER.version] = DST_VERSION;
  frame[HEADER.opcode] = Op.WRITE;
  view.setBigUint64(HEADER.txid, BigInt(txid));
  view.setBigUint64(HEADER.offset, 4096n * BigInt(txid));
  view.setUint32(HEADER.length, payload.length);
  view.setUint32(HEADER.payloadLength, payload.length);
  frame.set(payload, HEADER_SIZE);
  return frame;
}

function pattern(size: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff;
  return out;
}

function keyPair(): { c2s: Uint8Array; s2c: Uint8Array } {
  return { c2s: new Uint8Array(randomBytes(32)), s2c: new Uint8Array(randomBytes(32)) };
}

const tagOf = (frame: Uint8Array): Uint8Array => frame.slice(HEADER.authTag, HEADER.authTag + 16);
const isZero = (bytes: Uint8Array): boolean => bytes.every((b) => b === 0);

describe.each(SUITE_NAMES.map((s) => [s]))("suite %s", (suite) => {
  test.each([0, 1, 4096, MiB])(
    "round trip of a %i-byte payload keeps size and contents",
    (size) => {
      const { c2s } = keyPair();
      const sealer = new FrameSealer(suite, c2s, 0);
      const opener = new FrameOpener(suite, c2s, 0);
      const plain = makeFrame(pattern(size));
      const frame = plain.slice();
      expect(sealer.seal(frame)).toBe(frame);
      expect(frame.length).toBe(plain.length);
      expect(isZero(tagOf(frame))).toBe(suite === "none");
      if (ENCRYPTING.includes(suite) && size > 0)
        expect(frame.subarray(HEADER_SIZE)).not.toEqual(plain.subarray(HEADER_SIZE));
      else expect(frame.subarray(HEADER_SIZE)).toEqual(plain.subarray(HEADER_SIZE));
      // The header stays in clear.
      expect(frame.subarray(0, HEADER.authTag)).toEqual(plain.subarray(0, HEADER.authTag));
      const opened = opener.open(frame);
      expect(opened).toBe(frame);
      expect(frame).toEqual(plain); // authTag zeroed again, payload restored
    },
  );

  test("a stream of 200 frames of varied sizes opens in order", () => {
    const { s2c } = keyPair();
    const sealer = new FrameSealer(suite, s2c, 1);
    const opener = new FrameOpener(suite, s2c, 1);
    for (let i = 0; i < 200; i++) {
      const plain = makeFrame(pattern((i * 97) % 5000, i), i);
      const frame = sealer.seal(plain.slice());
      expect(opener.open(frame)).toEqual(plain);
    }
    expect(sealer.frames).toBe(suite === "none" ? 0 : 200);
    expect(opener.frames).toBe(sealer.frames);
  });
});

describe.each(PROTECTED.map((s) => [s]))("suite %s refuses", (suite) => {
  const { c2s, s2c } = keyPair();
  const plain = makeFrame(pattern(4096));
  const sealed = new FrameSealer(suite, c2s, 0).seal(plain.slice());

  test("a change to any single byte of header, tag or payload (all bytes of 4 KiB)", () => {
    let refused = 0;
    for (let i = 0; i < sealed.length; i++) {
      const frame = sealed.slice();
      frame[i] = (frame[i] ?? 0) ^ (1 << (i % 8));
      const result = new FrameOpener(suite, c2s, 0).open(frame);
      if (result === AUTH_FAILED) refused++;
      else if (i < HEADER.payloadLength || i >= HEADER.payloadLength + 4)
        expect(result).toBe(AUTH_FAILED);
      else expect(typeof result).toBe("string"); // payloadLength changes are caught before the tag
    }
    expect(refused).toBeGreaterThanOrEqual(sealed.length - 4);
  });

  test("a bad frame, leaving its payload as it arrived (no unverified plaintext)", () => {
    const frame = sealed.slice();
    frame[HEADER.txid] = (frame[HEADER.txid] ?? 0) ^ 1;
    expect(new FrameOpener(suite, c2s, 0).open(frame)).toBe(AUTH_FAILED);
    expect(frame.subarray(HEADER_SIZE)).toEqual(sealed.subarray(HEADER_SIZE));
  });

  test("a replayed frame (the same frame opened twice)", () => {
    const sealer = new FrameSealer(suite, c2s, 0);
    const opener = new FrameOpener(suite, c2s, 0);
    const first = sealer.seal(makeFrame(pattern(100)));
    const copy = first.slice();
    expect(typeof opener.open(first)).not.toBe("string");
    expect(opener.open(copy)).toBe(AUTH_FAILED);
  });

  test("reordered and dropped frames", () => {
    const sealer = new FrameSealer(suite, c2s, 0);
    const f0 = sealer.seal(makeFrame(pattern(100, 0), 0));
    const f1 = sealer.seal(makeFrame(pattern(100, 1), 1));
    // f1 first: reordered, or f0 dropped.
    expect(new FrameOpener(suite, c2s, 0).open(f1.slice())).toBe(AUTH_FAILED);
    const opener = new FrameOpener(suite, c2s, 0);
    expect(typeof opener.open(f0.slice())).not.toBe("string");
    expect(typeof opener.open(f1.slice())).not.toBe("string");
  });

  test("cross-direction: a client frame opened with the server's key or direction", () => {
    const clientFrame = new FrameSealer(suite, c2s, 0).seal(makeFrame(pattern(100)));
    expect(new FrameOpener(suite, s2c, 1).open(clientFrame.slice())).toBe(AUTH_FAILED);
    expect(new FrameOpener(suite, s2c, 0).open(clientFrame.slice())).toBe(AUTH_FAILED);
    // Same key, other direction: the nonce's direction field alone separates them.
    expect(new FrameOpener(suite, c2s, 1).open(clientFrame.slice())).toBe(AUTH_FAILED);
    expect(typeof new FrameOpener(suite, c2s, 0).open(clientFrame.slice())).not.toBe("string");
  });

  test("cross-session: the same counter under another session's keys", () => {
    const other = keyPair();
    const frame = new FrameSealer(suite, other.c2s, 0).seal(makeFrame(pattern(100)));
    expect(new FrameOpener(suite, c2s, 0).open(frame)).toBe(AUTH_FAILED);
  });

  test("a frame sealed under another suite with the same key", () => {
    const otherSuite = suite === "aes-256-gcm" ? "integrity" : "aes-256-gcm";
    const frame = new FrameSealer(otherSuite, c2s, 0).seal(makeFrame(pattern(100)));
    expect(new FrameOpener(suite, c2s, 0).open(frame)).toBe(AUTH_FAILED);
  });

  test("everything after one failure, even a genuine frame (fail closed)", () => {
    const sealer = new FrameSealer(suite, c2s, 0);
    const opener = new FrameOpener(suite, c2s, 0);
    const good = sealer.seal(makeFrame(pattern(10)));
    const bad = good.slice();
    bad[HEADER_SIZE] = (bad[HEADER_SIZE] ?? 0) ^ 0x80;
    expect(opener.open(bad)).toBe(AUTH_FAILED);
    expect(opener.open(good)).toBe(CHANNEL_FAILED);
  });

  test("to seal or open past maxBytes; rekeyDue turns true at half the budget", () => {
    const frameSize = HEADER_SIZE + 100;
    const sealer = new FrameSealer(suite, c2s, 0, { maxBytes: 4 * frameSize });
    const opener = new FrameOpener(suite, c2s, 0, { maxBytes: 4 * frameSize });
    for (let i = 0; i < 4; i++) {
      expect(sealer.rekeyDue).toBe(i >= 2);
      expect(typeof opener.open(sealer.seal(makeFrame(pattern(100))))).not.toBe("string");
    }
    expect(opener.rekeyDue).toBe(true);
    expect(() => sealer.seal(makeFrame(pattern(100)))).toThrow(
      "more than one key may protect; reconnect to rekey",
    );
    expect(opener.open(makeFrame(pattern(100)))).toContain("more than one key may protect");
  });

  test("to seal or open past maxFrames", () => {
    const sealer = new FrameSealer(suite, c2s, 0, { maxFrames: 2 });
    const opener = new FrameOpener(suite, c2s, 0, { maxFrames: 2 });
    for (let i = 0; i < 2; i++)
      expect(typeof opener.open(sealer.seal(makeFrame(pattern(8))))).not.toBe("string");
    expect(() => sealer.seal(makeFrame(pattern(8)))).toThrow(DstdError);
    expect(opener.open(makeFrame(pattern(8)))).toContain("the most one key may protect");
  });
});

describe("confidentiality", () => {
  test.each(ENCRYPTING.map((s) => [s]))(
    "%s: no 16-byte window of a known plaintext pattern survives in 1 MiB",
    (suite) => {
      const marker = new TextEncoder().encode("PLAINTEXT-MARKER");
      const payload = new Uint8Array(MiB);
      for (let i = 0; i + marker.length <= MiB; i += marker.length) payload.set(marker, i);
      const frame = new FrameSealer(suite, keyPair().c2s, 0).seal(makeFrame(payload));
      const wire = Buffer.from(frame.buffer, frame.byteOffset, frame.length);
      expect(wire.indexOf(Buffer.from(marker))).toBe(-1);
      expect(wire.indexOf(Buffer.from("MARKER"))).toBe(-1);
    },
  );

  test("two frames with the same plaintext encrypt differently (nonce advances)", () => {
    const sealer = new FrameSealer("aes-256-gcm", keyPair().c2s, 0);
    const a = sealer.seal(makeFrame(pattern(64)));
    const b = sealer.seal(makeFrame(pattern(64)));
    expect(a.subarray(HEADER_SIZE)).not.toEqual(b.subarray(HEADER_SIZE));
  });
});

describe("integrity suite", () => {
  test("leaves the payload readable but detects a changed payload byte", () => {
    const { c2s } = keyPair();
    const plain = makeFrame(pattern(4096));
    const frame = new FrameSealer("integrity", c2s, 0).seal(plain.slice());
    expect(frame.subarray(HEADER_SIZE)).toEqual(plain.subarray(HEADER_SIZE));
    expect(isZero(tagOf(frame))).toBe(false);
    frame[HEADER_SIZE + 2000] = (frame[HEADER_SIZE + 2000] ?? 0) ^ 4;
    expect(new FrameOpener("integrity", c2s, 0).open(frame)).toBe(AUTH_FAILED);
  });
});

describe("suite none", () => {
  test("seal only zeroes the tag; open refuses a non-zero tag", () => {
    const frame = makeFrame(pattern(32));
    frame[HEADER.authTag + 3] = 9;
    new FrameSealer("none", new Uint8Array(0), 0).seal(frame);
    expect(isZero(tagOf(frame))).toBe(true);
    expect(new FrameOpener("none", new Uint8Array(0), 0).open(frame.slice())).toEqual(frame);
    frame[HEADER.authTag] = 1;
    expect(new FrameOpener("none", new Uint8Array(0), 0).open(frame)).toContain("non-zero authTag");
  });
});

describe("framing and key handling", () => {
  test("open refuses a frame shorter than the header or with a wrong payloadLength", () => {
    const key = keyPair().c2s;
    expect(new FrameOpener("aes-256-gcm", key, 0).open(new Uint8Array(10))).toBe(
      "frame shorter than its header",
    );
    const frame = makeFrame(pattern(10));
    expect(
      new FrameOpener("aes-256-gcm", key, 0).open(frame.subarray(0, frame.length - 1)),
    ).toContain("payloadLength");
  });

  test("seal asserts on a frame whose payloadLength does not match (programmer error)", () => {
    const frame = makeFrame(pattern(10));
    expect(() =>
      new FrameSealer("aes-256-gcm", keyPair().c2s, 0).seal(frame.subarray(0, 60)),
    ).toThrow(AssertionError);
  });

  test("the channel keeps its own key copy: zeroing the caller's key changes nothing", () => {
    for (const suite of PROTECTED) {
      const key = keyPair().c2s;
      const keep = key.slice();
      const sealer = new FrameSealer(suite, key, 0);
      key.fill(0);
      const frame = sealer.seal(makeFrame(pattern(50)));
      expect(typeof new FrameOpener(suite, keep, 0).open(frame)).not.toBe("string");
    }
  });

  test("the default budgets: 2^48 frames; 2^46 bytes for aes-256-gcm only", () => {
    expect(MAX_FRAMES).toBe(2 ** 48);
    expect(AES_GCM_MAX_BYTES).toBe(2 ** 46);
    expect(() => new FrameSealer("aes-256-gcm", keyPair().c2s, 0, { maxBytes: 2 ** 47 })).toThrow(
      AssertionError,
    );
    expect(
      () => new FrameSealer("chacha20-poly1305", keyPair().c2s, 0, { maxBytes: 2 ** 47 }),
    ).not.toThrow();
    expect(
      () => new FrameSealer("integrity", keyPair().c2s, 0, { maxFrames: 2 ** 48 + 1 }),
    ).toThrow(AssertionError);
    expect(new FrameSealer("aes-256-gcm", keyPair().c2s, 0).rekeyDue).toBe(false);
  });

  test("a destroyed sealer refuses to seal", () => {
    const sealer = new FrameSealer("chacha20-poly1305", keyPair().c2s, 0);
    sealer.destroy();
    expect(() => sealer.seal(makeFrame(pattern(5)))).toThrow("frames after destroy()");
  });

  test("works on a frame that is a view at an odd offset of a larger buffer", () => {
    for (const suite of PROTECTED) {
      const key = keyPair().c2s;
      const plain = makeFrame(pattern(333));
      const big = new Uint8Array(plain.length + 11);
      const view = big.subarray(3, 3 + plain.length);
      view.set(plain);
      new FrameSealer(suite, key, 0).seal(view);
      expect(big.subarray(0, 3)).toEqual(new Uint8Array(3));
      expect(new FrameOpener(suite, key, 0).open(view)).toEqual(plain);
    }
  });
});
