/**
 * WRITE digests passed through a tree node (docs/tree.md "Performance"): the DST export hands
 * its port the XXH3-64 of each WRITE payload it verified (the client's digest), linear, stripe
 * and mirror pass it on when a leg gets the payload whole, and a remote leg's engine sends it
 * as the request's digest instead of hashing the data again — so the client's digest reaches
 * the leg, end to end. What must hold: a hash passed on is the XXH3-64 of exactly the bytes
 * the leg gets (a piece of a split write gets none), and the engine really sends the hash it
 * is given (a wrong one is refused by the leg's export as corrupt).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { DstClient } from "../../../src/client/dst-client.ts";
import { parseExportUrl, type ExportUrl } from "../../../src/lib/address.ts";
import { createMemoryBackend } from "../../../src/storage/local/memory.ts";
import { createLocalPort } from "../../../src/storage/local/port.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import { call, type BufferHold, type Done, type StoragePort } from "../../../src/storage/port.ts";
import { openRemotePort, type RemotePort } from "../../../src/storage/remote/remote-port.ts";
import { LinearPort } from "../../../src/storage/tree/linear.ts";
import { openMirror } from "../../../src/storage/tree/mirror/mirror.ts";
import { StripePort } from "../../../src/storage/tree/stripe.ts";
import { systemClock } from "../../../src/storage/tree/system-clock.ts";
import type { Listener } from "../../../src/transport/tcp.ts";
import { recordingLog } from "../../helpers/log.ts";
import { serve } from "./serve.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const memory = (size: number) => createLocalPort(createMemoryBackend(size));
const noHold: BufferHold = { hold() {}, drop() {} };

/** Records the hash each handed-over write arrives with. */
class HashSeen extends PassThrough {
  readonly seen: Array<{ offset: number; length: number; xxh3: bigint | undefined }> = [];
  override get writeHandedOver() {
    return (offset: number, data: Uint8Array, fua: boolean, _hold: BufferHold, done: Done, xxh3?: bigint) => {
      this.seen.push({ offset, length: data.length, xxh3 });
      this.next.write(offset, data, fua, done);
    };
  }
}

const handOver = (port: StoragePort, offset: number, data: Uint8Array, xxh3: bigint) =>
  new Promise<number>((resolve) => port.writeHandedOver!(offset, data, false, noHold, resolve, xxh3));

function payload(length: number, seed: number): Uint8Array {
  return new Uint8Array(length).map((_, i) => (i * 31 + seed) & 0xff);
}

describe("layers pass a WRITE's hash to a leg that gets the payload whole", () => {
  test("linear: within one leg the hash goes on; a write split over legs carries none", async () => {
    const legs = [new HashSeen(memory(MiB)), new HashSeen(memory(MiB))];
    const linear = new LinearPort(legs.map((port, i) => ({ port, label: `leg${i}` })));
    const whole = payload(64 * KiB, 1);
    expect(await handOver(linear, MiB + 4 * KiB, whole, Bun.hash.xxHash3(whole))).toBe(0);
    expect(legs[1]!.seen).toEqual([{ offset: 4 * KiB, length: 64 * KiB, xxh3: Bun.hash.xxHash3(whole) }]);
    const split = payload(64 * KiB, 2);
    expect(await handOver(linear, MiB - 4 * KiB, split, Bun.hash.xxHash3(split))).toBe(0);
    expect(legs[0]!.seen).toEqual([{ offset: MiB - 4 * KiB, length: 4 * KiB, xxh3: undefined }]);
    expect(legs[1]!.seen[1]).toEqual({ offset: 0, length: 60 * KiB, xxh3: undefined });
  });

  test("stripe: a write that is one leg's share whole passes the hash; shares of a larger write carry none", async () => {
    const legs = [new HashSeen(memory(MiB)), new HashSeen(memory(MiB))];
    const stripe = new StripePort(legs.map((port, i) => ({ port, label: `leg${i}` })), 64 * KiB);
    const chunk = payload(64 * KiB, 3);
    expect(await handOver(stripe, 64 * KiB, chunk, Bun.hash.xxHash3(chunk))).toBe(0);
    expect(legs[1]!.seen).toEqual([{ offset: 0, length: 64 * KiB, xxh3: Bun.hash.xxHash3(chunk) }]);
    const two = payload(128 * KiB, 4);
    expect(await handOver(stripe, 0, two, Bun.hash.xxHash3(two))).toBe(0);
    expect(legs[0]!.seen).toEqual([{ offset: 0, length: 64 * KiB, xxh3: undefined }]);
    expect(legs[1]!.seen[1]).toEqual({ offset: 0, length: 64 * KiB, xxh3: undefined });
  });

  test("mirror: every leg gets the write with its hash", async () => {
    const legs = [new HashSeen(memory(2 * MiB)), new HashSeen(memory(2 * MiB))];
    const mirror = await openMirror(
      legs.map((port, i) => ({ port, label: `leg${i}` })),
      { clock: systemClock, randomId: () => new Uint8Array(16).fill(3), assumeClean: true, layout: { metaBytes: 45056, regionBytes: 65536, activeBytes: 65536 } },
    );
    try {
      const data = payload(128 * KiB, 5);
      expect(await handOver(mirror, 256 * KiB, data, Bun.hash.xxHash3(data))).toBe(0);
      for (const leg of legs) expect(leg.seen.filter((s) => s.length === data.length).map((s) => s.xxh3)).toEqual([Bun.hash.xxHash3(data)]);
    } finally {
      await mirror.close();
    }
  });
});


describe("end to end over real sockets", () => {
  const listeners: Listener[] = [];
  let disk: StoragePort;
  let remote: RemotePort;
  beforeAll(async () => {
    disk = memory(4 * MiB);
    const leg = await serve(disk);
    listeners.push(leg.listener);
    remote = await openRemotePort({
      url: parseExportUrl(`dst://127.0.0.1:${leg.port}/disk`) as ExportUrl,
      engine: { maxResends: 1, resendIntervalMs: 50, deadlineMs: 2_000 },
      log: recordingLog(),
    });
  });
  afterAll(async () => {
    await remote.close();
    for (const listener of listeners) await listener.close();
  });

  test("a remote leg sends the hash it is given: the right one lands, a wrong one is refused as corrupt", async () => {
    const data = payload(256 * KiB, 6);
    expect(await handOver(remote, 0, data, Bun.hash.xxHash3(data))).toBe(0);
    const into = new Uint8Array(data.length);
    await call.read(disk, 0, into);
    expect(Buffer.from(into).equals(Buffer.from(data))).toBe(true);
    const other = payload(256 * KiB, 7);
    expect(await handOver(remote, MiB, other, Bun.hash.xxHash3(other) ^ 1n)).not.toBe(0);
    const untouched = new Uint8Array(other.length);
    await call.read(disk, MiB, untouched);
    expect(untouched.every((b) => b === 0)).toBe(true);
  }, 20_000);

  test("a client's digest reaches the port below the DST export as the payload's hash", async () => {
    const below = new HashSeen(memory(4 * MiB));
    const node = await serve(below);
    listeners.push(node.listener);
    const client = await DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port: node.port }, exportName: "disk", log: recordingLog() });
    try {
      const data = payload(MiB, 8);
      await client.write(2 * MiB, data);
      expect(below.seen.map((s) => [s.offset, s.length, s.xxh3])).toEqual([[2 * MiB, MiB, Bun.hash.xxHash3(data)]]);
    } finally {
      await client.close();
    }
  });
});
