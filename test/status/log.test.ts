/**
 * lib/log: the line formats a service's logs are read in (text with timestamps, JSON, the
 * journal's priority prefixes), one line per call with no blank lines, control characters
 * escaped so a peer-supplied string cannot forge a line, bound methods, levels and children.
 */
import { describe, expect, test } from "bun:test";
import { createLog, defaultLogFormat, escapeControls, formatLine } from "../../src/lib/log.ts";

const at = new Date("2025-01-31T12:00:00.123Z");

function capture(level: "error" | "warn" | "info" | "debug" | "trace", format: "text" | "json", journal = false) {
  const lines: string[] = [];
  const log = createLog(level, "export", { format, journal, write: (l) => lines.push(l), now: () => at });
  return { log, lines };
}

describe("text", () => {
  test("timestamp, level, component, message, fields", () => {
    const { log, lines } = capture("info", "text");
    log.info("listening for DST on 127.0.0.1:10810");
    log.warn("refused", { peer: "10.0.0.1:5000", reason: "no allow rule matches" });
    expect(lines).toEqual([
      "2025-01-31T12:00:00.123Z INFO  [export] listening for DST on 127.0.0.1:10810",
      '2025-01-31T12:00:00.123Z WARN  [export] refused peer=10.0.0.1:5000 reason="no allow rule matches"',
    ]);
  });

  test("under the journal: <N> priority instead of a timestamp", () => {
    const { log, lines } = capture("debug", "text", true);
    log.error("e");
    log.warn("w");
    log.info("i");
    log.debug("d");
    expect(lines).toEqual(["<3>[export] e", "<4>[export] w", "<6>[export] i", "<7>[export] d"]);
  });

  test("control characters cannot forge a line or a terminal sequence", () => {
    const { log, lines } = capture("info", "text");
    log.info("export 'x\n2025-01-01T00:00:00.000Z ERROR forged\u001b[31m'");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("x\\n2025-01-01T00:00:00.000Z ERROR forged\\x1b[31m");
    expect(escapeControls("a\tb\u0085c")).toBe("a\\tb\\x85c");
  });

  test("no blank lines: exactly one line per call whatever the level", () => {
    const written: string[] = [];
    const log = createLog("debug", undefined, { format: "text", journal: false, write: (l) => written.push(l) });
    log.warn("careful");
    log.error("bad");
    expect(written).toHaveLength(2);
    for (const line of written) expect(line.trim()).not.toBe("");
  });
});

describe("json", () => {
  test("one object per line with reserved keys first; fields cannot overwrite them", () => {
    const { log, lines } = capture("info", "json");
    log.info("connection closed", { peer: "127.0.0.1:1", bytesIn: 10, msg: "spoofed", level: "error" });
    expect(lines).toHaveLength(1);
    const record = JSON.parse(lines[0]!);
    expect(record).toEqual({ time: "2025-01-31T12:00:00.123Z", level: "info", component: "export", msg: "connection closed", peer: "127.0.0.1:1", bytesIn: 10 });
    expect(Object.keys(record).slice(0, 4)).toEqual(["time", "level", "component", "msg"]);
  });

  test("formatLine json escapes newlines inside the string", () => {
    const line = formatLine("warn", undefined, "a\nb", undefined, "json", false, at);
    expect(line.includes("\n")).toBe(false);
    expect(JSON.parse(line).msg).toBe("a\nb");
  });
});

describe("levels, children, binding", () => {
  test("threshold and setLevel apply to children too", () => {
    const { log, lines } = capture("warn", "text");
    const child = log.child("disk");
    child.info("hidden");
    child.warn("shown");
    log.setLevel("debug");
    child.debug("now shown");
    expect(lines).toEqual(["2025-01-31T12:00:00.123Z WARN  [export/disk] shown", "2025-01-31T12:00:00.123Z DEBUG [export/disk] now shown"]);
  });

  test("methods work when passed around unbound", () => {
    const { log, lines } = capture("info", "text");
    const pick = true ? log.info : log.warn;
    pick("detached call");
    expect(lines).toHaveLength(1);
  });

  test("$DSTD_LOG_FORMAT picks the default format; anything else is text", () => {
    expect(defaultLogFormat({ DSTD_LOG_FORMAT: "json" })).toBe("json");
    expect(defaultLogFormat({ DSTD_LOG_FORMAT: "yaml" })).toBe("text");
    expect(defaultLogFormat({})).toBe("text");
  });
});
