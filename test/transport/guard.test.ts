/**
 * transport/guard.ts on a driven clock: every deadline and cap of docs/security.md "Resource
 * limits" fires exactly when it should and not before, closes only the connection it names,
 * releases its slots, tells the protocol once, and logs through the per-source rate limit.
 * The same rules run against the compiled binary over real sockets in test/security/.
 */
import { describe, expect, test } from "bun:test";
import { ConnectionBudget } from "../../src/transport/fd-budget.ts";
import {
  ConnectionGuard,
  sourceKey,
  type ConnectionLimits,
  type GuardClock,
  type GuardHooks,
  type GuardedHandler,
  CONTENDED_SWEEPS,
  MIN_READ_RATE,
} from "../../src/transport/guard.ts";
import type { Peer, Sink } from "../../src/transport/types.ts";
import { FakeSink } from "../helpers/fake-sink.ts";

class FakeClock implements GuardClock {
  time = 0;
  ticks: Array<() => void> = [];
  periods: number[] = [];
  stopped = 0;
  now(): number {
    return this.time;
  }
  every(ms: number, tick: () => void): () => void {
    this.ticks.push(tick);
    this.periods.push(ms);
    return () => this.stopped++;
  }
  /** Advance and run the sweep once (as the interval would). */
  advance(ms: number): void {
    this.time += ms;
    for (const tick of this.ticks) tick();
  }
}

/** A protocol stand-in: records what the guard tells it and lets the test play the protocol. */
class Probe implements GuardedHandler {
  closes: Array<string | null> = [];
  data: Uint8Array[] = [];
  partial = 0;
  constructor(
    readonly sink: Sink,
    readonly peer: Peer,
    readonly hooks: GuardHooks,
  ) {}
  onData(chunk: Uint8Array): void {
    this.data.push(chunk);
  }
  onDrain(): void {}
  onClose(reason: string | null): void {
    this.closes.push(reason);
  }
  partialBytes(): number {
    return this.partial;
  }
}

const LIMITS: ConnectionLimits = {
  handshakeTimeoutMs: 10_000,
  frameTimeoutMs: 30_000,
  maxConnections: 1000,
  maxUnauthenticated: 8,
  maxUnauthenticatedPerSource: 3,
};

function setup(limits: Partial<ConnectionLimits> = {}, extra: { budget?: ConnectionBudget; replyStarved?: () => boolean; receiveStarved?: () => boolean } = {}) {
  const clock = new FakeClock();
  const lines: string[] = [];
  const probes: Probe[] = [];
  const guard = new ConnectionGuard(
    (sink, peer, hooks) => {
      const probe = new Probe(sink, peer, hooks);
      probes.push(probe);
      return probe;
    },
    {
      protocol: "TEST",
      limits: { ...LIMITS, ...limits },
      log: { info: (m) => lines.push(`info: ${m}`), warn: (m) => lines.push(`warn: ${m}`) },
      clock,
      ...extra,
    },
  );
  let port = 40000;
  /** Accept a connection from `address`; returns its sink and (if it got through) its probe. */
  const connect = (address = "192.0.2.1") => {
    const sink = new FakeSink();
    const before = probes.length;
    const handler = guard.accept(sink, { transport: "tcp", address, port: port++ });
    sink.handler = handler;
    return { sink, handler, probe: probes.length > before ? probes[probes.length - 1]! : null };
  };
  return { clock, guard, lines, probes, connect };
}

