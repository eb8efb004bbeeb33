/**
 * @module daemon/replica-handover — the waits and log directory steps of a replica node's role
 * changes (daemon/replica-node.ts, docs/replication.md §11): a secondary draining its copy, a
 * primary quiescing and draining its secondaries before it steps down, the applied position a
 * demoted primary starts from, the directory a promoted secondary becomes a primary in, and the
 * log a promotion keeps for its peer.
 * Time is the node's timer (real in dstd, simulated in the cluster simulation).
 */
import { Errno, errnoMessage } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import type { StoragePort } from "../storage/port.ts";
import { Applier } from "../replication/applier.ts";
import { FileError, files, type LogDirectory } from "../replication/files.ts";
import { PRIMARY_STATE_FILE, type ReplicationPrimary } from "../replication/primary.ts";
import { INITIAL_PRIMARY_STATE, PRIMARY_STATE_KIND, validatePrimaryState } from "../replication/primary-state.ts";
import type { Secondary } from "../replication/secondary.ts";
import type { Shipper } from "../replication/shipper.ts";
import { parseSegmentName } from "../replication/segments.ts";
import { AWAITING_FIRST_SECONDARY, type LogShipServer } from "../replication/ship-server.ts";
import { StateFile } from "../replication/state-file.ts";
import type { ReplicaEnv } from "./replica-env.ts";

type Timer = ReplicaEnv["timer"];

function sleep(timer: Timer, ms: number): Promise<void> {
  return new Promise((resolve) => timer.after(ms, resolve));
}

/** Waits while the applier makes progress through the copy (not when paused, halted or delayed). */
export async function drain(secondary: Secondary, timer: Timer): Promise<void> {
  const deadline = timer.now() + 30_000;
  for (;;) {
    const s = secondary.applier.status();
    if (s.applied.seq >= secondary.copy.durable.seq || s.halted !== null || s.paused || s.delayed > 0 || timer.now() > deadline) return;
    await sleep(timer, 20);
  }
}

/**
 * A planned promote's last check, once the old primary stepped down (docs/replication.md §11):
 * fetching stops, what was fetched is applied, and the copy must end where that primary's log
 * ends, consistent. Null, or why not (fetching then goes on).
 */
export async function drainedForHandover(secondary: Secondary, shipper: Shipper, timer: Timer): Promise<string | null> {
  shipper.stop();
  await drain(secondary, timer);
  const applied = secondary.applier.status().applied.seq;
  const last = shipper.status().primaryDurable;
  // No answer from the primary's log since it started (generation 0): where that log ends is
  // unknown, and 0 passed for it — a handover lost every record (cluster sim seed 34972, §8.2).
  const unheard = shipper.status().primaryGeneration === 0;
  const consistent = secondary.applier.status().consistent;
  if (!unheard && applied === secondary.copy.last.seq && applied >= last && consistent) return null;
  shipper.start();
  return `not drained: applied seq ${applied}${consistent ? "" : " (inconsistent: a resync or recovery is not finished)"}, the copy ends at seq ${secondary.copy.last.seq}, the primary's log at seq ${unheard ? "unknown (no answer from it since this node started)" : last}; try again, or --force`;
}

/** Waits until the primary layer has no mutation in flight, then checkpoints (disk flushed). */
export async function quiesce(primary: ReplicationPrimary, timer: Timer): Promise<void> {
  const deadline = timer.now() + 30_000;
  while (primary.status().inFlight > 0 && timer.now() < deadline) await sleep(timer, 20);
  await new Promise<number>((resolve) => primary.checkpoint(resolve));
}

