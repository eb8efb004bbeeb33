/**
 * @module test/replication/primary — ReplicationPrimary on the real file system over a
 * memory disk (src/replication/primary.ts): each mutation logged and written back, group
 * commit under QD32, FLUSH free while logging, recovery replaying records after the
 * checkpoint onto a disk that lost them, overflow into the dirty bitmap past the high-water
 * mark (writes never fail), and the resync that copies dirty regions back into the log;
 * a secondary replaying the whole log ends equal to the primary — also after resizes, logged
 * or made around the log (the bitmap grows with the disk; the secondaries get the size). The
 * dirty bitmap of a resized disk converted on restart (every dirty region kept, also across a
 * power loss mid-conversion or mid-growth, on a simulated disk), and one whose creation a
 * power loss cut short made anew. A write-back the disk refuses is retried; one it keeps
 * refusing fails the layer closed with the checkpoint below it, and a restart replays it.
 */
import { expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { Errno } from "../../src/lib/errno.ts";
import { Prng } from "../../src/lib/prng.ts";
import { Applier } from "../../src/replication/applier.ts";
import { DirtyBitmap } from "../../src/replication/dirty-bitmap.ts";
import { openLogDirectory } from "../../src/replication/files.ts";
import { LogReader } from "../../src/replication/log-reader.ts";
import { DIRTY_BITMAP_FILE, PRIMARY_STATE_FILE, ReplicationPrimary } from "../../src/replication/primary.ts";
import { PRIMARY_STATE_KIND, validatePrimaryState } from "../../src/replication/primary-state.ts";
import { StateFile } from "../../src/replication/state-file.ts";
import { RecordFlag, RecordOp, type LogRecord } from "../../src/replication/record.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { call, type StoragePort } from "../../src/storage/port.ts";
import { PassThrough } from "../../src/storage/layers/pass-through.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { runUntil, settle, SimDisk } from "./sim-files.ts";
import { SimDiskPort } from "./sim-port.ts";
import type { FileDone, LogDirectory, LogFile } from "../../src/replication/files.ts";
import { scratchDirsPerTest } from "../helpers/files.ts";
import { until } from "../helpers/wait.ts";

const tempDir = scratchDirsPerTest("primary");

const SIZE = 8 << 20;
const block = (n: number) => new Uint8Array(4096).fill(n);

async function allRecords(primary: ReplicationPrimary, from = 1): Promise<LogRecord[]> {
  const reader = new LogReader(primary.store, { seq: from });
  const out: LogRecord[] = [];
  for (;;) {
    const chunk = await new Promise<{ records: LogRecord[] }>((resolve, reject) =>
      reader.read(1 << 20, (e, c) => (e !== null ? reject(new Error(e)) : resolve(c!))),
    );
    if (chunk.records.length === 0) break;
    for (const r of chunk.records) out.push({ ...r, payload: r.payload.slice() });
  }
  await reader.close();
  return out;
}

test("every mutation becomes a record, written back in order; 32 concurrent writes share few fdatasyncs; FLUSH is free", async () => {
  const root = tempDir();
  const disk = createLocalPort(createMemoryBackend(SIZE));
  const primary = await ReplicationPrimary.open(disk, openLogDirectory(root), { logLimit: 64 << 20 });
  let syncs = 0;
  const writes = Array.from({ length: 32 }, (_, i) => call.write(primary, i * 4096, block(i + 1)));
  // Count the fdatasyncs of the burst once the first segment exists.
  await Promise.resolve();
  await Promise.all(writes);
  const active = primary.store["active"]!.file;
  const sync = active.sync.bind(active);
  active.sync = (done) => {
    syncs++;
    sync(done);
  };
  await Promise.all(Array.from({ length: 32 }, (_, i) => call.write(primary, (64 + i) * 4096, block(i + 100), true)));
  expect(syncs).toBeGreaterThanOrEqual(1);
  expect(syncs).toBeLessThanOrEqual(4);
  await call.zero(primary, 0, 4096, { noHole: true });
  await call.trim(primary, 4096, 4096);
  const before = primary.status();
  await call.flush(primary); // nothing written around the log: no disk flush needed
  expect(before.mode).toBe("logging");
  const records = await allRecords(primary);
  expect(records.length).toBe(66);
  expect(records[64]!.op).toBe(RecordOp.ZERO);
  expect(records[64]!.flags).toBe(RecordFlag.NO_HOLE);
  expect(records[65]!.op).toBe(RecordOp.TRIM);
  // Reads see every completed mutation.
  const into = new Uint8Array(4096);
  await call.read(primary, 2 * 4096, into);
  expect(into[0]).toBe(3);
  await call.read(primary, 0, into);
  expect(into.every((b) => b === 0)).toBe(true);
  await primary.close();
});

test("a write over 1 MiB becomes several records; recovery replays records after the checkpoint onto a disk that lost them", async () => {
  const root = tempDir();
  // A disk whose flush fails: no checkpoint can pass the records, so the log must keep them.
  class NoFlush extends PassThrough {
    override flush(done: (errno: number) => void): void {
      done(5);
    }
  }
  const primary = await ReplicationPrimary.open(new NoFlush(createLocalPort(createMemoryBackend(SIZE))), openLogDirectory(root), { logLimit: 64 << 20 });
  const big = new Uint8Array(3 << 20).map((_, i) => (i * 7) & 0xff);
  await call.write(primary, 1 << 20, big);
  await call.write(primary, 0, block(9));
  expect(primary.store.last.seq).toBe(4);
  expect(primary.status().checkpoint).toBe(0);
  // The data disk loses everything it never flushed: a fresh, empty disk.
  await primary.store.close();
  const empty = createMemoryBackend(SIZE);
  const again = await ReplicationPrimary.open(createLocalPort(empty), openLogDirectory(root), { logLimit: 64 << 20 });
  const back = new Uint8Array(big.length);
  await call.read(again, 1 << 20, back);
  expect(Buffer.compare(back, big)).toBe(0);
  expect(again.status().checkpoint).toBe(4);
  await again.close();
});

/** Options that let the log fill after a few hundred 4 KiB writes. */
const SMALL_LOG = { logLimit: 256 << 10, segmentSize: 32 << 10 };

/** Writes into the first 4 MiB until the primary writes around its log (no secondary applies anything). */
async function untilOverflow(primary: ReplicationPrimary): Promise<void> {
  for (let i = 0; primary.status().mode !== "overflow"; i++) {
    expect(i).toBeLessThan(2000);
    await call.write(primary, (i % 1024) * 4096, block(i & 0xff));
  }
}

/** A secondary replaying `primary`'s log onto `disk`, reporting its progress as `name`. */
async function secondaryOf(primary: ReplicationPrimary, disk: StoragePort, dir: string, name = "s1"): Promise<Applier> {
  const applier = await Applier.open(disk, openLogDirectory(dir), {
    source: (from, after) => new LogReader(primary.store, from, after),
    clock: { now: () => Date.now() * 1000, after: (ms, run) => { const t = setTimeout(run, ms); return () => clearTimeout(t); } },
  });
  applier.onApplied((point) => primary.secondaryApplied(name, point.seq));
  return applier;
}

/** Until the secondary applied the whole log, logging resumed and any resync ended; then both disks are equal, size included. */
async function converged(primary: ReplicationPrimary, applier: Applier, secondaryDisk: StoragePort): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const p = primary.status();
    const s = applier.status();
    if (p.mode === "logging" && !p.resyncPending && s.applied.seq === p.durable && p.durable === p.last && s.consistent) break;
    if (Date.now() > deadline || s.halted !== null) throw new Error(`no convergence: ${JSON.stringify(p)} ${JSON.stringify(s)}`);
    await Bun.sleep(5); // waiting for real disk I/O to progress, not for a timing assumption
  }
  expect(secondaryDisk.size).toBe(primary.size);
  const a = new Uint8Array(primary.size);
  const b = new Uint8Array(primary.size);
  await call.read(primary, 0, a);
  await call.read(secondaryDisk, 0, b);
  expect(Buffer.compare(a, b)).toBe(0);
}

