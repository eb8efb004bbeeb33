/**
 * @module status/node-metrics — the metric families of a `dstd up` node, read at scrape
 * time from its services (export groups, attachments), the node itself, the control
 * socket and the process. Names and meanings: docs/status.md "Metrics".
 *
 * Label values are service names and states: they come from the operator's config and our
 * own vocabularies, never from a peer; each family still has a series bound (metrics.ts).
 */
import { readdirSync } from "node:fs";
import type { ServiceKind, ServiceState } from "../control/schema.ts";
import { SERVICE_STATES } from "../control/schema.ts";
import { METHODS } from "../control/protocol.ts";
import { REJECT_REASONS, type ControlObserver } from "../control/server.ts";
import { LATENCY_BUCKETS, Registry } from "./metrics.ts";
import type { RequestObserver } from "../export/server.ts";
import { errnoName } from "../lib/errno.ts";
import { NODE_EVENT_TYPES, type EventBus, type NodeEventType } from "./events.ts";
import type { MirrorLegView, MirrorView } from "./tree-metrics.ts";
import { LEG_STATES } from "../storage/tree/mirror/leg.ts";
import { MAX_MIRROR_LEGS } from "../config/tree-spec.ts";

export interface ServiceView {
  readonly name: string;
  readonly kind: ServiceKind;
  readonly state: ServiceState;
  readonly restarts: number;
  counters(): Record<string, number>;
}

export interface NodeMetricsSource {
  services(): readonly ServiceView[];
  version: string;
  startedAtMs: number;
  generation(): number;
  /** null before the first reload. */
  lastReload(): { ok: boolean; timeMs: number } | null;
  ready(): boolean;
  controlClients(): number;
  eventSubscribers(): number;
  /** The replicated exports' status (daemon/replica-status.ts), absent: none. */
  replicas?(): readonly ReplicaMetricView[];
  /** Every mirror and mirror leg in the exports' trees (status/tree-metrics.ts), absent: none. */
  mirrors?(): { mirrors: readonly MirrorView[]; legs: readonly MirrorLegView[] };
}

/** What the dstd_replica_* families read of one replicated export. */
export interface ReplicaMetricView {
  readonly name: string;
  readonly role: string;
  readonly state: string;
  readonly generation: number;
  readonly seq: number;
  readonly lag_bytes: number;
  readonly lag_seconds: number;
  readonly log_bytes: number;
  readonly last_contact_seconds: number | null;
  /** Secondary: failed FETCHes asked again. */
  readonly retries: number;
  /** An initial sync or fork repair under way. */
  readonly sync: { readonly done_bytes: number; readonly total_bytes: number; readonly moved_bytes: number } | null;
}

/** Replica states (label values of dstd_replica_state). */
export const REPLICA_STATES = ["primary", "replicating", "syncing", "inconsistent", "paused", "diverged", "stalled", "disconnected"] as const;
const REPLICA_GAUGES: ReadonlyArray<readonly [keyof ReplicaMetricView, string, string]> = [
  ["generation", "dstd_replica_generation", "The replicated export's generation (a promotion starts a new one)."],
  ["seq", "dstd_replica_seq", "Last record applied (secondary) or durable in the log (primary)."],
  ["lag_bytes", "dstd_replica_lag_bytes", "Secondary: log bytes on the primary not applied here (an upper bound while records wait for replay)."],
  ["lag_seconds", "dstd_replica_lag_seconds", "Secondary: 0 when caught up, else seconds since the primary wrote the last record applied here."],
  ["log_bytes", "dstd_replica_log_bytes", "Bytes of the replication log (primary) or of the local log copy (secondary)."],
  ["retries", "dstd_replica_fetch_retries", "Secondary: failed or refused FETCHes asked again since the node started."],
];
/** [sync key, metric name, HELP]: present while an initial sync or fork repair runs. */
const REPLICA_SYNC_GAUGES: ReadonlyArray<readonly ["done_bytes" | "total_bytes" | "moved_bytes", string, string]> = [
  ["done_bytes", "dstd_replica_sync_done_bytes", "Initial sync: bytes of the disk (or of the fork repair's ranges) copied."],
  ["total_bytes", "dstd_replica_sync_total_bytes", "Initial sync: bytes of the disk (or of the fork repair's ranges) to copy."],
  ["moved_bytes", "dstd_replica_sync_moved_bytes", "Initial sync: data bytes received (holes and zeroes are not sent)."],
];