describe("handshake deadline", () => {
  test("a connection that is never admitted is closed at the deadline, not before", () => {
    const { clock, guard, connect, lines } = setup();
    const { sink, probe } = connect();
    clock.advance(9_999);
    expect(sink.destroyed).toBe(false);
    clock.advance(1);
    expect(sink.destroyed).toBe(true);
    expect(probe!.closes).toEqual(["handshake not completed within 10s"]);
    expect(guard.stats).toMatchObject({ open: 0, unauthenticated: 0, handshakeTimeouts: 1 });
    expect(lines).toEqual(["warn: TEST 192.0.2.1:40000: handshake not completed within 10s; closing"]);
  });

  test("an admitted connection is never closed by the handshake deadline, and frees its slot", () => {
    const { clock, guard, connect } = setup();
    const { sink, probe } = connect();
    clock.advance(5_000);
    probe!.hooks.admitted();
    probe!.hooks.admitted(); // idempotent
    expect(guard.stats.unauthenticated).toBe(0);
    clock.advance(3_600_000);
    expect(sink.destroyed).toBe(false);
    expect(guard.stats.open).toBe(1);
  });

  test("the protocol hears onClose once, with the guard's reason, even when the transport reports the close too", () => {
    const { clock, connect } = setup();
    const { handler, probe } = connect();
    clock.advance(10_000);
    handler.onClose(null); // the socket's own close arriving afterwards
    expect(probe!.closes).toEqual(["handshake not completed within 10s"]);
  });

  test("the sweep runs at a quarter of the shortest deadline (bounded lateness) and stops on close()", () => {
    const { clock, guard } = setup({ handshakeTimeoutMs: 1000, frameTimeoutMs: 2000 });
    expect(clock.periods).toEqual([250]);
    guard.close();
    expect(clock.stopped).toBe(1);
  });
});

describe("caps on connections in their handshake", () => {
  test("per source: the connection past the cap is closed at once; other sources are unaffected", () => {
    const { connect, guard, lines } = setup();
    const held = [connect("192.0.2.1"), connect("192.0.2.1"), connect("192.0.2.1")];
    const fourth = connect("192.0.2.1");
    expect(fourth.probe).toBeNull(); // the protocol never saw it
    expect(fourth.sink.destroyed).toBe(true);
    expect(held.every((c) => !c.sink.destroyed)).toBe(true);
    const other = connect("192.0.2.2");
    expect(other.sink.destroyed).toBe(false);
    expect(guard.stats).toMatchObject({ open: 4, unauthenticated: 4, refusedPerSource: 1 });
    expect(lines.some((l) => l.includes("3 connections from 192.0.2.1 are already in their handshake (max_unauthenticated_per_source)"))).toBe(true);
  });

  test("per source counts only handshakes: admitting one makes room for another", () => {
    const { connect } = setup();
    const first = connect();
    connect();
    connect();
    first.probe!.hooks.admitted();
    expect(connect().sink.destroyed).toBe(false);
  });

  test("per listener: the oldest handshake of the busiest source makes room, so a newcomer always gets in", () => {
    const { connect, guard } = setup();
    // 8 handshakes: 3 from .1 (busiest, oldest first), 2 from .2, 3 spread over .3/.4/.5
    const a = [connect("192.0.2.1"), connect("192.0.2.1"), connect("192.0.2.1")];
    const b = [connect("192.0.2.2"), connect("192.0.2.2")];
    const c = [connect("192.0.2.3"), connect("192.0.2.4"), connect("192.0.2.5")];
    const newcomer = connect("198.51.100.9");
    expect(newcomer.sink.destroyed).toBe(false);
    expect(a[0]!.sink.destroyed).toBe(true);
    expect(a[0]!.probe!.closes[0]).toContain("max_unauthenticated");
    expect([...a.slice(1), ...b, ...c].every((x) => !x.sink.destroyed)).toBe(true);
    expect(guard.stats).toMatchObject({ unauthenticated: 8, evicted: 1 });
  });

  test("IPv6 peers are grouped by /64; IPv4 by address; Unix sockets share one source", () => {
    expect(sourceKey({ transport: "tcp", address: "2001:db8:1:2:aaaa::1", port: 1 })).toBe("2001:db8:1:2::/64");
    expect(sourceKey({ transport: "tcp", address: "2001:db8:1:2:bbbb::7", port: 1 })).toBe("2001:db8:1:2::/64");
    expect(sourceKey({ transport: "tcp", address: "2001:db8:1:3::1", port: 1 })).toBe("2001:db8:1:3::/64");
    expect(sourceKey({ transport: "tcp", address: "10.0.0.1", port: 1 })).toBe("10.0.0.1");
    expect(sourceKey({ transport: "unix", address: "/run/x.sock", port: 0 })).toBe("unix");
    const { connect } = setup();
    for (let i = 1; i <= 3; i++) expect(connect(`2001:db8:1:2::${i}`).sink.destroyed).toBe(false);
    expect(connect("2001:db8:1:2::99").sink.destroyed).toBe(true);
  });
});

