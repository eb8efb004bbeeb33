/**
 * A mirror whose legs are the REAL client engine talking to the REAL DST export over the
 * simulated network of test/sim (SimNetwork, SimBackend), on simulated time: the budget that
 * decides when a leg is degraded is the engine's own (deadline, max_resends, keepalive),
 * not a model of it. Stories:
 * - a partition shorter than the deadline and an export restart (unflushed writes lost,
 *   replayed by the engine) never degrade the mirror;
 * - a partition longer than the deadline degrades the leg while writes go on; when the
 *   network heals the engine reconnects, the mirror's probe finds the leg and resyncs only
 *   the regions written meanwhile; the two export disks end up identical.
 */
import { describe, expect, test } from "bun:test";
import { parseAllowRule, type AllowRule } from "../../../src/lib/acl.ts";
import { Prng } from "../../../src/lib/prng.ts";
import { ClientEngine } from "../../../src/engine/client-engine.ts";
import { ENGINE_DEFAULTS } from "../../../src/engine/options.ts";
import { DstServer } from "../../../src/export/server.ts";
import { createLocalPort } from "../../../src/storage/local/port.ts";
import { Perm } from "../../../src/wire/dst/constants.ts";
import { call, type StoragePort } from "../../../src/storage/port.ts";
import type { DstClient } from "../../../src/client/dst-client.ts";
import { createEnginePort } from "../../../src/storage/remote/engine-port.ts";
import { openMirror, type MirrorPort } from "../../../src/storage/tree/mirror/mirror.ts";
import { SimBackend } from "../../sim/sim-backend.ts";
import { SimClock } from "../../sim/sim-clock.ts";
import { SimNetwork } from "../../sim/sim-network.ts";
import { treeClock } from "./sim-leg.ts";

const ALLOW: AllowRule[] = [parseAllowRule("127.0.0.0/8:rw") as AllowRule];
const SIZE = 45056 + 512 * 1024;
const DEADLINE = 2_000;

/** One export (DstServer over a SimBackend) and the engine that reaches it. */
class EngineLeg {
  readonly backend: SimBackend;
  readonly network: SimNetwork;
  readonly engine: ClientEngine;
  server!: DstServer;
  epoch = 0;
  readonly port: StoragePort;

  constructor(
    readonly clock: SimClock,
    seed: number,
  ) {
    const prng = new Prng(seed);
    this.backend = new SimBackend(SIZE, 4096, new Prng(prng.next()));
    this.network = new SimNetwork(
      clock,
      new Prng(prng.next()),
      { latencyMinMs: 1, latencyMeanMs: 2, splitProbability: 0.1, slowBandwidthBytesPerMs: 1024, connectRefusedProbability: 0, connectHangProbability: 0 },
      {
        connected: (id) => this.engine.connected(id),
        connectFailed: (id, reason) => this.engine.connectFailed(id, reason),
        receive: (id, chunk) => this.engine.receive(id, chunk),
        disconnected: (id, reason) => this.engine.disconnected(id, reason),
      },
      () => {},
    );
    this.engine = new ClientEngine(
      {
        ...ENGINE_DEFAULTS,
        seed: prng.next(),
        exportName: "disk",
        clientName: "mirror-leg",
        deadlineMs: DEADLINE,
        maxResends: 20,
        resendIntervalMs: 200,
        resendIntervalMaxMs: 400,
        keepaliveIntervalMs: 300,
        keepaliveTimeoutMs: 900,
        reconnectMinMs: 50,
        reconnectMaxMs: 300,
      },
      { connect: (id) => this.network.connect(id), send: (id, frame) => this.network.send(id, frame), close: (id) => this.network.close(id) },
      { info() {}, warn() {} },
    );
    this.startServer();
    this.engine.start(clock.now);
    const tick = () => {
      this.engine.tick(clock.now);
      clock.after(10, tick);
    };
    clock.after(10, tick);
    // The port over the engine as DstClient drives it with one link (client/dst-client.ts):
    // EnginePort uses only these members.
    const engine = this.engine;
    const client = {
      engine,
      get size() {
        return engine.welcome!.size;
      },
      get blockSize() {
        return engine.welcome!.blockPreferred;
      },
      get writable() {
        return (engine.welcome!.permissions & Perm.WRITE) !== 0;
      },
      get maxPayload() {
        return engine.payloadLimit;
      },
      submit: (request: Parameters<ClientEngine["submit"]>[0], done: Parameters<ClientEngine["submit"]>[1]) => engine.submit(request, done),
      set onRoom(wake: (() => void) | null) {
        engine.onRoom = wake;
      },
    };
    this.port = createEnginePort(client as unknown as DstClient, `leg ${seed}`);
  }

  startServer(): void {
    this.server = new DstServer({
      exports: [{ name: "disk", description: "", port: createLocalPort(this.backend), readOnly: false, allow: ALLOW }],
      log: { info() {}, warn() {} },
      epoch: ++this.epoch,
      defer: (work) => this.clock.after(0, work),
    });
    this.network.accept = this.server.accept;
  }

