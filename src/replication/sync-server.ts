/**
 * @module replication/sync-server — the primary's side of a secondary's initial sync
 * (docs/replication.md §10.1, docs/protocol.md §12): SYNC BEGIN and SYNC COPY answered from
 * the replication primary.
 *
 * BEGIN: the sync point P is the newest seq every later read of the disk includes (every
 * record ≤ P is durable and written back: `primary.syncPoint()`), or the seq the secondary
 * names (a fork repair replays the log from the fork). The secondary is registered at P
 * before the answer, so the log keeps every record after P while the copy runs (past the
 * log's size the primary writes around it into the dirty bitmap, and the resync of those
 * regions travels in the log as usual). The answer names P's chain point: the secondary's
 * copy of the log continues from there.
 *
 * COPY: an allocation walk of the range (holes and zero extents are not sent), then reads of
 * the data runs, then the durable seq at that moment — the copy of this range is covered by
 * replaying the log through it (records are idempotent, §1). All-zero 64 KiB pieces of the
 * data read are dropped too (a disk without block status, or zeroes written as data).
 *
 * Memory: one reply (≤ `budget` bytes: the export bounds SYNCs in flight by their reply
 * reservations) per COPY being answered.
 */
import { Errno, errnoMessage } from "../lib/errno.ts";
import { MAX_EXTENTS, type Extent } from "../storage/port.ts";
import { SYNC_COPY_PREFIX, SYNC_MAX_RUNS, SYNC_RUN_SIZE, SyncKind } from "../wire/dst/constants.ts";
import { encodeSyncBegin, encodeSyncCopy, type SyncRequest, type SyncRun } from "../wire/dst/sync.ts";
import type { FetchAnswer } from "../export/fetch.ts";
import type { ReplicationPrimary } from "./primary.ts";
import { CHAIN_ORIGIN, chainPointOf, invalidSuccessor, MAX_RECORD_SIZE, type ChainPoint } from "./record.ts";

/** Granule of the zero check on data read. */
const ZERO_PIECE = 64 << 10;

/** Called once the secondary is registered at the sync point (the ship server drops the first-secondary placeholder). */
export type OnRegistered = () => void;

export function answerSync(
  primary: ReplicationPrimary,
  request: SyncRequest,
  offset: number,
  length: number,
  budget: number,
  secondary: string,
  registered: OnRegistered,
  done: (answer: FetchAnswer) => void,
): void {
  if (request.kind === SyncKind.BEGIN) return begin(primary, request, secondary, registered, done);
  return copy(primary, offset, length, budget, done);
}

function begin(primary: ReplicationPrimary, request: SyncRequest, secondary: string, registered: OnRegistered, done: (answer: FetchAnswer) => void): void {
  const store = primary.store;
  const durable = store.durable.seq;
  const keepFrom = request.keepFrom;
  if (keepFrom > durable) return done({ status: Errno.ESTALE, reason: `diverged: sync from seq ${keepFrom}, but the primary's log is durable through seq ${durable} only (generation ${store.generation})` });
  const point = keepFrom > 0 ? keepFrom : primary.syncPoint();
  if (point + 1 < store.first && point < durable) {
    return done({ status: Errno.ENODATA, reason: `released: the primary's log starts at seq ${store.first}, the sync needs it from seq ${point + 1}` });
  }
  if (keepFrom > 0) return continuesFrom(primary, request, (fork) => (fork !== null ? done({ status: Errno.ESTALE, reason: fork }) : register(primary, request, point, secondary, registered, done)));
  register(primary, request, point, secondary, registered, done);
}

/** A fork repair's point: null when the primary's log continues it, else how it differs. */
function continuesFrom(primary: ReplicationPrimary, request: SyncRequest, done: (fork: string | null) => void): void {
  const store = primary.store;
  const given: ChainPoint = { seq: request.keepFrom, chain: request.chain, lamport: request.lamport, generation: request.generation };
  if (given.seq === store.durable.seq) return done(store.durable.chain === given.chain ? null : `diverged at seq ${given.seq}: the chain values differ`);
  const reader = primary.reader({ seq: given.seq + 1 });
  reader.read(MAX_RECORD_SIZE, (error, chunk) => {
    void reader.close();
    const record = chunk?.records[0];
    if (error !== null || record === undefined) return done(`the primary's log cannot be read at seq ${given.seq + 1}: ${error ?? "no record"}`);
    const fork = invalidSuccessor(given, record);
    done(fork === null ? null : `diverged at seq ${given.seq}: ${fork}`);
  });
}

function register(primary: ReplicationPrimary, request: SyncRequest, point: number, secondary: string, registered: OnRegistered, done: (answer: FetchAnswer) => void): void {
  // Recorded durably before the answer: a primary that crashes after it must keep the log
  // from the sync point for this secondary (as for a FETCH: ship-server.ts).
  const why = primary.addSecondary(secondary, point, (errno) => {
    if (errno !== 0) return done({ status: Errno.EIO, reason: `secondary ${secondary} could not be recorded (${errnoMessage(errno)}); ask again` });
    registered();
    answerBegin(primary, request, point, done);
  });
  if (why !== null) done({ status: Errno.ENODATA, reason: why });
}

