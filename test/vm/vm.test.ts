/**
 * @module test/vm/vm — runs the guest tests in a qemu VM with Debian's stock kernel (this
 * host has no nbd driver). Builds the payload (guest scripts + guest-probe compiled with
 * `bun build --compile`), boots it with test/vm/run-in-vm.sh and requires the guest's closing
 * line to say `N passed, 0 failed`. Slow (boot ~4–10 s under TCG, more on a loaded host): the
 * per-test timeout is 10 minutes. Skipped when qemu-system-x86_64 is missing (Debian package
 * qemu-system-x86) unless CI=true and root, where run-in-vm.sh apt-installs it; and skipped
 * when DSTD_SKIP_VM=1.
 */
import { describe, expect, test } from "bun:test";
import { cpSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const repo = join(import.meta.dir, "..", "..");
const hasQemu = Bun.which("qemu-system-x86_64") !== null;
// In CI as root the harness apt-installs qemu itself, so a fresh machine still runs the test.
const canInstall = process.env.CI === "true" && process.getuid?.() === 0;
const skip = (!hasQemu && !canInstall) || process.env.DSTD_SKIP_VM === "1";
const why = process.env.DSTD_SKIP_VM === "1" ? "DSTD_SKIP_VM=1" : "qemu-system-x86_64 missing: apt-get install qemu-system-x86";

/** Run a command, echoing its output live (CI logs show the guest) and collecting it. */
async function runLive(argv: string[]): Promise<{ code: number; output: string }> {
  const child = Bun.spawn(argv, { cwd: repo, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  let output = "";
  const pump = async (stream: ReadableStream<Uint8Array>, sink: NodeJS.WriteStream): Promise<void> => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      output += text;
      sink.write(text);
    }
  };
  await Promise.all([pump(child.stdout, process.stdout), pump(child.stderr, process.stderr)]);
  return { code: await child.exited, output };
}

/** Payload directory: guest/*.sh plus the compiled probe. */
function buildPayload(): string {
  const payload = mkdtempSync(join(tmpdir(), "dstd-vm-payload-"));
  mkdirSync(join(payload, "guest"));
  cpSync(join(repo, "test/vm/guest"), join(payload, "guest"), { recursive: true });
  const build = Bun.spawnSync(
    [process.execPath, "build", "--compile", "test/vm/guest-probe.ts", "--outfile", join(payload, "guest-probe")],
    { cwd: repo, stdout: "pipe", stderr: "pipe" },
  );
  if (build.exitCode !== 0) throw new Error(`bun build --compile guest-probe failed:\n${build.stderr.toString()}`);
  return payload;
}

describe.skipIf(skip)(`kernel NBD in a VM${skip ? ` (skipped: ${why})` : ""}`, () => {
  test(
    "smoke: netlink CONNECT /dev/nbd0, I/O through the kernel-mode NBD server, STATUS, RECONFIGURE takeover, DISCONNECT",
    async () => {
      const payload = buildPayload();
      try {
        const { code, output } = await runLive([
          "bash",
          "test/vm/run-in-vm.sh",
          "--timeout",
          "540",
          "--modules",
          "nbd",
          payload,
          "--",
          "sh",
          "guest/smoke.sh",
        ]);
        expect(output).toMatch(/^[1-9][0-9]* passed, 0 failed$/m);
        expect(code).toBe(0);
      } finally {
        rmSync(payload, { recursive: true, force: true });
      }
    },
    600_000,
  );
});
