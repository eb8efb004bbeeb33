/**
 * `dstd export --config FILE` with export flags (compiled binary): every flag given applies to
 * the export it names, or to the file's only export, or the command fails (exit 2) saying
 * why it cannot. Before, the flags were merged only when a backend flag, --log-dir, --listen
 * or --allow came with them: `--config c.toml --read-only --nbd-listen … --description …`
 * served the file's export read-write, without NBD, and a `dstd copy` into it exited 0;
 * `--no-read-only` could never undo `read_only = true`. One test per flag family: read-only,
 * NBD listener and description, --name, and the Ceph flags.
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ensureBinary, runDstd } from "../helpers/binary.ts";
import { scratchDir } from "../helpers/files.ts";
import { haveTools } from "../helpers/tools.ts";
import { until } from "../helpers/wait.ts";

const scratch = scratchDir("export-flags");
const sock = (name: string) => join(scratch.path, `${name}.sock`);
const source = join(scratch.path, "source.img");
writeFileSync(source, new Uint8Array(4096).fill(7));
const running: Subprocess[] = [];
afterAll(async () => {
  for (const child of running) child.kill("SIGTERM");
  await Promise.all(running.map((child) => child.exited));
  scratch.remove();
});

/** A config of memory exports, each on its own DST socket `<name>-dst`; `extra` adds keys to all. */
function config(file: string, names: string[], extra = ""): string {
  const path = join(scratch.path, file);
  const table = (name: string) => `[[export]]\nname = "${name}"\nmemory = "1MiB"\nlisten = ["unix:${sock(`${name}-dst`)}"]\nallow = ["unix:rw"]\n${extra}`;
  writeFileSync(path, names.map(table).join("\n"));
  return path;
}

/** Start `dstd export ARGS` and wait until it logs `ready` (its last listener). */
async function serve(args: string[], ready: string): Promise<() => string> {
  const logPath = join(scratch.path, `export-${running.length}.log`);
  const child = Bun.spawn([ensureBinary(), "export", ...args], { stdin: "ignore", stdout: "ignore", stderr: Bun.file(logPath) });
  running.push(child);
  const log = () => (existsSync(logPath) ? readFileSync(logPath, "utf8") : "");
  await until(() => log().includes(ready) || child.exitCode !== null, ready, 20_000);
  expect(child.exitCode).toBeNull();
  return log;
}

/** `dstd copy` of 4 KiB into export `name` over its DST socket: its exit code and stderr. */
async function write(name: string): Promise<{ exitCode: number; stderr: string }> {
  const { exitCode, stderr } = await runDstd(["copy", source, `dst+unix:///${name}?socket=${sock(`${name}-dst`)}`]);
  return { exitCode, stderr };
}

describe("dstd export --config FILE: export flags apply or fail", () => {
  test("--read-only makes the file's only export read-only; --no-read-only undoes read_only = true", async () => {
    await serve(["--config", config("ro.toml", ["ro"]), "--read-only"], `listening for DST on unix:${sock("ro-dst")}`);
    const refused = await write("ro");
    expect(refused.stderr).toContain("export 'ro' is read-only");
    expect(refused.exitCode).toBe(1);
    await serve(["--config", config("rw.toml", ["rw"], "read_only = true\n"), "--no-read-only"], `listening for DST on unix:${sock("rw-dst")}`);
    expect(await write("rw")).toEqual({ exitCode: 0, stderr: "" });
  }, 30_000);

  test("--nbd-listen and --description reach the file's only export", async () => {
    await serve(["--config", config("nbd.toml", ["nbd"]), "--nbd-listen", `unix:${sock("nbd")}`, "--description", "from the command line"], `listening for NBD on unix:${sock("nbd")}`);
    expect(existsSync(sock("nbd"))).toBe(true);
    if (!haveTools({ nbdinfo: "libnbd-bin" })) return;
    const info = Bun.spawnSync(["nbdinfo", "--list", "--json", `nbd+unix:///?socket=${sock("nbd")}`], { stdout: "pipe", stderr: "pipe" });
    expect(info.exitCode).toBe(0);
    const exports = JSON.parse(info.stdout.toString()).exports as Array<Record<string, unknown>>;
    expect(exports.map((e) => [e["export-name"], e.description])).toEqual([["nbd", "from the command line"]]);
  }, 30_000);

  test("--name: which export of several the flags change; without it, or naming none, or alone: exit 2 saying why", async () => {
    const two = config("two.toml", ["vm1", "vm2"]);
    const unnamed = await runDstd(["export", "--config", two, "--read-only", "--description", "x"]);
    expect(unnamed.stderr).toBe(`dstd export: --description, --read-only: ${two} has 2 exports ('vm1', 'vm2'): give --name NAME to say which one they apply to\n`);
    expect(unnamed.exitCode).toBe(2);
    const missing = await runDstd(["export", "--config", two, "--name", "vm3", "--read-only"]);
    expect(missing.stderr).toContain(`--name vm3: ${two} has no [[export]] named 'vm3' (it has 'vm1', 'vm2')`);
    expect(missing.exitCode).toBe(2);
    const alone = await runDstd(["export", "--config", two, "--name", "vm1"]);
    expect(alone.stderr).toContain("--name vm1 alone changes nothing");
    expect(alone.exitCode).toBe(2);
    await serve(["--config", two, "--name", "vm2", "--read-only"], `listening for DST on unix:${sock("vm2-dst")}`);
    expect((await write("vm2")).exitCode).toBe(1);
    expect(await write("vm1")).toEqual({ exitCode: 0, stderr: "" });
  }, 30_000);

  test("--ceph-conf, --ceph-id, --ceph-keyring are checked against the export they change", async () => {
    // Nothing here reaches a cluster: the flags fail validation, which proves they were applied.
    const memory = config("ceph-memory.toml", ["m"]);
    for (const [flag, value] of [["--ceph-conf", "ceph.conf"], ["--ceph-id", "dstd"], ["--ceph-keyring", "keyring"]] as const) {
      const result = await runDstd(["export", "--config", memory, flag, value]);
      expect(result.stderr).toContain(`command line: ${flag}: ${flag.slice(2).replace("-", "_")} is only for rbd exports`);
      expect(result.exitCode).toBe(2);
    }
    const rbd = join(scratch.path, "rbd.toml");
    writeFileSync(rbd, `[[export]]\nname = "img"\nrbd = "pool/img@snap"\nlisten = ["unix:${sock("img-dst")}"]\nallow = ["unix:rw"]\n`);
    const id = await runDstd(["export", "--config", rbd, "--ceph-id", "client.admin"]);
    expect(id.stderr).toContain('command line: --ceph-id: "client.admin": give the client id without "client."');
    expect(id.exitCode).toBe(2);
    const snapshot = await runDstd(["export", "--config", rbd, "--no-read-only"]);
    expect(snapshot.stderr).toContain("command line: --no-read-only: read_only = false, but the RBD snapshot pool/img@snap cannot be written");
    expect(snapshot.exitCode).toBe(2);
    const several = await runDstd(["export", "--config", config("ceph-two.toml", ["a", "b"]), "--ceph-id", "dstd"]);
    expect(several.stderr).toContain("--ceph-id: ");
    expect(several.stderr).toContain("give --name NAME");
    expect(several.exitCode).toBe(2);
  }, 30_000);
});
