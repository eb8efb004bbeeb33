/**
 * `dstd copy` as a user drives it (issue 14 items 2 and 7), real processes throughout: the
 * compiled export and copy, and the fault proxy (test/fault/proxy.ts) between them where the
 * link must misbehave on cue. Nothing here waits a guessed time: each step waits for a line
 * the copy prints or for bytes the proxy delivered.
 *
 * Item 2: first contact fails at once with the reason (refused, no such socket, no such
 * host); --wait keeps trying (and the progress line counts the attempts) until --deadline;
 * a link lost mid-copy shows its reconnect attempts in the progress line.
 * Item 7: `-` is stdout/stdin; Ctrl-C says how far the copy got and leaves no full-size file
 * (the target is written under a temporary name); a second Ctrl-C stops at once; an
 * existing file of another size is refused naming --overwrite, which exists and works.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runDstd } from "../helpers/binary.ts";
import { writeRandomFile } from "../helpers/files.ts";
import { until } from "../helpers/wait.ts";
import { BINARY, ensureBinary, killChildren, MiB, startCopy, startExport, tempDir, type RunningExport } from "../fault/harness.ts";
import { FaultProxy } from "../fault/proxy.ts";

const dir = tempDir("cli-copy");
let exp: RunningExport;
const diskSize = 16 * MiB;
const disk = join(dir.path, "disk.img");
const source = join(dir.path, "source.img");

beforeAll(async () => {
  ensureBinary();
  writeRandomFile(source, diskSize);
  writeRandomFile(disk, diskSize);
  exp = await startExport({ file: disk });
});
afterAll(async () => {
  await killChildren();
  dir.remove();
});

/** A TCP port nothing listens on (bound once by the kernel's choice, then released). */
function closedPort(): number {
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = listener.port;
  listener.stop(true);
  return port;
}

describe("first contact (item 2)", () => {
  test("refused, no such socket, no such host: exit 1 at once, naming the reason", async () => {
    const port = closedPort();
    const refused = await runDstd(["copy", source, `dst://127.0.0.1:${port}/disk`]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toBe(
      `dstd copy: cannot connect to 127.0.0.1:${port}: connection refused (ECONNREFUSED); is the export running, and listening on this port?\n`,
    );
    const socket = join(dir.path, "nobody.sock");
    const noSocket = await runDstd(["copy", source, `dst+unix:///disk?socket=${socket}`]);
    expect(noSocket.exitCode).toBe(1);
    expect(noSocket.stderr).toContain(`cannot connect to unix:${socket}: no such socket (ENOENT)`);
    // RFC 2606: .invalid never resolves.
    const noHost = await runDstd(["copy", source, "dst://no-such-host.invalid/disk"]);
    expect(noHost.exitCode).toBe(1);
    expect(noHost.stderr).toContain("ENOTFOUND");
    // The same mistake as a DST URL aimed at something that is not a DST export.
    const nbdPort = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void s.end(), data() {} } });
    const notDst = await runDstd(["copy", source, `dst://127.0.0.1:${nbdPort.port}/disk`]);
    nbdPort.stop(true);
    expect(notDst.exitCode).toBe(1);
    expect(notDst.stderr).toContain("during the DST handshake");
  }, 60_000);

  test("--wait keeps trying, counting attempts in the progress line, and copies once the export is there", async () => {
    const proxy = FaultProxy.start({ upstream: { host: "127.0.0.1", port: exp.port } });
    try {
      proxy.refuse(true);
      const copy = startCopy(source, `dst://127.0.0.1:${proxy.port}/disk`, undefined, ["--wait", "--progress"]);
      await until(() => /waiting for the export: .*; attempt 2\b/.test(copy.output()), "a second attempt in the progress line", 20_000);
      proxy.refuse(false);
      const result = await copy.result;
      expect(result.exitCode).toBe(0);
      expect(result.output).toContain("waiting for the export: ");
      expect(readFileSync(disk).equals(readFileSync(source))).toBe(true);
    } finally {
      proxy.close();
    }
  }, 60_000);

  test("--wait gives up at --deadline, saying why", async () => {
    const port = closedPort();
    const r = await runDstd(["copy", source, `dst://127.0.0.1:${port}/disk`, "--wait", "--deadline", "1s"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("cannot reach the export");
    expect(r.stderr).toContain("ECONNREFUSED");
  }, 60_000);

  test("a link lost mid-copy shows its reconnect attempts in the progress line", async () => {
    const proxy = FaultProxy.start({ upstream: { host: "127.0.0.1", port: exp.port } });
    try {
      proxy.throttle(4 * MiB);
      const copy = startCopy(source, `dst://127.0.0.1:${proxy.port}/disk`, undefined, ["--progress", "--inflight", "2", "--chunk", "256KiB"]);
      await proxy.whenDelivered("up", 2 * MiB);
      proxy.refuse(true);
      proxy.cut();
      await until(() => /link down: .*; reconnect attempt 2\b/.test(copy.output()), "reconnect attempts in the progress line", 20_000);
      proxy.refuse(false);
      proxy.throttle(0);
      const result = await copy.result;
      expect(result.exitCode).toBe(0);
      expect(readFileSync(disk).equals(readFileSync(source))).toBe(true);
    } finally {
      proxy.close();
    }
  }, 60_000);
});