describe("connection budget", () => {
  test("past the budget, a listener without handshakes to evict accepts and closes at once, logged once", () => {
    const budget = new ConnectionBudget(3);
    const { connect, guard, lines } = setup({}, { budget });
    const admitted = [connect("192.0.2.1"), connect("192.0.2.2"), connect("192.0.2.3")];
    for (const c of admitted) c.probe!.hooks.admitted();
    const refused = [connect("192.0.2.4"), connect("192.0.2.5"), connect("192.0.2.6")];
    expect(refused.every((c) => c.sink.destroyed && c.probe === null)).toBe(true);
    expect(admitted.every((c) => !c.sink.destroyed)).toBe(true);
    expect(guard.stats.refusedAtBudget).toBe(3);
    expect(lines.filter((l) => l.includes("the most this process keeps"))).toHaveLength(1);
    admitted[0]!.handler.onClose(null); // one leaves: room again
    expect(budget.open).toBe(2);
    expect(connect("192.0.2.7").sink.destroyed).toBe(false);
  });

  test("past the budget, a handshake is evicted before an admitted client would be locked out", () => {
    const budget = new ConnectionBudget(2);
    const { connect } = setup({}, { budget });
    const admitted = connect("192.0.2.1");
    admitted.probe!.hooks.admitted();
    const idle = connect("203.0.113.5");
    const newcomer = connect("192.0.2.9");
    expect(idle.sink.destroyed).toBe(true);
    expect(newcomer.sink.destroyed).toBe(false);
    expect(admitted.sink.destroyed).toBe(false);
    expect(budget.open).toBe(2);
  });

  test("the budget is shared by every guard of the process", () => {
    const budget = new ConnectionBudget(2);
    const one = setup({}, { budget });
    const two = setup({}, { budget });
    one.connect().probe!.hooks.admitted();
    two.connect().probe!.hooks.admitted();
    expect(one.connect("192.0.2.50").sink.destroyed).toBe(true);
    expect(two.connect("192.0.2.51").sink.destroyed).toBe(true);
  });

  test("a protocol that closes during accept gives its slots back (the transport reports that close)", () => {
    const budget = new ConnectionBudget(1);
    const { connect } = setup({}, { budget });
    const first = connect();
    first.probe!.sink.destroy();
    first.handler.onClose(null); // what transport/tcp.ts delivers after the handler is made
    expect(budget.open).toBe(0);
    expect(connect("192.0.2.2").sink.destroyed).toBe(false);
  });
});

