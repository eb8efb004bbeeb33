/**
 * Every command line in README.md works as written on a machine that has only Node.js and
 * npm after `npm ci` (issue 14 item 3): there is no global `bun` then, so a line may start
 * with `npm`, `npx bun`, `dist/dstd` or a named external tool, and nothing else. For each:
 * `npm` scripts exist; `npx bun` files and test paths exist (and `npx bun` resolves);
 * every `dist/dstd` line parses under the strict parser (each option exists, no stray
 * argument) and its subcommand's --help runs; the safe lines run for real. The lines
 * `npm start` (the demo) prints run from another directory.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { COMMANDS } from "../../src/cli/index.ts";
import { parseCommandLine } from "../../src/cli/parse.ts";
import { ensureBinary, runDstd } from "../helpers/binary.ts";
import { scratchDir } from "../helpers/files.ts";
import { until } from "../helpers/wait.ts";

const root = resolve(import.meta.dir, "../..");
const readme = readFileSync(join(root, "README.md"), "utf8");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> };
const scratch = scratchDir("cli-readme");
afterAll(() => scratch.remove());

/** Tools a README line may name besides npm, npx bun and dist/dstd (Debian packages, coreutils). */
const EXTERNAL = new Set(["nbdinfo", "gzip", "gunzip", "head", "cmp", "install", "systemctl"]);

/** The lines of every ```sh block, without comments. */
function readmeLines(): string[] {
  const lines: string[] = [];
  for (const block of readme.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const raw of block[1]!.split("\n")) {
      const line = raw.replace(/(^|\s)#.*$/, "").trim();
      if (line !== "") lines.push(line);
    }
  }
  return lines;
}

/** Shell-like words: double quotes group, `$(…)` becomes its own command, `&& | < >` split commands. */
function commandsOf(line: string): string[][] {
  const commands: string[][] = [];
  const inner = [...line.matchAll(/\$\(([^)]*)\)/g)].map((m) => m[1]!);
  for (const text of inner) commands.push(...commandsOf(text));
  const outer = line.replace(/\$\([^)]*\)/g, "SUBST");
  let words: string[] = [];
  let skipNext = false;
  for (const match of outer.matchAll(/"([^"]*)"|(\S+)/g)) {
    const word = match[1] ?? match[2]!;
    if (match[2] === "&&" || match[2] === "|") {
      commands.push(words);
      words = [];
    } else if (match[2] === ">" || match[2] === "<") skipNext = true;
    else if (skipNext) skipNext = false;
    else words.push(word);
  }
  commands.push(words);
  return commands.filter((c) => c.length > 0);
}

const lines = readmeLines();

