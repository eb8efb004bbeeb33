/**
 * @module test/fuzz/dst-fuzz — fuzz driver for every DST wire parser: FrameDecoder,
 * decodeAttrs, decodeHello, decodeWelcome. Deterministic from (iterations, seed), so a failure
 * replays exactly. The parsers face peer input; the property is that they never throw, always
 * return (a frame, a value or a reason string), and hold at most one frame of memory.
 *
 * Here's how it works:
 *  1. Each iteration draws a decoder limit and an input: mutated valid frames (bit flips,
 *     interesting integers in header fields, truncation, splicing), hand-made TLV payloads in
 *     correctly framed HELLO/WELCOME frames, or plain random bytes.
 *  2. The input goes through a fresh FrameDecoder in randomly sized chunks. Every frame must
 *     pass invalidHeader, have payload.length === payloadLength, and the decoder may never
 *     hold more than HEADER_SIZE + maxPayload bytes.
 *  3. Each frame's payload, and the raw input itself, goes through decodeAttrs, decodeHello
 *     and decodeWelcome. A value that decodes must re-encode and decode to itself.
 *  4. Any exception is rethrown as FuzzFailure naming the seed, iteration and input.
 */
import { Prng } from "../../src/lib/prng.ts";
import {
  ATTR_CRITICAL,
  Attr,
  DST_VERSION,
  HANDSHAKE_PAYLOAD_MAX,
  HEADER,
  HEADER_SIZE,
  Op,
  PAYLOAD_MAX_DEFAULT,
} from "../../src/wire/dst/constants.ts";
import { FrameDecoder } from "../../src/wire/dst/decoder.ts";
import {
  decodeAttrs,
  decodeHello,
  decodeWelcome,
  encodeAttrs,
  encodeHello,
  encodeWelcome,
} from "../../src/wire/dst/handshake.ts";
import { decodeHeader, encodeFrame, invalidHeader, type Header } from "../../src/wire/dst/header.ts";
import { concat, smallFrames } from "../wire/dst-samples.ts";

export interface FuzzStats {
  iterations: number;
  seed: number;
  frames: number;
  /** Inputs the decoder rejected with a reason. */
  rejected: number;
  hellos: number;
  welcomes: number;
  maxBuffered: number;
}

export class FuzzFailure extends Error {
  constructor(seed: number, iteration: number, input: Uint8Array, cause: unknown) {
    const hex = Buffer.from(input.subarray(0, 256)).toString("hex");
    super(
      `DST fuzz failed: seed ${seed}, iteration ${iteration} (replay: FUZZ_SEED=${seed} FUZZ_ITERATIONS=${iteration + 1}): ` +
        `${cause instanceof Error ? cause.message : String(cause)}\ninput (${input.length} bytes, first 256 hex): ${hex}`,
      { cause },
    );
    this.name = "FuzzFailure";
  }
}

const corpus = smallFrames();
const interesting32 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 4096, 65535, 65536, 65537, 0x7fffffff, 0x80000000, 0xffffffff];
const headerFields = [HEADER.version, HEADER.opcode, HEADER.flags, HEADER.txid, HEADER.offset, HEADER.length, HEADER.payloadLength, HEADER.status, HEADER.reserved];
const attrTypes = [...Object.values(Attr), 0, 14, 0x7fff, ATTR_CRITICAL | 1, ATTR_CRITICAL | 0x7fff, 0xffff];

function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

function writeU32(b: Uint8Array, at: number, v: number): void {
  if (at + 4 <= b.length) b.set([v >>> 24, v >>> 16, v >>> 8, v], at);
}

function mutate(prng: Prng, input: Uint8Array): Uint8Array {
  let bytes: Uint8Array = input.slice();
  for (let n = 1 + prng.int(4); n > 0 && bytes.length > 0; n--) {
    switch (prng.int(6)) {
      case 0: { // flip a bit
        const at = prng.int(bytes.length);
        bytes[at] = bytes[at]! ^ (1 << prng.int(8));
        break;
      }
      case 1: // random byte
        bytes[prng.int(bytes.length)] = prng.next();
        break;
      case 2: // interesting integer in a header field (of the first frame)
        writeU32(bytes, prng.pick(headerFields), prng.pick(interesting32));
        break;
      case 3: // truncate
        bytes = bytes.subarray(0, prng.int(bytes.length + 1));
        break;
      case 4: // splice random bytes in
        bytes = concat([bytes.subarray(0, prng.int(bytes.length)), prng.bytes(prng.int(64)), bytes.subarray(prng.int(bytes.length))]);
        break;
      default: // interesting integer anywhere (TLV lengths live in the payload)
        writeU32(bytes, prng.int(bytes.length), prng.pick(interesting32));
    }
  }
  return bytes;
}

function randomAttrs(prng: Prng): Uint8Array {
  const records: Array<[number, Uint8Array]> = [];
  for (let n = prng.int(12); n > 0; n--) {
    const size = prng.pick([0, 1, 2, 4, 8, 15, 16, 17, 255, 256, prng.int(300)]);
    const value = prng.chance(0.3) ? new Uint8Array(size).fill(0x61) : prng.bytes(size);
    records.push([prng.pick(attrTypes), value]);
  }
  const bytes = encodeAttrs(records);
  return prng.chance(0.3) ? mutate(prng, bytes) : bytes;
}

