/**
 * @module test/sim/harness — one simulated world: the real ClientEngine and the real DstServer
 * joined by SimNetwork, over a SimBackend, on a SimClock, with the oracle and checkers
 * watching every step. It is the simulated twin of client/dst-client.ts (the engine's driver)
 * plus daemon/export-node.ts (the export), and the DSL the scenario tests are written in.
 *
 * Determinism: every random choice comes from Prng streams split off the seed (network,
 * backend, workload/faults, engine jitter), so changing how one component draws does not
 * reshuffle the others. The DST server's session ids come from node:crypto, but nothing
 * depends on their value, only on their identity.
 */
import { ClientEngine, type OpKind, type Request } from "../../src/engine/client-engine.ts";
import type { EngineOptions } from "../../src/engine/options.ts";
import { parseAllowRule, type AllowRule } from "../../src/lib/acl.ts";
import { errnoName } from "../../src/lib/errno.ts";
import { Prng } from "../../src/lib/prng.ts";
import { DstServer, type DstServerOptions } from "../../src/export/server.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { DeferredLayer, HeldWork } from "../../src/storage/layers/deferred.ts";
import type { StoragePort } from "../../src/storage/port.ts";
import { Op, PAYLOAD_MAX_DEFAULT } from "../../src/wire/dst/constants.ts";
import { FrameDecoder } from "../../src/wire/dst/decoder.ts";
import { makeWriteData } from "./block-data.ts";
import { Adversary } from "./adversary.ts";
import { checkFailure, Oracle, SimViolation, violation, type OpRecord } from "./checkers.ts";
import { SimBackend, type CrashMode } from "./sim-backend.ts";
import { SimClock } from "./sim-clock.ts";
import { SimNetwork, type NetworkOptions } from "./sim-network.ts";

export type ServerUnsafe = NonNullable<DstServerOptions["unsafe"]>;

export interface SimConfig {
  seed: number;
  blocks: number;
  blockSize: number;
  /** Engine tick period (the production driver uses 20 ms). */
  tickMs: number;
  engine: Omit<EngineOptions, "seed" | "exportName" | "clientName">;
  network: NetworkOptions;
  /** Planted bugs in the export (tests of the checkers only). */
  unsafe?: ServerUnsafe;
  /** Keep a detailed trace (every frame) instead of the major events only. */
  verbose?: boolean;
  /** Check exactly-once application (default on; off shows what the data checkers catch alone). */
  checkExactlyOnce?: boolean;
  /**
   * Serve the export from an asynchronous port (storage/layers/deferred.ts over the local
   * port): every call runs 0..maxDelayMs simulated ms later, so completions arrive late and
   * out of order. Absent: the local port's synchronous fast path.
   */
  asyncPort?: { maxDelayMs: number };
  /**
   * Hand WRITE buffers over to the engine with a way back (Request.handOver + recycle), as
   * `dstd copy` does: a buffer given back is at once overwritten with junk, so any use of it
   * afterwards (a resend, a replay, a record sealed late) reaches the export as corrupt data
   * and the data checkers fail the run; a buffer given back twice fails it at once.
   */
  handOver?: boolean;
  /** A hostile client resumes the victim's session by its sniffed id (test/sim/adversary.ts). */
  adversary?: boolean;
}

const TRACE_LINES = Number(process.env.SIM_TRACE_LINES ?? 200);
const ALLOW: AllowRule[] = [parseAllowRule("127.0.0.0/8:rw") as AllowRule];
const requestOpcodes = new Set<number>([Op.READ, Op.WRITE, Op.FLUSH, Op.TRIM, Op.WRITE_ZEROES]);

