/**
 * @module test/storage/tree/oracle — the reference model of the tree simulation: per block of
 * the tree, the versions a read may return now (`now`: the last acknowledged mutation plus
 * any that failed since — a failed request may or may not have taken effect) and the versions
 * the block may hold after the node crashes (`crash`: everything since the last durable
 * point — a FUA mutation, or a FLUSH submitted after the mutation completed). Blocks carry
 * self-describing contents (test/sim/block-data.ts), so a read names the write it came from.
 *
 * The workload never has a mutation in flight on a block together with any other request on
 * it, so the model is exact. Invariants (names are what a failure prints):
 * - "stale read": a read returned data older than the last acknowledged write, or garbage;
 * - "lost write": after a node crash and reopen, a block holds a version it may not hold
 *   (acknowledged + flushed data lost, or data nobody wrote);
 * - "final image": after convergence a block differs from the acknowledged state;
 * - "legs differ": a mirror's in-sync legs are not byte-identical after convergence;
 * - "degraded by a short outage": a mirror leg degraded though none of its leaves was ever
 *   down for as long as its budget (minus the latencies);
 * - "liveness": after faults stopped, a request failed or did not complete in time.
 */
import { blockVersion } from "../../sim/block-data.ts";

export class TreeViolation extends Error {
  constructor(
    readonly invariant: string,
    detail: string,
  ) {
    super(`${invariant}: ${detail}`);
    this.name = "TreeViolation";
  }
}

export function violation(invariant: string, detail: string): never {
  throw new TreeViolation(invariant, detail);
}

export type OpKind = "read" | "write" | "trim" | "zero" | "flush";

export interface Op {
  id: number;
  kind: OpKind;
  first: number;
  count: number;
  /** Version a mutation leaves (0 for trim/zero); -1 for read/flush. */
  version: number;
  fua: boolean;
  submitAt: number;
  /** Serial at submit: a FLUSH covers mutations completed before it was submitted. */
  serial: number;
  /** Submitted after faults stopped: must succeed. */
  convergence: boolean;
  status: number | null;
  /** Vanished in a node crash. */
  lost: boolean;
}

interface Block {
  now: number[];
  crash: number[];
  ackSerial: number;
  mutating: boolean;
  reads: number;
}

export class TreeOracle {
  readonly blocks: Block[] = [];
  private serial = 0;

  constructor(
    blockCount: number,
    readonly blockSize: number,
  ) {
    this.grow(blockCount);
  }

  get blockCount(): number {
    return this.blocks.length;
  }

  /** The tree grew to `blockCount` blocks: the new ones read as zeroes (never written). */
  grow(blockCount: number): void {
    while (this.blocks.length < blockCount) this.blocks.push({ now: [0], crash: [0], ackSerial: 0, mutating: false, reads: 0 });
  }

  nextSerial(): number {
    return ++this.serial;
  }

  canSubmit(kind: OpKind, first: number, count: number): boolean {
    if (kind === "flush") return true;
    for (let b = first; b < first + count; b++) {
      const block = this.blocks[b]!;
      if (block.mutating) return false;
      if (kind !== "read" && block.reads > 0) return false;
    }
    return true;
  }

  submitted(op: Op): void {
    if (op.kind === "flush") return;
    for (let b = op.first; b < op.first + op.count; b++) {
      if (op.kind === "read") this.blocks[b]!.reads++;
      else this.blocks[b]!.mutating = true;
    }
  }

  completed(op: Op, status: number, data: Uint8Array | null): void {
    if (op.kind === "flush") {
      if (status !== 0) return;
      for (const block of this.blocks) if (!block.mutating && block.ackSerial < op.serial) block.crash = [...block.now];
      return;
    }
    if (op.kind === "read") {
      for (let b = op.first; b < op.first + op.count; b++) this.blocks[b]!.reads--;
      if (status !== 0 || data === null) return;
      for (let i = 0; i < op.count; i++) {
        const b = op.first + i;
        const problem = this.check(b, data.subarray(i * this.blockSize, (i + 1) * this.blockSize), this.blocks[b]!.now);
        if (problem !== null) violation("stale read", `read #${op.id} of block ${b}: ${problem}`);
      }
      return;
    }
    const serial = this.nextSerial();
    for (let b = op.first; b < op.first + op.count; b++) {
      const block = this.blocks[b]!;
      block.mutating = false;
      if (status === 0) {
        block.now = [op.version];
        block.ackSerial = serial;
        block.crash = op.fua ? [op.version] : addOnce(block.crash, op.version);
      } else {
        block.now = addOnce(block.now, op.version);
        block.crash = addOnce(block.crash, op.version);
      }
    }
  }

  /** The node crashed: requests in flight vanish (maybe applied); only durable state remains. */
  crashed(inflight: readonly Op[]): void {
    for (const op of inflight) {
      op.lost = true;
      if (op.kind === "flush") continue;
      for (let b = op.first; b < op.first + op.count; b++) {
        const block = this.blocks[b]!;
        if (op.kind === "read") {
          block.reads--;
          continue;
        }
        block.mutating = false;
        block.crash = addOnce(block.crash, op.version);
      }
    }
    for (const block of this.blocks) block.now = [...block.crash];
  }

  /** Why `bytes` may not be block `b` holding one of `allowed`, or null. */
  check(b: number, bytes: Uint8Array, allowed: readonly number[]): string | null {
    const found = blockVersion(bytes, b);
    if (typeof found === "string") return found;
    if (allowed.includes(found)) return null;
    return `holds version ${found}, allowed: ${allowed.join(", ")}`;
  }

  /** Every block of `image` (the tree read whole) matches the model. */
  checkImage(image: Uint8Array, invariant: string, context: string): void {
    for (let b = 0; b < this.blockCount; b++) {
      const problem = this.check(b, image.subarray(b * this.blockSize, (b + 1) * this.blockSize), this.blocks[b]!.now);
      if (problem !== null) violation(invariant, `${context}: block ${b} ${problem}`);
    }
  }
}

function addOnce(list: number[], version: number): number[] {
  return list.includes(version) ? list : [...list, version];
}
