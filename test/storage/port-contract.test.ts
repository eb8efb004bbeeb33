/**
 * @module test/storage/port-contract.test — the asynchronous port contract (port-contract.ts)
 * against storage/local/port.ts: a memory disk (every request completes inline: the canary
 * showing the suite holds for a port known to be right, before it judges the RBD port), and
 * a sparse file whose large requests and flushes run on Bun's I/O thread pool (completions
 * arrive later, in any order), with the default threshold and with every READ/WRITE pooled.
 */
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { openFileBackend } from "../../src/storage/local/file.ts";
import { ASYNC_IO_FROM, createLocalPort } from "../../src/storage/local/port.ts";
import { completesInline } from "../../src/storage/port.ts";
import { portContract } from "./port-contract.ts";

portContract("memory", {
  open: async ({ readOnly }) => createLocalPort(createMemoryBackend(16 << 20, { readOnly }), { readOnly }),
  resizes: true,
});

const dir = fs.mkdtempSync(join(tmpdir(), "dstd-port-file-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let files = 0;
let lastPath = "";

/** A fresh 16 MiB sparse file; a read-only port gets a read-only descriptor on it. */
function filePort(readOnly: boolean, asyncFrom: number = ASYNC_IO_FROM) {
  const path = (lastPath = join(dir, `disk-${files++}.img`));
  openFileBackend(path, { size: 16 << 20 }).close();
  return createLocalPort(openFileBackend(path, { readOnly }), { readOnly, asyncFrom });
}

portContract("file (synchronous, the default)", {
  open: async ({ readOnly }) => filePort(readOnly, Infinity),
  resizes: true,
});

portContract("file (large requests on the I/O thread pool)", {
  open: async ({ readOnly }) => filePort(readOnly),
  resizes: true,
});

portContract("file (every read and write on the I/O thread pool)", {
  open: async ({ readOnly }) => filePort(readOnly, 1),
  resizes: true,
});

describe("local file port on the I/O thread pool", () => {
  test("small requests complete inline, large ones later; a memory port is synchronous", async () => {
    const port = filePort(false);
    expect(port.synchronous).toBe(false);
    expect(completesInline(port, ASYNC_IO_FROM - 1)).toBe(true);
    expect(completesInline(port, ASYNC_IO_FROM)).toBe(false);
    let small = -1;
    port.write(0, new Uint8Array(4096).fill(1), false, (errno) => (small = errno));
    expect(small).toBe(0);
    let large = -1;
    const done = new Promise<void>((resolve) =>
      port.write(0, new Uint8Array(ASYNC_IO_FROM).fill(2), false, (errno) => {
        large = errno;
        resolve();
      }),
    );
    expect(large).toBe(-1);
    await done;
    expect(large).toBe(0);
    await port.close();
    const memory = createLocalPort(createMemoryBackend(1 << 20));
    expect(memory.synchronous).toBe(true);
    expect(createLocalPort(openFileBackend(join(dir, "never.img"), { size: 1 << 20 })).synchronous).toBe(true);
  });

  test("a FLUSH issued after write completions covers them; resize waits for writes in flight", async () => {
    const port = filePort(false);
    const writes = Array.from({ length: 8 }, (_, i) =>
      new Promise<number>((resolve) => port.write(i * (1 << 20), new Uint8Array(1 << 20).fill(i + 1), false, resolve)),
    );
    // A shrink issued while 8 MiB of writes run must not run under them (a pwrite past the
    // new end would grow the file again).
    const resized = new Promise<number>((resolve) => port.resize!(4 << 20, resolve));
    expect(await Promise.all(writes)).toEqual(Array(8).fill(0));
    expect(await resized).toBe(0);
    expect(port.size).toBe(4 << 20);
    expect(fs.statSync(lastPath).size).toBe(4 << 20);
    expect(await new Promise<number>((resolve) => port.flush(resolve))).toBe(0);
    const back = new Uint8Array(1 << 20);
    expect(await new Promise<number>((resolve) => port.read(3 << 20, back, resolve))).toBe(0);
    expect(back.every((b) => b === 4)).toBe(true);
    await port.close();
  });
});
