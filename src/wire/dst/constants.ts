/**
 * @module wire/dst/constants — every number of the DST wire protocol, version 1.
 * docs/protocol.md is the prose specification of these values; keep the two in step.
 * Pure data: imports nothing.
 */

/** "DST1" in ASCII, big-endian: the first 4 bytes of every frame. */
export const DST_MAGIC = 0x44535431;
/** Highest (and only) protocol version this build speaks. */
export const DST_VERSION = 1;

/**
 * Fixed header layout (all integers big-endian):
 *
 *   off size field
 *   0   4    magic          DST_MAGIC
 *   4   1    version        DST_VERSION (HELLO: highest version the client speaks)
 *   5   1    opcode         Op.*; replies are request opcode | REPLY_BIT
 *   6   2    flags          Flag.*
 *   8   8    txid           transaction id, chosen by the requester, echoed in the reply
 *   16  8    offset         byte offset into the export (0 when unused)
 *   24  4    length         bytes the operation covers (READ: bytes wanted)
 *   28  4    payloadLength  bytes of payload following the header
 *   32  4    status         errno-style result in replies (0 = success); 0 in requests
 *   36  4    reserved       must be zero (a receiver rejects non-zero)
 *   40  16   authTag        unused: sent as zero, not checked (sealed records cover whole frames)
 *   56       payload
 */
export const HEADER_SIZE = 56;
export const HEADER = {
  magic: 0,
  version: 4,
  opcode: 5,
  flags: 6,
  txid: 8,
  offset: 16,
  length: 24,
  payloadLength: 28,
  status: 32,
  reserved: 36,
  authTag: 40,
} as const;

export const REPLY_BIT = 0x80;

export const Op = {
  HELLO: 0x01,
  /** Reply to HELLO (anonymous) or to AUTH (authenticated; inside the first sealed record). */
  WELCOME: 0x01 | REPLY_BIT,
  /** Client's proof of the pre-shared key (docs/security.md §3). */
  AUTH: 0x02,
  /** Server's reply to an authenticating HELLO: its nonce, choices and proof. */
  CHALLENGE: 0x02 | REPLY_BIT,
  READ: 0x10,
  WRITE: 0x11,
  FLUSH: 0x12,
  TRIM: 0x13,
  WRITE_ZEROES: 0x14,
  /**
   * Fetch records of the export's replication log from a position (docs/protocol.md §11):
   * offset = the first seq wanted, length = most record bytes wanted, payload = the position
   * and the applied report (FETCH_REQUEST_SIZE bytes). Needs Perm.REPLICA.
   */
  FETCH: 0x15,
  /**
   * Initial sync of a replica (docs/protocol.md §12): BEGIN (the primary keeps its log from a
   * sync point and names it) or COPY (allocated data of a disk range, holes skipped). Needs
   * Perm.REPLICA; reads only.
   */
  SYNC: 0x16,
  PING: 0x20,
  /** Reply to PING. */
  PONG: 0x20 | REPLY_BIT,
  /**
   * Export → client notice, unsolicited, txid 0: the export's size is now `offset` bytes
   * (an online resize). Sent only to clients that asked for Feature.RESIZE_NOTICE in HELLO.
   */
  SIZE_NOTICE: 0x21 | REPLY_BIT,
} as const;

export const Flag = {
  /** WRITE / WRITE_ZEROES / TRIM: durable on the export's disk before the reply. */
  FUA: 0x0001,
  /** WRITE_ZEROES: keep the range allocated (do not punch a hole). */
  NO_HOLE: 0x0002,
  /**
   * WRITE request / READ reply: the payload is the data followed by an end-to-end digest of
   * it (the algorithm negotiated in the handshake, Attr.CHECKSUM), computed on the sender's
   * own copy and verified by the receiver before the data is used (docs/security.md §6).
   */
  DIGEST: 0x0004,
  /**
   * FETCH request: the secondary accepts a zstd-compressed reply; FETCH reply: the records
   * after the prefix are one zstd frame (docs/protocol.md §11.1). Sent only on a connection
   * whose WELCOME granted Feature.FETCH_ZSTD, so an older export never sees it.
   */
  ZSTD: 0x0008,
  /**
   * FETCH request: "the records after the answer to the FETCH from this position" — the
   * request's position fields are those of an earlier FETCH of the same secondary (its
   * predecessor, possibly still being answered), and the export answers from where that
   * answer ended, so a secondary can keep a second FETCH in flight before it knows where the
   * first one ends (docs/protocol.md §11.2). Sent only on a connection whose WELCOME granted
   * Feature.FETCH_FOLLOWS.
   */
  FOLLOWS: 0x0010,
} as const;
export const FLAGS_KNOWN = Flag.FUA | Flag.NO_HOLE | Flag.DIGEST | Flag.ZSTD | Flag.FOLLOWS;
/** Digest sizes a DIGEST payload may end with (xxh3: 8; sha256, blake2b256: 32). */
export const DIGEST_SIZES: readonly number[] = [8, 32];
export const DIGEST_MAX = 32;

