/**
 * @module test/sim/sim-driver — what the real driver (client/dst-client.ts) is given in a
 * simulation instead of sockets and timers: a Dialer over SimNetwork and a DriverClock over
 * SimClock. DstClient then runs unmodified: its links, its reconnect loop through the engine,
 * its tick, its deferred flushes, its BUSY queue and its close-vs-reset choice.
 *
 * The dialer answers with a PromiseLike whose callbacks run from simulated network events
 * (connected, refused), never on the microtask queue: a synchronous simulation loop would
 * never run a real Promise's continuation. Connection ids are the network's (one counter over
 * every link), not the engine's numbers.
 */
import type { ListenAddress } from "../../src/lib/address.ts";
import type { Dialer, DriverClock } from "../../src/client/dst-client.ts";
import type { ConnectionHandler, Sink } from "../../src/transport/types.ts";
import type { SimClock } from "./sim-clock.ts";
import type { ClientEndpoint, SimNetwork } from "./sim-network.ts";

interface Dial {
  makeHandler: (sink: Sink) => ConnectionHandler;
  handler: ConnectionHandler | null;
  resolve: ((sink: Sink) => unknown) | null;
  reject: ((error: Error) => unknown) | null;
  /** The outcome, if it came before `then` was called. */
  outcome: { sink: Sink } | { error: Error } | null;
}

export interface SimDialerHooks {
  /** A dial began on network connection `id` (`intruder`: not the driver's, see Simulation.intrude). */
  onDial(id: number, intruder: boolean): void;
  /** The driver wrote `bytes` on `id` (the network carries its own copy). */
  onSend(id: number, bytes: Uint8Array): void;
}

/** Dials over SimNetwork; is the network's ClientEndpoint (it routes events to the right handler). */
export class SimDialer implements ClientEndpoint {
  private nextId = 0;
  private readonly dials = new Map<number, Dial>();
  network!: SimNetwork;
  /** Set while an intruder dials (its connections are not the driver's). */
  intruding = false;

  constructor(private readonly hooks: SimDialerHooks) {}

  readonly dial: Dialer = (_address: ListenAddress, makeHandler) => {
    const id = ++this.nextId;
    const dial: Dial = { makeHandler, handler: null, resolve: null, reject: null, outcome: null };
    this.dials.set(id, dial);
    this.hooks.onDial(id, this.intruding);
    this.network.connect(id);
    const thenable: PromiseLike<Sink> = {
      then(resolve, reject) {
        dial.resolve = resolve ?? null;
        dial.reject = reject ?? null;
        const outcome = dial.outcome;
        if (outcome !== null && "sink" in outcome) resolve?.(outcome.sink);
        if (outcome !== null && "error" in outcome) reject?.(outcome.error);
        return thenable as never;
      },
    };
    return thenable;
  };

  connected(id: number): void {
    const dial = this.dials.get(id);
    if (dial === undefined || dial.outcome !== null) return;
    const sink = this.sink(id);
    dial.handler = dial.makeHandler(sink);
    dial.outcome = { sink };
    dial.resolve?.(sink);
  }

  connectFailed(id: number, reason: string): void {
    const dial = this.dials.get(id);
    if (dial === undefined || dial.outcome !== null) return;
    const error = new Error(reason);
    dial.outcome = { error };
    this.dials.delete(id);
    dial.reject?.(error);
  }

  receive(id: number, chunk: Uint8Array): void {
    this.dials.get(id)?.handler?.onData(chunk);
  }

  disconnected(id: number, reason: string | null): void {
    const dial = this.dials.get(id);
    if (dial === undefined) return;
    this.dials.delete(id);
    if (dial.handler !== null) dial.handler.onClose(reason);
    else if (dial.outcome === null) {
      // Lost before it connected: the dial fails.
      const error = new Error(reason ?? "connection closed");
      dial.outcome = { error };
      dial.reject?.(error);
    }
  }

  private sink(id: number): Sink {
    const network = this.network;
    const hooks = this.hooks;
    return {
      write(bytes, release) {
        // The network holds what it carries until delivery: its own copy, so the driver may
        // recycle its buffer at once (as a real sink's release lets it).
        hooks.onSend(id, bytes.slice());
        release?.();
      },
      queuedBytes: 0,
      // TCP has FIN and RST; the simulated network's client close is a FIN (what was sent
      // still arrives). A reset with bytes in flight is the network's own fault (reset()).
      end: () => network.close(id),
      destroy: () => network.close(id),
      pause() {},
      resume() {},
    };
  }
}

/** The driver's time: SimClock events. `runTick` runs each tick with the harness's checks around it. */
export function simDriverClock(clock: SimClock, runTick: (tick: () => void) => void): DriverClock {
  return {
    now: () => clock.now,
    every(ms, tick) {
      let stopped = false;
      const loop = () => {
        if (stopped) return;
        runTick(tick);
        clock.after(ms, loop);
      };
      clock.after(ms, loop);
      return () => {
        stopped = true;
      };
    },
    defer: (work) => clock.after(0, work),
  };
}
