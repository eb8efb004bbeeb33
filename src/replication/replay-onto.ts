/**
 * @module replication/replay-onto — a primary's recovery: the log's records after its
 * checkpoint applied to the disk in order (docs/replication.md §4: the log is the disk's
 * write-ahead log). Records are idempotent, so a record already on the disk is applied again
 * harmlessly; one reaching past the end of a disk a later RESIZE already shrank is applied up
 * to the end (replication/replay-clip.ts).
 */
import { errnoMessage } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import { call, type StoragePort } from "../storage/port.ts";
import { LogReader, type ReadChunk } from "./log-reader.ts";
import type { LogStore } from "./log-store.ts";
import { RecordFlag, RecordOp } from "./record.ts";
import { ReplayClip } from "./replay-clip.ts";

/** Applies the records after `checkpoint` to the disk, in order (recovery). */
export async function replayOnto(port: StoragePort, store: LogStore, checkpoint: number): Promise<void> {
  const reader = new LogReader(store, { seq: checkpoint + 1 });
  const clip = new ReplayClip();
  try {
    for (;;) {
      // A file call that failed (a read's EIO) is an I/O error, not a corrupt log: the start may be retried.
      const failed = (error: string) =>
        reader.errno !== 0 ? new DstdError("E_IO", `replaying the log: ${error}`, { errno: reader.errno }) : new DstdError("E_LOG_CORRUPT", `replaying the log: ${error}`);
      const chunk = await new Promise<ReadChunk | null>((resolve, reject) => reader.read(8 << 20, (error, c) => (error !== null ? reject(failed(error)) : resolve(c))));
      if (chunk === null || chunk.records.length === 0) break;
      for (const record of chunk.records) {
        const length = record.op === RecordOp.WRITE || record.op === RecordOp.TRIM || record.op === RecordOp.ZERO ? clip.clip(record.seq, record.offset, record.length, port.size) : 0;
        switch (record.op) {
          case RecordOp.WRITE:
            if (length > 0) await call.write(port, record.offset, record.payload.subarray(0, length));
            break;
          case RecordOp.TRIM:
            if (length > 0) await call.trim(port, record.offset, length);
            break;
          case RecordOp.ZERO:
            if (length > 0) await call.zero(port, record.offset, length, { noHole: (record.flags & RecordFlag.NO_HOLE) !== 0 });
            break;
          case RecordOp.RESIZE:
            if (port.resize !== undefined) await new Promise<void>((resolve, reject) => port.resize!(record.length, (e) => (e === 0 ? resolve() : reject(new DstdError("E_IO", `resize: ${errnoMessage(e)}`)))));
            clip.resized(record.length);
            break;
          default:
            break;
        }
      }
    }
    const unpaid = clip.unpaid();
    if (unpaid !== null) throw new DstdError("E_IO", `replaying the log: ${unpaid}`);
  } finally {
    await reader.close();
  }
}

