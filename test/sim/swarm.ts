/**
 * @module test/sim/swarm — one seed, start to finish (the model: TigerBeetle's src/vopr.zig).
 *
 * 1. The seed draws everything (swarm-options.ts): disk shape, workload mix, engine tunables,
 *    network latency and which fault kinds are on at what rate.
 * 2. Safety phase: the workload submits requests while faults are injected; the checkers run
 *    on every completion, every tick and every export crash.
 * 3. Convergence phase: faults stop (the network heals, held bytes arrive now). Every request
 *    must then complete within a bound, and the final verification must pass: read every
 *    block back, FLUSH, crash and restart the export, check the durable image, read again
 *    through the reconnected engine, compare the final image and the counters.
 * A failure throws SimViolation; runSeed turns it into a report naming the seed.
 */
import type { OpKind } from "../../src/engine/client-engine.ts";
import { SimViolation, violation } from "./checkers.ts";
import { Simulation, type ServerUnsafe } from "./harness.ts";
import { between, swarmOptions, type FaultOptions, type SwarmConfig, type WorkloadOptions } from "./swarm-options.ts";

export { swarmOptions } from "./swarm-options.ts";

/** Liveness bound after faults stop: detect a dead connection, reconnect, drain the backlog. */
export function livenessBound(sim: Simulation, backlog: number): number {
  const e = sim.config.engine;
  // A round trip includes the storage's time when the port is asynchronous (one call each).
  const rtt = 2 * sim.network.latencyMaxMs + 2 * sim.config.tickMs + (sim.config.asyncPort?.maxDelayMs ?? 0);
  const windows = Math.ceil((backlog + sim.engine.replayEntries + 4) / Math.min(e.inflight, 256)) + 4;
  return 3 * e.keepaliveTimeoutMs + 2 * e.reconnectMaxMs + windows * rtt + 10 * sim.config.tickMs;
}

export interface SeedResult {
  seed: number;
  ok: boolean;
  violation?: SimViolation;
  error?: unknown;
  trace: string[];
  stats: { simMs: number; ops: number; events: number };
  coverage: Record<string, number>;
}

export interface RunOptions {
  /** Planted bugs (checker tests only). */
  unsafe?: ServerUnsafe;
  verbose?: boolean;
  checkExactlyOnce?: boolean;
  /** Run the seed anonymous even if it draws a key (a late handshake needs an anonymous session). */
  anonymous?: boolean;
}

export async function runSeed(seed: number, options: RunOptions = {}): Promise<SeedResult> {
  const config = swarmOptions(seed, options.unsafe);
  if (options.verbose) config.sim.verbose = true;
  if (options.checkExactlyOnce === false) config.sim.checkExactlyOnce = false;
  if (options.anonymous === true) delete config.sim.keys;
  const sim = new Simulation(config.sim);
  try {
    await runPhases(sim, config);
    return result(sim, seed, true);
  } catch (error) {
    const r = result(sim, seed, false);
    if (error instanceof SimViolation) r.violation = error;
    else r.error = error;
    return r;
  }
}

function result(sim: Simulation, seed: number, ok: boolean): SeedResult {
  return {
    seed,
    ok,
    trace: sim.traceTail(Number(process.env.SIM_TRACE_TAIL ?? 40)),
    stats: { simMs: sim.now, ops: sim.ops.length, events: sim.clock.eventsRun },
    coverage: sim.coverage(),
  };
}

async function runPhases(sim: Simulation, config: SwarmConfig): Promise<void> {
  // Faults begin once the driver opened (first handshake): a first contact that never
  // succeeds is the one case where the engine gives up for good (by design).
  await sim.start();
  const stopFaults = scheduleFaults(sim, config.faults);
  const workload = new Workload(sim, config.workload);
  const safetyEnd = sim.now + config.workload.safetyMs;
  while (sim.now < safetyEnd && !workload.finished) {
    workload.step();
    sim.run(Math.max(1, Math.round(config.workload.gapMeanMs * 2 * sim.prng.float())));
  }
  stopFaults();
  verifyConverged(sim);
}

/**
 * Convergence and final verification (also the end of every scenario): stop faults, let
 * everything complete within the liveness bound, read every block back, FLUSH, crash and
 * restart the export, check the durable image, and check the counters.
 */
