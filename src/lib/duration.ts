/**
 * @module lib/duration — parse and format durations written by users ("500ms", "2s", "1h30m").
 * Pure string work: no I/O, no clock, never throws on input; a bad duration gives back a
 * reason string. The unit is always required (except for "0"): a bare "5" in a config could
 * mean seconds or milliseconds, and guessing wrong by 1000× is not a friendly failure.
 *
 * Grammar: one or more TERMs with no separators, TERM = DIGITS[.DIGITS]UNIT, UNIT one of
 * ms, s, m, h (lower case, as in Go's time.ParseDuration). Results are whole milliseconds
 * ≤ Number.MAX_SAFE_INTEGER; "1.5s" is 1500, "0.5ms" is rejected (not a whole millisecond).
 */
import { quoteInput } from "./size.ts";

const UNIT_MS: Readonly<Record<string, bigint>> = {
  ms: 1n,
  s: 1000n,
  m: 60_000n,
  h: 3_600_000n,
};

const TEXT_MAX = 64;
const TERM = /([0-9]+)(?:\.([0-9]+))?([a-zA-Zµ]*)/y;
const MAX_MS = BigInt(Number.MAX_SAFE_INTEGER);
const EXAMPLE = `use e.g. "500ms", "2s", "5m" or "1h30m"`;

/** Parse a duration. Returns milliseconds, or a reason string naming the problem. */
export function parseDuration(text: string): number | string {
  const trimmed = text.trim();
  if (trimmed === "") return `empty duration; ${EXAMPLE}`;
  if (trimmed.length > TEXT_MAX) return `${quoteInput(trimmed)} is too long to be a duration`;
  if (trimmed === "0") return 0;
  let totalScaled = 0n;
  // Sum terms as fractions over a common scale so "1.5s" and "0.25h" stay exact.
  let position = 0;
  const scale = 10n ** 20n;
  while (position < trimmed.length) {
    TERM.lastIndex = position;
    const match = TERM.exec(trimmed);
    if (match === null || match[0] === "") {
      return `${quoteInput(trimmed)} is not a duration; ${EXAMPLE}`;
    }
    const [, whole = "", fraction = "", unit = ""] = match;
    if (unit === "") {
      const last = TERM.lastIndex === trimmed.length;
      return `${quoteInput(trimmed)} ${last ? "needs a unit" : "is not a duration"}; ${EXAMPLE}`;
    }
    const unitMs = UNIT_MS[unit];
    if (unitMs === undefined) {
      return `${quoteInput(trimmed)} has unknown unit ${quoteInput(unit)}; use ms, s, m or h`;
    }
    if (fraction.length > 20) return `${quoteInput(trimmed)} has too many decimals`;
    const fractionScaled = fraction === "" ? 0n : BigInt(fraction.padEnd(20, "0"));
    totalScaled += (BigInt(whole) * scale + fractionScaled) * unitMs;
    position = TERM.lastIndex;
  }
  if (totalScaled % scale !== 0n) {
    return `${quoteInput(trimmed)} is not a whole number of milliseconds`;
  }
  const ms = totalScaled / scale;
  if (ms > MAX_MS) return `${quoteInput(trimmed)} is too long a duration`;
  return Number(ms);
}

/**
 * Format milliseconds for people and for config round trips: "0s", "500ms", "1.5s", "2s",
 * "1m30s", "1h", "1h0.25s". Every output parses back to the same value with parseDuration.
 */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) return `${ms}ms`;
  if (ms === 0) return "0s";
  if (ms < 1000) return `${ms}ms`;
  const hours = Math.floor(ms / 3_600_000);
  const minutes = Math.floor((ms % 3_600_000) / 60_000);
  const millis = ms % 60_000;
  let out = "";
  if (hours > 0) out += `${hours}h`;
  if (minutes > 0) out += `${minutes}m`;
  if (millis > 0) {
    const seconds = Math.floor(millis / 1000);
    const rest = millis % 1000;
    const decimals = String(rest).padStart(3, "0").replace(/0+$/, "");
    out += rest === 0 ? `${seconds}s` : `${seconds}.${decimals}s`;
  }
  return out;
}
