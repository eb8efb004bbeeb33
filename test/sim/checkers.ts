/**
 * @module test/sim/checkers — the invariants every simulated run must keep, and the oracle
 * they are checked against (the model: TigerBeetle's testing/*_checker.zig).
 *
 * The oracle follows the application's view of every block: the versions a read may return
 * (`candidates`: the last acknowledged mutation, plus any mutation that failed since, since a
 * failed request may or may not have taken effect) and whether that state is known durable
 * (`covered`: a FUA mutation, or a FLUSH submitted after the ack succeeded). The workload
 * never has two requests outstanding on a block when one of them mutates it, so the oracle
 * is exact: a read must return one of the candidates, full stop.
 *
 * Invariants (names are what a failure prints):
 * - "stale read": a read returned data older than the last acknowledged write (or garbage);
 * - "flushed write lost": after an export crash, a covered block lost its value;
 * - "stale overwrite": the final image differs from the acknowledged writes;
 * - "exactly-once": one request (txid) was applied twice by one export instance;
 * - "budget": a request failed before its budget (resends / deadline) was spent, or with an
 *   error nothing explains;
 * - "liveness": after faults stopped, a request did not complete within the bound;
 * - "counters": the engine's counters disagree with what the simulator saw happen.
 */
import { Errno, errnoName } from "../../src/lib/errno.ts";
import type { OpKind } from "../../src/engine/client-engine.ts";
import { blockVersion } from "./block-data.ts";

export class SimViolation extends Error {
  constructor(
    readonly invariant: string,
    detail: string,
  ) {
    super(`${invariant}: ${detail}`);
    this.name = "SimViolation";
  }
}

export function violation(invariant: string, detail: string): never {
  throw new SimViolation(invariant, detail);
}

export interface OpRecord {
  /** Application request number (1, 2, ...). */
  id: number;
  kind: OpKind;
  first: number;
  count: number;
  /** Version a mutation leaves (0 for trim/zero); -1 for read/flush. */
  version: number;
  fua: boolean;
  txid: number;
  submitAt: number;
  /** Oracle serial at submit (a FLUSH covers acks with a smaller serial). */
  submitSerial: number;
  /** Submitted after faults stopped: must succeed. */
  convergence: boolean;
  doneAt: number;
  status: number | null;
}

interface BlockState {
  candidates: number[];
  covered: boolean;
  ackSerial: number;
  mutation: OpRecord | null;
  reads: number;
}

export class Oracle {
  readonly blocks: BlockState[] = [];
  private serial = 0;

  constructor(
    readonly blockCount: number,
    readonly blockSize: number,
  ) {
    for (let i = 0; i < blockCount; i++) this.blocks.push({ candidates: [0], covered: true, ackSerial: 0, mutation: null, reads: 0 });
  }

  nextSerial(): number {
    return ++this.serial;
  }

  /** Overlap rule: a mutation needs its blocks idle; a read needs them free of mutations. */
  canSubmit(kind: OpKind, first: number, count: number): boolean {
    if (kind === "flush") return true;
    for (let b = first; b < first + count; b++) {
      const state = this.blocks[b]!;
      if (state.mutation !== null) return false;
      if (kind !== "read" && state.reads > 0) return false;
    }
    return true;
  }

  submitted(op: OpRecord): void {
    if (op.kind === "flush") return;
    for (let b = op.first; b < op.first + op.count; b++) {
      const state = this.blocks[b]!;
      if (op.kind === "read") state.reads++;
      else state.mutation = op;
    }
  }

  /** The request finished: update the model; for a successful read check what it returned. */
  completed(op: OpRecord, status: number, data: Uint8Array | null): void {
    if (op.kind === "flush") {
      if (status === 0) for (const state of this.blocks) if (state.ackSerial < op.submitSerial) state.covered = true;
      return;
    }
    if (op.kind === "read") return this.completedRead(op, status, data);
    const serial = this.nextSerial();
    for (let b = op.first; b < op.first + op.count; b++) {
      const state = this.blocks[b]!;
      state.mutation = null;
      if (status === 0) {
        state.candidates = [op.version];
        state.ackSerial = serial;
        state.covered = op.fua;
      } else if (!state.candidates.includes(op.version)) {
        state.candidates.push(op.version);
      }
    }
  }

