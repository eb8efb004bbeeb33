/**
 * @module daemon/replica-status — one replicated export's status as `dstd replica status`
 * and the metrics show it (docs/replication.md §12): role, generation, state with its reason,
 * lag in bytes and seconds, ETA, log usage, last contact. Pure: built from the status of the
 * parts (primary, applier, shipper) and a few samples of the lag over time.
 *
 * A secondary copying its primary's disk (initial sync, fork repair) is `syncing` (with the
 * bytes done and total, the rate and ETA), or `stalled` when the primary refused the sync.
 * A secondary's state, first match wins: `diverged` (its log does not continue the primary's),
 * `inconsistent` (released: a full sync is needed; or replaying the log over a fresh copy up to
 * the seq that makes it consistent; or replaying a resync or recovering after a crash), `stalled` (replay halted at a bad record; or connected with lag that has not shrunk
 * for STALL_MS), `paused`, `disconnected` (the primary cannot be reached), `replicating`.
 */
import type { ApplierStatus } from "../replication/applier.ts";
import type { PrimaryStatus } from "../replication/primary-types.ts";
import { AWAITING_FIRST_SECONDARY, type SecondaryContact } from "../replication/ship-server.ts";
import type { ShipperStatus } from "../replication/shipper.ts";
import type { SyncProgress } from "../replication/initial-sync.ts";

/** A lag that has not shrunk for this long while connected is a stall. */
export const STALL_MS = 30_000;
/** Samples kept for the catch-up rate (one per status call at most every second). */
const SAMPLES = 64;

export type ReplicaState = "replicating" | "syncing" | "inconsistent" | "paused" | "diverged" | "stalled" | "disconnected" | "primary";

/** An initial sync or fork repair (docs/replication.md §10.1). */
export interface SyncStatus {
  /** "copying" the disk, or "catching-up": replaying the log until seq `consistent_at_seq`. */
  phase: string;
  /** The sync point: the log is replayed from the seq after it. */
  point_seq: number;
  done_bytes: number;
  total_bytes: number;
  /** Data bytes received (holes and zeroes are not sent). */
  moved_bytes: number;
  rate_bytes_per_second: number | null;
  eta_seconds: number | null;
  /** Consistent once the log is applied through this seq. */
  consistent_at_seq: number;
  /** Failed SYNC requests asked again. */
  retries: number;
}

export interface ReplicaStatus {
  name: string;
  /** "diverged": an old primary whose log forked from its peer's; it serves read-only. */
  role: "primary" | "secondary" | "diverged";
  generation: number;
  state: ReplicaState;
  /** Why the state is not plainly healthy; null when it is. */
  reason: string | null;
  /** Secondary: the primary's URL. */
  peer: string | null;
  /** Secondary: durable log bytes on the primary not fetched yet, plus the local copy while it holds records not applied (an upper bound); primary: its log bytes while a secondary is registered. */
  lag_bytes: number;
  /** Secondary: 0 when caught up, else seconds since the primary wrote the last record applied here (an upper bound). */
  lag_seconds: number;
  /** Seconds to catch up at the recent rate; null when not shrinking or unknown. */
  eta_seconds: number | null;
  /** Records: the last applied (secondary) or the last durable (primary). */
  seq: number;
  /** Secondary: the primary's durable seq at the last answer. */
  primary_seq: number | null;
  log_bytes: number;
  log_limit: number | null;
  /** Seconds since the last answer from (secondary) or FETCH by (primary, the most recent) the peer; null: never. */
  last_contact_seconds: number | null;
  /** Secondary: fetching and replay paused flags. */
  fetch_paused: boolean;
  replay_paused: boolean;
  /** Secondary: log bytes stored in the copy since the node started (each record once, unless a copy was cut after a crash). */
  received_bytes: number;
  /** Secondary: bytes of FETCH answers on the wire since the node started (below received_bytes when answers come compressed). */
  wire_bytes: number;
  /** Primary: each secondary that fetched, with its applied seq. */
  /** Primary: every registered secondary (the log is kept for each) and any that fetched since start; last_contact_seconds null: none since this node started. */
  secondaries: Array<{ name: string; applied: number; last_contact_seconds: number | null; refused: string | null }>;
  /** Primary: "logging" or "overflow" (writing around the log into the dirty bitmap). */
  mode: string | null;
  dirty_regions: number;
  /** Secondary: the initial sync or fork repair under way; null when none. */
  sync: SyncStatus | null;
  /** Secondary: failed or refused FETCHes asked again since the node started. */
  retries: number;
}

export interface StatusSample {
  at: number;
  lag: number;
  applied: number;
}