function generate(prng: Prng): Uint8Array {
  switch (prng.int(4)) {
    case 0:
      return mutate(prng, concat(Array.from({ length: 1 + prng.int(3) }, () => prng.pick(corpus))));
    case 1: { // well-framed handshake with a hand-made attribute payload
      const payload = randomAttrs(prng);
      const frame = encodeFrame({ opcode: prng.pick([Op.HELLO, Op.WELCOME]), txid: 0, status: prng.chance(0.2) ? 1 : 0 }, payload);
      if (prng.chance(0.2)) frame[HEADER.version] = prng.int(256);
      return frame;
    }
    case 2:
      return concat([prng.pick(corpus), mutate(prng, prng.pick(corpus))]);
    default:
      return prng.bytes(prng.int(prng.chance(0.9) ? 200 : 5000));
  }
}

function splitRandomly(prng: Prng, input: Uint8Array): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let at = 0;
  while (at < input.length) {
    const n = prng.chance(0.3) ? input.length - at : 1 + prng.int(prng.chance(0.5) ? 8 : 512);
    chunks.push(input.subarray(at, at + n));
    at += n;
  }
  return chunks;
}

/** decodeHello/decodeWelcome/decodeAttrs on one payload: typed results, stable round trips. */
function parsePayload(header: Header, payload: Uint8Array, stats: FuzzStats): void {
  const attrs = decodeAttrs(payload);
  check(typeof attrs === "string" || attrs instanceof Map, "decodeAttrs returned neither a Map nor a reason");
  const hello = decodeHello({ ...header, opcode: Op.HELLO }, payload);
  if (typeof hello !== "string") {
    stats.hellos++;
    const again = encodeHello(hello);
    const back = decodeHello(decodeHeader(again, 0), again.subarray(HEADER_SIZE));
    check(JSON.stringify(back, bytesAsArray) === JSON.stringify(hello, bytesAsArray), "HELLO does not round-trip");
  }
  const welcome = decodeWelcome({ ...header, opcode: Op.WELCOME, version: DST_VERSION }, payload);
  if (typeof welcome !== "string") {
    check(typeof welcome.ok === "boolean", "decodeWelcome returned a malformed result");
    if (welcome.ok) {
      stats.welcomes++;
      const again = encodeWelcome(welcome.welcome);
      const back = decodeWelcome(decodeHeader(again, 0), again.subarray(HEADER_SIZE));
      check(JSON.stringify(back, bytesAsArray) === JSON.stringify(welcome, bytesAsArray), "WELCOME does not round-trip");
    }
  }
}

function bytesAsArray(_key: string, value: unknown): unknown {
  return value instanceof Uint8Array ? [...value] : value;
}

function runOne(prng: Prng, input: Uint8Array, stats: FuzzStats): void {
  const maxPayload = prng.chance(0.02) ? PAYLOAD_MAX_DEFAULT : prng.pick([HANDSHAKE_PAYLOAD_MAX, 1024 * 1024, 4096]);
  const decoder = new FrameDecoder(maxPayload);
  let reason: string | null = null;
  for (const chunk of splitRandomly(prng, input)) {
    reason = decoder.push(chunk, (header, payload, frame) => {
      stats.frames++;
      check(invalidHeader(header, maxPayload) === null, "decoder delivered a frame with an invalid header");
      check(payload.length === header.payloadLength && frame.length === HEADER_SIZE + payload.length, "frame size mismatch");
      parsePayload(header, payload, stats);
    });
    check(reason === null || (typeof reason === "string" && reason.length > 0), "push returned neither null nor a reason");
    check(decoder.bufferedBytes <= HEADER_SIZE + maxPayload, `decoder holds ${decoder.bufferedBytes} bytes`);
    stats.maxBuffered = Math.max(stats.maxBuffered, decoder.bufferedBytes);
    if (reason !== null) break;
  }
  if (reason !== null) {
    stats.rejected++;
    check(decoder.push(corpus[0]!, () => check(false, "dead decoder delivered a frame")) === reason, "dead decoder changed its reason");
  }
  // The raw input as a payload (skipping a header-sized prefix half of the time).
  const raw = prng.chance(0.5) && input.length >= HEADER_SIZE ? input.subarray(HEADER_SIZE) : input;
  parsePayload(decodeHeader(input, 0), raw, stats);
}

/** Runs `iterations` fuzz inputs from `seed`; throws FuzzFailure on the first violation. */
export function runDstFuzz(iterations: number, seed: number): FuzzStats {
  const prng = new Prng(seed);
  const stats: FuzzStats = { iterations, seed, frames: 0, rejected: 0, hellos: 0, welcomes: 0, maxBuffered: 0 };
  for (let i = 0; i < iterations; i++) {
    const input = generate(prng);
    try {
      runOne(prng, input, stats);
    } catch (error) {
      throw new FuzzFailure(seed, i, input, error);
    }
  }
  return stats;
}
