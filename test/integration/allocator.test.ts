/**
 * sys/allocator.ts with the compiled binary: a command that moves data re-executes itself
 * once with MIMALLOC_PURGE_DELAY set (same pid, same arguments), so that the allocator keeps
 * freed pages for the next socket buffers (docs/performance.md); a value the caller set is
 * kept as it is, and the node works either way.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PURGE_DELAY_MS, PURGE_DELAY_VARIABLE } from "../../src/sys/allocator.ts";
import { startNode } from "../helpers/node-process.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-alloc-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function config(name: string): string {
  const path = join(dir, `${name}.toml`);
  writeFileSync(path, `state_dir = "${join(dir, name)}"\n[[export]]\nname = "d"\nmemory = "1MiB"\nlisten = "unix:${join(dir, `${name}.sock`)}"\nallow = ["unix:rw"]\n`);
  return path;
}

const environ = (pid: number) => readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").filter((x) => x !== "");
const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter((x) => x !== "");

describe("allocator option for data-path commands", () => {
  test("dstd up without it: re-executed in place with the option, same pid and arguments", async () => {
    const path = config("unset");
    const node = startNode(["--config", path], { DSTD_STATE_DIR: undefined, [PURGE_DELAY_VARIABLE]: undefined });
    try {
      await node.waitForLog(/ready: /, "the ready log line");
      // Read from the pid we spawned: a forked helper would not show up there.
      expect(environ(node.child.pid)).toContain(`${PURGE_DELAY_VARIABLE}=${PURGE_DELAY_MS}`);
      expect(cmdline(node.child.pid).slice(1)).toEqual(["up", "--config", path]);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });

  test("a value the caller set is kept", async () => {
    const path = config("set");
    const node = startNode(["--config", path], { DSTD_STATE_DIR: undefined, [PURGE_DELAY_VARIABLE]: "10" });
    try {
      await node.waitForLog(/ready: /, "the ready log line");
      const values = environ(node.child.pid).filter((x) => x.startsWith(`${PURGE_DELAY_VARIABLE}=`));
      expect(values).toEqual([`${PURGE_DELAY_VARIABLE}=10`]);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });
});
