/**
 * @module wire/dst/attrs — the type-length-value records of HELLO and WELCOME payloads
 * (docs/protocol.md §6.2) and typed readers/writers for their values. Pure; decoding never
 * throws on peer input, it returns a reason naming the attribute.
 */
import { assert } from "../../lib/assert.ts";
import { readU16, readU32, readU64, writeU16, writeU32, writeU64 } from "./bytes.ts";
import { ATTR_CRITICAL, Attr, NAME_MAX } from "./constants.ts";

export type AttrRecord = [type: number, value: Uint8Array];

const knownAttrs = new Set<number>(Object.values(Attr));
const attrNames = new Map<number, string>(Object.entries(Attr).map(([k, v]) => [v, k]));

/** "EXPORT_NAME", or "attribute 4660" for types this version does not know. */
export function attrName(type: number): string {
  return attrNames.get(type) ?? `attribute ${type}`;
}

/** Records packed back to back: u16 type, u16 length, value. */
export function encodeAttrs(records: AttrRecord[]): Uint8Array {
  let size = 0;
  for (const [type, value] of records) {
    assert((type & 0xffff) === type && value.length <= 0xffff, `attribute ${type} does not fit a TLV record`);
    size += 4 + value.length;
  }
  const out = new Uint8Array(size);
  writeAttrs(out, 0, records);
  return out;
}

/** Writes the records at `at` (the caller sized `out`); returns the end offset. */
export function writeAttrs(out: Uint8Array, at: number, records: AttrRecord[]): number {
  for (const [type, value] of records) {
    writeU16(out, at, type);
    writeU16(out, at + 2, value.length);
    out.set(value, at + 4);
    at += 4 + value.length;
  }
  return at;
}

/**
 * Known attributes by type. Unknown types are skipped, unless they have ATTR_CRITICAL set:
 * then the peer needs something this version cannot give, and the handshake must fail.
 */
export function decodeAttrs(payload: Uint8Array): Map<number, Uint8Array> | string {
  const attrs = new Map<number, Uint8Array>();
  let at = 0;
  while (at < payload.length) {
    if (payload.length - at < 4) return `truncated attribute header at byte ${at}`;
    const type = readU16(payload, at);
    const length = readU16(payload, at + 2);
    const end = at + 4 + length;
    if (end > payload.length) {
      return `${attrName(type)} length ${length} overruns the payload (${payload.length - at - 4} bytes left)`;
    }
    if (knownAttrs.has(type)) {
      if (attrs.has(type)) return `duplicate ${attrName(type)}`;
      attrs.set(type, payload.subarray(at + 4, end));
    } else if ((type & ATTR_CRITICAL) !== 0) {
      return `unsupported critical attribute 0x${type.toString(16)}`;
    }
    at = end;
  }
  return attrs;
}

// ---- typed attribute values ----

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export function u8(v: number): Uint8Array {
  return Uint8Array.of(v);
}
export function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  writeU32(b, 0, v);
  return b;
}
export function u64(v: number): Uint8Array {
  assert(Number.isSafeInteger(v) && v >= 0, `u64 attribute value ${v} is not a safe non-negative integer`);
  const b = new Uint8Array(8);
  writeU64(b, 0, v);
  return b;
}

/** Reads a fixed-size integer attribute; a string names a wrong size or an unsafe u64. */
export function intAttr(attrs: Map<number, Uint8Array>, type: number, size: 1 | 4 | 8, fallback?: number): number | string {
  const v = attrs.get(type);
  if (v === undefined) return fallback ?? `missing ${attrName(type)}`;
  if (v.length !== size) return `${attrName(type)} is ${v.length} bytes, expected ${size}`;
  if (size === 1) return v[0]!;
  if (size === 4) return readU32(v, 0);
  const n = readU64(v, 0);
  return n <= Number.MAX_SAFE_INTEGER ? n : `${attrName(type)} exceeds 2^53`;
}

/** A utf-8 name attribute of at most NAME_MAX bytes; "" when absent and optional. */
export function decodeName(attrs: Map<number, Uint8Array>, type: number, required: boolean): { value: string } | string {
  const v = attrs.get(type);
  if (v === undefined) return required ? `missing ${attrName(type)}` : { value: "" };
  if (required && v.length === 0) return `empty ${attrName(type)}`;
  if (v.length > NAME_MAX) return `${attrName(type)} too long (${v.length} bytes, max ${NAME_MAX})`;
  try {
    return { value: strictUtf8.decode(v) };
  } catch {
    return `${attrName(type)} is not valid utf-8`;
  }
}
