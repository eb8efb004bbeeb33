/**
 * @module test/vm/vm — runs the guest tests in a qemu VM with Debian's stock kernel (this
 * host has no nbd driver). Builds the payload (guest scripts, guest-probe compiled with
 * `bun build --compile`, and the real dstd built by build.ts), boots ONCE with
 * test/vm/run-in-vm.sh running guest/all.sh over smoke.sh (netlink plumbing) and attach.sh
 * (`dstd attach` end to end, restarts, throughput ratio versus nbd-client), and requires the
 * combined closing line to say `N passed, 0 failed`. A second boot runs guest/failover.sh
 * (replication failover under a mounted ext4: kill -9 of the primary, promote --force, the
 * new primary's disk attached, e2fsck, synced files intact; docs/replication.md §11). Slow (boot ~4–10 s under TCG, the whole
 * run a few minutes on a loaded host): the per-test timeout is 15 minutes. Skipped when qemu-system-x86_64 is missing (Debian package
 * qemu-system-x86) unless CI=true and root, where run-in-vm.sh apt-installs it; and skipped
 * when DSTD_SKIP_VM=1.
 *
 * Opt-in (DSTD_VM_BENCH=1): a second boot runs guest/sockets-bench.sh, fio through
 * `dstd attach --connections 1|2|4` and nbd-client, and prints the table (no pass/fail on
 * the numbers).
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

/** Payload directory: guest/*.sh, the compiled probe (unless `probe` is false), and dstd itself (built by build.ts). */
function buildPayload(probe = true): string {
  const payload = mkdtempSync(join(tmpdir(), "dstd-vm-payload-"));
  mkdirSync(join(payload, "guest"));
  cpSync(join(repo, "test/vm/guest"), join(payload, "guest"), { recursive: true });
  const build = !probe ? null : Bun.spawnSync(
    // the resize worker is an extra entry point (kernel/resize.ts finds it at src/kernel/ in this layout)
    [process.execPath, "build", "--compile", "test/vm/guest-probe.ts", "src/kernel/resize-worker.ts", "--outfile", join(payload, "guest-probe")],
    { cwd: repo, stdout: "pipe", stderr: "pipe" },
  );
  if (build !== null && build.exitCode !== 0) throw new Error(`bun build --compile guest-probe failed:\n${build.stderr.toString()}`);
  // Its own copy (not dist/dstd, which other tests rebuild concurrently).
  const dstd = Bun.spawnSync([process.execPath, "build.ts"], {
    cwd: repo,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, DSTD_OUTFILE: join(payload, "dstd") },
  });
  if (dstd.exitCode !== 0) throw new Error(`build.ts (dstd) failed:\n${dstd.stderr.toString()}`);
  return payload;
}

/** The last `N passed, N failed` line (guest/all.sh prints the combined one last). */
function closingLine(output: string): string | null {
  const lines = output.match(/^[0-9]+ passed, [0-9]+ failed$/gm);
  return lines === null ? null : lines[lines.length - 1]!;
}

/**
 * One boot of run-in-vm.sh with a fresh payload (`withProbe`: guest-probe too): `vmArgs` go
 * before the payload (timeout, memory, modules, debs), `guestScripts` run through guest/all.sh;
 * every check they print must pass.
 */
async function bootAndCheck(withProbe: boolean, vmArgs: string[], guestScripts: string[]): Promise<void> {
  const payload = buildPayload(withProbe);
  try {
    const { code, output } = await runLive(["bash", "test/vm/run-in-vm.sh", ...vmArgs, payload, "--", "sh", "guest/all.sh", ...guestScripts]);
    expect(closingLine(output)).toMatch(/^[1-9][0-9]* passed, 0 failed$/);
    expect(code).toBe(0);
  } finally {
    rmSync(payload, { recursive: true, force: true });
  }
}

const bench = process.env.DSTD_VM_BENCH === "1";

describe.skipIf(skip)(`kernel NBD in a VM${skip ? ` (skipped: ${why})` : ""}`, () => {
  test(
    "one boot: smoke (netlink CONNECT/STATUS/RECONFIGURE/DISCONNECT through the kernel-mode NBD server) + dstd attach (ext4, kill -9 daemon and export, handover, detach, throughput vs nbd-client)",
    () =>
      bootAndCheck(
        true,
        [
          "--timeout",
          "840",
          "--memory",
          "2G", // two ~105 MiB binaries live in the initramfs (RAM), plus two dstd processes
          "--modules",
          "nbd ext4 crc32c_generic",
          "--deb",
          "e2fsprogs",
          "--deb",
          "nbd-client",
          "--deb",
          "libnl-3-200",
          "--deb",
          "libnl-genl-3-200",
        ],
        [
          "guest/smoke.sh",
          "guest/attach.sh",
        ],
      ),
    900_000,
  );

  // A boot of its own (the one above already takes up to ~10 minutes on a loaded host), with
  // dstd only: no guest-probe, so a smaller initramfs.
  test(
    "replication failover: ext4 on /dev/nbd0 from the primary, kill -9 of the primary mid-write, promote --force, /dev/nbd1 from the new primary: e2fsck -fn clean, synced files intact",
    () =>
      bootAndCheck(
        false,
        [
          "--timeout",
          "840",
          "--memory",
          "2G", // dstd (~105 MiB) lives in the initramfs (RAM), plus four dstd processes, images and logs in /tmp
          "--modules",
          "nbd ext4 crc32c_generic",
          "--deb",
          "e2fsprogs",
        ],
        [
          "guest/failover.sh",
        ],
      ),
    900_000,
  );

  test.skipIf(!bench)(
    "sockets benchmark (DSTD_VM_BENCH=1): fio through dstd attach --connections 1, 2, 4 and nbd-client",
    () =>
      bootAndCheck(
        true,
        [
          "--timeout",
          "1500",
          "--memory",
          "2G",
          "--modules",
          "nbd",
          "--deb",
          "fio",
          "--deb",
          "nbd-client",
          "--deb",
          "libnl-3-200",
          "--deb",
          "libnl-genl-3-200",
        ],
        [
          "guest/sockets-bench.sh",
        ],
      ),
    1_600_000,
  );
});