  /** kill -9 and restart: unflushed writes are lost; the engine replays them. */
  restartExport(): void {
    this.network.exportDied();
    this.backend.crash("lose-all");
    this.startServer();
  }
}

async function world() {
  const clock = new SimClock(1);
  const legs = [new EngineLeg(clock, 11), new EngineLeg(clock, 12)];
  const logs: string[] = [];
  const run = async <T>(promise: Promise<T>, limitMs = 120_000): Promise<T> => {
    let done = false;
    let value: T | undefined;
    let error: unknown = null;
    promise.then(
      (v) => ((done = true), (value = v)),
      (e: unknown) => ((done = true), (error = e)),
    );
    const end = clock.now + limitMs;
    while (!done) {
      for (let i = 0; i < 8; i++) await undefined;
      if (done) break;
      if (clock.now >= end) throw new Error(`not settled in ${limitMs} ms:\n${logs.slice(-10).join("\n")}`);
      clock.runUntil(clock.ticks + 2);
    }
    if (error !== null) throw error;
    return value as T;
  };
  const until = async (condition: () => boolean, what: string) => {
    const end = clock.now + 120_000;
    while (!condition()) {
      if (clock.now >= end) throw new Error(`${what} not reached:\n${logs.slice(-10).join("\n")}`);
      clock.runUntil(clock.ticks + 5);
      for (let i = 0; i < 8; i++) await undefined;
    }
  };
  await until(() => legs.every((l) => l.engine.state === "ready"), "both engines ready");
  const mirror: MirrorPort = await run(
    openMirror(
      legs.map((l, i) => ({ label: `leg${i}`, port: l.port })),
      {
        clock: treeClock(clock),
        randomId: () => new Prng(5).bytes(16),
        log: { info: (m) => void logs.push(m), warn: (m) => void logs.push(`WARN ${m}`) },
        assumeClean: true,
        probeIntervalMs: 250,
        layout: { metaBytes: 45056, regionBytes: 4096, activeBytes: 65536 },
      },
    ),
  );
  const write = (offset: number, fill: number, length = 8192) => run(call.write(mirror, offset, new Uint8Array(length).fill(fill)));
  return { clock, legs, mirror, logs, run, until, write };
}

/** Both exports' disks, data area only. */
function images(legs: EngineLeg[], mirror: MirrorPort): Buffer[] {
  return legs.map((l) => Buffer.from(l.backend.current.subarray(mirror.layout.metaBytes, mirror.layout.metaBytes + mirror.size)));
}

describe("mirror over real client engines and DST exports (simulated network)", () => {
  test("a partition shorter than the deadline and an export restart never degrade the mirror", async () => {
    const { legs, mirror, write, run } = await world();
    await write(0, 1);
    legs[1]!.network.startPartition(DEADLINE / 2, "blackhole", true, true);
    for (let i = 0; i < 8; i++) await write(i * 16384, 2 + i);
    legs[1]!.restartExport(); // unflushed writes gone from its disk: the engine replays them
    for (let i = 0; i < 8; i++) await write(256 * 1024 + i * 16384, 20 + i);
    await run(call.flush(mirror));
    expect(mirror.legs.map((l) => [l.state, l.degradations])).toEqual([["in-sync", 0], ["in-sync", 0]]);
    expect(legs[1]!.engine.counters.reconnects).toBeGreaterThanOrEqual(1);
    expect(legs[1]!.engine.counters.replays).toBeGreaterThan(0);
    const [a, b] = images(legs, mirror);
    expect(a!.equals(b!)).toBe(true);
  }, 60_000);

  test("a partition longer than the deadline degrades the leg; after it heals only the dirty regions are resynced", async () => {
    const { legs, mirror, write, run, until, logs, clock } = await world();
    for (let i = 0; i < 16; i++) await write(i * 32768, 1 + i); // 16 regions on both legs
    legs[1]!.network.startPartition(60_000, "blackhole", true, true);
    const started = clock.now;
    await write(0, 50); // waits for leg 1's budget, then completes on leg 0
    expect(clock.now - started).toBeGreaterThanOrEqual(DEADLINE - 20);
    expect(mirror.legs[1]!.state).toBe("degraded");
    for (let i = 1; i < 4; i++) await write(i * 32768, 50 + i); // to leg 0 only; recorded
    await run(call.flush(mirror));
    expect(mirror.describe().legs![1]!.dirtyBytes).toBe(4 * 2 * 4096);
    legs[1]!.network.heal();
    await until(() => mirror.legs[1]!.state === "in-sync", "leg 1 back in sync");
    expect(mirror.resyncedBytes).toBe(4 * 2 * 4096); // 4 writes × 2 regions, not 512 KiB
    await run(call.flush(mirror));
    const [a, b] = images(legs, mirror);
    expect(a!.equals(b!)).toBe(true);
    expect(b![32768]).toBe(51);
    expect(logs.some((l) => /leg1 in sync at generation 2; resync moved 32768 bytes/.test(l))).toBe(true);
  }, 60_000);
});