export function verifyConverged(sim: Simulation): void {
  const bound = livenessBound(sim, sim.outstanding);
  sim.heal(bound);
  if (!sim.settle(bound + 1000)) sim.checkAllCompleted();
  readEverything(sim);
  const flush = sim.flush();
  sim.settle(bound);
  if (flush.status !== 0) violation("liveness", `final FLUSH did not succeed (status ${flush.status})`);
  if (!sim.oracle.allCovered()) violation("flushed write lost", "a successful final FLUSH left blocks not covered (oracle bug)");
  sim.checkSockets(); // before the restart below closes every connection
  sim.restartExport("lose-all");
  sim.heal(livenessBound(sim, 0));
  // The image is checked directly below; a few reads prove the engine is back after the restart.
  for (let i = 0; i < 4; i++) sim.read(sim.prng.int(sim.oracle.blockCount), 1);
  if (!sim.settle(sim.livenessBoundMs + 1000)) sim.checkAllCompleted();
  sim.oracle.checkImage(sim.backend.current, "final disk image");
  sim.checkAllCompleted();
  sim.checkCounters();
}

function readEverything(sim: Simulation): void {
  const step = 8;
  for (let b = 0; b < sim.oracle.blockCount; b += step) sim.read(b, Math.min(step, sim.oracle.blockCount - b));
  if (!sim.settle(sim.livenessBoundMs + 1000)) sim.checkAllCompleted();
}

/** Random faults at the seed's rates until the returned stop function is called. */
function scheduleFaults(sim: Simulation, faults: FaultOptions): () => void {
  let stopped = false;
  const prng = sim.prng;
  const every = (ratePerSecond: number, fire: () => void) => {
    if (ratePerSecond <= 0) return;
    const next = () => {
      // Exponential-ish gaps without transcendental functions (exactly reproducible).
      const gap = Math.max(1, Math.round((1000 / ratePerSecond) * 2 * prng.float()));
      sim.clock.after(gap, () => {
        if (stopped) return;
        fire();
        next();
      });
    };
    next();
  };
  const e = sim.config.engine;
  const current = () => sim.engine.state === "ready" || sim.engine.state === "handshaking";
  const connection = () => [...sim.network.connections.values()].filter((c) => c.phase !== "closed" && !sim.intruderConnections.has(c.id)).at(-1);
  every(faults.resetRate, () => {
    const c = connection();
    if (c && current()) sim.network.reset(c.id);
  });
  every(faults.stallRate, () => {
    const c = connection();
    if (c === undefined) return;
    const direction = prng.chance(0.6) ? "toServer" : "toClient";
    if (prng.chance(faults.vanishProbability)) return sim.network.stall(c.id, direction, "vanish");
    // Short spikes, and long holds that outlast the keepalive timeout: the client gives up,
    // reconnects, and the old connection's bytes arrive later (fencing must stop them).
    const hold = prng.chance(0.5) ? between(prng, 10, 300) : between(prng, e.keepaliveTimeoutMs, 5 * e.keepaliveTimeoutMs);
    sim.network.stall(c.id, direction, sim.now + hold);
  });
  every(faults.partitionRate, () => {
    const both = prng.chance(0.5);
    const toServer = both || prng.chance(0.5);
    sim.network.startPartition(between(prng, 50, 6000), prng.chance(0.5) ? "hold" : "blackhole", toServer, both || !toServer);
  });
  every(faults.slowLinkRate, () => {
    sim.network.slowUntil = sim.now + between(prng, 100, 2000);
    for (const c of sim.network.connections.values()) if (c.phase !== "closed") c.faulted = true;
  });
  every(faults.restartRate, () => sim.restartExport(faults.crashMode));
  every(faults.intruderRate, () => sim.intrude());
  sim.backend.faults = { eioProbability: faults.eioProbability };
  sim.network.connectFaults = true;
  return () => {
    stopped = true;
  };
}

/** The seeded application: random requests that respect the oracle's overlap rule. */
class Workload {
  private submitted = 0;
  private readonly kinds: OpKind[] = [];

  constructor(
    private readonly sim: Simulation,
    private readonly options: WorkloadOptions,
  ) {
    for (const [kind, weight] of Object.entries(options.weights) as [OpKind, number][]) {
      for (let i = 0; i < weight; i++) this.kinds.push(kind);
    }
    if (this.kinds.length === 0) this.kinds.push("read");
  }

  get finished(): boolean {
    return this.submitted >= this.options.ops;
  }

  step(): void {
    const sim = this.sim;
    if (this.finished || sim.outstanding >= this.options.depth) return;
    const prng = sim.prng;
    const kind = prng.pick(this.kinds);
    for (let attempt = 0; attempt < 4; attempt++) {
      const count = 1 + prng.int(this.options.maxBlocksPerOp);
      const first = prng.int(sim.oracle.blockCount - count + 1);
      if (!sim.oracle.canSubmit(kind, first, count)) continue;
      const fua = kind !== "read" && kind !== "flush" && prng.chance(this.options.fuaProbability);
      sim.submit(kind, first, count, fua);
      this.submitted++;
      return;
    }
  }
}
