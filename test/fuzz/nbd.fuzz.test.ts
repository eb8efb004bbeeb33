/**
 * @module test/fuzz/nbd.fuzz — random and mutated NBD handshake and transmission streams into
 * NbdConnection through a FakeSink (slow peers, split chunks, asynchronous targets). Every
 * input must leave the connection without an exception and in a finished state; well-framed
 * request streams must get exactly one complete reply per request.
 *   FUZZ_ITERATIONS=100000 bun test test/fuzz/nbd.fuzz.test.ts   # long run
 *   FUZZ_SEED=1234 bun test test/fuzz/nbd.fuzz.test.ts           # replay a failure
 */
import { expect, test } from "bun:test";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { Prng } from "../../src/lib/prng.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import type { StoragePort } from "../../src/storage/port.ts";
import { DeferredLayer, HeldWork } from "../../src/storage/layers/deferred.ts";
import { Cmd, Info, Opt, REPLY_FLAG_DONE } from "../../src/wire/nbd/constants.ts";
import { encodeRequest } from "../../src/wire/nbd/transmission.ts";
import { concat, harness, infoData, metaData, negotiate, option, parseReplies, u32, type Harness } from "../nbd/harness.ts";

const iterations = Number(process.env.FUZZ_ITERATIONS ?? 5000);
const seed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));
const SIZE = 1 << 20;

interface Stats {
  handshakes: number;
  sessions: number;
  mutated: number;
  replies: number;
  closedByServer: number;
}

function mutate(prng: Prng, bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  const edits = 1 + prng.int(4);
  for (let i = 0; i < edits && out.length > 0; i++) {
    const at = prng.int(out.length);
    switch (prng.int(4)) {
      case 0:
        out[at] = prng.next() & 0xff;
        break;
      case 1:
        out[at]! ^= 1 << prng.int(8);
        break;
      case 2:
        out.fill(0xff, at, Math.min(out.length, at + 4));
        break;
      default:
        return concat(out.subarray(0, at), prng.bytes(prng.int(64)), out.subarray(at));
    }
  }
  return prng.chance(0.2) ? out.subarray(0, prng.int(out.length + 1)) : out;
}

/** Feed bytes in random pieces, with the peer reading at random; then drain until quiet. */
async function feed(prng: Prng, h: Harness, bytes: Uint8Array, flushAsync: () => void): Promise<void> {
  let at = 0;
  while (at < bytes.length && !h.sink.closed) {
    const n = 1 + prng.int(prng.chance(0.5) ? 64 : 70000);
    h.send(bytes.subarray(at, at + n));
    at += n;
    if (prng.chance(0.3)) {
      flushAsync();
      await tick();
    }
    if (prng.chance(0.3)) h.sink.drain(prng.chance(0.5) ? 4096 : Number.POSITIVE_INFINITY);
  }
  for (let round = 0; round < 1000; round++) {
    flushAsync();
    await tick(); // replies completed outside onData leave in a microtask batch
    h.sink.drain();
    if (!h.sink.paused && h.sink.queuedBytes === 0 && pendingCount === 0) return;
  }
  throw new Error("connection did not settle after 1000 drain rounds");
}

let pendingCount = 0;
const tick = () => new Promise<void>((resolve) => queueMicrotask(resolve));

/** Sometimes an asynchronous target (storage/layers/deferred.ts), completing in random order when asked. */
function makeTarget(prng: Prng): { target: StoragePort; flush: () => void } {
  const inner = createLocalPort(createMemoryBackend(SIZE), { maxPayload: prng.chance(0.2) ? 4096 : 1 << 25 });
  if (prng.chance(0.5)) return { target: inner, flush: () => {} };
  const held = new HeldWork();
  const target = new DeferredLayer(inner, (work) => {
    pendingCount++;
    held.schedule(() => {
      pendingCount--;
      work();
    });
  });
  return { target, flush: () => held.releaseAll((count) => prng.int(count)) };
}

function randomOption(prng: Prng): Uint8Array {
  const name = prng.pick(["disk", "", "nope", "secret"]);
  switch (prng.int(9)) {
    case 0: return option(Opt.GO, infoData(name, prng.chance(0.5) ? [Info.NAME, Info.BLOCK_SIZE, prng.int(9)] : []));
    case 1: return option(Opt.INFO, infoData(name, [Info.DESCRIPTION]));
    case 2: return option(Opt.LIST);
    case 3: return option(Opt.STRUCTURED_REPLY);
    case 4: return option(prng.pick([Opt.SET_META_CONTEXT, Opt.LIST_META_CONTEXT]), metaData(name, prng.chance(0.7) ? ["base:allocation"] : ["base:", "x:y"]));
    case 5: return option(Opt.EXPORT_NAME, new TextEncoder().encode(name));
    case 6: return option(Opt.ABORT);
    case 7: return option(prng.next(), prng.bytes(prng.int(32)));
    default: return option(prng.int(16), prng.bytes(prng.int(16)));
  }
}

