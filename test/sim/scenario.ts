/**
 * @module test/sim/scenario — the small DSL hand-written simulation scenarios use (the model:
 * TigerBeetle's src/vsr/replica_test.zig): build a quiet world (no random faults), drive the
 * application and the network by hand, then let verifyConverged() run every checker.
 *
 *   const t = await world();                           // connected, ready, fault-free
 *   t.network.stall(t.currentConnection, "toClient", "vanish");
 *   const w = t.write(3);                         // application requests return OpRecords
 *   t.settle(5_000);
 *   expect(w.status).toBe(0);
 *   finish(t);                                    // all invariants, final image, counters
 */
import { Errno } from "../../src/lib/errno.ts";
import type { OpRecord } from "./checkers.ts";
import { Simulation, type SimConfig } from "./harness.ts";
import { verifyConverged } from "./swarm.ts";

export interface WorldOptions {
  seed?: number;
  engine?: Partial<SimConfig["engine"]>;
  network?: Partial<SimConfig["network"]>;
  unsafe?: SimConfig["unsafe"];
  checkExactlyOnce?: boolean;
  blocks?: number;
  blockSize?: number;
  tickMs?: number;
  asyncPort?: SimConfig["asyncPort"];
  keys?: SimConfig["keys"];
  plantNonceReuse?: number;
  nbdFront?: boolean;
}

export const SCENARIO_ENGINE: SimConfig["engine"] = {
  queueDepth: 1024,
  queueBytes: 64 * 1024 * 1024,
  inflight: 8,
  maxPayload: 65536,
  resendIntervalMs: 100,
  resendIntervalMaxMs: 400,
  maxResends: 8,
  deadlineMs: 5000,
  reconnectMinMs: 10,
  reconnectMaxMs: 200,
  keepaliveIntervalMs: 200,
  keepaliveTimeoutMs: 600,
  replayBufferBytes: 1 << 20,
};

/** A started world whose engine is ready; nothing happens unless the scenario says so. */
export async function world(options: WorldOptions = {}): Promise<Simulation> {
  const config: SimConfig = {
    seed: options.seed ?? 1,
    blocks: options.blocks ?? 64,
    blockSize: options.blockSize ?? 4096,
    tickMs: options.tickMs ?? 10,
    engine: { ...SCENARIO_ENGINE, ...options.engine },
    network: {
      latencyMinMs: 1,
      latencyMeanMs: 2,
      splitProbability: 0,
      slowBandwidthBytesPerMs: 1000,
      connectRefusedProbability: 0,
      connectHangProbability: 0,
      ...options.network,
    },
  };
  if (options.unsafe) config.unsafe = options.unsafe;
  if (options.checkExactlyOnce === false) config.checkExactlyOnce = false;
  if (options.asyncPort) config.asyncPort = options.asyncPort;
  if (options.keys) config.keys = options.keys;
  if (options.plantNonceReuse) config.plantNonceReuse = options.plantNonceReuse;
  if (options.nbdFront) config.nbdFront = true;
  return await new Simulation(config).start();
}

/** Run every end-of-run checker (convergence, full read-back, flush + crash, counters). */
export function finish(sim: Simulation): void {
  verifyConverged(sim);
}

/** Run until `op` completed (or `maxMs` passed); returns its status. */
export function completion(sim: Simulation, op: OpRecord, maxMs = 10_000): number | null {
  sim.runUntil(() => op.status !== null, maxMs, 1);
  return op.status;
}

export { Errno };
