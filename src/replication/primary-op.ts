/**
 * @module replication/primary-op — one mutation as the replication primary (replication/primary.ts)
 * carries it from arrival to write-back: what it changes, its records and their durability, its
 * place in the ack window; with the record code each kind is logged as, the overlap that orders
 * write-backs (docs/replication.md §4: overlapping mutations reach the disk in log order) and
 * the log bytes a mutation takes, which decide whether it is logged or goes around the log.
 *
 * Must not: decide anything about the log or the disk (the primary does).
 */
import type { BufferHold, Done } from "../storage/port.ts";
import type { WindowWrite } from "./ack-window.ts";
import { MAX_RECORD_PAYLOAD, RECORD_HEADER_SIZE, RecordOp, type RecordOpCode } from "./record.ts";

type Kind = "write" | "trim" | "zero" | "resize" | "copy";

export interface Op {
  kind: Kind;
  offset: number;
  /** Exclusive end (Infinity for resize: it orders against everything). */
  end: number;
  data: Uint8Array | null;
  /** Handed over by the caller (storage/port.ts writeHandedOver): its hold and its XXH3-64 of `data`. */
  hold: BufferHold | null;
  xxh3: bigint | undefined;
  noHole: boolean;
  fua: boolean;
  newSize: number;
  done: Done;
  /** Has records in the log (false: written around it, marked in the bitmap). */
  logged: boolean;
  firstSeq: number;
  lastSeq: number;
  /** Records or marks not yet durable. */
  waiting: number;
  ready: boolean;
  started: boolean;
  errno: number;
  /** In the ack window: completes once its records are written (replication/ack-window.ts). */
  early: WindowWrite | null;
  /** Records not yet written (an early write is acknowledged when this reaches 0). */
  unwritten: number;
  /** Its records failed with the log: it goes around the log once the switch to overflow is saved. */
  awaitingSwitch: boolean;
}

export const OP_CODES: Record<Exclude<Kind, "copy">, RecordOpCode> = {
  write: RecordOp.WRITE,
  trim: RecordOp.TRIM,
  zero: RecordOp.ZERO,
  resize: RecordOp.RESIZE,
};

/** A mutation just arrived: nothing logged, nothing written back. */
export function newOp(kind: Kind, offset: number, end: number, data: Uint8Array | null, noHole: boolean, fua: boolean, newSize: number, done: Done): Op {
  return {
    kind, offset, end, data, hold: null, xxh3: undefined, noHole, fua, newSize, done, logged: false, firstSeq: 0, lastSeq: 0, waiting: 0, ready: false, started: false, errno: 0,
    early: null, unwritten: 0, awaitingSwitch: false,
  };
}

export const EMPTY = new Uint8Array(0);

export function overlaps(a: Op, b: Op): boolean {
  return a.offset < b.end && b.offset < a.end;
}

/** Log bytes a mutation will take (headers + payload). */
export function recordBytes(op: Op): number {
  if (op.kind !== "write") return RECORD_HEADER_SIZE;
  const length = op.end - op.offset;
  return length + RECORD_HEADER_SIZE * Math.ceil(length / MAX_RECORD_PAYLOAD);
}
