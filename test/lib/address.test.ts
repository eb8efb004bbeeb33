/**
 * Listen addresses and export URLs: table-driven accepted forms with their exact parsed
 * value, rejected forms with their exact reasons, and format → parse round trips.
 */
import { describe, expect, test } from "bun:test";
import {
  type ExportUrl,
  formatExportUrl,
  formatListenAddress,
  isUrl,
  type ListenAddress,
  parseExportUrl,
  parseListenAddress,
} from "../../src/lib/address.ts";

const tcp = (host: string, port: number): ListenAddress => ({ transport: "tcp", host, port });

describe("parseListenAddress accepts", () => {
  const cases: [string, ListenAddress][] = [
    ["127.0.0.1:10810", tcp("127.0.0.1", 10810)],
    ["127.0.0.1", tcp("127.0.0.1", 7)],
    [":9000", tcp("0.0.0.0", 9000)],
    ["localhost:80", tcp("localhost", 80)],
    ["storage-1.example.com", tcp("storage-1.example.com", 7)],
    ["[::1]:10810", tcp("::1", 10810)],
    ["[::1]", tcp("::1", 7)],
    ["[::]:0", tcp("::", 0)],
    ["::1", tcp("::1", 7)],
    ["fd00::5", tcp("fd00::5", 7)],
    ["0.0.0.0:65535", tcp("0.0.0.0", 65535)],
    ["unix:/run/dstd.sock", { transport: "unix", path: "/run/dstd.sock" }],
    ["unix:relative.sock", { transport: "unix", path: "relative.sock" }],
  ];
  for (const [text, expected] of cases) {
    test(text, () => expect(parseListenAddress(text, 7)).toEqual(expected));
  }
});

describe("parseListenAddress rejects with a reason", () => {
  const usage = "use HOST:PORT, [IPV6]:PORT or unix:PATH";
  const cases: [string, string][] = [
    ["", `empty listen address; ${usage}`],
    ["host:65536", `"host:65536": port "65536" must be a number 0..65535; ${usage}`],
    ["host:", `"host:": port "" must be a number 0..65535; ${usage}`],
    ["host:http", `"host:http": port "http" must be a number 0..65535; ${usage}`],
    ["10.0.0.256:80", `"10.0.0.256:80": "10.0.0.256" is not an IPv4 address; ${usage}`],
    ["bad_host:80", `"bad_host:80": "bad_host" is not a host name or IP address; ${usage}`],
    ["[::1:80", `"[::1:80": missing ']'; ${usage}`],
    ["[::1]80", `"[::1]80": unexpected "80" after ']'; ${usage}`],
    ["[1.2.3.4]:80", `"[1.2.3.4]:80": "1.2.3.4" in brackets is not an IPv6 address; ${usage}`],
    ["::1:10810", `"::1:10810": an IPv6 address with a port must be in brackets; ${usage}`],
    [
      "::1:8080",
      `"::1:8080": ambiguous; write "[::1]:8080" for port 8080 or "[::1:8080]" for the ` +
        `address alone; ${usage}`,
    ],
    ["unix:", `"unix:": empty unix socket path`],
    [
      `unix:/${"a".repeat(107)}`,
      `"unix:/${"a".repeat(34)}…": unix socket path is longer than 107 bytes ` +
        "(the unix socket limit)",
    ],
    ["unix:/a\0b", `"unix:/a\\u0000b": unix socket path contains a NUL byte`],
  ];
  for (const [text, reason] of cases) {
    test(JSON.stringify(text.slice(0, 30)), () => expect(parseListenAddress(text, 7)).toBe(reason));
  }
});

test("formatListenAddress round-trips", () => {
  for (const text of ["127.0.0.1:10810", "[::1]:10810", "unix:/run/dstd.sock", "example.com:1"]) {
    const parsed = parseListenAddress(text, 1);
    expect(typeof parsed).not.toBe("string");
    expect(formatListenAddress(parsed as ListenAddress)).toBe(text);
  }
});

describe("parseExportUrl accepts", () => {
  const tcpUrl = (protocol: "dst" | "nbd", host: string, port: number, exportName: string) =>
    ({ protocol, transport: "tcp", host, port, exportName }) as const;
  const unixUrl = (protocol: "dst" | "nbd", path: string, exportName: string) =>
    ({ protocol, transport: "unix", path, exportName }) as const;
  const cases: [string, ExportUrl][] = [
    ["dst://host/disk", tcpUrl("dst", "host", 10810, "disk")],
    ["dst://host:9000/data", tcpUrl("dst", "host", 9000, "data")],
    ["dst://host", tcpUrl("dst", "host", 10810, "disk")],
    ["dst://host/", tcpUrl("dst", "host", 10810, "disk")],
    ["DST://10.0.0.1/x", tcpUrl("dst", "10.0.0.1", 10810, "x")],
    ["dst://[::1]:10811/disk", tcpUrl("dst", "::1", 10811, "disk")],
    ["dst://[fd00::1]/disk", tcpUrl("dst", "fd00::1", 10810, "disk")],
    ["nbd://host", tcpUrl("nbd", "host", 10809, "")],
    ["nbd://host/", tcpUrl("nbd", "host", 10809, "")],
    ["nbd://host//disk", tcpUrl("nbd", "host", 10809, "/disk")],
    ["nbd://host/hello%20world", tcpUrl("nbd", "host", 10809, "hello world")],
    ["nbd://host:1234/a%2Fb", tcpUrl("nbd", "host", 1234, "a/b")],
    ["dst+unix:///disk?socket=/run/dstd.sock", unixUrl("dst", "/run/dstd.sock", "disk")],
    ["dst+unix:///?socket=/run/d.sock", unixUrl("dst", "/run/d.sock", "disk")],
    ["nbd+unix:///?socket=%2Frun%2Fn.sock", unixUrl("nbd", "/run/n.sock", "")],
    ["nbd+unix:///e?socket=%00abstract", unixUrl("nbd", "\0abstract", "e")],
  ];
  for (const [text, expected] of cases) {
    test(text, () => expect(parseExportUrl(text)).toEqual(expected));
  }
});