describe("frame deadline", () => {
  test("an admitted connection stuck in a frame is closed after frame_timeout without input", () => {
    const { clock, connect, lines } = setup();
    const { sink, probe, handler } = connect();
    probe!.hooks.admitted();
    probe!.partial = 13;
    clock.advance(29_000);
    handler.onData(new Uint8Array(MIN_READ_RATE * 30)); // progress restarts the wait
    clock.advance(29_999);
    expect(sink.destroyed).toBe(false);
    clock.advance(1);
    expect(sink.destroyed).toBe(true);
    expect(probe!.closes[0]).toBe("no progress for 30s on an unfinished frame (13 bytes held)");
    expect(lines.at(-1)).toContain("unfinished frame");
  });

  test("a trickle that is progress to the deadline above is closed after one window below MIN_READ_RATE; a slow frame above it is not", () => {
    const { clock, connect, guard } = setup();
    const trickle = connect();
    const slow = connect();
    for (const c of [trickle, slow]) {
      c.probe!.hooks.admitted();
      c.probe!.partial = 32 << 20; // a header that claims 32 MiB holds 32 MiB
    }
    for (let i = 0; i < 120; i++) { // two minutes
      clock.advance(1000);
      if (i % 20 === 0) trickle.handler.onData(new Uint8Array(1)); // a byte every 20 s
      slow.handler.onData(new Uint8Array(17 * 1024));
    }
    expect(trickle.sink.destroyed).toBe(true);
    expect(trickle.probe!.closes[0]).toBe(`frames arriving too slowly (2 bytes in 30s, ${32 << 20} bytes held)`);
    expect(slow.sink.destroyed).toBe(false);
    expect(guard.stats.frameTimeouts).toBe(1);
  });

  test("while the receive memory turns others away, an unfinished frame must arrive whole within a window; a fast sender goes on", () => {
    let starved = false;
    const { clock, connect } = setup({}, { receiveStarved: () => starved });
    const slow = connect();
    const fast = connect();
    for (const c of [slow, fast]) {
      c.probe!.hooks.admitted();
      c.probe!.partial = 32 << 20;
    }
    const tick = () => {
      clock.advance(1000);
      slow.handler.onData(new Uint8Array(64 * 1024)); // 64 KiB/s: well above MIN_READ_RATE
      fast.handler.onData(new Uint8Array(32 << 20)); // a whole frame a second
    };
    for (let i = 0; i < 65; i++) tick();
    expect(slow.sink.destroyed).toBe(false);
    starved = true;
    for (let i = 0; i < 32 && !slow.sink.destroyed; i++) tick();
    expect(slow.sink.destroyed).toBe(true);
    expect(slow.probe!.closes[0]).toMatch(/^frames arriving too slowly \(\d+ bytes in 30s, 33554432 bytes held; other clients wait for the receive memory it holds, so all 33554432 bytes must arrive\)$/);
    expect(fast.sink.destroyed).toBe(false);
  });

  test("an idle connection between frames is never closed", () => {
    const { clock, connect } = setup();
    const { sink, probe } = connect();
    probe!.hooks.admitted();
    probe!.partial = 0;
    clock.advance(24 * 3_600_000);
    expect(sink.destroyed).toBe(false);
  });

  test("time the protocol keeps reading paused (its own backpressure) does not count", () => {
    const { clock, connect } = setup();
    const { sink, probe } = connect();
    probe!.hooks.admitted();
    probe!.partial = 100;
    probe!.sink.pause();
    expect(sink.paused).toBe(true);
    clock.advance(3_600_000);
    expect(sink.destroyed).toBe(false);
    probe!.sink.resume();
    clock.advance(29_999);
    expect(sink.destroyed).toBe(false);
    clock.advance(1);
    expect(sink.destroyed).toBe(true);
  });
});

