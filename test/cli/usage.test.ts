/**
 * The command line as a careless user meets it (issue 14 items 1, 5 and 6), through the
 * compiled executable: unknown flags and stray arguments are usage errors that name them and
 * suggest the nearest flag; usage errors are one line with exit 2, runtime failures exit 1,
 * and no stack trace appears unless --log-level debug; `dstd help`/`dstd version` exist; help
 * fits 80 columns without escape codes off a terminal and the terminal's width on one;
 * a missing argument shows that command's usage; conventional short options work.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { runDstd, startExport } from "../helpers/binary.ts";
import { scratchDir } from "../helpers/files.ts";
import { haveTools } from "../helpers/tools.ts";
import pkg from "../../package.json" with { type: "json" };

const scratch = scratchDir("cli-usage");
afterAll(() => scratch.remove());

/** Nothing that looks like a stack frame ("    at run (src/cli/export.ts:63:17)"). */
const STACK = /^\s+at .+[:(]/m;

function oneLine(text: string): string {
  const lines = text.trimEnd().split("\n");
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

describe("strict flags (item 1)", () => {
  test("a misspelt flag is named, with the nearest known one, and nothing starts", async () => {
    const file = join(scratch.path, "typo.img");
    const r = await runDstd(["export", "--file", file, "--size", "1MiB", "--alow", "127.0.0.1/32:rw"]);
    expect(r.exitCode).toBe(2);
    expect(oneLine(r.stderr)).toBe("dstd export: unknown option --alow (did you mean --allow?); see 'dstd export --help'");
    expect(r.stdout).toBe("");
    expect(existsSync(file)).toBe(false);
  });

  test("-p PORT (nbdkit, qemu-nbd habit) says what to write instead", async () => {
    const r = await runDstd(["export", "--memory", "1MiB", "-p", "10820"]);
    expect(r.exitCode).toBe(2);
    expect(oneLine(r.stderr)).toBe("dstd export: there is no -p option: use --listen HOST:PORT");
  });

  test("an unquoted `--size 10 GB` is refused, never a 10-byte disk", async () => {
    const file = join(scratch.path, "ten.img");
    const r = await runDstd(["export", "--file", file, "--size", "10", "GB", "--allow", "127.0.0.1/32:rw"]);
    expect(r.exitCode).toBe(2);
    expect(oneLine(r.stderr)).toContain(`unexpected argument 'GB' after --size 10 (a value with a space must be quoted: --size "10 GB")`);
    expect(existsSync(file)).toBe(false);
  });

  test("copy takes SOURCE TARGET and nothing more; its unknown flags are refused too", async () => {
    const extra = await runDstd(["copy", "a.img", "dst://127.0.0.1/disk", "b.img"]);
    expect(extra.exitCode).toBe(2);
    expect(oneLine(extra.stderr)).toBe("dstd copy: unexpected argument 'b.img'; copy takes SOURCE TARGET");
    const typo = await runDstd(["copy", "a.img", "dst://127.0.0.1/disk", "--deadlin", "5s"]);
    expect(typo.exitCode).toBe(2);
    expect(oneLine(typo.stderr)).toContain("unknown option --deadlin (did you mean --deadline?)");
  });

  test("a flag without its value, and a single-value flag given twice", async () => {
    const missing = await runDstd(["export", "--memory"]);
    expect(missing.exitCode).toBe(2);
    expect(oneLine(missing.stderr)).toBe("dstd export: --memory needs a value: --memory SIZE");
    const twice = await runDstd(["export", "--memory", "1MiB", "--memory", "2MiB"]);
    expect(twice.exitCode).toBe(2);
    expect(oneLine(twice.stderr)).toBe("dstd export: --memory was given twice ('1MiB' and '2MiB'); give it once");
  });

  test("a bad value for a tree built from flags names the flag the user gave, once", async () => {
    const legs = (kind: string, n: number) => Array.from({ length: n }, (_, i) => [`--${kind}`, join(scratch.path, `leg${i}.img`)]).flat();
    const cases: Array<[string[], string]> = [
      [[...legs("linear", 2), "--size", "1x"], 'dstd export: command line: --size: "1x" is not a size: unknown unit "x"; use B, KiB, MiB, GiB, TiB or PiB'],
      [[...legs("stripe", 2), "--size", "1MiB", "--stripe-chunk", "3KiB"], 'dstd export: command line: --stripe-chunk: "3KiB" is too small; the minimum is 4 KiB'],
      [[...legs("mirror", 9), "--size", "1MiB"], "dstd export: command line: --mirror: a mirror has at most 8 legs (got 9)"],
      [["--memory", "1MiB", "--log-dir", join(scratch.path, "log"), "--log-size", "bogus"], 'dstd export: command line: --log-size: "bogus" is not a size; use e.g. "10GiB", "512MiB" or a byte count'],
    ];
    for (const [args, message] of cases) {
      const r = await runDstd(["export", ...args]);
      expect(r.exitCode).toBe(2);
      expect(oneLine(r.stderr)).toBe(message);
    }
    expect(existsSync(join(scratch.path, "leg0.img"))).toBe(false);
  });

  test("repeatable flags repeat; an unknown command suggests the nearest", async () => {
    // startExport adds --listen 127.0.0.1:0: this is the second --listen.
    const socket = join(scratch.path, "two.sock");
    const exp = await startExport(["--memory", "1MiB", "--listen", `unix:${socket}`, "--allow", "127.0.0.1/32:rw", "--allow", "unix:ro"]);
    await exp.stop();
    expect(exp.log()).toContain(`listening for DST on unix:${socket}`);
    const r = await runDstd(["exprot"]);
    expect(r.exitCode).toBe(2);
    expect(oneLine(r.stderr)).toBe("dstd: unknown command 'exprot' (did you mean 'export'?); run 'dstd help' for the list");
  });
});

describe("exit status and messages (item 5)", () => {
  test("nothing to export: one line, exit 2, no stack trace", async () => {
    const r = await runDstd(["export"]);
    expect(r.exitCode).toBe(2);
    expect(oneLine(r.stderr)).toStartWith("dstd export: nothing to export: give --file PATH");
    expect(r.stderr).not.toMatch(STACK);
  });

  test("a bad value is a usage error (2); a runtime failure is 1; --log-level debug adds the stack", async () => {
    const bad = await runDstd(["copy", "x.img", "dst://127.0.0.1/disk", "--inflight", "0"]);
    expect(bad.exitCode).toBe(2);
    expect(oneLine(bad.stderr)).toBe("dstd copy: --inflight: '0' is not a whole number from 1 to 1024");
    // Numbers are written as decimal digits: hex and exponents are not taken at another value.
    for (const odd of ["0x10", "1e1", " 8"]) {
      const r = await runDstd(["copy", "x.img", "dst://127.0.0.1/disk", "--inflight", odd]);
      expect([r.exitCode, oneLine(r.stderr)]).toEqual([2, `dstd copy: --inflight: '${odd}' is not a whole number from 1 to 1024`]);
    }
    const tiny = await runDstd(["copy", "x.img", "dst://127.0.0.1/disk", "--chunk", "0"]);
    expect([tiny.exitCode, oneLine(tiny.stderr)]).toEqual([2, "dstd copy: --chunk: '0' is below 4KiB, the smallest request a copy makes"]);
    const since = await runDstd(["events", "--since="]);
    expect([since.exitCode, oneLine(since.stderr)]).toEqual([2, "dstd events: --since: '' is not a sequence number (0 or more)"]);
    const key = join(scratch.path, "missing.key");
    const runtime = await runDstd(["copy", join(import.meta.dir, "usage.test.ts"), "dst://127.0.0.1:1/disk", "--key-file", key]);
    expect(runtime.exitCode).toBe(1);
    expect(oneLine(runtime.stderr)).toContain(`key file ${key} does not exist`);
    expect(runtime.stderr).not.toMatch(STACK);
    const debug = await runDstd(["export", "--log-level", "debug"]);
    expect(debug.exitCode).toBe(2);
    expect(debug.stderr).toMatch(STACK);
  });
});

describe("help (item 6)", () => {
  test("dstd help and dstd version are commands", async () => {
    const help = await runDstd(["help"]);
    expect(help.exitCode).toBe(0);
    for (const name of ["export", "copy", "check-config", "keygen", "attach", "detach", "list", "help", "version"]) {
      expect(help.stdout).toMatch(new RegExp(`^  ${name} `, "m"));
    }
    const version = await runDstd(["version"]);
    expect(version.exitCode).toBe(0);
    expect(version.stdout).toBe(`${pkg.version}\n`);
    const helpCopy = await runDstd(["help", "copy"]);
    expect(helpCopy.stdout).toStartWith("Usage: dstd copy [OPTIONS] SOURCE TARGET\n");
  });

  test("off a terminal: every line fits 80 columns, and there are no escape codes", async () => {
    for (const args of [["help"], ["export", "--help"], ["copy", "--help"], ["attach", "--help"], ["check-config", "-h"]]) {
      const r = await runDstd(args);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).not.toContain("\u001B");
      const long = r.stdout.split("\n").filter((line) => line.length > 80);
      expect(long).toEqual([]);
    }
  });

  test("on a terminal: wrapped to its width, headings bold", async () => {
    if (!haveTools({ script: "bsdutils", stty: "coreutils" })) return;
    const dstd = (await import("../helpers/binary.ts")).ensureBinary();
    const run = Bun.spawnSync(["script", "-qec", `stty cols 60 rows 40; ${dstd} export --help`, "/dev/null"], { stdout: "pipe", stderr: "pipe" });
    const text = run.stdout.toString().replaceAll("\r", "");
    expect(text).toContain("\u001B[1mOptions:\u001B[22m");
    // eslint-disable-next-line no-control-regex
    const visible = text.replace(/\u001B\[[0-9;]*m/g, "").split("\n");
    expect(visible.some((line) => line.includes("--read-only"))).toBe(true);
    expect(visible.filter((line) => line.length > 60)).toEqual([]);
  });

  test("a missing argument shows that command's usage, not the list of commands", async () => {
    const r = await runDstd(["copy", "only-source.img"]);
    expect(r.exitCode).toBe(2);
    const [first, blank, usage] = r.stderr.split("\n");
    expect(first).toBe("dstd copy: missing TARGET");
    expect(blank).toBe("");
    expect(usage).toBe("Usage: dstd copy [OPTIONS] SOURCE TARGET");
    expect(r.stderr).toContain("--deadline DURATION");
    expect(r.stderr).not.toContain("check-config");
    const keygen = await runDstd(["keygen"]);
    expect(keygen.stderr).toStartWith("dstd keygen: missing --identity NAME\n\nUsage: dstd keygen --identity NAME --out FILE [OPTIONS]\n");
  });

  test("short options where the ecosystem has them: -r (read-only), -p (progress), -h, -V", async () => {
    const exp = await startExport(["--memory", "1MiB", "-r", "--allow", "127.0.0.1/32:rw"]);
    await exp.stop();
    expect(exp.log()).toContain("(read-only)");
    expect((await runDstd(["-V"])).stdout).toBe(`${pkg.version}\n`);
    expect((await runDstd(["copy", "-h"])).stdout).toContain("-p, --progress");
    expect((await runDstd(["-h"])).stdout).toContain("Usage: dstd COMMAND [OPTIONS]");
  });
});
