/**
 * @module storage/validate — the one place every request is checked before a backend is
 * touched, for both the DST and the NBD protocol (the model: nbdkit's validate_request()).
 * Returns 0 or the errno to answer with; never throws.
 *
 * Errno choices follow the NBD spec (proto.md, "Request errors"): EPERM for writes to a
 * read-only export; EINVAL for a read, trim or other request that exceeds the export (proto.md "Error values": reads and
 * trims past the end are EINVAL); ENOSPC for a write or write-zeroes that starts or ends past
 * the end; EINVAL for an over-long payload.
 */
import { Errno } from "../lib/errno.ts";

export type RequestKind = "read" | "write" | "flush" | "trim" | "zero" | "cache" | "block-status";

export interface RequestLimits {
  size: number;
  writable: boolean;
  maxPayload: number;
}

const mutating: Record<RequestKind, boolean> = {
  read: false,
  write: true,
  flush: false,
  trim: true,
  zero: true,
  cache: false,
  "block-status": false,
};

/**
 * 0, or the out-of-range errno a mutation of [offset, offset+length) gets against `size` alone:
 * the size a resize fences requests to while it runs (storage/size-fence.ts,
 * storage/layers/shrink-gate.ts), the rest checked already.
 */
export function rangeRefusal(kind: RequestKind & ("write" | "trim" | "zero"), offset: number, length: number, size: number): number {
  return validateRequest(kind, offset, length, { size, writable: true, maxPayload: Number.MAX_SAFE_INTEGER });
}

export function validateRequest(kind: RequestKind, offset: number, length: number, limits: RequestLimits): number {
  if (mutating[kind] && !limits.writable) return Errno.EPERM;
  if (kind === "flush") return 0;
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) return Errno.EINVAL;
  if ((kind === "read" || kind === "write") && length > limits.maxPayload) return Errno.EINVAL;
  if (offset > limits.size || length > limits.size - offset) {
    return kind === "write" || kind === "zero" ? Errno.ENOSPC : Errno.EINVAL;
  }
  return 0;
}
