/**
 * @module engine/io — what the client engine (engine/client-engine.ts) asks of its driver
 * (client/dst-client.ts in production, test/sim in simulation) and how it logs. The engine
 * has no sockets and no timers; these are the only effects it has.
 */

/** Effects the engine asks its driver to perform. Must not call back into the engine synchronously. */
export interface EngineIO {
  connect(connection: number): void;
  /**
   * Write bytes on the connection; the sink owns them until it calls `release` (when given),
   * after which the engine may recycle the buffer.
   */
  send(connection: number, bytes: Uint8Array, release?: () => void): void;
  close(connection: number): void;
  /**
   * Optional: run `flush` once the current burst of work is over (production: setImmediate,
   * after every promise continuation the burst triggered). Lets one sealed record carry the
   * requests that callers submit from their completion callbacks. Absent: flush at once.
   */
  defer?(flush: () => void): void;
}

export interface EngineLog {
  info(message: string): void;
  warn(message: string): void;
  debug?(message: string): void;
}