const resize = (port: StoragePort, size: number) =>
  new Promise<void>((resolve, reject) => port.resize!(size, (e) => (e === 0 ? resolve() : reject(new Error(`resize to ${size}: errno ${e}`)))));

/** A disk that outlives the primary over it (a restart keeps the data disk). */
class Kept extends PassThrough {
  override async close(): Promise<void> {}
}

test("past the high-water mark writes go around the log into the dirty bitmap, never failing; the resync copies them back and a secondary ends equal", async () => {
  const root = tempDir();
  const disk = createLocalPort(createMemoryBackend(SIZE));
  const primary = await ReplicationPrimary.open(disk, openLogDirectory(path.join(root, "p")), SMALL_LOG);
  expect(primary.addSecondary("s1", 0)).toBeNull();
  // No secondary applies anything: the log fills and the primary writes around it.
  await untilOverflow(primary);
  for (let i = 0; i < 20; i++) await call.write(primary, i * 8192, block(i));
  const status = primary.status();
  expect(status.mode).toBe("overflow");
  expect(status.dirtyRegions).toBeGreaterThan(0);
  expect(primary.dirtyRegions().length).toBeGreaterThan(0);

  // A secondary replays everything the log holds; its progress frees the log; logging and
  // the resync resume; after RESYNC_END it equals the primary.
  const secondaryDisk = createLocalPort(createMemoryBackend(SIZE));
  const applier = await secondaryOf(primary, secondaryDisk, path.join(root, "s"));
  await converged(primary, applier, secondaryDisk);
  await applier.close();
  await primary.close();
});

test("a dirty bitmap whose fdatasync failed fails the writes around the log, and status names the bitmap (it showed only the log full)", async () => {
  const root = tempDir();
  const dir = openLogDirectory(path.join(root, "p"));
  let failing = false;
  const wrapped = Object.create(dir) as LogDirectory;
  wrapped.open = (name, create, done) =>
    dir.open(name, create, (errno, file) => {
      if (file === null || name !== DIRTY_BITMAP_FILE) return done(errno, file);
      const f = Object.create(file) as LogFile;
      f.sync = (synced: FileDone) => (failing ? queueMicrotask(() => synced(Errno.EIO)) : file.sync(synced));
      done(errno, f);
    });
  const primary = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(SIZE)), wrapped, SMALL_LOG);
  expect(primary.addSecondary("s1", 0)).toBeNull();
  await untilOverflow(primary);
  expect(primary.status().logFailure).toBeNull();
  failing = true;
  let errno = 0;
  for (let i = 0; i < 8 && errno === 0; i++) errno = await new Promise<number>((resolve) => primary.write(4 << 20, block(i), false, resolve));
  expect(errno).toBe(Errno.EIO);
  expect(primary.status().logFailure).toContain(`dirty bitmap ${dir.path}/${DIRTY_BITMAP_FILE}: a write or fdatasync failed`);
  await primary.close();
});

