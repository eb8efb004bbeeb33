/**
 * @module test/fuzz/dst.fuzz — runs the DST parser fuzzer (test/fuzz/dst-fuzz.ts).
 * Default 20,000 inputs from a fresh random seed; the seed is printed on failure.
 *   FUZZ_ITERATIONS=1000000 bun test test/fuzz            # long run
 *   FUZZ_SEED=1234 FUZZ_ITERATIONS=5000 bun test test/fuzz  # replay a failure
 */
import { expect, test } from "bun:test";
import { runDstFuzz } from "./dst-fuzz.ts";

const iterations = Number(process.env.FUZZ_ITERATIONS ?? 20_000);
const seed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));

test(
  `DST parsers survive ${iterations} fuzz inputs (seed ${seed})`,
  () => {
    Bun.gc(true);
    const heapBefore = process.memoryUsage().heapUsed;
    let stats;
    try {
      stats = runDstFuzz(iterations, seed);
    } catch (error) {
      console.error(`DST fuzz seed: ${seed}`);
      throw error;
    }
    Bun.gc(true);
    const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
    // The generator must reach every outcome, or the fuzzer is not testing anything.
    if (iterations >= 10_000) {
      expect(stats.frames).toBeGreaterThan(iterations / 10);
      expect(stats.rejected).toBeGreaterThan(iterations / 10);
      expect(stats.hellos).toBeGreaterThan(100);
      expect(stats.welcomes).toBeGreaterThan(10);
    }
    // Nothing outlives an input: the heap does not grow with the number of iterations.
    expect(heapGrowth).toBeLessThan(64 * 1024 * 1024);
  },
  { timeout: Math.max(60_000, iterations * 2) },
);