export class Simulation {
  readonly clock = new SimClock(1);
  readonly network: SimNetwork;
  readonly backend: SimBackend;
  /** The hostile client, when SimConfig.adversary is on. */
  adversary: Adversary | null = null;
  readonly engine: ClientEngine;
  readonly oracle: Oracle;
  /** Randomness for the workload and the fault schedule (the swarm driver's stream). */
  readonly prng: Prng;
  server!: DstServer;
  generation = 0;
  readonly ops: OpRecord[] = [];
  outstanding = 0;
  /** txid → times it went on the wire (any connection). */
  readonly sends = new Map<number, number>();
  /** Every size the engine reported through onResize, in order. */
  readonly resizes: number[] = [];
  readonly seen = { connects: 0, ready: 0, keepaliveDrops: 0, restarts: 0, epochChanges: 0, internalTxids: new Set<number>() };
  /** How often the interesting paths ran (the swarm asserts each is reached: coverage marks). */
  readonly marks = { fenced: 0, takeovers: 0, staleResumes: 0, duplicates: 0, lateDeliveries: 0, timeouts: 0, eio: 0 };
  /** After heal(): every request must complete by max(submit, healAt) + livenessBoundMs. */
  healAt = -1;
  livenessBoundMs = 0;
  private readonly eioSeen: Record<OpKind, number> = { read: 0, write: 0, flush: 0, trim: 0, zero: 0, fetch: 0, sync: 0 };
  private readonly appTxids = new Set<number>();
  /** Handed-over WRITE buffers the engine gave back (see SimConfig.handOver). */
  private readonly recycled = new WeakSet<Uint8Array>();
  private readonly opsByTxid = new Map<number, OpRecord>();
  private readonly traceRing: string[] = [];
  private traceNext = 0;
  private lastConnectId = 0;
  private nextVersion = 1;
  private started = false;
  private lastEpoch: number | null = null;
  private deferred: SimViolation | null = null;
  /** asyncPort: per write content ("offset:hash"), txids that carried it to the current instance, and its applications there. */
  private contentTxids = new Map<string, Set<number>>();
  private contentApplied = new Map<string, number>();
  private readonly portPrng: Prng;
  /** asyncPort, scenarios: while true, port calls wait in heldWork until the scenario runs them. */
  portHeld = false;
  readonly heldWork = new HeldWork();

  constructor(readonly config: SimConfig) {
    const seeds = new Prng(config.seed);
    const networkPrng = new Prng(seeds.next());
    const backendPrng = new Prng(seeds.next());
    this.prng = new Prng(seeds.next());
    const engineSeed = seeds.next();
    this.portPrng = new Prng(seeds.next());
    this.backend = new SimBackend(config.blocks * config.blockSize, config.blockSize, backendPrng);
    // Raised after the event: thrown inside the backend call, the export would turn it into EIO.
    this.backend.onDuplicateApply = (txid, offset) => {
      if (config.checkExactlyOnce === false) return;
      this.deferred ??= new SimViolation("exactly-once", `txid ${txid} (write at byte ${offset}) was applied twice by export instance ${this.generation}`);
    };
    // An asynchronous port gets a copy of the data, without the frame header naming its txid:
    // count applications by content instead. Within one export instance, a write's content
    // (offset and data) may be applied at most as often as distinct txids carrying it reached
    // that instance (a replay sent again after a failed replay is a new txid with old content).
    this.backend.onUntrackedApply = (offset, data) => {
      if (config.checkExactlyOnce === false) return;
      const key = `${offset}:${Bun.hash.xxHash3(data)}`;
      const applied = (this.contentApplied.get(key) ?? 0) + 1;
      this.contentApplied.set(key, applied);
      const carriers = this.contentTxids.get(key)?.size ?? 0;
      if (applied > carriers) {
        this.deferred ??= new SimViolation("exactly-once", `a write at byte ${offset} was applied ${applied} times by export instance ${this.generation}, but only ${carriers} txids carried it there`);
      }
    };
    this.clock.afterEvent = () => {
      if (this.deferred !== null) throw this.deferred;
    };
    this.oracle = new Oracle(config.blocks, config.blockSize);
    this.network = new SimNetwork(this.clock, networkPrng, config.network, this.clientEndpoint, (line) => this.trace(line));
    // A takeover must come from a newer connection than the one it fences: the engine numbers
    // its connections in the order it opens them and keeps one at a time, so an older one
    // taking over is a late handshake the client already gave up on (docs/protocol.md §6.5),
    // and it would cut the client's live connection.
    this.network.onFence = (taker, fenced) => {
      this.marks.takeovers++;
      if (taker < fenced) this.deferred ??= new SimViolation("stale takeover", `the late handshake of c${taker} took the session over and fenced the newer c${fenced}`);
    };
    this.engine = new ClientEngine(
      { ...config.engine, seed: engineSeed, exportName: "disk", clientName: "sim" },
      {
        connect: (id) => {
          this.lastConnectId = id;
          this.seen.connects++;
          this.network.connect(id);
        },
        send: (id, bytes, release) => {
          // The network holds what it carries until delivery: give it its own copy, so the
          // engine may recycle its buffer at once (as a real sink's release would let it).
          this.tap(id, bytes.slice());
          release?.();
        },
        close: (id) => this.network.close(id),
      },
      {
        info: (m) => this.trace(`engine: ${m}`),
        warn: (m) => this.trace(`engine WARN: ${m}`),
      },
    );
    this.engine.onStateChange = (state, detail) => this.onEngineState(state, detail);
    this.engine.onResize = (size) => {
      this.trace(`engine: export size is now ${size} bytes`);
      this.resizes.push(size);
    };
    // A new session gives outstanding requests fresh txids: follow them, so per-request send
    // counts and the app/internal split stay per request.
    this.engine.onRenumber = (from, to) => {
      const op = this.opsByTxid.get(from);
      if (op !== undefined) {
        this.opsByTxid.delete(from);
        this.opsByTxid.set(to, op);
        op.txid = to;
        this.appTxids.add(to);
      }
      const sent = this.sends.get(from);
      if (sent !== undefined) {
        this.sends.delete(from);
        this.sends.set(to, sent);
      }
      if (this.seen.internalTxids.delete(from)) this.seen.internalTxids.add(to);
    };
    this.startServer();
  }

