/**
 * @module test/sim/sim-clock — simulated time for the deterministic simulator (the model:
 * TigerBeetle's src/testing/time.zig, `monotonic = ticks * resolution`).
 *
 * Time only moves when the simulator says so: there is no wall clock anywhere in a run, so a
 * seed replays exactly and 10,000 seeds cost CPU time only. Events are callbacks scheduled at
 * a tick; they run in (tick, insertion order) order, which makes equal-time events
 * deterministic too. Must not: read Date/performance/Math.random, or run an event early.
 */
import { assert } from "../../src/lib/assert.ts";

interface Event {
  at: number;
  seq: number;
  run: () => void;
}

export class SimClock {
  /** Ticks elapsed since the start of the run. */
  ticks = 0;
  /** Milliseconds one tick stands for (TigerBeetle's `resolution`). */
  readonly resolutionMs: number;
  /** Events run so far (for the seeds/s report and as a runaway guard). */
  eventsRun = 0;
  /** Called after every event (the harness raises violations recorded inside callbacks that
   * swallow exceptions, such as a backend call inside the export's try/catch). */
  afterEvent: (() => void) | null = null;
  private readonly heap: Event[] = [];
  private seq = 0;

  constructor(resolutionMs = 1) {
    assert(resolutionMs > 0, "resolution must be positive");
    this.resolutionMs = resolutionMs;
  }

  /** Simulated monotonic time in milliseconds: what the engine's tick(now) receives. */
  get now(): number {
    return this.ticks * this.resolutionMs;
  }

  /** Run `run` after `delayMs` (rounded up to whole ticks; 0 = later in this same tick). */
  after(delayMs: number, run: () => void): void {
    assert(delayMs >= 0 && Number.isFinite(delayMs), `bad delay ${delayMs}`);
    this.at(this.ticks + Math.ceil(delayMs / this.resolutionMs), run);
  }

  /** Run `run` at absolute tick `tick` (never in the past). */
  at(tick: number, run: () => void): void {
    assert(tick >= this.ticks, "event scheduled in the past");
    this.push({ at: tick, seq: this.seq++, run });
  }

  get pendingEvents(): number {
    return this.heap.length;
  }

  /**
   * Run every event due up to and including tick `until`, advancing time event by event, and
   * end with the clock at `until`. Events may schedule more events (also run if due).
   */
  runUntil(until: number): void {
    assert(until >= this.ticks, "cannot run backwards");
    for (;;) {
      const head = this.heap[0];
      if (head === undefined || head.at > until) break;
      this.pop();
      this.ticks = head.at;
      this.eventsRun++;
      head.run();
      this.afterEvent?.();
    }
    this.ticks = until;
  }

  // ---- binary heap on (at, seq) ------------------------------------------------------------

  private push(event: Event): void {
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(event, heap[parent]!)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = event;
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && before(heap[right]!, heap[left]!) ? right : left;
      if (!before(heap[child]!, last)) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
  }
}

function before(a: Event, b: Event): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
