/**
 * storage/tree/open.ts: a file leg's configured `size` against the file it finds. A mirror's
 * and a stripe's file legs may be larger (dstd resize grew them: mirror/grow.ts, stripe.ts) and
 * open at their size; a linear's may not (a larger leg would move every byte after it), not
 * even when that linear is itself a leg of a mirror — except its last leg (nothing follows it;
 * dstd resize grows it) and legs its layout record places (tree-layout.test.ts).
 */
import { afterAll, expect, test } from "bun:test";
import { truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TreeLegSpec, TreeNodeSpec } from "../../../src/config/types.ts";
import { openTree } from "../../../src/storage/tree/open.ts";
import { scratchDir } from "../../helpers/files.ts";

const MiB = 1024 * 1024;
const scratch = scratchDir("tree-open-sizes");
afterAll(() => scratch.remove());
const quiet = { info() {}, warn() {}, debug() {} };

function fileLeg(name: string, actual: number, configured: number): TreeLegSpec {
  const path = join(scratch.path, `${name}.img`);
  writeFileSync(path, new Uint8Array(0));
  truncateSync(path, actual);
  return { node: { kind: "file", path, sizeBytes: configured }, writeMostly: false, label: path };
}

const mirror = (legs: TreeLegSpec[]): TreeNodeSpec => ({ kind: "mirror", legs, readPolicy: "round-robin", assumeClean: true });

test("a mirror's file legs larger than their size (grown) open at their size", async () => {
  const port = await openTree(mirror([fileLeg("m0", 8 * MiB, 4 * MiB), fileLeg("m1", 8 * MiB, 4 * MiB)]), { log: quiet, lock: true });
  try {
    expect(port.size).toBe(7 * MiB); // 8 MiB less the 1 MiB metadata area
  } finally {
    await port.close();
  }
});

test("a linear's file leg larger than its size is refused, also under a mirror, unless it is the last; a stripe's opens at its size (the stripe takes whole rows of its smallest leg)", async () => {
  const linear = [fileLeg("linear0", 8 * MiB, 4 * MiB), fileLeg("linear1", 4 * MiB, 4 * MiB)];
  await expect(openTree({ kind: "linear", legs: linear }, { log: quiet, lock: true })).rejects.toThrow(/exists with size 8388608 bytes but --size asks for 4194304/);
  const stripe = await openTree({ kind: "stripe", legs: [fileLeg("stripe0", 8 * MiB, 4 * MiB), fileLeg("stripe1", 6 * MiB, 4 * MiB)], chunkBytes: 65536 }, { log: quiet, lock: true });
  try {
    expect(stripe.size).toBe(12 * MiB); // 2 legs × 6 MiB: a grow that reached one leg only is not served
  } finally {
    await stripe.close();
  }
  const nested = mirror([
    { node: { kind: "linear", legs: [fileLeg("n0", 8 * MiB, 4 * MiB), fileLeg("n0b", 4 * MiB, 4 * MiB)] }, writeMostly: false, label: "linear(n0, n0b)" },
    fileLeg("n1", 8 * MiB, 4 * MiB),
  ]);
  // The linear leg cannot be opened; a new mirror needs every leg.
  await expect(openTree(nested, { log: quiet, lock: true })).rejects.toThrow(/leg 0 is unreachable/);
  const lastGrown = await openTree({ kind: "linear", legs: [fileLeg("last0", 4 * MiB, 4 * MiB), fileLeg("last1", 6 * MiB, 4 * MiB)] }, { log: quiet, lock: true });
  try {
    expect(lastGrown.size).toBe(10 * MiB);
  } finally {
    await lastGrown.close();
  }
});
