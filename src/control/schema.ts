/**
 * @module control/schema — the versioned shapes `dstd status --json`, the control socket and
 * `dstd events` hand out (docs/status.md documents each field). Types only.
 *
 * Compatibility rule: within version 1, fields are only ever added. Removing or changing the
 * meaning of a field makes version 2.
 */
import type { AttachmentState } from "../attach/state.ts";
import type { NodeSnapshot } from "../storage/tree/describe.ts";

export const STATUS_SCHEMA = "dstd-status";
export const STATUS_VERSION = 1;

export type ServiceKind = "export" | "attach";

/**
 * starting: first attempt running; running: serving; degraded: serving but not healthy
 * (an attachment's link is down and reconnecting); backoff: failed, restart scheduled
 * (retryAt); stopping/stopped: on the way out or out.
 */
export type ServiceState = "starting" | "running" | "degraded" | "backoff" | "stopping" | "stopped";
export const SERVICE_STATES: readonly ServiceState[] = ["starting", "running", "degraded", "backoff", "stopping", "stopped"];

export interface ConnectionEntry {
  protocol: "dst" | "nbd";
  /** "127.0.0.1:40312", "[::1]:5000" or "unix:/path". */
  peer: string;
  since: string;
  bytesIn: number;
  bytesOut: number;
}

export interface ExportEntry {
  name: string;
  description: string;
  backend: { kind: "file" | "device" | "memory" | "tree" | "rbd"; path: string | null; sizeBytes: number | null };
  readOnly: boolean;
  /** Allow rules as written in the config ("alice@10.0.0.0/8:rw"). */
  allow: string[];
  /** Storage trees only: each node, each mirror leg's state, generation and resync progress (docs/tree.md "Status"). */
  tree?: NodeSnapshot;
}

export interface ExportGroupStatus {
  exports: ExportEntry[];
  listeners: { dst: string[]; nbd: string[] };
  connections: { current: number; list: ConnectionEntry[]; truncated: boolean };
}

export interface AttachStatus {
  url: string;
  mode: "nbd-listen" | "kernel";
  /** /dev/nbdN (kernel) or the NBD endpoint (nbd-listen); null before the first start. */
  device: string | null;
  /** The DST link: idle, connecting, handshaking, ready, failed, closed. */
  link: string;
  sizeBytes: number | null;
  writable: boolean | null;
}

export interface ServiceStatus {
  name: string;
  kind: ServiceKind;
  state: ServiceState;
  /** When it entered this state. */
  since: string;
  restarts: number;
  lastError: string | null;
  /** In backoff: when the next attempt starts. */
  retryAt: string | null;
  export?: ExportGroupStatus;
  attach?: AttachStatus;
  /** Monotonic counters and gauges, by name (docs/status.md lists them per kind). */
  counters: Record<string, number>;
  /** Per-second rates of some counters over the last sampling interval. */
  rates: Record<string, number>;
}

export interface ReloadOutcome {
  ok: boolean;
  time: string;
  generation: number;
  /** What was applied ("started export 'b'"), or nothing when !ok. */
  changes: string[];
  /** Why nothing changed (invalid config), or what could not be applied live. */
  messages: string[];
}

export interface NodeInfo {
  pid: number;
  version: string;
  startedAt: string;
  uptimeSeconds: number;
  config: string;
  /** 1 at start, +1 per applied reload. */
  generation: number;
  stateDir: string;
  controlSocket: string;
  metricsListen: string | null;
  ready: boolean;
  /** The one-line summary also sent to systemd as STATUS=. */
  summary: string;
  lastReload: ReloadOutcome | null;
}

export interface StatusReport {
  schema: typeof STATUS_SCHEMA;
  version: typeof STATUS_VERSION;
  generatedAt: string;
  /** null: no `dstd up` answers on the control socket. */
  node: NodeInfo | null;
  services: ServiceStatus[];
  /** Attachment records of standalone `dstd attach` daemons (not the node's own). */
  attachments: AttachmentState[];
}
