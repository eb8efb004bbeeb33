/**
 * The compiled executable end to end, as a user runs it: `dstd export` serving a sparse file
 * and `dstd copy` moving 256 MiB of random data (with zero regions) in and back. Asserts
 * identical bytes, that the export's file stays sparse where the data was zero, and that
 * misuse ends with a clear message and a non-zero exit while the export keeps serving.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, openSync, readSync, closeSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { runDstd, startExport, type RunningExport } from "../helpers/binary.ts";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "dstd-bin-"));
let exp: RunningExport;

/** 256 MiB: random data with every 4th MiB left zero (so sparseness is observable). */
function makeSource(path: string, mib: number): void {
  const fd = openSync(path, "w");
  const block = new Uint8Array(MiB);
  for (let i = 0; i < mib; i++) {
    if (i % 4 === 3) block.fill(0);
    else for (let off = 0; off < MiB; off += 65536) crypto.getRandomValues(block.subarray(off, off + 65536));
    require("node:fs").writeSync(fd, block, 0, MiB, i * MiB);
  }
  closeSync(fd);
}

function blockDigests(path: string, mib: number): string[] {
  const fd = openSync(path, "r");
  const block = new Uint8Array(MiB);
  const digests: string[] = [];
  for (let i = 0; i < mib; i++) {
    const n = readSync(fd, block, 0, MiB, i * MiB);
    digests.push(createHash("sha256").update(block.subarray(0, n)).digest("hex"));
  }
  closeSync(fd);
  return digests;
}

beforeAll(async () => {
  exp = await startExport([
    "--file", join(dir, "disk.img"), "--size", "512MiB",
    "--allow", "127.0.0.1/32:rw",
  ]);
});
afterAll(async () => {
  await exp?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("compiled dstd", () => {
  test("--version and --help", async () => {
    const version = await runDstd(["--version"]);
    expect(version.exitCode).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const help = await runDstd(["--help"]);
    expect(help.stdout).toContain("export");
    expect(help.stdout).toContain("copy");
  });

  test("copy 256 MiB in and back: identical, and the export file stays sparse", async () => {
    const mib = 256;
    const source = join(dir, "source.img");
    makeSource(source, mib);
    const url = `dst://127.0.0.1:${exp.port}/disk`;
    const up = await runDstd(["copy", source, url]);
    expect(up.stderr).toBe("");
    expect(up.exitCode).toBe(0);
    const back = join(dir, "back.img");
    const down = await runDstd(["copy", url, back]);
    expect(down.exitCode).toBe(0);
    const expected = blockDigests(source, mib);
    const got = blockDigests(back, mib);
    const differing = expected.filter((d, i) => d !== got[i]).length;
    expect(differing).toBe(0);
    // The export's file: 512 MiB apparent, but only the 192 MiB of non-zero data allocated.
    const exported = statSync(join(dir, "disk.img"));
    expect(exported.size).toBe(512 * MiB);
    expect(exported.blocks * 512).toBeLessThan(200 * MiB);
    expect(exported.blocks * 512).toBeGreaterThanOrEqual(192 * MiB);
  }, 120_000);

  test("wrong export name, refused address, read-only: clear errors, export keeps serving", async () => {
    const small = join(dir, "small.img");
    writeFileSync(small, new Uint8Array(MiB).fill(1));
    const wrong = await runDstd(["copy", small, `dst://127.0.0.1:${exp.port}/nope`]);
    expect(wrong.exitCode).not.toBe(0);
    expect(wrong.stderr).toContain("no export named 'nope'");

    const refusing = await startExport(["--memory", "1MiB", "--allow", "10.0.0.0/8:rw"]);
    const refused = await runDstd(["copy", small, `dst://127.0.0.1:${refusing.port}/disk`]);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toContain("access denied: anonymous clients from 127.0.0.1 are not allowed to use export 'disk'");
    await refusing.stop();

    const readOnly = await startExport(["--memory", "1MiB", "--read-only", "--allow", "127.0.0.1/32:rw"]);
    const denied = await runDstd(["copy", small, `dst://127.0.0.1:${readOnly.port}/disk`]);
    expect(denied.exitCode).not.toBe(0);
    expect(denied.stderr).toContain("read-only");
    await readOnly.stop();

    // The main export is unaffected by all of the above.
    const again = await runDstd(["copy", small, `dst://127.0.0.1:${exp.port}/disk`]);
    expect(again.exitCode).toBe(0);
    expect(exp.log()).toContain("refused: no export named 'nope'");
  }, 60_000);

  test("bad flags and a missing file end with a usage error naming the problem", async () => {
    const badSize = await runDstd(["export", "--file", join(dir, "new.img"), "--size", "10 GB", "--allow", "127.0.0.1"]);
    expect(badSize.exitCode).toBe(2);
    expect(badSize.stderr).toContain('--size: "10 GB" is not a size; use e.g. "10GiB"');
    const missing = await runDstd(["export", "--file", join(dir, "absent.img"), "--allow", "127.0.0.1"]);
    expect(missing.exitCode).not.toBe(0);
    expect(missing.stderr).toContain("--size");
    const badUrl = await runDstd(["copy", "x", "http://host/disk"]);
    expect(badUrl.exitCode).toBe(2);
    expect(badUrl.stderr).toContain("unknown scheme");
  });
});
