/**
 * `dstd export --rbd` and `dstd up` with an `rbd` export, against a real single-node Ceph
 * cluster (test/helpers/ceph.ts) and real NBD clients: nbdinfo, nbdcopy (libnbd-bin) and
 * qemu-io (qemu-utils); what dstd wrote is read back with Ceph's own `rbd export`. A snapshot
 * is served read-only; `dstd resize` grows the image; `dstd status --json` names it; with cephx
 * a restricted client id and keyring (--ceph-id, --ceph-keyring) authenticate. Compiled
 * binary, real sockets.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "bun";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary, runDstd, startExport, type RunningExport } from "../helpers/binary.ts";
import { haveCeph, startCephCluster, type CephCluster } from "../helpers/ceph.ts";
import { startNode } from "../helpers/node-process.ts";
import { haveTools } from "../helpers/tools.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const enabled = haveCeph() && haveTools({ nbdinfo: "libnbd-bin", nbdcopy: "libnbd-bin", "qemu-io": "qemu-utils" });
let cluster: CephCluster | null = null;
let dir = "";

beforeAll(async () => {
  if (!enabled) return;
  ensureBinary();
  dir = mkdtempSync(join(tmpdir(), "dstd-rbd-"));
  cluster = await startCephCluster(1024 ** 3);
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
}, 60_000);

async function run(cmd: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { code, stdout, stderr };
}

async function ok(cmd: string[]): Promise<string> {
  const result = await run(cmd);
  if (result.code !== 0) throw new Error(`${cmd.join(" ")} exited ${result.code}:\n${result.stderr}${result.stdout}`);
  return result.stdout;
}

/** `dstd export --rbd IMAGE … --nbd-listen 127.0.0.1:0`, and the NBD URL it serves. */
async function serve(image: string, extra: string[] = []): Promise<{ exp: RunningExport; url: string }> {
  const exp = await startExport(["--rbd", image, "--ceph-conf", cluster!.conf, "--nbd-listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw", ...extra]);
  const pattern = /listening for NBD on 127\.0\.0\.1:(\d+)/;
  await until(() => pattern.test(exp.log()), "the NBD listener", 10_000);
  return { exp, url: `nbd://127.0.0.1:${pattern.exec(exp.log())![1]}/disk` };
}

/** The image's bytes as Ceph itself reads them. */
async function rbdExport(image: string): Promise<Buffer> {
  const path = join(dir, `${image.replace(/[/@]/g, "_")}.out`);
  rmSync(path, { force: true });
  await cluster!.rbd("export", image, path);
  const bytes = readFileSync(path);
  rmSync(path);
  return bytes;
}

