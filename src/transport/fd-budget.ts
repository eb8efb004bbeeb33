/**
 * @module transport/fd-budget — how many connections this process may hold at once, so that
 * accepting never meets the file-descriptor limit.
 *
 * Why: at RLIMIT_NOFILE, accept(2) fails with EMFILE and leaves the connection in the
 * listen backlog; Bun's listener then finds the socket readable again at once, spins at most
 * of a core and never serves the waiting client (measured with Bun 1.4.5; docs/security.md
 * "Resource limits"). Bun gives JavaScript no hook into that failure, so dstd keeps the
 * number of connections below the limit instead: the soft limit is raised to the hard limit
 * (raising the soft limit needs no privilege, setrlimit(2)), a reserve is kept for backend
 * files and the runtime's own descriptors, and transport/guard.ts accepts and at once closes
 * what would exceed the budget, so no accept ever fails.
 *
 * Must not: lower any limit, or fail start-up when the limit cannot be read or raised (the
 * budget then comes from what could be read).
 */
import { readdirSync } from "node:fs";
import { getResourceLimit, RLIMIT_NOFILE, setResourceLimit } from "../sys/libc.ts";

/** Descriptors kept free for everything that is not a connection (at least this many). */
export const FD_RESERVE_MIN = 32;

/**
 * Connections the metrics endpoint (status/http.ts) holds at most. They are not taken from
 * a ConnectionBudget of the exports but kept out of it: connectionCapacity reserves them on
 * top of the descriptors for files and the runtime, so a flood of the metrics port can never
 * take a descriptor an export's client needs. A scraper needs one or two.
 */
export const METRICS_MAX_CONNECTIONS = 16;

export interface ConnectionCapacity {
  /** Connections the process may hold: min(configured, what the descriptor limit leaves). */
  max: number;
  /** The soft RLIMIT_NOFILE in force after raising (Infinity: none). */
  fileLimit: number;
  /** The soft limit before raising, when it was raised; null when it was left alone. */
  raisedFrom: number | null;
  /** Descriptors open when the budget was computed (listeners, backends, runtime). */
  openFds: number;
  /** True when the descriptor limit, not the configured maximum, set `max`. */
  limitedByFiles: boolean;
}

/** Descriptors open now (Linux /proc; an estimate elsewhere). */
export function openDescriptorCount(): number {
  try {
    return readdirSync("/proc/self/fd").length - 1; // the directory's own descriptor
  } catch {
    return 64;
  }
}

/** Raise the soft descriptor limit to the hard one (best effort); returns the limit before and after. */
export function raiseDescriptorLimit(): { before: number; after: number } {
  try {
    const limit = getResourceLimit(RLIMIT_NOFILE);
    if (limit.soft < limit.hard) {
      setResourceLimit(RLIMIT_NOFILE, { soft: limit.hard, hard: limit.hard });
      return { before: limit.soft, after: getResourceLimit(RLIMIT_NOFILE).soft };
    }
    return { before: limit.soft, after: limit.soft };
  } catch {
    return { before: Number.POSITIVE_INFINITY, after: Number.POSITIVE_INFINITY };
  }
}

/**
 * Raise the descriptor limit, then compute the connection budget: `configured`, or fewer when
 * the limit minus the descriptors open now minus a reserve (1/16 of the limit, at least
 * FD_RESERVE_MIN, plus METRICS_MAX_CONNECTIONS) leaves less. Never below 1.
 */
export function connectionCapacity(configured: number, openFds = openDescriptorCount()): ConnectionCapacity {
  const { before, after } = raiseDescriptorLimit();
  const reserve = Number.isFinite(after) ? Math.max(FD_RESERVE_MIN, Math.floor(after / 16)) + METRICS_MAX_CONNECTIONS : 0;
  const room = Number.isFinite(after) ? Math.max(1, after - openFds - reserve) : Number.POSITIVE_INFINITY;
  const max = Math.min(configured, room);
  return { max, fileLimit: after, raisedFrom: after > before ? before : null, openFds, limitedByFiles: room < configured };
}

/** The process-wide count of open connections, shared by every guarded listener. */
export class ConnectionBudget {
  private used = 0;
  constructor(readonly max: number) {}

  get open(): number {
    return this.used;
  }

  /** Take a slot; false when the budget is spent. */
  take(): boolean {
    if (this.used >= this.max) return false;
    this.used++;
    return true;
  }

  give(): void {
    if (this.used > 0) this.used--;
  }
}

/** Raise the descriptor limit and size the process-wide connection budget to fit below it. */
export function startConnectionBudget(maxConnections: number, log: { debug(message: string): void; warn(message: string): void }): ConnectionBudget {
  const capacity = connectionCapacity(maxConnections);
  const files = Number.isFinite(capacity.fileLimit) ? `${capacity.fileLimit}` : "unlimited";
  if (capacity.raisedFrom !== null) log.debug(`file-descriptor limit raised from ${capacity.raisedFrom} to ${files}`);
  if (capacity.limitedByFiles) {
    log.warn(
      `at most ${capacity.max} connections (not max_connections = ${maxConnections}): the file-descriptor ` +
        `limit is ${files} and ${capacity.openFds} are in use; raise it (ulimit -n, systemd LimitNOFILE=) for more`,
    );
  }
  return new ConnectionBudget(capacity.max);
}
