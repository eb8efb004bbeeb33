/**
 * The systemd units shipped in systemd/: `systemd-analyze verify` (Debian package systemd)
 * must accept them without a single warning, with ExecStart pointing at the built binary
 * (verify checks that the command exists). A canary proves a misspelt key is reported.
 * The example node config next to it is a valid config.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfigFile } from "../../src/config/load.ts";
import { ensureBinary } from "../helpers/binary.ts";
import { haveTools } from "../helpers/tools.ts";

const unitPath = join(import.meta.dir, "..", "..", "systemd", "dstd.service");
const dir = mkdtempSync(join(tmpdir(), "dstd-units-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function verify(text: string): { exitCode: number; output: string } {
  const path = join(dir, "dstd.service");
  writeFileSync(path, text);
  const result = Bun.spawnSync(["systemd-analyze", "verify", "--man=no", path]);
  return { exitCode: result.exitCode, output: (result.stdout.toString() + result.stderr.toString()).trim() };
}

describe.skipIf(!haveTools({ "systemd-analyze": "systemd" }))("systemd/dstd.service", () => {
  const unit = readFileSync(unitPath, "utf8");
  const local = () => unit.replaceAll("/usr/local/bin/dstd", ensureBinary());

  test("verifies cleanly", () => {
    const result = verify(local());
    expect(result.output).toBe("");
    expect(result.exitCode).toBe(0);
  });

  test("runs `dstd up --config /etc/dstd/dstd.toml` as Type=notify with a synchronous ExecReload", () => {
    expect(unit).toMatch(/^Type=notify$/m);
    expect(unit).toMatch(/^ExecStart=\/usr\/local\/bin\/dstd up --config \/etc\/dstd\/dstd\.toml$/m);
    expect(unit).toMatch(/^ExecReload=\/usr\/local\/bin\/dstd reload /m);
    expect(unit).toMatch(/^WatchdogSec=/m);
    // hardening that would break a block-storage daemon is absent
    for (const key of ["PrivateDevices=yes", "MemoryDenyWriteExecute=yes", "ProtectKernelTunables=yes", "ProtectClock=yes", "DevicePolicy="]) {
      expect(unit).not.toContain(key);
    }
  });

  test("canary: a misspelt key and a missing binary are reported", () => {
    const result = verify(local().replace("NoNewPrivileges=yes", "NoNewPrivilegs=yes").replace(ensureBinary(), "/nonexistent/dstd"));
    expect(result.output).toContain("Unknown key 'NoNewPrivilegs'");
    expect(result.output).toContain("/nonexistent/dstd");
  });
});

test("systemd/dstd.toml.example is a valid config with an export, an attachment and metrics", () => {
  const config = loadConfigFile(join(import.meta.dir, "..", "..", "systemd", "dstd.toml.example"));
  expect(config.exports.map((e) => e.name)).toEqual(["disk"]);
  expect(config.attaches).toHaveLength(1);
  expect(config.metricsListen).toEqual({ transport: "tcp", host: "127.0.0.1", port: 9810 });
});
