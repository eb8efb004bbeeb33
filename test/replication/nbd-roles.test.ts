/**
 * The NBD front of a replicated export follows its role, as the DST export does
 * (docs/replication.md §6): a secondary serves its disk read-only over NBD too — a client that
 * sends a WRITE anyway (libnbd with its client-side checks off) gets EPERM and the disk is
 * untouched — and a role change closes the export's NBD connections, so a client reconnects
 * to what the export serves now (after `promote --force`: a primary, writable, its writes
 * logged). Before, the NBD front held the port it was started with: a secondary's bare disk,
 * writable by any NBD client with an rw grant, behind the log's back.
 * Nor does `dstd resize` change a secondary's size (it did: a disk of its own size behind the log).
 * Real processes: `dstd up` and libnbd's Python binding (Debian package python3-libnbd).
 */
import { afterAll, expect, test } from "bun:test";
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runDstd } from "../helpers/binary.ts";
import { readFileAt, scratchDir } from "../helpers/files.ts";
import { startNode } from "../helpers/node-process.ts";
import { freeLoopbackPort } from "../helpers/ports.ts";
import { haveLibnbdPython, SYSTEM_PYTHON } from "../helpers/tools.ts";
import { until } from "../helpers/wait.ts";
import type { ReplicaStatus } from "../../src/daemon/replica-status.ts";

const dir = scratchDir("nbd-roles");
afterAll(() => dir.remove());

const haveLibnbd = haveLibnbdPython();

/**
 * One NBD client session driven line by line: it connects, reports the read-only flag, sends a
 * WRITE of 'X' with libnbd's own checks off (what a hostile or buggy client could send), waits
 * for a line on stdin (the test changes the role meanwhile), then tries a READ on the same
 * connection and writes 'Y' through a new one.
 */
const SCRIPT = `
import nbd, sys
uri = sys.argv[1]
def say(*words):
    print(*words, flush=True)
h = nbd.NBD()
h.connect_uri(uri)
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_COMMANDS)
say("read-only", h.is_read_only())
try:
    h.pwrite(b"X" * 4096, 0)
    say("write ok")
except nbd.Error as e:
    say("write refused", e.errno)
sys.stdin.readline()
try:
    h.pread(4096, 0)
    say("old connection read ok")
except nbd.Error as e:
    say("old connection closed")
h2 = nbd.NBD()
h2.connect_uri(uri)
say("new read-only", h2.is_read_only())
h2.pwrite(b"Y" * 4096, 0)
h2.flush()
say("new write ok")
`;

test.skipIf(!haveLibnbd)("a secondary refuses NBD writes and dstd resize; promote closes its NBD connections and a new one writes through the primary", async () => {
  const nbdPort = freeLoopbackPort();
  const config = join(dir.path, "node.toml");
  const stateDir = join(dir.path, "state");
  const image = join(dir.path, "disk.img");
  writeFileSync(
    config,
    `[[export]]
name = "disk"
file = "${image}"
size = "16MiB"
listen = "127.0.0.1:0"
nbd_listen = "127.0.0.1:${nbdPort}"
allow = ["127.0.0.1/32:rw"]
[export.replication]
role = "secondary"
log_dir = "${join(dir.path, "log")}"
peer = "dst://127.0.0.1:1/disk"
`,
  );
  const node = startNode(["--config", config, "--state-dir", stateDir]);
  try {
    await node.waitForLog("ready:", "node ready", 30_000);
    const client = Bun.spawn([SYSTEM_PYTHON, "-c", SCRIPT, `nbd://127.0.0.1:${nbdPort}/disk`], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    let out = "";
    const decoder = new TextDecoder();
    void (async () => {
      for await (const chunk of client.stdout) out += decoder.decode(chunk);
    })();
    // The client's lines, or its exit (the expectations below then show what it printed).
    await until(() => out.includes("write ") || client.exitCode !== null, "the NBD client's first WRITE", 15_000);
    expect(out).toContain("read-only True");
    expect(out).toContain("write refused EPERM"); // EPERM: the secondary's disk takes writes only from its log
    expect(readFileAt(image, 0, 4096).every((b) => b === 0)).toBe(true);
    // Nor is its size its own: resizing it would cut what the log writes later, or outgrow the primary.
    const resized = await runDstd(["resize", "disk", "32MiB", "--state-dir", stateDir]);
    expect(resized.exitCode).not.toBe(0);
    expect(resized.stderr).toContain("export 'disk' is not resized: it is a replication secondary: its disk changes only through its primary's log");
    expect(statSync(image).size).toBe(16 << 20);

    // Status says so too (it showed the config's rw).
    const access = async () => /^disk\s+file \S+\s+16 MiB\s+(\S+)\s/m.exec((await runDstd(["status", "--state-dir", stateDir])).stdout)?.[1];
    expect(await access()).toBe("ro");
    const promoted = await runDstd(["replica", "promote", "disk", "--force", "--state-dir", stateDir]);
    expect(promoted.exitCode).toBe(0);
    await node.waitForLog("changed role", "the NBD connection closed by the role change");
    client.stdin.write("go\n");
    client.stdin.flush();
    expect(await client.exited).toBe(0);
    expect(out).toContain("old connection closed");
    expect(out).toContain("new read-only False");
    expect(out).toContain("new write ok");
    expect(readFileAt(image, 0, 4096).every((b) => b === 0x59)).toBe(true);
    // Through the primary: the write is a record of the new generation's log.
    const status = await runDstd(["replica", "status", "disk", "--json", "--state-dir", stateDir]);
    expect(status.exitCode).toBe(0);
    const disk = (JSON.parse(status.stdout) as { replicas: ReplicaStatus[] }).replicas[0]!;
    expect(disk.role).toBe("primary");
    expect(await access()).toBe("rw");
    expect(disk.seq).toBeGreaterThanOrEqual(1);
  } finally {
    await node.stop();
  }
}, 60_000);
