/**
 * @module test/sim/harness — one simulated world: the real driver (DstClient, with its
 * ClientEngine) and the real DstServer joined by SimNetwork, over a SimBackend, on a SimClock,
 * with the oracle and checkers watching every step. DstClient gets a simulated dialer and
 * clock (sim-driver.ts); the export is driven as daemon/export-node.ts drives it. It is also
 * the DSL the scenario tests are written in.
 *
 * Determinism: every random choice comes from Prng streams split off the seed (network,
 * backend, workload/faults, engine jitter), so changing how one component draws does not
 * reshuffle the others. The DST server's session ids, and on keyed runs the handshake nonces
 * and ephemeral keys, come from node:crypto, but nothing depends on their value: ciphertext
 * differs from run to run, its length (and so every event) does not.
 */
import { DstClient } from "../../src/client/dst-client.ts";
import { BUSY, ClientEngine, type OpKind, type Request } from "../../src/engine/client-engine.ts";
import type { ListenAddress } from "../../src/lib/address.ts";
import type { Sink } from "../../src/transport/types.ts";
import type { EngineOptions } from "../../src/engine/options.ts";
import { parseAllowRule, type AllowRule } from "../../src/lib/acl.ts";
import { errnoName } from "../../src/lib/errno.ts";
import { Prng } from "../../src/lib/prng.ts";
import { DstServer, type DstServerOptions } from "../../src/export/server.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { DeferredLayer, HeldWork } from "../../src/storage/layers/deferred.ts";
import type { StoragePort } from "../../src/storage/port.ts";
import type { SuiteName } from "../../src/crypto/suites.ts";
import type { Outbox } from "../../src/engine/outbox.ts";
import { HEADER_SIZE, Op } from "../../src/wire/dst/constants.ts";
import { decodeHeader, type Header } from "../../src/wire/dst/header.ts";
import { makeWriteData } from "./block-data.ts";
import { checkFailure, Oracle, SimViolation, violation, type OpRecord } from "./checkers.ts";
import { SimBackend, type CrashMode } from "./sim-backend.ts";
import { SimClock } from "./sim-clock.ts";
import { installNonceWatch, nonceWatch } from "./nonce-watch.ts";
import { SimNbdApplication } from "./sim-nbd.ts";
import { createEnginePort } from "../../src/storage/remote/engine-port.ts";
import { SimDialer, simDriverClock } from "./sim-driver.ts";
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
  /** inlineUpTo: READ/WRITE up to that many bytes complete inline (a local file port's shape). */
  asyncPort?: { maxDelayMs: number; inlineUpTo?: number };
  /**
   * Hand WRITE buffers over to the engine with a way back (Request.handOver + recycle), as
   * `dstd copy` does: a buffer given back is at once overwritten with junk, so any use of it
   * afterwards (a resend, a replay, a record sealed late) reaches the export as corrupt data
   * and the data checkers fail the run; a buffer given back twice fails it at once.
   */
  handOver?: boolean;
  /**
   * Keyed sessions: a pre-shared key fixed by the seed, the suite both ends use. The handshake
   * proofs, the resumption proof and the sealed records (crypto/) then run under every fault.
   * Absent: anonymous over loopback (resumption by token).
   */
  keys?: { identity: string; secret: Uint8Array; suite: SuiteName };
  /**
   * The application speaks NBD to the real NBD front (kernel mode) over the engine port, as
   * `dstd attach` runs it (sim-nbd.ts checks every reply); absent: it calls DstClient.submit.
   */
  nbdFront?: boolean;
  /** Planted bug (checker tests only): the export's sealers reuse a nonce every n-th record. */
  plantNonceReuse?: number;
}

const SIM_ADDRESS: ListenAddress = { transport: "tcp", host: "export.sim", port: 7000 };
const TRACE_LINES = Number(process.env.SIM_TRACE_LINES ?? 200);
const ALLOW: AllowRule[] = [parseAllowRule("127.0.0.0/8:rw") as AllowRule];
const requestOpcodes = new Set<number>([Op.READ, Op.WRITE, Op.FLUSH, Op.TRIM, Op.WRITE_ZEROES]);

