/**
 * Issue 9 item 9 against the compiled binary: one export per backing file or device. A second
 * export that would write, or would read while another writes, is refused at start with a
 * message naming the holder's pid and command; read-only exports may share; the lock goes
 * away with the export that held it. The unit half checks storage/local/lock.ts directly.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openBackend } from "../../src/storage/open.ts";
import { lockHolders } from "../../src/storage/local/lock.ts";
import { processId } from "../../src/sys/libc.ts";
import { runDstd, startExport } from "../helpers/binary.ts";
import { attachLoop, detachLoop, loopUnavailable } from "../storage/loop.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-lock-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const MiB = 1024 * 1024;

function image(name: string): string {
  const path = join(dir, name);
  writeFileSync(path, new Uint8Array(MiB));
  return path;
}

describe("two exports of one file (compiled binary)", () => {
  test("a second read-write export is refused, naming the holder's pid and command", async () => {
    const file = image("rw-rw.img");
    const first = await startExport(["--file", file, "--allow", "127.0.0.1/32:rw"]);
    try {
      const second = await runDstd(["export", "--file", file, "--listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw"]);
      expect(second.exitCode).not.toBe(0);
      expect(second.stderr).toContain(`cannot export ${file}: it is already exported read-write by pid ${first.process.pid} (`);
      expect(second.stderr).toContain("dstd export --listen 127.0.0.1:0 --file");
      // The refused export did not disturb the first: it still serves.
      const copy = await runDstd(["copy", `dst://127.0.0.1:${first.port}/disk`, join(dir, "out-1.raw")]);
      expect(copy.exitCode).toBe(0);
    } finally {
      await first.stop();
    }
  });

  test("a read-only export next to a read-write one is refused, either way round", async () => {
    const file = image("ro-rw.img");
    const writer = await startExport(["--file", file, "--allow", "127.0.0.1/32:rw"]);
    try {
      const reader = await runDstd(["export", "--file", file, "--read-only", "--listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:ro"]);
      expect(reader.exitCode).not.toBe(0);
      expect(reader.stderr).toContain(`already exported read-write by pid ${writer.process.pid}`);
    } finally {
      await writer.stop();
    }
    const reader = await startExport(["--file", file, "--read-only", "--allow", "127.0.0.1/32:ro"]);
    try {
      const writer2 = await runDstd(["export", "--file", file, "--listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw"]);
      expect(writer2.exitCode).not.toBe(0);
      expect(writer2.stderr).toContain(`already exported read-only by pid ${reader.process.pid}`);
    } finally {
      await reader.stop();
    }
  });

  test("read-only exports of one file may run side by side; the lock goes with the export", async () => {
    const file = image("ro-ro.img");
    const one = await startExport(["--file", file, "--read-only", "--allow", "127.0.0.1/32:ro"]);
    const two = await startExport(["--file", file, "--read-only", "--allow", "127.0.0.1/32:ro"]);
    await one.stop();
    await two.stop();
    const writer = await startExport(["--file", file, "--allow", "127.0.0.1/32:rw"]); // both gone: free again
    await writer.stop();
  });

  test("the same file twice in one config is refused as such: by name when the config is read, through a second name at start", async () => {
    const file = image("twice.img");
    const twice = (second: string) => {
      const config = join(dir, `twice-${second.length}.toml`);
      writeFileSync(
        config,
        [file, second]
          .map((path, n) => `[[export]]\nname = "d${n}"\nfile = "${path}"\nlisten = ["127.0.0.1:0"]\nallow = ["127.0.0.1/32:rw"]\n`)
          .join("\n"),
      );
      return config;
    };
    const named = await runDstd(["export", "--config", twice(file)]);
    expect(named.exitCode).toBe(2);
    expect(named.stderr).toContain(`export[1].file: ${file} is also used by export 'd0' at export[0].file`);
    // A symlink is another name for it: the config check cannot tell, the export lock does.
    const link = join(dir, "twice-link.img");
    symlinkSync(file, link);
    const result = await runDstd(["export", "--config", twice(link)]);
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain("already exported read-write by this process (the same file is configured twice)");
  });
});

describe("one replicated export per log_dir (compiled binary)", () => {
  test("a second process on the same log_dir is refused, naming the holder; the log is left alone", async () => {
    const logDir = join(dir, "rlog");
    const config = (n: number) => {
      const path = join(dir, `repl-${n}.toml`);
      writeFileSync(path, `[[export]]\nname = "disk"\nfile = "${image(`repl-${n}.img`)}"\nallow = ["127.0.0.1/32:rw"]\n[export.replication]\nlog_dir = "${logDir}"\n`);
      return path;
    };
    const first = await startExport(["--config", config(1)]);
    try {
      const second = await runDstd(["export", "--config", config(2), "--listen", "127.0.0.1:0"]);
      expect(second.exitCode).not.toBe(0);
      expect(second.stderr).toContain(`cannot use log_dir ${logDir}: it is already in use by pid ${first.process.pid}`);
      expect(second.stderr).toContain("Give each export its own log_dir");
    } finally {
      await first.stop();
    }
    // Its lock goes with it: the next one takes the log.
    const again = await startExport(["--config", config(2)]);
    await again.stop();
  });
});

describe.skipIf(loopUnavailable !== null)("two exports of one block device (compiled binary)", () => {
  test("a read-only export of a device exported read-write is refused (O_EXCL alone lets it through)", async () => {
    const device = attachLoop(image("loop.img"));
    try {
      const writer = await startExport(["--device", device, "--allow", "127.0.0.1/32:rw"]);
      try {
        const reader = await runDstd(["export", "--device", device, "--read-only", "--listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:ro"]);
        expect(reader.exitCode).not.toBe(0);
        expect(reader.stderr).toContain(`cannot export ${device}: it is already exported read-write by pid ${writer.process.pid}`);
      } finally {
        await writer.stop();
      }
    } finally {
      detachLoop(device);
    }
  });
});

describe("storage/local/lock.ts", () => {
  test("/proc/locks names this process as the holder of an export's lock, shared or exclusive", () => {
    const file = image("holders.img");
    const backend = openBackend({ kind: "file", path: file }, false, { lock: true });
    const fd = openSync(file, "r");
    try {
      expect(lockHolders(fd)).toEqual([{ pid: processId(), kind: "FLOCK", access: "WRITE" }]);
    } finally {
      backend.close();
    }
    expect(lockHolders(fd)).toEqual([]); // closing the backend released it
    const shared = [1, 2].map(() => openBackend({ kind: "file", path: file }, true, { lock: true }));
    expect(lockHolders(fd).map((h) => h.access)).toEqual(["READ", "READ"]);
    for (const b of shared) b.close();
    closeSync(fd);
  });

  test("without lock (dstd copy's local side) nothing is locked", () => {
    const file = image("nolock.img");
    const a = openBackend({ kind: "file", path: file }, false);
    const b = openBackend({ kind: "file", path: file }, false);
    a.close();
    b.close();
  });
});