describe("parseExportUrl rejects with a reason", () => {
  const usage =
    "use dst://HOST[:PORT]/EXPORT, dst+unix:///EXPORT?socket=PATH, nbd:// or nbd+unix://";
  const cases: [string, string][] = [
    ["http://host/disk", `unknown scheme "http" — ${usage}`],
    ["host:10810", `"host:10810" is not a URL; ${usage}`],
    ["/dev/sdb", `"/dev/sdb" is not a URL; ${usage}`],
    ["nbds://host/x", `TLS (nbds://) is not supported; dst:// is encrypted itself`],
    ["dst+unix:///disk", `missing socket= for dst+unix; write dst+unix:///EXPORT?socket=PATH`],
    ["dst+unix:///disk?socket=", `empty socket path`],
    [
      "nbd+unix://host/disk?socket=/s",
      `nbd+unix:// takes no host; write nbd+unix:///EXPORT?socket=PATH`,
    ],
    ["dst://host/disk?socket=/s", `socket= is only for dst+unix:// URLs`],
    ["dst://host/disk?tls=1", `unknown parameter "tls"; only socket= is understood`],
    ["dst+unix:///d?socket=/a&socket=/b", `socket= given twice`],
    ["dst:///disk", `missing host; write dst://HOST[:PORT]/EXPORT`],
    ["dst://:10810/disk", `missing host before the port`],
    ["dst://user@host/disk", `user names (user@host) are not supported`],
    ["dst://host:99999/disk", `port "99999" must be a number 0..65535`],
    ["dst://host:/disk", `port "" must be a number 0..65535`],
    ["dst://::1/disk", `an IPv6 host must be in brackets, e.g. dst://[::1]:10810/disk`],
    ["dst://host/%zz", `bad percent-encoding in the export name`],
    ["dst://host/a%00b", `the export name contains a NUL character`],
    ["dst://host/disk#frag", `fragments (#...) are not allowed`],
    ["dst://ho st/disk", `"ho st" is not a host name or IP address`],
  ];
  // The reasons above omit the quoted-URL prefix that every reason except "unknown scheme"
  // and "is not a URL" starts with.
  for (const [text, reason] of cases) {
    const full = /^(unknown scheme|"[^"]*" is not a URL)/.test(reason)
      ? reason
      : `${JSON.stringify(text)}: ${reason}`;
    test(text, () => expect(parseExportUrl(text)).toBe(full));
  }

  test("export name longer than 4096 bytes", () => {
    const url = `nbd://h/${"é".repeat(2049)}`;
    expect(parseExportUrl(url)).toEndWith(": the export name is longer than 4096 bytes");
    expect(typeof parseExportUrl(`nbd://h/${"é".repeat(2048)}`)).toBe("object");
  });
});

test("formatExportUrl round-trips", () => {
  const texts = [
    "dst://host:10810/disk",
    "dst://[::1]:10811/my%20disk",
    "nbd://host:10809/",
    "nbd://host:10809/a/b",
    "dst+unix:///disk?socket=/run/dstd.sock",
    "nbd+unix:///x%3Fy?socket=/tmp/a%26b.sock",
  ];
  for (const text of texts) {
    const parsed = parseExportUrl(text);
    expect(typeof parsed).toBe("object");
    expect(formatExportUrl(parsed as ExportUrl)).toBe(text);
    expect(parseExportUrl(formatExportUrl(parsed as ExportUrl))).toEqual(parsed);
  }
});

test("isUrl tells URLs from paths", () => {
  expect(isUrl("dst://h/d")).toBe(true);
  expect(isUrl("nbd+unix:///d?socket=/s")).toBe(true);
  expect(isUrl("http://x")).toBe(true);
  expect(isUrl("/srv/disk.img")).toBe(false);
  expect(isUrl("disk.img")).toBe(false);
  expect(isUrl("C:\\disk.img")).toBe(false);
  expect(isUrl("host:10810")).toBe(false);
  expect(isUrl("./dst://x")).toBe(false);
});
