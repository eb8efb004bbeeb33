/**
 * @module daemon/node — composition root of `dstd up`: one long-lived process running every
 * export and attachment the config names, each as a supervised unit (daemon/supervisor.ts,
 * daemon/services.ts), with the control socket (control/server.ts), the metrics listener
 * (status/http.ts), the event stream (status/events.ts) and systemd notification
 * (status/notify.ts) around them.
 *
 * Start: validate the whole config (schema, key files, address conflicts) → control socket
 * → metrics → every unit's first start, concurrently → READY=1. A unit that fails is
 * restarted with backoff; the others never notice. Reload (SIGHUP, `dstd reload`):
 * RELOADING=1, validate the whole new file (an invalid one changes nothing and says why),
 * stop the units that changed or went away, start the new ones, READY=1 (reload-plan.ts).
 * Stop: STOPPING=1, stop every unit (attachments flush), close the sockets.
 */
import { legParams, treeLayoutProblems } from "./export-node.ts";
import { mirrorViews } from "../status/tree-metrics.ts";
import { formatListenAddress, type ListenAddress } from "../lib/address.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import type { LogLevel, NodeLog } from "../lib/log.ts";
import { loadConfigFile } from "../config/load.ts";
import type { Config } from "../config/types.ts";
import { loadKeyFile } from "../crypto/keys.ts";
import type { NodeInfo, ReloadOutcome, ServiceStatus } from "../control/schema.ts";
import { CONTROL_VERSION } from "../control/protocol.ts";
import type { ReplicaHandle } from "./replica-node.ts";
import { replicaRequest } from "./replica-control.ts";
import { controlSocketPath, startControlServer, type ControlServer } from "../control/server.ts";
import { EventBus } from "../status/events.ts";
import { startMetricsListener, type MetricsListener } from "../status/http.ts";
import { nodeMetrics, type NodeMetrics } from "../status/node-metrics.ts";
import type { SystemdNotifier } from "../status/notify.ts";
import { STATUS_SCHEMA, STATUS_VERSION } from "../control/schema.ts";
import { VERSION } from "../version.ts";
import { loadKeyTable } from "./export-node.ts";
import { conflicts, diffPlans, exportKeyFiles, planNode, type NodePlan } from "./reload-plan.ts";
import { attachRunner, exportGroupRunner } from "./services.ts";
import { startConnectionBudget, type ConnectionBudget } from "../transport/fd-budget.ts";
import { SupervisedService, type PreparedUpdate, type Runner, type Scheduler, type StopMode, realScheduler } from "./supervisor.ts";

/** How long the kernel holds I/O for a restarted attachment daemon (as `dstd attach`). */
const DEAD_CONN_TIMEOUT_SEC = 120;
/** While starting or stopping, ask systemd for this much more time, this often. */
const EXTEND_MS = 20_000;
const EXTEND_EVERY_MS = 5_000;

export interface NodeOptions {
  configPath: string;
  /** --state-dir or $DSTD_STATE_DIR; null: the config's state_dir. */
  stateDir: string | null;
  /** --metrics-listen; undefined: the config's metrics_listen. */
  metricsListen?: ListenAddress;
  /** --log-level; undefined: the config's log_level (and a reload may change it). */
  logLevel?: LogLevel;
  log: NodeLog;
  notifier: SystemdNotifier;
  scheduler?: Scheduler;
}

interface Loaded {
  config: Config;
  plan: NodePlan;
}

function sha256(data: Uint8Array | string): string {
  return new Bun.CryptoHasher("sha256").update(data).digest("hex");
}