test("after a logged resize grows the disk, a write around the log into the new area is marked dirty and resynced (it was lost: the bitmap kept its old size)", async () => {
  const root = tempDir();
  const primary = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(path.join(root, "p")), SMALL_LOG);
  expect(primary.addSecondary("s1", 0)).toBeNull();
  await resize(primary, 2 * SIZE); // logged: the log has room
  await untilOverflow(primary);
  const at = 12 << 20;
  await call.write(primary, at, block(0xab));
  expect(primary.dirtyRegions().some((run) => run.offset <= at && at < run.offset + run.length)).toBe(true);
  const secondaryDisk = createLocalPort(createMemoryBackend(SIZE));
  const applier = await secondaryOf(primary, secondaryDisk, path.join(root, "s"));
  await converged(primary, applier, secondaryDisk);
  const into = new Uint8Array(4096);
  await call.read(secondaryDisk, at, into);
  expect(into[0]).toBe(0xab);
  await applier.close();
  await primary.close();
});

test("resizes around the log reach the secondaries with the resync, across a restart: a shrink then a regrow leaves the cut area zero there too", async () => {
  const root = tempDir();
  const disk = new Kept(createLocalPort(createMemoryBackend(2 * SIZE)));
  const secondaryDisk = createLocalPort(createMemoryBackend(2 * SIZE));
  let primary = await ReplicationPrimary.open(disk, openLogDirectory(path.join(root, "p")), SMALL_LOG);
  expect(primary.addSecondary("s1", 0)).toBeNull();
  let applier = await secondaryOf(primary, secondaryDisk, path.join(root, "s"));
  await call.write(primary, 12 << 20, block(0x12)); // logged, and on the secondary
  await converged(primary, applier, secondaryDisk);
  await applier.close();

  // Around the log: shrink below the block, grow past the old end, write into the regrown area.
  await untilOverflow(primary);
  await resize(primary, SIZE);
  await resize(primary, 3 * SIZE);
  await call.write(primary, 20 << 20, block(0x20));
  expect(primary.status().mode).toBe("overflow");
  await primary.close();
  primary = await ReplicationPrimary.open(disk, openLogDirectory(path.join(root, "p")), SMALL_LOG);
  expect(primary.status().mode).toBe("overflow");

  applier = await secondaryOf(primary, secondaryDisk, path.join(root, "s"));
  await converged(primary, applier, secondaryDisk); // 24 MiB, the old block gone, the new one there
  const into = new Uint8Array(4096);
  await call.read(secondaryDisk, 12 << 20, into);
  expect(into.every((b) => b === 0)).toBe(true);
  await call.read(secondaryDisk, 20 << 20, into);
  expect(into[0]).toBe(0x20);
  await applier.close();
  await primary.close();
});

/** A disk that refuses writes on demand (EIO) and outlives the primary over it. */
class Refusing extends Kept {
  /** Writes left to refuse. */
  refuse = 0;
  attempts = 0;
  override write(offset: number, data: Uint8Array, fua: boolean, done: (errno: number) => void): void {
    this.attempts++;
    if (this.refuse > 0) {
      this.refuse--;
      return done(Errno.EIO);
    }
    super.write(offset, data, fua, done);
  }
}

test("a write-back the disk refuses twice is tried again: the write completes and the disk holds it", async () => {
  const disk = new Refusing(createLocalPort(createMemoryBackend(SIZE)));
  const primary = await ReplicationPrimary.open(disk, openLogDirectory(tempDir()), { logLimit: 64 << 20 });
  disk.refuse = 2;
  await call.write(primary, 0, block(7), true);
  expect(disk.attempts).toBe(3);
  expect(primary.status().diskFailure).toBeNull();
  await primary.checkpoint();
  const into = new Uint8Array(4096);
  await call.read(disk, 0, into);
  expect(into[0]).toBe(7);
  await primary.close();
});

