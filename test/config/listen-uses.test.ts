/**
 * Listen addresses that cannot all be bound (config/listen-uses.ts): refused when the config
 * is read, naming both places — a DST and an NBD listener on one address, two addresses on one
 * port where one is every address, the metrics listener or an attachment's NBD socket on an
 * address something else listens on; exports naming the same DST (or NBD) address share it.
 */
import { describe, expect, test } from "bun:test";
import { validateConfig } from "../../src/config/validate.ts";

function check(toml: string): string[] {
  const result = validateConfig(Bun.TOML.parse(toml), { baseDir: "/srv" });
  return "issues" in result ? result.issues.map((i) => `${i.path}: ${i.message}`) : [];
}

const exp = (name: string, listen: string, more = "") => `[[export]]\nname = "${name}"\nmemory = "1GiB"\nallow = ["127.0.0.1/32:rw"]\nlisten = ${listen}\n${more}\n`;
const BIND = "one port takes one listener, so the second would fail to bind at every start";

describe("listen addresses", () => {
  test("exports naming one DST address, or one NBD address, share its listener; port 0 never collides", () => {
    expect(check(exp("a", `"127.0.0.1:10810"`, `nbd_listen = "127.0.0.1:10809"`) + exp("b", `["127.0.0.1:10810", "unix:/run/d.sock"]`, `nbd_listen = "127.0.0.1:10809"`))).toEqual([]);
    expect(check(exp("a", `"127.0.0.1:0"`, `nbd_listen = "127.0.0.1:0"`) + exp("b", `"0.0.0.0:0"`))).toEqual([]);
    expect(check(exp("a", `"127.0.0.1:10810"`) + exp("b", `"127.0.0.2:10810"`))).toEqual([]); // two hosts, one port: two listeners bind
  });

  test("one address for DST and NBD, or for an export and the metrics", () => {
    expect(check(exp("a", `"127.0.0.1:10810"`, `nbd_listen = "127.0.0.1:10810"`))).toEqual([
      `export[0].nbd_listen: 127.0.0.1:10810 is also the DST listen address at export[0].listen: ${BIND}; use another port`,
    ]);
    expect(check(`metrics_listen = "127.0.0.1:10810"\n` + exp("a", `"127.0.0.1:10810"`))).toEqual([
      `export[0].listen: 127.0.0.1:10810 is also the metrics address at metrics_listen: ${BIND}; use another port`,
    ]);
    expect(check(exp("a", `"unix:/run/d.sock"`, `nbd_listen = "unix:/run/d.sock"`))).toEqual([
      `export[0].nbd_listen: unix:/run/d.sock is also the DST listen address at export[0].listen: ${BIND}; use another port`,
    ]);
  });

  test("every address and one of its own on one port; an attachment's NBD socket is its own", () => {
    expect(check(exp("a", `"0.0.0.0:10810"`) + exp("b", `"127.0.0.1:10810"`))).toEqual([
      `export[1].listen: 127.0.0.1:10810 overlaps 0.0.0.0:10810, the DST listen address at export[0].listen: ${BIND}; name the same address to share its listener, or use another port`,
    ]);
    expect(check(exp("a", `"[::]:10810"`) + exp("b", `"127.0.0.1:10810"`))).toHaveLength(1); // :: takes IPv4 too
    expect(check(exp("a", `"0.0.0.0:10810"`) + exp("b", `"[::1]:10810"`))).toEqual([]); // 0.0.0.0 only IPv4
    const attach = (n: string) => `[[attach]]\nurl = "dst://10.0.0.${n}/d"\nnbd_listen = "unix:/run/x.sock"\n`;
    expect(check(attach("1") + attach("2"))).toEqual([`attach[1].nbd_listen: unix:/run/x.sock is also the attachment's NBD address at attach[0].nbd_listen: ${BIND}; use another port`]);
    expect(check(exp("a", `"127.0.0.1:10810"`, `nbd_listen = "unix:/run/x.sock"`) + attach("1"))).toEqual([
      `attach[0].nbd_listen: unix:/run/x.sock is also the NBD listen address at export[0].nbd_listen: ${BIND}; use another port`,
    ]);
  });
});
