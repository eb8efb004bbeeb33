/**
 * `dstd attach --nbd-listen` with the compiled binary: the remote export, reached through
 * the DST client engine, served as a standard NBD endpoint on a Unix socket, used by real
 * libnbd tools (nbdinfo, nbdcopy). What nbdcopy writes must land byte-for-byte on the export.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawn } from "bun";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary, runDstd, startExport } from "../helpers/binary.ts";
import { haveTools } from "../helpers/tools.ts";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "dstd-attach-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!haveTools({ nbdinfo: "libnbd-bin", nbdcopy: "libnbd-bin" }))("attach --nbd-listen", () => {
  test("nbdinfo and nbdcopy through dstd attach reach the export", async () => {
    const disk = join(dir, "disk.img");
    const exp = await startExport(["--file", disk, "--size", "32MiB", "--allow", "127.0.0.1/32:rw"]);
    const socket = join(dir, "attach.sock");
    const stateDir = join(dir, "state");
    const attach = spawn([ensureBinary(), "attach", `dst://127.0.0.1:${exp.port}/disk`, "--nbd-listen", `unix:${socket}`, "--state-dir", stateDir], {
      stdout: "pipe",
      stderr: "pipe",
    });
    try {
      for (let i = 0; i < 200 && !existsSync(socket); i++) await Bun.sleep(20);
      const uri = `nbd+unix:///disk?socket=${socket}`;
      const info = Bun.spawnSync(["nbdinfo", "--json", uri]);
      expect(info.exitCode).toBe(0);
      const json = JSON.parse(info.stdout.toString());
      expect(json.exports[0]["export-size"]).toBe(32 * MiB);
      expect(json.exports[0]["is_read_only"]).toBe(false);

      const image = join(dir, "image.raw");
      const data = new Uint8Array(32 * MiB);
      for (let off = 0; off < data.length; off += 65536) crypto.getRandomValues(data.subarray(off, off + 65536));
      writeFileSync(image, data);
      const copy = Bun.spawnSync(["nbdcopy", image, uri]);
      expect(copy.stderr.toString()).toBe("");
      expect(copy.exitCode).toBe(0);
      // nbdcopy flushed at the end: the bytes are on the export's file.
      expect(Buffer.compare(readFileSync(disk), Buffer.from(data))).toBe(0);
      const back = join(dir, "back.raw");
      expect(Bun.spawnSync(["nbdcopy", uri, back]).exitCode).toBe(0);
      expect(Buffer.compare(readFileSync(back), Buffer.from(data))).toBe(0);

      // dstd list shows it with its daemon; detach stops it; detaching again is a no-op.
      const listed = JSON.parse((await runDstd(["list", "--json", "--state-dir", stateDir])).stdout);
      expect(listed).toHaveLength(1);
      expect(listed[0].device).toBe(`unix:${socket}`);
      expect(listed[0].state).toBe("ready");
      expect(listed[0].pid).toBe(attach.pid);
      const detached = await runDstd(["detach", `unix:${socket}`, "--state-dir", stateDir]);
      expect(detached.stdout).toContain(`detached unix:${socket}`);
      expect(await attach.exited).toBe(0);
      expect((await runDstd(["list", "--state-dir", stateDir])).stdout).toBe("no attachments\n");
      const again = await runDstd(["detach", `unix:${socket}`, "--state-dir", stateDir]);
      expect(again.exitCode).toBe(0);
      expect(again.stdout).toContain("is not attached; nothing to do");
    } finally {
      attach.kill("SIGTERM");
      expect(await attach.exited).toBe(0);
      await exp.stop();
    }
  }, 60_000);
});
