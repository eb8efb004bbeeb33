/**
 * @module test/crypto/suites — suite registry, list parsing, negotiation, and the rule that
 * "none" only runs on Unix sockets and loopback.
 */
import { describe, expect, test } from "bun:test";
import {
  DEFAULT_SUITES,
  SUITES,
  SUITE_NAMES,
  chooseSuite,
  isLoopbackAddress,
  parseSuiteList,
  suiteAllowedOnTransport,
  suiteTransportRefusal,
} from "../../src/crypto/suites.ts";

test("registry: all names present; only none unauthenticated; defaults exclude none", () => {
  for (const name of SUITE_NAMES) expect(SUITES[name].name).toBe(name);
  expect(SUITE_NAMES.filter((n) => !SUITES[n].authenticates)).toEqual(["none"]);
  expect(SUITE_NAMES.filter((n) => !SUITES[n].encrypts)).toEqual(["integrity", "none"]);
  expect(DEFAULT_SUITES).not.toContain("none");
  expect(DEFAULT_SUITES[0]).toBe("aes-256-gcm");
});

describe("parseSuiteList", () => {
  test("keeps the order and trims spaces", () => {
    expect(parseSuiteList(" integrity , aes-256-gcm")).toEqual(["integrity", "aes-256-gcm"]);
  });
  test.each([
    ["", "the suite list is empty"],
    ["aes-256-gcm,,none", "empty entry in the suite list"],
    [
      "aes-128-gcm",
      'unknown suite "aes-128-gcm" (known: aes-256-gcm, chacha20-poly1305, ' +
        "xchacha20-poly1305, integrity, none)",
    ],
    ["none,none", "suite none is listed twice"],
  ])("refuses %p", (text, reason) => {
    expect(parseSuiteList(text)).toBe(reason);
  });
});

describe("chooseSuite", () => {
  test("first client preference the server allows", () => {
    expect(
      chooseSuite(["chacha20-poly1305", "aes-256-gcm"], ["aes-256-gcm", "chacha20-poly1305"]),
    ).toBe("chacha20-poly1305");
    expect(chooseSuite(["none", "aes-256-gcm"], ["aes-256-gcm"])).toBe("aes-256-gcm");
  });
  test("null without a common suite; unknown names are skipped, not matched", () => {
    expect(chooseSuite(["none"], ["aes-256-gcm"])).toBeNull();
    expect(chooseSuite([], ["aes-256-gcm"])).toBeNull();
    expect(chooseSuite(["rot13", "integrity"], ["rot13", "integrity"])).toBe("integrity");
    expect(chooseSuite(["rot13"], ["rot13"])).toBeNull();
  });
});

describe("suite none and the transport", () => {
  test.each([
    "127.0.0.1",
    "127.1.2.3",
    "127.255.255.255",
    "::1",
    "0:0:0:0:0:0:0:1",
    "[::1]",
    "::ffff:127.0.0.1",
  ])("%s is loopback", (address) => {
    expect(isLoopbackAddress(address)).toBe(true);
    expect(suiteAllowedOnTransport("none", { transport: "tcp", address })).toBe(true);
  });
  test.each([
    "128.0.0.1",
    "126.255.255.255",
    "10.0.0.1",
    "::2",
    "::",
    "0.0.0.0",
    "fe80::1",
    "::ffff:10.0.0.1",
    "localhost",
    "",
    "127.0.0.1:80",
    "garbage",
  ])("%p is not loopback: none refused on tcp", (address) => {
    expect(isLoopbackAddress(address)).toBe(false);
    expect(suiteTransportRefusal("none", { transport: "tcp", address })).toContain(
      "only allowed on Unix sockets and loopback",
    );
  });
  test("none is allowed on unix; other suites everywhere", () => {
    expect(suiteAllowedOnTransport("none", { transport: "unix", address: "" })).toBe(true);
    for (const suite of SUITE_NAMES.filter((s) => s !== "none")) {
      expect(suiteAllowedOnTransport(suite, { transport: "tcp", address: "203.0.113.9" })).toBe(
        true,
      );
    }
  });
});