/** [counter key, metric name, HELP] of export groups. */
const EXPORT_COUNTER_METRICS: ReadonlyArray<readonly [string, string, string]> = [
  ["connections", "dstd_export_dst_connections_total", "DST connections accepted by the export group's listeners."],
  ["connectionsOpened", "dstd_export_connections_total", "Connections accepted (DST and NBD)."],
  ["refused", "dstd_export_refused_total", "DST clients refused (access rules, authentication, unknown export)."],
  ["requests", "dstd_export_requests_total", "DST requests received."],
  ["duplicates", "dstd_export_duplicate_requests_total", "DST requests recognised as resends of one already answered."],
  ["protocolErrors", "dstd_export_protocol_errors_total", "DST connections closed for a protocol violation."],
  ["checksumFailures", "dstd_export_checksum_failures_total", "Writes refused because their data checksum did not match."],
  ["bytesIn", "dstd_export_received_bytes_total", "Bytes received from clients (DST and NBD, framing included)."],
  ["bytesOut", "dstd_export_sent_bytes_total", "Bytes sent to clients (DST and NBD, framing included)."],
  ["resumesRefused", "dstd_export_resumes_refused_total", "Session resumes refused: another identity, or no proof of the session's secret."],
  ["staleResumes", "dstd_export_stale_resumes_total", "Late session handshakes refused: an older connection than the one already admitted for the session."],
  ["mismatchedResends", "dstd_export_mismatched_resends_total", "Resends whose request differed from what was applied under their txid (refused)."],
  ["overflows", "dstd_export_exactly_once_overflows_total", "Mutations refused because the session's exactly-once table was full."],
  ["budgetWaits", "dstd_export_budget_waits_total", "Times a connection stopped reading for lack of memory or reply room."],
];

const ATTACH_COUNTER_METRICS: ReadonlyArray<readonly [string, string, string]> = [
  ["connects", "dstd_attach_connects_total", "Connection attempts to the export."],
  ["reconnects", "dstd_attach_reconnects_total", "Successful handshakes after the first one."],
  ["resends", "dstd_attach_resends_total", "Requests sent again after a timeout or a reconnect."],
  ["replays", "dstd_attach_replays_total", "Unflushed writes replayed because the export restarted."],
  ["replayFailures", "dstd_attach_replay_failures_total", "Replayed writes the export failed."],
  ["keepaliveFailures", "dstd_attach_keepalive_failures_total", "Connections declared dead by the keepalive."],
  ["pings", "dstd_attach_pings_total", "Keepalive pings sent on idle connections."],
  ["timeouts", "dstd_attach_timeouts_total", "Requests failed because their resend or deadline budget was spent."],
  ["staleReplies", "dstd_attach_stale_replies_total", "Replies for requests no longer outstanding (ignored)."],
  ["autoFlushes", "dstd_attach_auto_flushes_total", "Flushes issued because the replay buffer reached its bound."],
  ["checksumFailures", "dstd_attach_checksum_failures_total", "Data checksums that did not match."],
];

const MAX_SERVICES = 256;

export interface NodeMetrics {
  registry: Registry;
  /** The per-request metrics of one export group's DST requests (counts, bytes, errors, latency). */
  requests(service: string): RequestObserver;
  /** Feed the control server's observer with this. */
  control: ControlObserver;
  /** Count events by type. */
  watchEvents(bus: EventBus): void;
}

const OPERATIONS = ["read", "write", "flush", "trim", "zero", "cache", "block-status"];

