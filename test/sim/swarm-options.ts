/**
 * @module test/sim/swarm-options — everything one seed decides before a run starts (the
 * model: TigerBeetle's vopr.zig options_swarm): disk shape, workload mix, engine tunables,
 * network latency, and which fault kinds are on at what rate. Swarm testing: each seed turns
 * a different subset of faults on, so rare combinations are reached without tuning. Draws
 * only sane engine configurations (see resendBudgetMs); pure, no I/O.
 */
import type { OpKind } from "../../src/engine/client-engine.ts";
import { Prng } from "../../src/lib/prng.ts";
import type { ServerUnsafe, SimConfig } from "./harness.ts";
import type { CrashMode } from "./sim-backend.ts";

export interface FaultOptions {
  /** Faults per simulated second, by kind (0 = off for this seed). */
  resetRate: number;
  stallRate: number;
  partitionRate: number;
  slowLinkRate: number;
  restartRate: number;
  crashMode: CrashMode;
  /** Chance a stall loses its direction for good instead of holding it. */
  vanishProbability: number;
  eioProbability: number;
  /**
   * Intruders per simulated second: a second client of the same identity whose HELLO names
   * the victim's session without its resumption proof (keyed) or token (anonymous).
   */
  intruderRate: number;
}

export interface WorkloadOptions {
  ops: number;
  /** Most requests the application keeps outstanding. */
  depth: number;
  maxBlocksPerOp: number;
  weights: Record<OpKind, number>;
  fuaProbability: number;
  /** Mean gap between submissions (ms). */
  gapMeanMs: number;
  /** Upper bound on the safety phase (ms of simulated time). */
  safetyMs: number;
}

export interface SwarmConfig {
  sim: SimConfig;
  faults: FaultOptions;
  workload: WorkloadOptions;
}

export function between(prng: Prng, min: number, max: number): number {
  return min + prng.int(max - min + 1);
}

function maybe(prng: Prng, p: number, value: () => number): number {
  return prng.chance(p) ? value() : 0;
}

/** Shortest time a request can spend before max_resends fails it (jitter is 0.8..1.2). */
export function resendBudgetMs(engine: SimConfig["engine"]): number {
  let total = 0;
  for (let i = 0; i <= engine.maxResends; i++) total += 0.8 * Math.min(engine.resendIntervalMs * 2 ** i, engine.resendIntervalMaxMs);
  return total;
}

