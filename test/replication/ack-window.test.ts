/**
 * @module test/replication/ack-window — the primary's ack window (src/replication/ack-window.ts,
 * docs/replication.md §4) on the real file system over a memory disk, with the log's
 * fdatasyncs held back by the test so that "written but not durable" is a state it controls:
 * a write without FUA completes once its record is written, reads and the allocation map see
 * it although the disk below does not hold it yet, FLUSH completes only once it is durable and
 * written back, FUA waits for durability, the window's bounds send writes past it the slow
 * way, the initial sync's reads of the disk never see a write that is not durable, and a
 * handed-over buffer (storage/port.ts BufferHold) is held instead of copied.
 */
import { afterEach, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openLogDirectory, type FileDone, type LogDirectory, type LogFile } from "../../src/replication/files.ts";
import { ReplicationPrimary } from "../../src/replication/primary.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { decodeHeader } from "../../src/replication/record.ts";
import { call, type BufferHold, type Extent } from "../../src/storage/port.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const SIZE = 8 << 20;
const block = (n: number) => new Uint8Array(4096).fill(n);

/** A log directory whose files' fdatasyncs wait while `held` (the test releases them). */
function gatedDirectory(): { dir: LogDirectory; hold(): void; release(): void; waiting(): number } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "dstd-ackwin-"));
  dirs.push(root);
  const dir = openLogDirectory(root);
  let held = false;
  const queue: (() => void)[] = [];
  const open = dir.open.bind(dir);
  dir.open = (name: string, create: boolean, done: (errno: number, file: LogFile | null) => void) =>
    open(name, create, (errno, file) => {
      if (file !== null) {
        const sync = file.sync.bind(file);
        file.sync = (d: FileDone) => (held ? queue.push(() => sync(d)) : sync(d));
      }
      done(errno, file);
    });
  return {
    dir,
    hold: () => {
      held = true;
    },
    release: () => {
      held = false;
      for (const run of queue.splice(0)) run();
    },
    waiting: () => queue.length,
  };
}

/** Resolves with true if `promise` settles within a few turns of real I/O, else false (it stays pending). */
async function settlesSoon(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 50 && !settled; i++) await Bun.sleep(2);
  return settled;
}

async function waitFor(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 2500 && !ok(); i++) await Bun.sleep(2);
  if (!ok()) throw new Error(`never: ${what}`);
}

test("a write without FUA completes once written; reads and the map see it before the disk does; FLUSH waits for durability", async () => {
  const gate = gatedDirectory();
  const disk = createLocalPort(createMemoryBackend(SIZE));
  const primary = await ReplicationPrimary.open(disk, gate.dir, { logLimit: 64 << 20 });
  await call.write(primary, 0, block(1)); // the log's first segment exists
  await call.flush(primary);
  gate.hold();
  const data = block(7);
  await call.write(primary, 8 * 4096, data);
  data.fill(0); // the caller recycles its buffer at the completion: the layer kept a copy
  expect(primary.store.durable.seq).toBeLessThan(primary.store.last.seq);
  expect(primary.status().earlyAcked).toBe(1);
  const onDisk = new Uint8Array(4096);
  await call.read(disk, 8 * 4096, onDisk);
  expect(onDisk.every((b) => b === 0)).toBe(true); // not written back before it is durable
  const seen = new Uint8Array(3 * 4096);
  await call.read(primary, 7 * 4096, seen);
  expect(seen.subarray(0, 4096).every((b) => b === 0)).toBe(true);
  expect(seen.subarray(4096, 8192).every((b) => b === 7)).toBe(true);
  expect(seen.subarray(8192).every((b) => b === 0)).toBe(true);
  // The initial sync copies the disk, never a write a crash could still take back.
  await new Promise<void>((resolve) => primary.readDisk(8 * 4096, onDisk, () => resolve()));
  expect(onDisk.every((b) => b === 0)).toBe(true);
  const extents = await new Promise<Extent[]>((resolve) => primary.extents(8 * 4096, 4096, 16, (_e, x) => resolve(x!)));
  expect(extents.every((e) => !e.hole && !e.zero)).toBe(true);
  // FUA: durable at completion, so it waits for the held fdatasync.
  const fua = call.write(primary, 16 * 4096, block(9), true);
  const flush = call.flush(primary);
  expect(await settlesSoon(flush)).toBe(false);
  expect(await settlesSoon(fua)).toBe(false);
  gate.release();
  await flush;
  await fua;
  expect(primary.store.durable.seq).toBe(primary.store.last.seq);
  await call.read(disk, 8 * 4096, onDisk);
  expect(onDisk.every((b) => b === 7)).toBe(true);
  expect(primary.status().earlyAcked).toBe(0);
  await primary.close();
});

