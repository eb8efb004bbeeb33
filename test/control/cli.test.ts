/**
 * The node commands from a user's side, with the compiled binary: `dstd status` with no node
 * (the attachment view of `dstd list`, merged), `events`/`reload` with no node (a clear
 * error), `dstd up` refusing bad input before binding anything, a second node on the same
 * state directory refused, and a killed node's stale socket not in anyone's way.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeState } from "../../src/attach/state.ts";
import { ensureBinary, runDstd } from "../helpers/binary.ts";
import { startNode } from "../helpers/node-process.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-nodecli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
chmodSync(dir, 0o755); // so another user gets as far as the state directory itself
const noEnv = { DSTD_STATE_DIR: "" };

/** A one-export config; `top` goes before the tables, `tail` after them. */
function nodeConfig(name: string, top = "", tail = ""): { path: string; stateDir: string } {
  const stateDir = join(dir, name);
  const path = join(dir, `${name}.toml`);
  writeFileSync(path, `${top}state_dir = "${stateDir}"\n[[export]]\nname = "d"\nmemory = "1MiB"\nlisten = "unix:${join(dir, `${name}.sock`)}"\nallow = ["unix:rw"]\n${tail}`);
  return { path, stateDir };
}

describe("without a node", () => {
  test("dstd status: says so, then the standalone attachments (or none)", async () => {
    const stateDir = join(dir, "empty");
    const r = await runDstd(["status", "--state-dir", stateDir]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(`no dstd up node is running (nothing answers on ${join(stateDir, "control.sock")})\nno attachments\n`);
    const json = JSON.parse((await runDstd(["status", "--json", "--state-dir", stateDir])).stdout);
    expect(json).toMatchObject({ schema: "dstd-status", version: 1, node: null, services: [], attachments: [] });
  });

  test("dstd status lists what standalone dstd attach daemons recorded", async () => {
    const stateDir = join(dir, "standalone");
    const now = new Date().toISOString();
    writeState(stateDir, {
      device: "unix:/run/x.sock",
      url: "dst://h:10810/disk",
      mode: "nbd-listen",
      backendId: null,
      pid: process.pid,
      state: "ready",
      startedAt: now,
      updatedAt: now,
      counters: { inflight: 2, resends: 3, reconnects: 1, replays: 0, keepaliveFailures: 0, timeouts: 0 },
    });
    const r = await runDstd(["status", "--state-dir", stateDir]);
    expect(r.stdout).toMatch(/unix:\/run\/x\.sock\s+dst:\/\/h:10810\/disk\s+ready\s+\d+\s+2\s+3\s+1/);
    const json = JSON.parse((await runDstd(["status", "--json", "--state-dir", stateDir])).stdout);
    expect(json.attachments).toHaveLength(1);
    expect(json.attachments[0].device).toBe("unix:/run/x.sock");
  });

  test("dstd events and dstd reload: a clear error, exit 1", async () => {
    for (const command of ["events", "reload"]) {
      const r = await runDstd([command, "--state-dir", join(dir, "empty")]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toBe(`dstd ${command}: no dstd up node is running with state directory ${join(dir, "empty")} (nothing answers on ${join(dir, "empty", "control.sock")})\n`);
    }
  });
});

describe("dstd up refuses bad input before binding anything", () => {
  test.each([
    ["an invalid config", 'log_level = "loud"\n', "", /log_level: "loud" is not one of/],
    ["two units on one address", "", `[[attach]]\nurl = "dst://h/x"\nnbd_listen = "unix:${join(dir, "NAME.sock")}"\n`, /attach\[0\]\.nbd_listen: unix:\S+\.sock is also the DST listen address at export\[0\]\.listen/],
    ["metrics on a Unix socket", 'metrics_listen = "unix:/tmp/m.sock"\n', "", /metrics_listen: metrics are served over TCP only/],
    ["a key file that cannot be read", "", `[[key]]\nidentity = "alice"\nfile = "${join(dir, "missing.key")}"\n`, /missing\.key/],
  ])("%s: exit 2 with the reason", async (_what, top, tail, message) => {
    const name = `bad${Math.random().toString(36).slice(2, 8)}`;
    const { path, stateDir } = nodeConfig(name, top, tail.replaceAll("NAME", name));
    const r = await runDstd(["up", "--config", path], noEnv);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(existsSync(stateDir)).toBe(false);
  });

  test("--metrics-listen and --log-format are checked", async () => {
    const { path } = nodeConfig("flags");
    expect((await runDstd(["up", "--config", path, "--metrics-listen", "unix:/x"], noEnv)).stderr).toContain("--metrics-listen: metrics are served over TCP only");
    expect((await runDstd(["up", "--config", path, "--log-format", "xml"], noEnv)).stderr).toContain("--log-format: 'xml' is not one of text, json");
  });
});

describe("one node per state directory", () => {
  test("a second node is refused; a killed node's stale socket is not in the way", async () => {
    const { path, stateDir } = nodeConfig("single");
    const first = startNode(["--config", path], noEnv);
    await first.waitForLog(/ready: /, "the first node to be ready");
    const { path: other } = nodeConfig("single2");
    const second = await runDstd(["up", "--config", other, "--state-dir", stateDir], noEnv);
    expect(second.exitCode).toBe(1);
    expect(second.stderr).toContain(`another dstd node is running with state directory ${stateDir}`);
    expect(await first.stop("SIGKILL")).not.toBe(0);
    expect(existsSync(join(stateDir, "control.sock"))).toBe(true); // left behind by kill -9
    expect((await runDstd(["status", "--state-dir", stateDir])).stdout).toContain("no dstd up node is running");
    const third = startNode(["--config", path], noEnv);
    try {
      await third.waitForLog(/ready: /, "a new node on the stale socket");
    } finally {
      expect(await third.stop()).toBe(0);
    }
  });
});

describe("owner only", () => {
  test.skipIf(process.getuid?.() !== 0)("another user is told permission denied, not 'no node'", async () => {
    const { path, stateDir } = nodeConfig("private");
    const node = startNode(["--config", path], noEnv);
    try {
      await node.waitForLog(/ready: /, "the node to be ready");
      for (const command of ["status", "reload", "events"]) {
        const r = Bun.spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ensureBinary(), command, "--state-dir", stateDir]);
        expect(r.stderr.toString()).toContain(`cannot use the control socket ${join(stateDir, "control.sock")}: permission denied`);
        expect(r.exitCode).toBe(1);
      }
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });
});