  get now(): number {
    return this.clock.now;
  }

  /** Id of the engine's newest connection (the one faults aimed "at the current link" hit). */
  get currentConnection(): number {
    return this.lastConnectId;
  }

  /** Connect the engine and start its tick. */
  start(): this {
    this.started = true;
    this.engine.start(this.now);
    const tick = () => {
      this.tickEngine();
      this.clock.after(this.config.tickMs, tick);
    };
    this.clock.after(this.config.tickMs, tick);
    // The export node ticks its server about once a second (daemon/export-node.ts): PONGs
    // for a client whose request is still arriving, rate-limited warnings.
    const serverTick = () => {
      this.server.tick();
      this.clock.after(1000, serverTick);
    };
    this.clock.after(1000, serverTick);
    if (this.config.adversary === true) {
      this.adversary = new Adversary(
        {
          clock: this.clock,
          engine: this.engine,
          server: () => this.server,
          diskBytes: this.config.blocks * this.config.blockSize,
          blockSize: this.config.blockSize,
          trace: (line) => this.trace(line),
        },
        this.config.seed,
      );
      this.adversary.start();
    }
    return this;
  }

  // ---- application requests ----------------------------------------------------------------

  write(first: number, count = 1, options: { fua?: boolean } = {}): OpRecord {
    return this.submit("write", first, count, options.fua === true);
  }
  read(first: number, count = 1): OpRecord {
    return this.submit("read", first, count, false);
  }
  flush(): OpRecord {
    return this.submit("flush", 0, 0, false);
  }
  trim(first: number, count = 1, options: { fua?: boolean } = {}): OpRecord {
    return this.submit("trim", first, count, options.fua === true);
  }
  zero(first: number, count = 1, options: { fua?: boolean } = {}): OpRecord {
    return this.submit("zero", first, count, options.fua === true);
  }

  submit(kind: OpKind, first: number, count: number, fua: boolean): OpRecord {
    if (!this.oracle.canSubmit(kind, first, count)) throw new Error(`harness misuse: ${kind} of blocks ${first}+${count} overlaps a request in flight`);
    const { blockSize } = this.config;
    const version = kind === "write" ? this.nextVersion++ : kind === "trim" || kind === "zero" ? 0 : -1;
    const op: OpRecord = {
      id: this.ops.length + 1,
      kind,
      first,
      count,
      version,
      fua,
      txid: 0,
      submitAt: this.now,
      submitSerial: this.oracle.nextSerial(),
      convergence: this.healAt >= 0,
      doneAt: -1,
      status: null,
    };
    this.ops.push(op);
    this.outstanding++;
    this.oracle.submitted(op);
    const request: Request = { kind, offset: first * blockSize, length: count * blockSize, fua };
    if (kind === "write") request.data = makeWriteData(version, first, count, blockSize);
    if (kind === "write" && this.config.handOver === true) {
      request.handOver = true;
      request.recycle = (buffer) => {
        if (this.recycled.has(buffer)) violation("budget", `request #${op.id}'s write buffer was given back twice`);
        this.recycled.add(buffer);
        buffer.fill(0xa5);
      };
    }
    if (kind === "flush") request.offset = request.length = 0;
    op.txid = this.engine.submit(request, (status, data) => this.completed(op, status, data));
    this.appTxids.add(op.txid);
    this.opsByTxid.set(op.txid, op);
    this.trace(`app: #${op.id} ${kind} blocks ${first}+${count}${fua ? " fua" : ""} v${version} → txid ${op.txid}`);
    return op;
  }

