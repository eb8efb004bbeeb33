/**
 * Allow rules: IP/CIDR literal parsing (good and bad with exact reasons), rule syntax
 * including the "::1:ro" ambiguity, and matchAllow semantics — most permissive rule wins,
 * identity rules never match anonymous clients, IPv4-mapped peers behave as IPv4, unix
 * peers only match "unix", and everything unparseable fails closed.
 */
import { describe, expect, test } from "bun:test";
import {
  type AllowRule,
  IDENTITY_RULE,
  formatCidr,
  formatIp,
  matchAllow,
  matchReplica,
  parseAllowRule,
  parseCidr,
  parseIp,
} from "../../src/lib/acl.ts";

function rule(text: string): AllowRule {
  const parsed = parseAllowRule(text);
  if (typeof parsed === "string") throw new Error(parsed);
  return parsed;
}
const rules = (...texts: string[]) => texts.map(rule);
const tcp = (address: string) => ({ transport: "tcp" as const, address });
const unix = { transport: "unix" as const, address: "" };

describe("parseIp / formatIp", () => {
  const canonical: [string, string][] = [
    ["1.2.3.4", "1.2.3.4"],
    ["0.0.0.0", "0.0.0.0"],
    ["::", "::"],
    ["::1", "::1"],
    ["FD00::0001", "fd00::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"],
    ["1:0:1:1:1:1:1:1", "1:0:1:1:1:1:1:1"],
    ["::ffff:1.2.3.4", "::ffff:1.2.3.4"],
    ["::ffff:0102:0304", "::ffff:1.2.3.4"],
    ["64:ff9b::192.0.2.33", "64:ff9b::c000:221"],
  ];
  for (const [text, expected] of canonical) {
    test(text, () => {
      const ip = parseIp(text);
      if (typeof ip === "string") throw new Error(ip);
      expect(formatIp(ip)).toBe(expected);
    });
  }

  const bad: [string, string][] = [
    ["", "empty IP address"],
    ["1.2.3", '"1.2.3" is not an IPv4 address'],
    ["1.2.3.256", '"1.2.3.256" is not an IPv4 address'],
    ["010.0.0.1", '"010.0.0.1" is not an IPv4 address'],
    ["1.2.3.4.5", '"1.2.3.4.5" is not an IPv4 address'],
    ["1:2:3:4:5:6:7", '"1:2:3:4:5:6:7" is not an IPv6 address'],
    ["1:2:3:4:5:6:7:8:9", '"1:2:3:4:5:6:7:8:9" is not an IPv6 address'],
    ["1::2::3", '"1::2::3" is not an IPv6 address'],
    ["1:2:3:4:5:6:7::8", '"1:2:3:4:5:6:7::8" is not an IPv6 address'],
    ["12345::", '"12345::" is not an IPv6 address'],
    ["::1.2.3.4:5", '"::1.2.3.4:5" is not an IPv6 address'],
    ["fe80::1%eth0", '"fe80::1%eth0": IPv6 zone ids (%interface) are not supported'],
    [":", '":" is not an IPv6 address'],
  ];
  for (const [text, reason] of bad) test(`bad ${text}`, () => expect(parseIp(text)).toBe(reason));
});

