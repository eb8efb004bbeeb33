/**
 * @module test/helpers/files — test and benchmark data files, and scratch folders that
 * tests remove again (a test run leaves nothing in the temporary directory).
 */
import { afterEach } from "bun:test";
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomFillSync } from "node:crypto";

const MiB = 1024 * 1024;

/** A file of `size` random bytes (no all-zero 1 MiB block, so every block travels as data). */
export function writeRandomFile(path: string, size: number): void {
  const fd = openSync(path, "w");
  const buffer = Buffer.allocUnsafe(16 * MiB);
  try {
    for (let at = 0; at < size; at += buffer.length) {
      const n = Math.min(buffer.length, size - at);
      randomFillSync(buffer, 0, n);
      writeSync(fd, buffer, 0, n, at);
    }
  } finally {
    closeSync(fd);
  }
}

/** `length` bytes of the file at `path` from `offset` (zeros past its end). */
export function readFileAt(path: string, offset: number, length: number): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const out = new Uint8Array(length);
    readSync(fd, out, 0, length, offset);
    return out;
  } finally {
    closeSync(fd);
  }
}

/** A fresh folder under the temporary directory; call `remove()` in afterAll. */
export function scratchDir(tag: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `dstd-${tag}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * Fresh folders for one test at a time: call at module level; each call of the returned
 * function makes a folder, and every folder made during a test is removed after it.
 */
export function scratchDirsPerTest(tag: string): () => string {
  const made: string[] = [];
  afterEach(() => {
    for (const path of made.splice(0)) rmSync(path, { recursive: true, force: true });
  });
  return () => {
    const path = mkdtempSync(join(tmpdir(), `dstd-${tag}-`));
    made.push(path);
    return path;
  };
}

/**
 * A small tmpfs mounted at `dir` (made here) of `size` (mount's syntax: "12m"), so that a test
 * can fill a file system and get real ENOSPC from the kernel: null once mounted, or why it
 * cannot be (not root, mount refused) for the test to skip with. `unmountTmpfs` undoes it.
 */
export function mountTmpfs(dir: string, size: string): string | null {
  if (process.getuid?.() !== 0) return "mounting a small tmpfs needs root";
  mkdirSync(dir, { recursive: true });
  const mounted = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir], { stderr: "pipe" });
  return mounted.exitCode === 0 ? null : `mount -t tmpfs failed: ${mounted.stderr.toString().trim()}`;
}

export function unmountTmpfs(dir: string): void {
  Bun.spawnSync(["umount", dir]);
}