export function nodeMetrics(source: NodeMetricsSource): NodeMetrics {
  const registry = new Registry();
  // Label values: service names (the operator's config), our operation names and errno names
  // from lib/errno.ts (anything else is "other"): nothing a peer chooses.
  const opLabels = { labels: ["service", "op"], values: { op: OPERATIONS }, maxSeries: MAX_SERVICES * OPERATIONS.length };
  const operations = registry.counter({ name: "dstd_export_operations_total", help: "DST requests the export's storage completed, by operation.", ...opLabels });
  const operationBytes = registry.counter({ name: "dstd_export_operation_bytes_total", help: "Bytes covered by completed DST requests, by operation (read, write, trim, zero).", ...opLabels });
  const operationErrors = registry.counter({
    name: "dstd_export_operation_errors_total",
    help: "DST requests that failed, by operation and errno.",
    labels: ["service", "op", "errno"],
    values: { op: OPERATIONS },
    maxSeries: 1024,
  });
  const latency = registry.histogram({
    name: "dstd_export_operation_duration_seconds",
    help: "Time from handing a DST request to the storage port to its completion, by operation.",
    buckets: LATENCY_BUCKETS,
    ...opLabels,
  });
  const requestObserver = (service: string): RequestObserver => ({
    completed(_exportName, kind, bytes, errno, seconds) {
      operations.labels({ service, op: kind }).inc();
      if (kind !== "flush") operationBytes.labels({ service, op: kind }).inc(bytes);
      if (errno !== 0) operationErrors.labels({ service, op: kind, errno: errnoName(errno) }).inc();
      latency.labels({ service, op: kind }).observe(seconds);
    },
  });
  const byKind = (kind: ServiceKind) => source.services().filter((s) => s.kind === kind);

  registry.collected("gauge", { name: "dstd_build_info", help: "Always 1; the version label names the running dstd.", labels: ["version"] }, (emit) =>
    emit({ version: source.version }, 1),
  );
  registry.collected("gauge", { name: "dstd_node_start_time_seconds", help: "When this node started, in seconds since the Unix epoch." }, (emit) =>
    emit({}, Math.floor(source.startedAtMs / 1000)),
  );
  registry.collected("gauge", { name: "dstd_node_ready", help: "1 once the node told systemd READY=1 (every unit had its first start)." }, (emit) =>
    emit({}, source.ready() ? 1 : 0),
  );
  registry.collected("gauge", { name: "dstd_config_generation", help: "Configuration generation: 1 at start, +1 per applied reload." }, (emit) =>
    emit({}, source.generation()),
  );
  registry.collected("gauge", { name: "dstd_config_last_reload_successful", help: "1 if the last reload was applied (also 1 before any reload), 0 if it was refused." }, (emit) =>
    emit({}, source.lastReload()?.ok === false ? 0 : 1),
  );
  registry.collected(
    "gauge",
    { name: "dstd_config_last_reload_timestamp_seconds", help: "When the last reload was attempted, in seconds since the Unix epoch (0: never)." },
    (emit) => emit({}, Math.floor((source.lastReload()?.timeMs ?? 0) / 1000)),
  );

  const serviceLabels = ["service", "kind"];
  registry.collected(
    "gauge",
    { name: "dstd_service_state", help: "1 for the state each service is in, 0 for the others.", labels: ["service", "kind", "state"], values: { state: SERVICE_STATES }, maxSeries: MAX_SERVICES * SERVICE_STATES.length },
    (emit) => {
      for (const s of source.services()) for (const state of SERVICE_STATES) emit({ service: s.name, kind: s.kind, state }, s.state === state ? 1 : 0);
    },
  );
  registry.collected("gauge", { name: "dstd_service_up", help: "1 while a service serves (running or degraded).", labels: serviceLabels, maxSeries: MAX_SERVICES }, (emit) => {
    for (const s of source.services()) emit({ service: s.name, kind: s.kind }, s.state === "running" || s.state === "degraded" ? 1 : 0);
  });
  registry.collected("counter", { name: "dstd_service_restarts_total", help: "Restarts after a failure.", labels: serviceLabels, maxSeries: MAX_SERVICES }, (emit) => {
    for (const s of source.services()) emit({ service: s.name, kind: s.kind }, s.restarts);
  });

  const perService = (kind: ServiceKind, type: "counter" | "gauge", key: string, name: string, help: string) =>
    registry.collected(type, { name, help, labels: ["service"], maxSeries: MAX_SERVICES }, (emit) => {
      for (const s of byKind(kind)) emit({ service: s.name }, s.counters()[key] ?? 0);
    });
  for (const [key, name, help] of EXPORT_COUNTER_METRICS) perService("export", "counter", key, name, help);
  perService("export", "gauge", "connectionsCurrent", "dstd_export_open_connections", "Connections open now (DST and NBD).");
  perService("export", "gauge", "memoryBytes", "dstd_export_memory_bytes", "Bytes the export holds for peers now (receive buffers, replies being produced or queued), within its memory budget.");
  perService("export", "gauge", "sessions", "dstd_export_sessions", "DST sessions remembered (connected or waiting for a reconnect).");
  for (const [key, name, help] of ATTACH_COUNTER_METRICS) perService("attach", "counter", key, name, help);
  perService("attach", "gauge", "inflight", "dstd_attach_inflight_requests", "Requests on the wire to the export now.");

  const replicas = () => source.replicas?.() ?? [];
  registry.collected(
    "gauge",
    { name: "dstd_replica_state", help: "1 for the state each replicated export is in, 0 for the others; role: primary, secondary or diverged.", labels: ["export", "role", "state"], values: { state: REPLICA_STATES }, maxSeries: MAX_SERVICES * REPLICA_STATES.length },
    (emit) => {
      for (const r of replicas()) for (const state of REPLICA_STATES) emit({ export: r.name, role: r.role, state }, r.state === state ? 1 : 0);
    },
  );
  for (const [key, name, help] of REPLICA_GAUGES) {
    registry.collected("gauge", { name, help, labels: ["export"], maxSeries: MAX_SERVICES }, (emit) => {
      for (const r of replicas()) emit({ export: r.name }, r[key] as number);
    });
  }
  for (const [key, name, help] of REPLICA_SYNC_GAUGES) {
    registry.collected("gauge", { name, help, labels: ["export"], maxSeries: MAX_SERVICES }, (emit) => {
      for (const r of replicas()) if (r.sync !== null) emit({ export: r.name }, r.sync[key]);
    });
  }
  registry.collected("gauge", { name: "dstd_replica_last_contact_seconds", help: "Seconds since the last answer from (secondary) or FETCH by (primary) the peer; absent: never.", labels: ["export"], maxSeries: MAX_SERVICES }, (emit) => {
    for (const r of replicas()) if (r.last_contact_seconds !== null) emit({ export: r.name }, r.last_contact_seconds);
  });

  // Storage trees: a mirror leg out of sync is what an operator alerts on (docs/tree.md "Leg states").
  const trees = () => source.mirrors?.() ?? { mirrors: [], legs: [] };
  const MAX_LEGS = MAX_SERVICES * MAX_MIRROR_LEGS;
  const legLabels = ["export", "mirror", "leg"];
  registry.collected("gauge", { name: "dstd_mirror_generation", help: "A mirror's generation: goes up whenever a leg leaves the in-sync set.", labels: ["export", "mirror"], maxSeries: MAX_SERVICES }, (emit) => {
    for (const m of trees().mirrors) emit({ export: m.export, mirror: m.mirror }, m.generation);
  });
  registry.collected(
    "gauge",
    { name: "dstd_mirror_leg_state", help: "1 for the state each mirror leg is in, 0 for the others.", labels: [...legLabels, "state"], values: { state: LEG_STATES }, maxSeries: MAX_LEGS * LEG_STATES.length },
    (emit) => {
      for (const l of trees().legs) for (const state of LEG_STATES) emit({ export: l.export, mirror: l.mirror, leg: l.leg, state }, l.state === state ? 1 : 0);
    },
  );
  registry.collected("gauge", { name: "dstd_mirror_leg_missing_bytes", help: "Bytes of regions a mirror leg may be missing (resynced when it is back); 0 in sync.", labels: legLabels, maxSeries: MAX_LEGS }, (emit) => {
    for (const l of trees().legs) emit({ export: l.export, mirror: l.mirror, leg: l.leg }, l.missingBytes);
  });
  registry.collected("gauge", { name: "dstd_mirror_leg_resync_remaining_bytes", help: "Bytes the running resync of a mirror leg still has to copy; absent: no resync.", labels: legLabels, maxSeries: MAX_LEGS }, (emit) => {
    for (const l of trees().legs) if (l.resyncRemainingBytes !== null) emit({ export: l.export, mirror: l.mirror, leg: l.leg }, l.resyncRemainingBytes);
  });
  registry.collected("counter", { name: "dstd_mirror_leg_degradations_total", help: "Times a mirror leg failed its budget and was degraded, since the export started.", labels: legLabels, maxSeries: MAX_LEGS }, (emit) => {
    for (const l of trees().legs) emit({ export: l.export, mirror: l.mirror, leg: l.leg }, l.degradations);
  });

  const requests = registry.counter({ name: "dstd_control_requests_total", help: "Control socket requests, by method.", labels: ["method"], values: { method: [...METHODS, "invalid"] } });
  const rejects = registry.counter({ name: "dstd_control_rejected_total", help: "Control clients refused or closed, by reason.", labels: ["reason"], values: { reason: REJECT_REASONS } });
  registry.collected("gauge", { name: "dstd_control_clients", help: "Control socket connections open now." }, (emit) => emit({}, source.controlClients()));
  registry.collected("gauge", { name: "dstd_event_followers", help: "Clients following the event stream now." }, (emit) => emit({}, source.eventSubscribers()));
  const events = registry.counter({ name: "dstd_events_total", help: "Events emitted, by type.", labels: ["type"], values: { type: NODE_EVENT_TYPES } });
  // Known label values start at 0, so a rate over them is defined before the first event.
  for (const method of [...METHODS, "invalid"]) requests.labels({ method });
  for (const reason of REJECT_REASONS) rejects.labels({ reason });
  for (const type of NODE_EVENT_TYPES) events.labels({ type });

  registry.collected("gauge", { name: "process_resident_memory_bytes", help: "Resident memory size in bytes." }, (emit) => emit({}, process.memoryUsage().rss));
  registry.collected("gauge", { name: "dstd_heap_used_bytes", help: "JavaScript heap in use, in bytes." }, (emit) => emit({}, process.memoryUsage().heapUsed));
  registry.collected("counter", { name: "process_cpu_seconds_total", help: "User and system CPU time spent, in seconds." }, (emit) => {
    const usage = process.cpuUsage();
    emit({}, (usage.user + usage.system) / 1e6);
  });
  registry.collected("gauge", { name: "process_start_time_seconds", help: "Start time of the process since the Unix epoch, in seconds." }, (emit) =>
    emit({}, Math.floor(source.startedAtMs / 1000)),
  );
  registry.collected("gauge", { name: "process_open_fds", help: "Open file descriptors." }, (emit) => {
    try {
      emit({}, readdirSync("/proc/self/fd").length);
    } catch {
      // no procfs: leave the family without a sample
    }
  });

  return {
    registry,
    requests: requestObserver,
    control: {
      request: (method) => requests.labels({ method }).inc(),
      reject: (reason) => rejects.labels({ reason }).inc(),
    },
    watchEvents(bus: EventBus) {
      bus.subscribe((event) => events.labels({ type: event.type satisfies NodeEventType }).inc());
    },
  };
}
