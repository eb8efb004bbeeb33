/**
 * daemon/supervisor with a manual clock: a failing unit is restarted after 1, 2, 4 … s (at
 * most 60 s), starts over after running for a minute, keeps its counter totals across
 * restarts, never disturbs another unit, and stops cleanly in every state (starting,
 * running, waiting to restart).
 */
import { describe, expect, test } from "bun:test";
import { EventBus } from "../../src/status/events.ts";
import { SupervisedService, restartDelayMs, type Health, type Runner, type Running, type Scheduler } from "../../src/daemon/supervisor.ts";
import { recordingLog } from "../helpers/log.ts";

class ManualClock implements Scheduler {
  time = 0;
  timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private next = 1;
  now = () => this.time;
  setTimeout = (fn: () => void, ms: number) => {
    const id = this.next++;
    this.timers.push({ at: this.time + ms, fn, id });
    return id;
  };
  clearTimeout = (handle: unknown) => {
    this.timers = this.timers.filter((t) => t.id !== handle);
  };
  /** Move time forward, firing due timers in order. */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const due = this.timers[0];
      if (due === undefined || due.at > end) break;
      this.timers.shift();
      this.time = due.at;
      due.fn();
    }
    this.time = end;
  }
}

/** A unit whose start and health the test decides. */
class FakeUnit implements Runner {
  gauges = ["open"];
  rated = ["requests"];
  starts = 0;
  stops: string[] = [];
  failStart: string | null = null;
  health: Health = { state: "running" };
  requests = 0;
  pendingStart: (() => void) | null = null;
  holdStart = false;
  placeholder = () => ({});
  async start(): Promise<Running> {
    this.starts++;
    if (this.holdStart) await new Promise<void>((resolve) => (this.pendingStart = resolve));
    if (this.failStart !== null) throw new Error(this.failStart);
    this.requests = 0;
    return {
      check: () => this.health,
      stop: async (mode) => {
        this.stops.push(mode);
      },
      detail: () => ({}),
      counters: () => ({ requests: this.requests, open: 3 }),
    };
  }
}

const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

function make(unit: FakeUnit, clock: ManualClock, name = "attach:x") {
  const events = new EventBus();
  const log = recordingLog();
  const service = new SupervisedService(name, "attach", unit, { ...log, error() {} }, events, clock);
  return { service, events, log };
}

describe("restartDelayMs", () => {
  test("doubles from 1 s to a 60 s ceiling", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 100].map(restartDelayMs)).toEqual([1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
  });
});