/** Read and check everything a config needs before anything is touched; throws E_CONFIG. */
export function loadNodeConfig(path: string): Loaded {
  const config = loadConfigFile(path);
  const problems: string[] = [];
  let keyDigest = "";
  try {
    const table = loadKeyTable(config.keys);
    keyDigest = sha256([...table.entries()].map(([id, secrets]) => `${id}:${secrets.map((s) => sha256(s)).join(",")}`).join(";"));
  } catch (error) {
    problems.push(errorMessage(error));
  }
  const fileDigests = new Map<string, string>();
  const keyFiles = [...config.attaches.map((entry) => entry.keyFile), ...exportKeyFiles(config.exports)];
  for (const file of keyFiles) {
    if (file === null || fileDigests.has(file)) continue;
    try {
      const key = loadKeyFile(file);
      fileDigests.set(file, sha256(`${key.identity}:${sha256(key.secret)}`));
    } catch (error) {
      problems.push(errorMessage(error));
    }
  }
  problems.push(...conflicts(config));
  if (problems.length > 0) throw new DstdError("E_CONFIG", problems.map((p) => `${path}: ${p}`).join("\n"));
  return { config, plan: planNode(config, keyDigest, (file) => fileDigests.get(file) ?? "") };
}

export class Node {
  private readonly events = new EventBus();
  private readonly services = new Map<string, SupervisedService>();
  private readonly startedAt = Date.now();
  private readonly scheduler: Scheduler;
  private readonly metrics: NodeMetrics;
  private control: ControlServer | null = null;
  private metricsListener: MetricsListener | null = null;
  private tick: ReturnType<typeof setInterval> | null = null;
  private generation = 1;
  private ready = false;
  private stopped = false;
  private lastReload: ReloadOutcome | null = null;
  private summaryText = "starting";
  /**
   * Operations that change units run one at a time, whoever asks (SIGHUP, the control socket):
   * reload, resize, leg, replica role changes. A reload that interleaved with a resize could
   * half apply a tree change and still report success.
   */
  private reloading: Promise<unknown> | null = null;
  readonly stateDir: string;
  /** `[limits]` as the node started: every unit it starts gets these (a reload reports a change as taking effect at restart). */
  private readonly startLimits: Config["limits"];
  /** One connection budget for every unit's listeners: max_connections and the descriptor limit are per process. */
  private budget: ConnectionBudget | null = null;

  private constructor(
    private readonly options: NodeOptions,
    private loaded: Loaded,
  ) {
    this.scheduler = options.scheduler ?? realScheduler;
    this.stateDir = options.stateDir ?? loaded.config.stateDir;
    this.startLimits = loaded.config.limits;
    this.metrics = nodeMetrics({
      replicas: () => [...this.replicaHandles().values()].map((h) => h.status()),
      mirrors: () => mirrorViews([...this.services.values()].map((s) => s.status())),
      services: () => [...this.services.values()],
      version: VERSION,
      startedAtMs: this.startedAt,
      generation: () => this.generation,
      lastReload: () => (this.lastReload === null ? null : { ok: this.lastReload.ok, timeMs: Date.parse(this.lastReload.time) }),
      ready: () => this.ready,
      controlClients: () => this.control?.clients ?? 0,
      eventSubscribers: () => this.control?.followers ?? 0,
    });
    this.metrics.watchEvents(this.events);
  }

  /** Validate, bind, start every unit; resolves once READY=1 was sent. */
  static async start(options: NodeOptions): Promise<Node> {
    const node = new Node(options, loadNodeConfig(options.configPath));
    try {
      await node.boot();
    } catch (error) {
      await node.stop("stop").catch(() => {});
      throw error;
    }
    return node;
  }

  get log(): NodeLog {
    return this.options.log;
  }

  get eventBus(): EventBus {
    return this.events;
  }

  /** The metrics listener's bound address (port 0 resolved), if any. */
  get metricsAddress(): ListenAddress | null {
    return this.metricsListener?.bound ?? null;
  }

