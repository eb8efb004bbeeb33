/**
 * @module test/replication/open-cleanup — a replication open that fails part way closes every
 * file it had opened (src/replication/files.ts OpenedFiles): ReplicationPrimary.open (state
 * file, log store and its recovery, dirty bitmap and its conversion, replay onto the disk, the
 * disk flush, the checkpoint save) and Secondary.open (log copy, applier state). Each file
 * operation in turn fails once (EIO) on a copy of the same log directory; after each failed
 * open no file it opened is still open, counted by an instrumented directory and by
 * /proc/self/fd; nor after an open that succeeded is closed at once (its applier's log reader
 * then closes mid-open of a segment). A leaked descriptor would meet a retry in the same
 * process (a unit restart under `dstd up`) with the files still open.
 */
import { expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { Errno } from "../../src/lib/errno.ts";
import { openLogDirectory, type FileDone, type LogDirectory, type LogFile } from "../../src/replication/files.ts";
import { ReplicationPrimary } from "../../src/replication/primary.ts";
import { Secondary } from "../../src/replication/secondary.ts";
import { PassThrough } from "../../src/storage/layers/pass-through.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { call, type Done, type StoragePort } from "../../src/storage/port.ts";
import { scratchDirsPerTest } from "../helpers/files.ts";

const tempDir = scratchDirsPerTest("open-cleanup");

const SIZE = 4 << 20;
const LOG = { logLimit: 1 << 20, segmentSize: 64 << 10 };

/** A log directory whose `failAt`-th file operation (closes not counted) fails with EIO; it knows which files are open. */
class Faulty implements LogDirectory {
  ops = 0;
  /** Files opened and not closed yet. */
  readonly openFiles = new Set<string>();
  private serial = 0;
  constructor(
    private readonly inner: LogDirectory,
    private readonly failAt: number,
  ) {}
  get path(): string {
    return this.inner.path;
  }
  /** True: this operation is the one to fail. */
  fails(): boolean {
    return this.ops++ === this.failAt;
  }
  list(done: (errno: number, names: string[]) => void): void {
    if (this.fails()) return done(Errno.EIO, []);
    this.inner.list(done);
  }
  remove(name: string, done: FileDone): void {
    if (this.fails()) return done(Errno.EIO);
    this.inner.remove(name, done);
  }
  rename(from: string, to: string, done: FileDone): void {
    if (this.fails()) return done(Errno.EIO);
    this.inner.rename(from, to, done);
  }
  sync(done: FileDone): void {
    if (this.fails()) return done(Errno.EIO);
    this.inner.sync(done);
  }
  open(name: string, create: boolean, done: (errno: number, file: LogFile | null) => void): void {
    if (this.fails()) return done(Errno.EIO, null);
    this.inner.open(name, create, (errno, file) => {
      if (errno !== 0) return done(errno, null);
      const id = `${name}#${this.serial++}`;
      this.openFiles.add(id);
      done(0, this.wrap(file!, id));
    });
  }
  private wrap(file: LogFile, id: string): LogFile {
    const self = this;
    return {
      name: file.name,
      write: (position, chunks, done) => (self.fails() ? done(Errno.EIO) : file.write(position, chunks, done)),
      read: (position, into, done) => (self.fails() ? done(Errno.EIO, 0) : file.read(position, into, done)),
      sync: (done) => (self.fails() ? done(Errno.EIO) : file.sync(done)),
      truncate: (size, done) => (self.fails() ? done(Errno.EIO) : file.truncate(size, done)),
      size: (done) => (self.fails() ? done(Errno.EIO, 0) : file.size(done)),
      close: (done) => {
        self.openFiles.delete(id);
        file.close(done);
      },
    };
  }
}

const fdCount = (): number => fs.readdirSync("/proc/self/fd").length;

/**
 * A log directory as a crashed primary leaves it: records after the checkpoint (its disk never
 * flushed), a dirty bitmap made for a disk of SIZE bytes, state saved.
 */
async function fixture(): Promise<string> {
  const root = path.join(tempDir(), "fixture");
  // No checkpoint is due (a failed disk flush would fail the layer closed: storage/layers/flush-latch.ts).
  const primary = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(root), { ...LOG, checkpointBytes: 1 << 30 });
  for (let i = 0; i < 40; i++) await call.write(primary, i * 8192, new Uint8Array(8192).fill(i + 1));
  expect(primary.status().checkpoint).toBe(0);
  await primary.close();
  return root;
}

