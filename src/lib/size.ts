/**
 * @module lib/size — parse and format byte sizes written by users ("10GiB", "512MiB", "4096").
 * Pure string work: no I/O, never throws on input; a bad size gives back a reason string.
 *
 * Units are binary only (1 KiB = 1024 B). "K", "M", "G", "T", "P" are accepted as short
 * forms of KiB..PiB, because that is how dd, qemu-img and truncate read them. Decimal units
 * ("10GB", "10 gb") are REJECTED with a suggestion: a disk of "10GB" is 10^10 bytes to a disk
 * vendor and 10 GiB to most tools, and a size that silently differs by 7% is worse than an
 * error. Results are whole bytes ≤ Number.MAX_SAFE_INTEGER (2^53 - 1), so every later offset
 * computation stays exact in a JavaScript number.
 */

const UNIT_SHIFT: Readonly<Record<string, number>> = {
  "": 0,
  b: 0,
  k: 10,
  kib: 10,
  m: 20,
  mib: 20,
  g: 30,
  gib: 30,
  t: 40,
  tib: 40,
  p: 50,
  pib: 50,
};

/** Decimal units we refuse, mapped to the binary unit to suggest instead. */
const DECIMAL_TO_BINARY: Readonly<Record<string, string>> = {
  kb: "KiB",
  mb: "MiB",
  gb: "GiB",
  tb: "TiB",
  pb: "PiB",
};

const TEXT_MAX = 64;
const SIZE_SYNTAX = /^([0-9]+)(?:\.([0-9]+))?[ ]?([A-Za-z]*)$/;
const MAX_BYTES = BigInt(Number.MAX_SAFE_INTEGER);

/** Quote user text for a reason message, cut short so a huge input cannot flood a log. */
export function quoteInput(text: string, max = 40): string {
  const cut = text.length > max ? `${text.slice(0, max)}…` : text;
  return JSON.stringify(cut);
}

/**
 * Parse a size. Returns the number of bytes, or a reason string naming the problem.
 * Accepted: "4096", "4096B", "64KiB", "64K", "512MiB", "1.5GiB" (must be whole bytes),
 * "10 GiB" (one space allowed, so formatSize output parses back). Units are case-insensitive.
 */
export function parseSize(text: string): number | string {
  const trimmed = text.trim();
  if (trimmed === "") return "empty size; use e.g. \"10GiB\", \"512MiB\" or a byte count";
  if (trimmed.length > TEXT_MAX) return `${quoteInput(trimmed)} is too long to be a size`;
  const match = SIZE_SYNTAX.exec(trimmed);
  if (match === null) {
    return `${quoteInput(trimmed)} is not a size; use e.g. "10GiB", "512MiB" or a byte count`;
  }
  const [, whole = "", fraction = "", unitText = ""] = match;
  const unit = unitText.toLowerCase();
  const suggestion = DECIMAL_TO_BINARY[unit];
  if (suggestion !== undefined) {
    const number = fraction === "" ? whole : `${whole}.${fraction}`;
    return (
      `${quoteInput(trimmed)} is not a size; use e.g. "${number}${suggestion}" ` +
      `(decimal units like ${unitText} are ambiguous; dstd uses binary units, 1 KiB = 1024 B)`
    );
  }
  const shift = UNIT_SHIFT[unit];
  if (shift === undefined) {
    return (
      `${quoteInput(trimmed)} is not a size: unknown unit ${quoteInput(unitText)}; ` +
      `use B, KiB, MiB, GiB, TiB or PiB`
    );
  }
  // Exact arithmetic: (whole.fraction) * 2^shift must be an integer number of bytes.
  const scale = 10n ** BigInt(fraction.length);
  const fractionValue = BigInt(fraction === "" ? "0" : fraction);
  const numerator = (BigInt(whole) * scale + fractionValue) << BigInt(shift);
  if (numerator % scale !== 0n) return `${quoteInput(trimmed)} is not a whole number of bytes`;
  const bytes = numerator / scale;
  if (bytes > MAX_BYTES) return `${quoteInput(trimmed)} is too large (the limit is 2^53 - 1 bytes)`;
  return Number(bytes);
}

const FORMAT_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"] as const;

/**
 * Format bytes for people: the largest binary unit the value reaches, at most two decimals,
 * trailing zeros dropped ("10 GiB", "1.5 GiB", "512 MiB", "4 KiB", "1000 B"). Exact values
 * (any whole multiple of the unit) parse back to the same number with parseSize; values
 * that need rounding are for display only.
 */
export function formatSize(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 1024) return `${bytes} B`;
  let unitIndex = 0;
  let value = bytes;
  while (value >= 1024 && unitIndex < FORMAT_UNITS.length - 1) {
    value /= 1024;
    unitIndex += 1;
  }
  const rounded = Math.round(value * 100) / 100;
  return `${rounded} ${FORMAT_UNITS[unitIndex]}`;
}