for (const fua of [true, false]) {
  test(`a logged ${fua ? "FUA write" : "write acknowledged early"} whose write-back the disk keeps refusing: the checkpoint stays below it, writes and FLUSH fail naming the disk, and a restart replays it from the log (it was skipped: the disk kept the old data, the secondaries got the new)`, async () => {
    const root = tempDir();
    const disk = new Refusing(createLocalPort(createMemoryBackend(SIZE)));
    let primary = await ReplicationPrimary.open(disk, openLogDirectory(path.join(root, "p")), { logLimit: 64 << 20 });
    await call.write(primary, 0, block(1), true);
    await call.write(primary, 1 << 20, block(2), true);
    await primary.checkpoint();
    expect(primary.status().checkpoint).toBe(2);
    disk.refuse = Infinity;
    disk.attempts = 0;
    const written = call.write(primary, 0, block(9), fua); // seq 3
    if (fua) await expect(written).rejects.toThrow("EIO");
    else await written; // acknowledged once its record was written, before the write-back
    await until(() => primary.status().inFlight === 0, "the early write's write-back, after its record is durable");
    // The log holds it, durable: the secondaries get it.
    const records = await allRecords(primary);
    expect(records[2]!.payload[0]).toBe(9);
    // The checkpoint never passes it, whatever is written back or flushed after it.
    await primary.checkpoint();
    expect(primary.status().checkpoint).toBe(2);
    expect(disk.attempts).toBe(3);
    expect(primary.status().diskFailure).toContain("seq 3");
    expect(primary.status().diskFailure).toContain("EIO");
    // The disk cannot be trusted: no more mutations, every FLUSH fails, the lost block is not served.
    disk.refuse = 0;
    await expect(call.write(primary, 2 << 20, block(3), true)).rejects.toThrow("EIO");
    await expect(call.flush(primary)).rejects.toThrow("EIO");
    await expect(call.flush(primary)).rejects.toThrow("EIO");
    await expect(call.read(primary, 0, new Uint8Array(4096))).rejects.toThrow("EIO");
    const into = new Uint8Array(4096);
    await call.read(primary, 1 << 20, into);
    expect(into[0]).toBe(2);
    await primary.close();

    // A restart over a disk still refusing it does not start, naming the disk's error.
    disk.refuse = Infinity;
    await expect(ReplicationPrimary.open(disk, openLogDirectory(path.join(root, "p")), { logLimit: 64 << 20 })).rejects.toThrow("EIO");
    disk.refuse = 0;
    // The restart replays it from the log onto the (healthy again) disk; a secondary ends equal.
    primary = await ReplicationPrimary.open(disk, openLogDirectory(path.join(root, "p")), { logLimit: 64 << 20 });
    expect(primary.status().diskFailure).toBeNull();
    await call.read(primary, 0, into);
    expect(into[0]).toBe(9);
    const secondaryDisk = createLocalPort(createMemoryBackend(SIZE));
    const applier = await secondaryOf(primary, secondaryDisk, path.join(root, "s"));
    await converged(primary, applier, secondaryDisk);
    await applier.close();
    await primary.close();
  });
}

test("a disk that fails the flush the switch to writing around the log needs: the layer refuses writes until restarted, and its status names the disk (it read as a log merely full; replication sim)", async () => {
  class FailingFlush extends Kept {
    fail = false;
    override flush(done: (errno: number) => void): void {
      if (this.fail) return done(Errno.EIO);
      super.flush(done);
    }
  }
  const disk = new FailingFlush(createLocalPort(createMemoryBackend(SIZE)));
  const primary = await ReplicationPrimary.open(disk, openLogDirectory(tempDir()), SMALL_LOG);
  expect(primary.addSecondary("s1", 0)).toBeNull(); // applies nothing: the log fills
  disk.fail = true;
  let refused = false;
  for (let i = 0; i < 2000 && !refused; i++) refused = await call.write(primary, (i % 1024) * 4096, block(i & 0xff)).then(() => false, () => true);
  expect(refused).toBe(true);
  expect(primary.status().diskFailure).toContain("flush");
  expect(primary.status().diskFailure).toContain("EIO");
  expect(primary.status().logFailure).toBeNull();
  await expect(call.write(primary, 0, block(1), true)).rejects.toThrow("EIO");
  await primary.close();
});

test("a corrupt record stops replay before it, naming it", async () => {
  const root = tempDir();
  const primary = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(path.join(root, "p")), { logLimit: 64 << 20 });
  for (let i = 0; i < 5; i++) await call.write(primary, i * 4096, block(i + 1));
  await call.flush(primary); // the writes completed once written; FLUSH makes their records durable
  const records = await allRecords(primary);
  // A source that hands the applier record 3 with a different chain (a fork).
  const forged = records.map((r) => (r.seq === 3 ? { ...r, prev: r.prev ^ 1n } : r));
  let given = false;
  const source = {
    read: (_max: number, done: (e: string | null, c: { bytes: Uint8Array; records: LogRecord[]; next: { seq: number; segment: number; offset: number } } | null) => void) => {
      done(null, { bytes: new Uint8Array(0), records: given ? [] : forged, next: { seq: 6, segment: 0, offset: 0 } });
      given = true;
    },
    onAvailable: () => () => {},
  };
  const secondaryDisk: StoragePort = createLocalPort(createMemoryBackend(SIZE));
  const applier = await Applier.open(secondaryDisk, openLogDirectory(path.join(root, "s")), {
    source: () => source,
    clock: { now: () => 0, after: () => () => {} },
  });
  for (let i = 0; i < 100 && applier.status().halted === null; i++) await Bun.sleep(2);
  expect(applier.status().halted).toContain("record seq 3: chain broken");
  expect(applier.status().applied.seq).toBe(2);
  const into = new Uint8Array(4096);
  await call.read(secondaryDisk, 2 * 4096, into);
  expect(into[0]).toBe(0); // record 3 was never applied
  await applier.close();
  await primary.close();
});