function randomRequest(prng: Prng, cookie: bigint): Uint8Array {
  const type = prng.chance(0.9) ? prng.pick([Cmd.READ, Cmd.WRITE, Cmd.FLUSH, Cmd.TRIM, Cmd.CACHE, Cmd.WRITE_ZEROES, Cmd.BLOCK_STATUS]) : prng.int(20);
  const flags = prng.chance(0.8) ? prng.int(32) & prng.int(32) : prng.int(0x10000);
  const offset = prng.chance(0.8) ? prng.int(SIZE) : prng.pick([SIZE, SIZE - 1, 2 ** 53, 0xffff_ffff_ffff_ffffn]);
  const length = prng.chance(0.9) ? prng.int(prng.chance(0.5) ? 4096 : 200_000) : prng.pick([0, 0xffff_ffff, SIZE]);
  if (type === Cmd.WRITE) return encodeRequest({ type, flags, cookie, offset, data: prng.bytes(Math.min(length, 300_000)) });
  if (type === Cmd.DISC) return encodeRequest({ type: Cmd.FLUSH, cookie });
  return encodeRequest({ type, flags, cookie, offset, length });
}

/** Lengths the client asked to READ, for parsing simple replies. */
function readLengths(requests: Uint8Array[]): Map<bigint, number> {
  const map = new Map<bigint, number>();
  for (const r of requests) {
    const v = new DataView(r.buffer, r.byteOffset, r.length);
    if (v.getUint16(6) === Cmd.READ) map.set(v.getBigUint64(8), v.getUint32(24));
  }
  return map;
}

async function handshakeCase(prng: Prng, stats: Stats): Promise<void> {
  const { target, flush } = makeTarget(prng);
  const h = harness({ target, access: prng.chance(0.3) ? "ro" : "rw" });
  const parts = [u32(prng.chance(0.9) ? prng.int(4) : prng.next())];
  const count = prng.int(8);
  for (let i = 0; i < count; i++) parts.push(randomOption(prng));
  for (let i = 0; i < prng.int(4); i++) parts.push(randomRequest(prng, BigInt(i)));
  let bytes = concat(...parts);
  if (prng.chance(0.5)) {
    bytes = mutate(prng, bytes);
    stats.mutated++;
  }
  await feed(prng, h, bytes, flush);
  stats.handshakes++;
  if (h.sink.destroyed) stats.closedByServer++;
}

async function sessionCase(prng: Prng, stats: Stats): Promise<void> {
  const { target, flush } = makeTarget(prng);
  const structured = prng.chance(0.5);
  const h = harness({ target, mode: prng.chance(0.2) ? "kernel" : "newstyle", access: prng.chance(0.2) ? "ro" : "rw" });
  if (h.sink.read().length > 0) negotiate(Object.assign(h, {}), { structured, meta: structured && prng.chance(0.7) });
  const requests = Array.from({ length: 1 + prng.int(40) }, (_, i) => randomRequest(prng, BigInt(i + 1)));
  const mutated = prng.chance(0.3);
  const bytes = mutated ? mutate(prng, concat(...requests)) : concat(...requests);
  if (mutated) stats.mutated++;
  await feed(prng, h, bytes, flush);
  stats.sessions++;
  const out = h.sink.read();
  if (mutated || h.sink.destroyed) {
    if (h.sink.destroyed) stats.closedByServer++;
    return;
  }
  // Well-framed input: exactly one final reply per request, cookies as sent.
  const replies = parseReplies(out, readLengths(requests));
  const finals = replies.filter((r) => r.kind === "simple" || (r.flags & REPLY_FLAG_DONE) !== 0).map((r) => r.cookie);
  expect(finals.sort((a, b) => Number(a - b))).toEqual(requests.map((_, i) => BigInt(i + 1)));
  stats.replies += replies.length;
}

test(
  `NBD connection survives ${iterations} fuzz sessions (seed ${seed})`,
  async () => {
    const stats: Stats = { handshakes: 0, sessions: 0, mutated: 0, replies: 0, closedByServer: 0 };
    let i = 0;
    try {
      for (; i < iterations; i++) {
        const prng = new Prng(seed + i);
        if (prng.chance(0.4)) await handshakeCase(prng, stats);
        else await sessionCase(prng, stats);
      }
    } catch (error) {
      console.error(`NBD fuzz failed: FUZZ_SEED=${seed + i} FUZZ_ITERATIONS=1`);
      throw error;
    }
    if (iterations >= 1000) {
      expect(stats.handshakes).toBeGreaterThan(iterations / 5);
      expect(stats.sessions).toBeGreaterThan(iterations / 5);
      expect(stats.mutated).toBeGreaterThan(iterations / 10);
      expect(stats.replies).toBeGreaterThan(iterations);
      expect(stats.closedByServer).toBeGreaterThan(iterations / 50);
    }
  },
  { timeout: Math.max(60_000, iterations * 20) },
);
