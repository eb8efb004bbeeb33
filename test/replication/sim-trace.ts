/**
 * @module test/replication/sim-trace — the bounded trace the replication simulations keep
 * (replication-sim.ts, sync-sim.ts, cluster-sim.ts): lines stamped with the simulated tick,
 * the last `keep` of them shown with a failure, every line printed when verbose; and a Log
 * that writes into it for the real code under test.
 */
import { Prng } from "../../src/lib/prng.ts";
import type { SimClock } from "../sim/sim-clock.ts";

export interface SimTrace {
  log(line: string): void;
  /** A Log for the code under test, its lines prefixed with `who`. */
  simLog(who: string): { error(m: string): void; warn(m: string): void; info(m: string): void; debug(m: string): void };
  /** The last `n` lines, for a failure message. */
  tail(n: number): string;
}

export function simTrace(clock: SimClock, verbose: boolean, keep = 200): SimTrace {
  const lines: string[] = [];
  const log = (line: string) => {
    lines.push(`[${clock.ticks}] ${line}`);
    if (lines.length > keep) lines.shift();
    if (verbose) console.log(`[${clock.ticks}] ${line}`);
  };
  return {
    log,
    simLog: (who) => ({
      error: (m) => log(`${who} error: ${m}`),
      warn: (m) => log(`${who} warn: ${m}`),
      info: (m) => log(`${who} info: ${m}`),
      debug: (m) => log(`${who} debug: ${m}`),
    }),
    tail: (n) => lines.slice(-n).join("\n"),
  };
}

/**
 * Run one seed so that any error names it: an error the simulation did not classify (a
 * runaway, a throw from the code under test) gets the seed and its replay line added.
 */
export async function withSeed<T>(sim: string, seed: number, replay: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (message.includes(`seed ${seed}`)) throw error;
    throw new Error(`${sim} seed ${seed}: ${message}\n  replay: ${replay}`, { cause: error });
  }
}

/**
 * The random streams of a replication or sync simulation seed, split off the seed in this order
 * (changing it changes every seed's world). `disk` and `fileFaults` serve the I/O errors and the
 * operator's restarts over them: a seed that draws no error runs as before they existed.
 */
export function seedStreams(seed: number): { files: Prng; port: Prng; work: Prng; faults: Prng; disk: Prng; fileFaults: Prng } {
  const root = new Prng(seed);
  const next = () => new Prng(root.next());
  return { files: next(), port: next(), work: next(), faults: next(), disk: next(), fileFaults: next() };
}
