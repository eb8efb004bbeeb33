/**
 * A tree leg that reaches its own node: a mirror leg suspended and replaced, by a reload, with
 * a subtree holding the mirror's own export (a copied address, a typo) is refused — by the
 * config check when it names the address the export listens on (config/storage-uses.ts), by
 * the export's own epoch when it reaches it another way (storage/remote/remote-port.ts
 * `localEpochs`) — and nothing changes: without the refusal the mirror would "resync" into itself, each copy a
 * write of the mirror shifted by its metadata area, overwriting its own data. Compiled
 * binary, `dstd up`, real sockets and files.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DstClient } from "../../src/client/dst-client.ts";
import { runDstd } from "../helpers/binary.ts";
import { startNode, type NodeProcess } from "../helpers/node-process.ts";
import { freeLoopbackPort } from "../helpers/ports.ts";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "dstd-self-leg-"));
const stateDir = join(dir, "state");
const configPath = join(dir, "dstd.toml");
let node: NodeProcess | undefined;

afterAll(async () => {
  await node?.stop("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

test("a reload that replaces a mirror leg with a subtree holding the mirror's own export is refused; the data stays", async () => {
  const port = freeLoopbackPort();
  const config = (second: string) => `
state_dir = "${stateDir}"
log_level = "info"
[[export]]
name = "m"
listen = ["127.0.0.1:${port}", "unix:${join(dir, "m.sock")}"]
allow = ["127.0.0.1/32:rw", "unix:rw"]
[export.tree]
assume_clean = true
mirror = [{ file = "${join(dir, "a.img")}", size = "8MiB" }, ${second}]
`;
  writeFileSync(configPath, config(`{ file = "${join(dir, "b.img")}", size = "8MiB" }`));
  node = startNode(["--config", configPath], { DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined });
  await node.waitForLog("ready:", "the node to be ready", 30_000);
  const client = await DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName: "m", log: { info() {}, warn() {} }, keepaliveTimeoutMs: 30_000 });
  try {
    const data = new Uint8Array(4 * MiB).map((_, i) => (i * 31 + 7) & 0xff);
    await client.write(0, data);
    await client.flush();
    const suspend = await runDstd(["leg", "suspend", "m", join(dir, "b.img"), "--state-dir", stateDir]);
    expect(suspend.exitCode).toBe(0);
    // Through a linear node that makes it large enough (the mirror's own export alone is its
    // size less the metadata area: too small, and refused for that).
    const through = (url: string) => config(`{ linear = ["${url}", { file = "${join(dir, "c.img")}", size = "4MiB" }] }`);
    // By the address it listens on: refused when the config is read.
    writeFileSync(configPath, through(`dst://127.0.0.1:${port}/m`));
    const named = await runDstd(["reload", "--state-dir", stateDir]);
    expect(named.exitCode).not.toBe(0);
    expect(named.stderr).toContain(`dst://127.0.0.1:${port}/m is export 'm' of this configuration`);
    // By a name the config cannot tell is its own (a symlink to its socket): refused when the
    // leg's export answers with this process's epoch.
    const alias = join(dir, "alias.sock");
    symlinkSync(join(dir, "m.sock"), alias);
    writeFileSync(configPath, through(`dst+unix:///m?socket=${alias}`));
    const reload = await runDstd(["reload", "--state-dir", stateDir]);
    expect(reload.exitCode).not.toBe(0);
    expect(reload.stderr).toContain(`leg dst+unix:///m?socket=${alias} is an export of this dstd process`);
    // Nothing changed: the mirror serves what was written, its other leg still suspended.
    expect(Buffer.compare(await client.read(0, 4 * MiB), data)).toBe(0);
    const status = JSON.parse((await runDstd(["status", "--json", "--state-dir", stateDir])).stdout);
    const tree = status.services.find((s: { name: string }) => s.name === "export:m").export.exports[0].tree;
    expect(tree.legs.map((l: { state: string }) => l.state)).toEqual(["in-sync", "suspended"]);
  } finally {
    await client.close();
  }
}, 60_000);
