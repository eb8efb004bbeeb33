/**
 * The docs a newcomer reads agree with what dstd does (issue 14 item 10): the README
 * documents every field `dstd list --json` prints (checked against a real --nbd-listen
 * attachment and against the kernel fields' declaration), docs/security.md does not
 * contradict itself about frame headers and cites nothing outside the repository.
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ensureBinary, runDstd, startExport } from "../helpers/binary.ts";
import { scratchDir } from "../helpers/files.ts";
import { until } from "../helpers/wait.ts";

const root = resolve(import.meta.dir, "../..");
const readme = readFileSync(join(root, "README.md"), "utf8");
const security = readFileSync(join(root, "docs/security.md"), "utf8");
const scratch = scratchDir("cli-docs");
afterAll(() => scratch.remove());

/** The README's `dstd list --json` table: the field names of its rows, and the words of its cells. */
function documentedFields(): string {
  const start = readme.indexOf("`dstd list --json`");
  expect(start).toBeGreaterThan(0);
  return readme.slice(start, readme.indexOf("\n\n", readme.indexOf("| field |", start)));
}

describe("README: dstd list --json", () => {
  test("every field of a real attachment's record is documented", async () => {
    const exp = await startExport(["--memory", "4MiB", "--allow", "127.0.0.1/32:rw"]);
    const stateDir = join(scratch.path, "state");
    const socket = join(scratch.path, "attach.sock");
    let attach: Subprocess | null = null;
    try {
      const attachLog = join(scratch.path, "attach.log");
      attach = Bun.spawn(
        [ensureBinary(), "attach", `dst://127.0.0.1:${exp.port}/disk`, "--nbd-listen", `unix:${socket}`, "--state-dir", stateDir],
        { stdin: "ignore", stdout: "ignore", stderr: Bun.file(attachLog) },
      );
      await until(() => existsSync(join(stateDir, "attach")) && (readFileSync(attachLog, "utf8").includes("ready") || attach!.exitCode !== null), "the attachment's state record", 20_000);
      const list = await runDstd(["list", "--json", "--state-dir", stateDir]);
      expect(list.exitCode).toBe(0);
      const records = JSON.parse(list.stdout) as Array<Record<string, unknown>>;
      expect(records).toHaveLength(1);
      const table = documentedFields();
      const missing: string[] = [];
      for (const [key, value] of Object.entries(records[0]!)) {
        if (!table.includes(`\`${key}\``)) missing.push(key);
        if (value !== null && typeof value === "object") {
          for (const sub of Object.keys(value)) if (!table.includes(`\`${sub}\``)) missing.push(`${key}.${sub}`);
        }
      }
      expect(missing).toEqual([]);
      expect(records[0]!.mode).toBe("nbd-listen");
    } finally {
      attach?.kill("SIGTERM");
      await attach?.exited;
      await exp.stop();
    }
    const empty = await runDstd(["list", "--json", "--state-dir", join(scratch.path, "none")]);
    expect(empty.stdout).toBe("[]\n");
  }, 60_000);

  test("the kernel attachment's fields (declared in src/attach/state.ts) are documented", () => {
    const source = readFileSync(join(root, "src/attach/state.ts"), "utf8");
    const body = /export interface KernelFacts \{([\s\S]*?)\n\}/.exec(source)![1]!;
    const fields = [...body.matchAll(/^\s+([a-zA-Z]+):/gm)].map((m) => m[1]!);
    expect(fields.length).toBeGreaterThan(5);
    const table = documentedFields();
    expect(fields.filter((f) => !table.includes(`\`${f}\``))).toEqual([]);
  });
});

describe("docs/security.md", () => {
  test("§7 agrees with §5: frame headers travel inside sealed records", () => {
    const section7 = security.slice(security.indexOf("## 7."), security.indexOf("## 8."));
    expect(section7).not.toMatch(/headers travel in clear/i);
    expect(security.slice(security.indexOf("## 5."), security.indexOf("## 6."))).toContain("Frame headers are therefore encrypted too.");
  });

  test("cites nothing outside the repository", () => {
    expect(security).not.toMatch(/\/work\/|shared\/reference|shared\/design|perf-anchors/);
  });
});
