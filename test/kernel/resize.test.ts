/**
 * @module test/kernel/resize — the resize hook's plumbing on a host without the nbd driver:
 * the Worker starts, opens its own netlink socket and reports the kernel's answer back as a
 * DstdError (here: no nbd family). Where the worker module is looked for, in source runs and
 * in compiled executables. The size change itself runs in the VM (test/vm/guest-probe.ts,
 * test/vm/guest/attach.sh).
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { DstdError } from "../../src/lib/errors.ts";
import { resizeDevice, workerUrls } from "../../src/kernel/resize.ts";

const noNbd = !existsSync("/sys/module/nbd");

describe("resizeDevice (worker)", () => {
  test.skipIf(!noNbd)("no nbd driver: the worker's netlink lookup fails and the error comes back named", async () => {
    const error = await resizeDevice({ index: 0, sizeBytes: 1 << 20, blockSize: 4096, backendId: "x", timeoutMs: 60_000 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DstdError);
    expect((error as DstdError).code).toBe("E_NO_NBD");
    expect((error as DstdError).message).toContain("modprobe nbd");
  });
});

describe("workerUrls", () => {
  test("from source: the module next to kernel/resize.ts", () => {
    expect(workerUrls("file:///repo/src/kernel/resize.ts", "/repo/src/kernel/resize.ts")).toEqual(["file:///repo/src/kernel/resize-worker.ts"]);
  });

  test("compiled: dstd's layout (entry points under src/) first, then the repository-root layout", () => {
    expect(workerUrls("file:///$bunfs/root/dstd", "/$bunfs/root/dstd")).toEqual([
      "/$bunfs/root/kernel/resize-worker.ts",
      "/$bunfs/root/src/kernel/resize-worker.ts",
    ]);
  });
});
