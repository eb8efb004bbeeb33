/**
 * `dstd copy`'s memory bound (issue 10 item 5): a copy of 512 MiB into a real `dstd export`
 * over loopback keeps the copy's peak resident size (the kernel's maxrss of the process)
 * under 256 MiB, as the copy's own VmHWM (see the test for why not the rusage of the child).
 * Before the WRITE buffer pool (client/write-pool.ts, engine/lease.ts) and
 * the memory budget (client/memory-budget.ts) the same copy peaked at 350–590 MiB, growing
 * with the amount copied. Not timed: only the bound and the data are checked.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeRandomFile } from "../helpers/files.ts";
import { blockHashes, ensureBinary, killChildren, MiB, startCopy, startExport, tempDir, type RunningExport } from "../fault/harness.ts";

const dir = tempDir("copy-memory");
const size = 512 * MiB;
const source = join(dir.path, "source.img");
const target = join(dir.path, "target.img");
let exp: RunningExport;

beforeAll(async () => {
  ensureBinary();
  writeRandomFile(source, size);
  exp = await startExport({ file: target, size });
});
afterAll(async () => {
  await killChildren();
  dir.remove();
});

test("a 512 MiB copy into an export peaks under 256 MiB and arrives intact", async () => {
  const copy = startCopy(source, `dst://127.0.0.1:${exp.port}/disk`, undefined, ["--log-level", "debug"]);
  const result = await copy.result;
  expect(result.output).not.toContain("failed");
  expect(result.exitCode).toBe(0);
  // The copy's own VmHWM, which it reports at the end. Not copy.proc.resourceUsage().maxRSS:
  // Bun.spawn starts children with vfork, and Linux carries the parent's peak into the
  // child's ru_maxrss at exec, so after this test process grew (the fault suite before it)
  // the copy "peaked" at 331–415 MiB whatever it used itself (src/cli/copy.ts ownPeakRss).
  const reported = /peak RSS (\d+) MiB/.exec(result.output);
  expect(reported).not.toBeNull();
  const peak = Number(reported![1]) * MiB;
  console.log(`dstd copy of 512 MiB: peak RSS ${(peak / MiB).toFixed(0)} MiB (its own VmHWM)`);
  if (peak >= 256 * MiB) console.log(result.output);
  expect(peak).toBeLessThan(256 * MiB);
  expect(blockHashes(target, size, 16 * MiB)).toEqual(blockHashes(source, size, 16 * MiB));
}, 300_000);
