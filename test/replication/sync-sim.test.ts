/**
 * @module test/replication/sync-sim.test — runs the initial-sync simulation (sync-sim.ts) over
 * many seeds. docs/replication.md §10.1.
 *   bun test test/replication/sync-sim.test.ts                    # SIM_SEEDS (default 200)
 *   SIM_SEEDS=20000 SIM_SEED_START=5000 bun test test/replication/sync-sim.test.ts
 *   SIM_SEED=1234 bun test test/replication/sync-sim.test.ts      # one seed, verbose trace
 */
import { expect, test } from "bun:test";
import { withSeed } from "./sim-trace.ts";
import { runSyncSeed, type SyncSimStats } from "./sync-sim.ts";

const single = process.env.SIM_SEED;
const seeds = Number(process.env.SIM_SEEDS ?? 200);
const start = Number(process.env.SIM_SEED_START ?? 1);

if (single !== undefined) {
  test(`sync sim seed ${single}`, async () => {
    console.log(await runSyncSeed(Number(single), true));
  }, 600_000);
} else {
  test(`sync sim: ${seeds} seeds from ${start}`, async () => {
    const total: Record<string, number> = {};
    let sparse = 0;
    const began = performance.now();
    for (let seed = start; seed < start + seeds; seed++) {
      const stats: SyncSimStats = await withSeed("sync sim", seed, `SIM_SEED=${seed} bun test test/replication/sync-sim.test.ts`, () => runSyncSeed(seed));
      for (const [k, v] of Object.entries(stats)) total[k] = (total[k] ?? 0) + Number(v);
      if (stats.moved < stats.diskSize) sparse++;
    }
    console.log(`sync sim: ${seeds} seeds in ${((performance.now() - began) / 1000).toFixed(1)} s`, total, `copies smaller than the disk: ${sparse}`);
    // The swarm must reach every path, or it is not testing them.
    if (seeds >= 200) {
      for (const key of ["resumes", "secondaryCrashes", "failedAnswers", "prefixChecks", "overflowed", "releasedBefore", "resumedInSlice"]) expect(total[key] ?? 0).toBeGreaterThan(0);
      expect(sparse).toBeGreaterThan(0);
    }
  }, 1_800_000);
}