  private async boot(): Promise<void> {
    const { config } = this.loaded;
    this.applyLogLevel(config);
    this.events.emit("node.starting", { pid: process.pid, config: this.options.configPath });
    this.options.notifier.status("starting");
    this.control = await startControlServer({
      stateDir: this.stateDir,
      log: this.log.child("control"),
      observer: this.metrics.control,
      handlers: {
        hello: () => ({ node: "dstd", version: VERSION, pid: process.pid, protocol: CONTROL_VERSION, statusSchema: STATUS_SCHEMA, statusVersion: STATUS_VERSION }),
        status: () => this.status(),
        reload: () => this.reload(),
        resize: (params) => this.serial(() => this.resize(params)),
        leg: (params) => this.serial(() => this.holdLeg(params)),
        replica: (params) => {
          const run = () => replicaRequest(this.replicaHandles(), params, this.log);
          return params.op === "status" ? run() : this.serial(run); // status answers at once
        },
        events: this.events,
      },
    });
    this.log.info(`control socket ${this.control.path}`);
    await this.startMetrics(this.options.metricsListen ?? config.metricsListen);
    await this.extendingTimeout(this.startUnits(this.loaded.plan, this.loaded.plan.exportGroups.map((g) => g.name).concat(this.loaded.plan.attachments.map((a) => a.name))));
    this.tick = setInterval(() => this.poll(), 1000);
    this.ready = true;
    this.refreshSummary();
    this.options.notifier.ready(this.summaryText);
    this.events.emit("node.ready", { summary: this.summaryText });
    this.log.info(`ready: ${this.summaryText}`);
  }

  private applyLogLevel(config: Config): void {
    this.log.setLevel(this.options.logLevel ?? config.logLevel);
  }

  private async startMetrics(address: ListenAddress | null): Promise<void> {
    if (address === null) return;
    this.metricsListener = await startMetricsListener(address, () => this.metrics.registry.render(), this.log.child("metrics"));
    this.log.info(`serving metrics on http://${formatListenAddress(this.metricsListener.bound)}/metrics`);
  }

  /**
   * Create and first-start the named units of `plan`: export groups first (concurrently),
   * then attachments (concurrently), so an attachment of this node's own export finds it.
   */
  private async startUnits(plan: NodePlan, names: readonly string[]): Promise<void> {
    const starts: Promise<void>[] = [];
    const budget = (this.budget ??= startConnectionBudget(this.startLimits.maxConnections, this.log));
    for (const unit of plan.exportGroups) {
      if (!names.includes(unit.name)) continue;
      const log = this.log.child(unit.name);
      const runner = exportGroupRunner({ group: unit.config, keys: this.loaded.config.keys, limits: this.startLimits, budget, observer: this.metrics.requests(unit.name), log, events: this.events, name: unit.name, stateDir: this.stateDir });
      starts.push(this.add(unit.name, "export", runner, log));
    }
    await Promise.all(starts.splice(0));
    for (const unit of plan.attachments) {
      if (!names.includes(unit.name)) continue;
      const log = this.log.child(unit.name);
      const runner = attachRunner({ entry: unit.config, stateDir: this.stateDir, log, deadConnTimeoutSec: DEAD_CONN_TIMEOUT_SEC, budget });
      starts.push(this.add(unit.name, "attach", runner, log));
    }
    await Promise.all(starts);
  }

  private add(name: string, kind: "export" | "attach", runner: Runner, log: NodeLog): Promise<void> {
    const service = new SupervisedService(name, kind, runner, log, this.events, this.scheduler);
    service.onChange = () => this.refreshSummary();
    this.services.set(name, service);
    this.events.emit("service.added", { service: name, kind });
    return service.start();
  }

  /** Stop and forget units: attachments first (their final flush may go to our own export). */
  private async removeUnits(names: readonly string[], mode: StopMode): Promise<void> {
    const kindOf = (name: string) => this.services.get(name)?.kind;
    await this.removeNow(names.filter((n) => kindOf(n) === "attach"), mode);
    await this.removeNow(names.filter((n) => kindOf(n) === "export"), mode);
  }

  private async removeNow(names: readonly string[], mode: StopMode): Promise<void> {
    await Promise.all(
      names.map(async (name) => {
        const service = this.services.get(name);
        if (service === undefined) return;
        await service.stop(mode);
        this.services.delete(name);
        this.events.emit("service.removed", { service: name, kind: service.kind });
      }),
    );
  }

  private poll(): void {
    for (const service of this.services.values()) service.poll();
    this.refreshSummary();
  }

