/**
 * @module replication/secondary — a secondary's local half, composed: its copy of the
 * primary's log (a LogStore fed verbatim with fetched records) and the applier replaying that
 * copy into its disk, both in one log directory. The shipping (fetching over DST) plugs in
 * at `receive` and `wanted`. docs/replication.md §6.
 *
 * The copy is a cache of the primary's log: a corrupt record in it is cut with everything
 * after it and fetched again; if that cut falls below what the applier has already applied
 * (those records may be gone from the primary), the copy restarts empty at the applier's
 * position, which is all replay needs.
 *
 * Must not: accept a record that does not continue the copy (gap, fork, checksum); let the
 * copy drop records the applier has not applied.
 */
import type { Log } from "../lib/log.ts";
import type { StoragePort } from "../storage/port.ts";
import { Applier, type AppliedPosition, type ApplierClock } from "./applier.ts";
import { files, type FileDone, type LogDirectory } from "./files.ts";
import { LogReader, type ReadChunk } from "./log-reader.ts";
import { LogStore, type RecoveryReport } from "./log-store.ts";
import { parseSegmentName } from "./segments.ts";
import { invalidSuccessor, RECORD_HEADER_SIZE, RecordFlag, RecordOp, type ChainPoint } from "./record.ts";

export interface SecondaryOptions {
  clock: ApplierClock;
  replayDelayMs?: number;
  segmentSize?: number;
  maxBatchBytes?: number;
  log?: Log;
  /**
   * The copy failed a write or fdatasync (it takes no more records: docs/replication.md §3.2)
   * or replay failed saving its position: neither heals in place (the files latch); called once.
   */
  onFailed?: (reason: string) => void;
}

