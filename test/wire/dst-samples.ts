/**
 * @module test/wire/dst-samples — valid DST frames shared by the decoder tests and the fuzzer
 * (seed corpus). Test support only; not a test file itself.
 */
import { Errno } from "../../src/lib/errno.ts";
import { Prng } from "../../src/lib/prng.ts";
import { Flag, HEADER_SIZE, Op, REPLY_BIT } from "../../src/wire/dst/constants.ts";
import { encodeHello, encodeRefusal, encodeWelcome, type Hello, type Welcome } from "../../src/wire/dst/handshake.ts";
import { encodeFrame, frameBuffer } from "../../src/wire/dst/header.ts";

export const KiB = 1024;
export const MiB = 1024 * 1024;

export const sampleHello: Hello = {
  version: 1,
  exportName: "disk0",
  clientName: "dstd 0.1.0 test",
  maxPayload: 32 * MiB,
  features: 0x1f,
  sessionId: Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i),
  txidFloor: 2 ** 40 + 5,
};

export const sampleWelcome: Welcome = {
  size: 10 * 2 ** 30,
  blockMin: 512,
  blockPreferred: 4096,
  maxPayload: 32 * MiB,
  permissions: 3,
  features: 0x1f,
  sessionId: Uint8Array.from({ length: 16 }, (_, i) => i),
  epoch: 7,
  maxInflight: 128,
  checksum: "none",
};

/** Deterministic payload bytes (so a misplaced byte shows up). */
export function pattern(n: number, seed: number): Uint8Array {
  return new Prng(seed).bytes(n);
}

/** A READ reply carrying `n` bytes, built the zero-copy way (payload filled in place). */
export function readReply(txid: number, offset: number, n: number): Uint8Array {
  const frame = frameBuffer({ opcode: Op.READ | REPLY_BIT, txid, offset, length: n }, n);
  frame.set(pattern(n, txid), HEADER_SIZE);
  return frame;
}

/** One of each frame kind, small enough to split at every boundary. */
export function smallFrames(): Uint8Array[] {
  return [
    encodeHello(sampleHello),
    encodeWelcome(sampleWelcome),
    encodeRefusal(Errno.ENOENT, "no export named disk9"),
    encodeFrame({ opcode: Op.WRITE, flags: Flag.FUA, txid: 1, offset: 8192, length: 4 * KiB }, pattern(4 * KiB, 1)),
    encodeFrame({ opcode: Op.WRITE | REPLY_BIT, txid: 1, offset: 8192, length: 4 * KiB }),
    encodeFrame({ opcode: Op.READ, txid: 2, offset: 0, length: 512 }),
    readReply(2, 0, 512),
    encodeFrame({ opcode: Op.READ | REPLY_BIT, txid: 3, offset: 2 ** 45, length: 4096, status: Errno.EIO }),
    encodeFrame({ opcode: Op.FLUSH, txid: 4 }),
    encodeFrame({ opcode: Op.TRIM, flags: Flag.FUA, txid: 5, offset: 4096, length: 1 * MiB }),
    encodeFrame({ opcode: Op.WRITE_ZEROES, flags: Flag.NO_HOLE, txid: 6, offset: 0, length: 64 * KiB }),
    encodeFrame({ opcode: Op.PING, txid: 2 ** 53 - 1 }),
    encodeFrame({ opcode: Op.PONG, txid: 2 ** 53 - 1 }),
  ];
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
