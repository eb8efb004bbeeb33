/**
 * Issue 9 item 6 against the compiled binary, NBD listener: a newline in an export name cannot
 * forge a log line, a 4 KiB name cannot make a 4 KiB log line, and a client refused over and
 * over costs one line (then a summary), not one line per refusal. (The DST listener's names
 * and identities are the DST export's part of the same item.)
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IHAVEOPT, Opt } from "../../src/wire/nbd/constants.ts";
import { until } from "../helpers/wait.ts";
import { rawPeer, startHostileExport, type HostileExport } from "./hostile.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-loginj-"));
let exp: HostileExport;
beforeAll(async () => {
  exp = await startHostileExport(dir, {});
});
afterAll(async () => {
  await exp.stop();
  rmSync(dir, { recursive: true, force: true });
});

function info(name: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + 4 + name.length + 2);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, IHAVEOPT);
  view.setUint32(8, Opt.INFO);
  view.setUint32(12, 4 + name.length + 2);
  view.setUint32(16, name.length);
  out.set(name, 20);
  return out;
}

/** Send flags and the options, read the replies (one ERR_UNKNOWN per INFO), then leave. */
async function refusedInfos(source: string, names: Uint8Array[]): Promise<void> {
  const peer = rawPeer(exp.nbdPort, source);
  await peer.receive(18);
  peer.write(new Uint8Array([0, 0, 0, 3]));
  for (const name of names) peer.write(info(name));
  // Each reply is 20 bytes of header plus a message of at most ~150 bytes: wait for all of them.
  await until(() => peer.received >= 18 + names.length * 20, "the refusals");
  peer.destroy();
  await peer.closed;
}

const utf8 = new TextEncoder();

test("a forged line in an export name stays inside one escaped, bounded line", async () => {
  const forged = utf8.encode("x\n[export] ℹ listening for DST on 6.6.6.6:1\u001b[2K\u2028");
  await refusedInfos("127.0.7.1", [forged]);
  await until(() => exp.log().includes("127.0.7.1"), "the refusal in the log");
  const lines = exp.log().split("\n");
  expect(lines.some((l) => /^\s*\[export\] ℹ listening for DST on 6\.6\.6\.6/.test(l))).toBe(false);
  expect(exp.log()).not.toContain("\u001b[2K");
  expect(exp.log()).not.toContain("\u2028");
  expect(exp.log()).toContain("'x\\n[export] ℹ listening for DST on 6.6.6.6:1\\x1b[2K\\u2028'");
});

test("a 4 KiB export name makes a log line of a few hundred characters", async () => {
  await refusedInfos("127.0.7.2", [utf8.encode("n".repeat(4096))]);
  await until(() => exp.log().includes("127.0.7.2"), "the refusal in the log");
  const line = exp.log().split("\n").find((l) => l.includes("127.0.7.2"))!;
  expect(line).toContain("…(4096 chars in all)");
  expect(line.length).toBeLessThan(400);
});

test("200 refusals from one source are logged once", async () => {
  const names = Array.from({ length: 200 }, (_, i) => utf8.encode(`nope-${i}`));
  await refusedInfos("127.0.7.3", names);
  // The other source's line arrives after this one's, so waiting for it bounds the wait.
  await refusedInfos("127.0.7.4", [utf8.encode("marker")]);
  await until(() => exp.log().includes("'marker'"), "the marker refusal");
  const lines = exp.log().split("\n").filter((l) => l.includes("127.0.7.3:"));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain("'nope-0'");
});
