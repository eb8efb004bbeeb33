/**
 * `dstd copy` with nbd:// and nbd+unix:// endpoints, using the compiled binary: a file to an
 * export's NBD front and back, over TCP and a Unix socket, dst:// → nbd:// in one command,
 * interop with nbdkit as a third-party NBD server, and a clear refusal for a wrong export name.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, type Subprocess } from "bun";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary, runDstd, startExport, type RunningExport } from "../helpers/binary.ts";
import { haveTools } from "../helpers/tools.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "dstd-copy-nbd-"));
const nbdSocket = join(dir, "nbd.sock");

function randomFile(name: string, size: number): string {
  const path = join(dir, name);
  const data = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) crypto.getRandomValues(data.subarray(at, at + 65536));
  data.fill(0, 4 * MiB, 6 * MiB); // a zero run: travels as WRITE_ZEROES
  writeFileSync(path, data);
  return path;
}

function sameBytes(a: string, b: string, length: number): boolean {
  return Buffer.compare(readFileSync(a).subarray(0, length), readFileSync(b).subarray(0, length)) === 0;
}

async function copy(source: string, target: string) {
  const result = await runDstd(["copy", source, target]);
  if (result.exitCode !== 0) throw new Error(`dstd copy ${source} ${target} failed: ${result.stderr}`);
}

let nbdExport: RunningExport;
let dstExport: RunningExport;
let nbdPort = 0;

beforeAll(async () => {
  ensureBinary();
  nbdExport = await startExport([
    "--file", join(dir, "nbd-disk.img"), "--size", "32MiB",
    "--nbd-listen", "127.0.0.1:0", "--nbd-listen", `unix:${nbdSocket}`,
    "--allow", "127.0.0.1/32:rw", "--allow", "unix:rw",
  ]);
  await until(() => /listening for NBD on unix:/.test(nbdExport.log()), "the NBD listeners", 10000);
  nbdPort = Number(/listening for NBD on 127\.0\.0\.1:(\d+)/.exec(nbdExport.log())![1]);
  dstExport = await startExport(["--memory", "32MiB", "--allow", "127.0.0.1/32:rw"]);
}, 120000);

afterAll(async () => {
  await nbdExport?.stop();
  await dstExport?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("dstd copy with NBD endpoints", () => {
  test("file → nbd:// → new file over TCP, then read back over nbd+unix://", async () => {
    const source = randomFile("a.img", 32 * MiB);
    await copy(source, `nbd://127.0.0.1:${nbdPort}/disk`);
    const viaTcp = join(dir, "a-tcp.img");
    await copy(`nbd://127.0.0.1:${nbdPort}/disk`, viaTcp);
    expect(sameBytes(source, viaTcp, 32 * MiB)).toBe(true);
    const viaUnix = join(dir, "a-unix.img");
    await copy(`nbd+unix:///disk?socket=${nbdSocket}`, viaUnix);
    expect(sameBytes(source, viaUnix, 32 * MiB)).toBe(true);
  }, 60000);

  test("dst:// → nbd:// in one command", async () => {
    const source = randomFile("b.img", 32 * MiB);
    await copy(source, `dst://127.0.0.1:${dstExport.port}/disk`);
    await copy(`dst://127.0.0.1:${dstExport.port}/disk`, `nbd+unix:///disk?socket=${nbdSocket}`);
    const back = join(dir, "b-back.img");
    await copy(`nbd://127.0.0.1:${nbdPort}/disk`, back);
    expect(sameBytes(source, back, 32 * MiB)).toBe(true);
  }, 60000);

  test("a wrong export name fails with a clear message and a non-zero exit", async () => {
    const source = randomFile("c.img", MiB);
    const result = await runDstd(["copy", source, `nbd://127.0.0.1:${nbdPort}/nope`]);
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain("NBD export 'nope'");
    expect(result.stderr).toContain("refused");
  }, 30000);

  test.skipIf(!haveTools({ nbdkit: "nbdkit" }))("interop: nbdkit memory as target and source", async () => {
    const socket = join(dir, "nbdkit.sock");
    const nbdkit: Subprocess = spawn(["nbdkit", "-f", "-U", socket, "memory", "64M"], { stdout: "ignore", stderr: "pipe" });
    try {
      await until(() => existsSync(socket), "nbdkit's socket", 10000);
      const source = randomFile("d.img", 32 * MiB);
      await copy(source, `nbd+unix:///?socket=${socket}`);
      const back = join(dir, "d-back.img");
      await copy(`nbd+unix:///?socket=${socket}`, back);
      expect(sameBytes(source, back, 32 * MiB)).toBe(true);
      // nbdkit's memory disk beyond what we wrote reads as zeroes.
      expect(readFileSync(back).subarray(32 * MiB).every((b) => b === 0)).toBe(true);
    } finally {
      nbdkit.kill("SIGTERM");
      await nbdkit.exited;
    }
  }, 60000);
});
