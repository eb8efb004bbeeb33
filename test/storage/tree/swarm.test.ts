/**
 * The storage-tree swarm (docs/tree.md "Simulation"): TREE_SEEDS seeds (2,000 by default: what
 * fits ~30 s on the 2-core box; a seed costs ~12 ms of CPU) of random trees over simulated
 * legs with cuts, slow legs, node crashes and online growth of root mirrors, stripes and linear
 * nodes, each checked against the reference model; then REGRESSION_SEEDS.
 * TREE_SEED=n replays one seed; TREE_SEED_START moves the range; TREE_SEEDS=10000 is the long run.
 */
import { expect, test } from "bun:test";
import { runTreeSeed, type SeedResult } from "./swarm.ts";

const single = process.env.TREE_SEED;
const count = Number(process.env.TREE_SEEDS ?? 2_000);
const start = Number(process.env.TREE_SEED_START ?? 1);

/**
 * Seeds beyond the default range that once failed, run every time: 998140 (an old life's
 * probe, after a node crash, counted as a request to a suspended leg: a crashed node's timers
 * now die with it); 877 (a disk of another mirror put in a suspended leg's slot decided the
 * reopen by its own generation: mirror/assemble.ts now takes the identity most legs hold);
 * 2114583 (the checker: a refused leg down when the reopen probed it, back up by its end, is
 * absent, not "reopened").
 */
const REGRESSION_SEEDS = [998140, 877, 2114583];

if (single !== undefined) {
  test(`tree sim seed ${single}`, async () => {
    const result = await runTreeSeed(Number(single));
    console.log(JSON.stringify(result));
  }, 600_000);
} else {
  test(`regression seeds ${REGRESSION_SEEDS.join(", ")}`, async () => {
    for (const seed of REGRESSION_SEEDS) await runTreeSeed(seed);
  }, 60_000);

  test(`${count} seeds of random trees over failing legs keep every acknowledged write`, async () => {
    const started = performance.now();
    const totals: Record<string, number> = {};
    const shapes: Record<string, number> = {};
    const add = (r: SeedResult) => {
      shapes[r.shape] = (shapes[r.shape] ?? 0) + 1;
      for (const [k, v] of Object.entries({ ops: r.ops, failed: r.failed, degradations: r.degradations, resyncedBytes: r.resyncedBytes, ...r.marks })) totals[k] = (totals[k] ?? 0) + v;
    };
    for (let seed = start; seed < start + count; seed++) add(await runTreeSeed(seed));
    const seconds = (performance.now() - started) / 1000;
    console.log(`tree sim: ${count} seeds in ${seconds.toFixed(1)} s; shapes ${JSON.stringify(shapes)}; ${JSON.stringify(totals)}`);
    // Coverage marks: a swarm that stopped reaching a path fails here.
    if (count >= 1000) {
      expect(totals.degradations!).toBeGreaterThan(count / 20);
      expect(totals.resyncedBytes!).toBeGreaterThan(0);
      expect(totals.crashes!).toBeGreaterThan(count / 20);
      expect(totals.reopenRefused!).toBeGreaterThan(0);
      expect(totals.failed!).toBeGreaterThan(0);
      expect(totals.grows!).toBeGreaterThan(count / 20); // mirrors and stripes grown online (mirror/grow.ts, stripe.ts)
      expect(totals.stripeGrows!).toBeGreaterThan(count / 100);
      expect(totals.linearGrows!).toBeGreaterThan(count / 100);
      expect(totals.grownWhileStopped!).toBeGreaterThan(count / 20); // a linear's inner leg grew while the node was stopped
      expect(totals.nestedGrows!).toBeGreaterThan(count / 200); // through mirrors and stripes under the root
      expect(totals.regionsDoubled!).toBeGreaterThan(count / 100); // grows past what a mirror's bitmaps describe (mirror/grow.ts)
      expect(totals.growsFailed!).toBeGreaterThan(0);
      expect(totals.suspends!).toBeGreaterThan(count / 20); // legs held out by the operator (mirror/suspend.ts)
      expect(totals.holdsAcrossCrash!).toBeGreaterThan(0);
      expect(totals.replaced!).toBeGreaterThan(count / 200); // held legs replaced by blank disks (mirror/leg-change.ts)
      // Refused legs resumed by the operator (mirror/suspend.ts judgeRepaired): unrepaired they stay refused, repaired they rejoin.
      expect(totals.refusedStayed!).toBeGreaterThan(0);
      expect(totals.repairedResumes!).toBeGreaterThan(count / 100);
      expect(totals.refusedRejoined!).toBeGreaterThan(count / 100);
      expect(totals.refusedAcrossCrash!).toBeGreaterThan(0);
      for (const shape of ["linear", "stripe", "mirror", "tree"]) expect(shapes[shape] ?? 0).toBeGreaterThan(count / 20);
    }
  }, 600_000);
}