  /** One line: what serves, what does not. Sent as STATUS= when it changes. */
  private refreshSummary(): void {
    const list = [...this.services.values()];
    const exports = list.filter((s) => s.kind === "export");
    const attaches = list.filter((s) => s.kind === "attach");
    const serving = (s: SupervisedService) => s.state === "running" || s.state === "degraded";
    const exportCount = exports.reduce((n, s) => n + (s.status().export?.exports.length ?? 0), 0);
    const clients = exports.reduce((n, s) => n + (s.counters().connectionsCurrent ?? 0), 0);
    const parts = [
      `${exportCount} export${exportCount === 1 ? "" : "s"} in ${exports.filter(serving).length}/${exports.length} groups serving`,
      `${attaches.filter((s) => s.state === "running").length}/${attaches.length} attachments ready`,
      `${clients} client${clients === 1 ? "" : "s"}`,
    ];
    const troubled = list.filter((s) => s.state === "backoff" || s.state === "degraded");
    if (troubled.length > 0) parts.push(`${troubled.map((s) => `${s.name} ${s.state}`).join(", ")}`);
    this.summaryText = parts.join("; ");
    if (this.ready && !this.stopped) this.options.notifier.status(this.summaryText);
  }

  /** Run `work` while telling systemd (EXTEND_TIMEOUT_USEC) that we are still at it. */
  private async extendingTimeout<T>(work: Promise<T>): Promise<T> {
    if (!this.options.notifier.enabled) return work;
    this.options.notifier.extendTimeout(EXTEND_MS);
    const timer = setInterval(() => this.options.notifier.extendTimeout(EXTEND_MS), EXTEND_EVERY_MS);
    try {
      return await work;
    } finally {
      clearInterval(timer);
    }
  }

  status(): { schema: string; version: number; node: NodeInfo; services: ServiceStatus[] } {
    return {
      schema: STATUS_SCHEMA,
      version: STATUS_VERSION,
      node: {
        pid: process.pid,
        version: VERSION,
        startedAt: new Date(this.startedAt).toISOString(),
        uptimeSeconds: Math.floor((Date.now() - this.startedAt) / 1000),
        config: this.options.configPath,
        generation: this.generation,
        stateDir: this.stateDir,
        controlSocket: controlSocketPath(this.stateDir),
        metricsListen: this.metricsListener === null ? null : formatListenAddress(this.metricsListener.bound),
        ready: this.ready,
        summary: this.summaryText,
        lastReload: this.lastReload,
      },
      services: [...this.services.values()].map((s) => s.status()),
    };
  }

  /** Re-read the config and apply the difference; one at a time. */
  reload(): Promise<ReloadOutcome> {
    // Before READY the units are still being started: a reload then would start them twice.
    if (!this.ready && !this.stopped) return Promise.reject(new DstdError("E_STATE", "the node is still starting: reload once it is ready"));
    return this.serial(() => this.reloadNow());
  }

