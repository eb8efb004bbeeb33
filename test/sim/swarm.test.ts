/**
 * The simulation swarm (VOPR-style): SIM_SEEDS seeds (default 10,000), each a whole run of the
 * real client engine and the real export over a seeded faulty network and a crashing disk,
 * with every invariant of checkers.ts checked throughout. A failure prints the seed, the
 * invariant, the command that replays it exactly and the end of its trace.
 *
 *   bun test test/sim/swarm.test.ts                        # 10,000 seeds (CI)
 *   SIM_SEED=1234 bun test test/sim/swarm.test.ts          # replay one seed, verbose trace
 *   SIM_SEEDS=200000 SIM_SEED_START=1000001 bun test test/sim/swarm.test.ts   # long run
 *
 * Coverage marks: a big enough run must reach every recovery path at least once (fencing,
 * dedupe, replay, replay failure, auto-flush, keepalive, budget failures...), so the swarm
 * cannot silently stop exercising one.
 */
import { describe, expect, test } from "bun:test";
import { runSeed, type SeedResult } from "./swarm.ts";

const single = process.env.SIM_SEED;
const seeds = Number(process.env.SIM_SEEDS ?? 10_000);
const first = Number(process.env.SIM_SEED_START ?? 1);
// Seeds per test, each allowed 600 s of wall time: small enough that a box shared with other
// work (2 cores, many test suites) does not time a batch out; CI has the cores to itself.
const BATCH = 250;

function report(result: SeedResult): string {
  const why = result.violation?.message ?? (result.error instanceof Error ? (result.error.stack ?? result.error.message) : String(result.error));
  return [
    `simulation seed ${result.seed} failed: ${why}`,
    `reproduce: SIM_SEED=${result.seed} bun test test/sim/swarm.test.ts`,
    `trace (last ${result.trace.length} events):`,
    ...result.trace.map((line) => `  ${line}`),
  ].join("\n");
}

if (single !== undefined) {
  test(`seed ${single}`, async () => {
    const result = await runSeed(Number(single), { verbose: true });
    if (!result.ok) throw new Error(report(result));
    console.log(`seed ${single} passed: ${JSON.stringify(result.stats)}\ncoverage ${JSON.stringify(result.coverage)}`);
  });
} else {
  describe(`swarm: ${seeds} seeds from ${first}`, () => {
    const coverage: Record<string, number> = {};
    let ran = 0;
    let elapsedMs = 0;
    let cpuMs = 0;
    for (let start = first; start < first + seeds; start += BATCH) {
      const end = Math.min(first + seeds, start + BATCH);
      test(`seeds ${start}..${end - 1}`, async () => {
        const began = performance.now();
        const cpuBefore = process.cpuUsage();
        const failures: SeedResult[] = [];
        for (let seed = start; seed < end; seed++) {
          const result = await runSeed(seed);
          for (const [mark, n] of Object.entries(result.coverage)) coverage[mark] = (coverage[mark] ?? 0) + n;
          if (!result.ok) failures.push(result);
          if (failures.length >= 5) break;
        }
        ran += end - start;
        elapsedMs += performance.now() - began;
        const cpu = process.cpuUsage(cpuBefore);
        cpuMs += (cpu.user + cpu.system) / 1000;
        if (failures.length > 0) {
          const others = failures.slice(1).map((f) => `${f.seed} (${f.violation?.invariant ?? "error"})`);
          throw new Error(report(failures[0]!) + (others.length > 0 ? `\nalso failing: ${others.join(", ")}` : ""));
        }
      }, 600_000);
    }
    test("every recovery path was exercised", () => {
      // Wall time depends on what else runs on the machine; CPU time (this process) less so.
      const perCpuSecond = ((ran / cpuMs) * 1000).toFixed(0);
      console.log(`swarm: ${ran} seeds in ${(elapsedMs / 1000).toFixed(1)} s, ${(cpuMs / 1000).toFixed(1)} CPU-s (${((ran / elapsedMs) * 1000).toFixed(0)} seeds/s, ${perCpuSecond} seeds per CPU-second)`);
      console.log(`coverage: ${JSON.stringify(coverage)}`);
      if (ran < 1_000) return; // too few seeds to demand every path
      const marks = ["fenced", "takeovers", "duplicates", "replayFailures", "timeouts", "eio", "replays", "autoFlushes", "keepaliveFailures", "reconnects", "staleReplies", "keyedSeeds", "keyedReconnects", "intruders", "resumesRefused", "lateConnects", "nbdRequests", "nbdErrors"];
      // Late handshakes are rarer (~25 in the 10,000 CI seeds): demanded from 5,000 seeds on.
      if (ran >= 5_000) marks.push("staleResumes");
      for (const mark of marks) {
        expect({ mark, count: coverage[mark] ?? 0 }).not.toEqual({ mark, count: 0 });
      }
    });
  });
}