  private completed(op: OpRecord, status: number, data: Uint8Array | null): void {
    if (op.status !== null) violation("budget", `request #${op.id} completed twice`);
    op.status = status;
    op.doneAt = this.now;
    this.outstanding--;
    this.trace(`app: #${op.id} ${op.kind} txid ${op.txid} done: ${status === 0 ? "ok" : errnoName(status)}`);
    if (status === 110) this.marks.timeouts++;
    if (status === 5) this.marks.eio++;
    if (this.healAt >= 0) {
      const due = Math.max(op.submitAt, this.healAt) + this.livenessBoundMs;
      if (this.now > due) violation("liveness", `request #${op.id} (${op.kind}) completed at ${this.now} ms, bound was ${due} ms`);
    }
    const limits = {
      deadlineMs: this.config.engine.deadlineMs,
      tickMs: this.config.tickMs,
      maxResends: this.config.engine.maxResends,
      sends: this.sends,
      injected: { ...this.backend.injectedByKind, fetch: 0, sync: 0 },
    };
    checkFailure(op, status, this.now, limits, this.eioSeen);
    this.oracle.completed(op, status, data);
  }

  // ---- time ----------------------------------------------------------------------------------

  run(ms: number): void {
    this.clock.runUntil(this.clock.ticks + Math.ceil(ms / this.clock.resolutionMs));
  }

  /** Run in small steps until `done()` or `maxMs` passed; returns whether done() held. */
  runUntil(done: () => boolean, maxMs: number, stepMs = 5): boolean {
    const end = this.now + maxMs;
    while (!done()) {
      if (this.now >= end) return false;
      this.run(Math.min(stepMs, end - this.now));
    }
    return true;
  }

  /** Run until no application request is outstanding. */
  settle(maxMs: number): boolean {
    return this.runUntil(() => this.outstanding === 0, maxMs);
  }

  // ---- faults the harness itself owns --------------------------------------------------------

  /** Kill the export process (backend crash) and start a new one with a new epoch. */
  restartExport(mode: CrashMode): void {
    this.seen.restarts++;
    this.network.exportDied();
    const lost = this.backend.crash(mode);
    this.trace(`export: crashed (${mode}, ${lost} unflushed mutations lost); restarting`);
    this.oracle.checkCrash(this.backend.current);
    this.generation++;
    this.contentTxids = new Map();
    this.contentApplied = new Map();
    this.startServer();
  }

  /** Grow the export online (DstServer.resize): connected clients get a SIZE_NOTICE. */
  resizeExport(size: number): void {
    this.trace(`export: resize to ${size} bytes`);
    // The local port resizes synchronously: the notices are on the wire when this returns.
    void this.server.resize("disk", size).catch(() => {});
    if (this.backend.size !== size) throw new Error(`harness misuse: the export did not grow to ${size} bytes`);
  }

  /** Faults stop: from now on every request must complete within `boundMs`. */
  heal(boundMs: number): void {
    this.adversary?.stop();
    this.network.heal();
    this.backend.faults = { eioProbability: 0 };
    this.healAt = this.now;
    this.livenessBoundMs = boundMs;
  }

  /** Every request submitted so far has completed, in time. */
  checkAllCompleted(): void {
    for (const op of this.ops) {
      if (op.status === null) violation("liveness", `request #${op.id} (${op.kind}, txid ${op.txid}) never completed (now ${this.now} ms)`);
    }
  }