  /** Run `work` after every operation queued before it (see `reloading`). */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    if (this.stopped) return Promise.reject(new DstdError("E_STOPPING", "the node is stopping"));
    const run = (this.reloading ?? Promise.resolve()).then(work);
    this.reloading = run.catch(() => {});
    return run;
  }

  private async reloadNow(): Promise<ReloadOutcome> {
    const path = this.options.configPath;
    this.options.notifier.reloading();
    this.events.emit("node.reloading", { config: path });
    this.log.info(`reloading ${path}`);
    let outcome: ReloadOutcome;
    try {
      outcome = await this.extendingTimeout(this.applyReload(path));
    } catch (error) {
      outcome = { ok: false, time: new Date().toISOString(), generation: this.generation, changes: [], messages: errorMessage(error).split("\n") };
    }
    this.lastReload = outcome;
    if (outcome.ok) {
      this.events.emit("node.reloaded", { generation: outcome.generation, changes: outcome.changes.length });
      this.log.info(`reloaded (generation ${outcome.generation}): ${outcome.changes.length === 0 ? "nothing changed" : outcome.changes.join("; ")}`);
      for (const message of outcome.messages) this.log.warn(message);
    } else {
      this.events.emit("node.reload_failed", { reason: outcome.messages.join("; ") });
      this.log.warn(`reload refused, nothing changed: ${outcome.messages.join("; ")}`);
    }
    this.refreshSummary();
    if (!this.stopped) this.options.notifier.ready(this.summaryText); // never READY=1 after STOPPING=1
    return outcome;
  }

  private async applyReload(path: string): Promise<ReloadOutcome> {
    const next = loadNodeConfig(path); // throws E_CONFIG with every problem: nothing changed
    const diff = diffPlans(this.runningPlan(), next.plan);
    if (diff.refusals.length > 0) throw new DstdError("E_CONFIG", diff.refusals.join("\n"));
    // A group that (re)starts opens its trees anew: a tree its layout record refuses (a
    // stripe's legs or chunk changed, legs reordered) would not start. Refused here, while the
    // running group still serves (docs/tree.md "The layout record").
    const layout = diff.start.flatMap((name) => next.plan.exportGroups.find((u) => u.name === name)?.config ?? []).flatMap((e) => {
        const found = treeLayoutProblems(e, this.stateDir);
        return found.unreadable === null ? found.problems : [found.unreadable];
      });
    if (layout.length > 0) throw new DstdError("E_CONFIG", layout.join("\n"));
    const changes: string[] = [];
    const messages: string[] = [];
    const previous = this.loaded.config;
    const config = next.config;
    if ((this.options.stateDir ?? config.stateDir) !== this.stateDir) messages.push(`state_dir ${config.stateDir}: takes effect when dstd up restarts`);
    if (config.logFormat !== previous.logFormat) messages.push(`log_format ${config.logFormat}: takes effect when dstd up restarts`);
    // Listeners keep the limits they were started with; units a reload starts get the same,
    // so the node never runs two sets of limits at once.
    if (JSON.stringify(config.limits) !== JSON.stringify(this.startLimits)) messages.push("[limits]: takes effect when dstd up restarts (every listener keeps the limits the node started with)");
    if (config.cryptoThreads !== previous.cryptoThreads) messages.push(`crypto_threads ${config.cryptoThreads}: takes effect when dstd up restarts`);
    if (this.options.logLevel === undefined && config.logLevel !== previous.logLevel) changes.push(`log_level ${previous.logLevel} → ${config.logLevel}`);
    const oldMetrics = this.options.metricsListen ?? previous.metricsListen;
    const newMetrics = this.options.metricsListen ?? config.metricsListen;
    // Also when the listener is wanted but missing (an earlier move failed to bind): retry it.
    const metricsChanged = (oldMetrics === null ? "" : formatListenAddress(oldMetrics)) !== (newMetrics === null ? "" : formatListenAddress(newMetrics)) || (newMetrics !== null && this.metricsListener === null);

    // Prepare every in-place change first (new linear legs are opened), so that one that
    // cannot be made refuses the whole reload before anything changed.
    const prepared: Array<{ name: string; update: PreparedUpdate }> = [];
    try {
      for (const name of diff.update) {
        const unit = next.plan.exportGroups.find((u) => u.name === name);
        const pending = unit === undefined ? null : (this.services.get(name)?.update({ group: unit.config, keys: config.keys }) ?? null);
        if (pending === null) {
          // Not running right now (backoff): restart it with the new settings instead.
          diff.stop.push(name);
          diff.start.push(name);
          continue;
        }
        prepared.push({ name, update: await pending });
      }
    } catch (error) {
      await Promise.allSettled(prepared.map((p) => p.update.abort()));
      throw error;
    }
    for (const { name, update } of prepared) {
      const failures: string[] = [];
      const applied = update.commit(failures);
      changes.push(`updated ${name} in place${applied.length > 0 ? `: ${applied.join("; ")}` : ""}`);
      // Said as what it is, not among the changes: what runs now differs from the file there.
      for (const failure of failures) messages.push(`${name}: NOT applied: ${failure}; the group runs without it until it restarts (dstd up restart, or a change that restarts the group)`);
    }
    await this.removeUnits(diff.stop, "stop");
    for (const name of diff.stop) changes.push(diff.start.includes(name) ? `restarted ${name} (its settings changed)` : `stopped ${name}`);
    if (metricsChanged) {
      await this.metricsListener?.close();
      this.metricsListener = null;
      const moved = await this.startMetrics(newMetrics).then(
        () => true,
        (error) => void messages.push(`metrics_listen: ${errorMessage(error)}; metrics are off until a reload binds it`),
      );
      if (moved) changes.push(`metrics ${newMetrics === null ? "off" : `on ${formatListenAddress(newMetrics)}`}`);
    }
    this.loaded = next;
    this.applyLogLevel(config);
    await this.startUnits(next.plan, diff.start);
    for (const name of diff.start) if (!diff.stop.includes(name)) changes.push(`started ${name}`);
    for (const name of diff.start) {
      const service = this.services.get(name);
      if (service?.state === "backoff") messages.push(`${name} did not start: ${service.lastError}; retrying`);
    }
    this.generation++;
    return { ok: true, time: new Date().toISOString(), generation: this.generation, changes, messages };
  }

  /** The plan of what runs now (signatures as started). */
  private runningPlan(): NodePlan {
    const plan = this.loaded.plan;
    return {
      exportGroups: plan.exportGroups.filter((u) => this.services.has(u.name)),
      attachments: plan.attachments.filter((u) => this.services.has(u.name)),
    };
  }

  /** Every running replicated export of this node. */
  private replicaHandles(): Map<string, ReplicaHandle> {
    const all = new Map<string, ReplicaHandle>();
    for (const unit of this.loaded.plan.exportGroups) {
      const running = this.services.get(unit.name)?.current ?? null;
      for (const [name, handle] of running?.replicas?.() ?? []) all.set(name, handle);
    }
    return all;
  }

  /** `dstd resize NAME SIZE`: find the export's group and resize it while its clients stay connected. */
  private async resize(params: Record<string, unknown>): Promise<unknown> {
    const name = params.name;
    const size = params.size;
    if (typeof name !== "string" || typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
      throw new DstdError("E_REQUEST", "resize needs { name: string, size: a whole number of bytes }");
    }
    const unit = this.loaded.plan.exportGroups.find((u) => u.config.some((e) => e.name === name));
    if (unit === undefined) throw new DstdError("E_USAGE", `no export named '${name}' in this node's config`);
    const running = this.services.get(unit.name)?.current ?? null;
    if (running?.resize === undefined) throw new DstdError("E_STATE", `export '${name}' is not running right now (${unit.name}); try again when it is`);
    const message = await running.resize(name, size, { allowShrink: params.allowShrink === true, force: params.force === true });
    this.events.emit("export.resized", { name, size });
    this.log.info(message);
    return { name, size, message };
  }

  /** `dstd leg suspend|resume NAME LEG`: find the export's group and hold its mirror leg out, or bring it back. */
  private async holdLeg(params: Record<string, unknown>): Promise<unknown> {
    const { name, leg, action } = legParams(params);
    const unit = this.loaded.plan.exportGroups.find((u) => u.config.some((e) => e.name === name));
    if (unit === undefined) throw new DstdError("E_USAGE", `no export named '${name}' in this node's config`);
    const running = this.services.get(unit.name)?.current ?? null;
    if (running?.holdLeg === undefined) throw new DstdError("E_STATE", `export '${name}' is not running right now (${unit.name}); try again when it is`);
    const message = await running.holdLeg(name, leg, action);
    this.events.emit("export.leg", { name, leg, action });
    this.log.info(message);
    return { name, leg, action, message };
  }

  /** STOPPING=1, stop every unit ("handover" leaves kernel devices attached), close sockets. */
  async stop(mode: StopMode): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.options.notifier.stopping(mode === "handover" ? "handing over" : "stopping");
    this.events.emit("node.stopping", { mode });
    if (this.tick !== null) clearInterval(this.tick);
    await this.reloading?.catch(() => {});
    await this.extendingTimeout(this.removeUnits([...this.services.keys()], mode));
    await this.metricsListener?.close();
    await this.control?.close();
    this.options.notifier.stopWatchdog();
  }
}
