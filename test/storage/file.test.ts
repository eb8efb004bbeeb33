/**
 * @module test/backend/file.test — what only the file backend promises: sparse creation with
 * mode 0600, never resizing an existing file, clear errors for wrong paths, hole punching
 * that really frees blocks, and I/O failures surfacing as BackendError with an errno.
 */
import { runUnprivileged } from "../helpers/unprivileged.ts";
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openFileBackend } from "../../src/storage/local/file.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { Errno } from "../../src/lib/errno.ts";
import { BackendError, DstdError } from "../../src/lib/errors.ts";

const MiB = 1 << 20;
const GiB = 1 << 30;
/** Scratch directory, made on first use so a run whose filter selects no test leaves nothing. */
let scratch: string | undefined;
const dir = (): string => (scratch ??= fs.mkdtempSync(join(tmpdir(), "dstd-file-")));
afterAll(() => {
  if (scratch !== undefined) fs.rmSync(scratch, { recursive: true, force: true });
});
let count = 0;
const fresh = (): string => join(dir(), `f${count++}.img`);

function allocated(path: string): number {
  return fs.statSync(path).blocks * 512;
}

function caught(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  throw new Error("expected an error, got success");
}

describe("file backend: opening", () => {
  test("a missing file with --size is created sparse with mode 0600", () => {
    const path = fresh();
    const b = openFileBackend(path, { size: GiB });
    b.write(512 * MiB, new Uint8Array(4096).fill(1), true);
    const stats = fs.statSync(path);
    expect(stats.size).toBe(GiB);
    expect(stats.mode & 0o777).toBe(0o600);
    expect(allocated(path)).toBeLessThan(MiB);
    expect([b.kind, b.size, b.blockSize, b.readOnly]).toEqual(["file", GiB, 4096, false]);
    b.close();
  });

  test("an existing file with a different --size is refused and left unchanged", () => {
    const path = fresh();
    fs.writeFileSync(path, new Uint8Array(8192).fill(9));
    for (const size of [4096, 16384, 0]) {
      const error = caught(() => openFileBackend(path, { size }));
      expect(error).toBeInstanceOf(DstdError);
      expect((error as DstdError).code).toBe("E_SIZE_MISMATCH");
      expect((error as DstdError).message).toContain(`exists with size 8192 bytes but --size asks for ${size}`);
    }
    expect(fs.readFileSync(path)).toEqual(Buffer.alloc(8192, 9));
  });

  test("with `grown` (a file dstd resize grew), a larger existing file opens at its size; a smaller one is still refused", () => {
    const path = fresh();
    fs.writeFileSync(path, new Uint8Array(8192).fill(4));
    const b = openFileBackend(path, { size: 4096, grown: true });
    expect(b.size).toBe(8192);
    b.close();
    for (const size of [16384, 0]) {
      const error = caught(() => openFileBackend(path, { size, grown: true }));
      expect((error as DstdError).code).toBe("E_SIZE_MISMATCH");
    }
    expect(fs.readFileSync(path)).toEqual(Buffer.alloc(8192, 4));
  });

  test("an existing file opens with its own size, with or without a matching --size", () => {
    const path = fresh();
    fs.writeFileSync(path, new Uint8Array(8192).fill(3));
    for (const size of [undefined, 8192]) {
      const b = openFileBackend(path, { size });
      expect(b.size).toBe(8192);
      const read = new Uint8Array(8192);
      b.read(0, read);
      expect(read.every((byte) => byte === 3)).toBe(true);
      b.close();
    }
  });

  test("a missing file without --size is an error that says to pass --size, and nothing is created", () => {
    const path = fresh();
    const error = caught(() => openFileBackend(path));
    expect(error).toBeInstanceOf(DstdError);
    expect((error as Error).message).toBe(`${path} does not exist; pass --size to create it`);
    expect(() => openFileBackend(path, { size: MiB, readOnly: true })).toThrow(/read-only export needs an existing file/);
    expect(() => openFileBackend(path, { size: MiB, create: false })).toThrow(/does not exist/);
    expect(fs.existsSync(path)).toBe(false);
  });

  test("a directory, a character device and a block device are refused by name", () => {
    expect(() => openFileBackend(dir(), { size: MiB })).toThrow(`${dir()} is a directory, not a file`);
    expect(() => openFileBackend("/dev/null")).toThrow("/dev/null is not a regular file");
  });

  const blockDevice = ["/dev/loop0", "/dev/vda", "/dev/sda"].find((p) => fs.existsSync(p) && fs.statSync(p).isBlockDevice());
  test.skipIf(blockDevice === undefined)("a block device path says to use --device (needs a /dev block node)", () => {
    expect(() => openFileBackend(blockDevice!)).toThrow(`${blockDevice} is a block device; use --device to export it`);
  });

  test("permission denied names the problem (checked as an ordinary user: root bypasses mode bits)", () => {
    const path = fresh();
    fs.writeFileSync(path, new Uint8Array(4096));
    fs.chmodSync(path, 0o444); // readable but not writable by an ordinary user
    const run = runUnprivileged((src) => `
      const { openFileBackend } = await import(${src("src/storage/local/file.ts")});
      try { openFileBackend(${JSON.stringify(path)}); console.log("OPENED"); } catch (e) { console.log(e.errno, e.message); }`);
    expect(run.stderr).toBe("");
    expect(run.stdout.startsWith(`${Errno.EACCES} `)).toBe(true);
    expect(run.stdout).toMatch(/permission denied.*--read-only/);
  });

  test("invalid and unsupportable sizes are refused; a failed create leaves no file behind", () => {
    expect(() => openFileBackend(fresh(), { size: -1 })).toThrow(/--size -1 is invalid/);
    expect(() => openFileBackend(fresh(), { size: 0.5 })).toThrow(/--size 0.5 is invalid/);
    const path = fresh();
    const error = caught(() => openFileBackend(path, { size: Number.MAX_SAFE_INTEGER })); // beyond any ext4/tmpfs file
    expect((error as DstdError).code).toBe("E_OPEN");
    expect((error as Error).message).toContain(`cannot size to ${Number.MAX_SAFE_INTEGER} bytes`);
    expect(fs.existsSync(path)).toBe(false);
  });
});