describe("README command lines", () => {
  test("the README has the front-door lines", () => {
    expect(lines).toContain("npm ci && npm start");
    expect(lines).toContain("npm ci && npm test");
  });

  test("every command is npm, npx bun, dist/dstd or a named tool, and resolves", async () => {
    const problems: string[] = [];
    const subcommands = new Set<string>();
    for (const line of lines) {
      for (const words of commandsOf(line)) {
        const command = words.filter((w, i) => !(i < words.findIndex((x) => !/^[A-Z_]+=/.test(x)) && /^[A-Z_]+=/.test(w)));
        const [tool, ...args] = command;
        if (tool === "npm") {
          const script = args[0] === "run" ? args[1]! : args[0]!;
          if (script !== "ci" && pkg.scripts[script] === undefined) problems.push(`${line}: no npm script '${script}'`);
        } else if (tool === "npx") {
          if (args[0] !== "bun") problems.push(`${line}: npx ${args[0]} is not a dependency`);
          const paths = args[1] === "test" ? args.slice(2) : args.slice(1, 2);
          for (const path of paths) if (!existsSync(join(root, path))) problems.push(`${line}: ${path} does not exist`);
        } else if (tool === "dist/dstd") {
          const name = args[0]!;
          const entry = COMMANDS[name];
          if (entry === undefined) {
            problems.push(`${line}: no dstd command '${name}'`);
            continue;
          }
          subcommands.add(name);
          try {
            parseCommandLine(args.slice(1), await entry.load(), name);
          } catch (error) {
            problems.push(`${line}: ${(error as Error).message}`);
          }
        } else if (!EXTERNAL.has(tool!)) {
          problems.push(`${line}: '${tool}' is not available after npm ci (use npm run, npx bun or dist/dstd)`);
        }
      }
    }
    expect(problems).toEqual([]);
    for (const name of subcommands) {
      const help = await runDstd([name, "--help"]);
      expect(help.exitCode).toBe(0);
      expect(help.stdout).toStartWith(`Usage: dstd ${name}`);
    }
    expect(subcommands.size).toBeGreaterThanOrEqual(8);
  });

  test("npx bun resolves to the installed bun", () => {
    const r = Bun.spawnSync(["npx", "--no-install", "bun", "--version"], { cwd: root, stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  test("the safe lines run as written", async () => {
    const check = lines.find((l) => l.startsWith("dist/dstd check-config"))!;
    const checked = Bun.spawnSync(["sh", "-c", check], { cwd: root, stdout: "pipe", stderr: "pipe" });
    expect(checked.exitCode).toBe(0);
    expect(checked.stdout.toString()).toContain(": ok (");
    // keygen writes alice.key into the current folder: run it in a scratch folder.
    const keygen = lines.find((l) => l.startsWith("dist/dstd keygen"))!;
    const made = Bun.spawnSync(["sh", "-c", keygen.replace(/^dist\/dstd/, ensureBinary())], { cwd: scratch.path, stdout: "pipe", stderr: "pipe" });
    expect(made.stdout.toString()).toBe(`wrote key for identity 'alice' to alice.key (mode 0600)\n`);
    for (const simple of ["dist/dstd help", "dist/dstd list"]) {
      const line = lines.find((l) => l === simple || l.startsWith(`${simple} `))!;
      const r = Bun.spawnSync(["sh", "-c", line], { cwd: root, stdout: "pipe", stderr: "pipe", env: { ...process.env, DSTD_STATE_DIR: scratch.path } });
      expect(r.exitCode).toBe(0);
    }
  });
});

describe("the demo (npm start)", () => {
  test("its printed lines run from another directory", async () => {
    const data = join(scratch.path, "demo");
    const log = join(scratch.path, "demo.out");
    const demo = Bun.spawn([ensureBinary(), "demo", "--dir", data, "--port", "0"], { stdin: "ignore", stdout: Bun.file(log), stderr: "ignore" });
    try {
      const out = () => (existsSync(log) ? readFileSync(log, "utf8") : "");
      await until(() => out().includes("Press Ctrl-C to stop."), "the demo's instructions", 20_000);
      const printed = out().split("\n").filter((l) => l.startsWith("  ")).map((l) => l.trim());
      expect(printed).toHaveLength(3);
      const elsewhere = scratchDir("cli-demo-cwd");
      try {
        // The sample and the upload: as printed, from a folder that is not the repository.
        for (const line of printed.slice(0, 2)) {
          const r = Bun.spawnSync(["sh", "-c", line], { cwd: elsewhere.path, stdout: "pipe", stderr: "pipe" });
          expect(r.stderr.toString().replace(/^\[.*\n?/gm, "")).not.toContain("dstd");
          expect(r.exitCode).toBe(0);
        }
        // The download names the same executable (1 GiB back over loopback: too slow to run here).
        const executable = printed[1]!.split(" ")[0]!;
        expect(printed[2]!.startsWith(`${executable} copy dst://127.0.0.1:`)).toBe(true);
        expect(executable.startsWith("/")).toBe(true);
        expect(existsSync(executable)).toBe(true);
      } finally {
        elsewhere.remove();
      }
    } finally {
      demo.kill("SIGINT");
      await demo.exited;
    }
  }, 120_000);
});
