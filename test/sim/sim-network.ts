/**
 * @module test/sim/sim-network — simulated TCP connections between the client engine and the
 * export, with seeded faults (the model: TigerBeetle's packet_simulator.zig, adapted to a
 * stream transport).
 *
 * Each connection has two directions; each direction is a FIFO of units (one engine `send`
 * or one server `sink.write`: a frame or a batch of frames). The fault model is what TCP can
 * really do to an application, made as adversarial as TCP allows:
 * - delay: every unit waits min + a skewed random latency; order within a direction is
 *   kept (TCP never reorders or duplicates bytes inside one connection);
 * - segmentation: a unit may reach the receiver as several chunks (decoders must cope);
 * - slow link: a throughput cap; big units then arrive progressively, like TCP segments;
 * - stall: a direction holds everything for a period (a latency spike, a clogged path), or
 *   for ever ("vanish": a half-open connection). A held direction of a connection the client
 *   already gave up on still delivers later: that late copy is what server fencing defeats;
 * - reset: both sides are told, everything in flight is lost;
 * - partition: every connection held or blackholed for a period; connects hang or are refused;
 * - connect refused / connect that never completes.
 * Reorder and duplication happen where TCP lets them: across connections (an old
 * connection's held units overtake nothing on the new one, and arrive whenever they are
 * released) and through the engine's own resends. A client `close` is a FIN: the units it
 * already sent still arrive before the export sees the close.
 *
 * Must not: call into the engine or the server synchronously from a call they made (every
 * callback is a scheduled event), or use any randomness but its own Prng.
 */
import type { Prng } from "../../src/lib/prng.ts";
import type { ConnectionHandler, Peer, Sink } from "../../src/transport/types.ts";
import type { SimClock } from "./sim-clock.ts";
import { SimConnection } from "./sim-connection.ts";

export interface NetworkOptions {
  /** One-way latency: minimum plus a skewed random part with this mean (ms). */
  latencyMinMs: number;
  latencyMeanMs: number;
  /** Chance that a unit reaches the receiver in several chunks. */
  splitProbability: number;
  /** Throughput cap while a slow-link period is on (bytes per ms). */
  slowBandwidthBytesPerMs: number;
  connectRefusedProbability: number;
  connectHangProbability: number;
}

/** What the client side of the network calls (sim-driver.ts routes them to the driver's dials). */
export interface ClientEndpoint {
  connected(id: number): void;
  connectFailed(id: number, reason: string): void;
  receive(id: number, chunk: Uint8Array): void;
  disconnected(id: number, reason: string | null): void;
}

export type Accept = (sink: Sink, peer: Peer) => ConnectionHandler;
export type Trace = (line: string) => void;

export class SimNetwork {
  readonly connections = new Map<number, SimConnection>();
  /** Current export's accept function (replaced on restart). */
  accept: Accept | null = null;
  generation = 0;
  slowUntil = 0;
  /** Connect refusals and hangs happen only while faults are on (not before the first
   * handshake, not after heal). */
  connectFaults = false;
  partition: { until: number; mode: "hold" | "blackhole"; toServer: boolean; toClient: boolean } | null = null;
  /** Connection whose bytes the export is reading right now (null outside a delivery). */
  delivering: number | null = null;
  /** The export fenced connection `fenced` while reading `taker`'s bytes (a session takeover). */
  onFence: ((taker: number, fenced: number) => void) | null = null;
  counters = { connects: 0, refused: 0, hung: 0, resets: 0, stalls: 0, partitions: 0, unitsSent: 0, lateDeliveries: 0, lateConnects: 0 };

  constructor(
    readonly clock: SimClock,
    readonly prng: Prng,
    readonly options: NetworkOptions,
    readonly client: ClientEndpoint,
    private readonly trace: Trace,
  ) {}

  // ---- the client's side: connect, send, close (SimDialer and its sinks) ------------------

  connect(id: number): void {
    const connection = new SimConnection(id, this);
    this.connections.set(id, connection);
    this.counters.connects++;
    const outcome = this.connectOutcome();
    if (outcome !== "ok") connection.faulted = true;
    if (outcome === "hang") {
      this.counters.hung++;
      this.trace(`net c${id}: connect hangs`);
      // A SYN held by a partition is retransmitted by TCP and gets through once it ends: the
      // connect completes late, whether or not the client still wants it (a lost SYN, a
      // blackhole, hangs for good: the OS gives up after minutes).
      const partition = this.partition;
      if (partition !== null && partition.mode === "hold") this.clock.at(Math.ceil(partition.until / this.clock.resolutionMs), () => {
        if (connection.clientOpen) this.counters.lateConnects++;
        this.completeConnect(connection, "ok");
      });
      return;
    }
    this.completeConnect(connection, outcome);
  }

  private completeConnect(connection: SimConnection, outcome: "ok" | "refused"): void {
    const id = connection.id;
    if (!connection.clientOpen) return;
    const synLatency = this.latency();
    const rtt = synLatency + this.latency();
    if (outcome === "refused") {
      this.counters.refused++;
      this.clock.after(rtt, () => {
        if (connection.clientOpen) this.client.connectFailed(id, "connection refused");
        connection.clientOpen = false;
        connection.phase = "closed";
      });
      return;
    }
    connection.toServer.notBefore(this.clock.now + synLatency);
    this.clock.after(synLatency, () => this.arriveAtServer(connection));
    this.clock.after(rtt, () => {
      if (!connection.clientOpen || connection.phase !== "connecting") return;
      connection.phase = "open";
      this.client.connected(id);
    });
  }

  send(id: number, frame: Uint8Array): void {
    const connection = this.connections.get(id);
    if (connection === undefined || !connection.clientOpen) return;
    this.counters.unitsSent++;
    connection.toServer.send(frame);
  }

