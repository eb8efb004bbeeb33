/**
 * transport/crypto-pool.ts with real worker threads (sys/crypto-worker.ts, OpenSSL's
 * AES-256-GCM through libcrypto.so.3): records sealed in the pool open inline and the other
 * way round, in order, whatever thread took each; records larger than a slot or finding the
 * pool full go inline behind the ones in the pool; a corrupted record fails and nothing of it
 * or after it is delivered; a worker that dies fails the lanes holding records (fail closed)
 * and later channels run inline. The real-process runs are test/integration/crypto-threads.test.ts.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { useNativeGcm } from "../../src/crypto/aead.ts";
import { RECORD_AUTH_FAILED, RecordOpener, RecordSealer, useRecordLanes, type LateRecords } from "../../src/crypto/record.ts";
import { loadNativeGcm } from "../../src/sys/libcrypto.ts";
import { CryptoPool } from "../../src/transport/crypto-pool.ts";

const haveLibcrypto = loadNativeGcm(new Uint8Array(32), "seal") !== null;
const key = crypto.getRandomValues(new Uint8Array(32));
const KiB = 1024;

let pool: CryptoPool | null = null;

async function startPool(threads: number, slots?: number, slotBytes?: number, onFailure?: (reason: string) => void): Promise<CryptoPool> {
  useNativeGcm(loadNativeGcm);
  pool = await CryptoPool.start(threads, { slots, slotBytes, onFailure });
  const started = pool;
  useRecordLanes((k, role, direction, owner) => started.lane(k, role, direction, owner));
  return started;
}

afterEach(() => {
  useRecordLanes(null);
  useNativeGcm(null);
  pool?.close();
  pool = null;
});

/** Deterministic record contents: record i is `size` bytes of a pattern naming i. */
function plaintext(i: number, size: number): Uint8Array {
  const bytes = new Uint8Array(size).fill((i * 31 + 7) & 0xff);
  bytes[0] = i;
  bytes[size - 1] = i ^ 0x5a;
  if (size > 64) bytes.set(key.subarray(0, 32), size >> 1);
  return bytes;
}

const SIZES = [16, 4 * KiB, 300 * KiB, 1024 * KiB + 56, 3 * 1024 * KiB, 100, 64 * KiB, 2 * 1024 * KiB + 4000];

/** Seal `count` records through `sealer.sealTo` and collect the delivered stream in order. */
async function sealAll(sealer: RecordSealer, count: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  let pendingReleases = 0;
  await new Promise<void>((resolve) => {
    let delivered = 0;
    const deliver = (bytes: Uint8Array, release?: () => void) => {
      out.push(bytes.slice()); // the socket would write it; then the slot goes back
      release?.();
      delivered++;
      if (delivered === expected) resolve();
    };
    let expected = 0;
    for (let i = 0; i < count; i++) {
      const body = plaintext(i, SIZES[i % SIZES.length]!);
      // Two parts, as the outbox hands a header and a payload.
      const cut = Math.floor(body.length / 3);
      const before = out.length;
      sealer.sealTo([body.subarray(0, cut), body.subarray(cut)], body.length, deliver);
      expected += 1;
      pendingReleases += out.length - before;
    }
    if (delivered === expected) resolve();
  });
  return out;
}

