/**
 * @module engine/counters — numbers the client engine keeps about itself, so `dstd status`,
 * `dstd list`, the simulator's checkers and the tests all read the same values.
 */
export interface EngineCounters {
  /** Connection attempts started. */
  connects: number;
  /** Successful handshakes after the first one. */
  reconnects: number;
  /** Frames sent again: after a timeout on a live connection or after a reconnect. */
  resends: number;
  /** Unflushed writes replayed because the export restarted (epoch changed). */
  replays: number;
  /** Replayed writes the export failed (each makes the engine replay the whole log again). */
  replayFailures: number;
  /** Connections declared dead because nothing arrived within the keepalive timeout. */
  keepaliveFailures: number;
  /** PINGs sent on idle connections. */
  pings: number;
  /** Requests failed because their budget (resends or deadline) was spent. */
  timeouts: number;
  /** Replies for ids no longer outstanding (duplicates after a resend); ignored. */
  staleReplies: number;
  /** FLUSHes the engine issued itself because the replay buffer reached its bound. */
  autoFlushes: number;
  /** Data digests that did not match (READ replies we checked, WRITEs the export refused). */
  checksumFailures: number;
  /** Requests on the wire right now (gauge). */
  inflight: number;
}

export function newCounters(): EngineCounters {
  return {
    connects: 0,
    reconnects: 0,
    resends: 0,
    replays: 0,
    replayFailures: 0,
    keepaliveFailures: 0,
    pings: 0,
    timeouts: 0,
    staleReplies: 0,
    autoFlushes: 0,
    checksumFailures: 0,
    inflight: 0,
  };
}
