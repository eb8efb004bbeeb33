/**
 * status/events: sequence numbers, the bounded history (`since`), subscribers in order, and
 * that event fields can never overwrite seq, time or type.
 */
import { describe, expect, test } from "bun:test";
import { EventBus } from "../../src/status/events.ts";

describe("EventBus", () => {
  test("seq, time and type first; fields cannot overwrite them", () => {
    const bus = new EventBus(4, () => new Date(0));
    const event = bus.emit("service.state", { service: "x", seq: 99, type: "forged", time: "never" });
    expect(Object.keys(event)).toEqual(["seq", "time", "type", "service"]);
    expect(event).toEqual({ seq: 1, time: "1970-01-01T00:00:00.000Z", type: "service.state", service: "x" });
  });

  test("history keeps the last N; since() filters by sequence number", () => {
    const bus = new EventBus(3);
    for (let i = 0; i < 10; i++) bus.emit("node.ready", { i });
    expect(bus.since(0).map((e) => e.seq)).toEqual([8, 9, 10]);
    expect(bus.since(9).map((e) => e.seq)).toEqual([10]);
    expect(bus.lastSeq).toBe(10);
  });

  test("subscribers get every event in order; unsubscribing stops them", () => {
    const bus = new EventBus();
    const seen: number[] = [];
    const off = bus.subscribe((e) => seen.push(e.seq));
    bus.emit("node.starting");
    bus.emit("node.ready");
    off();
    bus.emit("node.stopping");
    expect(seen).toEqual([1, 2]);
    expect(bus.subscribers).toBe(0);
  });
});
