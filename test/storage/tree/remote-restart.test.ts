/**
 * A remote leg whose export restarts with less to offer (storage/remote/engine-port.ts): the
 * new WELCOME grants a smaller MAX_PAYLOAD, or no TRIM. A tree computed its limits from the
 * leg once, when it opened (storage/tree/legs.ts combinedFlags; a mirror's own), and goes on
 * sending requests of that size. What must hold, against a real DST export on loopback
 * restarted on the same TCP port: the leg still reports the limit it opened with, and a READ
 * or WRITE of that size through the leg, a linear node or a mirror succeeds after the restart
 * (the leg sends it in pieces), the mirror keeping the leg in sync; a TRIM the export no
 * longer offers fails with ENOTSUP and one log line naming the change; an unflushed TRIM is not
 * replayed to an export that came back without it, and an unflushed WRITE_ZEROES is replayed
 * as WRITEs of zeros (engine/replay-log.ts replayPieces), so the leg goes on instead of
 * replaying them until the deadline, and the zeroing is not lost. And a leg
 * whose address comes to reach this very process (a DNS name or VIP moved here) stops for good
 * at that WELCOME, its unflushed writes not replayed into this node's own export.
 */
import { afterEach, expect, test } from "bun:test";
import { parseExportUrl, type ExportUrl } from "../../../src/lib/address.ts";
import { Errno } from "../../../src/lib/errno.ts";
import { createMemoryBackend } from "../../../src/storage/local/memory.ts";
import { createLocalPort } from "../../../src/storage/local/port.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import { call, readWithHash, type StoragePort } from "../../../src/storage/port.ts";
import { openRemotePort, type RemotePort } from "../../../src/storage/remote/remote-port.ts";
import { LinearPort } from "../../../src/storage/tree/linear.ts";
import { openMirror } from "../../../src/storage/tree/mirror/mirror.ts";
import { systemClock } from "../../../src/storage/tree/system-clock.ts";
import type { Listener } from "../../../src/transport/tcp.ts";
import { recordingLog, type RecordingLog } from "../../helpers/log.ts";
import { serve } from "./serve.ts";
import { until } from "../../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SMALL = 64 * KiB;

