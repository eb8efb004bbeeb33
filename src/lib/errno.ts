/**
 * @module lib/errno — the errno values dstd puts on the wire (DST reply status and NBD reply
 * error) and their names. One table so both protocols and every log line agree.
 * Values are Linux's (asm-generic/errno-base.h, errno.h); the NBD spec (proto.md, "Error
 * values") uses the same numbers for the subset it defines.
 */
export const Errno = {
  OK: 0,
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ENODATA: 61,
  EPROTO: 71,
  EOVERFLOW: 75,
  EBADMSG: 74,
  EPROTONOSUPPORT: 93,
  ENOTSUP: 95,
  ECONNRESET: 104,
  ESHUTDOWN: 108,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EALREADY: 114,
  ESTALE: 116,
  EDQUOT: 122,
} as const;

export type ErrnoName = keyof typeof Errno;

const names = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

const messages: Record<number, string> = {
  0: "success",
  1: "operation not permitted",
  2: "no such file or directory",
  5: "input/output error",
  9: "bad file descriptor",
  11: "resource temporarily unavailable",
  12: "out of memory",
  13: "permission denied",
  16: "device or resource busy",
  17: "file exists",
  19: "no such device",
  22: "invalid argument",
  25: "inappropriate ioctl for device",
  27: "file too large",
  28: "no space left on device",
  30: "read-only file system",
  61: "no data available",
  71: "protocol error",
  74: "bad message (checksum or authentication failed)",
  75: "value too large (out of range)",
  93: "protocol version not supported",
  95: "operation not supported",
  104: "connection reset by peer",
  108: "transport endpoint shut down",
  110: "timed out",
  111: "connection refused",
  114: "operation already in progress",
  116: "stale session (it cannot be resumed)",
  122: "disk quota exceeded",
};

/** "EIO" for 5; "errno 1234" for values outside the table. */
export function errnoName(code: number): string {
  return names.get(code) ?? `errno ${code}`;
}

/** "input/output error (EIO)". */
export function errnoMessage(code: number): string {
  const text = messages[code];
  return text ? `${text} (${errnoName(code)})` : errnoName(code);
}

/** Node/Bun system errors carry `code: "ENOSPC"`; map them to the number, EIO if unknown. */
export function errnoFromError(error: unknown): number {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code in Errno) return Errno[code as ErrnoName];
  const errno = (error as { errno?: unknown } | null)?.errno;
  if (typeof errno === "number" && errno !== 0) return Math.abs(errno);
  return Errno.EIO;
}