export class Secondary {
  /** Why this secondary stopped for good on an I/O failure of its copy or replay; null while healthy. */
  failure: string | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    readonly copy: LogStore,
    readonly applier: Applier,
    readonly recovery: RecoveryReport,
    private readonly onFailed: (reason: string) => void = () => {},
  ) {
    // Applied records are no longer needed in the copy.
    applier.onApplied((point) => copy.release(point.seq));
  }

  static async open(port: StoragePort, dir: LogDirectory, options: SecondaryOptions): Promise<Secondary> {
    // Replay may fail before the secondary exists: kept, and reported once it does.
    let early: string | null = null;
    let failed = (reason: string): void => void (early ??= reason);
    const position = await Applier.readPosition(dir);
    const storeOptions = {
      now: () => options.clock.now(),
      segmentSize: options.segmentSize,
      maxBatchBytes: options.maxBatchBytes,
      onCorruption: "truncate" as const,
      log: options.log,
    };
    let { store, recovery } = await LogStore.open(dir, { ...storeOptions, base: position.point });
    // The copy lost records the applier already applied, or the first ones it has not (a
    // promotion clearing the copy broken off by an error: cluster simulation seed 53638, §8.2):
    // start it over at the applier; the primary ships the rest again.
    const gap = store.first > position.point.seq + 1;
    if (store.last.seq < position.point.seq || gap) {
      const held = gap ? `starts at seq ${store.first}` : `ends at seq ${store.last.seq}`;
      options.log?.warn(`replication: local log copy ${held}, replay is at seq ${position.point.seq}; restarting the copy there`);
      await store.close();
      for (const name of await files.list(dir)) if (parseSegmentName(name) !== null) await files.remove(dir, name);
      await files.syncDir(dir);
      ({ store, recovery } = await LogStore.open(dir, { ...storeOptions, base: position.point }));
    }
    // A GENERATION MARK alone past the applied position: cut (`loneGenerationMark`).
    let lone: boolean;
    try {
      lone = await loneGenerationMark(store, position);
    } catch (error) {
      await store.close(); // as below: a failed open leaves no segment open
      throw error;
    }
    if (lone) {
      const mark = store.last;
      await store.close();
      ({ store, recovery } = await LogStore.open(dir, { ...storeOptions, base: position.point, voidAfter: position.point.seq }));
      options.log?.warn(`replication: the local log copy ended with a generation ${mark.generation} MARK at seq ${mark.seq} that replay had not applied (a promotion broken off after logging it?): cut; replay stays at seq ${position.point.seq}`);
    }
    let applier: Applier;
    try {
      applier = await Applier.open(port, dir, {
        source: (from, after) => new LogReader(store, from, after),
        clock: options.clock,
        replayDelayMs: options.replayDelayMs,
        maxBatchBytes: options.maxBatchBytes,
        log: options.log,
        // A disk failure stays a halt (replay halted, in status): the disk may have latched.
        onFailed: (reason, where) => {
          if (where === "files") failed(`replay failed: ${reason}`);
        },
      });
    } catch (error) {
      await store.close(); // a failed open must not leave the copy's segment open (files.ts OpenedFiles)
      throw error;
    }
    const secondary = new Secondary(store, applier, recovery, options.onFailed);
    failed = (reason) => secondary.failed(reason);
    if (early !== null) secondary.failed(early);
    return secondary;
  }

  private failed(reason: string): void {
    if (this.failure !== null) return;
    this.failure = reason;
    this.onFailed(reason);
  }

  /** The next seq to fetch and the chain point the fetched records must follow. */
  wanted(): ChainPoint {
    return this.copy.last;
  }

  /**
   * Stores fetched records (whole records, back to back, as the primary's reader returns
   * them). Returns null, or the reason the first bad record was refused (nothing from it on
   * is kept: fetch again from `wanted()`). `done` runs once what was kept is durable.
   */
  receive(bytes: Uint8Array, done: FileDone): string | null {
    return this.copy.appendEncoded(bytes, (errno) => {
      if (errno !== 0 && this.copy.failed !== 0) this.failed(`the log copy failed: ${this.copy.failure}`);
      done(errno);
    });
  }

  /** Closes the applier and the copy; a second call waits for the first. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.applier.close();
      await this.copy.close();
    })();
    return this.closing;
  }
}

/**
 * Whether the copy's only record past the applied position is a GENERATION MARK, continuing it,
 * that replay has not begun applying: a secondary opening over it cuts it (docs/replication.md
 * §6, §11). It is what a promotion broken off between its MARK and its role file (an I/O error,
 * a crash) leaves: the node is a secondary again, and that MARK, which no other node has (none
 * fetched it: the node never answered as a primary, accepted no write), forked it from every
 * log — promoted again it continued past the MARK (the old primary then found its next record
 * released), and following the old primary it was ahead of it (diverged); either took
 * `resync --full` (cluster simulation seeds 550, 1221, 1224, §8.2). A MARK fetched from the
 * primary holds no write either, and the primary keeps every record past the applied position
 * a secondary reports (at most the saved one: the applier's position moves once saved), so it
 * is fetched again.
 */
async function loneGenerationMark(store: LogStore, position: AppliedPosition): Promise<boolean> {
  const applied = position.point;
  if (store.last.seq !== applied.seq + 1 || store.first !== applied.seq + 1 || position.applyingThrough > applied.seq || store.last.generation <= applied.generation) return false;
  // Read without a chain point to follow: a record that does not continue the position is not
  // cut (replay halts on it, naming it, as before); recovery has just checked the record itself,
  // so a failed read is an I/O error. It fails the open (tried again, as any failed open is):
  // taken for "no MARK", replay applied it (cluster simulation seed 758 before its fix).
  const reader = new LogReader(store, { seq: applied.seq + 1 });
  try {
    const chunk = await new Promise<ReadChunk | null>((resolve, reject) => reader.read(RECORD_HEADER_SIZE, (error, read) => (error === null ? resolve(read) : reject(new Error(`reading the log copy's seq ${applied.seq + 1}: ${error}`)))));
    const record = chunk?.records[0];
    if (chunk?.records.length !== 1 || record === undefined || invalidSuccessor(applied, record) !== null) return false;
    return record.op === RecordOp.MARK && (record.flags & RecordFlag.GENERATION) !== 0;
  } finally {
    await reader.close();
  }
}
