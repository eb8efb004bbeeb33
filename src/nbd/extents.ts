/**
 * @module nbd/extents — turns a target's allocation map into base:allocation
 * descriptors for an NBD_CMD_BLOCK_STATUS reply (proto.md "NBD_REPLY_TYPE_BLOCK_STATUS",
 * "base:allocation metadata context").
 *
 * Lengths are JS numbers bounded by the 32-bit request length, so no sum can overflow
 * (nbdkit's CVE-2025-47711/47712 were off-by-one and 32-bit overflow bugs here). Must not: emit a zero-length descriptor, exceed the request, or emit none at all.
 */
import type { Extent } from "../storage/local/backend.ts";
import { State } from "../wire/nbd/constants.ts";

/**
 * Fill `lengths`/`statuses` with merged runs of equal status covering at most `length`
 * bytes from the start of `extents`; returns how many. With `one` (REQ_ONE) exactly one.
 * A broken map (non-positive or non-integer lengths) is cut where it breaks; if nothing
 * usable remains, one descriptor of status 0 for the whole length — always a truthful answer
 * ("the server MAY always safely report a status of 0").
 */
export function describeExtents(
  extents: readonly Extent[],
  length: number,
  one: boolean,
  lengths: Uint32Array,
  statuses: Uint32Array,
): number {
  const max = one ? 1 : Math.min(lengths.length, statuses.length);
  let count = 0;
  let remaining = length;
  for (const extent of extents) {
    if (remaining === 0) break;
    const size = extent.length;
    if (!Number.isSafeInteger(size) || size <= 0) break;
    const n = Math.min(size, remaining);
    const status = (extent.hole ? State.HOLE : 0) | (extent.zero || extent.hole ? State.ZERO : 0);
    if (count > 0 && statuses[count - 1] === status) lengths[count - 1]! += n;
    else {
      if (count === max) break;
      lengths[count] = n;
      statuses[count] = status;
      count++;
    }
    remaining -= n;
  }
  if (count === 0) {
    lengths[0] = length;
    statuses[0] = 0;
    count = 1;
  }
  return count;
}
