/**
 * @module replication/primary-types — what a replication primary (replication/primary.ts) is
 * configured with and reports: its options and its status. docs/replication.md §4–§5, §12.
 */
import type { Log } from "../lib/log.ts";
import type { ChainPoint } from "./record.ts";

export interface PrimaryOptions {
  /** Most bytes the log may hold (segments + queued records). */
  logLimit: number;
  /** Fraction of logLimit past which mutations are written around the log (default 0.9). */
  highWater?: number;
  /** Fraction below which logging resumes after an overflow (default 0.5). */
  lowWater?: number;
  /** Fraction above which resync copies pause, leaving room for the primary's writes (default 0.75). */
  resyncWater?: number;
  /** Write-back bytes between checkpoints (default logLimit / 8). */
  checkpointBytes?: number;
  segmentSize?: number;
  maxBatchBytes?: number;
  /** Memory bound of the dirty bitmap (default 1 MiB). */
  maxBitmapBytes?: number;
  /**
   * The ack window (replication/ack-window.ts): most bytes and writes acknowledged once their
   * records are written, before durable and written back. 0 bytes: every write completes
   * only once durable and written back.
   */
  ackWindowBytes?: number;
  ackWindowOps?: number;
  /** An empty log continues from this point (a promoted secondary: its last applied record). */
  base?: ChainPoint;
  /** Clock for Lamport stamps, µs (default: wall clock). */
  now?: () => number;
  log?: Log;
  /** Observer of every appended record (simulator oracle). */
  onAppend?: (point: ChainPoint, chunks: readonly Uint8Array[]) => void;
}

export interface PrimaryStatus {
  mode: "logging" | "overflow";
  /** A transition or a resync copy is running. */
  transition: "to-overflow" | "to-logging" | null;
  generation: number;
  first: number;
  last: number;
  durable: number;
  checkpoint: number;
  logBytes: number;
  logLimit: number;
  logFailure: string | null;
  /** The disk failed the layer for good (a logged write-back, replication/write-back.ts, or the flush a switch to overflow needs): it refuses writes until restarted. */
  diskFailure: string | null;
  dirtyRegions: number;
  regionSize: number;
  resyncPending: boolean;
  secondaries: Record<string, number>;
  /** Mutations queued or in flight in the layer (acknowledged early ones included). */
  inFlight: number;
  /** Writes acknowledged before their write-back (count and bytes held). */
  earlyAcked: number;
  earlyBytes: number;
}
