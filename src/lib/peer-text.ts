/**
 * @module lib/peer-text — a peer-supplied string as it may appear in a log line: quoted,
 * control characters and quotes escaped, cut to a bound. A newline in an export name or an
 * identity must not forge a log line, and a 64 KiB name must not write a 64 KiB line
 * (issue "Close the holes" item 6).
 */

/** Longest peer string a log line shows, in characters (the rest is replaced by "…"). */
export const PEER_TEXT_MAX = 128;

/** `'name'` with \n, \x1b, quotes… escaped and at most `max` characters shown. */
export function safeText(text: string, max = PEER_TEXT_MAX): string {
  const cut = text.length > max ? text.slice(0, max) : text;
  let out = "";
  for (const ch of cut) {
    const code = ch.codePointAt(0)!;
    if (ch === "'" || ch === "\\") out += `\\${ch}`;
    else if (code < 0x20 || code === 0x7f || (code >= 0x80 && code < 0xa0) || code === 0x2028 || code === 0x2029) {
      out += `\\x${code.toString(16).padStart(2, "0")}`;
    } else out += ch;
  }
  return `'${out}${text.length > max ? "…" : ""}'`;
}