describe.skipIf(!enabled)("dstd export --rbd", () => {
  test("copy in with nbdcopy, copy out identical; Ceph's rbd export sees the same bytes", async () => {
    await cluster!.rbd("create", "rbd/disk", "--size", "64M");
    const { exp, url } = await serve("rbd/disk");
    try {
      const info = JSON.parse(await ok(["nbdinfo", "--json", url]));
      const e = info.exports[0];
      expect(e["export-size"]).toBe(64 * MiB);
      expect(e.is_read_only).toBe(false);
      expect(e.can_flush && e.can_fua && e.can_zero && e.can_trim && e.can_multi_conn).toBe(true);
      const source = join(dir, "source.img");
      const data = new Uint8Array(64 * MiB);
      for (let i = 0; i < data.length; i += 4096) data.fill((i >> 12) % 251 + 1, i, i + 4096);
      writeFileSync(source, data);
      await ok(["nbdcopy", "--flush", source, url]);
      const back = join(dir, "back.img");
      await ok(["nbdcopy", url, back]);
      expect(Buffer.compare(readFileSync(back), readFileSync(source))).toBe(0);
      expect(Buffer.compare(await rbdExport("rbd/disk"), readFileSync(source))).toBe(0);
      rmSync(back);
      rmSync(source);
    } finally {
      await exp.stop();
    }
    expect(exp.log()).not.toContain("ERROR");
  }, 120_000);

  test("write-zeroes of 4 KiB inside an object reads back as zeroes (in Ceph too)", async () => {
    const { exp, url } = await serve("rbd/disk");
    try {
      await ok(["qemu-io", "-f", "raw", "-c", "write -z 1052672 4096", "-c", "write -z 9437184 12288", url]);
    } finally {
      await exp.stop();
    }
    const image = await rbdExport("rbd/disk");
    const zero = (from: number, length: number) => image.subarray(from, from + length).every((b) => b === 0);
    expect(zero(1052672, 4096)).toBe(true);
    expect(zero(9437184, 12288)).toBe(true);
    // The neighbours keep what the first test wrote (never zero).
    expect(image[1052672 - 1]).not.toBe(0);
    expect(image[1052672 + 4096]).not.toBe(0);
    expect(image[9437184 + 12288]).not.toBe(0);
  }, 120_000);

  test("a snapshot export is read-only and serves the snapshot's contents", async () => {
    await cluster!.rbd("snap", "create", "rbd/disk@s1");
    const before = await rbdExport("rbd/disk@s1");
    const { exp, url } = await serve("rbd/disk@s1");
    try {
      const info = JSON.parse(await ok(["nbdinfo", "--json", url]));
      expect(info.exports[0].is_read_only).toBe(true);
      const write = await run(["qemu-io", "-f", "raw", "-c", "write -P 7 0 4096", url]);
      expect(write.code === 0 && !/failed|error/i.test(write.stdout + write.stderr)).toBe(false);
      const back = join(dir, "snap.img");
      await ok(["nbdcopy", url, back]);
      expect(Buffer.compare(readFileSync(back), before)).toBe(0);
      rmSync(back);
    } finally {
      await exp.stop();
    }
    expect(exp.log()).toContain("(read-only)");
  }, 120_000);

  test("nbdinfo --map shows a sparse image's holes (block status from the fast-diff map)", async () => {
    await cluster!.rbd("create", "rbd/sparse", "--size", "64M");
    const { exp, url } = await serve("rbd/sparse");
    try {
      await ok(["qemu-io", "-f", "raw", "-c", "write -P 9 0 1M", "-c", "write -P 7 33558528 8192", url]);
      const map = JSON.parse(await ok(["nbdinfo", "--map", "--json", url])) as { offset: number; length: number; type: number; description: string }[];
      const runs = map.map((e) => [e.offset, e.length, e.description]);
      // Whole 4 MiB objects: the one at 0 and the one holding 32 MiB + 4 KiB are data.
      expect(runs).toEqual([
        [0, 4 * MiB, "data"],
        [4 * MiB, 28 * MiB, "hole,zero"],
        [32 * MiB, 4 * MiB, "data"],
        [36 * MiB, 28 * MiB, "hole,zero"],
      ]);
    } finally {
      await exp.stop();
    }
    expect(exp.log()).not.toContain("ERROR");
  }, 120_000);

  test("a mirror of an RBD image and a file (--mirror rbd:POOL/IMAGE --mirror FILE): copy in, both legs identical", async () => {
    await cluster!.rbd("create", "rbd/mleg", "--size", "64M");
    const leg = join(dir, "mleg.img");
    const exp = await startExport(["--mirror", "rbd:rbd/mleg", "--mirror", leg, "--size", "64MiB", "--assume-clean", "--ceph-conf", cluster!.conf, "--nbd-listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw"]);
    const pattern = /listening for NBD on 127\.0\.0\.1:(\d+)/;
    const source = join(dir, "msource.img");
    try {
      await until(() => pattern.test(exp.log()), "the NBD listener", 10_000);
      const url = `nbd://127.0.0.1:${pattern.exec(exp.log())![1]}/disk`;
      // Each leg keeps the mirror's metadata in its first MiB (docs/tree.md "On-leg metadata").
      const size = JSON.parse(await ok(["nbdinfo", "--json", url])).exports[0]["export-size"] as number;
      expect(size).toBe(63 * MiB);
      const data = new Uint8Array(size);
      for (let i = 0; i < data.length; i += 4096) data.fill(((i >> 12) * 13) % 251 + 1, i, i + 4096);
      writeFileSync(source, data);
      await ok(["nbdcopy", "--flush", source, url]);
    } finally {
      await exp.stop();
    }
    const wanted = readFileSync(source);
    expect(Buffer.compare(readFileSync(leg).subarray(MiB), wanted)).toBe(0);
    expect(Buffer.compare((await rbdExport("rbd/mleg")).subarray(MiB), wanted)).toBe(0);
    expect(exp.log()).toContain("rbd:rbd/mleg");
    expect(exp.log()).not.toContain("ERROR");
    rmSync(source);
  }, 120_000);

  test("a missing image fails at start, naming it and how to create it", async () => {
    const result = await runDstd(["export", "--rbd", "rbd/absent", "--ceph-conf", cluster!.conf, "--listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw"]);
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain("cannot open rbd:rbd/absent");
    expect(result.stderr).toContain("rbd create");
  }, 60_000);
});

