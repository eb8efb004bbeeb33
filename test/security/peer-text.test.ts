/**
 * lib/peer-text.ts and lib/log-limiter.ts: what a peer chose never reaches a log line as
 * control characters or at its own length, and a peer cannot make the log grow faster than
 * one line per (source, kind) and window plus a summary, nor the limiter's table past its bound.
 */
import { describe, expect, test } from "bun:test";
import { LogLimiter, OTHER_SOURCES } from "../../src/lib/log-limiter.ts";
import { escapePeer, PEER_TEXT_MAX, quotePeer } from "../../src/lib/peer-text.ts";

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/;

describe("escapePeer / quotePeer", () => {
  test("ordinary names pass unchanged, quoted", () => {
    expect(quotePeer("disk")).toBe("'disk'");
    expect(quotePeer("Ünïcødé-диск-💾")).toBe("'Ünïcødé-диск-💾'");
    expect(quotePeer("")).toBe("''");
  });

  test("every code unit that could forge a line or drive a terminal is escaped", () => {
    expect(quotePeer("a\nb\rc\td")).toBe("'a\\nb\\rc\\td'");
    expect(quotePeer("\u001b[31mred")).toBe("'\\x1b[31mred'");
    expect(quotePeer("x\u0000y\u007fz\u0085")).toBe("'x\\x00y\\x7fz\\x85'");
    expect(quotePeer("l\u2028p\u2029")).toBe("'l\\u2028p\\u2029'");
    expect(quotePeer("\u202egnp.exe")).toBe("'\\u202egnp.exe'");
    expect(quotePeer("it's")).toBe("'it\\x27s'");
    expect(quotePeer("back\\nslash")).toBe("'back\\\\nslash'"); // a literal \n cannot pass for an escaped one
    expect(quotePeer("\ud800lone")).toBe("'\\ud800lone'");
    for (let code = 0; code < 0x10000; code++) {
      expect(escapePeer(String.fromCharCode(code), 4)).not.toMatch(UNSAFE);
    }
  });

  test("long text is cut at the limit and says how long it was; the work is bounded by the limit", () => {
    const long = "n".repeat(1_000_000);
    const out = quotePeer(long);
    expect(out).toBe(`'${"n".repeat(PEER_TEXT_MAX)}…(1000000 chars in all)'`);
    expect(escapePeer("abcdef", 3)).toBe("abc…(6 chars in all)");
    // Escaping cannot blow the bound up past 6 output characters per input character.
    expect(escapePeer("\n".repeat(10_000), 10).length).toBeLessThan(10 * 6 + 30);
  });

  test("bytes are decoded as UTF-8, invalid sequences replaced, length counted in bytes", () => {
    expect(quotePeer(new TextEncoder().encode("disk\n"))).toBe("'disk\\n'");
    expect(quotePeer(new Uint8Array([0x64, 0xff, 0x0a]))).toBe("'d\ufffd\\n'");
    expect(escapePeer(new Uint8Array(65536).fill(0x41), 8)).toBe("AAAAAAAA…(65536 bytes in all)");
  });
});

describe("LogLimiter", () => {
  test("first line of a window in full, the rest as one summary when the window ends", () => {
    const lines: string[] = [];
    const limiter = new LogLimiter((l) => lines.push(l), { windowMs: 60_000 });
    expect(limiter.note("10.0.0.1", "refused #1", 0)).toBe(true);
    for (let i = 2; i <= 1000; i++) expect(limiter.note("10.0.0.1", `refused #${i}`, i)).toBe(false);
    expect(limiter.note("10.0.0.2", "other source", 5)).toBe(true);
    expect(limiter.note("10.0.0.1", "other kind", 6, "timeout")).toBe(true);
    expect(lines).toEqual(["refused #1", "other source", "other kind"]);
    limiter.flush(59_999);
    expect(lines).toHaveLength(3);
    limiter.flush(60_006);
    expect(lines.slice(3)).toEqual(["999 more lines like this from 10.0.0.1 in 60 s not logged; the latest: refused #1000"]);
    expect(limiter.tracked).toBe(0);
    expect(limiter.note("10.0.0.1", "again", 70_000)).toBe(true);
  });

  test("a new window after the old one ended summarises the old one first", () => {
    const lines: string[] = [];
    const limiter = new LogLimiter((l) => lines.push(l), { windowMs: 1000 });
    limiter.note("s", "a", 0);
    limiter.note("s", "b", 10);
    limiter.note("s", "c", 1500);
    expect(lines).toEqual(["a", "1 more line like this from s in 1 s not logged; the latest: b", "c"]);
  });

  test("the table is bounded: sources past maxSources share one entry", () => {
    const lines: string[] = [];
    const limiter = new LogLimiter((l) => lines.push(l), { maxSources: 4 });
    for (let i = 0; i < 100_000; i++) limiter.note(`2001:db8::${i.toString(16)}`, `from ${i}`, i / 1000);
    expect(limiter.tracked).toBe(5);
    expect(lines).toHaveLength(5); // 4 sources + the first of the rest
    limiter.flush(1_000_000);
    expect(lines.at(-1)).toContain(`99995 more lines like this from ${OTHER_SOURCES}`);
  });
});