test("a resync copy with no RESYNC_BEGIN before it (a primary that lost its mark in a crash) leaves the secondary inconsistent until RESYNC_END", async () => {
  const root = tempDir();
  const primary = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(path.join(root, "p")), { logLimit: 64 << 20 });
  await call.write(primary, 0, block(1));
  // What a recovering primary logged before the fix (cluster simulation seed 11666): copies only.
  const appended = (op: number, flags: number, offset: number, payload: Uint8Array) =>
    new Promise<number>((resolve) => primary.store.append(op as never, flags, offset, payload.length, payload, resolve));
  expect(await appended(RecordOp.WRITE, RecordFlag.RESYNC, 4096, new Uint8Array(2048).fill(9))).toBe(0);
  const secondaryDisk = createLocalPort(createMemoryBackend(SIZE));
  const applier = await Applier.open(secondaryDisk, openLogDirectory(path.join(root, "s")), {
    source: (from, after) => new LogReader(primary.store, from, after),
    clock: { now: () => Date.now() * 1000, after: (ms, run) => { const t = setTimeout(run, ms); return () => clearTimeout(t); } },
  });
  const until = async (seq: number) => {
    for (let i = 0; i < 2000 && applier.status().applied.seq < seq; i++) await Bun.sleep(2);
    expect(applier.status().applied.seq).toBe(seq);
  };
  await until(2);
  expect(applier.status().consistent).toBe(false); // half of block 1 is copied, half is not
  expect(await appended(RecordOp.WRITE, RecordFlag.RESYNC, 6144, new Uint8Array(2048).fill(9))).toBe(0);
  expect(await appended(RecordOp.MARK, RecordFlag.RESYNC_END, 0, new Uint8Array(0))).toBe(0);
  await until(4);
  expect(applier.status().consistent).toBe(true);
  await applier.close();
  await primary.close();
});

/** Every byte of [offset, offset+length) lies in one of `runs` (sorted, merged). */
function covered(runs: readonly { offset: number; length: number }[], offset: number, length: number): boolean {
  let at = offset;
  for (const run of runs) if (run.offset <= at && at < run.offset + run.length) at = run.offset + run.length;
  return at >= offset + length;
}

test("a restart after a resize converts the dirty bitmap made for the old size, keeping every dirty region (it refused to start: E_BITMAP)", async () => {
  const dir = path.join(tempDir(), "p");
  const disk = new Kept(createLocalPort(createMemoryBackend(SIZE)));
  let primary = await ReplicationPrimary.open(disk, openLogDirectory(dir), SMALL_LOG);
  expect(primary.addSecondary("s1", 0)).toBeNull();
  await untilOverflow(primary);
  const dirty = primary.dirtyRegions();
  expect(dirty.length).toBeGreaterThan(0);
  await resize(primary, 2 * SIZE);
  await primary.close();
  // Grown; then coarser regions (a smaller bound); then shrunk below some dirty regions, which stay.
  for (const [size, maxBitmapBytes] of [[2 * SIZE, undefined], [2 * SIZE, 8], [SIZE / 4, undefined]] as const) {
    if (size !== disk.size) await resize(disk, size);
    primary = await ReplicationPrimary.open(disk, openLogDirectory(dir), { ...SMALL_LOG, maxBitmapBytes });
    for (const run of dirty) expect(covered(primary.dirtyRegions(), run.offset, run.length)).toBe(true);
    expect(fs.readdirSync(dir)).not.toContain(`${DIRTY_BITMAP_FILE}.new`);
    await primary.close();
  }
});

test("a power loss at any moment of a dirty bitmap's conversion, or of its growth by a mark past its end, loses no set bit and no mark reported done (simulated disk: torn writes, undone renames)", async () => {
  const region = 512 << 10; // an 8 MiB disk in 2 bytes of bits
  const marked = [0, 5, 6, 15].map((r) => r * region);
  const cut = [0, 0, 0];
  const whole = [0, 0, 0];
  for (let run = 0; run < 48 * 8; run++) {
    const crashAt = run % 48;
    for (const [variant, [size, maxBytes, grow]] of ([[2 * SIZE, 1, false], [SIZE / 2, 64, false], [SIZE, 2, true]] as const).entries()) {
      const clock = new SimClock();
      const simDisk = new SimDisk(clock, new Prng(run * 3 + variant), { latency: [0, 2] });
      const first = await settle(clock, DirtyBitmap.open(simDisk.directory(), DIRTY_BITMAP_FILE, SIZE, 2));
      for (const at of marked) expect(await settle(clock, new Promise<number>((resolve) => first.mark(at, 4096, resolve)))).toBe(0);
      let done = false;
      const at = (12 << 20) + 4096;
      if (grow) first.mark(at, 4096, (errno) => (done = errno === 0));
      else void DirtyBitmap.open(simDisk.directory(), DIRTY_BITMAP_FILE, size, maxBytes).then(() => (done = true), () => {});
      for (let t = 0; t < crashAt; t++) {
        for (let i = 0; i < 8; i++) await null;
        clock.runUntil(clock.ticks + 1);
      }
      simDisk.crash("random");
      (done ? whole : cut)[variant]!++;
      const after = await settle(clock, DirtyBitmap.open(simDisk.directory(), DIRTY_BITMAP_FILE, grow ? 2 * SIZE : size, maxBytes));
      for (const offset of marked) expect(covered(after.runs(), offset, region)).toBe(true);
      if (grow && done) expect(after.isDirty(at, 4096)).toBe(true);
    }
  }
  for (const n of [...cut, ...whole]) expect(n).toBeGreaterThan(0); // the crash points span each whole operation
});

