/**
 * @module kernel/netlink — pure codec for netlink framing as generic netlink uses it:
 * nlmsghdr (16 bytes), genlmsghdr (4), nlattr TLVs (4 + payload padded to 4), nested
 * attributes, and NLMSG_ERROR acks with extended-ack text. Layouts from
 * include/uapi/linux/netlink.h and genetlink.h.
 *
 * Must not: do I/O, or throw on anything that came from the kernel. Decoders return a reason
 * string ("truncated …", "bad length …", "overrun …") for malformed input; the builder is fed
 * only by dstd itself, so a value that does not fit its field is a programmer error (assert).
 *
 * Byte order: netlink integers are in HOST byte order (NLA_F_NET_BYTEORDER is not used by
 * the families dstd talks to). dstd only runs on little-endian Linux (x86-64, arm64), so this
 * codec writes and reads little-endian and asserts at load time that the host agrees.
 */
import { assert } from "../lib/assert.ts";

assert(
  new Uint8Array(new Uint16Array([1]).buffer)[0] === 1,
  "netlink codec assumes a little-endian host (netlink integers are in host byte order)",
);

// ---- constants (include/uapi/linux/netlink.h, genetlink.h) -------------------------------

export const NLMSG_HDRLEN = 16;
export const GENL_HDRLEN = 4;
export const NLA_HDRLEN = 4;

/** nlmsghdr.nlmsg_flags */
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP = 0x300;
/** Flags on an NLMSG_ERROR message: the original payload was left out / TLVs follow. */
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;

/** Control message types below NLMSG_MIN_TYPE. */
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;
export const NLMSG_MIN_TYPE = 0x10;

/** nlattr.nla_type high bits; the type proper is the low 14 bits. */
export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
export const NLA_TYPE_MASK = 0x3fff;

/** Extended-ack TLVs after an NLMSG_ERROR (enum nlmsgerr_attrs). */
export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;

const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;
const U64_MAX = (1n << 64n) - 1n;

/** Round up to the 4-byte netlink alignment; plain arithmetic so values above 2^31 stay exact. */
export function align4(n: number): number {
  return n + ((4 - (n % 4)) % 4);
}

// ---- builder -------------------------------------------------------------------------------

/**
 * Writes one netlink message into a growing buffer. Usage:
 * `new NetlinkBuilder(type, flags, seq).genlHeader(cmd, version).u32(1, x).beginNested(7)…endNested().finish()`.
 */
export class NetlinkBuilder {
  private bytes: Uint8Array;
  private view: DataView;
  private length = 0;
  /** Offsets of the nlattr headers of nests still open. */
  private readonly nests: number[] = [];

  constructor(type: number, flags: number, seq: number, pid = 0, capacity = 128) {
    this.bytes = new Uint8Array(Math.max(capacity, 64));
    this.view = new DataView(this.bytes.buffer);
    assertUint(type, U16_MAX, "nlmsg_type");
    assertUint(flags, U16_MAX, "nlmsg_flags");
    assertUint(seq, U32_MAX, "nlmsg_seq");
    assertUint(pid, U32_MAX, "nlmsg_pid");
    const at = this.reserve(NLMSG_HDRLEN);
    this.view.setUint32(at, 0, true); // nlmsg_len, patched by finish()
    this.view.setUint16(at + 4, type, true);
    this.view.setUint16(at + 6, flags, true);
    this.view.setUint32(at + 8, seq, true);
    this.view.setUint32(at + 12, pid, true);
  }

  /** struct genlmsghdr { u8 cmd; u8 version; u16 reserved; } */
  genlHeader(cmd: number, version: number): this {
    assertUint(cmd, 0xff, "genl cmd");
    assertUint(version, 0xff, "genl version");
    const at = this.reserve(GENL_HDRLEN);
    this.bytes[at] = cmd;
    this.bytes[at + 1] = version;
    return this;
  }

  u8(type: number, value: number): this {
    assertUint(value, 0xff, `attribute ${type} (u8)`);
    const at = this.attribute(type, 1); // first: it may replace this.bytes
    this.bytes[at] = value;
    return this;
  }

  u16(type: number, value: number): this {
    assertUint(value, U16_MAX, `attribute ${type} (u16)`);
    const at = this.attribute(type, 2);
    this.view.setUint16(at, value, true);
    return this;
  }

  u32(type: number, value: number): this {
    assertUint(value, U32_MAX, `attribute ${type} (u32)`);
    const at = this.attribute(type, 4);
    this.view.setUint32(at, value, true);
    return this;
  }

  u64(type: number, value: number | bigint): this {
    const big = typeof value === "bigint" ? value : BigInt(value);
    assert(
      (typeof value === "bigint" || Number.isSafeInteger(value)) && big >= 0n && big <= U64_MAX,
      `attribute ${type} (u64): ${value} does not fit`,
    );
    const at = this.attribute(type, 8);
    this.view.setBigUint64(at, big, true);
    return this;
  }