export type StatusInput =
  | { name: string; role: "primary"; primary: PrimaryStatus; contacts: SecondaryContact[]; now: number }
  | { name: string; role: "diverged"; reason: string; generation: number }
  | { name: string; role: "syncing"; peer: string; sync: SyncProgress; paused: boolean; failure?: string | null }
  | {
      name: string;
      role: "secondary";
      peer: string;
      applier: ApplierStatus;
      copyLast: number;
      copyBytes: number;
      shipper: ShipperStatus;
      /** After a sync's copy: consistent once applied through `end` (null: no sync). */
      catchingUp: { point: number; end: number; moved: number; total: number } | null;
      /** Its copy or replay failed an I/O: why, and when it is opened again (null while healthy). */
      failure: string | null;
      /** Mutable: the status call appends to it (bounded). */
      samples: StatusSample[];
      now: number;
    };

const seconds = (ms: number) => Math.round(ms / 100) / 10;

export function replicaStatusOf(input: StatusInput): ReplicaStatus {
  if (input.role === "primary") return primaryStatus(input);
  if (input.role === "diverged") return divergedStatus(input);
  if (input.role === "syncing") return syncingStatus(input);
  return secondaryStatus(input);
}

function primaryStatus(input: Extract<StatusInput, { role: "primary" }>): ReplicaStatus {
  const p = input.primary;
  const contacts = input.contacts.map((c) => ({
    name: c.name,
    applied: p.secondaries[c.name] ?? c.applied,
    last_contact_seconds: seconds(input.now - c.lastContact),
    refused: c.refused,
  }));
  const lastContact = contacts.length === 0 ? null : Math.min(...contacts.map((c) => c.last_contact_seconds));
  // A registered secondary that has not fetched since this node started still holds the log
  // (it is what keeps a log in overflow): list it, so the operator can see whom the log waits for.
  const silent = Object.entries(p.secondaries)
    .filter(([name]) => name !== AWAITING_FIRST_SECONDARY && !input.contacts.some((c) => c.name === name))
    .map(([name, applied]) => ({ name, applied, last_contact_seconds: null, refused: null }));
  const behind = Object.values(p.secondaries);
  const reason = p.diskFailure ?? p.logFailure ?? (p.mode === "overflow" ? "the log is full: writing around it into the dirty bitmap (secondaries will resync those regions)" : null);
  return {
    name: input.name,
    role: "primary",
    generation: p.generation,
    state: "primary",
    reason,
    peer: null,
    lag_bytes: behind.length === 0 ? 0 : p.logBytes,
    lag_seconds: 0,
    eta_seconds: null,
    seq: p.durable,
    primary_seq: null,
    log_bytes: p.logBytes,
    log_limit: p.logLimit,
    last_contact_seconds: lastContact,
    fetch_paused: false,
    replay_paused: false,
    received_bytes: 0,
    wire_bytes: 0,
    secondaries: [...contacts, ...silent],
    mode: p.mode,
    dirty_regions: p.dirtyRegions,
    sync: null,
    retries: 0,
  };
}

function divergedStatus(input: Extract<StatusInput, { role: "diverged" }>): ReplicaStatus {
  return {
    name: input.name,
    role: "diverged",
    generation: input.generation,
    state: "diverged",
    reason: input.reason,
    peer: null,
    lag_bytes: 0,
    lag_seconds: 0,
    eta_seconds: null,
    seq: 0,
    primary_seq: null,
    log_bytes: 0,
    log_limit: null,
    last_contact_seconds: null,
    fetch_paused: false,
    replay_paused: false,
    received_bytes: 0,
    wire_bytes: 0,
    secondaries: [],
    mode: null,
    dirty_regions: 0,
    sync: null,
    retries: 0,
  };
}

function syncingStatus(input: Extract<StatusInput, { role: "syncing" }>): ReplicaStatus {
  const p = input.sync;
  const failed = p.phase === "failed";
  const failure = input.failure ?? null; // the copy done, opening the secondary failed
  return {
    ...divergedStatus({ name: input.name, role: "diverged", reason: "", generation: 0 }),
    role: "secondary",
    state: failed || failure !== null ? "stalled" : input.paused ? "paused" : "syncing",
    reason: failure ?? (failed ? `initial sync stopped: ${p.reason}` : input.paused ? "the sync's copy is paused" : (p.reason ?? `copying the primary's disk: ${p.doneBytes} of ${p.totalBytes} bytes`)),
    peer: input.peer,
    lag_bytes: p.totalBytes - p.doneBytes,
    eta_seconds: p.eta,
    seq: p.point,
    fetch_paused: input.paused,
    sync: syncFields(p.phase, p),
    retries: p.retries,
  };
}

