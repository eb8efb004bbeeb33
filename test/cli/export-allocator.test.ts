/**
 * `dstd export` re-executes itself once with MIMALLOC_PURGE_DELAY=-1 (src/sys/allocator.ts):
 * the running export has the option in its environment, keeps its pid and its argv, and a
 * value the user set is left alone. The plan itself (argv from /proc/self/cmdline, the
 * environment) is checked without executing anything.
 */
import { describe, expect, test } from "bun:test";
import { spawn } from "bun";
import { readFileSync } from "node:fs";
import { ensureBinary } from "../helpers/binary.ts";
import { keepFreedPagesPlan, PURGE_DELAY_ENV } from "../../src/sys/allocator.ts";

describe("keepFreedPagesPlan", () => {
  test("adds the option to the environment and keeps argv as /proc/self/cmdline has it", () => {
    const plan = keepFreedPagesPlan({ PATH: "/usr/bin", EMPTY: "", GONE: undefined }, "@dstd\0export\0--name\0disk\0");
    expect(plan).toEqual({ argv: ["@dstd", "export", "--name", "disk"], env: ["PATH=/usr/bin", "EMPTY=", `${PURGE_DELAY_ENV}=-1`] });
  });

  test("a value already set (even empty) means nothing to do, so a re-executed process never loops", () => {
    expect(keepFreedPagesPlan({ [PURGE_DELAY_ENV]: "-1" }, "dstd\0export\0")).toBeNull();
    expect(keepFreedPagesPlan({ [PURGE_DELAY_ENV]: "" }, "dstd\0export\0")).toBeNull();
    expect(keepFreedPagesPlan({}, "")).toBeNull();
  });
});

async function runningExport(env: Record<string, string | undefined>): Promise<{ environ: string[]; cmdline: string[]; pid: number }> {
  const child = spawn([ensureBinary(), "export", "--memory", "1MiB", "--listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw"], {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
    env,
  });
  try {
    // Listening means the re-executed image is the one running (it happens before any socket).
    let text = "";
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      text += decoder.decode(chunk);
      if (text.includes("listening for DST on")) break;
    }
    expect(text).toContain("listening for DST on");
    const environ = readFileSync(`/proc/${child.pid}/environ`, "utf8").split("\0");
    const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, "utf8").split("\0").filter((s) => s !== "");
    return { environ, cmdline, pid: child.pid };
  } finally {
    child.kill("SIGTERM");
    await child.exited;
  }
}

describe("dstd export keeps the pages it freed", () => {
  const { [PURGE_DELAY_ENV]: _unset, ...base } = process.env;

  test("the running export has MIMALLOC_PURGE_DELAY=-1, the same pid and the same arguments", async () => {
    const { environ, cmdline } = await runningExport({ ...base, DSTD_MARKER: "kept" });
    expect(environ).toContain(`${PURGE_DELAY_ENV}=-1`);
    expect(environ).toContain("DSTD_MARKER=kept");
    expect(cmdline.slice(-7)).toEqual(["export", "--memory", "1MiB", "--listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw"]);
  }, 30_000);

  test("a purge delay the user set is kept as it is", async () => {
    const { environ } = await runningExport({ ...base, [PURGE_DELAY_ENV]: "500" });
    expect(environ).toContain(`${PURGE_DELAY_ENV}=500`);
    expect(environ).not.toContain(`${PURGE_DELAY_ENV}=-1`);
  }, 30_000);
});
