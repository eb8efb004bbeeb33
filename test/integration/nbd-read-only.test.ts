/**
 * An export configured `read_only = true` refuses writes over NBD as over DST, whatever its
 * port: a storage tree's legs are opened writable (a mirror writes its own metadata) and the
 * export refuses writes itself (daemon/export-node.ts openExportPort), so the NBD front must
 * read the export's flag, not only its port's. Until 2026-12-07 it read only the port's: an
 * NBD client with an rw grant wrote to a read-only mirror. Real processes: `dstd up` and
 * libnbd's Python binding with its client-side checks off, so the WRITE reaches the export.
 */
import { afterAll, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { runDstd } from "../helpers/binary.ts";
import { join } from "node:path";
import { scratchDir } from "../helpers/files.ts";
import { startNode } from "../helpers/node-process.ts";
import { freeLoopbackPort } from "../helpers/ports.ts";
import { haveLibnbdPython, SYSTEM_PYTHON } from "../helpers/tools.ts";

const dir = scratchDir("nbd-read-only");
afterAll(() => dir.remove());
const haveLibnbd = haveLibnbdPython();

const SCRIPT = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_COMMANDS)
print("read-only", h.is_read_only())
for name, call in (("write", lambda: h.pwrite(b"X" * 4096, 0)), ("trim", lambda: h.trim(4096, 0)), ("zero", lambda: h.zero(4096, 8192))):
    try:
        call()
        print(name, "ok")
    except nbd.Error as e:
        print(name, "refused", e.errno)
`;

test.skipIf(!haveLibnbd)("a read-only mirror export refuses NBD writes, trims and write-zeroes with EPERM, and dstd resize; its legs are untouched", async () => {
  const legs = [join(dir.path, "a.img"), join(dir.path, "b.img")];
  for (const leg of legs) writeFileSync(leg, new Uint8Array(16 << 20));
  const nbdPort = freeLoopbackPort();
  const config = join(dir.path, "node.toml");
  writeFileSync(
    config,
    `[[export]]
name = "disk"
read_only = true
listen = "127.0.0.1:0"
nbd_listen = "127.0.0.1:${nbdPort}"
allow = ["127.0.0.1/32:rw"]
[export.tree]
mirror = ["${legs[0]}", "${legs[1]}"]
`,
  );
  const node = startNode(["--config", config, "--state-dir", join(dir.path, "state")]);
  try {
    await node.waitForLog("ready:", "node ready", 30_000);
    const hashes = () => legs.map((leg) => createHash("sha256").update(readFileSync(leg)).digest("hex"));
    const before = hashes();
    const client = Bun.spawnSync([SYSTEM_PYTHON, "-c", SCRIPT, `nbd://127.0.0.1:${nbdPort}/disk`], { stdout: "pipe", stderr: "pipe" });
    expect(client.stderr.toString()).toBe("");
    expect(client.stdout.toString().trim().split("\n")).toEqual(["read-only True", "write refused EPERM", "trim refused EPERM", "zero refused EPERM"]);
    expect(hashes()).toEqual(before);
    // Nor is it resized (it was: both legs grew).
    const resized = await runDstd(["resize", "disk", "32MiB", "--state-dir", join(dir.path, "state")]);
    expect(resized.exitCode).not.toBe(0);
    expect(resized.stderr).toContain("export 'disk' is not resized: it is read-only (read_only = true)");
    expect(legs.map((leg) => statSync(leg).size)).toEqual([16 << 20, 16 << 20]);
  } finally {
    await node.stop();
  }
}, 60_000);
