/**
 * @module storage/tree/legs — what linear and stripe share about their legs: the leg type,
 * the capability flags a node derives from its legs (a node can do what every leg can), the
 * last-line validation every node runs before splitting a request, and the refusals of a grow
 * they share.
 */
import { Errno } from "../../lib/errno.ts";
import { formatSize } from "../../lib/size.ts";
import { validateRequest, type RequestKind } from "../validate.ts";
import type { StoragePort } from "../port.ts";

export interface TreeLeg {
  port: StoragePort;
  /** As configured: URL, path, "memory", or the child's kind. */
  label: string;
}

/** Flags of a node made of `ports`: what all of them can do (flush: what any can). */
export function combinedFlags(ports: readonly StoragePort[]) {
  return {
    blockSize: Math.max(512, ...ports.map((p) => p.blockSize)),
    maxPayload: Math.min(...ports.map((p) => p.maxPayload)),
    readOnly: ports.some((p) => p.readOnly),
    canTrim: ports.every((p) => p.canTrim),
    canZero: ports.every((p) => p.canZero),
    canFastZero: ports.every((p) => p.canFastZero),
    canFlush: ports.some((p) => p.canFlush),
    canBlockStatus: ports.some((p) => p.canBlockStatus),
    synchronous: ports.every((p) => p.synchronous),
  };
}

/** 0 or the errno for a request on a node of this size and flags (storage/validate.ts). */
export function checkRequest(kind: RequestKind, offset: number, length: number, port: StoragePort): number {
  return validateRequest(kind, offset, length, { size: port.size, writable: !port.readOnly, maxPayload: port.maxPayload });
}

/** Close every port, even when some fail; rethrow the first failure. */
export async function closeAll(ports: readonly StoragePort[]): Promise<void> {
  const results = await Promise.allSettled(ports.map((p) => p.close()));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}

/** Why a grow is refused before anything about the legs is asked: `{ errno, reason }`, or null. */
export type GrowRefusal = { errno: number; reason: string } | null;

/**
 * The refusals every growing node shares (linear.ts, stripe.ts): closed, a resize running, not
 * a size, smaller than now. `what` names the node in the reason ("the stripe", "a linear node").
 */
export function growRefusal(what: { the: string; a: string }, state: { closed: boolean; growing: boolean }, size: number, now: number): GrowRefusal {
  if (state.closed) return { errno: Errno.ESHUTDOWN, reason: `${what.the} is closed` };
  if (state.growing) return { errno: Errno.EBUSY, reason: `${what.the} is already being resized` };
  if (!Number.isSafeInteger(size) || size <= 0) return { errno: Errno.EINVAL, reason: `${size} is not a size in bytes` };
  if (size < now) return { errno: Errno.ENOTSUP, reason: `${what.a} does not shrink (it is ${formatSize(now)}; ${formatSize(size)} asked)` };
  return null;
}
