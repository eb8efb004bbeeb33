/**
 * @module daemon/replica-resync — planning `dstd replica resync NAME` on a diverged old primary
 * (docs/replication.md §11): find the last record its log shares with its peer's (the fork
 * point F), and the ranges this node wrote after F (its own records after F, and the regions
 * of its dirty bitmap if its log overflowed). The repair then copies those ranges from the
 * peer and replays the peer's log from F+1 — which covers every range the peer wrote after F
 * (a promotion keeps its log from the promotion point for the old primary, ship-server.ts's
 * placeholder) — so only what was written on either side since the fork travels.
 *
 * The fork point is found by bisection over this log's records (and the point before the first,
 * named by its `prev` chain) with SYNC BEGIN probes: the
 * peer answers 0 when its log continues our record s (then F ≥ s; it also registers us at s,
 * keeping its log from there), ESTALE when it does not (F < s), ENODATA when its log no longer
 * holds s+1 (F ≥ s, or the peer released what the repair needs). Memory: one chain point and
 * one range per record of this node's log (bounded by its log_size), refused past
 * MAX_PLAN_RECORDS.
 */
import { DstdError } from "../lib/errors.ts";
import { Errno } from "../lib/errno.ts";
import type { Log } from "../lib/log.ts";
import type { StoragePort } from "../storage/port.ts";
import { SyncKind } from "../wire/dst/constants.ts";
import { decodeFetchReason } from "../wire/dst/fetch.ts";
import type { LogDirectory } from "../replication/files.ts";
import { coalesceRanges, type SyncTransport } from "../replication/initial-sync.ts";
import { ReplicationPrimary } from "../replication/primary.ts";
import { chainPointOf, RecordOp, type ChainPoint, type LogRecord } from "../replication/record.ts";

/** Records of the old log a plan looks at, at most. */
export const MAX_PLAN_RECORDS = 4_000_000;

export interface SyncPlan {
  /** The fork point (null: a full sync from the primary's own sync point). */
  from: ChainPoint | null;
  /** Ranges to copy (null: the whole disk). */
  ranges: [number, number][] | null;
  why: string;
}

export async function planForkRepair(dir: LogDirectory, disk: StoragePort, logSize: number, sync: SyncTransport, log: Log): Promise<SyncPlan> {
  const primary = await ReplicationPrimary.open(disk, dir, { logLimit: logSize, log });
  const points: ChainPoint[] = [];
  const written: { seq: number; range: [number, number] }[] = [];
  let dirty: [number, number][];
  // Taken before the scan too: the open may resume a resync of dirty regions (primary.ts), which
  // logs a region's copy after the reader's end and clears its bit before the read below; that
  // region was then in neither and never copied (cluster simulation seed 7019, §11).
  const dirtyNow = () => primary.dirtyRegions(0, Number.MAX_SAFE_INTEGER).map((r) => [r.offset, r.length] as [number, number]);
  const dirtyAtOpen = dirtyNow();
  try {
    const reader = primary.reader({ seq: primary.store.first });
    try {
      for (;;) {
        const chunk = await new Promise<{ records: LogRecord[] }>((resolve, reject) =>
          reader.read(8 << 20, (error, c) => (error !== null ? reject(new DstdError("E_STATE", `resync: this node's log cannot be read: ${error}`)) : resolve(c!))),
        );
        if (chunk.records.length === 0) break;
        for (const r of chunk.records) {
          // The point before the first record held: its chain is the record's `prev` (the fork
          // is often there — the log was released up to what the promoted secondary applied).
          if (points.length === 0 && r.seq > 1) points.push({ seq: r.seq - 1, chain: r.prev, lamport: Math.max(0, r.lamport - 1), generation: r.generation });
          points.push(chainPointOf(r));
          if (r.op === RecordOp.WRITE || r.op === RecordOp.TRIM || r.op === RecordOp.ZERO) written.push({ seq: r.seq, range: [r.offset, r.length] });
          if (r.op === RecordOp.RESIZE) throw new DstdError("E_STATE", `resync: this node's log resized the disk at seq ${r.seq}: use resync --full`);
        }
        if (points.length > MAX_PLAN_RECORDS) throw new DstdError("E_STATE", `resync: this node's log holds more than ${MAX_PLAN_RECORDS} records: use resync --full`);
      }
    } finally {
      await reader.close();
    }
    dirty = [...dirtyAtOpen, ...dirtyNow()];
  } finally {
    await primary.close();
  }
  if (points.length === 0) throw new DstdError("E_STATE", "resync: this node's log holds no record to find the fork from: use resync --full");
  const fork = await findFork(points, sync);
  const first = points[0]!.seq;
  if (fork === null) throw new DstdError("E_STATE", `resync: the primary's log shares no record with this node's (seq ${first} to ${points[points.length - 1]!.seq}), or no longer holds the records after the fork: use resync --full`);
  const ranges = coalesceRanges([...written.filter((w) => w.seq > fork.seq).map((w) => w.range), ...dirty], disk.size);
  const own = written.filter((w) => w.seq > fork.seq).length;
  log.info(`resync: fork after seq ${fork.seq}; ${own} records written here since, ${dirty.length} dirty regions; copying ${ranges.length} ranges`);
  return { from: fork, ranges, why: `resync from the fork after seq ${fork.seq}` };
}

/** The last of `points` the primary's log continues (null: none it still holds). */
async function findFork(points: ChainPoint[], sync: SyncTransport): Promise<ChainPoint | null> {
  const probe = (p: ChainPoint) =>
    new Promise<number>((resolve, reject) =>
      sync({ kind: SyncKind.BEGIN, keepFrom: p.seq, chain: p.chain, lamport: p.lamport, generation: p.generation }, 0, 0, (status, payload) => {
        if (status === 0 || status === Errno.ESTALE || status === Errno.ENODATA) return resolve(status);
        reject(new DstdError("E_STATE", `resync: the primary cannot be asked about seq ${p.seq}: ${payload !== null && payload.length > 0 ? decodeFetchReason(payload) : `errno ${status}`}`));
      }),
    );
  // Bisection on "not ESTALE" (the peer's log does not contradict ours at s).
  let lo = -1;
  let hi = points.length;
  const status = new Map<number, number>();
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    const s = await probe(points[mid]!);
    status.set(mid, s);
    if (s === Errno.ESTALE) hi = mid;
    else lo = mid;
  }
  if (lo < 0) return null;
  // The last agreeing point must be in the peer's log (0), not just before it (ENODATA).
  const last = status.get(lo) ?? (await probe(points[lo]!));
  return last === 0 ? points[lo]! : null;
}