describe("things a user reasonably tries (item 7)", () => {
  const url = () => `dst://127.0.0.1:${exp.port}/disk`;

  test("`-` as TARGET is stdout, as SOURCE is stdin", async () => {
    const down = Bun.spawnSync([BINARY, "copy", url(), "-"], { stdout: "pipe", stderr: "pipe" });
    expect(down.stderr.toString()).toBe("");
    expect(down.exitCode).toBe(0);
    expect(Buffer.from(down.stdout).equals(readFileSync(disk))).toBe(true);
    expect(existsSync(join(process.cwd(), "-"))).toBe(false);

    const data = new Uint8Array(3 * MiB + 123);
    crypto.getRandomValues(data.subarray(0, 65536));
    data.fill(7, 2 * MiB);
    const up = await runDstd(["copy", "-", url()], {}, { stdin: data });
    expect(up.stderr).toBe("");
    expect(up.exitCode).toBe(0);
    expect(readFileSync(disk).subarray(0, data.length).equals(data)).toBe(true);

    const tooLong = await runDstd(["copy", "-", url()], {}, { stdin: new Uint8Array(diskSize + 1).fill(1) });
    expect(tooLong.exitCode).toBe(1);
    expect(tooLong.stderr).toContain(`stdin is longer than export 'disk' (16 MiB, ${diskSize} bytes)`);
  }, 60_000);

  test("a regular file under /dev (/dev/shm) is a file both ways: created as a target, read as a source", async () => {
    const shm = `/dev/shm/dstd-copy-test-${process.pid}.img`;
    try {
      const down = await runDstd(["copy", url(), shm]);
      expect([down.exitCode, down.stderr]).toEqual([0, ""]);
      expect(readFileSync(shm).equals(readFileSync(disk))).toBe(true);
      const up = await runDstd(["copy", shm, url()]);
      expect([up.exitCode, up.stderr]).toEqual([0, ""]);
      const gone = await runDstd(["copy", "/dev/fd/63", url()]);
      expect(gone.exitCode).toBe(2);
      expect(gone.stderr).toContain("pipe the data into `dstd copy - TARGET` instead");
    } finally {
      rmSync(shm, { force: true });
    }
  }, 60_000);

  test("a stdout that fails (full device, closed pipe): dstd's one line, exit 1, no stack trace", async () => {
    // Before one "error" listener was kept for the whole copy (client/copy-stream.ts), the
    // stream's own "error" event came after the listener was gone and Bun printed its stack.
    const full = openSync("/dev/full", "w");
    try {
      const toFull = Bun.spawnSync([BINARY, "copy", url(), "-"], { stdout: full, stderr: "pipe" });
      expect(toFull.stderr.toString()).toMatch(/^dstd copy: cannot write to stdout: ENOSPC[^\n]*\n$/);
      expect(toFull.exitCode).toBe(1);
    } finally {
      closeSync(full);
    }
    // `| head -c 1`: the reader leaves after one byte; the next writes meet EPIPE.
    const toPipe = Bun.spawnSync(["bash", "-c", '"$0" copy "$1" - | head -c 1 >/dev/null; exit ${PIPESTATUS[0]}', BINARY, url()], { stdout: "pipe", stderr: "pipe" });
    expect(toPipe.stderr.toString()).toMatch(/^dstd copy: cannot write to stdout: EPIPE[^\n]*\n$/);
    expect(toPipe.exitCode).toBe(1);
  }, 60_000);

  test("an existing file of another size: refused naming --overwrite, which replaces it", async () => {
    const target = join(dir.path, "small.img");
    writeFileSync(target, "not a disk");
    const refused = await runDstd(["copy", url(), target]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain("pass --overwrite to replace it, or remove it first");
    expect(readFileSync(target, "utf8")).toBe("not a disk");
    const help = await runDstd(["copy", "--help"]);
    expect(help.stdout).toContain("--overwrite");
    const replaced = await runDstd(["copy", url(), target, "--overwrite"]);
    expect(replaced.exitCode).toBe(0);
    expect(readFileSync(target).equals(readFileSync(disk))).toBe(true);
    expect(readdirSync(dir.path).filter((name) => name.includes(".partial-"))).toEqual([]);
  }, 60_000);

  test("Ctrl-C: says how far it got; the new file never appears under its name", async () => {
    const proxy = FaultProxy.start({ upstream: { host: "127.0.0.1", port: exp.port } });
    const target = join(dir.path, "back.img");
    try {
      proxy.throttle(2 * MiB);
      const copy = startCopy(`dst://127.0.0.1:${proxy.port}/disk`, target, undefined, ["--inflight", "2", "--chunk", "256KiB"]);
      await proxy.whenDelivered("down", 3 * MiB);
      // Mid-copy: the bytes go to a temporary name; nothing full-size pretends to be back.img.
      expect(existsSync(target)).toBe(false);
      const partial = readdirSync(dir.path).filter((name) => name.startsWith("back.img.partial-"));
      expect(partial).toHaveLength(1);
      copy.proc.kill("SIGINT");
      const result = await copy.result;
      expect(result.exitCode).toBe(130);
      expect(result.output).toMatch(/dstd copy: interrupted after copying [\d.]+ MiB of 16 MiB \(\d+%\) to .*back\.img; .*back\.img was not created; the partial copy \([\d.]+ MiB\) was removed\n/);
      expect(readdirSync(dir.path).filter((name) => name.startsWith("back.img"))).toEqual([]);
    } finally {
      proxy.close();
    }
  }, 60_000);

  test("a second Ctrl-C stops at once, even with requests stuck on a dead link", async () => {
    const proxy = FaultProxy.start({ upstream: { host: "127.0.0.1", port: exp.port } });
    const target = join(dir.path, "stuck.img");
    try {
      proxy.throttle(2 * MiB);
      const copy = startCopy(`dst://127.0.0.1:${proxy.port}/disk`, target, undefined, ["--inflight", "2", "--chunk", "256KiB"]);
      await proxy.whenDelivered("down", 2 * MiB);
      void proxy.blackhole(120_000);
      copy.proc.kill("SIGINT");
      // Signals of one kind do not queue: send the second once the first was handled.
      await until(() => copy.output().includes("Ctrl-C again to stop at once"), "the first Ctrl-C to be acknowledged", 20_000);
      copy.proc.kill("SIGINT");
      const result = await copy.result;
      expect(result.exitCode).toBe(130);
      expect(result.output).toContain("dstd copy: interrupted after copying");
      expect(readdirSync(dir.path).filter((name) => name.startsWith("stuck.img"))).toEqual([]);
    } finally {
      proxy.close();
    }
  }, 60_000);

  test("Ctrl-C into an export from stdin reports the bytes written", async () => {
    const child = Bun.spawn([BINARY, "copy", "-", url(), "--progress"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    let err = "";
    const reading = (async () => {
      for await (const chunk of child.stderr) err += new TextDecoder().decode(chunk);
    })();
    child.stdin.write(new Uint8Array(2 * MiB).fill(3));
    await child.stdin.flush();
    await until(() => /\b2 MiB\b/.test(err), "2 MiB in the progress line", 20_000);
    child.kill("SIGINT");
    expect(await child.exited).toBe(130);
    await reading;
    expect(err).toContain("dstd copy: interrupted after copying 2 MiB to export 'disk'\n");
    expect(statSync(disk).size).toBe(diskSize);
    child.stdin.end();
  }, 60_000);
});
