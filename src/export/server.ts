/**
 * @module export/server — the DST export: its exports by name, its process epoch, its
 * sessions, its memory budget and its live connections. `accept` is the AcceptHandler the
 * transport (or the simulator) calls for each connection (export/connection.ts).
 *
 * No sockets and no timers here: `defer` (setImmediate in production, the simulated clock in
 * test/sim) schedules continuations, and the export node calls `tick()` about once a second.
 * The epoch is random per process: a client that sees a new epoch knows the export restarted
 * (docs/protocol.md §6.5).
 */
import { randomBytes } from "node:crypto";
import { errnoMessage } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import type { KeyTable } from "../crypto/dst-auth.ts";
import type { GuardHooks } from "../transport/guard.ts";
import type { Peer, Sink } from "../transport/types.ts";
import { Budget } from "./budget.ts";
import { DstConnection } from "./connection.ts";
import type { Export } from "./exports.ts";
import { EXPORT_LIMITS, type ExportLimits } from "./limits.ts";
import { SessionTable } from "./sessions.ts";

export interface ServerLog {
  info(message: string): void;
  warn(message: string): void;
}

export interface DstServerOptions {
  exports: Export[];
  log: ServerLog;
  /** Epoch override (simulation restarts pick their own); random otherwise. */
  epoch?: number;
  /**
   * Planted bugs for the simulator's checker tests (test/sim/planted-bugs.test.ts) ONLY: never
   * set outside tests. noFencing: a resumed session leaves its old connection running;
   * noDedupe: a resent mutation is applied again instead of answered from the session;
   * staleResumes: a late handshake of an older connection takes the session over;
   * resumeWithoutProof: a HELLO naming a session resumes it without the resumption proof or
   * token (docs/protocol.md §6.5), so anyone who read the session id off the wire takes it.
   */
  unsafe?: { noFencing?: boolean; noDedupe?: boolean; staleResumes?: boolean; resumeWithoutProof?: boolean };
  /** Pre-shared keys by identity (several during a rotation overlap). */
  keys?: KeyTable;
  /** Bounds on what peers can make the export hold (defaults: export/limits.ts). */
  limits?: Partial<ExportLimits>;
  /** Run `work` soon, after the current event (default: queueMicrotask). */
  defer?: (work: () => void) => void;
  /** Told about every request the port completed (metrics); optional. */
  observer?: RequestObserver;
  /** Milliseconds, monotonic, for request latency (default performance.now). */
  now?: () => number;
}

/** What the export reports of each request it served (status/node-metrics.ts counts it). */
export interface RequestObserver {
  completed(exportName: string, kind: "read" | "write" | "flush" | "trim" | "zero" | "cache" | "block-status", bytes: number, errno: number, seconds: number): void;
}

export interface ServerCounters {
  connections: number;
  refused: number;
  requests: number;
  duplicates: number;
  protocolErrors: number;
  checksumFailures: number;
  /** Resume attempts refused: another identity, or no proof of the session's secret. */
  resumesRefused: number;
  /** Late handshakes refused: a resume older than the connection already serving the session. */
  staleResumes: number;
  /** Resends whose request differed from what was applied under their txid. */
  mismatchedResends: number;
  /** Mutations refused because the exactly-once table was at its bound. */
  overflows: number;
  /** Times a connection stopped reading for lack of memory or reply room. */
  budgetWaits: number;
}

export class DstServer {
  readonly epoch: number;
  readonly counters: ServerCounters = {
    connections: 0,
    refused: 0,
    requests: 0,
    duplicates: 0,
    protocolErrors: 0,
    checksumFailures: 0,
    resumesRefused: 0,
    staleResumes: 0,
    mismatchedResends: 0,
    overflows: 0,
    budgetWaits: 0,
  };
  readonly log: ServerLog;
  readonly limits: ExportLimits;
  readonly unsafe: { noFencing: boolean; noDedupe: boolean; staleResumes: boolean; resumeWithoutProof: boolean };
  keys: KeyTable;
  readonly sessions: SessionTable;
  /** Receive half of the memory budget: frames and records being gathered or awaiting completion. */
  readonly receiveBudget: Budget;
  /** Reply half: replies being produced and queued for slow readers. */
  readonly replyBudget: Budget;
  readonly defer: (work: () => void) => void;
  readonly observer: RequestObserver | null;
  readonly now: () => number;
  /** Live connections, for tick(). */
  readonly connections = new Set<DstConnection>();
  private readonly exportsByName = new Map<string, Export>();

