/**
 * A replication primary whose disk failed a logged write-back fails closed (docs/replication.md
 * §4): it refuses writes and FLUSH until it is opened again, and only the open's replay of the
 * log puts the lost write-backs on the disk. `dstd up` restarts that export group by itself
 * (daemon/services.ts groupHealth, the supervisor's backoff): a start whose replay still fails
 * is retried, and once the disk takes the writes again the group serves, every acknowledged
 * write on the disk. Before, the group stayed "running" while refusing everything until an
 * operator restarted the whole node.
 *
 * Real processes and a real disk error: the export's file lies on a small tmpfs with a filler
 * file, so its write-backs fail with ENOSPC while the log (elsewhere) takes every record;
 * removing the filler is the repair. Needs root (mount) and nbdcopy (Debian package libnbd-bin).
 */
import { afterAll, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runDstd } from "../helpers/binary.ts";
import { mountTmpfs, scratchDir, unmountTmpfs, writeRandomFile } from "../helpers/files.ts";
import { startNode } from "../helpers/node-process.ts";
import { freeLoopbackPort } from "../helpers/ports.ts";
import { haveTools } from "../helpers/tools.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1 << 20;
const dir = scratchDir("primary-restart");

const fs = join(dir.path, "fs");
const unmountable = mountTmpfs(fs, "12m");
if (unmountable !== null) console.warn(`skipping: ${unmountable}`);
afterAll(() => {
  if (unmountable === null) unmountTmpfs(fs);
  dir.remove();
});

const tools = haveTools({ nbdcopy: "libnbd-bin" });

test.skipIf(unmountable !== null || !tools)("a primary failed closed over its disk is restarted by dstd up; once the disk has room its restart replays the log and every acknowledged write is served", async () => {
  writeFileSync(join(fs, "filler"), new Uint8Array(6 * MiB));
  const nbdPort = freeLoopbackPort();
  const config = join(dir.path, "node.toml");
  const stateDir = join(dir.path, "state");
  writeFileSync(
    config,
    `[[export]]
name = "disk"
file = "${join(fs, "disk.img")}"
size = "16MiB"
listen = "127.0.0.1:0"
nbd_listen = "127.0.0.1:${nbdPort}"
allow = ["127.0.0.1/32:rw"]
[export.replication]
log_dir = "${join(dir.path, "log")}"
log_size = "64MiB"
`,
  );
  const data = join(dir.path, "data.bin");
  writeRandomFile(data, 8 * MiB);
  const node = startNode(["--config", config, "--state-dir", stateDir]);
  const url = `nbd://127.0.0.1:${nbdPort}/disk`;
  try {
    await node.waitForLog("ready:", "node ready", 30_000);
    // Acknowledged once logged; the write-backs past ~6 MiB of the disk fail with ENOSPC.
    const copy = Bun.spawnSync(["nbdcopy", data, url], { stderr: "pipe" });
    expect(copy.stderr.toString()).toBe("");
    expect(copy.exitCode).toBe(0);
    await node.waitForLog("replication primary failed closed: the disk failed the write-back", "the group failed by its health check");
    // Its restarts replay the log onto a disk that is still full: they fail and are retried.
    await node.waitForLog(/restart 1\n[^]*no space left on device \(ENOSPC\); restarting in/, "a restart failing in its replay", 20_000);
    rmSync(join(fs, "filler"));
    const since = node.stderr().length;
    await until(() => node.stderr().slice(since).includes("[export:disk] running"), "the group serving again after the filler was removed", 60_000);
    const replica = await runDstd(["replica", "status", "disk", "--state-dir", stateDir]);
    expect(replica.exitCode).toBe(0);
    expect(replica.stdout.split("\n")[0]).toBe("disk: primary, generation 1, primary"); // no reason: healthy
    const out = join(dir.path, "out.bin");
    const back = Bun.spawnSync(["nbdcopy", url, out], { stderr: "pipe" });
    expect(back.exitCode).toBe(0);
    expect(Buffer.compare(readFileSync(out).subarray(0, 8 * MiB), readFileSync(data))).toBe(0);
    const services = await runDstd(["status", "--state-dir", stateDir]);
    expect(services.stdout).toMatch(/export:disk\s+running\s+\S+\s+[1-9]/); // restarted at least once
  } finally {
    await node.stop();
  }
}, 90_000);