  /** Engine counters agree with what the simulator saw. */
  checkCounters(): void {
    const c = this.engine.counters;
    let resends = 0;
    for (const n of this.sends.values()) resends += n - 1;
    const expect = (name: string, actual: number, wanted: number) => {
      if (actual !== wanted) violation("counters", `${name} is ${actual}, the simulator saw ${wanted}`);
    };
    expect("connects", c.connects, this.seen.connects);
    expect("reconnects", c.reconnects, Math.max(0, this.seen.ready - 1));
    expect("resends", c.resends, resends);
    expect("keepaliveFailures", c.keepaliveFailures, this.seen.keepaliveDrops);
    let internal = 0;
    for (const txid of this.seen.internalTxids) if (!this.appTxids.has(txid)) internal++;
    if (internal > c.replays + c.autoFlushes) violation("counters", `${internal} internal requests on the wire but replays+autoFlushes is ${c.replays + c.autoFlushes}`);
    if (c.replays > 0 && this.seen.epochChanges === 0) violation("counters", `replays is ${c.replays} but the export never restarted`);
    // Replays have no budget: only a disk error can fail one.
    if (c.replayFailures > this.backend.counters.injectedErrors) {
      violation("counters", `replayFailures is ${c.replayFailures} but the disk injected only ${this.backend.counters.injectedErrors} errors`);
    }
    let timedOut = 0;
    for (const op of this.ops) if (op.status === 110) timedOut++;
    if (c.timeouts < timedOut) violation("counters", `timeouts is ${c.timeouts} but ${timedOut} requests timed out`);
    const adversary = this.adversary?.counters;
    if (adversary !== undefined && adversary.refused !== adversary.attempts) {
      violation("security", `the adversary made ${adversary.attempts} attempts but only ${adversary.refused} were refused`);
    }
  }

  /** Coverage marks of this run so far: which recovery paths actually ran. */
  coverage(): Record<string, number> {
    const c = this.engine.counters;
    return {
      ...this.marks,
      duplicates: this.marks.duplicates + this.server.counters.duplicates,
      staleResumes: this.marks.staleResumes + this.server.counters.staleResumes,
      lateDeliveries: this.network.counters.lateDeliveries,
      restarts: this.seen.restarts,
      replays: c.replays,
      replayFailures: c.replayFailures,
      autoFlushes: c.autoFlushes,
      reconnects: c.reconnects,
      keepaliveFailures: c.keepaliveFailures,
      resends: c.resends,
      staleReplies: c.staleReplies,
      adversaryRefused: this.adversary?.counters.refused ?? 0,
    };
  }

  // ---- trace ---------------------------------------------------------------------------------

  trace(line: string): void {
    this.traceRing[this.traceNext % TRACE_LINES] = `${String(this.now).padStart(7)} ms  ${line}`;
    this.traceNext++;
  }

  traceTail(lines = 40): string[] {
    const count = Math.min(lines, this.traceNext, TRACE_LINES);
    const out: string[] = [];
    for (let i = this.traceNext - count; i < this.traceNext; i++) out.push(this.traceRing[i % TRACE_LINES]!);
    return out;
  }

  // ---- internals -----------------------------------------------------------------------------

  private startServer(): void {
    if (this.server !== undefined) {
      this.marks.duplicates += this.server.counters.duplicates;
      this.marks.staleResumes += this.server.counters.staleResumes;
    }
    this.server = new DstServer({
      exports: [{ name: "disk", description: "", port: this.exportPort(), readOnly: false, allow: ALLOW }],
      log: {
        info: (m) => {
          if (m.includes("superseded")) this.marks.fenced++;
          this.traceVerbose(`export: ${m}`);
        },
        warn: (m) => this.trace(`export WARN: ${m}`),
      },
      epoch: this.generation + 1,
      // Continuations (replies of completions that came later, budget wake-ups) run in
      // simulated time: the default, queueMicrotask, would run them only when the test yields.
      defer: (work) => this.clock.after(0, work),
      ...(this.config.unsafe ? { unsafe: this.config.unsafe } : {}),
    });
    this.network.accept = this.server.accept;
  }

