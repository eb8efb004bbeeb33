/**
 * @module lib/peer-text — the one way to put a string a peer chose (an export name, an
 * identity, a client name, option data, a server's error text) into a log line or a message:
 * control characters escaped, so a newline cannot forge a log line and an escape sequence
 * cannot drive a terminal, and the length capped, so a 64 KiB name costs a few dozen bytes
 * of log (docs/security.md "Resource limits").
 *
 * Escaped: C0 controls, DEL and C1 controls (as \xNN, \n, \r, \t), the Unicode line and
 * paragraph separators, bidirectional overrides and isolates and the zero-width no-break
 * space (as \uNNNN), the backslash itself and, in quotePeer, the quote character; everything
 * else is kept. Pure; never throws; the work done is bounded by `max`, not by the input.
 */

/** Characters of peer text kept by default; the rest is replaced by a count. */
export const PEER_TEXT_MAX = 64;

const utf8 = new TextDecoder("utf-8", { fatal: false });

/** Code units that must not reach a log as themselves. */
function needsEscape(code: number): boolean {
  return (
    code < 0x20 ||
    (code >= 0x7f && code <= 0x9f) ||
    code === 0x5c || // backslash: keeps "\n" in the output unambiguous
    code === 0x2028 ||
    code === 0x2029 ||
    (code >= 0x200e && code <= 0x200f) || // LRM, RLM
    (code >= 0x202a && code <= 0x202e) || // embeddings and overrides
    (code >= 0x2066 && code <= 0x2069) || // isolates
    code === 0xfeff ||
    (code >= 0xd800 && code <= 0xdfff) // surrogates; pairs are kept whole by the caller
  );
}

function escapeCode(code: number): string {
  switch (code) {
    case 0x0a:
      return "\\n";
    case 0x0d:
      return "\\r";
    case 0x09:
      return "\\t";
    case 0x5c:
      return "\\\\";
  }
  if (code <= 0xff) return `\\x${code.toString(16).padStart(2, "0")}`;
  return `\\u${code.toString(16).padStart(4, "0")}`;
}

/**
 * Printable, bounded form of peer text, without quotes. Bytes are decoded as UTF-8 (invalid
 * sequences become U+FFFD). Text longer than `max` characters is cut there and followed by
 * "…(N chars in all)" (or "bytes", for bytes). `quote`: one more code unit to escape.
 */
export function escapePeer(value: string | Uint8Array, max = PEER_TEXT_MAX, quote = -1): string {
  let text: string;
  let cut: boolean;
  if (typeof value === "string") {
    cut = value.length > max;
    text = cut ? value.slice(0, max) : value;
  } else {
    // At most 4 bytes a character: decoding 4*max bytes is enough for max characters.
    text = utf8.decode(value.length > 4 * max ? value.subarray(0, 4 * max) : value);
    cut = value.length > 4 * max || text.length > max;
    if (text.length > max) text = text.slice(0, max);
  }
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        out += text[i]! + text[i + 1]!; // a whole pair: an ordinary non-BMP character
        i++;
        continue;
      }
    }
    out += code === quote || needsEscape(code) ? escapeCode(code) : text[i]!;
  }
  if (cut) out += `…(${value.length} ${typeof value === "string" ? "chars" : "bytes"} in all)`;
  return out;
}

/** escapePeer in single quotes (a quote inside is escaped): `'disk'`, `'a\nb'`. */
export function quotePeer(value: string | Uint8Array, max = PEER_TEXT_MAX): string {
  return `'${escapePeer(value, max, 0x27)}'`;
}
