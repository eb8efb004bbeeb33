/**
 * @module test/backend/block-device.test — what only the block-device backend promises: size
 * from BLKGETSIZE64 (stat says 0), 4096 preferred / 512 logical block size, an exclusive
 * read-write claim, discards that reach the backing storage, and clear errors for non-devices.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openBlockDevice } from "../../src/storage/local/block-device.ts";
import { Errno } from "../../src/lib/errno.ts";
import { DstdError } from "../../src/lib/errors.ts";
import { attachLoop, detachLoop, loopUnavailable } from "./loop.ts";

const MiB = 1 << 20;

describe("block device backend: refusals without a device", () => {
  test("a regular file says to use --file; a character device is not a block device", () => {
    const dir = fs.mkdtempSync(join(tmpdir(), "dstd-dev-"));
    try {
      const path = join(dir, "plain.img");
      fs.writeFileSync(path, new Uint8Array(4096));
      expect(() => openBlockDevice(path)).toThrow(`${path} is a regular file, not a block device; use --file to export it`);
      expect(() => openBlockDevice("/dev/null")).toThrow("/dev/null is not a block device");
      expect(() => openBlockDevice(join(dir, "missing"))).toThrow(/cannot open .*no such file or directory \(ENOENT\)/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(loopUnavailable !== null)(loopUnavailable ?? "block device backend on a loop device", () => {
  let dir = "";
  let backing = "";
  let device = "";
  beforeAll(() => {
    dir = fs.mkdtempSync(join(tmpdir(), "dstd-dev-"));
    backing = join(dir, "backing.img");
    fs.writeFileSync(backing, "");
    fs.truncateSync(backing, 8 * MiB + 512);
    device = attachLoop(backing);
  });
  afterAll(() => {
    if (device !== "") detachLoop(device);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("size comes from BLKGETSIZE64, not stat; 4096 preferred over a 512-byte sector", () => {
    expect(fs.statSync(device).size).toBe(0); // why stat cannot be trusted for devices
    const b = openBlockDevice(device);
    expect([b.kind, b.size, b.blockSize, b.logicalBlockSize, b.description]).toEqual([
      "device",
      8 * MiB + 512,
      4096,
      512,
      device,
    ]);
    b.close();
  });

  test("a read-write open claims the device exclusively; read-only opens still work", () => {
    const first = openBlockDevice(device);
    let error: unknown;
    try {
      openBlockDevice(device).close();
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(DstdError);
    expect((error as DstdError).errno).toBe(Errno.EBUSY);
    expect((error as Error).message).toContain("it is in use");
    const reader = openBlockDevice(device, { readOnly: true });
    expect(reader.readOnly).toBe(true);
    reader.close();
    first.close();
    openBlockDevice(device).close(); // released on close
  });

  test("trim and zero-with-punch reach the backing file and free its blocks", () => {
    const b = openBlockDevice(device);
    b.write(0, new Uint8Array(6 * MiB).fill(8), false);
    b.flush();
    const before = fs.statSync(backing).blocks * 512;
    expect(before).toBeGreaterThanOrEqual(6 * MiB);
    b.trim(MiB + 100, 2 * MiB); // unaligned edges are left alone, the interior is discarded
    b.zero(4 * MiB, MiB, true);
    b.flush();
    expect(fs.statSync(backing).blocks * 512).toBeLessThanOrEqual(before - 2 * MiB);
    const edge = new Uint8Array(1024);
    b.read(MiB, edge);
    expect([edge[99], edge[511], edge[512]]).toEqual([8, 8, 0]);
    b.close();
  });

  test("extents report the whole range as data", () => {
    const b = openBlockDevice(device, { readOnly: true });
    expect(b.extents(512, 3 * MiB)).toEqual([{ length: 3 * MiB, hole: false, zero: false }]);
    b.close();
  });
});
