/**
 * READ digests passed through a tree node (storage/port.ts `readHashed`, docs/tree.md
 * "Performance"): a remote leg's engine verifies each READ reply's xxh3 digest and hands the
 * hash back with the data; linear, stripe and mirror pass it on when the read is one leg's
 * read whole; the DST export sends it as its own reply's digest instead of hashing the data
 * again. What must hold: a hash that comes back is the XXH3-64 of exactly the bytes read; a
 * read split over legs, or a layer that may change the data, reports none; and the export
 * really sends the port's hash (a port reporting a wrong one makes the client's check fail).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { DstClient } from "../../../src/client/dst-client.ts";
import { parseExportUrl, type ExportUrl } from "../../../src/lib/address.ts";
import { createMemoryBackend } from "../../../src/storage/local/memory.ts";
import { createLocalPort } from "../../../src/storage/local/port.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import { call, readWithHash, type Done, type HashedDone, type StoragePort } from "../../../src/storage/port.ts";
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

const readHashed = (port: StoragePort, offset: number, into: Uint8Array) =>
  new Promise<bigint | null>((resolve, reject) =>
    readWithHash(port, offset, into, (errno, xxh3) => (errno === 0 ? resolve(xxh3) : reject(new Error(`read failed: errno ${errno}`)))),
  );


describe("remote legs report the hash their engine verified", () => {
  const listeners: Listener[] = [];
  const remotes: RemotePort[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 2; i++) {
      const disk = createLocalPort(createMemoryBackend(4 * MiB));
      const leg = await serve(disk);
      listeners.push(leg.listener);
      remotes.push(await openRemotePort({ url: parseExportUrl(`dst://127.0.0.1:${leg.port}/disk`) as ExportUrl, engine: {}, log: recordingLog() }));
      const data = new Uint8Array(4 * MiB);
      for (let at = 0; at < data.length; at += 65536) crypto.getRandomValues(data.subarray(at, at + 65536));
      for (let at = 0; at < data.length; at += MiB) await call.write(remotes[i]!, at, data.subarray(at, at + MiB));
    }
  }, 30_000);
  afterAll(async () => {
    for (const remote of remotes) await remote.close();
    for (const listener of listeners) await listener.close();
  });

  test("a remote leg: the XXH3-64 of the bytes read, small and large (scattered) replies", async () => {
    for (const length of [4 * KiB, MiB]) {
      const into = new Uint8Array(length);
      const hash = await readHashed(remotes[0]!, 2 * MiB + 512, into);
      expect(hash).toBe(Bun.hash.xxHash3(into));
    }
  });

  test("linear and stripe pass one leg's hash through; a read split over legs has none", async () => {
    const linear = new LinearPort(remotes.map((port, i) => ({ port, label: `leg${i}` })));
    const within = new Uint8Array(MiB);
    expect(await readHashed(linear, 5 * MiB, within)).toBe(Bun.hash.xxHash3(within));
    const across = new Uint8Array(MiB);
    expect(await readHashed(linear, 4 * MiB - 4 * KiB, across)).toBeNull();
    const direct = new Uint8Array(MiB);
    await call.read(remotes[0]!, 4 * MiB - 4 * KiB, direct.subarray(0, 4 * KiB));
    await call.read(remotes[1]!, 0, direct.subarray(4 * KiB));
    expect(Buffer.from(across).equals(Buffer.from(direct))).toBe(true);

    const stripe = new StripePort(remotes.map((port, i) => ({ port, label: `leg${i}` })), 512 * KiB);
    const chunk = new Uint8Array(512 * KiB);
    expect(await readHashed(stripe, 512 * KiB, chunk)).toBe(Bun.hash.xxHash3(chunk));
    const two = new Uint8Array(MiB);
    expect(await readHashed(stripe, 0, two)).toBeNull();
    const leg1 = new Uint8Array(512 * KiB);
    await call.read(remotes[1]!, 0, leg1);
    expect(Buffer.from(leg1).equals(Buffer.from(chunk))).toBe(true);
  });

  test("a mirror passes the hash of the leg that served the read", async () => {
    const mirror = await openMirror(
      remotes.map((port, i) => ({ port, label: `leg${i}` })),
      { clock: systemClock, randomId: () => new Uint8Array(16).fill(7), assumeClean: true, layout: { metaBytes: 45056, regionBytes: 65536, activeBytes: 65536 } },
    );
    try {
      const data = new Uint8Array(MiB).map((_, i) => (i * 7) % 253);
      await call.write(mirror, MiB, data);
      // Round-robin over both legs: each serves one of these, each with its own verified hash.
      for (let i = 0; i < 4; i++) {
        const into = new Uint8Array(MiB);
        expect(await readHashed(mirror, MiB, into)).toBe(Bun.hash.xxHash3(data));
        expect(Buffer.from(into).equals(Buffer.from(data))).toBe(true);
      }
    } finally {
      await mirror.close();
    }
  });

  test("a layer that overrides read does not pass readHashed through; one that does not, does", () => {
    expect(new PassThrough(remotes[0]!).readHashed).toBeDefined();
    class Changes extends PassThrough {
      override read(offset: number, into: Uint8Array, done: Done): void {
        this.next.read(offset, into, (errno) => {
          into.fill(0);
          done(errno);
        });
      }
    }
    expect(new Changes(remotes[0]!).readHashed).toBeUndefined();
    expect(new PassThrough(createLocalPort(createMemoryBackend(MiB))).readHashed).toBeUndefined();
  });
});

/** A port that reports a hash of its own choosing with every read (not synchronous: the export reads into a frame). */
class Reporting extends PassThrough {
  constructor(next: StoragePort, private readonly lie: boolean) {
    super(next);
  }
  override get synchronous(): boolean {
    return false;
  }
  override get readHashed() {
    return (offset: number, into: Uint8Array, done: HashedDone) =>
      this.next.read(offset, into, (errno) => done(errno, errno !== 0 ? null : Bun.hash.xxHash3(into) ^ (this.lie ? 1n : 0n)));
  }
}

describe("the DST export sends the port's hash as the READ reply's digest", () => {
  for (const lie of [false, true]) {
    test(lie ? "a wrong hash reaches the client, whose check refuses it" : "a right hash: the client's check passes", async () => {
      const disk = createLocalPort(createMemoryBackend(4 * MiB));
      const data = new Uint8Array(MiB).map((_, i) => i % 241);
      await call.write(disk, 0, data);
      const node = await serve(new Reporting(disk, lie));
      const client = await DstClient.open({
        address: { transport: "tcp", host: "127.0.0.1", port: node.port },
        exportName: "disk",
        log: recordingLog(),
        maxResends: 1,
        resendIntervalMs: 50,
      });
      try {
        const into = new Uint8Array(MiB);
        if (!lie) {
          await client.readInto(0, into);
          expect(Buffer.from(into).equals(Buffer.from(data))).toBe(true);
        } else {
          await expect(client.readInto(0, into)).rejects.toThrow();
          expect(client.engine.counters.checksumFailures).toBeGreaterThan(0);
        }
      } finally {
        await client.close();
        await node.listener.close();
      }
    }, 30_000);
  }
});