describe("file backend: space and errors", () => {
  test("trim punches a hole that frees blocks and shows in extents", () => {
    const path = fresh();
    const b = openFileBackend(path, { size: 8 * MiB });
    b.write(0, new Uint8Array(4 * MiB).fill(5), false);
    b.flush();
    const before = allocated(path);
    expect(before).toBeGreaterThanOrEqual(4 * MiB);
    b.trim(MiB, 2 * MiB);
    expect(allocated(path)).toBeLessThanOrEqual(before - 2 * MiB);
    expect(b.extents(0, 8 * MiB)).toEqual([
      { length: MiB, hole: false, zero: false },
      { length: 2 * MiB, hole: true, zero: true },
      { length: MiB, hole: false, zero: false },
      { length: 4 * MiB, hole: true, zero: true },
    ]);
    b.zero(0, MiB, true); // may punch: frees too
    expect(allocated(path)).toBeLessThanOrEqual(before - 3 * MiB);
    b.close();
  });

  test("zero without a hole keeps the blocks allocated", () => {
    const path = fresh();
    const b = openFileBackend(path, { size: 4 * MiB });
    b.write(0, new Uint8Array(4 * MiB).fill(6), false);
    b.flush();
    const before = allocated(path);
    b.zero(0, 4 * MiB, false);
    expect(allocated(path)).toBe(before);
    const read = new Uint8Array(4 * MiB);
    b.read(0, read);
    expect(read.every((byte) => byte === 0)).toBe(true);
    b.close();
  });

  test.skipIf(!fs.existsSync("/dev/shm"))("on tmpfs (no ZERO_RANGE) zeroing falls back to written zeroes (needs /dev/shm)", () => {
    const shm = fs.mkdtempSync("/dev/shm/dstd-file-");
    try {
      const path = join(shm, "x.img");
      const b = openFileBackend(path, { size: 3 * MiB });
      b.write(0, new Uint8Array(3 * MiB).fill(7), false);
      b.zero(100, 2 * MiB + 5, false);
      const read = new Uint8Array(3 * MiB);
      b.read(0, read);
      expect([read[99], read[100], read[2 * MiB + 104], read[2 * MiB + 105]]).toEqual([7, 0, 0, 7]);
      expect(allocated(path)).toBeGreaterThanOrEqual(3 * MiB); // written, not punched
      b.close();
    } finally {
      fs.rmSync(shm, { recursive: true, force: true });
    }
  });

  test("I/O on a descriptor closed underneath fails with BackendError(EBADF), never success", () => {
    const b = openFileBackend(fresh(), { size: MiB });
    fs.closeSync(b.fd); // nothing opens a file between here and the checks below
    const operations: Array<[string, () => unknown]> = [
      ["read", () => b.read(4096, new Uint8Array(512))],
      ["write", () => b.write(4096, new Uint8Array(512), false)],
      ["flush", () => b.flush()],
      ["trim", () => b.trim(4096, 512)],
      ["write zeroes", () => b.zero(4096, 512, false)],
      ["block status", () => b.extents(4096, 512)],
    ];
    for (const [name, run] of operations) {
      const error = caught(run);
      expect(error).toBeInstanceOf(BackendError);
      expect((error as BackendError).errno).toBe(Errno.EBADF);
      expect((error as Error).message).toStartWith(name);
      if (name !== "flush") expect((error as Error).message).toContain("at offset 4096 length 512");
      expect((error as Error).message).toContain("bad file descriptor (EBADF)");
    }
    expect(caught(() => b.close())).toBeInstanceOf(BackendError); // close(2) fails too, reported once
    b.close();
  });

  test("resize after close never reaches the descriptor number, which another file may hold by then", async () => {
    const b = openFileBackend(fresh(), { size: MiB });
    const port = createLocalPort(b);
    await port.close();
    const other = fresh();
    fs.writeFileSync(other, new Uint8Array(8192).fill(1));
    const fd = fs.openSync(other, "r+");
    try {
      expect(fd).toBe(b.fd); // the number was reused
      expect((caught(() => b.resize(0)) as BackendError).errno).toBe(Errno.EBADF);
      expect(await new Promise<number>((resolve) => port.resize!(0, resolve))).toBe(Errno.EBADF);
      expect(fs.statSync(other).size).toBe(8192);
    } finally {
      fs.closeSync(fd);
    }
  });

  test("a file truncated under the backend fails reads with EIO instead of inventing zeroes", () => {
    const path = fresh();
    const b = openFileBackend(path, { size: 8192 });
    fs.truncateSync(path, 4096);
    const error = caught(() => b.read(2048, new Uint8Array(4096)));
    expect(error).toBeInstanceOf(BackendError);
    expect((error as BackendError).errno).toBe(Errno.EIO);
    expect((error as Error).message).toContain("hit end of file after 2048 bytes");
    b.close();
  });

  test("a failed fdatasync sticks: later flushes and writes fail with it (fsyncgate), reads go on; sync and on the I/O pool", async () => {
    // Linux reports a write-back error once and marks the pages clean: the fault is injected
    // at the fdatasync call, the one place dstd learns of it.
    const eio = () => Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO", errno: -5 });
    const [realSync, realAsync] = [fs.fdatasyncSync, fs.fdatasync];
    try {
      const b = openFileBackend(fresh(), { size: MiB });
      b.write(0, new Uint8Array(4096).fill(1), false);
      fs.fdatasyncSync = () => ((fs.fdatasyncSync = realSync), (() => { throw eio(); })());
      expect((caught(() => b.flush()) as BackendError).errno).toBe(Errno.EIO);
      // The kernel would now say "fine": dstd must not.
      const again = caught(() => b.flush()) as BackendError;
      expect(again.errno).toBe(Errno.EIO);
      expect(again.message).toMatch(/flush refused: an earlier flush .* failed.*until the export is restarted/);
      expect((caught(() => b.write(4096, new Uint8Array(4096), false)) as BackendError).errno).toBe(Errno.EIO);
      expect((caught(() => b.write(4096, new Uint8Array(4096), true)) as BackendError).errno).toBe(Errno.EIO);
      expect((caught(() => b.trim(0, 4096)) as BackendError).errno).toBe(Errno.EIO);
      expect((caught(() => b.zero(0, 4096, true)) as BackendError).errno).toBe(Errno.EIO);
      const back = new Uint8Array(4096);
      b.read(0, back);
      expect(back[0]).toBe(1);
      b.close();

      // A FUA write on the I/O pool whose fdatasync fails makes the later flush fail too.
      const c = openFileBackend(fresh(), { size: MiB });
      fs.fdatasync = ((fd: number, cb: (error: Error | null) => void) => ((fs.fdatasync = realAsync), queueMicrotask(() => cb(eio())))) as typeof fs.fdatasync;
      const fua = await new Promise<Error | null>((resolve) => c.writeAsync!(0, new Uint8Array(4096).fill(2), true, resolve));
      expect((fua as BackendError).errno).toBe(Errno.EIO);
      const later = await new Promise<Error | null>((resolve) => c.flushAsync!(resolve)).catch((error: Error) => error);
      expect(later).not.toBeNull();
      expect((caught(() => c.flushAsync!(() => {})) as BackendError).errno).toBe(Errno.EIO);
      c.close();
    } finally {
      [fs.fdatasyncSync, fs.fdatasync] = [realSync, realAsync];
    }
  });

  test("a read-only open really is read-only at the OS level", () => {
    const path = fresh();
    fs.writeFileSync(path, new Uint8Array(4096).fill(4));
    const b = openFileBackend(path, { readOnly: true });
    expect(caught(() => fs.writeSync(b.fd, new Uint8Array(1), 0, 1, 0))).toMatchObject({ code: "EBADF" });
    expect((caught(() => b.write(0, new Uint8Array(1), false)) as BackendError).errno).toBe(Errno.EROFS);
    expect(fs.readFileSync(path)).toEqual(Buffer.alloc(4096, 4));
    b.close();
  });
});