describe("SupervisedService", () => {
  test("a start that fails is retried after 1, 2, 4 s; then it runs", async () => {
    const clock = new ManualClock();
    const unit = new FakeUnit();
    unit.failStart = "export unreachable";
    const { service, events } = make(unit, clock);
    await service.start();
    expect(service.state).toBe("backoff");
    expect(service.status().lastError).toBe("export unreachable");
    expect(service.status().retryAt).toBe(new Date(1000).toISOString());
    clock.advance(999);
    expect(unit.starts).toBe(1);
    clock.advance(1);
    await flush();
    expect(unit.starts).toBe(2);
    clock.advance(1999);
    expect(unit.starts).toBe(2);
    clock.advance(1);
    await flush();
    expect(unit.starts).toBe(3);
    unit.failStart = null;
    clock.advance(4000);
    await flush();
    expect(unit.starts).toBe(4);
    expect(service.state).toBe("running");
    expect(service.restarts).toBe(3);
    const delays = events.since(0).filter((e) => e.type === "service.restart_scheduled").map((e) => e.delayMs);
    expect(delays).toEqual([1000, 2000, 4000]);
  });

  test("a running unit that turns unhealthy is stopped and restarted; degraded is reported, not restarted", async () => {
    const clock = new ManualClock();
    const unit = new FakeUnit();
    const { service, log } = make(unit, clock);
    await service.start();
    unit.health = { state: "degraded", detail: "export link idle; reconnecting" };
    service.poll();
    expect(service.state).toBe("degraded");
    expect(log.lines.at(-1)).toBe("warn: export link idle; reconnecting");
    unit.health = { failed: "export link failed: refused" };
    service.poll();
    await flush();
    expect(unit.stops).toEqual(["stop"]); // cleaned up before the restart
    expect(service.state).toBe("backoff");
    unit.health = { state: "running" };
    clock.advance(1000);
    await flush();
    expect(service.state).toBe("running");
    expect(unit.starts).toBe(2);
  });

  test("after running a minute, the backoff starts over at 1 s", async () => {
    const clock = new ManualClock();
    const unit = new FakeUnit();
    const { service, events } = make(unit, clock);
    await service.start();
    for (let i = 0; i < 3; i++) {
      unit.health = { failed: "lost" };
      service.poll();
      await flush();
      unit.health = { state: "running" };
      clock.advance(restartDelayMs(i + 1));
      await flush();
    }
    clock.advance(61_000);
    unit.health = { failed: "lost again" };
    service.poll();
    await flush();
    const delays = events.since(0).filter((e) => e.type === "service.restart_scheduled").map((e) => e.delayMs);
    expect(delays).toEqual([1000, 2000, 4000, 1000]);
  });

  test("counter totals survive restarts; gauges do not add up; rates per second", async () => {
    const clock = new ManualClock();
    const unit = new FakeUnit();
    const { service } = make(unit, clock);
    await service.start();
    unit.requests = 10;
    service.poll();
    clock.advance(1000);
    unit.requests = 30;
    service.poll();
    expect(service.status().rates.requests).toBe(20);
    unit.health = { failed: "x" };
    service.poll();
    await flush();
    unit.health = { state: "running" };
    clock.advance(1000);
    await flush();
    unit.requests = 5;
    expect(service.counters()).toEqual({ requests: 35, open: 3 });
  });

  test("one unit failing does not touch another", async () => {
    const clock = new ManualClock();
    const good = new FakeUnit();
    const bad = new FakeUnit();
    const a = make(good, clock, "export:a");
    const b = make(bad, clock, "attach:b");
    await Promise.all([a.service.start(), b.service.start()]);
    bad.health = { failed: "boom" };
    for (let i = 0; i < 5; i++) {
      b.service.poll();
      a.service.poll();
      await flush();
      clock.advance(60_000);
      await flush();
    }
    expect(a.service.state).toBe("running");
    expect(good.starts).toBe(1);
    expect(good.stops).toEqual([]);
    expect(bad.starts).toBeGreaterThan(3);
  });

  test("stop while waiting to restart: no restart happens", async () => {
    const clock = new ManualClock();
    const unit = new FakeUnit();
    unit.failStart = "no";
    const { service } = make(unit, clock);
    await service.start();
    await service.stop();
    expect(service.state).toBe("stopped");
    clock.advance(120_000);
    await flush();
    expect(unit.starts).toBe(1);
    expect(clock.timers).toHaveLength(0);
  });

  test("stop while starting: the start finishes, then it is stopped (handover passed on)", async () => {
    const clock = new ManualClock();
    const unit = new FakeUnit();
    unit.holdStart = true;
    const { service } = make(unit, clock);
    const started = service.start();
    await flush();
    const stopped = service.stop("handover");
    unit.pendingStart!();
    await started;
    await stopped;
    expect(unit.stops).toEqual(["handover"]);
    expect(service.state).toBe("stopped");
  });

  test("a unit that ends by itself (kernel device gone) is restarted", async () => {
    const clock = new ManualClock();
    let end: (reason: string) => void = () => {};
    const runner: Runner = {
      gauges: [],
      rated: [],
      placeholder: () => ({}),
      start: async () => ({
        check: () => ({ state: "running" }),
        ended: new Promise<string>((resolve) => (end = resolve)),
        stop: async () => {},
        detail: () => ({}),
        counters: () => ({}),
      }),
    };
    const service = new SupervisedService("attach:/dev/nbd0", "attach", runner, { ...recordingLog(), error() {} }, new EventBus(), clock);
    await service.start();
    end("the device was disconnected");
    await flush();
    await flush();
    expect(service.state).toBe("backoff");
    expect(service.lastError).toBe("the device was disconnected");
  });
});
