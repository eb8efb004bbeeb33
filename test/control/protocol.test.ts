/**
 * control/protocol: the line reader (split at every byte, bounded, CRLF tolerated) and the
 * request parser (every malformed request gets a code and a message, never an exception).
 */
import { describe, expect, test } from "bun:test";
import { LineReader, MAX_REQUEST_BYTES, parseRequest } from "../../src/control/protocol.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

describe("LineReader", () => {
  test("the same lines whatever the chunking", () => {
    const input = bytes('{"a":1}\n{"b":"é"}\r\n\n{"c":3}\n');
    for (let cut = 0; cut <= input.length; cut++) {
      const reader = new LineReader(100);
      const first = reader.push(input.subarray(0, cut));
      const second = reader.push(input.subarray(cut));
      expect([...first.lines, ...second.lines]).toEqual(['{"a":1}', '{"b":"é"}', "", '{"c":3}']);
      expect(reader.pending).toBe(0);
    }
  });

  test("one byte at a time", () => {
    const reader = new LineReader(100);
    const lines: string[] = [];
    for (const b of bytes("abc\ndef\n")) lines.push(...reader.push(new Uint8Array([b])).lines);
    expect(lines).toEqual(["abc", "def"]);
  });

  test("a line past the bound is an overflow, and no more than the bound is held", () => {
    const reader = new LineReader(8);
    expect(reader.push(bytes("12345678")).overflow).toBe(false);
    expect(reader.pending).toBe(8);
    expect(reader.push(bytes("9")).overflow).toBe(true);
    const other = new LineReader(8);
    expect(other.push(bytes("ok\n123456789\n")).overflow).toBe(true);
  });
});

describe("parseRequest", () => {
  test("a valid request", () => {
    expect(parseRequest('{"v":1,"id":7,"method":"status"}')).toEqual({ v: 1, id: 7, method: "status", params: {} });
    expect(parseRequest('{"v":1,"id":"a","method":"events","params":{"follow":true}}')).toEqual({ v: 1, id: "a", method: "events", params: { follow: true } });
  });

  test.each([
    ["not JSON", "{", "E_REQUEST"],
    ["not an object", "[1]", "E_REQUEST"],
    ["a bad id", '{"v":1,"id":{},"method":"status"}', "E_REQUEST"],
    ["another version", '{"v":2,"id":1,"method":"status"}', "E_VERSION"],
    ["no version", '{"id":1,"method":"status"}', "E_VERSION"],
    ["unknown method", '{"v":1,"id":1,"method":"shutdown"}', "E_METHOD"],
    ["params not an object", '{"v":1,"id":1,"method":"status","params":[1]}', "E_REQUEST"],
  ] as const)("%s → %s", (_what, line, code) => {
    const result = parseRequest(line);
    expect("error" in result && result.error.code).toBe(code);
  });

  test("the id of a request with a known id is echoed in its error", () => {
    const result = parseRequest('{"v":9,"id":42,"method":"status"}');
    expect("error" in result && result.id).toBe(42);
  });

  test("a huge method name is not echoed whole", () => {
    const result = parseRequest(JSON.stringify({ v: 1, id: 1, method: "x".repeat(MAX_REQUEST_BYTES / 2) }));
    expect("error" in result && result.error.message.length).toBeLessThan(200);
  });
});