  close(id: number): void {
    const connection = this.connections.get(id);
    if (connection === undefined || !connection.clientOpen) return;
    connection.clientOpen = false;
    connection.toClient.discard();
    if (connection.serverOpen) connection.toServer.closeAfterDrain("closed by the client");
    connection.settle();
  }

  // ---- faults ----------------------------------------------------------------------------

  /** Connection reset: both sides are told (after a latency), everything in flight is lost. */
  reset(id: number, reason = "connection reset by peer"): void {
    const connection = this.connections.get(id);
    if (connection === undefined || connection.phase === "closed") return;
    this.counters.resets++;
    connection.faulted = true;
    connection.toServer.discard();
    connection.toClient.discard();
    this.trace(`net c${id}: reset`);
    this.clock.after(this.latency(), () => connection.clientClosed(reason));
    this.clock.after(this.latency(), () => connection.serverClosed(reason));
  }

  /** Hold one direction until `untilMs` (Infinity: until release), or lose it for good. */
  stall(id: number, direction: "toServer" | "toClient", untilMs: number | "vanish"): void {
    const connection = this.connections.get(id);
    if (connection === undefined) return;
    this.counters.stalls++;
    connection.faulted = true;
    const target = connection[direction];
    this.trace(`net c${id}: ${direction} ${untilMs === "vanish" ? "vanishes" : `held until ${untilMs}`}`);
    if (untilMs === "vanish") target.vanish();
    else target.hold(untilMs);
  }

  release(id: number): void {
    const connection = this.connections.get(id);
    if (connection === undefined) return;
    connection.toServer.release();
    connection.toClient.release();
  }

  startPartition(durationMs: number, mode: "hold" | "blackhole", toServer: boolean, toClient: boolean): void {
    const until = this.clock.now + durationMs;
    this.partition = { until, mode, toServer, toClient };
    this.counters.partitions++;
    this.trace(`net: partition (${mode}) for ${durationMs} ms`);
    for (const connection of this.connections.values()) {
      if (connection.phase === "closed") continue;
      if (toServer) this.stall(connection.id, "toServer", mode === "hold" ? until : "vanish");
      if (toClient) this.stall(connection.id, "toClient", mode === "hold" ? until : "vanish");
    }
    this.clock.after(durationMs, () => {
      if (this.partition !== null && this.partition.until <= this.clock.now) this.partition = null;
    });
  }

  /** Convergence: no partition, no slow link, everything held or throttled is delivered now. */
  heal(): void {
    this.partition = null;
    this.slowUntil = 0;
    this.connectFaults = false;
    for (const connection of this.connections.values()) {
      this.release(connection.id);
      connection.toServer.unthrottle();
      connection.toClient.unthrottle();
    }
    this.trace("net: healed");
  }

  /** The export process died: its side of every connection is gone; clients see resets. */
  exportDied(): void {
    this.generation++;
    for (const connection of this.connections.values()) {
      if (connection.phase === "closed" || connection.generation === -1) continue;
      connection.serverOpen = false; // a dead process runs no onClose
      connection.toServer.discard();
      connection.toClient.closeAfterDrain("connection reset by peer (export restarted)");
      connection.settle();
    }
  }

  // ---- randomness ------------------------------------------------------------------------

  /** Skewed latency: mostly near the mean, sometimes several times it. Integer ms. */
  latency(): number {
    const { latencyMinMs, latencyMeanMs } = this.options;
    const u = this.prng.float();
    let extra: number;
    if (u < 0.8) extra = this.prng.float() * latencyMeanMs;
    else if (u < 0.95) extra = latencyMeanMs * (1 + 2 * this.prng.float());
    else extra = latencyMeanMs * (3 + 3 * this.prng.float());
    return latencyMinMs + Math.floor(extra);
  }

  /** Most a healthy one-way trip takes (for liveness bounds). */
  get latencyMaxMs(): number {
    return this.options.latencyMinMs + 6 * this.options.latencyMeanMs;
  }

  bandwidth(): number {
    return this.clock.now < this.slowUntil ? this.options.slowBandwidthBytesPerMs : Number.POSITIVE_INFINITY;
  }

  split(bytes: Uint8Array): Uint8Array[] {
    if (bytes.length < 2 || !this.prng.chance(this.options.splitProbability)) return [bytes];
    const pieces: Uint8Array[] = [];
    let at = 0;
    const cuts = 1 + this.prng.int(3);
    for (let i = 0; i < cuts && at < bytes.length - 1; i++) {
      const cut = at + 1 + this.prng.int(bytes.length - at - 1);
      pieces.push(bytes.subarray(at, cut));
      at = cut;
    }
    pieces.push(bytes.subarray(at));
    return pieces;
  }

  private connectOutcome(): "ok" | "refused" | "hang" {
    const partition = this.partition;
    if (partition !== null && partition.toServer) return partition.mode === "hold" || this.prng.chance(0.5) ? "hang" : "refused";
    if (partition !== null && partition.toClient) return "hang";
    if (!this.connectFaults) return "ok";
    if (this.prng.chance(this.options.connectRefusedProbability)) return "refused";
    if (this.prng.chance(this.options.connectHangProbability)) return "hang";
    return "ok";
  }

  private arriveAtServer(connection: SimConnection): void {
    if (!connection.clientOpen || this.accept === null) return; // client gave up before the SYN landed
    connection.serverOpen = true;
    connection.generation = this.generation;
    const peer: Peer = { transport: "tcp", address: "127.0.0.1", port: 40000 + (connection.id % 20000) };
    connection.handler = this.accept(connection.sink, peer);
    if (this.clock.now < this.slowUntil) connection.faulted = true;
  }
}
