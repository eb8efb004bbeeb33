/**
 * bench/harness.ts `timed`: the peak RSS it reports is the child's own. Bun.spawn starts
 * children with vfork, and Linux carries the parent's peak into the child's wait4 ru_maxrss at
 * exec, so the rusage of a small command started from a large process reports the parent's
 * peak (see src/cli/copy.ts ownPeakRss). The bench compares dstd's peak with nbdcopy's, both
 * started from the bench process: that comparison is only fair if each is its own.
 */
import { afterAll, expect, test } from "bun:test";
import { tmpdir } from "node:os";
import { MiB, Run, timed } from "../../bench/harness.ts";

const run = new Run(tmpdir(), "dstd-harness-test-");
afterAll(() => run.cleanup());

test("timed reports a small child's own peak, not its large parent's", async () => {
  // Make this process's peak large (every page touched), then run a small command from it.
  const ballast = new Uint8Array(384 * MiB).fill(1);
  const t = await timed(run, ["sleep", "0.5"], 30);
  expect(ballast[ballast.length - 1]).toBe(1); // keep the ballast alive until after the spawn
  console.log(`sleep 0.5 from a ≥ 384 MiB parent: peak RSS ${t.maxRssMiB?.toFixed(1)} MiB`);
  expect(t.maxRssMiB).not.toBeNull();
  expect(t.maxRssMiB!).toBeLessThan(64);
  expect(t.maxRssMiB!).toBeGreaterThan(0);
}, 60_000);

test("timed follows a child's peak as it grows", async () => {
  // A child that grows to ~200 MiB resident and holds it for a while.
  const script = "const b = new Uint8Array(200 * 1024 * 1024).fill(7); await Bun.sleep(400); console.log(b[5]);";
  const t = await timed(run, [process.execPath, "-e", script], 60);
  console.log(`a child holding 200 MiB: peak RSS ${t.maxRssMiB?.toFixed(1)} MiB`);
  expect(t.maxRssMiB!).toBeGreaterThan(200);
}, 60_000);