test("the window's bounds: a write past them completes only once durable, and with no window none completes before it", async () => {
  const gate = gatedDirectory();
  const disk = createLocalPort(createMemoryBackend(SIZE));
  const primary = await ReplicationPrimary.open(disk, gate.dir, { logLimit: 64 << 20, ackWindowBytes: 8192, ackWindowOps: 4 });
  await call.write(primary, 0, block(1));
  await call.flush(primary);
  gate.hold();
  await call.write(primary, 4096, block(2));
  await call.write(primary, 8192, block(3));
  expect(primary.status().earlyBytes).toBe(8192);
  const third = call.write(primary, 3 * 4096, block(4)); // 12 KiB would pass the 8 KiB window
  expect(await settlesSoon(third)).toBe(false);
  const flush = call.flush(primary);
  expect(await settlesSoon(flush)).toBe(false);
  await waitFor("the fdatasync held", () => gate.waiting() > 0);
  gate.release();
  await third;
  await flush;
  const seen = new Uint8Array(4 * 4096);
  await call.read(disk, 0, seen);
  for (let i = 0; i < 4; i++) expect(seen[i * 4096]).toBe(i + 1);
  // With the window at 0 bytes, no write completes before it is durable.
  await primary.close();
  const gate2 = gatedDirectory();
  const strict = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(SIZE)), gate2.dir, { logLimit: 64 << 20, ackWindowBytes: 0 });
  await call.write(strict, 0, block(1));
  gate2.hold();
  const slow = call.write(strict, 4096, block(2));
  expect(await settlesSoon(slow)).toBe(false);
  gate2.release();
  await slow;
  await strict.close();
});

test("overlapping writes in the window reach the disk in log order and reads see the last one", async () => {
  const gate = gatedDirectory();
  const disk = createLocalPort(createMemoryBackend(SIZE));
  const primary = await ReplicationPrimary.open(disk, gate.dir, { logLimit: 64 << 20 });
  await call.write(primary, 0, block(1));
  await call.flush(primary);
  gate.hold();
  const big = new Uint8Array(3 * 4096).fill(5);
  await call.write(primary, 4096, big);
  await call.write(primary, 2 * 4096, block(6));
  await call.write(primary, 2 * 4096 + 512, new Uint8Array(512).fill(8));
  const seen = new Uint8Array(4 * 4096);
  const expected = new Uint8Array(4 * 4096);
  expected.fill(1, 0, 4096);
  expected.fill(5, 4096, 4 * 4096);
  expected.fill(6, 2 * 4096, 3 * 4096);
  expected.fill(8, 2 * 4096 + 512, 2 * 4096 + 1024);
  await call.read(primary, 0, seen);
  expect(Buffer.compare(seen, expected)).toBe(0);
  gate.release();
  await call.flush(primary);
  await call.read(disk, 0, seen);
  expect(Buffer.compare(seen, expected)).toBe(0);
  await primary.close();
});

test("a handed-over buffer is held, not copied, until written back; the caller's XXH3-64 becomes the record's digest", async () => {
  const gate = gatedDirectory();
  const disk = createLocalPort(createMemoryBackend(SIZE));
  const digests: bigint[] = [];
  const primary = await ReplicationPrimary.open(disk, gate.dir, {
    logLimit: 64 << 20,
    onAppend: (_point, chunks) => digests.push(decodeHeader(chunks[0]!).payloadDigest),
  });
  expect(primary.writeHandedOver).toBeDefined();
  await call.write(primary, 0, block(1));
  await call.flush(primary);
  gate.hold();
  let holds = 1; // the caller's own, until the completion
  const hold: BufferHold = { hold: () => void holds++, drop: () => void holds-- };
  const data = block(7);
  const hash = Bun.hash.xxHash3(data);
  await new Promise<void>((resolve, reject) =>
    primary.writeHandedOver!(8 * 4096, data, false, hold, (e) => (e === 0 ? resolve() : reject(new Error(`errno ${e}`))), hash),
  );
  holds--;
  expect(primary.status().earlyAcked).toBe(1);
  expect(holds).toBe(1); // the window keeps the caller's buffer for the write-back: no copy
  expect(digests.at(-1)).toBe(hash);
  const seen = new Uint8Array(4096);
  await call.read(primary, 8 * 4096, seen);
  expect(seen.every((b) => b === 7)).toBe(true);
  gate.release();
  await call.flush(primary);
  expect(holds).toBe(0); // written back: given back to its owner
  await call.read(disk, 8 * 4096, seen);
  expect(seen.every((b) => b === 7)).toBe(true);
  // The digest is taken as given (no second pass over the data): a wrong one is what the record says.
  await new Promise<void>((resolve) => primary.writeHandedOver!(9 * 4096, block(8), true, hold, () => resolve(), 12345n));
  expect(digests.at(-1)).toBe(12345n);
  // Without a digest (or for a plain write) the log hashes the payload itself.
  await call.write(primary, 10 * 4096, block(9));
  expect(digests.at(-1)).toBe(Bun.hash.xxHash3(block(9)));
  await primary.close();
});