function answerBegin(primary: ReplicationPrimary, request: SyncRequest, point: number, done: (answer: FetchAnswer) => void): void {
  const store = primary.store;
  const answer = (chain: ChainPoint) => done({ status: 0, payload: encodeSyncBegin({ point: chain, size: primary.size, durable: store.durable.seq }) });
  if (request.keepFrom > 0) return answer({ seq: point, chain: request.chain, lamport: request.lamport, generation: request.generation });
  if (point === 0) return answer(CHAIN_ORIGIN);
  if (point === store.durable.seq) return answer(store.durable);
  // The record at the sync point names its own chain point.
  const reader = primary.reader({ seq: point });
  reader.read(MAX_RECORD_SIZE, (error, chunk) => {
    void reader.close();
    const record = chunk?.records[0];
    if (error !== null || record === undefined || record.seq !== point) {
      return done({ status: Errno.EAGAIN, reason: `the record at the sync point (seq ${point}) cannot be read: ${error ?? "not found"}; ask again` });
    }
    answer(chainPointOf(record));
  });
}

function copy(primary: ReplicationPrimary, offset: number, length: number, budget: number, done: (answer: FetchAnswer) => void): void {
  const size = primary.size;
  if (offset >= size || length === 0) return done({ status: Errno.EINVAL, reason: `SYNC COPY of ${length} bytes at ${offset} is outside the disk (${size} bytes)` });
  // A primary whose disk or log failed (docs/replication.md §4) may hold writes the replay at its
  // restart undoes, and a mode (overflow) whose resync a restart never logs: a copy named that
  // resync's record and waited for it for good (cluster simulation seed 5792, §8.2).
  const failed = primary.status().diskFailure ?? primary.status().logFailure;
  if (failed !== null) return done({ status: Errno.EIO, reason: `the primary failed (${failed}); ask again once it is restarted` });
  const len = Math.min(length, size - offset);
  const runsMax = Math.max(1, Math.min(SYNC_MAX_RUNS, Math.floor((budget - SYNC_COPY_PREFIX) / 4 / SYNC_RUN_SIZE)));
  const dataMax = budget - SYNC_COPY_PREFIX - runsMax * SYNC_RUN_SIZE;
  const walked = (errno: number, extents: Extent[] | null) => {
    // Without an allocation map, everything is data (the zero check still drops zero pieces).
    const map = errno === 0 && extents !== null && extents.length > 0 ? extents : [{ length: len, hole: false, zero: false }];
    const runs: { offset: number; length: number }[] = [];
    let at = offset;
    let data = 0;
    for (const e of map) {
      if (e.hole || e.zero) {
        at += e.length;
        continue;
      }
      if (runs.length === runsMax || data === dataMax) break;
      const take = Math.min(e.length, dataMax - data);
      runs.push({ offset: at, length: take });
      at += take;
      data += take;
      if (take < e.length) break;
    }
    const end = Math.min(at, offset + len);
    if (end <= offset) return done({ status: Errno.EIO, reason: `the allocation map at ${offset} is empty` });
    read(primary, runs, (readErrno, filled) => {
      if (readErrno !== 0) return done({ status: Errno.EIO, reason: `reading the primary's disk at ${offset} failed: ${errnoMessage(readErrno)}` });
      // In overflow the reads may hold writes made around the log (docs/replication.md §5) in an
      // order no prefix of the log has: name the next record, the RESYNC_BEGIN of their resync,
      // so the secondary catches up into that resync and is consistent only at its RESYNC_END
      // (a copy read in overflow was declared consistent with a mixed disk: cluster sim, §8.2).
      const durable = primary.store.durable.seq + (primary.status().mode === "overflow" ? 1 : 0);
      done({ status: 0, payload: encodeSyncCopy({ end, durable, runs: dropZeroPieces(filled!, runsMax) }) });
    });
  };
  if (!primary.canBlockStatus) return walked(Errno.ENOTSUP, null);
  primary.extents(offset, len, MAX_EXTENTS, walked);
}

function read(primary: ReplicationPrimary, runs: { offset: number; length: number }[], done: (errno: number, runs: SyncRun[] | null) => void): void {
  if (runs.length === 0) return done(0, []);
  const out = runs.map((r) => ({ ...r, data: new Uint8Array(r.length) }));
  let left = out.length;
  let failed = 0;
  for (const r of out) {
    primary.readDisk(r.offset, r.data, (errno) => {
      if (errno !== 0 && failed === 0) failed = errno;
      if (--left === 0) done(failed, failed === 0 ? out : null);
    });
  }
}

/** Splits runs around 64 KiB pieces (aligned on the disk) that read as zero, while the run table has room. */
export function dropZeroPieces(runs: SyncRun[], runsMax: number): SyncRun[] {
  const out: SyncRun[] = [];
  for (let i = 0; i < runs.length; i++) {
    const run = runs[i]!;
    let start = run.offset;
    const end = run.offset + run.length;
    let at = run.offset;
    while (at < end) {
      const pieceEnd = Math.min(end, (Math.floor(at / ZERO_PIECE) + 1) * ZERO_PIECE);
      const piece = run.data.subarray(at - run.offset, pieceEnd - run.offset);
      // Room for this run's remainder and every later run, whatever happens.
      const room = out.length + (runs.length - i) + 1 <= runsMax;
      if (room && isZero(piece)) {
        if (at > start) out.push({ offset: start, length: at - start, data: run.data.subarray(start - run.offset, at - run.offset) });
        start = pieceEnd;
      }
      at = pieceEnd;
    }
    if (end > start) out.push({ offset: start, length: end - start, data: run.data.subarray(start - run.offset) });
  }
  return out;
}

function isZero(bytes: Uint8Array): boolean {
  if (bytes.byteOffset % 4 === 0 && bytes.length % 4 === 0) {
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}