  /**
   * The port the export serves: the local port, or the deferred layer over it (asyncPort). Work
   * an export instance left at the port when it died never runs: a killed process issues
   * nothing more, and what it had issued is volatile, lost in the crash with the cache.
   */
  private exportPort(): StoragePort {
    const local = createLocalPort(this.backend);
    const asyncPort = this.config.asyncPort;
    if (asyncPort === undefined) return local;
    const generation = this.generation;
    return new DeferredLayer(local, (work) => {
      const run = () => {
        if (generation === this.generation) work();
      };
      if (this.portHeld) this.heldWork.schedule(run);
      else this.clock.after(this.portPrng.int(asyncPort.maxDelayMs + 1), run);
    });
  }

  private traceVerbose(line: string): void {
    if (this.config.verbose) this.trace(line);
  }

  /** Count every request frame the engine puts on the wire (its sends batch and split frames). */
  private tap(id: number, bytes: Uint8Array): void {
    let decoder = this.tapDecoders.get(id);
    if (decoder === undefined) {
      decoder = new FrameDecoder(PAYLOAD_MAX_DEFAULT + 64);
      this.tapDecoders.set(id, decoder);
    }
    decoder.push(bytes, (header, payload) => {
      if (header.opcode === Op.WRITE && this.config.asyncPort !== undefined) this.noteCarrier(id, header.txid, header.offset, payload.subarray(0, header.length));
      if (requestOpcodes.has(header.opcode)) {
        this.sends.set(header.txid, (this.sends.get(header.txid) ?? 0) + 1);
        if (!this.appTxids.has(header.txid)) this.seen.internalTxids.add(header.txid);
      }
      if (this.config.verbose) this.trace(`net c${id} → export: op 0x${header.opcode.toString(16)} txid ${header.txid} off ${header.offset} len ${header.length}`);
    });
    this.network.send(id, bytes);
  }

  private readonly tapDecoders = new Map<number, FrameDecoder>();

  /** A WRITE went out on connection `id`: remember its txid by content for the instance it reaches. */
  private noteCarrier(id: number, txid: number, offset: number, data: Uint8Array): void {
    // The engine sends only after `connected`, which comes after the SYN reached an instance.
    if (this.network.connections.get(id)?.generation !== this.network.generation) return;
    const key = `${offset}:${Bun.hash.xxHash3(data)}`;
    let txids = this.contentTxids.get(key);
    if (txids === undefined) this.contentTxids.set(key, (txids = new Set()));
    txids.add(txid);
  }

  private tickEngine(): void {
    const engine = this.engine;
    const before = engine.counters.keepaliveFailures;
    const id = this.lastConnectId;
    engine.tick(this.now);
    if (engine.counters.keepaliveFailures !== before) {
      this.seen.keepaliveDrops++;
      if (this.network.connections.get(id)?.faulted !== true) {
        violation("liveness", `connection c${id} was declared dead by keepalive although no fault touched it`);
      }
    }
    const window = Math.min(this.config.engine.inflight, this.server.limits.maxInflight);
    if (engine.counters.inflight > window) violation("counters", `inflight gauge ${engine.counters.inflight} exceeds the window ${window}`);
    const slack = window * this.config.engine.maxPayload;
    if (engine.replayBytes > this.config.engine.replayBufferBytes + slack) {
      violation("counters", `replay buffer holds ${engine.replayBytes} bytes, bound is ${this.config.engine.replayBufferBytes} (+${slack} in flight)`);
    }
  }

  private onEngineState(state: string, detail: string): void {
    this.trace(`engine: ${state}: ${detail}`);
    if (state !== "ready") return;
    this.seen.ready++;
    const epoch = this.engine.welcome!.epoch;
    if (this.lastEpoch !== null && this.lastEpoch !== epoch) this.seen.epochChanges++;
    this.lastEpoch = epoch;
  }

  private readonly clientEndpoint = {
    connected: (id: number) => this.engine.connected(id),
    connectFailed: (id: number, reason: string) => this.engine.connectFailed(id, reason),
    receive: (id: number, chunk: Uint8Array) => this.engine.receive(id, chunk),
    disconnected: (id: number, reason: string | null) => this.engine.disconnected(id, reason),
  };

  /** Whether start() ran (scenarios may build first and start later). */
  get running(): boolean {
    return this.started;
  }
}