/**
 * Opens a fresh copy of `fixture` with operation n failing, for n = 0, 1, … until an open
 * runs without reaching its failure; after each, no file is left open. Returns how many
 * failures were injected.
 */
async function everyStepFails(fixtureDir: string, open: (dir: LogDirectory) => Promise<{ close(): Promise<void> }>): Promise<number> {
  for (let n = 0; ; n++) {
    expect(n).toBeLessThan(500);
    const copy = path.join(tempDir(), `try-${n}`);
    fs.cpSync(fixtureDir, copy, { recursive: true });
    const fds = fdCount();
    const dir = new Faulty(openLogDirectory(copy), n);
    let opened: { close(): Promise<void> } | null = null;
    let failure: unknown = null;
    try {
      opened = await open(dir);
    } catch (error) {
      failure = error;
    }
    if (failure !== null) {
      expect({ step: n, failure: String(failure), open: [...dir.openFiles] }).toEqual({ step: n, failure: String(failure), open: [] });
      expect(fdCount()).toBe(fds);
    } else {
      await opened!.close();
      expect([...dir.openFiles]).toEqual([]);
      if (dir.ops <= n) return n; // the whole open ran without meeting the failure
    }
  }
}

test("ReplicationPrimary.open: a failure at each step (state, recovery, bitmap conversion, replay, checkpoint) leaves no file open", async () => {
  const root = await fixture();
  // A disk of another size: the bitmap is converted (a new file renamed over it) on open.
  const steps = await everyStepFails(root, (dir) => ReplicationPrimary.open(createLocalPort(createMemoryBackend(2 * SIZE)), dir, LOG));
  expect(steps).toBeGreaterThan(15);
});

test("ReplicationPrimary.open: a disk refusing the replay or its flush leaves no file open", async () => {
  const root = await fixture();
  class Refusing extends PassThrough {
    constructor(
      next: StoragePort,
      private readonly what: "write" | "flush",
    ) {
      super(next);
    }
    override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
      if (this.what === "write") return done(Errno.EIO);
      super.write(offset, data, fua, done);
    }
    override flush(done: Done): void {
      if (this.what === "flush") return done(Errno.EIO);
      super.flush(done);
    }
  }
  for (const what of ["write", "flush"] as const) {
    const copy = path.join(tempDir(), what);
    fs.cpSync(root, copy, { recursive: true });
    const fds = fdCount();
    const dir = new Faulty(openLogDirectory(copy), -1);
    const disk = new Refusing(createLocalPort(createMemoryBackend(SIZE)), what);
    await expect(ReplicationPrimary.open(disk, dir, LOG)).rejects.toThrow();
    expect([...dir.openFiles]).toEqual([]);
    expect(fdCount()).toBe(fds);
  }
});

test("Secondary.open: a failure at each step (applier position, log copy recovery, applier state) leaves no file open", async () => {
  // A secondary's copy holds the primary's segments verbatim: the fixture's log serves as one.
  const root = await fixture();
  const clock = { now: () => Date.now() * 1000, after: (ms: number, run: () => void) => { const t = setTimeout(run, ms); return () => clearTimeout(t); } };
  const steps = await everyStepFails(root, (dir) => Secondary.open(createLocalPort(createMemoryBackend(SIZE)), dir, { clock, segmentSize: LOG.segmentSize }));
  expect(steps).toBeGreaterThan(5);
});