/** Largest payload any frame may carry before the handshake settles max_payload. */
export const HANDSHAKE_PAYLOAD_MAX = 64 * 1024;
/** Default and upper bound for the negotiated max payload (32 MiB, as NBD clients expect). */
export const PAYLOAD_MAX_DEFAULT = 32 * 1024 * 1024;

/**
 * Handshake attributes: type-length-value records in HELLO and WELCOME payloads.
 * Record layout: u16 type, u16 length, `length` bytes of value; records are packed back to
 * back. A receiver ignores unknown types unless the type has ATTR_CRITICAL set, in which
 * case it refuses the handshake ("unsupported critical attribute N"). This is how later
 * versions add parameters without breaking older peers.
 */
export const ATTR_CRITICAL = 0x8000;
export const Attr = {
  /** HELLO: utf-8 export name (1..255 bytes). */
  EXPORT_NAME: 1,
  /** HELLO: utf-8 free-form client description for logs ("dstd 0.1.0 copy"). */
  CLIENT_NAME: 2,
  /** WELCOME: u64 export size in bytes. */
  SIZE: 3,
  /** WELCOME: u32 minimum block size (requests should be aligned to it). */
  BLOCK_MIN: 4,
  /** WELCOME: u32 preferred block size. */
  BLOCK_PREFERRED: 5,
  /** HELLO and WELCOME: u32 max payload per frame; the smaller of the two wins. */
  MAX_PAYLOAD: 6,
  /** WELCOME: u8 permission bits Perm.*. */
  PERMISSIONS: 7,
  /** HELLO (wanted) and WELCOME (granted): u32 feature bits Feature.*. */
  FEATURES: 8,
  /** HELLO: 16-byte session id to resume; WELCOME: the session id in force. */
  SESSION_ID: 9,
  /** WELCOME: u64 export epoch; changes whenever the export process restarts. */
  EPOCH: 10,
  /** WELCOME (refusal): utf-8 human-readable reason. */
  MESSAGE: 11,
  /** WELCOME: u32 most requests the export accepts in flight on one connection. */
  MAX_INFLIGHT: 12,
  /** HELLO: u64 lowest txid the client still holds in flight (the export may forget older ids). */
  TXID_FLOOR: 13,
  /** HELLO: utf-8 identity whose pre-shared key the client holds (security.md §3). */
  IDENTITY: 14,
  /** HELLO: 8-byte public key id, keyId(psk), picks the key during a rotation overlap. */
  KEY_ID: 15,
  /** HELLO and CHALLENGE: 32-byte fresh random nonce of the sender. */
  NONCE: 16,
  /** HELLO and CHALLENGE: 32-byte X25519 ephemeral public key (forward secrecy). */
  EPHEMERAL: 17,
  /** HELLO: utf-8 comma-separated suites the client accepts, in preference order. */
  SUITES: 18,
  /** CHALLENGE: utf-8 name of the chosen suite. */
  SUITE: 19,
  /** CHALLENGE (server proof) and AUTH (client proof): 32-byte HMAC over the transcript. */
  PROOF: 20,
  /** HELLO: utf-8 comma-separated data checksums the client accepts, in preference order. */
  CHECKSUMS: 21,
  /** WELCOME: utf-8 name of the chosen data checksum ("none" or absent: no digests). */
  CHECKSUM: 22,
  /**
   * Anonymous sessions (loopback / Unix only): WELCOME carries a fresh 32-byte resumption
   * token; a HELLO resuming the session must carry the latest one (docs/protocol.md §6.5).
   */
  RESUME_TOKEN: 23,
  /**
   * Authenticated sessions: AUTH carries HMAC(resume key of the session, "resume" ‖ transcript)
   * when HELLO names a session to resume, proving it holds that session's secret (§6.5).
   */
  RESUME_PROOF: 24,
  /**
   * WELCOME: u32 most txids a client may use beyond its txid floor (the bound of the export's
   * exactly-once table per session); a client keeps nextTxid − floor below it.
   */
  MAX_TXID_SPAN: 25,
  /**
   * HELLO: u64 the client's number for this connection, higher for every connection it opens;
   * the export refuses a resume that is not newer than the connection it last admitted for the
   * session, so a late handshake of an abandoned connection cannot take over (§6.5).
   */
  CONNECTION_SEQ: 26,
} as const;

