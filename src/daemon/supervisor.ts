/**
 * @module daemon/supervisor — keeps one unit of `dstd up` (an export group, an attachment)
 * running: starts it, notices when it fails (a health check polled once a second, or the
 * unit saying it ended), restarts it after a backoff that doubles from 1 s to 60 s and
 * starts over once the unit ran for a minute. A failing unit never touches the others.
 *
 * The supervised unit is seen through two narrow interfaces: Runner (how to start it) and
 * Running (health, status detail, counters, stop). The node and everything that reports
 * (control socket, metrics, systemd STATUS=) see the result as a Service.
 */
import type { ReplicaHandle } from "./replica-node.ts";
import { errorMessage } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import type { AttachStatus, ExportGroupStatus, ServiceKind, ServiceState, ServiceStatus } from "../control/schema.ts";
import type { EventBus } from "../status/events.ts";

export const RESTART_MIN_MS = 1000;
export const RESTART_MAX_MS = 60_000;
/** A unit that ran this long before failing starts its backoff from the beginning. */
export const STABLE_MS = 60_000;

/** Delay before restart number `failures` (1-based) in a row. */
export function restartDelayMs(failures: number): number {
  return Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** Math.max(0, Math.min(failures - 1, 16)));
}

export type StopMode = "stop" | "handover";

export type Health = { state: "running" | "degraded"; detail?: string } | { failed: string };

export interface ServiceDetail {
  export?: ExportGroupStatus;
  attach?: AttachStatus;
}

export interface Running {
  check(): Health;
  /** Resolves with a reason if the unit ends by itself. */
  readonly ended?: Promise<string>;
  /** "handover": leave kernel devices attached (SIGUSR2); exports treat it as "stop". */
  stop(mode: StopMode): Promise<void>;
  detail(): ServiceDetail;
  /** Monotonic counters and gauges (names in `gauges` are not summed across restarts). */
  counters(): Record<string, number>;
  /**
   * Prepare a reload's change the unit applies while running (allow lists, keys, legs appended
   * to a linear tree): rejects when it cannot be made (nothing changed); `commit` applies it
   * and returns what changed. Absent: the unit cannot, and is restarted instead.
   */
  update?(config: unknown): Promise<PreparedUpdate>;
  /** Resize one of the unit's exports online (export groups only). */
  resize?(exportName: string, size: number, options: { allowShrink: boolean; force: boolean }): Promise<string>;
  /** Suspend or resume a mirror leg of one of the unit's exports (export groups only). */
  holdLeg?(exportName: string, leg: string, action: "suspend" | "resume"): Promise<string>;
  /** The unit's replicated exports (export groups only). */
  replicas?(): ReadonlyMap<string, ReplicaHandle>;
}

/** A change prepared by Running.update: everything that can fail is done, nothing visible yet. */
export interface PreparedUpdate {
  /** Apply it (does not throw); one line per change; what could not be applied after all goes to `failures`. */
  commit(failures?: string[]): string[];
  /** Drop it, releasing what preparing took. */
  abort(): Promise<void>;
}

export interface Runner {
  start(): Promise<Running>;
  /** What to show before the unit runs (or while it waits to restart). */
  placeholder(): ServiceDetail;
  /** Counter names that are gauges (current values, not accumulated over restarts). */
  readonly gauges: readonly string[];
  /** Counter names whose per-second rate status shows. */
  readonly rated: readonly string[];
}

/** What reporting code sees of a unit. */
export interface Service {
  readonly name: string;
  readonly kind: ServiceKind;
  readonly state: ServiceState;
  status(): ServiceStatus;
  counters(): Record<string, number>;
}

export interface Scheduler {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realScheduler: Scheduler = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export class SupervisedService implements Service {
  state: ServiceState = "stopped";
  restarts = 0;
  lastError: string | null = null;
  private since: number;
  private retryAt: number | null = null;
  private retryTimer: unknown = null;
  private running: Running | null = null;
  private failures = 0;
  private runningSince = 0;
  private stopping: StopMode | null = null;
  private attempt: Promise<void> | null = null;
  /** Counters of earlier runs, so totals survive restarts. */
  private readonly base: Record<string, number> = {};
  private lastCounters: Record<string, number> = {};
  private rates: Record<string, number> = {};
  private rateSample: { at: number; values: Record<string, number> } | null = null;
  /** Called after every state change (the node refreshes its summary). */
  onChange: (() => void) | null = null;

  constructor(
    readonly name: string,
    readonly kind: ServiceKind,
    private readonly runner: Runner,
    private readonly log: Log,
    private readonly events: EventBus,
    private readonly clock: Scheduler = realScheduler,
  ) {
    this.since = clock.now();
  }

  /** First start; resolves when that attempt settled (running, or failed and waiting). */
  start(): Promise<void> {
    this.stopping = null;
    this.setState("starting", "starting");
    this.attempt = this.run();
    return this.attempt;
  }

  /** Health poll (the node calls this once a second) and rate sampling. */
  poll(): void {
    const running = this.running;
    if (running === null) return;
    let health: Health;
    try {
      health = running.check();
    } catch (error) {
      health = { failed: `health check failed: ${errorMessage(error)}` };
    }
    if ("failed" in health) {
      void this.failed(running, health.failed);
      return;
    }
    if (health.state !== this.state) this.setState(health.state, health.detail ?? health.state);
    this.sampleRates();
  }

  /** Stop for good (removed by a reload, or the node stops). */
  /** The running unit (null while it starts, backs off or stopped). */
  get current(): Running | null {
    return this.running;
  }