describe("parseCidr", () => {
  const good: [string, string][] = [
    ["10.0.0.0/8", "10.0.0.0/8"],
    ["192.168.1.5", "192.168.1.5/32"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["::1", "::1/128"],
    ["fd00::/8", "fd00::/8"],
    ["[fd00::]/8", "fd00::/8"],
    ["[::1]", "::1/128"],
    ["::/0", "::/0"],
    ["::ffff:0:0/96", "::ffff:0.0.0.0/96"],
    ["10.1.2.128/25", "10.1.2.128/25"],
  ];
  for (const [text, expected] of good) {
    test(text, () => {
      const cidr = parseCidr(text);
      if (typeof cidr === "string") throw new Error(cidr);
      expect(formatCidr(cidr)).toBe(expected);
    });
  }
  const bad: [string, string][] = [
    ["10.0.0.5/8", '"10.0.0.5/8" has host bits set; did you mean "10.0.0.0/8"?'],
    ["fd00::1/8", '"fd00::1/8" has host bits set; did you mean "fd00::/8"?'],
    ["10.0.0.0/33", '"10.0.0.0/33": prefix length must be 0..32'],
    ["::/129", '"::/129": prefix length must be 0..128'],
    ["10.0.0.0/", '"10.0.0.0/": prefix length must be 0..32'],
    ["10.0.0.0/08", '"10.0.0.0/08": prefix length must be 0..32'],
    ["10.0.0.0/8/8", '"10.0.0.0/8/8": prefix length must be 0..32'],
    ["host/8", '"host" is not an IPv4 address'],
  ];
  for (const [text, reason] of bad) test(`bad ${text}`, () => expect(parseCidr(text)).toBe(reason));
});

describe("parseAllowRule", () => {
  const notRule = (text: string, why: string) =>
    `"${text}" is not an allow rule: ${why}; expected [IDENTITY@]CIDR|unix[:ro|:rw|:replica]`;
  const badAccess = (text: string, access: string) =>
    `"${text}" is not an allow rule: unknown access "${access}"; use ":ro", ":rw" or ":replica"`;
  test("forms", () => {
    const check = (text: string, identity: string | null, network: string, access: string) => {
      const parsed = rule(text);
      expect(parsed.identity).toBe(identity);
      expect(parsed.network === "unix" ? "unix" : formatCidr(parsed.network)).toBe(network);
      expect(parsed.access).toBe(access as "ro" | "rw");
      expect(parsed.source).toBe(text.trim());
    };
    check("10.0.0.0/8", null, "10.0.0.0/8", "rw");
    check("10.0.0.0/8:ro", null, "10.0.0.0/8", "ro");
    check("10.0.0.0/8:rw", null, "10.0.0.0/8", "rw");
    check("192.168.1.5", null, "192.168.1.5/32", "rw");
    check("alice@10.0.0.0/8:ro", "alice", "10.0.0.0/8", "ro");
    check("::1:ro", null, "::1/128", "ro");
    check("::1", null, "::1/128", "rw");
    check("fd00::/8:ro", null, "fd00::/8", "ro");
    check("[fd00::1]:ro", null, "fd00::1/128", "ro");
    check("unix", null, "unix", "rw");
    check("unix:ro", null, "unix", "ro");
    check("bob.smith_2@unix:rw", "bob.smith_2", "unix", "rw");
    check(" 0.0.0.0/0 ", null, "0.0.0.0/0", "rw");
  });

  const bad: [string, string][] = [
    ["", 'empty allow rule; use e.g. "10.0.0.0/8:rw" or "unix"'],
    ["10.0.0.0/8:wr", badAccess("10.0.0.0/8:wr", "wr")],
    ["unix:write", badAccess("unix:write", "write")],
    ["::1:RO", badAccess("::1:RO", "RO")],
    ["@10.0.0.0/8", `"@10.0.0.0/8": identity "" must be ${IDENTITY_RULE}`],
    ["al ice@unix", `"al ice@unix": identity "al ice" must be ${IDENTITY_RULE}`],
    ["a@b@unix", notRule("a@b@unix", '"b@unix" is not an IPv4 address')],
    ["everyone", notRule("everyone", '"everyone" is not an IPv4 address')],
    [
      "10.0.0.5/8:ro",
      notRule("10.0.0.5/8:ro", '"10.0.0.5/8" has host bits set; did you mean "10.0.0.0/8"?'),
    ],
    [
      "fd00::rw",
      notRule(
        "fd00::rw",
        '"fd00:" is not an IPv6 address (write IPv6 as "fd00::/8:ro" or "[fd00::1]:ro")',
      ),
    ],
  ];
  for (const [text, reason] of bad) {
    test(`bad ${JSON.stringify(text)}`, () => expect(parseAllowRule(text)).toBe(reason));
  }
  test("identity rule text", () => {
    expect(IDENTITY_RULE).toBe("1 to 64 characters from A-Z a-z 0-9 . _ -");
  });
});

describe("replica rules", () => {
  test("parse: IDENTITY@CIDR:replica and CIDR:replica (::1:replica is the network ::1)", () => {
    const [a, b] = rules("site-b@10.0.0.0/8:replica", "::1:replica");
    expect(a!.access).toBe("replica");
    expect(a!.identity).toBe("site-b");
    expect(b!.access).toBe("replica");
    expect(b!.identity).toBeNull();
  });

  test("a replica rule grants no data access; rights are the union of the matching rules", () => {
    const only = rules("site-b@10.0.0.0/8:replica");
    expect(matchAllow(only, tcp("10.0.0.2"), "site-b")).toBeNull();
    expect(matchReplica(only, tcp("10.0.0.2"), "site-b")).toBe(true);
    expect(matchReplica(only, tcp("10.0.0.2"), "other")).toBe(false);
    expect(matchReplica(only, tcp("10.0.0.2"), null)).toBe(false);
    expect(matchReplica(only, tcp("11.0.0.2"), "site-b")).toBe(false);
    const both = rules("site-b@10.0.0.0/8:replica", "10.0.0.0/8:ro");
    expect(matchAllow(both, tcp("10.0.0.2"), "site-b")).toBe("ro");
    expect(matchReplica(both, tcp("10.0.0.2"), "site-b")).toBe(true);
    expect(matchReplica(rules("10.0.0.0/8:rw"), tcp("10.0.0.2"), "site-b")).toBe(false);
  });
});

describe("matchAllow", () => {
  test("no rules: nobody gets in", () => {
    expect(matchAllow([], tcp("127.0.0.1"), null)).toBeNull();
    expect(matchAllow([], unix, "alice")).toBeNull();
  });

  test("network match and access", () => {
    const list = rules("10.0.0.0/8:ro", "10.1.0.0/16:rw");
    expect(matchAllow(list, tcp("10.2.3.4"), null)).toBe("ro");
    expect(matchAllow(list, tcp("10.1.3.4"), null)).toBe("rw");
    expect(matchAllow(list, tcp("11.0.0.1"), null)).toBeNull();
  });

  test("most permissive wins regardless of order", () => {
    expect(matchAllow(rules("10.1.0.0/16:rw", "10.0.0.0/8:ro"), tcp("10.1.0.1"), null)).toBe("rw");
    expect(matchAllow(rules("0.0.0.0/0:ro", "10.0.0.1:rw"), tcp("10.0.0.1"), null)).toBe("rw");
  });

  test("identity rules need that identity; anonymous rules admit everyone", () => {
    const list = rules("alice@10.0.0.0/8:rw", "10.0.0.0/8:ro");
    expect(matchAllow(list, tcp("10.0.0.1"), "alice")).toBe("rw");
    expect(matchAllow(list, tcp("10.0.0.1"), "bob")).toBe("ro");
    expect(matchAllow(list, tcp("10.0.0.1"), null)).toBe("ro");
    const only = rules("alice@0.0.0.0/0:rw");
    expect(matchAllow(only, tcp("10.0.0.1"), null)).toBeNull();
    expect(matchAllow(only, tcp("10.0.0.1"), "Alice")).toBeNull();
    expect(matchAllow(only, tcp("10.0.0.1"), "alice")).toBe("rw");
  });

  test("IPv4-mapped peers match IPv4 rules and only mapped IPv6 rules", () => {
    expect(matchAllow(rules("127.0.0.0/8"), tcp("::ffff:127.0.0.1"), null)).toBe("rw");
    expect(matchAllow(rules("::/0"), tcp("::ffff:127.0.0.1"), null)).toBeNull();
    expect(matchAllow(rules("::/0"), tcp("127.0.0.1"), null)).toBeNull();
    expect(matchAllow(rules("::ffff:0:0/96:ro"), tcp("127.0.0.1"), null)).toBe("ro");
    expect(matchAllow(rules("::ffff:10.0.0.0/104:ro"), tcp("10.9.9.9"), null)).toBe("ro");
    expect(matchAllow(rules("::ffff:10.0.0.0/104:ro"), tcp("11.9.9.9"), null)).toBeNull();
    expect(matchAllow(rules("::ffff:10.0.0.0/104"), tcp("::ffff:10.1.1.1"), null)).toBe("rw");
  });

  test("IPv6 peers match IPv6 rules only", () => {
    expect(matchAllow(rules("::1"), tcp("::1"), null)).toBe("rw");
    expect(matchAllow(rules("fd00::/8:ro"), tcp("fd12::1"), null)).toBe("ro");
    expect(matchAllow(rules("0.0.0.0/0"), tcp("::1"), null)).toBeNull();
    expect(matchAllow(rules("fe80::/10"), tcp("fe80::1%eth0"), null)).toBe("rw");
    expect(matchAllow(rules("::1"), tcp("[::1]"), null)).toBe("rw");
  });

  test("unix peers match only unix rules, and unix rules match no tcp peer", () => {
    expect(matchAllow(rules("0.0.0.0/0", "::/0"), unix, null)).toBeNull();
    expect(matchAllow(rules("unix:ro"), unix, null)).toBe("ro");
    expect(matchAllow(rules("unix"), tcp("127.0.0.1"), null)).toBeNull();
    expect(matchAllow(rules("alice@unix"), unix, null)).toBeNull();
    expect(matchAllow(rules("alice@unix"), unix, "alice")).toBe("rw");
  });

  test("unparseable peer addresses fail closed", () => {
    const everyone = rules("0.0.0.0/0", "::/0");
    for (const address of ["", "localhost", "1.2.3.4:80", "999.1.1.1", "garbage::"]) {
      expect(matchAllow(everyone, tcp(address), null)).toBeNull();
    }
  });
});
