/**
 * @module wire/dst/bytes — big-endian integer reads and writes on plain Uint8Arrays, shared by
 * the DST header and handshake codecs. Hand-written byte operations (no DataView allocation)
 * because the header path runs for every request. No bounds checks: callers check lengths
 * first; a read past the end yields 0 bytes (typed arrays return undefined, which `|`/`<<`
 * turn into 0), never an exception.
 */

const TWO_32 = 4294967296;

export function readU16(s: Uint8Array, at: number): number {
  return ((s[at]! << 8) | s[at + 1]!) & 0xffff;
}

export function readU32(s: Uint8Array, at: number): number {
  return ((s[at]! << 24) | (s[at + 1]! << 16) | (s[at + 2]! << 8) | s[at + 3]!) >>> 0;
}

/**
 * u64 as a JS number: exact up to 2^53 - 1. Larger values come back rounded but still
 * greater than Number.MAX_SAFE_INTEGER, so a `> MAX_SAFE_INTEGER` check rejects them reliably.
 */
export function readU64(s: Uint8Array, at: number): number {
  return readU32(s, at) * TWO_32 + readU32(s, at + 4);
}

export function writeU16(t: Uint8Array, at: number, v: number): void {
  t[at] = v >>> 8;
  t[at + 1] = v;
}

export function writeU32(t: Uint8Array, at: number, v: number): void {
  t[at] = v >>> 24;
  t[at + 1] = v >>> 16;
  t[at + 2] = v >>> 8;
  t[at + 3] = v;
}

/** v must be a non-negative safe integer (callers assert it); split into two u32 halves. */
export function writeU64(t: Uint8Array, at: number, v: number): void {
  const hi = Math.floor(v / TWO_32);
  writeU32(t, at, hi);
  writeU32(t, at + 4, v - hi * TWO_32);
}

export function hex(value: number, digits: number): string {
  return `0x${value.toString(16).padStart(digits, "0")}`;
}
