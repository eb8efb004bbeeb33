/**
 * @module daemon/services — the units `dstd up` supervises, built on the existing
 * composition roots and nothing deeper: an export group (daemon/export-node.ts
 * startExportNode), an NBD-endpoint attachment (daemon/attach-node.ts startNbdAttach) and a
 * kernel attachment (daemon/attach-node.ts attachKernel). Each is a Runner
 * (daemon/supervisor.ts); what they report comes from what those roots expose today:
 * DstServer.counters, the client engine's counters and state, and a connection tracker
 * around the listeners (status/connections.ts).
 *
 * Export groups: exports that share a listen address must share one listener, so they run
 * as one unit (named after its exports: "export:a+b"); exports on their own addresses are
 * units of their own and start and stop independently.
 */
import { ShrinkGate } from "../storage/layers/shrink-gate.ts";
import { formatExportUrl, formatListenAddress } from "../lib/address.ts";
import { DstdError } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { loadKeyFile } from "../crypto/keys.ts";
import type { AttachConfig, ExportConfig, KeyConfig } from "../config/types.ts";
import type { EngineOptions } from "../engine/options.ts";
import type { ConnectionBudget } from "../transport/fd-budget.ts";
import type { ConnectionLimits } from "../transport/guard.ts";
import type { RequestObserver } from "../export/server.ts";
import type { Export } from "../export/exports.ts";
import type { ExportEntry } from "../control/schema.ts";
import { snapshotOf } from "../storage/tree/describe.ts";
import { describeRbd } from "../storage/rbd/open.ts";
import { ConnectionTracker, type ConnectionEvent } from "../status/connections.ts";
import type { EventBus } from "../status/events.ts";
import { startExportNode } from "./export-node.ts";
import { acceptNbdForExports } from "./nbd-front.ts";
import { attachKernel, startNbdAttach } from "./attach-node.ts";
import type { Health, Runner, Running, ServiceDetail } from "./supervisor.ts";

export const EXPORT_GAUGES = ["connectionsCurrent", "memoryBytes", "sessions"] as const;

export const ATTACH_GAUGES = ["inflight"] as const;

// ---- export groups -----------------------------------------------------------------------

/**
 * Partition exports into groups that must share listeners: two exports are in one group
 * when they have a DST or NBD listen address in common (transitively). Order follows the
 * config.
 */
export function groupExports(exports: readonly ExportConfig[]): ExportConfig[][] {
  const parent = exports.map((_, i) => i);
  const find = (i: number): number => (parent[i] === i ? i : (parent[i] = find(parent[i]!)));
  const owner = new Map<string, number>();
  exports.forEach((e, i) => {
    for (const address of [...e.listen.map((a) => `dst ${formatListenAddress(a)}`), ...e.nbdListen.map((a) => `nbd ${formatListenAddress(a)}`)]) {
      const seen = owner.get(address);
      if (seen === undefined) owner.set(address, i);
      else parent[find(i)] = find(seen);
    }
  });
  const groups = new Map<number, ExportConfig[]>();
  exports.forEach((e, i) => {
    const root = find(i);
    groups.set(root, [...(groups.get(root) ?? []), e]);
  });
  return [...groups.values()];
}

export function exportGroupName(group: readonly ExportConfig[]): string {
  return `export:${group.map((e) => e.name).join("+")}`;
}

/**
 * An export group is failed while a replicated export's primary refuses writes until it is
 * opened again (its disk failed a logged write-back or a flush, or its log and state cannot be
 * written: docs/replication.md §4): the supervisor then restarts the group with its backoff,
 * and the restart replays the log onto the disk — as an operator would restart the node, but
 * without the node's other groups. A disk that still fails fails the start, and it is retried.
 */
export function groupHealth(replicas: ReadonlyMap<string, { readonly failedClosed: string | null }>): Health {
  for (const [name, replica] of replicas) {
    const why = replica.failedClosed;
    if (why !== null) return { failed: `export '${name}': replication primary failed closed: ${why}` };
  }
  return { state: "running" };
}

