/**
 * @module test/replication/log-store — the log store and reader on the real file system
 * (src/replication/log-store.ts, log-reader.ts, files.ts): group commit, rotation, reopen,
 * a torn tail cut, a corrupt record refused naming it (or cut on a secondary's copy),
 * streaming from a sequence number or an exact byte position, release of applied segments;
 * on the simulated disk (sim-files.ts), what a killed process leaves unsynced in the directory.
 */
import { describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { files, openLogDirectory } from "../../src/replication/files.ts";
import { LogReader, type ReadChunk } from "../../src/replication/log-reader.ts";
import { LogStore } from "../../src/replication/log-store.ts";
import { Prng } from "../../src/lib/prng.ts";
import { encodeRecord, RecordOp } from "../../src/replication/record.ts";
import { segmentName } from "../../src/replication/segments.ts";
import { scratchDirsPerTest } from "../helpers/files.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { runUntil, settle, SimDisk } from "./sim-files.ts";
import { Errno } from "../../src/lib/errno.ts";
import type { LogDirectory, LogFile } from "../../src/replication/files.ts";

const tempDir = scratchDirsPerTest("log");

let clock = 1_000_000;
const now = () => clock++;

function append(store: LogStore, offset: number, data: Uint8Array): Promise<number> {
  return new Promise((resolve, reject) => {
    const seq = store.append(RecordOp.WRITE, 0, offset, data.length, data, (errno) => (errno === 0 ? resolve(seq) : reject(new Error(`errno ${errno}`))));
  });
}

function read(reader: LogReader, max = 1 << 20): Promise<ReadChunk> {
  return new Promise((resolve, reject) => reader.read(max, (error, chunk) => (error !== null ? reject(new Error(error)) : resolve(chunk!))));
}

function block(n: number, size = 4096): Uint8Array {
  return new Uint8Array(size).fill(n & 0xff);
}

/**
 * A log store on a simulated disk (no latency) whose files pass through `wrap`: a test makes
 * their writes or fdatasyncs slow or failing at the moment it needs.
 */
async function storeOnWrappedFiles(wrap: (file: LogFile, clock: SimClock) => LogFile): Promise<{ clock: SimClock; store: LogStore }> {
  const clock = new SimClock();
  const disk = new SimDisk(clock, new Prng(1), { latency: [0, 0] });
  const dir = Object.create(disk.directory()) as LogDirectory;
  const inner = disk.directory();
  dir.open = (name, create, done) => inner.open(name, create, (errno, file) => done(errno, file === null ? null : wrap(file, clock)));
  const { store } = await settle(clock, LogStore.open(dir, { now }));
  return { clock, store };
}

describe("log store", () => {
  test("group commit: 64 appends issued together share few fdatasyncs, each completes once durable", async () => {
    const dir = openLogDirectory(tempDir());
    const { store, recovery } = await LogStore.open(dir, { now });
    expect(recovery.records).toBe(0);
    let syncs = 0;
    const original = store["active"];
    expect(original).toBeNull();
    const seqs = await Promise.all(Array.from({ length: 64 }, (_, i) => append(store, i * 4096, block(i))));
    expect(seqs).toEqual(Array.from({ length: 64 }, (_, i) => i + 1));
    expect(store.durable.seq).toBe(64);
    // Count syncs by instrumenting the active file for a second burst.
    const active = store["active"]!.file;
    const sync = active.sync.bind(active);
    active.sync = (done) => {
      syncs++;
      sync(done);
    };
    await Promise.all(Array.from({ length: 64 }, (_, i) => append(store, i * 4096, block(i + 100))));
    expect(store.durable.seq).toBe(128);
    expect(syncs).toBeGreaterThanOrEqual(1);
    expect(syncs).toBeLessThan(16);
    await store.close();
  });

  test("rotation by size, reopen finds every record, reader streams across segments", async () => {
    const root = tempDir();
    const dir = openLogDirectory(root);
    const { store } = await LogStore.open(dir, { now, segmentSize: 64 * 1024 });
    for (let i = 0; i < 100; i++) await append(store, i * 4096, block(i));
    const segments = store.segmentTable();
    expect(segments.length).toBeGreaterThan(5);
    expect(segments[0]!.name).toBe(segmentName(1));
    await store.close();

    const reopened = await LogStore.open(dir, { now, segmentSize: 64 * 1024 });
    expect(reopened.recovery.records).toBe(100);
    expect(reopened.recovery.tornTail).toBeNull();
    expect(reopened.store.last.seq).toBe(100);
    const reader = new LogReader(reopened.store, { seq: 1 });
    const seen: number[] = [];
    for (;;) {
      const chunk = await read(reader, 20_000);
      if (chunk.records.length === 0) break;
      for (const r of chunk.records) {
        seen.push(r.seq);
        expect(r.payload[0]).toBe((r.seq - 1) & 0xff);
      }
    }
    expect(seen).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    // Appending continues the chain after a reopen; the reader sees the new record.
    await append(reopened.store, 0, block(200));
    const more = await read(reader);
    expect(more.records.map((r) => r.seq)).toEqual([101]);
    // An exact position (segment + offset) resumes without a scan; a seq alone scans.
    const fromSeq = new LogReader(reopened.store, { seq: 57 });
    const a = await read(fromSeq, 1);
    expect(a.records[0]!.seq).toBe(57);
    const exact = new LogReader(reopened.store, a.next);
    expect((await read(exact, 1)).records[0]!.seq).toBe(58);
    // A wrong hint falls back to the seq.
    const wrong = new LogReader(reopened.store, { seq: 60, segment: a.next.segment, offset: a.next.offset });
    expect((await read(wrong, 1)).records[0]!.seq).toBe(60);
    await Promise.all([reader.close(), fromSeq.close(), exact.close(), wrong.close()]);
    await reopened.store.close();
  });

  test("a torn tail is cut and reported; appends continue from the last whole record", async () => {
    const root = tempDir();
    const dir = openLogDirectory(root);
    const { store } = await LogStore.open(dir, { now });
    for (let i = 0; i < 5; i++) await append(store, 0, block(i));
    await store.close();
    const file = path.join(root, segmentName(1));
    const size = fs.statSync(file).size;
    fs.truncateSync(file, size - 100); // the last record lost its tail
    const { store: again, recovery } = await LogStore.open(dir, { now });
    expect(recovery.tornTail).not.toBeNull();
    expect(recovery.tornTail!.reason).toContain("file ends inside the record");
    expect(again.last.seq).toBe(4);
    expect(await append(again, 0, block(9))).toBe(5);
    await again.close();
  });

  test("a garbage tail with no durable successor is torn; a corrupt durable record is refused, naming it", async () => {
    const root = tempDir();
    const dir = openLogDirectory(root);
    const { store } = await LogStore.open(dir, { now });
    for (let i = 0; i < 6; i++) await append(store, 0, block(i));
    await store.close();
    const file = path.join(root, segmentName(1));
    const recordSize = 88 + 4096;
    // Flip a payload byte of record 3: records 4..6 were written after it was durable.
    const bytes = fs.readFileSync(file);
    bytes[2 * recordSize + 200]! ^= 1;
    fs.writeFileSync(file, bytes);
    let message = "";
    try {
      await LogStore.open(dir, { now });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain("record seq 3");
    expect(message).toContain(`${segmentName(1)} offset ${2 * recordSize}`);
    expect(message).toContain("payload checksum mismatch");
    // A secondary's copy cuts it instead (and fetches again from there).
    const { store: cut, recovery } = await LogStore.open(dir, { now, onCorruption: "truncate" });
    expect(recovery.corruption?.seq).toBe(3);
    expect(cut.last.seq).toBe(2);
    await cut.close();
    // Now the last record is garbage and nothing follows: a torn tail, cut silently.
    const again = fs.readFileSync(file);
    again.fill(0x55, recordSize + 10, recordSize + 50);
    fs.writeFileSync(file, again);
    const { store: torn, recovery: r2 } = await LogStore.open(dir, { now });
    expect(r2.tornTail?.offset).toBe(recordSize);
    expect(torn.last.seq).toBe(1);
    await torn.close();
  });

  test("a torn last record whose guest data holds records of other logs is a torn tail, not corruption", async () => {
    const root = tempDir();
    const dir = openLogDirectory(root);
    const { store } = await LogStore.open(dir, { now, generation: 2 });
    await append(store, 0, block(1));
    await append(store, 0, block(2));
    // The guest's block holds intact headers (a guest running dstd, a copied log directory):
    // another log's far-future record, this log's own past, an older generation's. None is
    // a record of this log written after seq 3 was durable.
    const guest = new Uint8Array(4096);
    const other = (at: number, seq: number, generation: number, lamport: number) =>
      guest.set(encodeRecord({ op: RecordOp.MARK, flags: 1, seq, generation, lamport, offset: 0, length: 0, committed: seq - 1 }, new Uint8Array(0), 0n), at);
    other(1024, 500, 2, clock + 10); // seq far beyond what the bytes in between could hold
    other(2048, 1, 2, clock + 10); // this log's past
    other(3000, 4, 1, clock + 10); // an older generation
    await append(store, 0, guest);
    await store.close();
    const file = path.join(root, segmentName(1));
    const recordSize = 88 + 4096;
    const bytes = fs.readFileSync(file);
    bytes.fill(0, 2 * recordSize, 2 * recordSize + 512); // power loss: its first sector never landed
    fs.writeFileSync(file, bytes);
    const { store: reopened, recovery } = await LogStore.open(dir, { now });
    expect(recovery.tornTail?.offset).toBe(2 * recordSize);
    expect(reopened.last.seq).toBe(2);
    await reopened.close();
  });

  test("a cut of a corrupt record in an earlier segment removes the later segments durably before it shortens that one", async () => {
    const root = tempDir();
    const dir = openLogDirectory(root);
    const { store } = await LogStore.open(dir, { now, segmentSize: 16 * 1024 });
    for (let i = 0; i < 12; i++) await append(store, 0, block(i));
    await store.close();
    const names = fs.readdirSync(root).filter((n) => n.endsWith(".dstl")).sort();
    expect(names.length).toBeGreaterThanOrEqual(3);
    const first = path.join(root, names[0]!);
    const bytes = fs.readFileSync(first);
    bytes[88 + 4096 + 88 + 100]! ^= 1; // a payload byte of its second record
    fs.writeFileSync(first, bytes);
    // The order the directory and the segment see (a power loss may stop it anywhere).
    const order: string[] = [];
    const saved = { remove: files.remove, syncDir: files.syncDir, truncate: files.truncate };
    files.remove = (d, name) => (order.push(`remove ${name}`), saved.remove(d, name));
    files.syncDir = (d) => (order.push("fsync dir"), saved.syncDir(d));
    files.truncate = (file, size) => (order.push(`truncate ${file.name}`), saved.truncate(file, size));
    try {
      const { store: cut, recovery } = await LogStore.open(dir, { now, onCorruption: "truncate" });
      expect(recovery.corruption?.seq).toBe(2);
      expect(cut.last.seq).toBe(1);
      await cut.close();
    } finally {
      Object.assign(files, saved);
    }
    const cutAt = order.findIndex((o) => o.startsWith("truncate"));
    expect(order.slice(0, cutAt)).toEqual([...names.slice(1).map((n) => `remove ${n}`), "fsync dir"]);
  });

  test("release deletes applied segments but keeps the one holding the last durable record", async () => {
    const root = tempDir();
    const dir = openLogDirectory(root);
    const { store } = await LogStore.open(dir, { now, segmentSize: 16 * 1024 });
    for (let i = 0; i < 40; i++) await append(store, 0, block(i));
    const before = store.segmentTable().length;
    const freed = new Promise<void>((resolve) => store.onFreed(resolve));
    store.release(1_000_000);
    await freed;
    const after = store.segmentTable();
    expect(after.length).toBe(1);
    expect(before).toBeGreaterThan(5);
    expect(store.first).toBe(after[0]!.firstSeq);
    expect(fs.readdirSync(root).filter((n) => n.startsWith("log-"))).toEqual([after[0]!.name]);
    // A reader asking for a released seq gets a clear error.
    const reader = new LogReader(store, { seq: 1 });
    await expect(read(reader)).rejects.toThrow("seq 1 is no longer in the log");
    await store.close();
    // Reopen: the chain continues from the kept segment.
    const { store: again } = await LogStore.open(dir, { now, segmentSize: 16 * 1024 });
    expect(again.last.seq).toBe(40);
    expect(await append(again, 0, block(1))).toBe(41);
    await again.close();
  });

  test("a removal that failed with EIO after removing the segment is not retried forever: the retry's ENOENT counts as removed, and later segments are released (replication sim seed 424)", async () => {
    const clock = new SimClock();
    const disk = new SimDisk(clock, new Prng(1), { latency: [0, 0] });
    const dir = Object.create(disk.directory()) as LogDirectory;
    const inner = disk.directory();
    let failNext = true;
    // The first removal happens but reports EIO (a journal aborting after the change, sim-files.ts).
    dir.remove = (name, done) => inner.remove(name, (errno) => done(errno === 0 && failNext ? ((failNext = false), Errno.EIO) : errno));
    const { store } = await settle(clock, LogStore.open(dir, { now, segmentSize: 8192 }));
    for (let i = 0; i < 12; i++) await settle(clock, append(store, 0, block(i)));
    expect(store.segmentTable().length).toBeGreaterThan(3);
    store.release(1_000_000);
    await runUntil(clock, () => !store["releasing"]);
    expect(failNext).toBe(false);
    const freed = new Promise<void>((resolve) => store.onFreed(resolve));
    store.release(1_000_000); // a later release retries
    await settle(clock, freed);
    const kept = store.segmentTable().map((s) => s.name);
    expect(kept.length).toBe(1);
    expect(disk.names().filter((n) => n.startsWith("log-"))).toEqual(kept);
    await settle(clock, store.close());
  });

  test("close waits for a release under way: the next opener of the directory lists no segment still being removed", async () => {
    const clock = new SimClock();
    const disk = new SimDisk(clock, new Prng(1), { latency: [0, 0] });
    const dir = Object.create(disk.directory()) as LogDirectory;
    const inner = disk.directory();
    const held: (() => void)[] = [];
    dir.remove = (name, done) => void held.push(() => inner.remove(name, done));
    const { store } = await settle(clock, LogStore.open(dir, { now, segmentSize: 8192 }));
    for (let i = 0; i < 12; i++) await settle(clock, append(store, 0, block(i)));
    store.release(1_000_000);
    expect(held.length).toBe(1);
    let closed = false;
    let releasingAtClose: boolean | null = null;
    void store.close().then(() => {
      closed = true;
      releasingAtClose = store["releasing"];
    });
    let secondClosed = false;
    void store.close().then(() => (secondClosed = true)); // a second caller waits for the same close
    // Everything else done (the active file closed, in simulated time): close still waits for the held removal.
    for (let i = 0; i < 20; i++) {
      for (let j = 0; j < 8; j++) await null;
      clock.runUntil(clock.ticks + 50);
    }
    expect([closed, secondClosed]).toEqual([false, false]);
    // Each removal let go; the next one (or the directory sync) follows in simulated time.
    while (!closed) {
      held.shift()?.();
      await runUntil(clock, () => held.length > 0 || closed);
    }
    expect(releasingAtClose as boolean | null).toBe(false);
    expect(held.length).toBe(0);
    for (let i = 0; i < 8; i++) await null;
    expect(secondClosed).toBe(true);
    const kept = store.segmentTable().map((s) => s.name);
    expect(disk.names().filter((n) => n.startsWith("log-"))).toEqual(kept);
  });

  test("appendEncoded copies a shipped log verbatim and refuses the first bad record", async () => {
    const source = await LogStore.open(openLogDirectory(tempDir()), { now });
    for (let i = 0; i < 10; i++) await append(source.store, i * 4096, block(i));
    const reader = new LogReader(source.store, { seq: 1 });
    const chunk = await read(reader);
    expect(chunk.records.length).toBe(10);
    const copy = await LogStore.open(openLogDirectory(tempDir()), { now, onCorruption: "truncate" });
    const bytes = chunk.bytes.slice();
    bytes[5 * (88 + 4096) + 300]! ^= 4; // record 6's payload
    const done = new Promise<number>((resolve) => {
      const reason = copy.store.appendEncoded(bytes, resolve);
      expect(reason).toContain("record seq 6: payload checksum mismatch");
    });
    expect(await done).toBe(0);
    expect(copy.store.durable.seq).toBe(5);
    // The rest, fetched again from seq 6, continues the chain.
    const again = new LogReader(source.store, { seq: 6 });
    const rest = await read(again);
    const ok = await new Promise<number>((resolve) => expect(copy.store.appendEncoded(rest.bytes, resolve)).toBeNull());
    expect(ok).toBe(0);
    expect(copy.store.durable.seq).toBe(10);
    await Promise.all([reader.close(), again.close(), source.store.close(), copy.store.close()]);
  });

  test("a segment a killed process created before its directory fsync is made durable by the next open: records appended to it survive a power loss (they went with its directory entry: replication sim seed 1767)", async () => {
    const clock = new SimClock();
    const disk = new SimDisk(clock, new Prng(1), { latency: [0, 2] });
    const first = await settle(clock, LogStore.open(disk.directory(), { now }));
    for (let i = 0; i < 3; i++) await settle(clock, append(first.store, i * 4096, block(i)));
    // Rotating, the process creates the next segment and is killed before the directory fsync.
    await settle(clock, new Promise((resolve) => disk.directory().open(segmentName(4), true, resolve)));
    disk.kill();
    const second = await settle(clock, LogStore.open(disk.directory(), { now }));
    expect(second.store.last.seq).toBe(3);
    expect(await settle(clock, append(second.store, 3 * 4096, block(3)))).toBe(4); // into the empty segment, durable
    disk.crash("lose-all");
    const third = await settle(clock, LogStore.open(disk.directory(), { now }));
    expect(third.store.last.seq).toBe(4);
    await settle(clock, third.store.close());
  });

  test("a write that fails the log completes its own records with the errno, and records whose fdatasync was in flight then never become durable: they fail with the log (replication sim seed 269)", async () => {
    let failWrites = false;
    // Writes fail at once while failWrites; every fdatasync takes 5 ticks.
    const { clock, store } = await storeOnWrappedFiles((file, clock) => {
      const wrapped = Object.create(file) as LogFile;
      wrapped.write = (position, chunks, done) => (failWrites ? clock.after(0, () => done(Errno.EIO)) : file.write(position, chunks, done));
      wrapped.sync = (done) => clock.after(5, () => file.sync(done));
      return wrapped;
    });
    const results: number[] = [];
    // A's write completes and its fdatasync starts; then B's write fails the log.
    store.append(RecordOp.WRITE, 0, 0, 4096, block(1), (errno) => results.push(errno), () => {
      failWrites = true;
      store.append(RecordOp.WRITE, 0, 4096, 4096, block(2), (errno) => results.push(errno));
    });
    await runUntil(clock, () => results.length === 2);
    expect(store.failed).toBe(Errno.EIO);
    expect(results).toEqual([Errno.EIO, Errno.EIO]);
    expect(store.durable.seq).toBe(0);
    await settle(clock, store.close());
  });

  test("records whose write was in flight when an fdatasync failed the log complete once, with the errno, and are never reported written (replication sim seed 1226)", async () => {
    let failSyncs = false;
    // fdatasyncs fail at once while failSyncs; every write takes 5 ticks.
    const { clock, store } = await storeOnWrappedFiles((file, clock) => {
      const wrapped = Object.create(file) as LogFile;
      wrapped.write = (position, chunks, done) => clock.after(5, () => file.write(position, chunks, done));
      wrapped.sync = (done) => (failSyncs ? clock.after(0, () => done(Errno.EIO)) : file.sync(done));
      return wrapped;
    });
    const results: number[] = [];
    let laterWritten = 0;
    // A is written and its fdatasync fails while B's write runs.
    store.append(RecordOp.WRITE, 0, 0, 4096, block(1), (errno) => results.push(errno), () => {
      failSyncs = true;
      store.append(RecordOp.WRITE, 0, 4096, 4096, block(2), (errno) => results.push(errno), () => laterWritten++);
    });
    await runUntil(clock, () => results.length === 2);
    clock.runUntil(clock.ticks + 20); // B's write completes
    for (let i = 0; i < 8; i++) await null;
    expect(results).toEqual([Errno.EIO, Errno.EIO]);
    expect(laterWritten).toBe(0);
    expect(store.durable.seq).toBe(0);
    await settle(clock, store.close());
  });
  test("records whose fdatasync was in flight when a write failed the log complete with the errno when that fdatasync fails too (sync sim seed 2: they never completed, and the primary's switch to overflow held every later mutation)", async () => {
    let failing = false;
    // Writes fail at once while failing; every fdatasync takes 5 ticks and fails if failing by then.
    const { clock, store } = await storeOnWrappedFiles((file, clock) => {
      const wrapped = Object.create(file) as LogFile;
      wrapped.write = (position, chunks, done) => (failing ? clock.after(0, () => done(Errno.EIO)) : file.write(position, chunks, done));
      wrapped.sync = (done) => clock.after(5, () => (failing ? done(Errno.EIO) : file.sync(done)));
      return wrapped;
    });
    const results: number[] = [];
    // A's write completes and its fdatasync starts; B's write fails the log; then A's fdatasync fails.
    store.append(RecordOp.WRITE, 0, 0, 4096, block(1), (errno) => results.push(errno), () => {
      failing = true;
      store.append(RecordOp.WRITE, 0, 4096, 4096, block(2), (errno) => results.push(errno));
    });
    clock.runUntil(clock.ticks + 20);
    for (let i = 0; i < 8; i++) await null;
    expect(store.failed).toBe(Errno.EIO);
    expect(results).toEqual([Errno.EIO, Errno.EIO]);
    expect(store.durable.seq).toBe(0);
    await settle(clock, store.close());
  });
});
