/**
 * `dstd attach` / `dstd detach` for kernel devices on a machine WITHOUT the nbd driver (this
 * host, containers, CI runners): the clear refusals and the idempotent detach paths. The
 * kernel paths themselves run in the VM (test/vm/guest/attach.sh). Runs src/main.ts with bun.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listStates, writeState, type AttachmentState } from "../../src/attach/state.ts";

const main = join(import.meta.dir, "..", "..", "src", "main.ts");
const dir = mkdtempSync(join(tmpdir(), "dstd-attach-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const noNbd = !existsSync("/sys/module/nbd");
const configured = (index: number) => existsSync(`/sys/block/nbd${index}/pid`);

async function dstd(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = Bun.spawn([process.execPath, main, ...args], { stdout: "pipe", stderr: "pipe", stdin: "ignore", env: { ...process.env, DSTD_STATE_DIR: join(dir, "default-state") } });
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { code, stdout, stderr };
}

/** A pid that is certainly not running: a child that already exited. */
async function deadPid(): Promise<number> {
  const child = Bun.spawn(["true"]);
  await child.exited;
  return child.pid;
}

describe("dstd attach: refusals before anything is attached", () => {
  test.skipIf(!noNbd)("no nbd driver: exit 1 naming the fix (modprobe nbd), the export is not contacted", async () => {
    const r = await dstd(["attach", "dst://127.0.0.1:9/disk", "--device", "/dev/nbd0", "--state-dir", join(dir, "s1")]);
    expect(r.stderr).toBe("dstd attach: the kernel has no nbd driver loaded: run `modprobe nbd` (or build the kernel with CONFIG_BLK_DEV_NBD)\n");
    expect(r.code).toBe(1);
  });

  test("no URL and no [[attach]] entry: usage error (exit 2)", async () => {
    const r = await dstd(["attach"]);
    expect(r.stderr).toBe("dstd attach: give the export URL to attach (or one [[attach]] entry in --config)\n");
    expect(r.code).toBe(2);
  });

  test("several [[attach]] entries and no URL: name them", async () => {
    const config = join(dir, "two.toml");
    writeFileSync(config, '[[attach]]\nurl = "dst://a/disk"\n[[attach]]\nurl = "dst://b/disk"\n');
    const r = await dstd(["attach", "--config", config]);
    expect(r.stderr).toContain("the config has 2 [[attach]] entries (dst://a:10810/disk, dst://b:10810/disk): name the one to attach by its URL");
    expect(r.code).toBe(2);
  });

  test("bad flags are refused with the flag's name", async () => {
    const zero = await dstd(["attach", "dst://127.0.0.1/disk", "--dead-conn-timeout", "0s"]);
    expect(zero.stderr).toContain("--dead-conn-timeout must be at least 1s");
    expect(zero.code).toBe(2);
    const both = await dstd(["attach", "dst://127.0.0.1/disk", "--device", "/dev/nbd0", "--nbd-listen", "unix:/tmp/x.sock"]);
    expect(both.stderr).toBe("dstd attach: --device and --nbd-listen are two different modes: give one\n");
    const device = await dstd(["attach", "dst://127.0.0.1/disk", "--device", "/dev/sda"]);
    expect(device.stderr).toContain('"/dev/sda" is not an NBD device: expected /dev/nbdN');
  });
});

describe.skipIf(configured(0) || configured(5))("dstd detach of kernel devices that are gone", () => {
  test("nothing recorded, nothing attached: says so, exit 0 (with and without /dev/)", async () => {
    for (const name of ["/dev/nbd0", "nbd0"]) {
      const r = await dstd(["detach", name, "--state-dir", join(dir, "s2")]);
      expect(r.stdout).toBe("/dev/nbd0 is not attached; nothing to do\n");
      expect(r.code).toBe(0);
    }
  });

  test("a record whose daemon died: refuses without --force, clears it with --force", async () => {
    const stateDir = join(dir, "s3");
    mkdirSync(stateDir, { recursive: true });
    const state: AttachmentState = {
      device: "/dev/nbd5",
      url: "dst://127.0.0.1:10810/disk",
      mode: "kernel",
      backendId: "dstd:dst://127.0.0.1:10810/disk#00112233aabbccdd",
      pid: await deadPid(),
      state: "ready",
      startedAt: "",
      updatedAt: "",
      counters: { inflight: 0, resends: 0, reconnects: 0, replays: 0, keepaliveFailures: 0, timeouts: 0 },
    };
    writeState(stateDir, state);
    const refused = await dstd(["detach", "/dev/nbd5", "--state-dir", stateDir]);
    expect(refused.stderr).toBe(`dstd detach: the daemon of /dev/nbd5 (pid ${state.pid}) is gone; use --force to clear it\n`);
    expect(refused.code).toBe(1);
    const forced = await dstd(["detach", "/dev/nbd5", "--force", "--state-dir", stateDir]);
    expect(forced.stdout).toBe("cleared /dev/nbd5 (its daemon was gone and the device was already detached)\n");
    expect(forced.code).toBe(0);
    expect(listStates(stateDir)).toEqual([]);
  });
});