/** Waits (≤ 45 s, inside the control socket's 60 s idle limit) until every registered secondary has applied the whole log; null, or who is behind. */
export async function drainSecondaries(primary: ReplicationPrimary, server: LogShipServer, timer: Timer): Promise<string | null> {
  const deadline = timer.now() + 45_000;
  for (;;) {
    // A secondary copying the disk is registered at its sync point, which may be the last
    // record: it has not applied that state, and cannot take over (promote refuses a syncing
    // node) — a handover then left no primary at all (cluster simulation seed 2271, §8.2).
    const copying = server.secondaries().filter((c) => c.copying && c.name in primary.status().secondaries);
    if (copying.length > 0) {
      if (timer.now() > deadline) return copying.map((c) => `secondary ${c.name} is still copying the disk (initial sync) after 45 s`).join("; ");
      await sleep(timer, 50);
      continue;
    }
    // Writes made around the log (overflow) reach a secondary only through the resync: the
    // handover waits for RESYNC_END, or the new primary would lack those regions.
    const status = primary.status();
    const target = primary.store.last.seq;
    const behind = Object.entries(status.secondaries).filter(([, applied]) => applied < target);
    if (behind.length === 0 && status.mode === "logging" && !status.resyncPending) return null;
    if (behind.length === 0 && timer.now() > deadline) return `the log is ${status.mode === "logging" ? "resyncing" : "in overflow"}: ${status.dirtyRegions} regions written around it have not reached the secondaries after 45 s`;
    if (timer.now() > deadline) return behind.map(([name, applied]) => `secondary ${name} has applied seq ${applied} of ${target} after 45 s`).join("; ");
    await sleep(timer, 50);
  }
}

/** The applied position = the primary's last record (its disk holds it, flushed). */
export async function writeApplied(dir: LogDirectory, disk: StoragePort, primary: ReplicationPrimary): Promise<void> {
  const last = primary.store.last;
  // The position claims the disk holds every record ≤ last durably: flush it first (a
  // checkpoint already under way when the layer quiesced does not cover the last records;
  // found by the cluster simulation, docs/replication.md §8.2).
  const errno = await new Promise<number>((resolve) => disk.flush(resolve));
  if (errno !== 0) throw new DstdError("E_IO", `the disk could not be flushed before becoming a secondary: ${errnoMessage(errno)}`);
  await Applier.writePosition(dir, { point: last, applyingThrough: last.seq, inResync: false });
}

/**
 * A promotion keeps its log for the peer from the promotion point until a secondary continuing
 * it fetches: the old primary following after a handover, or repairing itself from the fork
 * after a failover (§11); without this a crash of the new primary before that FETCH released
 * the log it needs (found by the cluster simulation, docs/replication.md §8.2). Kept durably,
 * or the promotion fails (the layer closed): a registration its state file failed to save was
 * forgotten by a crash just the same (cluster simulation seed 9120).
 */
export async function keepForPeer(primary: ReplicationPrimary, seq: number, warn: (message: string) => void): Promise<void> {
  const errno = await new Promise<number>((resolve) => {
    const why = primary.addSecondary(AWAITING_FIRST_SECONDARY, seq, resolve);
    if (why !== null) {
      warn(why);
      resolve(0);
    }
  });
  if (errno === 0) return;
  await primary.close();
  throw new DstdError("E_IO", `promote: the log could not be kept for the peer from seq ${seq}: ${errnoMessage(errno)}`);
}

/** A promoted secondary's directory: the primary state says "disk holds every record ≤ seq"; the copy goes. */
export async function clearForPrimary(dir: LogDirectory, seq: number): Promise<void> {
  const state = await StateFile.open(dir, PRIMARY_STATE_FILE, PRIMARY_STATE_KIND, validatePrimaryState);
  try {
    await state.saveNow({ ...INITIAL_PRIMARY_STATE, checkpoint: seq });
  } finally {
    await state.close();
  }
  // A segment gone meanwhile is gone as wanted: the closed copy's release may still be removing
  // one (LogStore.close does not wait for it; cluster simulation seed 32870, docs/replication.md §8.2).
  const gone = (error: unknown) => (error instanceof FileError && error.errno === Errno.ENOENT ? undefined : Promise.reject(error));
  for (const name of await files.list(dir)) if (parseSegmentName(name) !== null) await files.remove(dir, name).catch(gone);
  await files.syncDir(dir);
}