test("a dirty bitmap whose creation a power loss cut short (its header short, all zeros, or failing its checksum with nothing after it) is made anew; a non-zero header failing its checksum with pages after it is still refused", async () => {
  const header = new Uint8Array(1000).fill(0x44); // the first sectors of a header page, nothing more
  for (const torn of [new Uint8Array(4096), new Uint8Array(3 * 4096), header, new Uint8Array(0)]) {
    const dir = path.join(tempDir(), "p");
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, DIRTY_BITMAP_FILE), torn);
    for (let start = 0; start < 2; start++) {
      const primary = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(dir), SMALL_LOG);
      expect(primary.status().dirtyRegions).toBe(0);
      await primary.close();
    }
  }
  // With pages after it (marks were written): refused. With nothing after it, no mark ever was:
  // a creation torn by sector, made anew (cluster sim seed 115864).
  const dir = tempDir();
  const corrupt = new Uint8Array(2 * 4096);
  corrupt[9] = 1;
  fs.writeFileSync(path.join(dir, DIRTY_BITMAP_FILE), corrupt);
  await expect(DirtyBitmap.open(openLogDirectory(dir), DIRTY_BITMAP_FILE, SIZE)).rejects.toThrow("header is corrupt");
  fs.writeFileSync(path.join(dir, DIRTY_BITMAP_FILE), corrupt.subarray(0, 4096));
  const remade = await DirtyBitmap.open(openLogDirectory(dir), DIRTY_BITMAP_FILE, SIZE);
  expect(remade.dirtyRegions).toBe(0);
  await remade.close();
});

// Cluster sim seed 115864: a creation whose fdatasync failed, then torn by a power loss (the
// checksum's sector on disk, the first not), left a non-zero header failing its checksum, refused
// at every start (promote --force failed for good). With nothing past the header page no mark
// was ever written: it is made anew.
test("a dirty bitmap creation failing or torn by a power loss at any point never leaves a header that is refused", async () => {
  let failed = 0;
  for (let seed = 1; seed <= 3000; seed++) { // the header's first sector lost and its checksum's kept: 8 of these in the old way
    const clock = new SimClock();
    const disk = new SimDisk(clock, new Prng(seed), { latency: [0, 2], eioRate: 0.3 });
    const first = await settle(clock, DirtyBitmap.open(disk.directory(), DIRTY_BITMAP_FILE, SIZE)).catch(() => null);
    if (first === null) failed++;
    else await settle(clock, first.close());
    disk.crash("random");
    disk.eioRate = 0;
    const bitmap = await settle(clock, DirtyBitmap.open(disk.directory(), DIRTY_BITMAP_FILE, SIZE));
    expect(bitmap.dirtyRegions).toBe(0);
    await settle(clock, bitmap.close());
  }
  expect(failed).toBeGreaterThan(0);
});

test("a mark past a dirty bitmap's end grows it to the disk's size at once, not region by region (one rewrite of the file, not one per region written into)", async () => {
  const bitmap = await DirtyBitmap.open(openLogDirectory(tempDir()), DIRTY_BITMAP_FILE, SIZE);
  const mark = (offset: number, diskSize: number) => new Promise<number>((resolve) => bitmap.mark(offset, 4096, resolve, diskSize));
  expect(await mark(SIZE + 4096, 2 * SIZE)).toBe(0); // the first write into the grown disk's new area
  expect(bitmap.regions * bitmap.regionSize).toBeGreaterThanOrEqual(2 * SIZE);
  const covered = bitmap.regions;
  expect(await mark(2 * SIZE - 4096, 2 * SIZE)).toBe(0); // its last region: no growth left to do
  expect(bitmap.regions).toBe(covered);
  await bitmap.close();
});

/** `dir` whose files' fdatasyncs (all but the dirty bitmap's) fail with EIO, without effect, while `failing()`. */
function failingSyncs(dir: LogDirectory, clock: SimClock, failing: () => boolean, which = (name: string) => name !== DIRTY_BITMAP_FILE): LogDirectory {
  const wrap = (file: LogFile): LogFile => {
    const synced = Object.create(file) as LogFile;
    synced.sync = (done: FileDone) => (failing() ? clock.after(1, () => done(Errno.EIO)) : file.sync(done));
    return synced;
  };
  const wrapped = Object.create(dir) as LogDirectory;
  wrapped.open = (name, create, done) => dir.open(name, create, (errno, file) => done(errno, file !== null && which(name) ? wrap(file) : file));
  return wrapped;
}

/** A simulated log directory and 1 MiB disk on one clock, and primary options that never checkpoint on their own. */
function simRig() {
  const clock = new SimClock();
  const files = new SimDisk(clock, new Prng(5), { latency: [0, 2] });
  const disk = new SimDiskPort(1 << 20, clock, new Prng(6), false);
  return { clock, files, disk, options: { logLimit: 1 << 24, checkpointBytes: 1 << 30, now: () => clock.ticks * 1000 + 1 } };
}