/** The same disk, offering less: a smaller largest request, no TRIM, no WRITE_ZEROES. */
class Lesser extends PassThrough {
  constructor(
    next: StoragePort,
    private readonly limit: number,
    private readonly trims: boolean,
    private readonly zeroes = true,
  ) {
    super(next);
  }
  override get maxPayload(): number {
    return this.limit;
  }
  override get canTrim(): boolean {
    return this.trims && this.next.canTrim;
  }
  override get canZero(): boolean {
    return this.zeroes && this.next.canZero;
  }
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/** A disk served on loopback, a remote leg to it, and a restart of the export (new epoch) on the same TCP port over `lesser`. */
async function exported(
  size: number,
  localEpochs?: ReadonlySet<number>,
): Promise<{ disk: StoragePort; leg: RemotePort; log: RecordingLog; restart(lesser: StoragePort, epoch?: number, whileDown?: () => void): Promise<void> }> {
  const disk = createLocalPort(createMemoryBackend(size));
  let served = await serve(disk);
  cleanups.push(() => served.listener.close());
  const log = recordingLog();
  const url = parseExportUrl(`dst://127.0.0.1:${served.port}/disk`) as ExportUrl;
  const leg = await openRemotePort({ url, engine: { reconnectMinMs: 10, reconnectMaxMs: 50, deadlineMs: 20_000 }, log, localEpochs });
  cleanups.push(() => leg.close());
  const restart = async (lesser: StoragePort, epoch?: number, whileDown?: () => void): Promise<void> => {
    const tcpPort = served.port;
    const reconnects = leg.client.counters.reconnects;
    await served.listener.close(); // stop(true): its connections close too, as a killed export's would
    whileDown?.();
    let listener: Listener | null = null;
    for (let attempt = 0; listener === null; attempt++) {
      try {
        served = await serve(lesser, tcpPort, epoch);
        listener = served.listener;
      } catch (error) {
        if (attempt > 50) throw error;
        await Bun.sleep(20); // the port is being released
      }
    }
    // The leg reconnects on its own; wait until its engine runs on the new WELCOME.
    await until(() => leg.client.engine.state === "closed" || (leg.client.engine.state === "ready" && leg.client.counters.reconnects > reconnects), "the leg's reconnect", 10_000);
  };
  return { disk, leg, log, restart };
}

const pattern = (length: number, seed: number) => new Uint8Array(length).map((_, i) => (i * 31 + seed) & 0xff);

test("after the export came back with a smaller MAX_PAYLOAD, a WRITE and READ of the old size through the leg and a linear node succeed", async () => {
  const { disk, leg, restart } = await exported(8 * MiB);
  const linear = new LinearPort([{ port: leg, label: "remote" }]);
  const before = leg.maxPayload;
  expect(before).toBeGreaterThanOrEqual(MiB);
  expect(linear.maxPayload).toBe(before);
  await restart(new Lesser(disk, SMALL, true));
  expect(leg.client.maxPayload).toBe(SMALL);

  const one = pattern(MiB, 1);
  await call.write(leg, 0, one);
  const two = pattern(MiB + 4 * KiB, 2);
  await call.write(linear, 2 * MiB, two);
  const back = new Uint8Array(two.length);
  await call.read(linear, 2 * MiB, back);
  expect(Buffer.from(back).equals(Buffer.from(two))).toBe(true);
  const direct = new Uint8Array(MiB);
  await call.read(disk, 0, direct);
  expect(Buffer.from(direct).equals(Buffer.from(one))).toBe(true);
  // A read in pieces has no single verified digest: none is reported, the data is right.
  const hashed = new Uint8Array(MiB);
  const digest = await new Promise<bigint | null>((resolve, reject) => readWithHash(leg, 0, hashed, (e, h) => (e === 0 ? resolve(h) : reject(new Error(`errno ${e}`)))));
  expect(digest).toBeNull();
  expect(Buffer.from(hashed).equals(Buffer.from(one))).toBe(true);
  // Still one request's worth: within the new limit it goes whole, with its digest.
  const small = new Uint8Array(SMALL);
  const smallDigest = await new Promise<bigint | null>((resolve, reject) => readWithHash(leg, 0, small, (e, h) => (e === 0 ? resolve(h) : reject(new Error(`errno ${e}`)))));
  expect(smallDigest).toBe(Bun.hash.xxHash3(one.subarray(0, SMALL)));
  // A handed-over buffer is held once per piece, and let go once a FLUSH covers them all.
  const hold = { holds: 0, drops: 0, hold: () => void hold.holds++, drop: () => void hold.drops++ };
  const handed = pattern(MiB, 5);
  expect(await new Promise<number>((resolve) => leg.writeHandedOver(4 * MiB, handed, false, hold, resolve))).toBe(0);
  expect(hold.holds).toBe(MiB / SMALL);
  await call.flush(leg);
  expect(hold.drops).toBe(hold.holds);
  await call.read(disk, 4 * MiB, back.subarray(0, MiB));
  expect(Buffer.from(back.subarray(0, MiB)).equals(Buffer.from(handed))).toBe(true);
  expect(leg.maxPayload).toBe(before); // what it offered at open (a returning mirror leg is checked against it)
}, 30_000);

test("a WRITE and a READ outstanding while the export restarts with a smaller MAX_PAYLOAD are sent in pieces of it, not refused until their deadline", async () => {
  const { disk, leg, log, restart } = await exported(8 * MiB);
  const old = pattern(MiB, 11);
  await call.write(disk, 2 * MiB, old);
  const data = pattern(MiB, 12);
  const back = new Uint8Array(MiB);
  let wrote: Promise<number> | null = null;
  let read: Promise<number> | null = null;
  const started = Date.now();
  // Taken by the engine while the export is down: outstanding across the reconnect, at the old size.
  await restart(new Lesser(disk, SMALL, true), undefined, () => {
    wrote = new Promise<number>((resolve) => leg.write(0, data, false, resolve));
    read = new Promise<number>((resolve) => leg.read(2 * MiB, back, resolve));
  });
  expect(await wrote!).toBe(0);
  expect(await read!).toBe(0);
  expect(Date.now() - started).toBeLessThan(5_000); // the deadline is 20 s
  expect(Buffer.from(back).equals(Buffer.from(old))).toBe(true);
  const onDisk = new Uint8Array(MiB);
  await call.read(disk, 0, onDisk);
  expect(Buffer.from(onDisk).equals(Buffer.from(data))).toBe(true);
  // Submitted to the engine itself after the WELCOME, at the old size (a caller that sized its
  // requests once, as dstd copy does): cut at submit.
  const late = pattern(4 * SMALL, 13);
  const errno = await new Promise<number>((resolve) => leg.client.engine.submit({ kind: "write", offset: 4 * MiB, length: late.length, data: late }, resolve));
  expect(errno).toBe(0);
  await call.read(disk, 4 * MiB, onDisk.subarray(0, late.length));
  expect(Buffer.from(onDisk.subarray(0, late.length)).equals(Buffer.from(late))).toBe(true);
  expect(log.lines.filter((l) => l.includes("exceeds max payload"))).toEqual([]);
}, 30_000);

test("a mirror whose remote leg's export came back with a smaller MAX_PAYLOAD keeps the leg in sync", async () => {
  const { disk, leg, restart } = await exported(4 * MiB);
  const other = createLocalPort(createMemoryBackend(4 * MiB));
  const mirror = await openMirror(
    [
      { port: leg, label: "remote" },
      { port: other, label: "local" },
    ],
    { clock: systemClock, randomId: () => new Uint8Array(16).fill(7), assumeClean: true, layout: { metaBytes: 45056, regionBytes: 65536, activeBytes: 65536 }, log: recordingLog() },
  );
  cleanups.push(() => mirror.close());
  await restart(new Lesser(disk, SMALL, true));
  const data = pattern(MiB, 3);
  await call.write(mirror, MiB, data);
  expect(mirror.state.legs.map((l) => l.state)).toEqual(["in-sync", "in-sync"]);
  const back = new Uint8Array(MiB);
  await call.read(leg, 45056 + MiB, back);
  expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true);
}, 30_000);

