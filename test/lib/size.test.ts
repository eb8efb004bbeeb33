/**
 * Size parsing: table-driven good inputs with their exact byte counts, bad inputs with their
 * exact reasons, and a round trip of formatSize → parseSize over every exact unit multiple.
 */
import { describe, expect, test } from "bun:test";
import { formatSize, parseSize } from "../../src/lib/size.ts";

const KiB = 1024;
const MiB = KiB * 1024;
const GiB = MiB * 1024;
const TiB = GiB * 1024;

describe("parseSize accepts binary units and byte counts", () => {
  const cases: [string, number][] = [
    ["4096", 4096],
    ["0", 0],
    ["4096B", 4096],
    ["4096 B", 4096],
    ["64KiB", 64 * KiB],
    ["64K", 64 * KiB],
    ["64k", 64 * KiB],
    ["512MiB", 512 * MiB],
    ["512M", 512 * MiB],
    ["10GiB", 10 * GiB],
    ["10 GiB", 10 * GiB],
    ["10gib", 10 * GiB],
    ["10G", 10 * GiB],
    ["1TiB", TiB],
    ["1T", TiB],
    ["1.5GiB", 1.5 * GiB],
    ["0.5KiB", 512],
    ["  2MiB  ", 2 * MiB],
    ["7PiB", 7 * 1024 * TiB],
    ["9007199254740991", Number.MAX_SAFE_INTEGER],
  ];
  for (const [text, bytes] of cases) {
    test(JSON.stringify(text), () => expect(parseSize(text)).toBe(bytes));
  }
});

describe("parseSize rejects with a reason", () => {
  const decimal = (text: string, suggestion: string, unit: string) =>
    `"${text}" is not a size; use e.g. "${suggestion}" (decimal units like ${unit} are ` +
    "ambiguous; dstd uses binary units, 1 KiB = 1024 B)";
  const cases: [string, string][] = [
    ["", 'empty size; use e.g. "10GiB", "512MiB" or a byte count'],
    ["10 GB", decimal("10 GB", "10GiB", "GB")],
    ["10GB", decimal("10GB", "10GiB", "GB")],
    ["10gb", decimal("10gb", "10GiB", "gb")],
    ["1.5tb", decimal("1.5tb", "1.5TiB", "tb")],
    ["10XB", '"10XB" is not a size: unknown unit "XB"; use B, KiB, MiB, GiB, TiB or PiB'],
    ["-5", '"-5" is not a size; use e.g. "10GiB", "512MiB" or a byte count'],
    ["GiB", '"GiB" is not a size; use e.g. "10GiB", "512MiB" or a byte count'],
    ["1.3KiB", '"1.3KiB" is not a whole number of bytes'],
    ["0.5", '"0.5" is not a whole number of bytes'],
    ["1e9", '"1e9" is not a size; use e.g. "10GiB", "512MiB" or a byte count'],
    ["10  GiB", '"10  GiB" is not a size; use e.g. "10GiB", "512MiB" or a byte count'],
    ["8PiB", '"8PiB" is too large (the limit is 2^53 - 1 bytes)'],
    ["9007199254740992", '"9007199254740992" is too large (the limit is 2^53 - 1 bytes)'],
    ["1".repeat(65), `"${"1".repeat(40)}…" is too long to be a size`],
  ];
  for (const [text, reason] of cases) {
    test(JSON.stringify(text.slice(0, 20)), () => expect(parseSize(text)).toBe(reason));
  }
});

describe("formatSize", () => {
  test("picks the largest unit and trims decimals", () => {
    expect(formatSize(10 * GiB)).toBe("10 GiB");
    expect(formatSize(512 * MiB)).toBe("512 MiB");
    expect(formatSize(4096)).toBe("4 KiB");
    expect(formatSize(1000)).toBe("1000 B");
    expect(formatSize(0)).toBe("0 B");
    expect(formatSize(1.5 * GiB)).toBe("1.5 GiB");
    expect(formatSize(GiB + 1)).toBe("1 GiB");
    expect(formatSize(1024 * 1024 * TiB)).toBe("1024 PiB");
  });

  test("exact multiples round-trip through parseSize", () => {
    for (const unit of [1, KiB, MiB, GiB, TiB]) {
      for (const count of [1, 3, 100, 1023, 1536]) {
        const bytes = count * unit;
        expect(parseSize(formatSize(bytes))).toBe(bytes);
      }
    }
  });
});
