/**
 * @module test/backend/backend.test — runs the shared Backend contract against every backend
 * (memory, sparse file, loop block device) and checks openBackend's dispatch.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openBlockDevice } from "../../src/storage/local/block-device.ts";
import { openFileBackend } from "../../src/storage/local/file.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { openBackend } from "../../src/storage/open.ts";
import { DstdError } from "../../src/lib/errors.ts";
import { runBackendContract } from "./contract.ts";
import { attachLoop, detachLoop, loopUnavailable } from "./loop.ts";

const MiB = 1 << 20;
/** Odd on purpose: the last chunk/block is partial. */
const ODD_SIZE = 5 * MiB + 123;

runBackendContract("memory", ({ readOnly }) => createMemoryBackend(ODD_SIZE, { readOnly }));

/** Made on first use, so a run whose filter selects no test leaves nothing behind. */
let fileDir: string | undefined;
afterAll(() => {
  if (fileDir !== undefined) rmSync(fileDir, { recursive: true, force: true });
});
let fileCount = 0;
runBackendContract(
  "file",
  ({ readOnly }) => {
    fileDir ??= mkdtempSync(join(tmpdir(), "dstd-backend-file-"));
    const path = join(fileDir, `export-${fileCount++}.img`);
    if (!readOnly) return openFileBackend(path, { size: ODD_SIZE });
    openFileBackend(path, { size: ODD_SIZE }).close();
    return openFileBackend(path, { readOnly: true });
  },
);

describe.skipIf(loopUnavailable !== null)(loopUnavailable ?? "block device on a loop device", () => {
  let dir = "";
  let device = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "dstd-backend-dev-"));
    const backing = join(dir, "backing.img");
    writeFileSync(backing, "");
    truncateSync(backing, 5 * MiB + 4096);
    device = attachLoop(backing);
  });
  // Detach in the same describe that attached, so no filter can skip one without the other.
  afterAll(() => {
    if (device !== "") detachLoop(device);
    rmSync(dir, { recursive: true, force: true });
  });
  runBackendContract(
    "device",
    ({ readOnly }) => {
      if (readOnly) return openBlockDevice(device, { readOnly: true });
      const backend = openBlockDevice(device);
      backend.zero(0, backend.size, true); // every test starts from a zeroed device
      return backend;
    },
    undefined,
    // Loop turns BLKDISCARD into a hole punch in the backing file, so whole sectors read as
    // zeroes after trim; a real device need not (trim contents are unspecified, proto.md).
    { trimZeroGranularity: 512, reportsHoles: false },
  );
});

describe("openBackend", () => {
  test("memory", () => {
    const backend = openBackend({ kind: "memory", size: 3 * MiB }, true);
    expect([backend.kind, backend.size, backend.readOnly]).toEqual(["memory", 3 * MiB, true]);
    backend.close();
  });

  test("file: creates with a size, then reopens read-only with its size", () => {
    const dir = mkdtempSync(join(tmpdir(), "dstd-open-"));
    try {
      const path = join(dir, "disk.img");
      const created = openBackend({ kind: "file", path, size: 2 * MiB }, false);
      expect([created.kind, created.size, created.readOnly, created.description]).toEqual(["file", 2 * MiB, false, path]);
      created.close();
      const reopened = openBackend({ kind: "file", path }, true);
      expect([reopened.size, reopened.readOnly]).toEqual([2 * MiB, true]);
      reopened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("device: a regular file is refused with a hint to use --file", () => {
    const dir = mkdtempSync(join(tmpdir(), "dstd-open-"));
    try {
      const path = join(dir, "disk.img");
      writeFileSync(path, new Uint8Array(4096));
      expect(() => openBackend({ kind: "device", path }, false)).toThrow(/use --file/);
      expect(() => openBackend({ kind: "device", path }, false)).toThrow(DstdError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