/** Draw every knob of a run from its seed (VOPR options_swarm). */
export function swarmOptions(seed: number, unsafe?: ServerUnsafe): SwarmConfig {
  const prng = new Prng(seed ^ 0x5eed);
  const blockSize = prng.pick([512, 1024, 2048, 4096]);
  const blocks = between(prng, 64, 256);
  const latencyMinMs = between(prng, 0, 5);
  const latencyMeanMs = between(prng, 1, 10);
  const latencyMaxMs = latencyMinMs + 6 * latencyMeanMs;
  const tickMs = prng.pick([5, 10, 20]);
  const keepaliveIntervalMs = between(prng, 100, 400);
  const maxBlocksPerOp = between(prng, 1, 8);
  const engine: SimConfig["engine"] = {
    // Not drawn: swarm workloads stay below it (the bound has its own scenario test).
    queueDepth: 1024,
    queueBytes: 64 * 1024 * 1024,
    inflight: prng.pick([1, 2, 4, 8, 16, 64]),
    maxPayload: 65536,
    resendIntervalMs: between(prng, 4 * latencyMaxMs + 2 * tickMs, 400),
    resendIntervalMaxMs: 0,
    maxResends: between(prng, 2, 8),
    deadlineMs: 0,
    reconnectMinMs: between(prng, 5, 50),
    reconnectMaxMs: between(prng, 100, 800),
    keepaliveIntervalMs,
    // Healthy round trip plus two ticks must fit between the ping and the timeout.
    keepaliveTimeoutMs: keepaliveIntervalMs + 2 * latencyMaxMs + 2 * tickMs + between(prng, 50, 600),
    replayBufferBytes: prng.chance(0.3) ? blockSize * between(prng, 4, 32) : 1 << 20,
  };
  engine.resendIntervalMaxMs = engine.resendIntervalMs * between(prng, 1, 8);
  // A sane configuration: the resend budget outlasts the keepalive timeout, so a half-open
  // link is detected (and the request resent on a new one) before the budget runs out.
  // Otherwise requests fail on a dead link the engine has not noticed yet: legal by the
  // budget, but a liveness failure after faults stop (docs/simulation.md, "Configuration").
  while (resendBudgetMs(engine) <= engine.keepaliveTimeoutMs + 2 * tickMs) engine.maxResends++;
  // Long enough to ride out one recovery once faults stop (requests submitted then must
  // succeed), short enough that partitions and long stalls spend it during the safety phase.
  const recoveryMs = 2 * engine.keepaliveTimeoutMs + 2 * engine.reconnectMaxMs + 20 * latencyMaxMs + 10 * tickMs;
  engine.deadlineMs = recoveryMs + between(prng, 0, 4000);
  const on = 0.5;
  const config: SwarmConfig = {
    sim: {
      seed,
      blocks,
      blockSize,
      tickMs,
      engine,
      // Not drawn from the prng (that would change every seed's other knobs): odd seeds.
      handOver: seed % 2 === 1,
      network: {
        latencyMinMs,
        latencyMeanMs,
        splitProbability: prng.chance(0.5) ? prng.float() * 0.5 : 0,
        slowBandwidthBytesPerMs: between(prng, 64, 2048),
        connectRefusedProbability: maybe(prng, on, () => prng.float() * 0.3),
        connectHangProbability: maybe(prng, on, () => prng.float() * 0.2),
      },
      ...(unsafe ? { unsafe } : {}),
    },
    faults: {
      resetRate: maybe(prng, on, () => 0.2 + prng.float() * 2),
      stallRate: maybe(prng, on, () => 0.2 + prng.float() * 2),
      partitionRate: maybe(prng, on, () => 0.05 + prng.float() * 0.5),
      slowLinkRate: maybe(prng, 0.3, () => 0.1 + prng.float()),
      restartRate: maybe(prng, on, () => 0.05 + prng.float() * 0.6),
      crashMode: prng.chance(0.5) ? "lose-all" : "random",
      vanishProbability: prng.float() * 0.5,
      eioProbability: maybe(prng, 0.3, () => prng.float() * 0.03),
      intruderRate: 0,
    },
    workload: {
      ops: between(prng, 30, 150),
      depth: prng.pick([1, 2, 4, 8, 16]),
      maxBlocksPerOp,
      weights: {
        read: between(prng, 1, 10),
        write: between(prng, 1, 10),
        flush: between(prng, 0, 3),
        trim: between(prng, 0, 2),
        zero: between(prng, 0, 2),
        fetch: 0,
        sync: 0,
      },
      fuaProbability: prng.chance(0.5) ? prng.float() * 0.5 : 0,
      gapMeanMs: between(prng, 1, 30),
      safetyMs: 8000,
    },
  };
  // Drawn last, so the draws above (and seeds run on the synchronous port) stay as they were.
  if (prng.chance(0.5)) config.sim.asyncPort = { maxDelayMs: prng.pick([0, 1, 5, 20]) };
  // Half of those: small requests inline, large ones later (the local file port's I/O thread
  // pool), from a stream of its own so that every draw above stays as it was.
  const mixed = new Prng(seed ^ 0x696e6c6e);
  if (config.sim.asyncPort !== undefined && mixed.chance(0.5)) config.sim.asyncPort.inlineUpTo = blockSize * mixed.pick([1, 2, 4]);
  // Keyed sessions and intruders from a stream of their own, so the draws above stay as they were.
  const keyed = new Prng(seed ^ 0x6b657973);
  if (keyed.chance(0.5)) {
    const secret = new Uint8Array(32);
    for (let i = 0; i < secret.length; i++) secret[i] = keyed.int(256);
    config.sim.keys = { identity: `sim-${seed}`, secret, suite: keyed.pick(["aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305", "integrity"] as const) };
  }
  config.faults.intruderRate = maybe(keyed, 0.5, () => 0.1 + keyed.float() * 0.5);
  // The application speaks NBD to the front over the engine (`dstd attach --nbd-listen`).
  if (keyed.chance(0.3)) config.sim.nbdFront = true;
  return config;
}