  private completedRead(op: OpRecord, status: number, data: Uint8Array | null): void {
    for (let b = op.first; b < op.first + op.count; b++) this.blocks[b]!.reads--;
    if (status !== 0) return;
    if (data === null || data.length !== op.count * this.blockSize) {
      violation("stale read", `read #${op.id} returned ${data?.length ?? "no"} bytes, wanted ${op.count * this.blockSize}`);
    }
    for (let i = 0; i < op.count; i++) {
      const b = op.first + i;
      const problem = this.check(b, data.subarray(i * this.blockSize, (i + 1) * this.blockSize), []);
      if (problem !== null) violation("stale read", `read #${op.id} (txid ${op.txid}) of block ${b}: ${problem}`);
    }
  }

  /** Why `bytes` may not be block `b` now, or null. `extra`: versions also acceptable. */
  check(b: number, bytes: Uint8Array, extra: number[]): string | null {
    const found = blockVersion(bytes, b);
    if (typeof found === "string") return found;
    const state = this.blocks[b]!;
    if (state.candidates.includes(found) || extra.includes(found)) return null;
    return `holds version ${found}, acknowledged state is ${describeCandidates(state.candidates)}`;
  }

  /** After an export crash, before any replay: every covered block kept its value. */
  checkCrash(image: Uint8Array): void {
    for (let b = 0; b < this.blockCount; b++) {
      const state = this.blocks[b]!;
      if (!state.covered) continue;
      const extra = state.mutation !== null ? [state.mutation.version] : [];
      const problem = this.check(b, this.slice(image, b), extra);
      if (problem !== null) violation("flushed write lost", `block ${b} after the export crashed: ${problem}`);
    }
  }

  /** The final image holds exactly the acknowledged state (modulo failed requests). */
  checkImage(image: Uint8Array, context: string): void {
    for (let b = 0; b < this.blockCount; b++) {
      const problem = this.check(b, this.slice(image, b), []);
      if (problem !== null) violation("stale overwrite", `${context}: block ${b} ${problem}`);
    }
  }

  allCovered(): boolean {
    return this.blocks.every((state) => state.covered);
  }

  private slice(image: Uint8Array, b: number): Uint8Array {
    return image.subarray(b * this.blockSize, (b + 1) * this.blockSize);
  }
}

function describeCandidates(candidates: number[]): string {
  return candidates.length === 1 ? `version ${candidates[0]}` : `one of versions ${candidates.join(", ")}`;
}

export interface BudgetLimits {
  deadlineMs: number;
  /** The engine only learns the time from tick(now): its submit time may be a tick early. */
  tickMs: number;
  maxResends: number;
  /** How often each txid went on the wire. */
  sends: Map<number, number>;
  /** EIO the backend injected, per request kind (the only source of EIO a client may see). */
  injected: Record<OpKind, number>;
}

/** A request may fail only with ETIMEDOUT once its budget is spent, or EIO the disk injected. */
export function checkFailure(op: OpRecord, status: number, now: number, limits: BudgetLimits, eioSeen: Record<OpKind, number>): void {
  if (status === 0) return;
  if (op.convergence) violation("liveness", `request #${op.id} (${op.kind}) submitted after faults stopped failed with ${errnoName(status)}`);
  if (status === Errno.ETIMEDOUT) {
    const elapsed = now - op.submitAt;
    const sends = limits.sends.get(op.txid) ?? 0;
    if (elapsed < limits.deadlineMs - limits.tickMs && sends < limits.maxResends + 1) {
      violation(
        "budget",
        `request #${op.id} (txid ${op.txid}) timed out after ${elapsed} ms and ${sends} sends; budget is ${limits.deadlineMs} ms or ${limits.maxResends} resends`,
      );
    }
    return;
  }
  if (status === Errno.EIO) {
    // A FUA trim/zero also flushes, so any injected error may surface on any mutation: compare totals.
    eioSeen[op.kind]++;
    const seen = Object.values(eioSeen).reduce((a, b) => a + b, 0);
    const injected = Object.values(limits.injected).reduce((a, b) => a + b, 0);
    if (seen > injected) {
      violation("budget", `request #${op.id} (${op.kind}) failed with EIO, the ${seen}th EIO seen, but the disk injected only ${injected}`);
    }
    return;
  }
  violation("budget", `request #${op.id} (${op.kind}, txid ${op.txid}) failed with ${errnoName(status)}, which nothing in this run explains`);
}