/** What status shows of one export: its config, and while it runs its port and its read-only flag now (a replica's follows its role). */
function exportEntry(config: ExportConfig, running: Export | null): ExportEntry {
  const backend = config.backend;
  const port = running?.port ?? null;
  const entry: ExportEntry = {
    name: config.name,
    description: config.description,
    backend: {
      kind: backend.kind,
      path: backend.kind === "file" || backend.kind === "device" ? backend.path : backend.kind === "rbd" ? describeRbd(backend.rbd) : null,
      sizeBytes: port?.size ?? (backend.kind === "file" || backend.kind === "memory" ? backend.sizeBytes : null),
    },
    readOnly: running?.readOnly ?? config.readOnly,
    allow: config.allow.map((rule) => rule.source),
  };
  // A storage tree: every node's and mirror leg's state (storage/tree/describe.ts).
  if (backend.kind === "tree" && port !== null) entry.tree = snapshotOf(port instanceof ShrinkGate ? port.below : port);
  return entry;
}

export interface ExportGroupOptions {
  group: readonly ExportConfig[];
  keys: readonly KeyConfig[];
  /** Deadlines and connection caps of the listeners (config `[limits]`). */
  limits: ConnectionLimits;
  /** The node's connection budget: every unit's listeners draw on one (max_connections is per process). */
  budget?: ConnectionBudget;
  /** Per-request metrics of the group's DST requests. */
  observer?: RequestObserver;
  log: Log;
  events: EventBus;
  name: string;
  /** The node's state_dir: the trees' layout records (storage/tree/layout-book.ts). */
  stateDir: string;
}

export function exportGroupRunner(options: ExportGroupOptions): Runner {
  const { group, log, events, name } = options;
  const listeners = {
    dst: [...new Set(group.flatMap((e) => e.listen.map(formatListenAddress)))],
    nbd: [...new Set(group.flatMap((e) => e.nbdListen.map(formatListenAddress)))],
  };
  return {
    gauges: EXPORT_GAUGES,
    rated: ["requests", "bytesIn", "bytesOut"],
    placeholder: (): ServiceDetail => ({
      export: { exports: group.map((e) => exportEntry(e, null)), listeners, connections: { current: 0, list: [], truncated: false } },
    }),
    async start(): Promise<Running> {
      const onEvent = (kind: "open" | "close", event: ConnectionEvent) => {
        const fields = { service: name, protocol: event.protocol, peer: event.peer };
        if (kind === "open") {
          log.debug("connection opened", fields);
          events.emit("connection.open", fields);
        } else {
          const done = { ...fields, durationMs: event.durationMs ?? 0, bytesIn: event.bytesIn ?? 0, bytesOut: event.bytesOut ?? 0, reason: event.reason ?? null };
          log.debug("connection closed", done);
          events.emit("connection.close", done);
        }
      };
      const tracker = new ConnectionTracker(onEvent);
      const node = await startExportNode({
        exports: group,
        keys: options.keys,
        limits: options.limits,
        budget: options.budget,
        observer: options.observer,
        log,
        stateDir: options.stateDir,
        nbdAccept: acceptNbdForExports,
        wrapAccept: (accept, protocol) => tracker.wrap(accept, protocol),
      });
      const bound = { dst: node.dstAddresses.map(formatListenAddress), nbd: node.nbdAddresses.map(formatListenAddress) };
      let current = group;
      return {
        check: () => groupHealth(node.replicas),
        stop: () => node.stop(),
        resize: (exportName, size, resizeOptions) => node.resize(exportName, size, resizeOptions),
        holdLeg: (exportName, leg, action) => node.holdLeg(exportName, leg, action),
        replicas: () => node.replicas,
        update: async (next) => {
          const { group: configs, keys } = next as { group: readonly ExportConfig[]; keys: readonly KeyConfig[] };
          const prepared = await node.prepareUpdate(configs, keys);
          return {
            commit: (failures?: string[]) => {
              const changes = prepared.commit(failures);
              current = configs; // status shows the allow lists in force
              return changes;
            },
            abort: () => prepared.abort(),
          };
        },
        detail: () => ({
          export: {
            exports: current.map((e, i) => exportEntry(e, node.exports[i] ?? null)),
            listeners: bound,
            connections: tracker.snapshot(),
          },
        }),
        counters: () => ({
          ...node.server.counters,
          connectionsOpened: tracker.opened,
          bytesIn: tracker.bytesIn,
          bytesOut: tracker.bytesOut,
          connectionsCurrent: tracker.current,
          memoryBytes: node.server.memoryInUse,
          sessions: node.server.sessions.size,
        }),
      };
    },
  };
}

