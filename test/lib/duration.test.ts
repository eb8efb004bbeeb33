/**
 * Duration parsing: table-driven good inputs with exact milliseconds, bad inputs with exact
 * reasons, and a formatDuration → parseDuration round trip over a spread of values.
 */
import { describe, expect, test } from "bun:test";
import { formatDuration, parseDuration } from "../../src/lib/duration.ts";

describe("parseDuration accepts", () => {
  const cases: [string, number][] = [
    ["0", 0],
    ["0s", 0],
    ["500ms", 500],
    ["2s", 2000],
    ["1.5s", 1500],
    ["0.001s", 1],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["1h30m", 5_400_000],
    ["1m30.5s", 90_500],
    ["0.25h", 900_000],
    [" 10s ", 10_000],
  ];
  for (const [text, ms] of cases) {
    test(JSON.stringify(text), () => expect(parseDuration(text)).toBe(ms));
  }
});

describe("parseDuration rejects with a reason", () => {
  const example = 'use e.g. "500ms", "2s", "5m" or "1h30m"';
  const cases: [string, string][] = [
    ["", `empty duration; ${example}`],
    ["5", `"5" needs a unit; ${example}`],
    ["2 s", `"2 s" is not a duration; ${example}`],
    ["-1s", `"-1s" is not a duration; ${example}`],
    ["s", `"s" is not a duration; ${example}`],
    ["2sec", '"2sec" has unknown unit "sec"; use ms, s, m or h'],
    ["1d", '"1d" has unknown unit "d"; use ms, s, m or h'],
    ["2S", '"2S" has unknown unit "S"; use ms, s, m or h'],
    ["0.5ms", '"0.5ms" is not a whole number of milliseconds'],
    ["3000000000h", '"3000000000h" is too long a duration'],
    ["1.000000000000000000001s", '"1.000000000000000000001s" has too many decimals'],
    ["1s".repeat(40), `"${"1s".repeat(20)}…" is too long to be a duration`],
  ];
  for (const [text, reason] of cases) {
    test(JSON.stringify(text.slice(0, 20)), () => expect(parseDuration(text)).toBe(reason));
  }
});

describe("formatDuration", () => {
  test("readable output", () => {
    expect(formatDuration(0)).toBe("0s");
    expect(formatDuration(500)).toBe("500ms");
    expect(formatDuration(1500)).toBe("1.5s");
    expect(formatDuration(2000)).toBe("2s");
    expect(formatDuration(90_000)).toBe("1m30s");
    expect(formatDuration(3_600_000)).toBe("1h");
    expect(formatDuration(3_600_250)).toBe("1h0.25s");
    expect(formatDuration(120_000)).toBe("2m");
  });

  test("round-trips through parseDuration", () => {
    const values = [1, 999, 1000, 1001, 59_999, 60_000, 61_234, 3_599_999, 86_400_000, 7_654_321];
    for (const ms of values) expect(parseDuration(formatDuration(ms))).toBe(ms);
  });
});
