/**
 * @module engine/durability — what keeps the FLUSH contract across an export restart: the
 * replay log of acknowledged, not yet flushed mutations (engine/replay-log.ts), the private
 * copies of write data it holds (engine/write-copies.ts), its byte bound
 * (from half of it the engine issues a FLUSH itself; at the bound it holds new writes), and the state of a replay
 * round after the export's epoch changed (docs/protocol.md §6.5 "Epoch").
 * Pure: no I/O, no time.
 */
import { ReplayLog, type ReplayEntry } from "./replay-log.ts";
import type { Txn } from "./txn.ts";
import { WriteCopies } from "./write-copies.ts";

export class Durability {
  /** The engine's private copies of large write payloads (engine/write-copies.ts). */
  readonly copies: WriteCopies;
  readonly log: ReplayLog;
  /** The engine's own FLUSH (the replay bound was reached) is outstanding. */
  autoFlushPending = false;
  /** Replay transactions not yet acknowledged: until they are, nothing else is sent. */
  replaysPending = 0;
  /** A replay failed: the next handshake replays the whole log again, whatever the epoch. */
  replayAgain = false;
  /** Replay rounds failed in a row: backs the reconnect off, so a failing disk is not hammered. */
  replayStreak = 0;

  constructor(private readonly boundBytes: number) {
    const copies = new WriteCopies(boundBytes);
    this.copies = copies;
    this.log = new ReplayLog();
  }

  /** The log holds its bound (an empty log never blocks, whatever the bound): new writes wait. */
  get full(): boolean {
    return this.log.size > 0 && this.log.bytes >= this.boundBytes;
  }

  /**
   * Time for the engine's own FLUSH: the log holds half its bound. Flushing at the bound
   * itself held every write for as long as the export's fdatasync of the whole bound took
   * (130–180 ms per 256 MiB measured here, seconds on a busy disk) and emptied the pipe each
   * time: sequential writes through `dstd attach` ran at 0.04× the relay chain
   * (docs/performance.md). From half the bound, the FLUSH runs while writes keep flowing into
   * the other half; writes wait only if the log reaches the bound before the FLUSH returns.
   */
  get flushDue(): boolean {
    return this.log.size > 0 && this.log.bytes >= this.boundBytes / 2;
  }

  /** The entries a replay round sends, oldest first. */
  entries(): ReplayEntry[] {
    return this.log.pending();
  }

  /**
   * A txn succeeded: keep non-durable acknowledged mutations for replay; a successful FLUSH
   * releases them. A FUA mutation is durable and is not kept, but it supersedes older entries
   * for its range: replaying those after a restart would bury it under older data (found by
   * the simulator: a FUA write after an unflushed write to the same block came back as the
   * older data).
   */
  record(txn: Txn): void {
    if (txn.internal === "replay") return; // its entry is still in the log
    if (txn.fua && txn.kind !== "read" && txn.kind !== "flush") {
      this.log.supersede(txn.offset, txn.length);
      return;
    }
    switch (txn.kind) {
      case "write":
        this.log.append("write", txn.offset, txn.length, txn.data!, false, txn.lease);
        break;
      case "trim":
      case "zero":
        this.log.append(txn.kind, txn.offset, txn.length, null, txn.noHole);
        break;
      case "flush":
        this.log.release(txn.flushMark);
        break;
      case "read":
      case "fetch":
      case "sync":
        break;
    }
  }

  /** A txn ended: record it when it succeeded (its hold on a leased buffer ends in the engine). */
  settle(txn: Txn, status: number): void {
    if (status === 0) this.record(txn);
  }
}