// ---- attachments -----------------------------------------------------------------------

/** The engine options an [[attach]] entry asks for (its key file is read at each start). */
export function attachEngineOptions(entry: AttachConfig): Partial<EngineOptions> {
  return {
    ...entry.reliability,
    inflight: entry.reliability.inflightMax,
    checksums: entry.checksums,
    auth: entry.keyFile ? { key: loadKeyFile(entry.keyFile), suites: entry.suites } : null,
  };
}

/** Stable name of an attachment: its endpoint or device, else its URL. */
export function attachName(entry: AttachConfig): string {
  if (entry.nbdListen !== null) return `attach:${formatListenAddress(entry.nbdListen)}`;
  if (entry.device !== null) return `attach:${entry.device}`;
  return `attach:${formatExportUrl(entry.url)}`;
}

export interface AttachRunnerOptions {
  entry: AttachConfig;
  stateDir: string;
  log: Log;
  /** Kernel attachments: NBD_ATTR_DEAD_CONN_TIMEOUT in seconds. */
  deadConnTimeoutSec: number;
  /** The node's connection budget, for an `nbd_listen` endpoint (one budget per process). */
  budget?: ConnectionBudget;
}

function engineCounters(counters: object): Record<string, number> {
  return { ...(counters as Record<string, number>) };
}

/** Link state → health: ready is running; reconnecting is degraded; failed/closed is failed. */
function linkHealth(state: string, fatal: string | null) {
  if (state === "ready") return { state: "running" as const };
  if (state === "failed" || state === "closed") return { failed: `export link ${state}${fatal ? `: ${fatal}` : ""}` };
  return { state: "degraded" as const, detail: `export link ${state}; reconnecting` };
}

export function attachRunner(options: AttachRunnerOptions): Runner {
  const { entry, log } = options;
  const url = formatExportUrl(entry.url);
  const mode = entry.nbdListen !== null ? ("nbd-listen" as const) : ("kernel" as const);
  const placeholderDevice = entry.nbdListen !== null ? formatListenAddress(entry.nbdListen) : entry.device;
  const common = {
    gauges: ATTACH_GAUGES,
    rated: ["resends", "reconnects"],
    placeholder: (): ServiceDetail => ({ attach: { url, mode, device: placeholderDevice, link: "idle", sizeBytes: null, writable: null } }),
  };
  if (entry.nbdListen !== null) {
    const nbdListen = entry.nbdListen;
    return {
      ...common,
      async start(): Promise<Running> {
        const node = await startNbdAttach({ url: entry.url, stateDir: options.stateDir, engine: attachEngineOptions(entry), log, nbdListen, budget: options.budget });
        const engine = node.client.engine;
        return {
          check: () => linkHealth(engine.state, engine.fatal ?? null),
          stop: () => node.stop(),
          detail: () => ({
            attach: { url, mode, device: formatListenAddress(node.bound), link: engine.state, sizeBytes: node.client.size, writable: node.client.writable },
          }),
          counters: () => engineCounters(engine.counters),
        };
      },
    };
  }
  return {
    ...common,
    async start(): Promise<Running> {
      const result = await attachKernel({
        url: entry.url,
        device: entry.device,
        stateDir: options.stateDir,
        engine: attachEngineOptions(entry),
        deadConnTimeoutSec: options.deadConnTimeoutSec,
        connections: entry.connections,
        log,
      });
      if (result.kind === "already") throw new DstdError("E_BUSY", result.message);
      const attachment = result.attachment;
      const engine = attachment.client.engine;
      const ended = attachment.ended.then((end) => (end.error !== null ? end.error.message : end.reason));
      return {
        check: () => linkHealth(engine.state, engine.fatal ?? null),
        ended,
        stop: (how) => (how === "handover" ? attachment.handover().then(() => {}) : attachment.detach()), // dstd up is stopping: it cannot stay
        detail: () => ({
          attach: { url, mode, device: attachment.device, link: engine.state, sizeBytes: attachment.client.size, writable: attachment.client.writable },
        }),
        counters: () => engineCounters(engine.counters),
      };
    },
  };
}