  /** NUL-terminated string (NLA_NUL_STRING / NLA_STRING both accept the terminator). */
  string(type: number, value: string): this {
    const encoded = new TextEncoder().encode(value);
    assert(!encoded.includes(0), `attribute ${type} (string) must not contain NUL`);
    const at = this.attribute(type, encoded.length + 1);
    this.bytes.set(encoded, at);
    this.bytes[at + encoded.length] = 0;
    return this;
  }

  raw(type: number, value: Uint8Array): this {
    const at = this.attribute(type, value.length);
    this.bytes.set(value, at);
    return this;
  }

  /** Open a nest; `nestedFlag` sets NLA_F_NESTED (optional for the families dstd uses). */
  beginNested(type: number, nestedFlag = false): this {
    const at = this.attribute(type, 0);
    if (nestedFlag) this.view.setUint16(at - 2, type | NLA_F_NESTED, true);
    this.nests.push(at - NLA_HDRLEN);
    return this;
  }

  endNested(): this {
    const start = this.nests.pop();
    assert(start !== undefined, "endNested without beginNested");
    const length = this.length - start;
    assert(length <= U16_MAX, `nested attribute of ${length} bytes exceeds nla_len`);
    this.view.setUint16(start, length, true);
    return this;
  }

  /** Patch nlmsg_len and return the message (a view of exactly its bytes). */
  finish(): Uint8Array {
    assert(this.nests.length === 0, "finish() with an open nested attribute");
    this.view.setUint32(0, this.length, true);
    return this.bytes.subarray(0, this.length);
  }

  /** Write an nlattr header for `payloadLength` bytes; returns the payload offset. */
  private attribute(type: number, payloadLength: number): number {
    assertUint(type, NLA_TYPE_MASK, "nla_type");
    const nlaLength = NLA_HDRLEN + payloadLength;
    assert(nlaLength <= U16_MAX, `attribute ${type} of ${payloadLength} bytes exceeds nla_len`);
    const at = this.reserve(align4(nlaLength));
    this.view.setUint16(at, nlaLength, true);
    this.view.setUint16(at + 2, type, true);
    return at + NLA_HDRLEN;
  }

  /** Grow (doubling) so `n` more bytes fit; returns where they start. New bytes are zero. */
  private reserve(n: number): number {
    const at = this.length;
    if (at + n > this.bytes.length) {
      let capacity = this.bytes.length * 2;
      while (capacity < at + n) capacity *= 2;
      const grown = new Uint8Array(capacity);
      grown.set(this.bytes.subarray(0, at));
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    this.length = at + n;
    this.bytes.fill(0, at, at + n); // padding must be zero
    return at;
  }
}

function assertUint(value: number, max: number, what: string): void {
  assert(Number.isInteger(value) && value >= 0 && value <= max, `${what}: ${value} is out of range 0..${max}`);
}

// ---- decoder -------------------------------------------------------------------------------

export interface NetlinkMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** Everything after the 16-byte header, up to nlmsg_len (a view, not a copy). */
  payload: Uint8Array;
}

export interface ParsedMessages {
  messages: NetlinkMessage[];
  /** Why parsing stopped early; null when the whole datagram was consumed. */
  error: string | null;
}

/**
 * Walk the messages of one received datagram (the kernel packs several into one recv, e.g.
 * a reply followed by its ack, or a whole dump). Stops at the first malformed header and says
 * why; the messages before it are still returned.
 */
