/**
 * `dstd up` changing a running export without dropping anyone (issue "Operating a fleet",
 * done-means): a reload that revokes one identity's write grant applies at once — that
 * session goes read-only with a logged reason — while another identity's `dstd copy` keeps
 * running and exits 0; `dstd resize` grows the export and a connected DST client learns the
 * new size in band, without reconnecting. Compiled binary, real sockets.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "bun";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DstClient } from "../../src/client/dst-client.ts";
import { generateKeyFile, loadKeyFile } from "../../src/crypto/keys.ts";
import { ensureBinary, runDstd } from "../helpers/binary.ts";
import { startNode, type NodeProcess } from "../helpers/node-process.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "dstd-live-"));
const stateDir = join(dir, "state");
const configPath = join(dir, "dstd.toml");
const image = join(dir, "p.img");
const keyPath = (who: string) => join(dir, `${who}.key`);
for (const who of ["alice", "bob"]) writeFileSync(keyPath(who), generateKeyFile(who), { mode: 0o600 });

let port = 0;
function config(aliceAccess: "rw" | "ro"): string {
  return `
state_dir = "${stateDir}"
log_level = "info"

[[key]]
identity = "alice"
file = "${keyPath("alice")}"

[[key]]
identity = "bob"
file = "${keyPath("bob")}"

[[export]]
name = "p"
file = "${image}"
size = "64MiB"
listen = "127.0.0.1:${port}"
allow = ["alice@127.0.0.1/32:${aliceAccess}", "bob@127.0.0.1/32:rw"]
`;
}

let node: NodeProcess;

beforeAll(async () => {
  ensureBinary();
  // A free port for the export (the config names it: reloads compare listen addresses).
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  port = probe.port;
  probe.stop(true);
  writeFileSync(configPath, config("rw"));
  node = startNode(["--config", configPath, "--log-format", "json"], { DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined });
  await node.waitForLog("ready:", "the node to be ready", 30_000);
}, 60_000);

afterAll(async () => {
  await node?.stop("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

function open(who: string): Promise<DstClient> {
  return DstClient.open({
    address: { transport: "tcp", host: "127.0.0.1", port },
    exportName: "p",
    log: { info() {}, warn() {} },
    // The tests count reconnects to prove a reload or resize keeps sessions; a loaded CI host
    // can starve an idle connection's PONGs past the default 6 s, which is not what they test.
    keepaliveTimeoutMs: 30_000,
    auth: { key: loadKeyFile(keyPath(who)), suites: ["aes-256-gcm"] },
  });
}

describe("dstd up: live changes", () => {
  test("a reload revokes alice's write grant at once; bob's copy keeps running and exits 0", async () => {
    const alice = await open("alice");
    await alice.write(60 * MiB, new Uint8Array(4096).fill(1)); // past what bob's copy writes
    const source = join(dir, "source.img");
    writeFileSync(source, new Uint8Array(48 * MiB).map((_, i) => (i * 131) & 0xff));
    const copy = spawn(
      [ensureBinary(), "copy", source, `dst://127.0.0.1:${port}/p`, "--key-file", keyPath("bob"), "--chunk", "256KiB", "--inflight", "4"],
      { stdout: "pipe", stderr: "pipe" },
    );
    try {
      await node.waitForLog("identity 'bob'", "bob's copy to connect", 20_000);
      writeFileSync(configPath, config("ro"));
      const reload = await runDstd(["reload", "--state-dir", stateDir]);
      expect(reload.stderr).toBe("");
      expect(reload.exitCode).toBe(0);
      expect(reload.stdout).toContain("updated export:p in place");
      expect(reload.stdout).toContain("identity 'alice'");
      expect(reload.stdout).toContain("downgraded to read-only");
      // Status shows the rules in force, not the ones the group started with.
      const status = await runDstd(["status", "--json", "--state-dir", stateDir]);
      const service = JSON.parse(status.stdout).services.find((s: { name: string }) => s.name === "export:p");
      expect(service.export.exports[0].allow).toEqual(["alice@127.0.0.1/32:ro", "bob@127.0.0.1/32:rw"]);
      // Alice's session is still there, but read-only from now on.
      await expect(alice.write(60 * MiB + 4096, new Uint8Array(4096))).rejects.toThrow(/EPERM/);
      expect((await alice.read(60 * MiB, 4096))[0]).toBe(1);
      expect(alice.engine.counters.reconnects).toBe(0);
      const exitCode = await copy.exited;
      const stderr = await new Response(copy.stderr).text();
      expect(stderr).toBe("");
      expect(exitCode).toBe(0);
      // Bob's data is all there.
      const written = readFileSync(image).subarray(0, 48 * MiB);
      expect(Buffer.compare(written, readFileSync(source))).toBe(0);
    } finally {
      copy.kill();
      await alice.close();
    }
  }, 120_000);

  test("dstd resize grows the export; a connected client learns the new size in band", async () => {
    const bob = await open("bob");
    expect(bob.size).toBe(64 * MiB);
    const announced: number[] = [];
    bob.onResize = (size) => announced.push(size); // what dstd attach follows to grow /dev/nbdX
    const resized = await runDstd(["resize", "p", "128MiB", "--state-dir", stateDir]);
    expect(resized.stderr).toBe("");
    expect(resized.exitCode).toBe(0);
    expect(resized.stdout).toContain("resized from 64 MiB to 128 MiB");
    await until(() => bob.size === 128 * MiB, "the client to learn the new size", 5_000);
    expect(announced).toEqual([128 * MiB]);
    expect(bob.engine.counters.reconnects).toBe(0);
    // The new space is usable at once, by the same session.
    await bob.write(100 * MiB, new Uint8Array(4096).fill(7));
    expect((await bob.read(100 * MiB, 4096))[0]).toBe(7);
    // Shrinking needs --allow-shrink, and refuses while data lies past the new end.
    const shrink = await runDstd(["resize", "p", "64MiB", "--state-dir", stateDir]);
    expect(shrink.exitCode).not.toBe(0);
    expect(shrink.stderr).toContain("--allow-shrink");
    const lossy = await runDstd(["resize", "p", "64MiB", "--allow-shrink", "--state-dir", stateDir]);
    expect(lossy.exitCode).not.toBe(0);
    expect(lossy.stderr).toContain("holds data past");
    await bob.close();
  }, 60_000);
});