test("a write whose record the log failed goes around the log only once the switch to overflow saved its checkpoint; the state failing too, it fails, FLUSH fails, and status names the state (replication sim seed 14)", async () => {
  const { clock, files, disk, options } = simRig();
  let failing = false;
  const open = () => settle(clock, ReplicationPrimary.open(disk.handle(), failingSyncs(files.directory(), clock, () => failing), options));
  const first = await open();
  expect(await settle(clock, new Promise<number>((resolve) => first.write(0, block(1), true, resolve)))).toBe(0); // logged, written back; checkpoint 0
  // The log and the state file fail (the bitmap does not): the record's fdatasync fails, and
  // so does the switch's state save, which would set the checkpoint past record 1.
  failing = true;
  let acked = -1;
  first.write(0, block(2), true, (errno) => (acked = errno));
  await settle(clock, new Promise<void>((resolve) => {
    const wait = (): void => void (acked >= 0 ? resolve() : clock.after(1, wait));
    wait();
  }));
  const status = first.status();
  // Failed closed: no FLUSH succeeds (what went around the log since would be undone by a replay at the next start).
  expect(await settle(clock, new Promise<number>((resolve) => first.flush(resolve)))).toBe(Errno.EIO);
  // Power loss right then.
  files.crash("lose-all");
  disk.crash("lose-all");
  failing = false;
  const second = await open();
  // Written around the log before (acknowledged, FUA), recovery replayed record 1 over it.
  if (acked === 0) expect(disk.current[0]).toBe(2);
  expect(acked).toBe(Errno.EIO);
  expect(status.logFailure).toContain("saving the state failed");
  await settle(clock, second.close());
});

test("a dirty bit a killed process left in the page cache only (a mark whose fdatasync failed or never ran) is made durable by the next open, which counts it as durable: it survives a power loss (replication sim seed 520690)", async () => {
  const clock = new SimClock();
  const simDisk = new SimDisk(clock, new Prng(3), { latency: [0, 2] });
  const first = await settle(clock, DirtyBitmap.open(simDisk.directory(), DIRTY_BITMAP_FILE, SIZE));
  expect(await settle(clock, new Promise<number>((resolve) => first.mark(0, 4096, resolve)))).toBe(0);
  const region = first.regionSize;
  // Region 1's bit reaches the page cache; the process is killed before the fdatasync.
  const file = await settle(clock, new Promise<LogFile>((resolve) => simDisk.directory().open(DIRTY_BITMAP_FILE, false, (_, f) => resolve(f!))));
  await settle(clock, new Promise((resolve) => file.write(4096, [new Uint8Array([0b11])], resolve)));
  simDisk.kill();
  const second = await settle(clock, DirtyBitmap.open(simDisk.directory(), DIRTY_BITMAP_FILE, SIZE));
  expect(second.isDirty(region, 4096)).toBe(true);
  // A mark of it now completes at once, without a write: the bit must be durable already.
  expect(await settle(clock, new Promise<number>((resolve) => second.mark(region, 4096, resolve)))).toBe(0);
  simDisk.crash("lose-all");
  const third = await settle(clock, DirtyBitmap.open(simDisk.directory(), DIRTY_BITMAP_FILE, SIZE));
  expect(third.isDirty(region, 4096)).toBe(true);
  await settle(clock, third.close());
});

test("an early write whose records failed with the log and whose write around it the disk refuses fails the layer closed: reads of it fail rather than return older data (replication sim seed 520800)", async () => {
  const clock = new SimClock();
  const files = new SimDisk(clock, new Prng(5), { latency: [0, 2] });
  let failing = false;
  class FailingWrites extends PassThrough {
    override write(offset: number, data: Uint8Array, fua: boolean, done: (errno: number) => void): void {
      if (failing) return clock.after(1, () => done(Errno.EIO));
      super.write(offset, data, fua, done);
    }
  }
  const disk = new SimDiskPort(1 << 20, clock, new Prng(6), false);
  const segments = (name: string) => name.startsWith("log-");
  const primary = await settle(clock, ReplicationPrimary.open(new FailingWrites(disk.handle()), failingSyncs(files.directory(), clock, () => failing, segments), { logLimit: 1 << 24, now: () => clock.ticks * 1000 + 1 }));
  failing = true; // the record's fdatasync fails, then the write around the log
  expect(await settle(clock, new Promise<number>((resolve) => primary.write(0, block(2), false, resolve)))).toBe(0); // acknowledged early
  await settle(clock, new Promise<void>((resolve) => {
    const wait = (): void => void (primary.status().diskFailure !== null ? resolve() : clock.after(1, wait));
    wait();
  }));
  expect(primary.status().diskFailure).toContain("around the failed log");
  const into = new Uint8Array(4096);
  expect(await settle(clock, new Promise<number>((resolve) => primary.read(0, into, resolve)))).toBe(Errno.EIO);
  expect(await settle(clock, new Promise<number>((resolve) => primary.flush(resolve)))).toBe(Errno.EIO);
  failing = false;
  await settle(clock, primary.close());
});