  /** Prepare a change of the running unit; null when it is not running or cannot (restart it). */
  update(config: unknown): Promise<PreparedUpdate> | null {
    const running = this.running;
    if (running === null || running.update === undefined) return null;
    return running.update(config);
  }

  async stop(mode: StopMode = "stop"): Promise<void> {
    this.stopping = mode;
    if (this.retryTimer !== null) this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryAt = null;
    if (this.attempt !== null) await this.attempt; // a start in progress finishes (and is stopped) first
    const running = this.running;
    if (running !== null) {
      this.setState("stopping", mode === "handover" ? "handing over" : "stopping");
      this.keepCounters(running);
      this.running = null;
      try {
        await running.stop(mode);
      } catch (error) {
        this.log.warn(`stopping ${this.name}: ${errorMessage(error)}`);
      }
    }
    this.setState("stopped", mode === "handover" ? "handed over" : "stopped");
  }

  status(): ServiceStatus {
    let detail: ServiceDetail;
    try {
      detail = this.running?.detail() ?? this.runner.placeholder();
    } catch (error) {
      detail = this.runner.placeholder();
      this.log.debug(`status of ${this.name}: ${errorMessage(error)}`);
    }
    return {
      name: this.name,
      kind: this.kind,
      state: this.state,
      since: new Date(this.since).toISOString(),
      restarts: this.restarts,
      lastError: this.lastError,
      retryAt: this.retryAt === null ? null : new Date(this.retryAt).toISOString(),
      ...detail,
      counters: this.counters(),
      rates: { ...this.rates },
    };
  }

  counters(): Record<string, number> {
    const current = this.running === null ? {} : this.safeCounters(this.running);
    const out: Record<string, number> = { ...this.base };
    for (const [key, value] of Object.entries(current)) {
      out[key] = this.runner.gauges.includes(key) ? value : (this.base[key] ?? 0) + value;
    }
    for (const gauge of this.runner.gauges) out[gauge] ??= 0;
    return out;
  }

  private safeCounters(running: Running): Record<string, number> {
    try {
      this.lastCounters = running.counters();
    } catch {
      // keep the last good reading
    }
    return this.lastCounters;
  }

  private keepCounters(running: Running): void {
    const last = this.safeCounters(running);
    for (const [key, value] of Object.entries(last)) {
      if (!this.runner.gauges.includes(key)) this.base[key] = (this.base[key] ?? 0) + value;
    }
    this.lastCounters = {};
    this.rateSample = null;
  }

  private sampleRates(): void {
    const now = this.clock.now();
    const values = this.counters();
    const previous = this.rateSample;
    this.rateSample = { at: now, values };
    if (previous === null || now <= previous.at) return;
    const seconds = (now - previous.at) / 1000;
    const rates: Record<string, number> = {};
    for (const key of this.runner.rated) {
      const delta = (values[key] ?? 0) - (previous.values[key] ?? 0);
      rates[key] = delta < 0 ? 0 : Math.round((delta / seconds) * 10) / 10;
    }
    this.rates = rates;
  }

  private async run(): Promise<void> {
    let running: Running;
    try {
      running = await this.runner.start();
    } catch (error) {
      this.attempt = null;
      this.scheduleRestart(errorMessage(error), false);
      return;
    }
    this.attempt = null;
    if (this.stopping !== null) {
      // Asked to stop while starting: stop() is waiting for this attempt and stops it.
      this.running = running;
      return;
    }
    this.running = running;
    this.runningSince = this.clock.now();
    this.setState("running", "running");
    void running.ended?.then((reason) => {
      if (this.running === running) void this.failed(running, reason);
    });
  }

  private async failed(running: Running, reason: string): Promise<void> {
    if (this.running !== running) return;
    this.keepCounters(running);
    this.running = null;
    try {
      await running.stop("stop");
    } catch (error) {
      this.log.debug(`cleaning up after ${this.name} failed: ${errorMessage(error)}`);
    }
    const stable = this.clock.now() - this.runningSince >= STABLE_MS;
    this.scheduleRestart(reason, stable);
  }

  private scheduleRestart(reason: string, wasStable: boolean): void {
    if (this.stopping !== null) {
      this.setState("stopped", `stopped (last attempt failed: ${reason})`);
      return;
    }
    this.failures = wasStable ? 1 : this.failures + 1;
    this.lastError = reason;
    const delay = restartDelayMs(this.failures);
    this.retryAt = this.clock.now() + delay;
    this.setState("backoff", `failed: ${reason}; restarting in ${formatSeconds(delay)}`);
    this.events.emit("service.restart_scheduled", { service: this.name, kind: this.kind, delayMs: delay, failures: this.failures, reason });
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null;
      this.retryAt = null;
      if (this.stopping !== null) return;
      this.restarts++;
      this.setState("starting", `restart ${this.restarts}`);
      this.attempt = this.run();
    }, delay);
  }

  private setState(state: ServiceState, detail: string): void {
    const previous = this.state;
    if (previous === state && state !== "backoff") return;
    this.state = state;
    this.since = this.clock.now();
    // The log is the service's own (tagged with its name).
    if (state === "backoff" || state === "degraded") this.log.warn(detail);
    else if (state !== "starting" || previous !== "stopped") this.log.info(detail);
    this.events.emit("service.state", { service: this.name, kind: this.kind, state, previous, detail });
    this.onChange?.();
  }
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}