describe("reply deadline", () => {
  test("an admitted connection whose replies go unread for frame_timeout is closed, even with reading paused", () => {
    const { clock, connect, guard, lines } = setup();
    const { sink, probe } = connect();
    probe!.hooks.admitted();
    clock.advance(1000); // a sweep with nothing queued
    sink.room = 0; // the peer reads nothing from here on
    probe!.sink.write(new Uint8Array(100));
    probe!.sink.pause(); // the protocol's own backpressure does not excuse unread replies
    clock.advance(29_000);
    expect(sink.destroyed).toBe(false);
    clock.advance(1000);
    expect(sink.destroyed).toBe(true);
    expect(probe!.closes[0]).toBe("replies not read for 30s (100 bytes queued)");
    expect(guard.stats.replyTimeouts).toBe(1);
    expect(lines.at(-1)).toContain("replies not read");
  });

  test("a slow reader taking the minimum rate is never closed; a peer with nothing queued is never closed", () => {
    const { clock, connect } = setup();
    const slow = connect();
    const idle = connect();
    slow.probe!.hooks.admitted();
    idle.probe!.hooks.admitted();
    clock.advance(1000);
    slow.sink.room = 0;
    slow.probe!.sink.write(new Uint8Array(4 << 20));
    for (let i = 0; i < 300; i++) { // 5 minutes at 17 KiB/s, with the queue topped up
      clock.advance(1000);
      slow.sink.drain(17 * 1024);
      slow.probe!.sink.write(new Uint8Array(17 * 1024));
    }
    expect(slow.sink.destroyed).toBe(false);
    expect(idle.sink.destroyed).toBe(false);
    // A small queue it takes whole within each window counts as keeping up.
    slow.sink.drain(); // all of it: the window restarts
    slow.sink.room = 0;
    slow.probe!.sink.write(new Uint8Array(1000));
    clock.advance(29_000);
    slow.sink.drain(1000);
    slow.sink.room = 0;
    slow.probe!.sink.write(new Uint8Array(1000));
    clock.advance(29_000);
    expect(slow.sink.destroyed).toBe(false);
  });

  test("a trickle below the minimum rate is closed after one window, though its queue keeps shrinking", () => {
    const { clock, connect, guard } = setup();
    const { sink, probe } = connect();
    probe!.hooks.admitted();
    clock.advance(1000);
    sink.room = 0;
    probe!.sink.write(new Uint8Array(48 << 20)); // a whole reply share
    for (let i = 0; i < 3; i++) {
      clock.advance(9_000);
      sink.drain(4096); // 4 KiB every 9 s: the queue shrinks at every sweep that sees it
      clock.advance(1000);
    }
    expect(sink.destroyed).toBe(true);
    expect(probe!.closes[0]).toBe(`replies read too slowly (${3 * 4096} bytes) for 30s (${(48 << 20) - 3 * 4096} bytes queued)`);
    expect(guard.stats.replyTimeouts).toBe(1);
    expect(MIN_READ_RATE * 30).toBeGreaterThan(3 * 4096);
  });

  test("while the shared reply memory turns others away, a slow reader must take its whole backlog in a window; a fast one and an uncontended slow one go on", () => {
    let starved = false;
    const { clock, connect, guard } = setup({}, { replyStarved: () => starved });
    const slow = connect();
    const fast = connect();
    const calm = () => {
      slow.sink.drain(17 * 1024); // above MIN_READ_RATE: kept for ever without contention
      fast.sink.drain(); // takes all it is behind by
      for (const c of [slow, fast]) {
        c.sink.room = 0;
        c.probe!.sink.write(new Uint8Array(c === slow ? 17 * 1024 : 8 << 20));
      }
    };
    for (const c of [slow, fast]) {
      c.probe!.hooks.admitted();
      c.sink.room = 0;
      c.probe!.sink.write(new Uint8Array(48 << 20));
    }
    fast.sink.drain();
    for (let i = 0; i < 90; i++) { // three windows, uncontended
      clock.advance(1000);
      calm();
    }
    expect(slow.sink.destroyed).toBe(false);
    // A shortage of one sweep (a burst the next drain ends) does not count.
    starved = true;
    clock.advance(1000);
    calm();
    starved = false;
    for (let i = 0; i < 40; i++) {
      clock.advance(1000);
      calm();
    }
    expect(slow.sink.destroyed).toBe(false);
    // A shortage that lasts: within the window, the slow reader is closed; the fast one is not.
    starved = true;
    for (let i = 0; i < 31 && !slow.sink.destroyed; i++) {
      clock.advance(1000);
      calm();
    }
    expect(slow.sink.destroyed).toBe(true);
    expect(slow.probe!.closes[0]).toMatch(/^replies read too slowly \(\d+ bytes\) for 30s \(\d+ bytes queued; other clients wait for the reply memory it holds, so it must take all \d+ bytes it was behind by\)$/);
    expect(fast.sink.destroyed).toBe(false);
    expect(guard.stats.replyTimeouts).toBe(1);
    expect(CONTENDED_SWEEPS).toBeGreaterThan(1);
  });
});

describe("rate-limited refusal logging", () => {
  test("the first refusal of a source is logged, the rest of the minute becomes one summary", () => {
    const { clock, connect, lines, probes } = setup({ maxUnauthenticatedPerSource: 1 });
    connect("192.0.2.1");
    for (let i = 0; i < 500; i++) connect("192.0.2.1");
    probes[0]!.hooks.refused("TEST 192.0.2.1:40000: a protocol refusal");
    probes[0]!.hooks.refused("TEST 192.0.2.1:40000: a protocol refusal");
    expect(lines).toHaveLength(2); // one per kind: per-source cap, protocol refusal
    clock.advance(60_000); // also expires the handshake: one more line, new window
    const summaries = lines.filter((l) => l.includes("not logged"));
    expect(summaries).toHaveLength(2);
    expect(summaries.some((l) => l.includes("499 more lines like this from 192.0.2.1 in 60 s not logged"))).toBe(true);
    expect(summaries.some((l) => l.includes("1 more line like this from 192.0.2.1"))).toBe(true);
    expect(lines.length).toBeLessThan(6);
  });
});
