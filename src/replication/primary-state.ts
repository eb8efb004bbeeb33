/**
 * @module replication/primary-state — what a primary keeps durably beside its log
 * (`primary.state`, a replication/state-file.ts slot pair): the checkpoint (every record up
 * to it is on the disk durably, so recovery replays only what follows), whether it is
 * logging or writing around a full log, the records declared void when it stopped logging,
 * whether a resync (and with it the disk's size) is owed to the secondaries, and how far each secondary has applied
 * (segments go once every secondary is past them). docs/replication.md §4. Pure.
 */

import type { RecoveryReport } from "./log-store.ts";

export const PRIMARY_STATE_KIND = 1;
export const MAX_SECONDARIES = 16;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface PrimaryState {
  /** Every record ≤ checkpoint has been written back and flushed to the disk. */
  checkpoint: number;
  /** "logging": mutations are logged; "overflow": they go to the disk and the dirty bitmap. */
  mode: "logging" | "overflow";
  /** Records after this seq are void (set while in overflow: they were never acknowledged). */
  voidAfter: number | null;
  /** Regions were written without logging and not yet all copied into the log. */
  resyncPending: boolean;
  /**
   * The disk was resized around the log: the resync logs its size after RESYNC_BEGIN, before
   * any copy (docs/replication.md §5). Absent in states saved before it existed: false.
   */
  resizeOwed: boolean;
  /** Secondary name → the last seq it applied durably. */
  secondaries: Record<string, number>;
}

export const INITIAL_PRIMARY_STATE: PrimaryState = {
  checkpoint: 0,
  mode: "logging",
  voidAfter: null,
  resyncPending: false,
  resizeOwed: false,
  secondaries: {},
};

export function isSecondaryName(name: string): boolean {
  return NAME.test(name);
}

function isSeq(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** The state, or a reason the stored value is not one. */
export function validatePrimaryState(value: unknown): PrimaryState | string {
  if (typeof value !== "object" || value === null) return "not an object";
  const v = value as Record<string, unknown>;
  if (!isSeq(v.checkpoint)) return `checkpoint ${String(v.checkpoint)} is not a sequence number`;
  if (v.mode !== "logging" && v.mode !== "overflow") return `mode ${String(v.mode)} unknown`;
  if (v.voidAfter !== null && !isSeq(v.voidAfter)) return `voidAfter ${String(v.voidAfter)} is not a sequence number`;
  if (typeof v.resyncPending !== "boolean") return "resyncPending is not a boolean";
  if (v.resizeOwed !== undefined && typeof v.resizeOwed !== "boolean") return "resizeOwed is not a boolean";
  if (typeof v.secondaries !== "object" || v.secondaries === null) return "secondaries is not an object";
  const entries = Object.entries(v.secondaries as Record<string, unknown>);
  if (entries.length > MAX_SECONDARIES) return `${entries.length} secondaries (at most ${MAX_SECONDARIES})`;
  const secondaries: Record<string, number> = {};
  for (const [name, seq] of entries) {
    if (!isSecondaryName(name)) return `secondary name ${JSON.stringify(name)} is invalid`;
    if (!isSeq(seq)) return `secondary ${name}: applied ${String(seq)} is not a sequence number`;
    secondaries[name] = seq;
  }
  return {
    checkpoint: v.checkpoint,
    mode: v.mode,
    voidAfter: v.voidAfter as number | null,
    resyncPending: v.resyncPending,
    resizeOwed: v.resizeOwed ?? false,
    secondaries,
  };
}

/** The failures of the log directory's parts that status names, joined; null when none. */
export function failures(...parts: (string | null)[]): string | null {
  const named = parts.filter((p): p is string => p !== null);
  return named.length === 0 ? null : named.join("; ");
}

/**
 * Why a log from `first` to `last` cannot recover a disk checkpointed at `checkpoint` (records
 * missing at either end), or null. `cut` is the torn tail recovery cut, if any: a log that
 * ends below the checkpoint after one lost its records to the cut (rot in the only copy of
 * records past the checkpoint reads as a torn write, the limit of docs/replication.md §3.3),
 * not to missing files, and the message says so.
 */
export function logGap(where: string, first: number, last: number, checkpoint: number, cut: RecoveryReport["tornTail"] = null): string | null {
  if (last < checkpoint && cut !== null) {
    return (
      `replication log ${where} cannot continue from the disk's checkpoint at seq ${checkpoint}: recovery cut ${cut.segment} ` +
      `at offset ${cut.offset} as a torn tail (${cut.reason}) and no earlier record is left. If the records after the ` +
      `checkpoint were acknowledged, this was rot in their only copy, not a torn write (docs/replication.md §3.3), and the ` +
      `disk may hold part of them; the secondaries need a full resync`
    );
  }
  if (last < checkpoint) {
    return `replication log ${where} ends at seq ${last} but the disk was checkpointed at seq ${checkpoint}: log segments are missing; the secondaries need a full resync`;
  }
  if (first > checkpoint + 1 && last > checkpoint) return `replication log ${where} starts at seq ${first} but the disk needs records from seq ${checkpoint + 1}`;
  return null;
}