function syncFields(phase: string, p: Omit<SyncProgress, "phase">): SyncStatus {
  return {
    phase,
    point_seq: p.point,
    done_bytes: p.doneBytes,
    total_bytes: p.totalBytes,
    moved_bytes: p.movedBytes,
    rate_bytes_per_second: p.rate,
    eta_seconds: p.eta,
    consistent_at_seq: p.end,
    retries: p.retries,
  };
}

function secondaryStatus(input: Extract<StatusInput, { role: "secondary" }>): ReplicaStatus {
  const { applier, shipper, now } = input;
  const applied = applier.applied.seq;
  // Fetched but not applied: the copy's bytes (it also holds applied records until their
  // segment is released, so this is an upper bound while records wait for replay).
  const notApplied = input.copyLast > applied ? input.copyBytes : 0;
  const lag = shipper.behindBytes + notApplied;
  const caughtUp = shipper.lastContact !== null && applied >= shipper.primaryDurable && lag === 0;
  const samples = input.samples;
  const last = samples[samples.length - 1];
  if (last === undefined || now - last.at >= 1000) {
    samples.push({ at: now, lag, applied });
    if (samples.length > SAMPLES) samples.shift();
  }
  // The catch-up rate over the samples: bytes of lag shed per second.
  const first = samples[0]!;
  const span = now - first.at;
  const rate = span > 0 ? (first.lag - lag) / (span / 1000) : 0;
  const eta = lag === 0 ? 0 : rate > 0 ? Math.round(lag / rate) : null;
  // Stalled: lag and applied seq unchanged for STALL_MS while the primary answers.
  const still = samples.filter((s) => now - s.at <= STALL_MS + 1000);
  const oldest = still[0];
  const stuck = oldest !== undefined && now - oldest.at >= STALL_MS && lag > 0 && still.every((s) => s.applied === applied && s.lag <= lag && s.lag > 0);
  let state: ReplicaState = "replicating";
  let reason: string | null = null;
  if (shipper.state === "diverged") [state, reason] = ["diverged", shipper.reason];
  else if (shipper.state === "released") [state, reason] = ["inconsistent", shipper.reason];
  else if (input.failure !== null) [state, reason] = ["stalled", input.failure];
  else if (applier.halted !== null) [state, reason] = ["stalled", `replay halted: ${applier.halted}`];
  else if (shipper.state === "refused") [state, reason] = ["stalled", shipper.reason];
  else if (input.catchingUp !== null && applied < input.catchingUp.end) [state, reason] = ["inconsistent", `initial sync: replaying the log over the copy, consistent at seq ${input.catchingUp.end} (applied seq ${applied})`];
  else if (!applier.consistent) [state, reason] = ["inconsistent", applier.recovering ? "re-applying records after a crash" : "a resync of regions the primary wrote around its log is being replayed"];
  else if (shipper.state === "paused" || applier.paused) [state, reason] = ["paused", shipper.state === "paused" && applier.paused ? "fetching and replay paused" : shipper.state === "paused" ? "fetching paused" : "replay paused"];
  else if (shipper.state === "retrying" && (shipper.lastContact === null || now - shipper.lastContact > 5000)) [state, reason] = ["disconnected", shipper.reason];
  else if (stuck) [state, reason] = ["stalled", `connected, but the lag of ${lag} bytes has not shrunk for ${STALL_MS / 1000} s${applier.delayed > 0 ? ` (${applier.delayed} records held by replay_delay)` : ""}`];
  else if (shipper.state === "retrying") reason = shipper.reason;
  const lagSeconds = caughtUp || applier.applied.lamport === 0 ? 0 : Math.max(0, seconds(Date.now() - applier.applied.lamport / 1000));
  return {
    name: input.name,
    role: "secondary",
    generation: Math.max(applier.applied.generation, shipper.primaryGeneration),
    state,
    reason,
    peer: input.peer,
    lag_bytes: lag,
    lag_seconds: lag === 0 && applied >= shipper.primaryDurable ? 0 : lagSeconds,
    eta_seconds: eta,
    seq: applied,
    primary_seq: shipper.lastContact === null ? null : shipper.primaryDurable,
    log_bytes: input.copyBytes,
    log_limit: null,
    last_contact_seconds: shipper.lastContact === null ? null : seconds(now - shipper.lastContact),
    fetch_paused: shipper.state === "paused",
    replay_paused: applier.paused,
    received_bytes: shipper.receivedBytes,
    wire_bytes: shipper.wireBytes,
    secondaries: [],
    mode: null,
    dirty_regions: 0,
    sync:
      input.catchingUp === null
        ? null
        : syncFields("catching-up", { reason: null, point: input.catchingUp.point, doneBytes: input.catchingUp.total, totalBytes: input.catchingUp.total, movedBytes: input.catchingUp.moved, rate: null, eta: eta, end: input.catchingUp.end, retries: 0 }),
    retries: shipper.retries,
  };
}