test("a TRIM the export no longer offers fails with ENOTSUP, logged once naming the change", async () => {
  const { disk, leg, log, restart } = await exported(4 * MiB);
  expect(leg.canTrim).toBe(true);
  await call.trim(leg, 0, 64 * KiB);
  await call.flush(leg); // nothing left to replay
  await restart(new Lesser(disk, 32 * MiB, false));
  expect(leg.canTrim).toBe(false);
  const trim = () => new Promise<number>((resolve) => leg.trim(0, 64 * KiB, false, resolve));
  expect(await trim()).toBe(Errno.ENOTSUP);
  expect(await trim()).toBe(Errno.ENOTSUP);
  const lines = log.lines.filter((line) => line.includes("no longer offers TRIM"));
  expect(lines.length).toBe(1);
  // Writes go on as before.
  await call.write(leg, 0, pattern(64 * KiB, 4));
}, 30_000);

test("to an export that came back without TRIM and WRITE_ZEROES, unflushed trims are not replayed and write-zeroes are replayed as writes of zeros: the leg goes on, each change logged", async () => {
  const { disk, leg, log, restart } = await exported(4 * MiB);
  await call.write(leg, 0, pattern(256 * KiB, 6));
  await call.flush(leg);
  // The export comes back on what its disk held at this flush: what follows is lost there.
  const image = new Uint8Array(4 * MiB);
  await call.read(disk, 0, image);
  const durable = createLocalPort(createMemoryBackend(4 * MiB));
  await call.write(durable, 0, image);
  // Acknowledged, not flushed: held for replay.
  await call.trim(leg, 0, 64 * KiB);
  await call.zero(leg, 128 * KiB, 64 * KiB, { noHole: false });
  const written = pattern(64 * KiB, 7);
  await call.write(leg, 512 * KiB, written);
  await restart(new Lesser(durable, 32 * MiB, false, false));
  // Replays that the export refuses would be sent again and again, holding this behind them until the deadline (20 s).
  const started = Date.now();
  await call.write(leg, MiB, pattern(64 * KiB, 8));
  expect(Date.now() - started).toBeLessThan(5_000);
  const back = new Uint8Array(64 * KiB);
  await call.read(leg, 512 * KiB, back);
  expect(Buffer.from(back).equals(Buffer.from(written))).toBe(true);
  // The acknowledged zeroing holds on the disk that had lost it.
  await call.read(durable, 128 * KiB, back);
  expect(back.every((b) => b === 0)).toBe(true);
  expect(log.lines.filter((l) => l.includes("no longer offers TRIM: 65536 bytes")).length).toBe(1);
  expect(log.lines.filter((l) => l.includes("no longer offers WRITE_ZEROES: 65536 bytes of acknowledged, unflushed write-zeroes are replayed as writes of zeros")).length).toBe(1);
}, 10_000);

test("a leg whose export address comes to reach this process's own export stops at that WELCOME, replaying nothing into it", async () => {
  const OWN = 0x5e1f5e1f;
  const { leg, log, restart } = await exported(4 * MiB, new Set([OWN]));
  await call.write(leg, 0, pattern(64 * KiB, 9)); // acknowledged, not flushed: held for replay
  // The address now reaches this node's own export (another disk, this process's epoch).
  const own = createLocalPort(createMemoryBackend(4 * MiB));
  await restart(own, OWN);
  // A FLUSH goes out only behind the replays (engine barrier): once it answered, they would have landed.
  const flushed = await new Promise<number>((resolve) => leg.flush(resolve));
  const written = await new Promise<number>((resolve) => leg.write(MiB, pattern(4 * KiB, 10), false, resolve));
  const seen = new Uint8Array(MiB + 4 * KiB);
  await call.read(own, 0, seen);
  expect(seen.every((b) => b === 0)).toBe(true); // neither the replay nor the new write landed in itself
  expect([flushed, written]).toEqual([Errno.ESHUTDOWN, Errno.ESHUTDOWN]);
  expect(leg.client.engine.state).toBe("closed");
  expect(log.lines.filter((l) => l.includes("is an export of this dstd process")).length).toBe(1);
}, 10_000);
