/**
 * systemd's root-storage-daemon convention with the compiled binary: `dstd up
 * --root-storage-daemon` re-executes itself so /proc/PID/cmdline starts with '@', keeping
 * its pid (a Type=notify service's MAINPID must not change), its arguments and its
 * environment; without the option argv[0] is untouched. Text logs carry timestamps.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runDstd } from "../helpers/binary.ts";
import { startNode } from "../helpers/node-process.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-root-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function config(name: string): string {
  const path = join(dir, `${name}.toml`);
  writeFileSync(path, `state_dir = "${join(dir, name)}"\n[[export]]\nname = "d"\nmemory = "1MiB"\nlisten = "unix:${join(dir, `${name}.sock`)}"\nallow = ["unix:rw"]\n`);
  return path;
}

const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter((x) => x !== "");

describe("--root-storage-daemon", () => {
  test("argv[0] becomes '@dstd', same pid, same arguments, and the node works", async () => {
    const path = config("marked");
    const node = startNode(["--config", path, "--root-storage-daemon"], { DSTD_STATE_DIR: undefined });
    try {
      await node.waitForLog(/INFO {2}ready: /, "the ready log line");
      expect(cmdline(node.child.pid)).toEqual(["@dstd", "up", "--config", path, "--root-storage-daemon"]);
      const status = JSON.parse((await runDstd(["status", "--json", "--state-dir", join(dir, "marked")])).stdout);
      expect(status.node.pid).toBe(node.child.pid);
      // text logs: ISO timestamp, level, then the message; no blank lines
      for (const line of node.stderr().trimEnd().split("\n")) expect(line).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO |WARN |ERROR|DEBUG) /);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });

  test("without it, argv[0] is left alone", async () => {
    const path = config("plain");
    const node = startNode(["--config", path], { DSTD_STATE_DIR: undefined });
    try {
      await node.waitForLog(/ready: /, "the ready log line");
      expect(cmdline(node.child.pid)[0]!.startsWith("@")).toBe(false);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });
});
