/**
 * @module wire/nbd/constants — every number of the NBD protocol dstd uses, from
 * NetworkBlockDevice/nbd doc/proto.md, plus the mapping of local errno values onto the few the spec allows on the wire.
 * Pure data: imports nothing but the errno table.
 */
import { Errno } from "../../lib/errno.ts";

// proto.md "Newstyle negotiation": 'NBDMAGIC' then 'IHAVEOPT', both 64-bit big-endian.
export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
/** High/low halves of IHAVEOPT, for comparing without BigInt on the option path. */
export const IHAVEOPT_HI = 0x49484156;
export const IHAVEOPT_LO = 0x454f5054;
/** proto.md "Fixed newstyle negotiation": magic of every option reply. */
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;

/** Handshake flags (server → client), proto.md "Handshake flags". */
export const HandshakeFlag = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;
/** Client flags, proto.md "Client flags": the server MUST drop the connection on any other bit. */
export const ClientFlag = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;
export const KNOWN_CLIENT_FLAGS = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;

/** Option types, proto.md "Option types". */
export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

/** Option reply types, proto.md "Option reply types"; errors have bit 31 set. */
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
} as const;

/** NBD_REP_INFO information types, proto.md "NBD_REP_INFO". */
export const Info = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Transmission flags (u16), proto.md "Transmission flags". */
export const TxFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** Request magic, proto.md "Request message". */
export const REQUEST_MAGIC = 0x25609513;
/** proto.md "Simple reply message". */
export const SIMPLE_REPLY_MAGIC = 0x67446698;
/** proto.md "Structured reply chunk message". */
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const REQUEST_HEADER_SIZE = 28;
export const SIMPLE_REPLY_SIZE = 16;
export const STRUCTURED_HEADER_SIZE = 20;
/** Structured header + the u64 offset that starts an OFFSET_DATA payload. */
export const OFFSET_DATA_HEADER_SIZE = STRUCTURED_HEADER_SIZE + 8;

/** Commands, proto.md "Request types". */
export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

/** Command flags, proto.md "Command flags". */
export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
  PAYLOAD_LEN: 1 << 5,
} as const;

/** Structured reply flags and types, proto.md "Structured reply flags/types". */
export const REPLY_FLAG_DONE = 1 << 0;
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5, // NOT 3: nbd.h's stale value; the spec says 5
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** base:allocation status flags, proto.md "base:allocation metadata context". */
export const State = { HOLE: 1 << 0, ZERO: 1 << 1 } as const;
export const BASE_ALLOCATION = "base:allocation";

/** proto.md "Conventions": strings MUST be no longer than 4096 bytes. */
export const MAX_STRING = 4096;

/**
 * proto.md "Block size constraints": lengths below 32 MiB SHOULD NOT be treated as a denial of
 * service, so WRITE payloads up to this are consumed (and refused with EINVAL if above the
 * advertised maximum) rather than answered with a hard disconnect.
 */
export const DOS_PAYLOAD_LIMIT = 1 << 25;

const wireErrnos: ReadonlySet<number> = new Set([
  Errno.EPERM,
  Errno.EIO,
  Errno.ENOMEM,
  Errno.EINVAL,
  Errno.ENOSPC,
  Errno.EOVERFLOW,
  Errno.ENOTSUP,
  Errno.ESHUTDOWN,
]);

/**
 * Map a local errno onto the values proto.md "Error values" defines. EDQUOT and EFBIG SHOULD
 * become ENOSPC (spec); EROFS/EACCES are "not permitted"; anything else outside the set is
 * reported as EIO, never as success.
 */
export function nbdErrno(errno: number): number {
  if (errno === 0) return 0;
  if (wireErrnos.has(errno)) return errno;
  if (errno === Errno.EDQUOT || errno === Errno.EFBIG) return Errno.ENOSPC;
  if (errno === Errno.EROFS || errno === Errno.EACCES) return Errno.EPERM;
  return Errno.EIO;
}

const commandNames = ["READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE", "WRITE_ZEROES", "BLOCK_STATUS"];
export function commandName(type: number): string {
  return commandNames[type] ?? `command ${type}`;
}

const optionNames: Record<number, string> = Object.fromEntries(Object.entries(Opt).map(([k, v]) => [v, k]));
export function optionName(option: number): string {
  return optionNames[option] ?? `option ${option}`;
}
