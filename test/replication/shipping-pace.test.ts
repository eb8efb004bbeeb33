/**
 * The secondary's bandwidth cap (docs/replication.md §10, src/replication/shipping-pace.ts):
 * the real Shipper on simulated time, fetching from a primary that always has more to send
 * and answers after a 5 ms round trip. The observable is bytes on the wire over simulated
 * time: with a cap they stay within burst + rate·T + one answer and reach at least 90 % of
 * rate·T; without one the same link carries hundreds of times more (so the bound cannot hold
 * by accident). No sleeps, no wall-clock timings.
 */
import { describe, expect, test } from "bun:test";
import { Shipper, type FetchTransport } from "../../src/replication/shipper.ts";
import { TokenBucket } from "../../src/replication/shipping-pace.ts";
import type { Secondary } from "../../src/replication/secondary.ts";
import { encodeFetchReply } from "../../src/wire/dst/fetch.ts";
import { FIELD } from "../../src/replication/record.ts";
import { SimClock } from "../sim/sim-clock.ts";

const MiB = 1024 * 1024;

/**
 * A secondary that takes whatever arrives at once and keeps wanting seq 1 (the pacing, not the
 * storing, is under test): every answer starts with a record header naming seq 1, so a
 * pipelined (FOLLOWS) answer starts where the copy ends and is used.
 */
function fakeSecondary(): Secondary {
  return {
    wanted: () => ({ seq: 0, chain: 0n, lamport: 0, generation: 1 }),
    applier: { status: () => ({ applied: { seq: 0 } }) },
    receive: (_bytes: Uint8Array, done: (errno: number) => void) => {
      done(0);
      return null;
    },
  } as unknown as Secondary;
}

/** Runs a shipper for `seconds` of simulated time; the bytes it took on the wire. */
function run(options: { bandwidth?: number; seconds: number }): { wire: number; largest: number; maxBytes: number; follows: number } {
  const clock = new SimClock();
  let largest = 0;
  let maxBytes = 0;
  const answers = new Map<number, Uint8Array>();
  const transport: FetchTransport = (request, done) => {
    maxBytes = Math.max(maxBytes, request.maxBytes);
    // The primary always has a full answer's worth: exactly what was asked for (one buffer per size).
    let payload = answers.get(request.maxBytes);
    if (payload === undefined) {
      const records = new Uint8Array(request.maxBytes);
      new DataView(records.buffer).setBigUint64(FIELD.seq, 1n); // the first record's seq: where the copy ends + 1
      payload = encodeFetchReply({ nextSeq: 2, nextSegment: 1, nextOffset: 0, durable: 1 << 30, generation: 1, behind: 1 << 30 }, records);
      answers.set(request.maxBytes, payload);
    }
    largest = Math.max(largest, payload.length);
    clock.after(5, () => done(0, payload!, 0));
  };
  const shipper = new Shipper(fakeSecondary(), transport, { now: () => clock.now, after: (ms, fn) => (clock.after(ms, fn), () => {}) }, { bandwidth: options.bandwidth });
  shipper.start();
  clock.runUntil(options.seconds * 1000);
  shipper.stop();
  const status = shipper.status();
  expect(status.followsDropped).toBe(0);
  return { wire: status.wireBytes, largest, maxBytes, follows: status.follows };
}

describe("bandwidth cap", () => {
  for (const rate of [1 * MiB, 4 * MiB, 20 * MiB]) {
    test(`${rate / MiB} MiB/s over 60 simulated seconds: within burst + rate·T + one answer, at least 90 % of rate·T`, () => {
      const seconds = 60;
      const { wire, largest, maxBytes } = run({ bandwidth: rate, seconds });
      const bound = rate /* burst: one second */ + rate * seconds + largest;
      console.log(`cap ${rate / MiB} MiB/s: ${(wire / MiB).toFixed(1)} MiB in ${seconds} s (bound ${(bound / MiB).toFixed(1)}), FETCH asks ≤ ${maxBytes} bytes`);
      expect(wire).toBeLessThanOrEqual(bound);
      expect(wire).toBeGreaterThanOrEqual(0.9 * rate * seconds);
      // Each FETCH asks for about half a second's worth (never below one whole record).
      expect(maxBytes).toBe(Math.min(8 * MiB, Math.max(MiB + 88, rate / 2)));
      // Under a cap one FETCH at a time (a second in flight could overshoot by another answer).
      expect(run({ bandwidth: rate, seconds: 1 }).follows).toBe(0);
    });
  }

  test("without a cap the same link carries far more (the bound above is not met by accident)", () => {
    const capped = run({ bandwidth: 20 * MiB, seconds: 1 });
    const free = run({ seconds: 1 });
    console.log(`1 simulated second: ${(capped.wire / MiB).toFixed(1)} MiB capped at 20 MiB/s, ${(free.wire / MiB).toFixed(1)} MiB uncapped`);
    expect(capped.wire).toBeLessThanOrEqual(20 * MiB + 20 * MiB + capped.largest);
    expect(free.wire).toBeGreaterThan(10 * (20 * MiB + 20 * MiB + capped.largest));
    // Uncapped, the second FETCH in flight follows the first (docs/protocol.md §11.2).
    expect(free.follows).toBeGreaterThan(0);
  });
});

describe("TokenBucket", () => {
  test("starts with one second of burst, goes into debt by one transfer, waits it out exactly", () => {
    const bucket = new TokenBucket(1000, 0);
    expect(bucket.wait(0)).toBe(0);
    bucket.take(1500, 0); // 500 bytes of debt
    expect(bucket.wait(0)).toBe(500);
    expect(bucket.wait(499)).toBe(1);
    expect(bucket.wait(500)).toBe(0);
    // Refill stops at the burst: a long idle time does not bank more than a second's worth.
    expect(bucket.wait(100_000)).toBe(0);
    bucket.take(1001, 100_000);
    expect(bucket.wait(100_000)).toBe(1);
  });
});
