/**
 * replication/write-back.ts DiskFailure.replayable: whether the log's replay at the next open
 * brings back everything the disk lost. `dstd up` restarts an export group by itself only then
 * (ReplicationPrimary.failedClosed, daemon/services.ts groupHealth): after a loss no replay
 * repairs (a write made around the log), reads of it fail until an operator restarts, rather
 * than turn stale by themselves.
 */
import { expect, test } from "bun:test";
import { Errno } from "../../src/lib/errno.ts";
import { DiskFailure, type WriteBackOp } from "../../src/replication/write-back.ts";

const op: WriteBackOp = { kind: "write", offset: 4096, end: 8192, data: new Uint8Array(4096), noHole: false, newSize: 0 };

test("a logged write-back that failed, or a flush that failed with nothing written around the log, is replayable; a write around the log, or a flush that may have lost one, is not", () => {
  const logged = new DiskFailure();
  logged.record(op, 7, Errno.EIO);
  expect([logged.failed, logged.replayable]).toEqual([true, true]);
  logged.flushFailed(Errno.EIO, 3); // a later flush failing over logged write-backs only
  expect(logged.replayable).toBe(true);

  const flushed = new DiskFailure();
  flushed.flushFailed(Errno.EIO, 3);
  expect([flushed.failed, flushed.replayable]).toEqual([true, true]);

  const around = new DiskFailure();
  around.recordAround(op, Errno.EIO);
  expect([around.failed, around.replayable, around.covers(4096, 8192)]).toEqual([true, false, true]);

  const overflow = new DiskFailure();
  overflow.flushFailed(Errno.EIO, 3, undefined, true);
  expect([overflow.failed, overflow.replayable]).toEqual([true, false]);
  // Once not replayable, a later replayable failure does not make it so.
  overflow.record(op, 9, Errno.EIO);
  expect(overflow.replayable).toBe(false);
});
