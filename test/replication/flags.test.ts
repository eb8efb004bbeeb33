/**
 * The two-node case with flags only (issue 11 item 8, README "Replication"): `dstd export …
 * --log-dir DIR` on the primary, `dstd export … --log-dir DIR --replica-of URL` on the
 * secondary — anonymous over loopback, granted by `127.0.0.1:replica` — a flags-only pair
 * steered through `--state-dir`'s control socket (status, then promote --force after a kill -9
 * of the primary), and the usage errors of the replication flags.
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

test(
  "flags: --state-dir opens the control socket, so dstd replica status and promote --force reach a dstd export node",
  async () => {
    const a = join(dir.path, "fa.img");
    const b = join(dir.path, "fb.img");
    const aState = join(dir.path, "fa.state");
    const bState = join(dir.path, "fb.state");
    const primary = await startExport(["--file", a, "--size", "16MiB", "--allow", "127.0.0.1:rw", "--allow", "127.0.0.1:replica", "--log-dir", join(dir.path, "fa.log"), "--state-dir", aState]);
    running.push(primary);
    // The secondary grants replica too: once promoted, its old primary asks it at start (fencing).
    const secondary = await startExport(["--file", b, "--size", "16MiB", "--allow", "127.0.0.1:rw", "--allow", "127.0.0.1:replica", "--log-dir", join(dir.path, "fb.log"), "--replica-of", `dst://127.0.0.1:${primary.port}/disk`, "--state-dir", bState]);
    running.push(secondary);
    expect(secondary.log()).toContain(`control socket ${join(bState, "control.sock")}`);
    const source = join(dir.path, "fsource.bin");
    writeRandomFile(source, 4 * MiB);
    expect((await copyInto(source, primary.port)).exitCode).toBe(0);
    const status = async (stateDir: string): Promise<{ role: string; generation: number; state: string; seq: number; lag_bytes: number }> => {
      const result = await runDstd(["replica", "status", "disk", "--json", "--state-dir", stateDir]);
      if (result.exitCode !== 0) throw new Error(`replica status failed: ${result.stderr}`);
      return JSON.parse(result.stdout).replicas[0];
    };
    const written = (await status(aState)).seq;
    expect(written).toBeGreaterThan(0);
    const deadline = performance.now() + 60_000;
    for (let s = await status(bState); !(s.state === "replicating" && s.seq === written && s.lag_bytes === 0); s = await status(bState)) {
      if (performance.now() > deadline) throw new Error(`the secondary did not catch up: ${JSON.stringify(s)}`);
      await Bun.sleep(100);
    }
    // dstd up's other requests are refused with the reason.
    const other = await runDstd(["status", "--state-dir", bState]);
    expect(other.exitCode).not.toBe(0);
    expect(other.stderr).toContain("dstd status needs a dstd up node");
    // The primary dies; the secondary fails over through its control socket and takes writes.
    primary.process.kill("SIGKILL");
    await primary.process.exited;
    const promoted = await runDstd(["replica", "promote", "disk", "--force", "--state-dir", bState]);
    expect(promoted.exitCode).toBe(0);
    expect(promoted.stdout).toContain(`promoted to primary (failover) at seq ${written}, generation 2`);
    const after = await status(bState);
    expect([after.role, after.generation]).toEqual(["primary", 2]);
    expect(hashPrefix(b, 4 * MiB)).toBe(hashPrefix(source, 4 * MiB));
    expect((await copyInto(source, secondary.port)).exitCode).toBe(0);
    // The old primary was warned it has no peer; back with --peer it asks the new primary first
    // and, its log a prefix of the new primary's, starts as its secondary (read-only), never as
    // a second primary (docs/replication.md §11 "Fencing at start").
    expect(primary.log()).toContain("export 'disk': a replication primary without a peer");
    const back = await startExport(["--file", a, "--allow", "127.0.0.1:rw", "--log-dir", join(dir.path, "fa.log"), "--state-dir", aState, "--peer", `dst://127.0.0.1:${secondary.port}/disk`]);
    running.push(back);
    expect(back.log()).not.toContain("without a peer");
    expect((await status(aState)).role).toBe("secondary");
    expect((await copyInto(source, back.port)).exitCode).not.toBe(0);
    await back.stop();
    // A second node on the same state directory fails before it listens.
    const twice = await runDstd(["export", "--file", join(dir.path, "fc.img"), "--size", "1MiB", "--log-dir", join(dir.path, "fc.log"), "--listen", "127.0.0.1:0", "--state-dir", bState]);
    expect(twice.exitCode).not.toBe(0);
    expect(twice.stderr).toContain(`another dstd node is running with state directory ${bState}`);
    expect(twice.stderr).not.toContain("listening");
    // The node logged the promotion once, not a WARN from the replica and an INFO from the
    // control request as well (stop() returns once all it wrote is in log()).
    await secondary.stop();
    expect(secondary.log().split("\n").filter((line) => line.includes("promoted to primary (failover)"))).toHaveLength(1);
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
    [["--state-dir", "x.state"], "--state-dir keeps the control socket of a replicated or mirrored export and the layout record of a linear or striped one: give --log-dir DIR"],
    [["--compress"], "--compress needs --log-dir DIR"],
    [["--log-dir", "x.log", "--compress"], "--compress is for a secondary"],
    [["--peer", "dst://h/disk"], "--peer needs --log-dir DIR"],
    [["--log-dir", "x.log", "--replica-of", "dst://h/disk", "--peer", "dst://h/disk"], "--peer names a primary's secondary; a secondary's peer is its primary, given by --replica-of"],
    [["--log-dir", "x.log", "--bandwidth", "1MiB/s"], "--bandwidth is for a secondary"],
    [["--log-dir", "x.log", "--replica-of", "dst://h/disk", "--bandwidth", "20MiB"], 'is not a rate; use e.g. "20MiB/s"'],
  ] as const) {
    const result = await runDstd(["export", "--file", file, "--size", "1MiB", ...args], {}, { cwd: dir.path });
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain(message);
  }
});