describe.skipIf(!haveLibcrypto)("crypto pool (needs libcrypto.so.3: Debian package libssl3)", () => {
  for (const threads of [1, 2]) {
    test(`${threads} thread(s): records sealed in the pool open inline, in order; big ones and a full pool go inline behind`, async () => {
      const started = await startPool(threads, 3);
      const sealer = new RecordSealer("aes-256-gcm", key, 0);
      expect(sealer.pendingRecords).toBe(0);
      const stream = await sealAll(sealer, 40);
      expect(started.freeSlots).toBe(3);
      useRecordLanes(null);
      const opener = new RecordOpener("aes-256-gcm", key, 0);
      const opened: Uint8Array[] = [];
      for (const record of stream) {
        const result = opener.push(record);
        expect(typeof result).not.toBe("string");
        opened.push(...(result as Uint8Array[]).map((p) => p.slice()));
      }
      expect(opened.length).toBe(40);
      for (let i = 0; i < 40; i++) expect(opened[i]!).toEqual(plaintext(i, SIZES[i % SIZES.length]!));
    });
  }

  test("records sealed inline open in the pool (offload), in order, chunked at odd places", async () => {
    const sealer = new RecordSealer("aes-256-gcm", key, 1);
    const records: Uint8Array[] = [];
    for (let i = 0; i < 30; i++) records.push(sealer.seal([plaintext(i, SIZES[i % SIZES.length]!)], SIZES[i % SIZES.length]!));
    const stream = new Uint8Array(records.reduce((n, r) => n + r.length, 0));
    let at = 0;
    for (const r of records) {
      stream.set(r, at);
      at += r.length;
    }
    const started = await startPool(2, 4);
    const opener = new RecordOpener("aes-256-gcm", key, 1);
    const delivered: Uint8Array[] = [];
    let failure: string | null = null;
    let freed = 0;
    const late: LateRecords = {
      deliver: (plain, owner) => {
        delivered.push(plain.slice());
        (owner as { free(): void } | null)?.free();
      },
      fail: (reason) => void (failure = reason),
      adopt: (_slot, free) => ({ free: () => (freed++, free()) }),
      discard: () => {},
    };
    opener.offload(late);
    const sync: Uint8Array[] = [];
    // Chunks of a prime size: records span chunks, headers split, several records per chunk.
    for (let pos = 0; pos < stream.length; pos += 700_001) {
      const problem = opener.feed(stream.subarray(pos, pos + 700_001), (plain) => void sync.push(plain.slice()));
      expect(problem).toBeNull();
    }
    await waitFor(() => sync.length + delivered.length === 30 || failure !== null);
    expect(failure).toBeNull();
    const all = [...sync, ...delivered]; // synchronous ones come first: nothing was pending then
    expect(delivered.length).toBeGreaterThan(0);
    for (let i = 0; i < 30; i++) expect(all[i]!).toEqual(plaintext(i, SIZES[i % SIZES.length]!));
    expect(freed).toBeGreaterThan(0);
    expect(started.freeSlots).toBe(4);
  });

  test("a corrupted record fails the opener; nothing of it or after it is delivered", async () => {
    const sealer = new RecordSealer("aes-256-gcm", key, 1);
    const records = Array.from({ length: 6 }, (_, i) => sealer.seal([plaintext(i, 8 * KiB)], 8 * KiB));
    const bad = records[3]!;
    bad[100] = bad[100]! ^ 0x01;
    await startPool(2);
    const opener = new RecordOpener("aes-256-gcm", key, 1);
    const delivered: number[] = [];
    let failure: string | null = null;
    opener.offload({
      deliver: (plain, owner) => {
        delivered.push(plain[0]!);
        (owner as { free(): void } | null)?.free();
      },
      fail: (reason) => void (failure = reason),
      adopt: (_slot, free) => ({ free }),
      discard: (owner) => (owner as { free(): void } | null)?.free(),
    });
    for (const record of records) expect(opener.feed(record, () => true)).toBeNull();
    await waitFor(() => failure !== null && opener.pendingRecords === 0);
    expect(failure!).toBe(RECORD_AUTH_FAILED);
    expect(delivered).toEqual([0, 1, 2]); // record i starts with byte i
    expect(opener.feed(records[5]!, () => true)).toBe(RECORD_AUTH_FAILED);
  });

  test("a pool that fails while an opener gathers a record into a slot fails that channel (it waited for ever); plaintexts queued behind lost records are let go", async () => {
    const sealer = new RecordSealer("aes-256-gcm", key, 1);
    const record = sealer.seal([plaintext(0, 64 * KiB)], 64 * KiB);
    const started = await startPool(1, 4);
    const opener = new RecordOpener("aes-256-gcm", key, 1);
    let failure: string | null = null;
    opener.offload({ deliver: () => {}, fail: (reason) => void (failure = reason), adopt: (_slot, free) => ({ free }), discard: () => {} });
    expect(opener.feed(record.subarray(0, 1000), () => true)).toBeNull(); // its header took a slot
    started.close(); // the pool dies (as when a worker exits)
    expect(opener.feed(record.subarray(1000), () => true)).toBeNull(); // the body completes: submitted to a dead pool
    await waitFor(() => failure !== null);
    expect(failure!).toContain("crypto pool closed");

    // Behind a record lost in the pool, an inline-opened plaintext waits (after()); when the
    // pool fails, its owner is discarded, not dropped with the queue.
    const pool2 = await startPool(1, 1, 64 * KiB + 64);
    const opener2 = new RecordOpener("aes-256-gcm", key, 1);
    const discarded: unknown[] = [];
    opener2.offload({ deliver: () => {}, fail: () => {}, adopt: (_slot, free) => ({ free }), discard: (owner) => void discarded.push(owner) });
    const owner = { counted: 1 };
    opener2.allocate = (size) => ({ bytes: new Uint8Array(size), owner });
    const s2 = new RecordSealer("aes-256-gcm", key, 1);
    const first = s2.seal([plaintext(1, 64 * KiB)], 64 * KiB); // fits the one slot: to the pool
    const second = s2.seal([plaintext(2, 128 * KiB)], 128 * KiB); // larger than a slot: inline, behind it
    expect(opener2.feed(first, () => true)).toBeNull();
    expect(opener2.feed(second.subarray(0, 100), () => true)).toBeNull();
    expect(opener2.feed(second.subarray(100), () => true)).toBeNull();
    pool2.close();
    expect(discarded).toEqual([owner]);
  });

  test("a worker that dies fails closed: lanes holding records fail, later channels are inline", async () => {
    process.env.DSTD_CRYPTO_WORKER_EXIT_AFTER = "5";
    const reasons: string[] = [];
    try {
      await startPool(2, 16, undefined, (reason) => reasons.push(reason));
    } finally {
      delete process.env.DSTD_CRYPTO_WORKER_EXIT_AFTER;
    }
    const sealer = new RecordSealer("aes-256-gcm", key, 0);
    let lost: string | null = null;
    sealer.onLaneFailure = (reason) => void (lost = reason);
    const delivered: number[] = [];
    for (let i = 0; i < 16; i++) sealer.sealTo([plaintext(i, 4 * KiB)], 4 * KiB, () => void delivered.push(i));
    await waitFor(() => lost !== null);
    expect(reasons.length).toBe(1);
    expect(reasons[0]!).toMatch(/^crypto worker [12] of 2 died: .*DSTD_CRYPTO_WORKER_EXIT_AFTER/);
    expect(lost!).toBe(reasons[0]!);
    expect(delivered.length).toBeLessThan(16);
    // The channel cannot go on (its stream has a gap): it refuses to seal more.
    expect(() => sealer.sealTo([plaintext(0, 16)], 16, () => {})).toThrow(/crypto worker failed/);
    // A new channel seals inline and its records open.
    const fresh = new RecordSealer("aes-256-gcm", key, 0);
    const out: Uint8Array[] = [];
    fresh.sealTo([plaintext(7, 4 * KiB)], 4 * KiB, (bytes) => void out.push(bytes.slice()));
    expect(out.length).toBe(1);
    useRecordLanes(null);
    const opened = new RecordOpener("aes-256-gcm", key, 0).push(out[0]!);
    expect(opened).toEqual([plaintext(7, 4 * KiB)]);
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  // Completions arrive as worker messages: wait on the condition, turn by turn (no guessed sleep).
  for (let i = 0; i < 100_000 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 1));
  if (!condition()) throw new Error("condition not reached");
}