/** REPLICA: the client may FETCH the replication log (an allow rule of access "replica"). */
export const Perm = { READ: 0x01, WRITE: 0x02, REPLICA: 0x04 } as const;

/** FETCH request payload: segment, offset in it, applied seq, prev chain, prev Lamport, prev generation (u64 each). */
export const FETCH_REQUEST_SIZE = 48;
/** A successful FETCH reply's payload starts with: next seq, next segment, next offset, primary's durable seq, generation, durable bytes after next (u64 each). */
export const FETCH_REPLY_PREFIX = 48;
/**
 * SYNC request payload: kind (SyncKind), keepFrom (BEGIN: keep the log after this seq, whose
 * chain, Lamport stamp and generation follow; 0 = the primary's own sync point) (u64 each).
 */
export const SYNC_REQUEST_SIZE = 40;
/** SYNC BEGIN reply: the sync point (seq, chain, Lamport, generation), disk size, durable seq (u64 each). */
export const SYNC_BEGIN_REPLY_SIZE = 48;
/** SYNC COPY reply prefix: end of the range covered, the primary's durable seq after reading, run count (u64 each). */
export const SYNC_COPY_PREFIX = 24;
/** One SYNC COPY run: offset, length (u64 each). */
export const SYNC_RUN_SIZE = 16;
/** Most runs one SYNC COPY reply lists. */
export const SYNC_MAX_RUNS = 4096;
export const SyncKind = { BEGIN: 1, COPY: 2 } as const;
/** A compressed FETCH reply (Flag.ZSTD) has, after the prefix, the u64 byte count of the records once decompressed, then one zstd frame. */
export const FETCH_ZSTD_LENGTH_SIZE = 8;

export const Feature = {
  FLUSH: 0x0001,
  FUA: 0x0002,
  TRIM: 0x0004,
  WRITE_ZEROES: 0x0008,
  /** The export keeps per-session state: resent requests apply once (issue: reliability). */
  SESSIONS: 0x0010,
  /**
   * WELCOME only: a FLUSH (or FUA) on any connection of this export covers writes
   * acknowledged on every other connection (NBD's NBD_FLAG_CAN_MULTI_CONN), so a client may
   * spread its requests over several connections (docs/protocol.md §6.5 "Multiple connections").
   */
  MULTI_CONN: 0x0020,
  /** HELLO and WELCOME: the client understands SIZE_NOTICE frames (an online resize). */
  RESIZE_NOTICE: 0x0040,
  /**
   * HELLO: the client may ask for compressed FETCH replies; WELCOME: the export understands
   * Flag.ZSTD on FETCH (docs/protocol.md §11.1). An export that does not grant it gets plain FETCHes.
   */
  FETCH_ZSTD: 0x0080,
  /** HELLO: the client may send Flag.FOLLOWS on FETCH; WELCOME: the export answers it (docs/protocol.md §11.2). */
  FETCH_FOLLOWS: 0x0100,
} as const;

/**
 * Smallest max payload a peer may offer or grant: one 4 KiB page, so every block device can
 * move at least one page per request. Below it the handshake is malformed.
 */
export const PAYLOAD_MAX_MIN = 4096;
/** Size of the SESSION_ID attribute value. */
export const SESSION_ID_SIZE = 16;
/** Size of RESUME_TOKEN and RESUME_PROOF values. */
export const RESUME_SECRET_SIZE = 32;
/** Longest EXPORT_NAME and CLIENT_NAME value in bytes. */
export const NAME_MAX = 255;
/** Longest MESSAGE a refusal carries; longer messages are cut at a utf-8 boundary. */
export const MESSAGE_MAX = 1024;

/** "WRITE", "WELCOME", "WRITE reply" (0x91), "opcode 0x33" for unknown values. */
export function opcodeName(opcode: number): string {
  for (const [name, value] of Object.entries(Op)) if (value === opcode) return name;
  if (opcode & REPLY_BIT) {
    for (const [name, value] of Object.entries(Op)) if (value === (opcode & ~REPLY_BIT)) return `${name} reply`;
  }
  return `opcode 0x${opcode.toString(16).padStart(2, "0")}`;
}