describe.skipIf(!enabled)("dstd up with an rbd export", () => {
  test("check-config accepts it; status names it; dstd resize grows the image", async () => {
    await cluster!.rbd("create", "rbd/up", "--size", "32M");
    const stateDir = join(dir, "state");
    const configPath = join(dir, "dstd.toml");
    writeFileSync(
      configPath,
      `state_dir = "${stateDir}"\n\n[[export]]\nname = "vm"\nrbd = "rbd/up"\nceph_conf = "${cluster!.conf}"\nlisten = "127.0.0.1:0"\nallow = ["127.0.0.1/32:rw"]\n`,
    );
    const checked = await runDstd(["check-config", configPath]);
    expect(checked.stderr).toBe("");
    expect(checked.stdout).toContain("ok (1 export(s): vm");
    const node = startNode(["--config", configPath], { DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined });
    try {
      await node.waitForLog("ready:", "the node to be ready", 60_000);
      const status = JSON.parse((await runDstd(["status", "--json", "--state-dir", stateDir])).stdout);
      const entry = JSON.stringify(status);
      expect(entry).toContain('"kind":"rbd"');
      expect(entry).toContain("rbd:rbd/up");
      const resized = await runDstd(["resize", "vm", "96MiB", "--state-dir", stateDir]);
      expect(resized.stderr).toBe("");
      expect(resized.stdout).toContain("resized from 32 MiB to 96 MiB");
      const info = JSON.parse(await cluster!.rbd("info", "--format", "json", "rbd/up"));
      expect(info.size).toBe(96 * MiB);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 180_000);
});

describe.skipIf(!enabled)("dstd export --rbd with cephx", () => {
  test("a restricted client authenticates with --ceph-id and --ceph-keyring; without its key it is refused", async () => {
    const secure = await startCephCluster(512 * 1024 ** 2, { cephx: true });
    try {
      await secure.rbd("create", "rbd/locked", "--size", "16M");
      const wrong = await runDstd(["export", "--rbd", "rbd/locked", "--ceph-conf", secure.conf, "--ceph-id", "test", "--listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw"]);
      expect(wrong.exitCode).not.toBe(0);
      expect(wrong.stderr).toContain("cannot open rbd:rbd/locked: connecting to the Ceph cluster (rados_connect): permission denied");
      const exp = await startExport(["--rbd", "rbd/locked", "--ceph-conf", secure.conf, "--ceph-id", "test", "--ceph-keyring", secure.testKeyring!, "--nbd-listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw"]);
      try {
        const pattern = /listening for NBD on 127\.0\.0\.1:(\d+)/;
        await until(() => pattern.test(exp.log()), "the NBD listener", 10_000);
        const url = `nbd://127.0.0.1:${pattern.exec(exp.log())![1]}/disk`;
        const source = join(dir, "cephx.img");
        writeFileSync(source, new Uint8Array(16 * MiB).map((_, i) => (i * 7) & 0xff || 1));
        await ok(["nbdcopy", "--flush", source, url]);
        const path = join(dir, "cephx.out");
        await ok(["rbd", "-c", secure.conf, "export", "rbd/locked", path]);
        expect(Buffer.compare(readFileSync(path), readFileSync(source))).toBe(0);
        rmSync(path);
        rmSync(source);
      } finally {
        await exp.stop();
      }
    } finally {
      await secure.stop();
    }
  }, 180_000);
});