  constructor(options: DstServerOptions) {
    for (const e of options.exports) this.exportsByName.set(e.name, e);
    this.log = options.log;
    this.limits = { ...EXPORT_LIMITS, ...options.limits };
    this.unsafe = {
      noFencing: options.unsafe?.noFencing === true,
      noDedupe: options.unsafe?.noDedupe === true,
      staleResumes: options.unsafe?.staleResumes === true,
      resumeWithoutProof: options.unsafe?.resumeWithoutProof === true,
    };
    this.keys = options.keys ?? new Map();
    this.epoch = options.epoch ?? randomBytes(6).readUIntBE(0, 6);
    this.defer = options.defer ?? queueMicrotask;
    this.observer = options.observer ?? null;
    this.now = options.now ?? (() => performance.now());
    this.sessions = new SessionTable(this.limits);
    const half = Math.floor(this.limits.memoryBudget / 2);
    this.receiveBudget = new Budget(half, this.defer);
    this.replyBudget = new Budget(half, this.defer);
  }

  /**
   * AcceptHandler for transport/tcp.ts listen(), behind a ConnectionGuard (transport/guard.ts)
   * in production: the connection reports its admission and logs pre-admission refusals
   * through `hooks` (rate-limited per source).
   */
  readonly accept = (sink: Sink, peer: Peer, hooks?: GuardHooks): DstConnection => {
    this.counters.connections++;
    const connection = new DstConnection(this, sink, peer, hooks ?? null);
    this.connections.add(connection);
    return connection;
  };

  /** Called about once a second by the export node (and by the simulator). */
  tick(): void {
    for (const connection of this.connections) connection.progressTick();
  }

  findExport(name: string): Export | undefined {
    return this.exportsByName.get(name);
  }

  /**
   * Resize export `name` (its port must support it), then tell every connected client that
   * asked for notices, in band (docs/protocol.md §4 SIZE_NOTICE). Shrinking is the caller's
   * decision to guard (daemon/export-node.ts: --allow-shrink, data past the new end).
   */
  resize(name: string, size: number): Promise<void> {
    const exp = this.exportsByName.get(name);
    if (exp === undefined) return Promise.reject(new DstdError("E_USAGE", `no export named '${name}'`));
    const port = exp.port;
    if (port.resize === undefined) return Promise.reject(new DstdError("E_RESIZE", `export '${name}' (${port.kind}) cannot be resized`));
    const problem = port.resizeProblem?.(size) ?? null;
    if (problem !== null) return Promise.reject(new DstdError("E_RESIZE", `export '${name}' cannot be resized to ${size} bytes: ${problem}`));
    return new Promise((resolve, reject) => {
      port.resize!(size, (errno) => {
        if (errno !== 0) return reject(new DstdError("E_RESIZE", `resize of export '${name}' to ${size} bytes failed: ${errnoMessage(errno)}`, { errno }));
        this.announceSize(name);
        this.log.info(`export '${name}' resized to ${port.size} bytes`);
        resolve();
      });
    });
  }

  /**
   * Export `name` changed size (a resize, or legs appended to its linear tree): tell every
   * connected client that asked for notices, in band (docs/protocol.md §4 SIZE_NOTICE).
   */
  announceSize(name: string): void {
    const exp = this.exportsByName.get(name);
    if (exp === undefined) return;
    for (const connection of this.connections) connection.notifySize(name, exp.port.size);
  }

  /**
   * A configuration reload changed allow lists or keys (the Export objects were updated in
   * place, `keys` is the new table): re-check every live session at once. A session whose
   * identity has no key any more, or whose address/identity no rule admits, is closed; a
   * read-write session that now has only a read grant goes on read-only. Returns one line per
   * session touched, for the reload report.
   */
  revalidate(keys: KeyTable): string[] {
    this.keys = keys;
    const changes: string[] = [];
    for (const connection of this.connections) {
      const change = connection.revalidate();
      if (change !== null) changes.push(change);
    }
    return changes;
  }

  /**
   * Export `name` was bound to another port or made read-only while running (a replica's role
   * change: daemon/replica-node.ts bind): sessions already admitted follow at once — their
   * next request goes to the new port (a promoted secondary's raw disk lags the primary layer
   * in front of it), and a read-write session goes on read-only when the export is (a demote
   * must not take writes from clients admitted before it).
   */
  rebind(name: string): void {
    for (const connection of this.connections) connection.rebind(name);
  }

  /** Memory held for peers right now (both halves of the budget). */
  get memoryInUse(): number {
    return this.receiveBudget.inUse + this.replyBudget.inUse;
  }
}
