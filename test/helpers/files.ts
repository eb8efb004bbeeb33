/**
 * @module test/helpers/files — test and benchmark data files.
 */
import { closeSync, openSync, writeSync } from "node:fs";
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