export class Simulation {
  readonly clock = new SimClock(1);
  readonly network: SimNetwork;
  readonly backend: SimBackend;
  /** The real driver; set once start() saw the first handshake. */
  client!: DstClient;
  private readonly dialer: SimDialer;
  private readonly engineSeed: number;
  /** Submits that found the driver BUSY, in order, run again when it has room. */
  private readonly waitingForRoom: Array<() => void> = [];
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
  readonly marks = { fenced: 0, takeovers: 0, staleResumes: 0, resumesRefused: 0, intruders: 0, duplicates: 0, lateDeliveries: 0, timeouts: 0, eio: 0 };
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
  private readonly onRenumber: (from: number, to: number) => void;
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
    installNonceWatch();
    nonceWatch.plantReuse = config.plantNonceReuse ?? 0;
    nonceWatch.onReuse = (detail) => {
      this.deferred ??= new SimViolation("nonce reuse", detail);
    };
    this.clock.afterEvent = () => {
      if (this.deferred !== null) throw this.deferred;
    };
    this.oracle = new Oracle(config.blocks, config.blockSize);
    this.network = new SimNetwork(this.clock, networkPrng, config.network, { connected: (id) => this.dialer.connected(id), connectFailed: (id, r) => this.dialer.connectFailed(id, r), receive: (id, c) => this.dialer.receive(id, c), disconnected: (id, r) => this.dialer.disconnected(id, r) }, (line) => this.trace(line));
    // A takeover must come from a newer connection than the one it fences: the engine numbers
    // its connections in the order it opens them and keeps one at a time, so an older one
    // taking over is a late handshake the client already gave up on (docs/protocol.md §6.5),
    // and it would cut the client's live connection.
    this.network.onFence = (taker, fenced) => {
      if (this.intruderConnections.has(taker)) {
        this.deferred ??= new SimViolation("session hijack", `intruder c${taker} resumed the client's session without its resumption ${config.keys ? "proof" : "token"} and fenced c${fenced}`);
        return;
      }
      this.marks.takeovers++;
      if (taker < fenced) this.deferred ??= new SimViolation("stale takeover", `the late handshake of c${taker} took the session over and fenced the newer c${fenced}`);
    };
    this.engineSeed = engineSeed;
    this.dialer = new SimDialer({
      onDial: (id, intruder) => {
        if (intruder) return void this.intruderConnections.add(id);
        this.lastConnectId = id;
        this.seen.connects++;
      },
      onSend: (id, bytes) => this.network.send(id, bytes),
    });
    this.dialer.network = this.network;
    // A new session gives outstanding requests fresh txids: follow them, so per-request send
    // counts and the app/internal split stay per request.
    this.onRenumber = (from, to) => {
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

  /** The first link's engine (its WELCOME, state and counters describe the connection). */
  get engine(): ClientEngine {
    return this.client.engine;
  }

  /**
   * Open the driver (DstClient.open: dial, handshake) and start the export's tick. Async only
   * here: open() is a real Promise, settled on the microtask queue, so this loop runs
   * simulated time in small steps and yields between them until it settles. From then on
   * everything runs in simulated time (submit and its callbacks, the driver's tick).
   */
  async start(): Promise<this> {
    this.started = true;
    const { config } = this;
    let outcome: DstClient | Error | null = null;
    DstClient.open({
      ...config.engine,
      address: SIM_ADDRESS,
      exportName: "disk",
      clientName: "sim",
      seed: this.engineSeed,
      tickMs: config.tickMs,
      log: {
        info: (m) => this.trace(`engine: ${m}`),
        warn: (m) => this.trace(`engine WARN: ${m}`),
      },
      onStateChange: (state, detail) => this.onEngineState(state, detail),
      dial: this.dialer.dial,
      ...(config.keys ? { auth: { key: { identity: config.keys.identity, secret: config.keys.secret.slice() }, suites: [config.keys.suite] } } : {}),
      clock: simDriverClock(this.clock, (tick) => this.tickEngine(tick)),
    }).then(
      (client) => void (outcome = client),
      (error: Error) => void (outcome = error),
    );
    // The export node ticks its server about once a second (daemon/export-node.ts): PONGs
    // for a client whose request is still arriving, rate-limited warnings.
    const serverTick = () => {
      this.server.tick();
      this.clock.after(1000, serverTick);
    };
    this.clock.after(1000, serverTick);
    const end = this.now + 2000;
    while (outcome === null && this.now < end) {
      this.run(5);
      await new Promise((resolve) => setImmediate(resolve));
    }
    const opened = outcome as DstClient | Error | null;
    if (opened === null) violation("liveness", "first handshake never completed");
    if (opened instanceof Error) violation("liveness", `the driver did not open: ${opened.message}`);
    const client = opened as DstClient;
    this.client = client;
    this.lastEpoch = client.engine.welcome!.epoch;
    client.engine.onRenumber = this.onRenumber;
    this.tapFrames(client.engine);
    client.onResize = (size) => {
      this.trace(`engine: export size is now ${size} bytes`);
      this.resizes.push(size);
    };
    if (config.nbdFront === true) this.startNbdFront(client);
    client.onRoom = () => {
      for (const retry of this.waitingForRoom.splice(0)) retry();
    };
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
    if (kind === "write" && this.config.handOver === true && this.config.nbdFront !== true) {
      request.handOver = true;
      request.recycle = (buffer) => {
        if (this.recycled.has(buffer)) violation("budget", `request #${op.id}'s write buffer was given back twice`);
        this.recycled.add(buffer);
        buffer.fill(0xa5);
      };
    }
    if (kind === "flush") request.offset = request.length = 0;
    this.dispatch(op, request);
    return op;
  }

  /** The NBD application (SimConfig.nbdFront), once started. */
  nbd: SimNbdApplication | null = null;
  /** NBD mode: requests sent on the NBD wire whose engine txid is not known yet, by kind:offset:length. */
  private readonly nbdOps = new Map<string, OpRecord[]>();

  private startNbdFront(client: DstClient): void {
    this.nbd = new SimNbdApplication(this.clock, createEnginePort(client, "sim"), (line) => this.traceVerbose(line));
    // Learn each NBD request's txid where the engine port submits it (in request order).
    const submit = client.submit.bind(client);
    client.submit = (request, done) => {
      const accepted = submit(request, done);
      if (accepted > 0) {
        const op = this.nbdOps.get(`${request.kind}:${request.offset}:${request.length}`)?.shift();
        if (op !== undefined) {
          op.txid = accepted;
          this.appTxids.add(accepted);
          this.opsByTxid.set(accepted, op);
          this.traceVerbose(`app: #${op.id} → txid ${accepted}`);
        }
      }
      return accepted;
    };
  }

  /** Submit to the driver; on BUSY, again once it has room (what `dstd copy` does). */
  private dispatch(op: OpRecord, request: Request): void {
    if (this.nbd !== null) {
      const k = `${request.kind}:${request.offset}:${request.length}`;
      let ops = this.nbdOps.get(k);
      if (ops === undefined) this.nbdOps.set(k, (ops = []));
      ops.push(op);
      const pending = { kind: op.kind, offset: request.offset, length: request.length, portErrno: -1, done: (status: number, data: Uint8Array | null) => this.completed(op, status, data) };
      const handle = this.nbd.request(pending, op.fua, request.data ?? null);
      this.trace(`app: #${op.id} ${op.kind} blocks ${op.first}+${op.count}${op.fua ? " fua" : ""} v${op.version} → NBD handle ${handle}`);
      return;
    }
    const txid = this.client.submit(request, (status, data) => this.completed(op, status, data));
    if (txid === BUSY) {
      this.trace(`app: #${op.id} ${op.kind}: driver busy; waiting for room`);
      this.waitingForRoom.push(() => this.dispatch(op, request));
      return;
    }
    op.txid = txid;
    this.appTxids.add(op.txid);
    this.opsByTxid.set(op.txid, op);
    this.trace(`app: #${op.id} ${op.kind} blocks ${op.first}+${op.count}${op.fua ? " fua" : ""} v${op.version} → txid ${op.txid}`);
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

  /**
   * The driver holds no socket but its current connection: a connect it gave up on that
   * completes late must be closed, not kept (it would hold a socket and an export slot).
   */
  checkSockets(): void {
    for (const connection of this.network.connections.values()) {
      if (connection.phase !== "open" || !connection.clientOpen || this.intruderConnections.has(connection.id)) continue;
      if (connection.id !== this.lastConnectId) violation("leak", `the driver keeps connection c${connection.id} open, but its current connection is c${this.lastConnectId}`);
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
    this.checkSockets();
    let timedOut = 0;
    for (const op of this.ops) if (op.status === 110) timedOut++;
    if (c.timeouts < timedOut) violation("counters", `timeouts is ${c.timeouts} but ${timedOut} requests timed out`);
  }

  /** Coverage marks of this run so far: which recovery paths actually ran. */
  coverage(): Record<string, number> {
    const c = this.engine.counters;
    return {
      ...this.marks,
      duplicates: this.marks.duplicates + this.server.counters.duplicates,
      staleResumes: this.marks.staleResumes + this.server.counters.staleResumes,
      resumesRefused: this.marks.resumesRefused + this.server.counters.resumesRefused,
      keyedSeeds: this.config.keys ? 1 : 0,
      nbdRequests: this.nbd?.counters.requests ?? 0,
      nbdErrors: this.nbd?.counters.errors ?? 0,
      keyedReconnects: this.config.keys ? c.reconnects : 0,
      lateDeliveries: this.network.counters.lateDeliveries,
      lateConnects: this.network.counters.lateConnects,
      restarts: this.seen.restarts,
      replays: c.replays,
      replayFailures: c.replayFailures,
      autoFlushes: c.autoFlushes,
      reconnects: c.reconnects,
      keepaliveFailures: c.keepaliveFailures,
      resends: c.resends,
      staleReplies: c.staleReplies,
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
      this.marks.resumesRefused += this.server.counters.resumesRefused;
    }
    const keys = this.config.keys;
    this.server = new DstServer({
      exports: [{ name: "disk", description: "", port: this.exportPort(), readOnly: false, allow: ALLOW, ...(keys ? { suites: [keys.suite] } : {}) }],
      ...(keys ? { keys: new Map([[keys.identity, [keys.secret.slice()]]]) } : {}),
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
    return new DeferredLayer(
      local,
      (work) => {
        const run = () => {
          if (generation === this.generation) work();
        };
        if (this.portHeld) this.heldWork.schedule(run);
        else this.clock.after(this.portPrng.int(asyncPort.maxDelayMs + 1), run);
      },
      asyncPort.inlineUpTo,
    );
  }

  private traceVerbose(line: string): void {
    if (this.config.verbose) this.trace(line);
  }

  /**
   * Count every request frame the engine transmits, where it hands it to its outbox
   * (engine/outbox.ts): in plaintext, before batching or sealing, so the count is the same on
   * plain and keyed sessions (a sealed record cannot be opened outside the session: its keys
   * come from an ephemeral exchange). The engine counts a send there too: a frame whose
   * connection died before the deferred flush took it out never reached the wire, but it was
   * sent as far as the engine (and its resend budget) is concerned.
   */
  private tapFrames(engine: ClientEngine): void {
    const outbox = (engine as unknown as { outbox: Outbox }).outbox;
    const add = outbox.add.bind(outbox);
    outbox.add = (header, payload = null, digest = null, lease = null) => {
      this.onFrame(decodeHeader(header, 0), payload ?? header.subarray(HEADER_SIZE));
      add(header, payload, digest, lease);
    };
  }

  private onFrame(header: Header, payload: Uint8Array): void {
    const id = this.lastConnectId;
    if (header.opcode === Op.WRITE && this.config.asyncPort !== undefined) this.noteCarrier(id, header.txid, header.offset, payload.subarray(0, header.length));
    if (requestOpcodes.has(header.opcode)) {
      this.sends.set(header.txid, (this.sends.get(header.txid) ?? 0) + 1);
      if (!this.appTxids.has(header.txid)) this.seen.internalTxids.add(header.txid);
    }
    if (this.config.verbose) this.trace(`net c${id} → export: op 0x${header.opcode.toString(16)} txid ${header.txid} off ${header.offset} len ${header.length}`);
  }

  /** A WRITE went out on connection `id`: remember its txid by content for the instance it reaches. */
  private noteCarrier(id: number, txid: number, offset: number, data: Uint8Array): void {
    // The engine sends only after `connected`, which comes after the SYN reached an instance.
    if (this.network.connections.get(id)?.generation !== this.network.generation) return;
    const key = `${offset}:${Bun.hash.xxHash3(data)}`;
    let txids = this.contentTxids.get(key);
    if (txids === undefined) this.contentTxids.set(key, (txids = new Set()));
    txids.add(txid);
  }

  /** One tick of the driver (DstClient's clock.every), with the per-tick checks around it. */
  private tickEngine(tick: () => void): void {
    if (this.client === undefined) return tick(); // opening: checks begin once it is open
    const engine = this.engine;
    const before = engine.counters.keepaliveFailures;
    const id = this.lastConnectId;
    tick();
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
    if (this.client === undefined) return; // the first WELCOME: start() records its epoch
    const epoch = this.engine.welcome!.epoch;
    if (this.lastEpoch !== null && this.lastEpoch !== epoch) this.seen.epochChanges++;
    this.lastEpoch = epoch;
  }


  /** Network connections of intruders (never the driver's). */
  readonly intruderConnections = new Set<number>();

  /**
   * An intruder: another client of the same identity (same key, or anonymous from the same
   * address) whose HELLO names the client's live session, which it can read off the wire, but
   * without the session's resumption proof (keyed) or token (anonymous), which it cannot. The
   * export must refuse it (ESTALE, `resumesRefused`) and leave the session alone; admitted,
   * it would fence the client's connection ("session hijack"). It gives up after its first
   * answer.
   */
  intrude(): void {
    const welcome = this.client?.engine.welcome;
    if (welcome == null) return;
    this.marks.intruders++;
    const keys = this.config.keys;
    const sinks = new Map<number, Sink>();
    const seq = 1_000_000 * this.marks.intruders;
    const engine: ClientEngine = new ClientEngine(
      {
        ...this.config.engine,
        seed: this.marks.intruders,
        exportName: "disk",
        clientName: "intruder",
        ...(keys ? { auth: { key: { identity: keys.identity, secret: keys.secret.slice() }, suites: [keys.suite] } } : {}),
      },
      {
        connect: () => {
          const id = seq;
          this.dialer.intruding = true;
          const dialed = this.dialer.dial(SIM_ADDRESS, () => ({
            onData: (chunk) => engine.receive(id, chunk),
            onDrain: () => {},
            onClose: (reason) => engine.disconnected(id, reason),
          }));
          this.dialer.intruding = false;
          dialed.then(
            (sink) => {
              sinks.set(id, sink);
              engine.connected(id);
            },
            (error: Error) => engine.connectFailed(id, error.message),
          );
        },
        send: (id, bytes) => sinks.get(id)?.write(bytes),
        close: (id) => sinks.get(id)?.destroy(),
      },
      { info: (m) => this.traceVerbose(`intruder: ${m}`), warn: (m) => this.traceVerbose(`intruder: ${m}`) },
    );
    const inside = engine as unknown as { session: { id: Uint8Array | null }; connection: number };
    inside.session.id = welcome.sessionId.slice();
    engine.onStateChange = (state, detail) => {
      this.trace(`intruder: ${state}: ${detail}`);
      if (state !== "connecting" && state !== "handshaking") this.clock.after(0, () => engine.shutdown("intruder done"));
    };
    engine.start(this.now);
    // Its one connection gets a number above any the client used (its HELLO carries it): a
    // lower one is refused as a late handshake (docs/protocol.md §6.5) before the proof matters.
    inside.connection = seq;
  }

  /** Whether start() ran (scenarios may build first and start later). */
  get running(): boolean {
    return this.started;
  }
}