export function parseMessages(datagram: Uint8Array): ParsedMessages {
  const messages: NetlinkMessage[] = [];
  const view = viewOf(datagram);
  let at = 0;
  while (at < datagram.length) {
    const left = datagram.length - at;
    if (left < NLMSG_HDRLEN) {
      return { messages, error: `truncated: ${left} bytes left at offset ${at}, a netlink header needs ${NLMSG_HDRLEN}` };
    }
    const length = view.getUint32(at, true);
    if (length < NLMSG_HDRLEN) {
      return { messages, error: `bad length: nlmsg_len ${length} at offset ${at} is shorter than the ${NLMSG_HDRLEN}-byte header` };
    }
    if (length > left) {
      return { messages, error: `overrun: nlmsg_len ${length} at offset ${at} runs past the end of the datagram (${left} bytes left)` };
    }
    messages.push({
      type: view.getUint16(at + 4, true),
      flags: view.getUint16(at + 6, true),
      seq: view.getUint32(at + 8, true),
      pid: view.getUint32(at + 12, true),
      payload: datagram.subarray(at + NLMSG_HDRLEN, at + length),
    });
    at += Math.min(align4(length), left); // the last message may lack its padding
  }
  return { messages, error: null };
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

export interface NetlinkAck {
  /** Positive errno; 0 means a plain acknowledgement. */
  errno: number;
  /** Header of the request this answers (nlmsgerr.msg), when present. */
  requestType: number;
  requestSeq: number;
  /** NLMSGERR_ATTR_MSG text when the kernel gave one (NETLINK_EXT_ACK). */
  extackMessage: string | null;
}

/** Decode an NLMSG_ERROR payload: `int error; struct nlmsghdr msg; [msg payload]; [TLVs]`. */
export function parseAck(message: NetlinkMessage): Parsed<NetlinkAck> {
  const p = message.payload;
  if (p.length < 4 + NLMSG_HDRLEN) {
    return { ok: false, reason: `truncated: NLMSG_ERROR payload is ${p.length} bytes, needs ${4 + NLMSG_HDRLEN}` };
  }
  const view = viewOf(p);
  const error = view.getInt32(0, true);
  if (error > 0) return { ok: false, reason: `bad error code: NLMSG_ERROR carries ${error}, expected 0 or a negative errno` };
  const ack: NetlinkAck = {
    errno: error === 0 ? 0 : -error,
    requestType: view.getUint16(8, true),
    requestSeq: view.getUint32(12, true),
    extackMessage: null,
  };
  if ((message.flags & NLM_F_ACK_TLVS) === 0) return { ok: true, value: ack };
  // Without NLM_F_CAPPED the original request follows in full (its own nlmsg_len says how long).
  const originalLength = (message.flags & NLM_F_CAPPED) !== 0 ? NLMSG_HDRLEN : view.getUint32(4, true);
  const tlvStart = 4 + align4(originalLength);
  if (originalLength < NLMSG_HDRLEN || tlvStart > p.length) return { ok: true, value: ack }; // ignore broken TLVs
  const tlvs = parseAttributes(p.subarray(tlvStart));
  const text = findAttribute(tlvs.attributes, NLMSGERR_ATTR_MSG);
  if (text !== undefined) ack.extackMessage = attributeString(text) ?? null;
  return { ok: true, value: ack };
}

export interface GenlMessage {
  cmd: number;
  version: number;
  /** The attribute area after the genl header (hdrsize is 0 for nlctrl and nbd). */
  attributes: Uint8Array;
}

export function parseGenl(message: NetlinkMessage): Parsed<GenlMessage> {
  const p = message.payload;
  if (p.length < GENL_HDRLEN) {
    return { ok: false, reason: `truncated: generic netlink payload is ${p.length} bytes, the genl header needs ${GENL_HDRLEN}` };
  }
  return { ok: true, value: { cmd: p[0]!, version: p[1]!, attributes: p.subarray(GENL_HDRLEN) } };
}

export interface Attribute {
  /** nla_type with NLA_F_NESTED / NLA_F_NET_BYTEORDER masked off (as the kernel's nla_type()). */
  type: number;
  nested: boolean;
  payload: Uint8Array;
}

export interface ParsedAttributes {
  attributes: Attribute[];
  error: string | null;
}

/** Walk a TLV area; stops at the first malformed attribute and says why. */
export function parseAttributes(area: Uint8Array): ParsedAttributes {
  const attributes: Attribute[] = [];
  const view = viewOf(area);
  let at = 0;
  while (at < area.length) {
    const left = area.length - at;
    if (left < NLA_HDRLEN) {
      return { attributes, error: `truncated: ${left} bytes left at offset ${at}, an attribute header needs ${NLA_HDRLEN}` };
    }
    const length = view.getUint16(at, true);
    const rawType = view.getUint16(at + 2, true);
    if (length < NLA_HDRLEN) {
      return { attributes, error: `bad length: nla_len ${length} of attribute ${rawType & NLA_TYPE_MASK} at offset ${at} is shorter than its header` };
    }
    if (length > left) {
      return { attributes, error: `overrun: attribute ${rawType & NLA_TYPE_MASK} at offset ${at} claims ${length} bytes, ${left} left` };
    }
    attributes.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      payload: area.subarray(at + NLA_HDRLEN, at + length),
    });
    at += Math.min(align4(length), left);
  }
  return { attributes, error: null };
}

export function findAttribute(attributes: readonly Attribute[], type: number): Attribute | undefined {
  return attributes.find((a) => a.type === type);
}

// Typed readers: undefined when the payload has the wrong size for the type (never throw).

export function attributeU8(a: Attribute): number | undefined {
  return a.payload.length >= 1 ? a.payload[0] : undefined;
}

export function attributeU16(a: Attribute): number | undefined {
  return a.payload.length >= 2 ? viewOf(a.payload).getUint16(0, true) : undefined;
}

export function attributeU32(a: Attribute): number | undefined {
  return a.payload.length >= 4 ? viewOf(a.payload).getUint32(0, true) : undefined;
}

/** u64 as a number when exact (≤ 2^53-1), otherwise undefined. */
export function attributeU64(a: Attribute): number | undefined {
  if (a.payload.length < 8) return undefined;
  const value = viewOf(a.payload).getBigUint64(0, true);
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : undefined;
}

/** String up to the first NUL (or the end); undefined if it is not valid UTF-8. */
export function attributeString(a: Attribute): string | undefined {
  const end = a.payload.indexOf(0);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(end < 0 ? a.payload : a.payload.subarray(0, end));
  } catch {
    return undefined;
  }
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Lowercase hex with a space every 4 bytes, as golden tests and debug logs show messages. */
export function hexDump(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) {
    if (i > 0 && i % 4 === 0) out += " ";
    out += bytes[i]!.toString(16).padStart(2, "0");
  }
  return out;
}
