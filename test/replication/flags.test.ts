/**
 * The two-node case with flags only (issue 11 item 8, README "Replication"): `dstd export …
 * --log-dir DIR` on the primary, `dstd export … --log-dir DIR --replica-of URL` on the
 * secondary — anonymous over loopback, granted by `127.0.0.1:replica` — and the usage errors
 * of the replication flags.
 */
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { runDstd, startExport, type RunningExport } from "../helpers/binary.ts";
import { scratchDir, writeRandomFile } from "../helpers/files.ts";
import { copyInto, hashPrefix, MiB } from "./pair.ts";

const dir = scratchDir("replication-flags");
const running: RunningExport[] = [];
afterAll(async () => {
  for (const r of running) await r.stop();
  dir.remove();
});

test(
  "flags: a primary with --log-dir and an anonymous loopback secondary with --replica-of; the secondary's copy becomes identical and is read-only",
  async () => {
    const size = 16 * MiB;
    const a = join(dir.path, "a.img");
    const b = join(dir.path, "b.img");
    const primary = await startExport(["--file", a, "--size", "16MiB", "--allow", "127.0.0.1:rw", "--allow", "127.0.0.1:replica", "--log-dir", join(dir.path, "a.log")]);
    running.push(primary);
    const secondary = await startExport(["--file", b, "--size", "16MiB", "--allow", "127.0.0.1:rw", "--log-dir", join(dir.path, "b.log"), "--replica-of", `dst://127.0.0.1:${primary.port}/disk`]);
    running.push(secondary);
    expect(secondary.log()).toContain("replication secondary of dst://127.0.0.1:");
    const source = join(dir.path, "source.bin");
    writeRandomFile(source, 6 * MiB);
    expect((await copyInto(source, primary.port)).exitCode).toBe(0);
    const expected = hashPrefix(a, size);
    const deadline = performance.now() + 60_000;
    while (hashPrefix(b, size) !== expected) {
      if (performance.now() > deadline) throw new Error(`the secondary did not catch up:\n${secondary.log()}`);
      await Bun.sleep(200);
    }
    expect(hashPrefix(a, 6 * MiB)).toBe(hashPrefix(source, 6 * MiB));
    // Served read-only while it is a secondary, whatever its allow rules grant.
    const refused = await copyInto(source, secondary.port);
    expect(refused.exitCode).not.toBe(0);
    expect(primary.log()).toContain("handshake ok");
  },
  120_000,
);

test("replication flags: clear usage errors", async () => {
  const file = join(dir.path, "u.img");
  for (const [args, message] of [
    [["--log-size", "1GiB"], "--log-size needs --log-dir DIR"],
    [["--replica-of", "dst://h/disk"], "--replica-of needs --log-dir DIR"],
    [["--log-dir", "x.log", "--replay-delay", "1s"], "--replay-delay is for a secondary"],
    [["--log-dir", "x.log", "--replica-of", "dst://h/disk", "--log-size", "1GiB"], "--log-size is for a primary"],
    [["--compress"], "--compress needs --log-dir DIR"],
    [["--log-dir", "x.log", "--compress"], "--compress is for a secondary"],
    [["--log-dir", "x.log", "--bandwidth", "1MiB/s"], "--bandwidth is for a secondary"],
    [["--log-dir", "x.log", "--replica-of", "dst://h/disk", "--bandwidth", "20MiB"], 'is not a rate; use e.g. "20MiB/s"'],
  ] as const) {
    const result = await runDstd(["export", "--file", file, "--size", "1MiB", ...args], {}, { cwd: dir.path });
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain(message);
  }
});
