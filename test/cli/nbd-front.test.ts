/**
 * The NBD side of `dstd export` (issue 14 item 8), the compiled export from a config with
 * four exports: the default export name "" selects the only export of a listener (as with
 * nbdkit and qemu-nbd), is refused with a reason where a listener serves several, and an
 * export without nbd_listen is not reachable through another export's NBD listener. Peers:
 * dstd's own NBD client always, and libnbd's nbdinfo when installed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { NbdClient } from "../../src/client/nbd-client.ts";
import { ensureBinary } from "../helpers/binary.ts";
import { scratchDir } from "../helpers/files.ts";
import { recordingLog } from "../helpers/log.ts";
import { haveTools } from "../helpers/tools.ts";
import { until } from "../helpers/wait.ts";

const scratch = scratchDir("cli-nbd");
const sock = (name: string) => join(scratch.path, `${name}.sock`);
let child: Subprocess;
const logPath = join(scratch.path, "export.log");
/** The export's log so far (written to a file: a test process reading a pipe can lag behind). */
const log = () => (existsSync(logPath) ? readFileSync(logPath, "utf8") : "");

beforeAll(async () => {
  const config = join(scratch.path, "dstd.toml");
  const table = (name: string, memory: string, dst: string[], nbd: string[]) =>
    `[[export]]\nname = "${name}"\nmemory = "${memory}"\nlisten = ${JSON.stringify(dst)}\nnbd_listen = ${JSON.stringify(nbd)}\nallow = ["unix:rw"]\n`;
  writeFileSync(
    config,
    [
      table("a", "1MiB", [`unix:${sock("a-dst")}`], [`unix:${sock("a")}`]),
      table("b", "2MiB", [`unix:${sock("b-dst")}`], []),
      table("c", "3MiB", [`unix:${sock("c-dst")}`], [`unix:${sock("cd")}`]),
      table("d", "4MiB", [], [`unix:${sock("cd")}`]),
    ].join("\n"),
  );
  child = Bun.spawn([ensureBinary(), "export", "--config", config], { stdin: "ignore", stdout: "ignore", stderr: Bun.file(logPath) });
  await until(() => log().includes(`listening for NBD on unix:${sock("cd")}`) || child.exitCode !== null, "the NBD listeners", 20_000);
  expect(child.exitCode).toBeNull();
});
afterAll(async () => {
  child?.kill("SIGTERM");
  await child?.exited;
  scratch.remove();
});

async function open(socket: string, exportName: string): Promise<NbdClient> {
  return NbdClient.open({ address: { transport: "unix", path: socket }, exportName, log: recordingLog() });
}

describe("dstd export: NBD listeners", () => {
  test('the only export of a listener is its default export ""', async () => {
    const client = await open(sock("a"), "");
    expect(client.size).toBe(1024 * 1024);
    await client.close();
  });

  test("an export without nbd_listen is not reachable through another export's listener", async () => {
    await expect(open(sock("a"), "b")).rejects.toThrow(/no export named 'b'/);
    await expect(open(sock("cd"), "b")).rejects.toThrow(/no export named 'b'/);
    await until(() => log().includes("no export named 'b'"), "the export's reason in its log");
  });

  test('a listener of several exports serves each by name and refuses "" with a reason', async () => {
    const c = await open(sock("cd"), "c");
    const d = await open(sock("cd"), "d");
    expect([c.size, d.size]).toEqual([3 * 1024 * 1024, 4 * 1024 * 1024]);
    await c.close();
    await d.close();
    await expect(open(sock("cd"), "")).rejects.toThrow();
    await until(() => log().includes("no default export here: name one"), "the export's reason in its log");
  });

  test("nbdinfo: nbd+unix:// without an export name works, and lists only that listener's export", () => {
    if (!haveTools({ nbdinfo: "libnbd-bin" })) return;
    const size = Bun.spawnSync(["nbdinfo", "--size", `nbd+unix:///?socket=${sock("a")}`], { stdout: "pipe", stderr: "pipe" });
    expect(size.stderr.toString()).toBe("");
    expect(size.stdout.toString().trim()).toBe(String(1024 * 1024));
    const list = Bun.spawnSync(["nbdinfo", "--list", "--json", `nbd+unix:///?socket=${sock("a")}`], { stdout: "pipe", stderr: "pipe" });
    const names = (JSON.parse(list.stdout.toString()) as { exports: Array<{ "export-name": string }> }).exports.map((e) => e["export-name"]);
    expect(names).toEqual(["a"]);
  });
});