test("a start that finds dirty regions with no resync under way saves resyncPending durably before the resync's BEGIN: a crash during the resync leaves it pending, not a BEGIN without END (replication sim seed 152)", async () => {
  const clock = new SimClock();
  const files = new SimDisk(clock, new Prng(7), { latency: [0, 2] });
  const disk = new SimDiskPort(1 << 20, clock, new Prng(8), false);
  const options = { logLimit: 1 << 24, now: () => clock.ticks * 1000 + 1 };
  const first = await settle(clock, ReplicationPrimary.open(disk.handle(), files.directory(), options));
  // A region marked around the log while the state still says logging (a switch that failed).
  expect(await settle(clock, new Promise<number>((resolve) => first.bitmap.mark(0, 4096, resolve)))).toBe(0);
  await settle(clock, first.close());
  const second = await settle(clock, ReplicationPrimary.open(disk.handle(), files.directory(), options));
  expect(second.status().resyncPending).toBe(true);
  files.crash("lose-all"); // right after the start: the resync has not finished
  const state = await settle(clock, StateFile.open(files.directory(), PRIMARY_STATE_FILE, PRIMARY_STATE_KIND, validatePrimaryState));
  expect(state.value?.resyncPending).toBe(true);
});

test("a write whose record failed with the log while an earlier logged write-back was failing is not written around the log: the switch's checkpoint stays below the lost record, and a restart's replay would undo it (replication sim seed 16525)", async () => {
  const { clock, files, disk, options } = simRig();
  /** Writes to the disk wait here while gated; the test fails them. */
  const gated: ((errno: number) => void)[] = [];
  let gate = false;
  class Gated extends PassThrough {
    override write(offset: number, data: Uint8Array, fua: boolean, done: (errno: number) => void): void {
      if (gate) return void gated.push(done);
      super.write(offset, data, fua, done);
    }
    override async close(): Promise<void> {}
  }
  let failing = false;
  const segments = (name: string) => name.startsWith("log-");
  const primary = await settle(clock, ReplicationPrimary.open(new Gated(disk.handle()), failingSyncs(files.directory(), clock, () => failing, segments), options));
  // A: logged and durable; its write-back waits at the disk.
  gate = true;
  let a = -1;
  primary.write(0, block(1), true, (errno) => (a = errno));
  await runUntil(clock, () => gated.length === 1);
  // B, over the same block: its record's fdatasync fails the log; it waits for the switch to overflow, which waits for A.
  failing = true;
  let b = -1;
  primary.write(0, block(2), true, (errno) => (b = errno));
  await runUntil(clock, () => primary.status().logFailure !== null);
  // The disk refuses A's write-back, every attempt: the layer fails closed, the checkpoint stays below A.
  while (primary.status().diskFailure === null) {
    await runUntil(clock, () => gated.length > 0);
    gated.shift()!(Errno.EIO);
  }
  gate = false;
  await runUntil(clock, () => a >= 0 && b >= 0);
  expect(a).toBe(Errno.EIO);
  // B went around the log and completed before the fix; the restart below replayed A over it.
  expect(b).toBe(Errno.EIO);
  await settle(clock, primary.close());
  failing = false;
  const again = await settle(clock, ReplicationPrimary.open(disk.handle(), files.directory(), options));
  expect(disk.current[0]).toBe(1); // A, replayed from the log
  await settle(clock, again.close());
});

test("a read of the log that fails during a start's replay fails the start as an I/O error naming the read, not as a corrupt log", async () => {
  const { clock, files, disk, options } = simRig();
  const first = await settle(clock, ReplicationPrimary.open(disk.handle(), files.directory(), options));
  for (let i = 0; i < 2; i++) expect(await settle(clock, new Promise<number>((resolve) => first.write(i * 4096, block(i + 1), true, resolve)))).toBe(0);
  expect(first.status().checkpoint).toBe(0);
  files.kill(); // killed: the next start replays records 1 and 2
  disk.restart();
  // Recovery's scan opens the segment first; the replay's reader opens it again, and its reads fail.
  let opens = 0;
  const inner = files.directory();
  const dir = Object.create(inner) as LogDirectory;
  dir.open = (name, create, done) =>
    inner.open(name, create, (errno, file) => {
      if (file === null || !name.startsWith("log-") || ++opens < 2) return done(errno, file);
      const failing = Object.create(file) as LogFile;
      failing.read = (_position, _into, readDone) => clock.after(1, () => readDone(Errno.EIO, 0));
      done(errno, failing);
    });
  const error = await settle(clock, ReplicationPrimary.open(disk.handle(), dir, options)).then(() => null, (e: unknown) => e as { code?: string; message: string });
  expect(error?.code).toBe("E_IO");
  expect(error?.message).toContain("replaying the log: read log-0000000000000001.dstl at 0 failed");
  expect(error?.message).toContain("EIO");
});

test("a FLUSH held for an early write when the log and the state then fail fails with the layer: the write went around the log with no checkpoint saved, and a restart's replay may undo it (replication sim seed 149927)", async () => {
  const { clock, files, disk, options } = simRig();
  let failing = false;
  const primary = await settle(clock, ReplicationPrimary.open(disk.handle(), failingSyncs(files.directory(), clock, () => failing), options));
  failing = true; // the record's fdatasync fails, and so does the switch's state save
  let flushed = -1;
  const acked = await settle(clock, new Promise<number>((resolve) =>
    primary.write(0, block(2), false, (errno) => {
      primary.flush((e) => (flushed = e)); // held: the early write is not durable yet
      resolve(errno);
    }),
  ));
  expect(acked).toBe(0);
  await runUntil(clock, () => flushed >= 0);
  expect(primary.status().logFailure).toContain("saving the state failed");
  expect(flushed).toBe(Errno.EIO);
  failing = false;
  await settle(clock, primary.close());
});
