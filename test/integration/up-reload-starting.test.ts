/**
 * `dstd reload` while `dstd up` is still starting its units (daemon/node.ts reload): refused
 * with E_STATE naming why (a reload then would start the units twice). The window is held
 * open by an export whose remote leg answers nothing (a listener that accepts and stays
 * silent), so the group's first start waits in the leg's handshake; the control socket is up
 * before the units start.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runDstd } from "../helpers/binary.ts";
import { startNode, type NodeProcess } from "../helpers/node-process.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-reload-starting-"));
const stateDir = join(dir, "state");
let node: NodeProcess | null = null;
// Accepts, reads, never answers: a leg whose handshake does not complete.
const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });

afterAll(async () => {
  await node?.stop("SIGKILL");
  silent.stop(true);
  rmSync(dir, { recursive: true, force: true });
});

test("a reload before READY is refused with E_STATE", async () => {
  const configPath = join(dir, "dstd.toml");
  writeFileSync(
    configPath,
    `state_dir = "${stateDir}"
log_level = "info"
[[export]]
name = "t"
listen = "127.0.0.1:0"
allow = ["127.0.0.1/32:rw"]
[export.tree]
linear = [{ file = "${join(dir, "a.img")}", size = "4MiB" }, "dst://127.0.0.1:${silent.port}/disk"]
`,
  );
  node = startNode(["--config", configPath], { DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined });
  await node.waitForLog("control socket", "the control socket", 30_000);
  const refused = await runDstd(["reload", "--state-dir", stateDir]);
  expect(node.stderr()).not.toContain("ready:"); // still in the leg's handshake
  expect(refused.exitCode).not.toBe(0);
  expect(refused.stderr).toContain("the node is still starting: reload once it is ready");
  expect(node.child.exitCode).toBeNull();
}, 60_000);
